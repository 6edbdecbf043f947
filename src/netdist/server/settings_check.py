"""A job script's custom settings checked by its handler class, in a handler host, before anything is stored.

``jobs add`` must refuse ``samples = "lots"`` for a handler whose
``settings_class`` declares ``samples: int``, not accept it and let the handler
fail a second later. Only the handler's package knows its settings class, and
package code runs only in a handler host (a child with the package's wheels on
its path and none of the server's environment; see
:mod:`netdist.server.host`), so the check starts one: it imports the handler
class and runs ``parse_settings`` on the table (the same check ``_bind`` makes
when the handler starts), without making an instance or calling
``initialize``. The host is a child process (the event loop only waits for
it), answers within ``CHECK_SECONDS`` or is killed, and at most
``CONCURRENT_CHECKS`` run at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

from netdist.errors import FailedPreconditionError, HandlerCodeError, HostDiedError, InvalidArgumentError
from netdist.server.blobs import BlobStore
from netdist.server.host import HostProcess
from netdist.server.host_protocol import CheckSettings
from netdist.server.store import catalog

log = logging.getLogger("netdist.server.settings_check")

CHECK_SECONDS = 30.0
"""How long the host may take to start, import the handler's module and check the settings (an import of a
large library on a loaded machine takes seconds; a handler whose import hangs is refused, not waited for)."""
CONCURRENT_CHECKS = 2
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+)', re.MULTILINE)


class SettingsChecker:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._slots = asyncio.Semaphore(CONCURRENT_CHECKS)

    async def check(self, package: catalog.PackageRecord, handler: str, settings: dict[str, Any]) -> None:
        """InvalidArgumentError (one line) when the handler's ``settings_class`` refuses ``settings`` or its
        module cannot be imported; FailedPreconditionError when the check could not run to its end."""
        entry = package.handlers[handler]
        async with self._slots:
            paths: list[Path] = [await asyncio.to_thread(self._blobs.unpacked, sha) for sha in package.environment]
            host = await HostProcess.start(python_path=paths, on_log=lambda level, message: None)
            try:
                await host.call(CheckSettings(entry=entry, settings=settings), timeout_seconds=CHECK_SECONDS)
            except HandlerCodeError as exc:
                raise InvalidArgumentError(_one_line(handler, exc)) from None
            except HostDiedError as exc:
                raise FailedPreconditionError(
                    f"handler {handler!r} of {package.name} {package.version}: the settings check did not "
                    f"complete: {exc.message}"
                ) from None
            finally:
                await host.close(timeout=1.0)


def _one_line(handler: str, exc: HandlerCodeError) -> str:
    """What the operator reads: a bad setting as the settings class put it (it names the setting); any
    other error with where in the handler's code it was raised."""
    first = exc.message.removeprefix(f"{exc.type}: ").split("\n", 1)[0]
    if exc.type == "SettingsError":
        return f"[tool.netdist.settings] {first}"
    frames = _FRAME.findall(exc.traceback)
    where = f" (at {frames[-1][0]}:{frames[-1][1]})" if frames else ""
    return f"handler {handler!r} raised while checking its settings: {exc.type}: {first}{where}"
