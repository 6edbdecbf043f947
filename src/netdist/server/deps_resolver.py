"""Resolving a job script's dependencies with pip, into wheels in the blob store.

The resolver is pip's: ``python -m pip download --only-binary=:all:`` in a
child process, given the package's own wheel (so its Requires-Dist are
honoured, its uploaded dependency wheels offered alongside), the script's
requirements, and the pins of a pinned lock as constraints. The index is the
server's (``--index-url``, ``--find-links``; with either, pip's own
configuration and PIP_* variables are ignored so the result depends only on
what the operator gave), or pip's own configuration. The child has a time
limit and is killed past it; nothing is stored unless it succeeded.

Wheels only: a worker never builds code, so pip may not pick a source
distribution. Each downloaded wheel passes the same checks as an uploaded one
before it enters the blob store by sha256 (shared between scripts).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from netdist.errors import DependencyError, FailedPreconditionError
from netdist.platforms import Platform
from netdist.server.blobs import BlobStore
from netdist.server.deps_lock import LockedWheel, Pin, ScriptNeeds, constraints_text
from netdist.server.wheels import inspect_wheel

DEFAULT_RESOLVE_TIMEOUT_SECONDS = 300.0
MAX_CONCURRENT = 2
"""Resolutions (pip processes) at once."""
MAX_MESSAGE_CHARS = 2000
_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ResolverConfig:
    index_url: str | None = None
    find_links: tuple[str, ...] = ()
    timeout_seconds: float = DEFAULT_RESOLVE_TIMEOUT_SECONDS
    python: str = sys.executable

    @property
    def explicit(self) -> bool:
        """The operator named the index: pip's own configuration is left out."""
        return self.index_url is not None or bool(self.find_links)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PackageWheel:
    filename: str
    sha256: str


class Resolver:
    def __init__(self, config: ResolverConfig, blobs: BlobStore) -> None:
        self.config = config
        self.blobs = blobs
        self._running = asyncio.Semaphore(MAX_CONCURRENT)  # pip is heavy: more uploads wait their turn

    async def resolve(
        self,
        *,
        needs: ScriptNeeds,
        pins: Mapping[str, Pin],
        package: str,
        package_wheels: Sequence[PackageWheel],
        target: Platform,
        native: bool,
    ) -> tuple[LockedWheel, ...]:
        """The wheels ``target`` needs beyond the package's own, in the blob store; DependencyError with
        pip's words when they do not resolve. ``native``: the target is the interpreter pip runs on."""
        if needs.requires_python and target.python not in SpecifierSet(needs.requires_python):
            raise DependencyError(
                f"{target.key}: Python {target.python} does not satisfy the job script's "
                f"requires-python {needs.requires_python!r}"
            )
        async with self._running:
            return await self._resolve(needs, pins, package, package_wheels, target, native)

    async def _resolve(
        self,
        needs: ScriptNeeds,
        pins: Mapping[str, Pin],
        package: str,
        package_wheels: Sequence[PackageWheel],
        target: Platform,
        native: bool,
    ) -> tuple[LockedWheel, ...]:
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="netdist-resolve-"))
        try:
            options = [] if native else target.pip_target_args()
            args = await asyncio.to_thread(self._prepare, work, needs, pins, package_wheels, options)
            await self._run(args, target)
            return await asyncio.to_thread(self._collect, work / "wheels", package, pins, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _prepare(
        self,
        work: Path,
        needs: ScriptNeeds,
        pins: Mapping[str, Pin],
        package_wheels: Sequence[PackageWheel],
        options: Sequence[str],
    ) -> list[str]:
        local = work / "package"
        local.mkdir()
        for wheel in package_wheels:
            shutil.copyfile(self.blobs.open(wheel.sha256), local / wheel.filename)
        cfg = self.config
        args = [cfg.python, "-P", "-m", "pip", "download", "--only-binary=:all:", "--dest", str(work / "wheels")]
        args += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
        if cfg.explicit:
            args += ["--isolated"]
            args += ["--index-url", cfg.index_url] if cfg.index_url else ["--no-index"]
            for link in cfg.find_links:
                args += ["--find-links", link]
        args += ["--find-links", str(local)]
        if pins:
            (work / "constraints.txt").write_text(constraints_text(pins))
            args += ["--constraint", str(work / "constraints.txt")]
        # "--" ends the options: a requirement can never be read as one.
        return [*args, *options, "--", str(local / package_wheels[0].filename), *needs.dependencies]

    def _environ(self) -> dict[str, str]:
        """The server's environment without its own settings (a --db URL may hold a password)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETDIST_")}
        if not self.config.explicit:
            return env
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf either: the index is the operator's
        return env

    async def _run(self, args: list[str], target: Platform) -> None:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._environ(),
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.config.timeout_seconds)
        except TimeoutError:
            raise FailedPreconditionError(
                f"resolving the dependencies for {target.key} took over {self.config.timeout_seconds:g} s "
                "(serve --resolve-timeout); is the index reachable?"
            ) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc.returncode != 0:
            text = output.decode("utf-8", "replace")
            if "No module named pip" in text:
                raise FailedPreconditionError(f"the server's Python ({self.config.python}) has no pip to resolve with")
            raise DependencyError(f"dependencies do not resolve for {target.key}: {pip_message(text)}")

    def _collect(self, dest: Path, package: str, pins: Mapping[str, Pin], target: Platform) -> tuple[LockedWheel, ...]:
        files = sorted(dest.iterdir()) if dest.exists() else []
        sources = [f.name for f in files if not f.name.endswith(".whl")]
        if sources:
            raise DependencyError(
                f"{target.key}: {', '.join(sources)}: a source distribution; netdist takes wheels only "
                "(workers never build code): build a wheel and serve it with --find-links"
            )
        locked = []
        for path in files:
            try:
                name, version, _, _ = parse_wheel_filename(path.name)
            except InvalidWheelFilename as exc:
                raise DependencyError(f"{target.key}: {path.name}: {exc}") from None
            if name == canonicalize_name(package):
                continue
            sha = self._ingest(path)
            pin = pins.get(name)
            if pin is not None and pin.hashes and sha not in pin.hashes:
                raise DependencyError(
                    f"{target.key}: {path.name} has sha256 {sha}, which the lock does not list for {name}=={pin.version}"
                )
            locked.append(
                LockedWheel(name=name, version=str(version), filename=path.name, sha256=sha, size=path.stat().st_size)
            )
        return tuple(sorted(locked, key=lambda w: w.name))

    def _ingest(self, path: Path) -> str:
        """Check a downloaded wheel as an upload is checked; store it by sha256 (streamed, not held whole)."""
        blob = self.blobs.incoming()
        try:
            self.blobs.reserve(path.stat().st_size)
            try:
                with path.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        blob.write(chunk)
                sha = blob.finish()
                inspect_wheel(path.name, blob.path, sha, limits=self.blobs.limits)
                return self.blobs.adopt(blob)
            finally:
                self.blobs.release(path.stat().st_size)
        finally:
            blob.discard()


def pip_message(output: str) -> str:
    """pip's error in one paragraph: its ERROR lines and what it says caused a conflict (or its last lines),
    whitespace collapsed, clipped."""
    raw = output.splitlines()
    lines = [line.strip() for line in raw if line.strip()]
    errors = [
        line.removeprefix("ERROR:").strip()
        for line in lines
        if line.startswith("ERROR:") and not line.startswith("ERROR: ResolutionImpossible")
    ]
    if "The conflict is caused by:" in lines:
        start = raw.index(next(r for r in raw if r.strip() == "The conflict is caused by:")) + 1
        causes = []
        for line in raw[start:]:
            if not line.startswith(" ") or not line.strip():
                break
            causes.append(line.strip())
        errors.insert(1, "The conflict is caused by: " + "; ".join(causes) + ".")
    text = " ".join(errors or lines[-5:])
    text = re.sub(r"\s+", " ", text).strip() or "pip failed without a message"
    if "from versions: none" in text:
        text += (
            " (netdist takes wheels only, workers never build code: a project published only as a source "
            "distribution needs a wheel built and served with --find-links)"
        )
    return text[:MAX_MESSAGE_CHARS]
