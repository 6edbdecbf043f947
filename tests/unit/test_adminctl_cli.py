"""netdist-admin without a server: usage errors and the unreachable-server boundary."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from netdist.adminctl import cli
from netdist.exit_codes import ExitCode

UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: the connection is refused at once


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_unreachable_server_prints_one_line_and_exits_3() -> None:
    code, out, err = run("--server", UNREACHABLE, "status")
    assert code == ExitCode.UNAVAILABLE
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"UnavailableError: cannot reach the netdist server at {UNREACHABLE}: ")
    assert "Traceback" not in err


def test_server_address_comes_from_the_environment() -> None:
    code, _, err = run("handlers", "list", "--json", env={"NETDIST_SERVER": UNREACHABLE})
    assert code == ExitCode.UNAVAILABLE
    assert f"at {UNREACHABLE}:" in err


def test_upload_to_unreachable_server(tmp_path: Path) -> None:
    wheel = tmp_path / "p-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))
    code, _, err = run("--server", UNREACHABLE, "upload-package", str(wheel))
    assert code == ExitCode.UNAVAILABLE
    assert err.startswith("UnavailableError: ")


def test_missing_file_is_a_usage_error() -> None:
    code, _, err = run("--server", UNREACHABLE, "jobs", "add", "no-such-script.py")
    assert code == ExitCode.USAGE
    assert "does not exist" in err


def test_a_non_wheel_is_a_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("def process(job_input, ctx): ...\n")
    code, _, err = run("--server", UNREACHABLE, "upload-package", str(script))
    assert code == ExitCode.USAGE
    assert "not a wheel" in err


def test_a_bad_server_address_is_a_usage_error() -> None:
    code, _, err = run("--server", "no-port", "status")
    assert code == ExitCode.USAGE
    assert "HOST:PORT" in err


def test_help_lists_every_command() -> None:
    code, out, _ = run("--help")
    assert code == ExitCode.OK
    for name in (
        "status",
        "upload-package",
        "packages",
        "jobs",
        "handlers",
        "workers",
        "watch",
    ):
        assert name in out
    code, out, _ = run("handlers", "--help")
    for name in (
        "list",
        "show",
        "start",
        "stop",
        "pause",
        "enable",
        "disable",
        "remove",
        "log",
    ):
        assert name in out
