"""Job script dependencies: what a script asks for, pinned locks, environments, pip's words, platform tags."""

from __future__ import annotations

import pytest

from netdist.errors import InvalidArgumentError, JobScriptError
from netdist.platforms import Platform
from netdist.server.deps_lock import (
    Lock,
    LockedWheel,
    PlatformLock,
    ScriptNeeds,
    environment,
    lock_key,
    parse_pins,
    script_needs,
    unservable,
)
from netdist.server.deps_resolver import pip_message

HEAD = "# /// script\n{lines}# [tool.netdist]\n# package = 'p'\n# handler = 'H'\n# job = 'j'\n# ///\n"


def source(**keys: str) -> str:
    return HEAD.format(lines="".join(f"# {k} = {v}\n" for k, v in keys.items()))


def test_script_needs_reads_dependencies_and_requires_python() -> None:
    needs = script_needs(source(dependencies='["humanize>=4", "tabulate ; python_version >= \'3.8\'"]'))
    assert needs.dependencies == ("humanize>=4", "tabulate ; python_version >= '3.8'")
    assert script_needs(source()).empty
    assert script_needs(source(**{"requires-python": '">=3.11"'})).requires_python == ">=3.11"


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ({"dependencies": '"humanize"'}, "expected a list"),
        ({"dependencies": "[1]"}, "expected a list"),
        ({"dependencies": '["not a requirement!"]'}, "is not a requirement"),
        ({"dependencies": '["--index-url=http://evil"]'}, "is not a requirement"),
        ({"dependencies": '["evil @ https://example.org/evil.whl"]'}, "names a URL"),
        ({"requires-python": '">=three"'}, "not a version specifier"),
        ({"requires-python": "3"}, "expected a version specifier"),
    ],
)
def test_bad_dependencies_name_the_key(keys: dict[str, str], words: str) -> None:
    with pytest.raises(JobScriptError, match=words):
        script_needs(source(**keys))


def test_a_pinned_lock_as_uv_and_pip_freeze_write_it() -> None:
    sha = "a" * 64
    pins = parse_pins(
        "# via uv pip compile\n"
        f"Tiny_Base==1.0 \\\n    --hash=sha256:{sha} \\\n    --hash=sha256:{'B' * 64}\n"
        "tiny-calc==2.0.1  # a comment\n\n"
    )
    assert pins["tiny-base"].version == "1.0" and pins["tiny-base"].hashes == {sha, "b" * 64}
    assert pins["tiny-calc"].version == "2.0.1" and not pins["tiny-calc"].hashes


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tiny-base>=1.0\n", "not pinned"),
        ("tiny-base\n", "not pinned"),
        ("tiny-base==1.*\n", "not pinned"),
        ("-e ./here\n", "options"),
        ("--index-url http://evil\n", "options"),
        ("x @ https://example.org/x.whl\n", "not pinned"),
    ],
)
def test_a_lock_line_that_pins_nothing_is_refused(text: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        parse_pins(text)


def test_the_lock_wins_over_the_packages_own_wheels_by_project_name() -> None:
    package = [
        {"sha256": "p" * 64, "distribution": "pkg"},
        {"sha256": "o" * 64, "distribution": "Tiny_Base"},  # uploaded by hand, older
        {"sha256": "k" * 64, "distribution": "kept"},
    ]
    locked = [LockedWheel(name="tiny-base", version="2.0", filename="f.whl", sha256="n" * 64, size=1)]
    assert environment(package, locked) == ("p" * 64, "k" * 64, "n" * 64)


def test_a_lock_survives_its_json_and_its_key_follows_its_inputs() -> None:
    lock = Lock(
        key=lock_key(ScriptNeeds(dependencies=("a",)), pinned="", package_sha256="x"),
        needs=ScriptNeeds(dependencies=("a",), requires_python=">=3.11"),
        package_sha256="x",
        platforms={
            "cp311-linux-x86_64": PlatformLock(
                platform={"os": "linux"},
                wheels=(LockedWheel(name="a", version="1", filename="a-1-py3-none-any.whl", sha256="s" * 64, size=3),),
            ),
            "cp312-darwin-arm64": PlatformLock(platform={"os": "darwin"}, error="no wheel"),
        },
    )
    assert Lock.from_json(lock.to_json()) == lock
    assert unservable(lock.to_json()) == ["cp312-darwin-arm64"]
    assert Lock().to_json() == "" and Lock.from_json("").empty
    other = lock_key(ScriptNeeds(dependencies=("a",)), pinned="", package_sha256="y")
    assert other != lock.key


def test_pips_error_in_one_paragraph() -> None:
    output = (
        "Looking in links: /x\nProcessing ./pkg.whl\n"
        "ERROR: Could not find a version that satisfies the requirement nope (from versions: none)\n"
        "ERROR: No matching distribution found for nope\n"
    )
    message = pip_message(output)
    assert "\n" not in message
    assert message.startswith("Could not find a version that satisfies the requirement nope (from versions: none)")
    assert "wheels only" in message
    assert pip_message("") == "pip failed without a message"


def test_pips_conflict_says_what_caused_it() -> None:
    output = (
        "Processing ./links/tiny_fmt-1.0-py3-none-any.whl\n"
        "ERROR: Cannot install tiny-base>=2 and tiny-fmt==1.0 because these package versions have conflicting "
        "dependencies.\n\nThe conflict is caused by:\n    The user requested tiny-base>=2\n"
        "    tiny-fmt 1.0 depends on tiny-base<2\n\nTo fix this you could try to:\n1. loosen the range\n\n"
        "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/\n"
    )
    assert pip_message(output) == (
        "Cannot install tiny-base>=2 and tiny-fmt==1.0 because these package versions have conflicting "
        "dependencies. The conflict is caused by: The user requested tiny-base>=2; tiny-fmt 1.0 depends on "
        "tiny-base<2."
    )


def test_platform_tags_for_pip() -> None:
    linux = Platform(implementation="cpython", python="3.12", os="linux", machine="aarch64", os_version="2.28")
    assert linux.key == "cp312-linux-aarch64-glibc2.28"
    args = linux.pip_target_args()
    assert args[:6] == ["--implementation", "cp", "--python-version", "3.12", "--abi", "cp312"]
    assert "manylinux_2_28_aarch64" in args and "manylinux_2_17_aarch64" in args and "manylinux2014_aarch64" in args
    assert "manylinux1_aarch64" not in args and args[-1] == "linux_aarch64"
    mac = Platform(implementation="cpython", python="3.13", os="darwin", machine="arm64", os_version="14.2")
    assert mac.platform_tags() == ["macosx_14_2_arm64", "macosx_14_2_universal2"]
    assert mac.key == "cp313-darwin-arm64-macos14"
    win = Platform(implementation="cpython", python="3.11", os="win32", machine="amd64")
    assert win.platform_tags() == ["win_amd64"] and win.key == "cp311-win32-amd64"
