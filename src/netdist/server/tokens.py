"""Bearer tokens: made here, kept as hashes in the store, known to the server through a cache.

A token is ``ndt_`` and 256 random bits (``secrets.token_urlsafe(32)``); a
worker's own credential is ``ndc_`` and 256 bits. The store keeps sha256 hex
digests only. The server's :class:`TokenCache` reloads the tokens about once a
second (one small query), so a ``netdist-server tokens revoke`` takes effect
within about a second, also on the streams a revoked token opened: whoever
watches a token hears of its end. When a token was last used is written at
most once a minute per token. No value ever reaches a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from netdist.server.clock import SYSTEM_CLOCK, Clock
from netdist.server.store import credentials
from netdist.server.store.facade import Store

log = logging.getLogger("netdist.server.auth")

TOKEN_PREFIX = "ndt_"
CREDENTIAL_PREFIX = "ndc_"
REFRESH_SECONDS = 1.0
LAST_USED_EVERY_SECONDS = 60.0
FIRST_TOKENS = {"admin": "admin.token", "worker": "worker.token"}
"""The tokens a server makes on its first start: name (and role) -> file in the data dir."""


class Role(enum.StrEnum):
    ADMIN = "admin"
    WORKER = "worker"
    VIEWER = "viewer"


_ROLES = frozenset(r.value for r in Role)


@dataclasses.dataclass(frozen=True, slots=True)
class KnownToken:
    name: str
    role: Role
    sha256: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_credential() -> str:
    return CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` to a new file readable by its owner alone (created 0600, never widened)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a leftover of an older store: its token is dead
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(value + "\n")
        stream.flush()
        os.fsync(stream.fileno())


async def make_first_tokens(store: Store, data_dir: Path) -> list[Path] | None:
    """On a store without tokens: an admin and a worker token, written to files in ``data_dir``.

    The files come first: should the store refuse, the next start writes them again.
    """
    if await store.read(credentials.list_tokens):
        return None
    values = {name: new_token() for name in FIRST_TOKENS}
    paths = []
    for name, filename in FIRST_TOKENS.items():
        path = data_dir / filename
        await asyncio.to_thread(write_secret, path, values[name])
        paths.append(path)
    records = {name: (Role(name).value, digest(value)) for name, value in values.items()}
    if not await store.writer.run(credentials.add_first_tokens, records):
        log.warning(
            "another server made the first tokens of this store at the same time: the token files in "
            "%s are not valid; make tokens with netdist-server tokens create",
            data_dir,
        )
        return None
    return paths


class TokenCache:
    """The server's view of the tokens: looked up per call, reloaded from the store about once a second."""

    def __init__(self, store: Store, *, clock: Clock = SYSTEM_CLOCK, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._store = store
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._by_sha: dict[str, KnownToken] = {}
        self._used: dict[str, float] = {}  # by sha256: when its last call came (wall time), not yet written
        self._written: dict[str, float] = {}  # by sha256: when we last wrote its last use (monotonic)
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="netdist-token-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.write_last_used(force=True)

    def lookup(self, token: str) -> KnownToken | None:
        """The token's name and role; None if the server does not know it. Notes the use."""
        sha = digest(token)
        known = self._by_sha.get(sha)
        if known is not None:
            self._used[sha] = self._clock.time()
        return known

    def valid(self, sha256: str) -> bool:
        return sha256 in self._by_sha

    def watch(self, sha256: str, on_revoked: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_revoked`` once the token is revoked; returns the function that stops watching."""
        watchers = self._watchers.setdefault(sha256, set())
        watchers.add(on_revoked)

        def unwatch() -> None:
            watchers.discard(on_revoked)
            if not watchers and self._watchers.get(sha256) is watchers:
                del self._watchers[sha256]

        return unwatch

    async def refresh(self) -> None:
        records = await self._store.read(credentials.list_tokens)
        by_sha = {r.sha256: KnownToken(r.name, Role(r.role), r.sha256) for r in records if r.role in _ROLES}
        gone = [self._by_sha[sha] for sha in self._by_sha.keys() - by_sha.keys()]
        self._by_sha = by_sha
        for token in gone:
            self._used.pop(token.sha256, None)
            self._written.pop(token.sha256, None)
            watchers = self._watchers.pop(token.sha256, set())
            log.info(
                "token %r (%s) was revoked: %d open stream%s end",
                token.name,
                token.role,
                len(watchers),
                "" if len(watchers) == 1 else "s",
            )
            for on_revoked in list(watchers):
                try:
                    on_revoked()
                except Exception:
                    log.exception("ending a stream of revoked token %r failed", token.name)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
                await self.write_last_used()
            except Exception as exc:
                if not self._failing:
                    log.warning(
                        "cannot reload the tokens from the store (%s: %s); the server keeps those it "
                        "knows until it can",
                        type(exc).__name__,
                        exc,
                    )
                self._failing = True
            else:
                self._failing = False

    async def write_last_used(self, *, force: bool = False) -> None:
        """Store when each token was last used: at most once a minute per token (``force``: every one now)."""
        now = self._clock.monotonic()
        due = {
            sha: at
            for sha, at in self._used.items()
            if force or sha not in self._written or now - self._written[sha] >= LAST_USED_EVERY_SECONDS
        }
        if not due:
            return
        await self._store.write(credentials.mark_used, due)
        for sha, at in due.items():
            self._written[sha] = now
            if self._used.get(sha) == at:
                del self._used[sha]
