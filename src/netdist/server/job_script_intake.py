"""Job script intake: an uploaded job script checked, and stored as a new handler instance or as
the new script of the instance it names (package, handler, job).

Everything slow or hostile happens before the store is touched: the text must
be UTF-8, its metadata parses (in a thread: linear time), its Python passes the
script checker (in a child process), the package and handler it names are
uploaded, and the handler's ``settings_class`` accepts its custom settings (in a
handler host: :mod:`netdist.server.settings_check`). Starting, restarting or relaunching an instance is the manager's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from enum import StrEnum

from netdist import jobscript
from netdist.errors import InvalidArgumentError
from netdist.platforms import Platform
from netdist.server.blobs import BlobStore
from netdist.server.clock import Clock
from netdist.server.dependency_locks import DependencyLocker
from netdist.server.deps_lock import Lock
from netdist.server.runtime import LogSink
from netdist.server.script_check import ScriptChecker
from netdist.server.settings_check import SettingsChecker
from netdist.server.states import HandlerState
from netdist.server.store import catalog
from netdist.server.store.facade import Store


class Outcome(StrEnum):
    """What storing a job script did (the words the operator reads)."""

    CREATED = "created"
    REPLACED = "replaced"
    UNCHANGED = "no update needed"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckedScript:
    """A job script that passed every check, ready to store."""

    filename: str
    source: str
    sha256: str  # of its bytes, as kept in the blob store
    settings: jobscript.JobSettings
    settings_json: str
    custom_json: str
    lock: Lock = dataclasses.field(default_factory=Lock)  # its dependencies resolved (empty without any)


class JobScriptIntake:
    def __init__(
        self, store: Store, blobs: BlobStore, *, clock: Clock, log_sink: LogSink, locker: DependencyLocker
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._log = log_sink
        self.checker = ScriptChecker()
        self.settings_checker = SettingsChecker(blobs)
        self.locker = locker

    async def check(
        self, filename: str, content: bytes, *, pinned_lock: str | None = None, refresh: bool = False
    ) -> CheckedScript:
        """InvalidArgumentError (or JobScriptError) saying what is wrong; nothing is stored before this passed
        but the script's bytes in the blob store (content-addressed, harmless), and the wheels its
        dependencies resolved to (content-addressed too, see :mod:`netdist.server.dependency_locks`)."""
        try:
            source = content.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgumentError(f"{filename}: a job script must be UTF-8 text") from None
        # Off the event loop: the metadata in a thread (linear), the Python in a child process.
        script = await asyncio.to_thread(jobscript.parse, source, check_python=False)
        await self.checker.check(content)
        s = script.settings
        package = await self._store.read(catalog.current_package, s.package)
        if package is None:
            raise InvalidArgumentError(
                f"'package': no package named {s.package!r} is uploaded (netdist-admin upload-package)"
            )
        if s.handler not in package.handlers:
            raise InvalidArgumentError(
                f"'handler': package {s.package!r} has no handler {s.handler!r}; it has: "
                f"{', '.join(package.handlers) or 'none'}"
            )
        try:
            custom_json = json.dumps(dict(script.custom), sort_keys=True)
        except (TypeError, ValueError) as exc:  # a TOML date or time: the handler host takes JSON
            raise InvalidArgumentError(f"[tool.netdist.settings]: a value is not JSON ({exc})") from None
        await self.settings_checker.check(package, s.handler, json.loads(custom_json))
        existing = await self._store.read(catalog.handler_by_key, s.package, s.handler, s.job)
        previous = Lock.from_json(existing.deps_lock_json) if existing is not None else Lock()
        platforms = [Platform(**p) for p in await self._store.read(catalog.worker_platforms)]
        lock = await self.locker.lock(
            source=source,
            package=package,
            previous=previous,
            pinned=pinned_lock,
            refresh=refresh,
            platforms=platforms,
        )
        sha = await asyncio.to_thread(self._blobs.put, content)
        return CheckedScript(
            lock=lock,
            filename=filename,
            source=source,
            sha256=sha,
            settings=s,
            settings_json=json.dumps(s.to_json_dict(), sort_keys=True),
            custom_json=custom_json,
        )

    async def store(self, script: CheckedScript, *, uploaded_by: str) -> tuple[catalog.HandlerRecord, Outcome]:
        """Store it as the script of the instance it names, or as a new idle instance.
        The caller holds the manager's lock (two uploads of one new script make one instance)."""
        s = script.settings
        existing = await self._store.read(catalog.handler_by_key, s.package, s.handler, s.job)
        lock_json = script.lock.to_json()
        if existing is not None and existing.script_sha256 == script.sha256 and existing.deps_lock_json == lock_json:
            return existing, Outcome.UNCHANGED
        if existing is not None:
            await self._store.write(
                catalog.update_handler,
                existing.id,
                deps_lock_json=lock_json,
                script_sha256=script.sha256,
                script_source=script.source,
                settings_json=script.settings_json,
                custom_json=script.custom_json,
                script_uploaded_by=uploaded_by,
                script_filename=_base_name(script.filename),
            )
            self._log(
                existing.id, "info", "server", f"job script replaced ({script.filename}, sha256 {script.sha256[:12]})"
            )
            return await self._store.read(catalog.get_handler, existing.id), Outcome.REPLACED
        record = await self._store.write(
            catalog.insert_handler,
            id=uuid.uuid4().hex[:12],
            package=s.package,
            handler=s.handler,
            job_name=s.job,
            script_sha256=script.sha256,
            script_source=script.source,
            settings_json=script.settings_json,
            custom_json=script.custom_json,
            state=HandlerState.IDLE,
            message="",
            handler_state_json="{}",
            summary="",
            total=None,
            exhausted=False,
            sequenced_errors=0,
            created_at=self._clock.time(),
            script_uploaded_by=uploaded_by,
            script_filename=_base_name(script.filename),
            deps_lock_json=lock_json,
        )
        self._log(record.id, "info", "server", f"handler instance created from {script.filename}")
        return record, Outcome.CREATED


def _base_name(filename: str) -> str:
    """The file name an upload gave, without any folder (tracebacks show it)."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]
