"""Job scripts' PEP 723 dependencies: resolved on the server from a local wheel directory (--find-links,
so no network), shipped to workers by hash. pip never reaches the internet here: with --find-links alone
the server runs it with --no-index and without pip's own configuration."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from netdist.api.v1 import jobs_pb2
from netdist.platforms import this_platform
from netdist.testing import start_worker, wait_until, write_wheel
from tests.integration.conftest import Cluster
from tests.integration.test_protocol import HandWorker
from tests.support import HANDLER, counter_wheel

pytestmark = pytest.mark.timeout(180)  # every jobs add runs pip (a second or two on a quiet machine)

SCRIPT = """# /// script
# dependencies = {deps}
# [tool.netdist]
# package = "counter"
# handler = "Counter"
# job = "{job}"
# auto-start = {start}
# [tool.netdist.settings]
# count = 4
# ///
import tiny_calc
import tiny_fmt


def process(job_input, ctx):
    assert tiny_fmt.fmt(1) == "<1>" and tiny_fmt.BASE == "1.0"
    return {{"double": tiny_calc.double(job_input["i"]), "pid": 0}}
"""


def script(path: Path, deps: list[str], *, job: str = "deps", start: bool = False) -> Path:
    path.write_text(SCRIPT.format(deps=json.dumps(deps), job=job, start=str(start).lower()))
    return path


@pytest.fixture
def links(tmp_path: Path) -> Path:
    """A directory of wheels: tiny-fmt needs tiny-base<2 (1.0 and 2.0 are there), tiny-calc stands alone,
    only-linux has a wheel for Linux on this machine's architecture only, sdist-only has no wheel."""
    d = tmp_path / "links"
    write_wheel(d, name="tiny-fmt", version="1.0", requires=["tiny-base<2"], files={"tiny_fmt.py": FMT})
    for version in ("1.0", "2.0"):
        write_wheel(d, name="tiny-base", version=version, files={"tiny_base.py": f"VERSION = {version!r}\n"})
    write_wheel(d, name="tiny-calc", version="1.0", files={"tiny_calc.py": "def double(x):\n    return 2 * x\n"})
    machine = platform.machine().lower()
    write_wheel(d, name="only-linux", version="1.0", files={"only_linux.py": ""}, tag=f"py3-none-linux_{machine}")
    (d / "sdist_only-1.0.tar.gz").write_bytes(b"not really")
    return d


FMT = "import tiny_base\nBASE = tiny_base.VERSION\n\ndef fmt(x):\n    return f'<{x}>'\n"


def serve(cluster: Cluster, links: Path, tmp_path: Path) -> None:
    cluster.start_server(extra_args=("--find-links", str(links)))
    cluster.api.upload(counter_wheel(tmp_path / "pkg"))


def deps(cluster: Cluster, ref: str) -> dict:  # type: ignore[type-arg]
    done = cluster.admin_cli("jobs", "deps", ref, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def wheels(lock: dict, key: str | None = None) -> dict[str, str]:  # type: ignore[type-arg]
    return {w["name"]: w["version"] for w in lock["platforms"][key or this_platform().key]["wheels"]}


def no_index_environ() -> dict[str, str]:
    """A worker's environment with no index configuration at all, and no way out to a network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and "proxy" not in k.lower()}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "HTTPS_PROXY": "http://127.0.0.1:9"}


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_script_with_two_dependencies_runs_on_a_worker_with_no_index(
    cluster: Cluster, links: Path, tmp_path: Path
) -> None:
    serve(cluster, links, tmp_path)
    done = cluster.admin_cli("jobs", "add", str(script(tmp_path / "s.py", ["tiny-fmt", "tiny-calc"], start=True)))
    assert done.returncode == 0, done.stderr
    lock = deps(cluster, "deps")
    assert wheels(lock) == {"tiny-base": "1.0", "tiny-calc": "1.0", "tiny-fmt": "1.0"}  # Requires-Dist honoured
    assert lock["dependencies"] == ["tiny-fmt", "tiny-calc"]
    assert cluster.server is not None
    cluster.workers.append(
        start_worker(
            cluster.server.address,
            name="bare",
            log_dir=tmp_path / "logs",
            cache_dir=tmp_path / "cache" / "bare",
            token_file=cluster.server.worker_token_file,
            environ=no_index_environ(),
        )
    )
    h = cluster.api.wait_state("deps", "finished")
    assert h.result_summary == "1.0 sum=12 seen=4 failures=0", h.result_summary
    shown = cluster.admin_cli("jobs", "deps", "deps")
    assert shown.returncode == 0 and "tiny-base" in shown.stdout and this_platform().key in shown.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_dependency_that_does_not_resolve_is_refused_and_nothing_is_stored(
    cluster: Cluster, links: Path, tmp_path: Path
) -> None:
    serve(cluster, links, tmp_path)
    cases = {
        "no-such-project": "no-such-project",  # unknown name
        "tiny-base>=2": "tiny-fmt 1.0 depends on tiny-base<2",  # a conflict, and its cause
        "sdist-only": "wheels only",  # a source distribution is never taken
    }
    for dep, words in cases.items():
        done = cluster.admin_cli("jobs", "add", str(script(tmp_path / "bad.py", ["tiny-fmt", dep])))
        assert done.returncode == 1, (dep, done.stdout, done.stderr)
        assert "DependencyError" in done.stderr and words in done.stderr.lower(), done.stderr
        assert "\n" not in done.stderr.strip(), done.stderr  # one paragraph
    done = cluster.admin_cli("jobs", "add", str(script(tmp_path / "url.py", ["evil @ file:///etc/passwd"])))
    assert done.returncode == 1 and "names a URL" in done.stderr, done.stderr
    assert cluster.api.handlers() == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_two_scripts_with_the_same_dependency_share_its_wheel(cluster: Cluster, links: Path, tmp_path: Path) -> None:
    serve(cluster, links, tmp_path)
    for job in ("one", "two"):
        done = cluster.admin_cli("jobs", "add", str(script(tmp_path / f"{job}.py", ["tiny-calc"], job=job)))
        assert done.returncode == 0, done.stderr
    shas = {
        w["sha256"]
        for job in ("one", "two")
        for w in deps(cluster, job)["platforms"][this_platform().key]["wheels"]
        if w["name"] == "tiny-calc"
    }
    wheel = (links / "tiny_calc-1.0-py3-none-any.whl").read_bytes()
    assert shas == {hashlib.sha256(wheel).hexdigest()}
    stored = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file() and p.read_bytes() == wheel]
    assert len(stored) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_pinned_lock_is_honoured_and_kept_until_refreshed(cluster: Cluster, links: Path, tmp_path: Path) -> None:
    serve(cluster, links, tmp_path)
    path = script(tmp_path / "s.py", ["tiny-base"])
    base1 = hashlib.sha256((links / "tiny_base-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("tiny-base==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    done = cluster.admin_cli("jobs", "add", str(path), "--lock", str(wrong))
    assert done.returncode == 1 and "does not list" in done.stderr, done.stderr
    assert cluster.api.handlers() == []
    pinned = tmp_path / "requirements.txt"
    pinned.write_text(f"# uv pip compile\ntiny-base==1.0 \\\n    --hash=sha256:{base1}\ntiny-calc==1.0\n")
    assert cluster.admin_cli("jobs", "add", str(path), "--lock", str(pinned)).returncode == 0
    lock = deps(cluster, "deps")
    assert wheels(lock) == {"tiny-base": "1.0"} and lock["pinned"]
    # Uploaded again unchanged, or with only its code changed: the same lock, not resolved again.
    path.write_text(path.read_text() + "\n# a comment\n")
    assert cluster.admin_cli("jobs", "add", str(path)).returncode == 0
    assert deps(cluster, "deps") == lock
    refreshed = cluster.admin_cli("jobs", "add", str(path), "--refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    again = deps(cluster, "deps")
    assert wheels(again) == {"tiny-base": "2.0"} and not again["pinned"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_second_platform_gets_its_own_lock_or_is_shown_unservable(
    cluster: Cluster, links: Path, tmp_path: Path
) -> None:
    serve(cluster, links, tmp_path)
    other = jobs_pb2.WheelPlatform(implementation="cpython", python="3.12", os="darwin", machine="arm64")
    hand = HandWorker(cluster, "mac-1", platform=other)
    try:
        ok = cluster.admin_cli("jobs", "add", str(script(tmp_path / "a.py", ["tiny-calc"], job="portable")))
        assert ok.returncode == 0, ok.stderr
        lock = deps(cluster, "portable")
        assert wheels(lock, "cp312-darwin-arm64") == {"tiny-calc": "1.0"} == wheels(lock)
        ok = cluster.admin_cli("jobs", "add", str(script(tmp_path / "b.py", ["only-linux"], job="linux")))
        assert ok.returncode == 0, ok.stderr
        lock = deps(cluster, "linux")
        assert wheels(lock) == {"only-linux": "1.0"}
        mac = lock["platforms"]["cp312-darwin-arm64"]
        assert not mac["servable"] and "only-linux" in mac["error"], mac
        shown = cluster.admin_cli("jobs", "deps", "linux")
        assert "cannot be served" in shown.stdout, shown.stdout
    finally:
        hand.close()
    assert sys.platform == "linux"  # the only-linux wheel is this machine's


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_new_platform_is_resolved_in_the_background_and_an_unservable_one_gets_no_jobs(
    cluster: Cluster, links: Path, tmp_path: Path
) -> None:
    serve(cluster, links, tmp_path)
    for job, dep in (("portable", "tiny-calc"), ("linux", "only-linux")):
        path = script(tmp_path / f"{job}.py", [dep], job=job, start=True)
        path.write_text(
            path.read_text()
            .replace("import tiny_calc\nimport tiny_fmt\n", "")
            .replace(
                'assert tiny_fmt.fmt(1) == "<1>" and tiny_fmt.BASE == "1.0"\n    return {"double": tiny_calc.double(',
                'return {"double": 2 * (',
            )
        )
        done = cluster.admin_cli("jobs", "add", str(path))
        assert done.returncode == 0, done.stderr
    assert set(deps(cluster, "linux")["platforms"]) == {this_platform().key}
    mac = jobs_pb2.WheelPlatform(implementation="cpython", python="3.12", os="darwin", machine="arm64")
    hand = HandWorker(cluster, "mac-1", platform=mac, heartbeat_seconds=0.1)
    try:
        hand.send(jobs_pb2.WorkerMessage(capacity=jobs_pb2.Capacity(jobs=8)))

        def resolved(job: str) -> dict[str, Any] | None:
            found: dict[str, Any] | None = deps(cluster, job)["platforms"].get("cp312-darwin-arm64")
            return found

        assert wait_until(lambda: resolved("portable"), 60, what="the lock for the new platform")["servable"]
        assert "only-linux" in wait_until(lambda: resolved("linux"), 60, what="the unservable platform")["error"]
        shown = json.loads(cluster.admin_cli("handlers", "show", "linux", "--json").stdout)
        assert shown["unservable_platforms"] == ["cp312-darwin-arm64"], shown
        cluster.add_worker("native")  # the jobs of "linux" go to it, none to the Mac
        assert cluster.api.wait_state("linux", "finished").result_summary == "1.0 sum=12 seen=4 failures=0"
        listed = {w["name"]: w for w in json.loads(cluster.admin_cli("workers", "list", "--json").stdout)}
        linux_id = cluster.api.handler("linux").id
        assert listed["mac-1"]["platform"] == "cp312-darwin-arm64" and listed["mac-1"]["connected"]
        assert listed["mac-1"]["unservable_handlers"] == [linux_id]
        assert listed["native"]["platform"] == this_platform().key and not listed["native"]["unservable_handlers"]
        # The Mac asked for 8 jobs before the native worker came: it holds only jobs of "portable".
        assert all(j["handler_id"] != linux_id for j in listed["mac-1"]["running"]), listed["mac-1"]
    finally:
        hand.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_new_package_version_resolves_a_running_handlers_lock_again(
    cluster: Cluster, links: Path, tmp_path: Path
) -> None:
    serve(cluster, links, tmp_path)
    done = cluster.admin_cli("jobs", "add", str(script(tmp_path / "s.py", ["tiny-calc"], start=True)))
    assert done.returncode == 0, done.stderr
    assert wheels(deps(cluster, "deps")) == {"tiny-calc": "1.0"}
    # Version 2.0 of the package needs tiny-base<2: the running handler's lock takes it in, in the background.
    cluster.api.upload(
        write_wheel(
            tmp_path / "pkg2",
            name="counter",
            version="2.0",
            files={"counter/__init__.py": "", "counter/handler.py": HANDLER.format(version="2.0")},
            entry_points={"netdist.handlers": {"Counter": "counter.handler:Counter"}},
            requires=["tiny-base<2"],
        )
    )
    wait_until(
        lambda: wheels(deps(cluster, "deps")) == {"tiny-base": "1.0", "tiny-calc": "1.0"},
        60,
        what="the lock resolved again with the new package",
    )
    # The server logs it just after it stores the lock: wait for the line, do not race it.
    wait_until(
        lambda: any("dependencies locked" in line.message for line in cluster.api.log("deps")),
        10,
        what="the handler log to say the dependencies were locked",
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_resolution_past_its_time_limit_is_refused_and_the_server_keeps_serving(
    cluster: Cluster, tmp_path: Path
) -> None:
    with socket.socket() as silent:  # an index that accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        cluster.start_server(extra_args=("--index-url", index, "--resolve-timeout", "2"))
        cluster.api.upload(counter_wheel(tmp_path / "pkg"))
        done = cluster.admin_cli("jobs", "add", str(script(tmp_path / "s.py", ["tiny-calc"])))
    assert done.returncode == 1, done.stdout
    assert "FailedPreconditionError" in done.stderr and "took over 2 s" in done.stderr, done.stderr
    assert cluster.api.handlers() == []
    assert cluster.admin_cli("status").returncode == 0
