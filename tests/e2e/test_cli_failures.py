"""Each command, run as an operator runs it, on input it must refuse: one red line naming what is wrong,
the documented exit code, no traceback. And the exit-code table of docs/cli.md is what the commands do."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from netdist.adminctl.handler_commands import JOB_STATUSES
from netdist.exit_codes import ExitCode
from netdist.server.states import JobStatus
from netdist.testing import Admin, start_server, wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
BIN = Path(sys.executable).parent  # the commands pip installed next to this Python
REFUSED_PORT = "127.0.0.1:1"  # nothing listens on port 1: a connection is refused at once
UNREACHABLE_POSTGRES = "postgresql+psycopg://netdist@127.0.0.1:1/netdist"


def _env() -> dict[str, str]:
    """The environment without NETDIST_*: no token, data dir or server of the machine's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NETDIST")}


def start(command: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [BIN / command, *args], cwd=cwd, env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def run(command: str, *args: str, cwd: Path) -> tuple[int, str, str]:
    proc = start(command, *args, cwd=cwd)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line:\n{err}"
    return err.rstrip("\n")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "bad.pem").write_text("not PEM\n")
    (tmp_path / "two-words.token").write_text("ndt_a ndt_b\n")
    (tmp_path / "empty-dir").mkdir()
    return tmp_path


CASES = [
    # netdist-server serve: the store, the data dir, the certificates; each refused before anything starts
    (
        ("netdist-server", "serve", "--db", "nosuchdb://x"),
        ExitCode.USAGE,
        "UsageError: --db nosuchdb://x: Can't load plugin: sqlalchemy.dialects:nosuchdb",
    ),
    (
        ("netdist-server", "serve", "--db", "postgresql+psycopg2:///netdist"),
        ExitCode.USAGE,
        "UsageError: --db postgresql+psycopg2:///netdist: No module named 'psycopg2'",
    ),
    (
        ("netdist-server", "serve", "--db", UNREACHABLE_POSTGRES),
        ExitCode.UNAVAILABLE,
        f"StoreUnavailableError: cannot open the store at {UNREACHABLE_POSTGRES}: ",
    ),
    (
        ("netdist-server", "serve", "--data-dir", "a-file/data"),
        ExitCode.USAGE,
        "DataDirError: cannot use --data-dir a-file/data: Not a directory",
    ),
    (
        ("netdist-server", "serve", "--tls-cert", "bad.pem", "--tls-key", "bad.pem"),
        ExitCode.USAGE,
        "CertificateError: --tls-cert bad.pem: ",
    ),
    (
        ("netdist-server", "serve", "--tls-cert", "no-such.pem", "--tls-key", "bad.pem"),
        ExitCode.USAGE,
        "UsageError: Invalid value for '--tls-cert': File 'no-such.pem' does not exist "
        "(see netdist-server serve --help)",
    ),
    (
        ("netdist-server", "serve", "--port", "99999"),
        ExitCode.USAGE,
        "UsageError: Invalid value for '--port': 99999 is not in the range",
    ),
    (
        ("netdist-server", "check", "--db", UNREACHABLE_POSTGRES),
        ExitCode.UNAVAILABLE,
        f"DatabaseError: cannot check the store at {UNREACHABLE_POSTGRES}: ",
    ),
    (
        ("netdist-server", "check", "--data-dir", "no-such-dir"),
        ExitCode.USAGE,
        "UsageError: --data-dir no-such-dir is not a directory",
    ),
    (
        ("netdist-server", "tokens", "create", "--role", "admin", "--name", "a", "--db", UNREACHABLE_POSTGRES),
        ExitCode.UNAVAILABLE,
        f"DatabaseError: cannot open the store at {UNREACHABLE_POSTGRES}: ",
    ),
    (("netdist-server", "tokens", "revoke", "nobody", "--data-dir", "empty-dir"), ExitCode.FAILED, "NotFoundError: "),
    (
        ("netdist-server", "tls", "server", "--host", "lab", "--data-dir", "empty-dir"),
        ExitCode.USAGE,
        "CertificateError: ",
    ),
    (("netdist-server", "--no-such-option"), ExitCode.USAGE, "UsageError: No such option '--no-such-option'"),
    (
        ("netdist-admin", "jobs", "list", "--status", "done"),
        ExitCode.USAGE,
        "UsageError: Invalid value for '--status': 'done' is not one of 'available', 'leased', 'succeeded', ",
    ),
    # it said "'abc' is not a valid integer range"
    (
        ("netdist-admin", "jobs", "show", "abc"),
        ExitCode.USAGE,
        "UsageError: Invalid value for 'ID': 'abc' is not a valid integer (see netdist-admin jobs show --help)",
    ),
    # a port out of range is a usage error at once, not a connection failure later (was exit 3)
    (
        ("netdist-admin", "--server", "127.0.0.1:99999", "status"),
        ExitCode.USAGE,
        "UsageError: Invalid value for '--server': expected HOST:PORT with a port "
        "from 1 to 65535, got '127.0.0.1:99999'",
    ),
    (
        ("netdist-worker", "connect", "127.0.0.1:0"),
        ExitCode.USAGE,
        "UsageError: Invalid value for HOST:PORT: expected HOST:PORT with a port from 1 to 65535, got '127.0.0.1:0'",
    ),
    # netdist-worker connect: refused before it connects
    (
        ("netdist-worker", "connect", REFUSED_PORT, "--token-file", "no-such.token"),
        ExitCode.USAGE,
        "UsageError: Invalid value for --token-file: cannot read the token file no-such.token: No such file or directory",
    ),
    (
        ("netdist-worker", "connect", REFUSED_PORT, "--token-file", "two-words.token"),
        ExitCode.USAGE,
        "UsageError: Invalid value for --token-file: the token file two-words.token does not hold one token",
    ),
    (
        ("netdist-worker", "connect", REFUSED_PORT, "--cache-dir", "a-file/cache"),
        ExitCode.USAGE,
        "CacheDirError: cannot use a-file/cache: Not a directory",
    ),
    (("netdist-worker", "connect", REFUSED_PORT, "--tls-ca", "bad.pem"), ExitCode.USAGE, "CertificateError: "),
    (("netdist-worker", "connect", "no-port"), ExitCode.USAGE, "UsageError: Invalid value for HOST:PORT: "),
    # netdist-admin: local mistakes are usage errors; the server's answers are its own
    (
        ("netdist-admin", "jobs", "add", "no-such-script.py"),
        ExitCode.USAGE,
        "UsageError: Invalid value for 'SCRIPT': File 'no-such-script.py' does not exist (see netdist-admin jobs add --help)",
    ),
    (
        ("netdist-admin", "--token-file", "no-such.token", "status"),
        ExitCode.USAGE,
        "UsageError: Invalid value for --token-file: cannot read the token file no-such.token",
    ),
    (("netdist-admin", "--tls-ca", "bad.pem", "status"), ExitCode.USAGE, "CertificateError: --tls-ca bad.pem: "),
    (
        ("netdist-admin", "--server", REFUSED_PORT, "status"),
        ExitCode.UNAVAILABLE,
        f"UnavailableError: cannot reach the netdist server at {REFUSED_PORT}: ",
    ),
]


@pytest.mark.parametrize(("argv", "code", "line"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_refused_command_says_why_in_one_line(files: Path, argv: tuple[str, ...], code: ExitCode, line: str) -> None:
    returncode, out, err = run(*argv, cwd=files)
    assert (returncode, out) == (code, ""), err
    assert one_line(err).startswith(line)
    if code == ExitCode.USAGE:
        assert not (files / "netdist-data").exists()  # refused before anything is made (serve's default data dir)


@pytest.mark.parametrize(
    ("argv", "variable", "value", "line"),
    [
        (
            ("netdist-admin", "status"),
            "NETDIST_SERVER",
            "bogus:xx",
            "UsageError: Invalid value for the environment variable NETDIST_SERVER: expected HOST:PORT with a port "
            "from 1 to 65535, got 'bogus:xx' (see netdist-admin --help)",
        ),
        (
            ("netdist-server", "serve"),
            "NETDIST_PORT",
            "99999",
            "UsageError: Invalid value for the environment variable NETDIST_PORT: 99999 is not in the range "
            "0<=x<=65535 (see netdist-server serve --help)",
        ),
    ],
)
def test_a_bad_value_from_the_environment_is_named_by_its_variable(
    files: Path, argv: tuple[str, ...], variable: str, value: str, line: str
) -> None:
    """Found by an operator: a bad --server typed on the command line was reported as
    "'--server' (env var: 'NETDIST_SERVER')", a variable that was not set; and the other way round."""
    proc = subprocess.Popen(
        [BIN / argv[0], *argv[1:]],
        cwd=files,
        env={**_env(), variable: value},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (ExitCode.USAGE, ""), err
    assert one_line(err) == line


def test_a_server_that_cannot_listen_says_so_in_one_line_and_makes_nothing(files: Path) -> None:
    """Found by an operator: on a taken port the server migrated a new store and wrote its first tokens,
    then printed a line of gRPC's core log, then its own. Now it checks the port first."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        returncode, _, err = run("netdist-server", "serve", "--data-dir", "data", "--port", str(port), cwd=files)
    assert returncode == ExitCode.FAILED
    assert one_line(err) == (
        f"OSError: cannot listen on 127.0.0.1:{port}: the port is taken, or the address is not this machine's"
    )
    assert not (files / "data").exists()


def test_a_second_server_on_a_data_dir_in_use_refuses_to_start_and_the_first_serves_on(files: Path) -> None:
    """Two servers on one data dir (one SQLite file) each leased the same jobs and refused the other's
    results; stopping one failed the handler the other ran. The lock goes with its holder, kill -9 too."""
    data = files / "data"
    first = start_server(data, log_dir=files / "logs", name="first")
    try:
        returncode, out, err = run("netdist-server", "serve", "--data-dir", "data", "--port", "0", cwd=files)
        assert (returncode, out) == (ExitCode.USAGE, ""), err
        assert one_line(err) == (
            f"DataDirError: --data-dir data is in use by another netdist server (pid {first.popen.pid}): "
            "stop it first, or give this one its own --data-dir"
        )
        assert first.alive()
        with contextlib.closing(Admin(first.address)) as admin:  # the first still answers
            assert admin.handlers() == []
        first.kill()  # SIGKILL: the kernel lets go of the lock
        again = start_server(data, log_dir=files / "logs", name="again")
        assert again.stop() == 0
    finally:
        first.kill()


def test_a_new_data_dir_is_the_servers_alone_and_an_open_one_is_warned_of(files: Path) -> None:
    """Found by an operator: the data dir was made 0755 and netdist.db 0644, so every local user could read
    every job's input and output."""
    first = start_server(files / "data", log_dir=files / "logs", name="first")
    assert first.stop() == 0
    assert stat.S_IMODE((files / "data").stat().st_mode) == 0o700
    assert "open to other users" not in first.output()
    (files / "shared").mkdir(mode=0o755)
    (files / "shared").chmod(0o755)  # whatever the umask
    opened = start_server(files / "shared", log_dir=files / "logs", name="opened")
    assert opened.stop() == 0
    (line,) = [line for line in opened.output().splitlines() if "open to other users" in line]
    assert line.endswith(
        f"the data dir {files / 'shared'} is open to other users (mode 0755): the store in it holds every "
        f"job's input and output; chmod 700 {files / 'shared'}"
    ), line


def test_a_new_store_is_one_line_of_the_log_and_a_current_one_none(files: Path) -> None:
    """Found by an operator: the first start printed thirteen lines of alembic's INFO log, one per
    revision, before the server's own."""
    first = start_server(files / "data", log_dir=files / "logs", name="first")
    assert first.stop() == 0
    lines = first.output().splitlines()
    assert not [line for line in lines if "alembic" in line], lines
    assert len([line for line in lines if "created the schema (revision " in line]) == 1, lines
    again = start_server(files / "data", log_dir=files / "logs", name="again")
    assert again.stop() == 0
    assert not [line for line in again.output().splitlines() if "schema" in line or "alembic" in line]


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_second_server_on_a_postgres_database_in_use_refuses_to_start(files: Path, db_url: str) -> None:
    """As on one data dir, with a data dir of its own: the database's advisory lock names the holder."""
    first = start_server(files / "a", log_dir=files / "logs", db_url=db_url, name="first")
    try:
        returncode, out, err = run("netdist-server", "serve", "--data-dir", "b", "--db", db_url, cwd=files)
        assert (returncode, out) == (ExitCode.USAGE, "")
        line = one_line(err)
        assert line.startswith(f"StoreInUseError: the store {db_url.split('///', maxsplit=1)[0]}"), line
        assert line.endswith(
            f"is in use by another netdist server (netdist-server {socket.gethostname()} pid {first.popen.pid}): "
            "stop it first, or give this one its own database"
        ), line
        with contextlib.closing(Admin(first.address)) as admin:  # the first still answers
            assert admin.handlers() == []
        first.kill()  # SIGKILL: PostgreSQL lets go of the lock with the session
        again = start_server(files / "b", log_dir=files / "logs", db_url=db_url, name="again")
        assert again.stop() == 0
    finally:
        first.kill()


def _documented_codes() -> dict[str, int]:
    """The table under '## Exit codes' in docs/cli.md: `| 2 | `USAGE` | ... |` rows."""
    section = DOCS.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, flags=re.MULTILINE)
    return {name: int(code) for code, name in rows}


def test_the_documented_exit_codes_are_the_enum() -> None:
    assert _documented_codes() == {code.name: code.value for code in ExitCode}


def _interrupted(cwd: Path) -> tuple[int, str, str]:
    """netdist-admin waiting on a server that accepted the connection and says nothing, then Ctrl-C."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(0.05)
        proc = start(
            "netdist-admin", "--server", f"127.0.0.1:{silent.getsockname()[1]}", "--timeout", "60", "status", cwd=cwd
        )
        accepted: list[socket.socket] = []

        def connected() -> bool:
            with contextlib.suppress(TimeoutError):
                accepted.append(silent.accept()[0])
            return bool(accepted)

        try:
            wait_until(connected, 30, what="netdist-admin to connect")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            for conn in accepted:
                conn.close()
    return proc.returncode, out, err


def test_each_documented_exit_code_is_what_a_real_command_returns(files: Path) -> None:
    made = run(
        "netdist-server", "tokens", "create", "--role", "viewer", "--name", "v", "--data-dir", "empty-dir", cwd=files
    )
    returned = {
        "OK": made[0],
        "FAILED": run("netdist-server", "tokens", "revoke", "nobody", "--data-dir", "empty-dir", cwd=files)[0],
        "USAGE": run("netdist-admin", "jobs", "add", "no-such-script.py", cwd=files)[0],
        "UNAVAILABLE": run("netdist-admin", "--server", REFUSED_PORT, "status", cwd=files)[0],
        "INTERRUPTED": _interrupted(files)[0],
    }
    assert returned == _documented_codes()


@pytest.mark.parametrize("argv", [("netdist-server",), ("netdist-admin",), ("netdist-worker",)])
def test_every_command_takes_dash_h(files: Path, argv: tuple[str, ...]) -> None:
    returncode, out, err = run(*argv, "-h", cwd=files)
    assert returncode == ExitCode.OK and out.startswith(f"Usage: {argv[0]} "), err


def test_the_job_statuses_jobs_list_offers_are_the_servers() -> None:
    assert set(JOB_STATUSES) == {s.value for s in JobStatus}
