"""netdist-worker refuses, before it connects, a name or label the server would refuse in its Hello."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from netdist.exit_codes import ExitCode
from netdist.worker import cli


def connect(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, ["connect", "127.0.0.1:1", "--cache-dir", str(tmp_path), *args])
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "w\x1b[2J"), "the name holds a control character (U+001B at position 1)"),
        (("--name", "n" * 201), "the name is longer than 200 characters (201)"),
        (("--label", "si\u202ete=lab"), "a label key holds a control character (U+202E at position 2)"),
        (("--label", "site=l\nab"), "label 'site' holds a control character (U+000A at position 1)"),
        (("--label", "k=" + "v" * 201), "label 'k' is longer than 200 characters (201)"),
        (tuple(a for i in range(65) for a in ("--label", f"k{i}=v")), "at most 64 labels, got 65"),
    ],
)
def test_a_name_or_label_the_server_would_refuse_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    code, err = connect(tmp_path, *args)
    assert code == ExitCode.USAGE
    assert message in " ".join(err.split())  # click wraps long lines
    assert "\x1b" not in err and not list(tmp_path.iterdir())  # nothing claimed, nothing echoed raw
