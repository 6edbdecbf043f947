"""Process helpers shared by the tests, the demo and the benchmarks.

Start a real server and real workers as subprocesses, build wheels from a
source tree, wait on conditions with a deadline. Nothing here is a fake.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

from netdist.adminctl.client import upload_requests
from netdist.api.v1 import admin_pb2, admin_pb2_grpc, packages_pb2, packages_pb2_grpc
from netdist.channel import ClientSecurity, sync_channel
from netdist.token_file import read_token_file

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float, *, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


# -- wheels ---------------------------------------------------------------------------------


def build_wheel(source: Path, out_dir: Path, *, version: str | None = None) -> Path:
    """Build a pure-Python wheel from a source tree with a pyproject.toml.

    Reads the name, version and entry points from ``[project]``; packs the
    packages under ``src/``. Enough for handler packages; use ``pip wheel``
    for anything with a build step.
    """
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    name, version = project["name"], version or project["version"]
    files: dict[str, bytes] = {}
    src = source / "src"
    for path in sorted(src.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            files[path.relative_to(src).as_posix()] = path.read_bytes()
    return write_wheel(out_dir, name=name, version=version, files=files, entry_points=project.get("entry-points", {}))


def write_wheel(
    out_dir: Path,
    *,
    name: str,
    version: str,
    files: Mapping[str, str | bytes],
    entry_points: Mapping[str, Mapping[str, str]] | None = None,
    requires: Sequence[str] = (),
    tag: str = "py3-none-any",
) -> Path:
    """Write a wheel holding ``files`` (path -> content) with the given metadata: ``requires`` its
    Requires-Dist, ``tag`` its compatibility tag (a platform wheel: ``cp311-cp311-linux_x86_64``)."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    members = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    members[f"{info}/METADATA"] = (meta + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode()
    members[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: netdist.testing\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    )
    if entry_points:
        text = "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
            for group, eps in entry_points.items()
        )
        members[f"{info}/entry_points.txt"] = text.encode()
    record = []
    for path, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    members[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{dist}-{version}-{tag}.whl"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in members.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    target.write_bytes(buf.getvalue())
    return target


# -- processes ------------------------------------------------------------------------------


@dataclasses.dataclass
class Process:
    """A child process whose output goes to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def _spawn(
    name: str,
    args: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """``env`` adds to ``base_env`` (default: this process's environment); ``cwd``: where it starts (default:
    this process's)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    out: IO[bytes] = log_path.open("wb")
    full_env = {**(os.environ if base_env is None else base_env), "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True, cwd=cwd
    )
    out.close()
    return Process(name=name, popen=popen, log_path=log_path)


@dataclasses.dataclass
class ServerProcess(Process):
    address: str = ""
    data_dir: Path | None = None

    @property
    def admin_token(self) -> str:
        """The admin token the server wrote to its data dir on its first start."""
        return read_token_file(self.token_file("admin"))

    @property
    def worker_token_file(self) -> Path:
        return self.token_file("worker")

    def token_file(self, name: str) -> Path:
        assert self.data_dir is not None
        return self.data_dir / f"{name}.token"


_DATA_DIRS: dict[str, Path] = {}
"""The data dir of each server this process started, by address: Admin and start_worker find its tokens there."""


def register_data_dir(address: str, data_dir: Path) -> None:
    """Tell :class:`Admin` and :func:`start_worker` where the tokens of the server at ``address`` are
    (:func:`start_server` does it; a server started in the test process says it with this)."""
    _DATA_DIRS[address] = data_dir


def _token_file(address: str, name: str) -> Path | None:
    data_dir = _DATA_DIRS.get(address)
    path = data_dir / f"{name}.token" if data_dir is not None else None
    return path if path is not None and path.is_file() else None


def known_token(address: str, name: str = "admin") -> str | None:
    """The ``admin`` or ``worker`` token of the server at ``address``, if :func:`start_server` started it."""
    path = _token_file(address, name)
    return read_token_file(path) if path is not None else None


def start_server(
    data_dir: Path,
    *,
    log_dir: Path,
    db_url: str | None = None,
    port: int = 0,
    heartbeat_interval: float = 5.0,
    timeout: float = 30.0,
    name: str = "server",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start ``netdist-server serve`` and wait for the address it prints.

    ``env`` adds to its environment (a time zone; the fault tests preload libfaketime with it).
    ``tls_cert`` and ``tls_key`` serve TLS (``netdist-server tls init`` makes them, for 127.0.0.1
    too); ``tls_client_ca`` requires client certificates. Plaintext on loopback by default."""
    args = [
        "-m",
        "netdist.server",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--heartbeat-interval",
        str(heartbeat_interval),
    ]
    if db_url:
        args += ["--db", db_url]
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--tls-client-ca", tls_client_ca)):
        if path is not None:
            args += [flag, str(path)]
    proc = _spawn(name, [*args, *extra_args], log_dir, env, cwd=cwd)

    def address() -> str | None:
        if not proc.alive():
            raise RuntimeError(f"server exited with {proc.popen.returncode}:\n{proc.output()}")
        found = re.search(r"listening on (\S+:\d+)", proc.output())
        return found.group(1) if found else None

    addr = wait_until(address, timeout, what="the server to listen")
    register_data_dir(addr, data_dir)
    return ServerProcess(name=proc.name, popen=proc.popen, log_path=proc.log_path, address=addr, data_dir=data_dir)


def start_worker(
    address: str,
    *,
    name: str,
    log_dir: Path,
    cache_dir: Path,
    slots: int = 1,
    labels: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    security: ClientSecurity | None = None,
    token_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """Start ``netdist-worker connect``; with no ``token_file``, the worker token of the server at ``address``
    (started by :func:`start_server`), if any. ``environ``: its whole environment (default: this process's);
    ``cwd``: where it starts."""
    args = [
        "-m",
        "netdist.worker",
        "connect",
        address,
        "--name",
        name,
        "--slots",
        str(slots),
        "--cache-dir",
        str(cache_dir),
        *tls_args(security),
        *extra_args,
    ]
    token_file = token_file or _token_file(address, "worker")
    if token_file is not None:
        args += ["--token-file", str(token_file)]
    for key, value in (labels or {}).items():
        args += ["--label", f"{key}={value}"]
    return _spawn(name, args, log_dir, base_env=environ, cwd=cwd)


def tls_args(security: ClientSecurity | None) -> list[str]:
    """The ``--tls*`` options of ``netdist-worker connect`` and ``netdist-admin`` for ``security``."""
    if security is None:
        return []
    args = ["--tls"] if security.tls else []
    for flag, path in (
        ("--tls-ca", security.tls_ca),
        ("--tls-cert", security.tls_cert),
        ("--tls-key", security.tls_key),
    ):
        if path is not None:
            args += [flag, str(path)]
    return args


# -- a small admin client ---------------------------------------------------------------------


class Admin:
    """Direct stubs for tests and the demo (the CLI is netdist.adminctl).

    With no token (in ``security`` or ``token``), the admin token of the server at ``address``
    (started by :func:`start_server`), if any.
    """

    def __init__(self, address: str, *, security: ClientSecurity | None = None, token: str | None = None) -> None:
        security = security or ClientSecurity()
        token = token or security.token or known_token(address)
        self.channel = sync_channel(address, dataclasses.replace(security, token=token))
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.packages = packages_pb2_grpc.PackageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def upload(self, *wheels: Path) -> packages_pb2.UploadPackageResponse:
        return self.packages.Upload(upload_requests(wheels), timeout=60)  # type: ignore[no-any-return]

    def add_script(self, path: Path | str, content: str | None = None) -> admin_pb2.AddJobScriptResponse:
        path = Path(path)
        text = content if content is not None else path.read_text()
        return self.admin.AddJobScript(  # type: ignore[no-any-return]
            admin_pb2.AddJobScriptRequest(filename=path.name, content=text.encode()), timeout=30
        )

    def handlers(self, *, running: bool = True) -> list[admin_pb2.HandlerInfo]:
        """Every handler; ``running=False``: without their running jobs (states and counts only)."""
        request = admin_pb2.ListHandlersRequest(without_running=not running)
        return list(self.admin.ListHandlers(request, timeout=30).handlers)

    def handler(self, ref: str) -> admin_pb2.HandlerInfo:
        return self.admin.GetHandler(admin_pb2.GetHandlerRequest(ref=ref), timeout=30).handler  # type: ignore[no-any-return]

    def control(self, ref: str, action: admin_pb2.HandlerAction.ValueType) -> admin_pb2.HandlerInfo:
        return self.admin.ControlHandler(  # type: ignore[no-any-return]
            admin_pb2.ControlHandlerRequest(ref=ref, action=action), timeout=30
        ).handler

    def workers(self) -> list[admin_pb2.WorkerInfo]:
        return list(self.admin.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=30).workers)

    def running_jobs(self, handler_ref: str = "") -> list[admin_pb2.JobInfo]:
        return list(self.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=handler_ref), timeout=30).jobs)

    def log(self, ref: str) -> list[admin_pb2.LogLine]:
        return list(self.admin.GetHandlerLog(admin_pb2.GetHandlerLogRequest(ref=ref), timeout=30))

    def wait_state(self, ref: str, *states: str, timeout: float = 60.0) -> admin_pb2.HandlerInfo:
        def check() -> admin_pb2.HandlerInfo | None:
            info = self.handler(ref)
            if info.state in states:
                return info
            if info.state == "failed" and "failed" not in states:
                raise AssertionError(f"handler {ref} failed: {info.message}")
            return None

        return wait_until(check, timeout, interval=0.1, what=f"handler {ref} to be {'/'.join(states)}")


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in reversed(processes):
            proc.stop()
