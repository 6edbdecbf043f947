"""A job script's dependency lock: what it asks for, and the exact wheels it got per platform.

A job script's PEP 723 ``dependencies`` and ``requires-python`` are read here
(checked, never run); the lock the server resolves from them (see
:mod:`netdist.server.deps_resolver`) is kept with the handler instance as
JSON, one list of wheels per platform key (``cp311-linux-x86_64-glibc2.36``), each
wheel by project name, version, file name and sha256. A handler's
environment is its package's wheels with the lock's (the lock wins by
project name).

A pinned lock (``jobs add --lock FILE``) is requirements text: ``name==version``
lines with optional ``--hash=sha256:...``, as ``uv pip compile`` and
``pip freeze`` write them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from sqlalchemy import Connection, select

from netdist import jobscript
from netdist.errors import InvalidArgumentError, JobScriptError
from netdist.platforms import Platform
from netdist.server.store.schema import handlers

MAX_DEPENDENCIES = 200
MAX_REQUIREMENT_CHARS = 500
MAX_LOCK_BYTES = 256 * 1024
_HASH = re.compile(r"--hash[= ]sha256:([0-9a-fA-F]{64})")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ScriptNeeds:
    """What a job script's metadata asks for beyond its package."""

    dependencies: tuple[str, ...] = ()
    requires_python: str = ""

    @property
    def empty(self) -> bool:
        return not self.dependencies


def script_needs(source: str) -> ScriptNeeds:
    """The ``dependencies`` and ``requires-python`` of a job script, checked: PEP 508 requirements
    by name from an index (no URLs, no local paths); JobScriptError naming the key otherwise."""
    data = jobscript.read_block(source)
    deps = data.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise JobScriptError("'dependencies': expected a list of requirement strings, e.g. [\"humanize>=4\"]")
    if len(deps) > MAX_DEPENDENCIES:
        raise JobScriptError(f"'dependencies': {len(deps)} entries; at most {MAX_DEPENDENCIES}")
    for dep in deps:
        _requirement(dep)
    requires_python = data.get("requires-python", "")
    if not isinstance(requires_python, str):
        raise JobScriptError("'requires-python': expected a version specifier string, e.g. \">=3.11\"")
    try:
        SpecifierSet(requires_python)
    except InvalidSpecifier:
        raise JobScriptError(f"'requires-python': {requires_python[:100]!r} is not a version specifier") from None
    return ScriptNeeds(dependencies=tuple(d.strip() for d in deps), requires_python=requires_python.strip())


def _requirement(text: str) -> Requirement:
    if len(text) > MAX_REQUIREMENT_CHARS:
        raise JobScriptError(f"'dependencies': an entry of {len(text)} characters; at most {MAX_REQUIREMENT_CHARS}")
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise JobScriptError(f"'dependencies': {text[:100]!r} is not a requirement: {exc}") from None
    if req.url:
        raise JobScriptError(
            f"'dependencies': {text[:100]!r} names a URL; give a project name (and version) from the index "
            "the server is configured for (serve --index-url / --find-links)"
        )
    return req


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Pin:
    name: str  # canonical
    version: str
    hashes: frozenset[str]


def parse_pins(text: str) -> dict[str, Pin]:
    """A pinned lock: ``name==version`` lines (``--hash=sha256:`` optional, ``\\`` continuations,
    comments); InvalidArgumentError naming the line for anything else."""
    if len(text.encode()) > MAX_LOCK_BYTES:
        raise InvalidArgumentError(f"'lock': over {MAX_LOCK_BYTES} bytes")
    pins: dict[str, Pin] = {}
    for number, line in _logical_lines(text):
        hashes = frozenset(h.lower() for h in _HASH.findall(line))
        spec = _HASH.sub("", line).strip()
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            raise InvalidArgumentError(f"'lock' line {number}: {spec[:100]!r} is not a requirement: {exc}") from None
        pinned = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if req.url or len(req.specifier) != 1 or not pinned:
            raise InvalidArgumentError(f"'lock' line {number}: {spec[:100]!r} is not pinned as name==version")
        name = canonicalize_name(req.name)
        pins[name] = Pin(name=name, version=pinned[0].version, hashes=hashes)
    return pins


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line and not line.startswith("-"):
            out.append((start, line))
        elif line.startswith("-") and not line.startswith("--hash"):
            raise InvalidArgumentError(f"'lock' line {start}: options ({line.split()[0]}) are not taken in a lock")
    return out


def constraints_text(pins: Mapping[str, Pin]) -> str:
    return "".join(f"{p.name}=={p.version}\n" for p in pins.values())


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LockedWheel:
    name: str  # canonical project name
    version: str
    filename: str
    sha256: str
    size: int

    def to_json_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PlatformLock:
    """One platform's wheels, or why it cannot be served."""

    platform: Mapping[str, str]  # Platform.to_json_dict()
    wheels: tuple[LockedWheel, ...] = ()
    error: str = ""  # not servable: the resolver's words
    resolved_at: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Lock:
    """A handler instance's lock. ``key`` names its inputs: it is re-resolved when they change."""

    key: str = ""
    needs: ScriptNeeds = ScriptNeeds()
    pinned: str = ""  # the pinned lock's text, if one was given
    package_sha256: str = ""
    platforms: Mapping[str, PlatformLock] = dataclasses.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.key

    def to_json(self) -> str:
        if self.empty:
            return ""
        return json.dumps(
            {
                "key": self.key,
                "dependencies": list(self.needs.dependencies),
                "requires_python": self.needs.requires_python,
                "pinned": self.pinned,
                "package_sha256": self.package_sha256,
                "platforms": {
                    k: {
                        "platform": dict(p.platform),
                        "wheels": [w.to_json_dict() for w in p.wheels],
                        "error": p.error,
                        "resolved_at": p.resolved_at,
                    }
                    for k, p in sorted(self.platforms.items())
                },
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> Lock:
        if not text:
            return Lock()
        data: dict[str, Any] = json.loads(text)
        return Lock(
            key=data["key"],
            needs=ScriptNeeds(dependencies=tuple(data["dependencies"]), requires_python=data["requires_python"]),
            pinned=data["pinned"],
            package_sha256=data["package_sha256"],
            platforms={
                k: PlatformLock(
                    platform=p["platform"],
                    wheels=tuple(LockedWheel(**w) for w in p["wheels"]),
                    error=p["error"],
                    resolved_at=p["resolved_at"],
                )
                for k, p in data["platforms"].items()
            },
        )


def lock_key(needs: ScriptNeeds, *, pinned: str, package_sha256: str) -> str:
    """What a lock depends on: the script's dependencies, the pinned lock, the package's wheels."""
    text = json.dumps([list(needs.dependencies), needs.requires_python, pinned, package_sha256])
    return hashlib.sha256(text.encode()).hexdigest()


def environment(package_wheels: Sequence[Mapping[str, Any]], locked: Sequence[LockedWheel]) -> tuple[str, ...]:
    """A handler's wheels: the package's (its own wheel first), then the lock's; where both hold a project,
    the lock's wheel wins."""
    names = {w.name for w in locked}
    first, *deps = package_wheels
    kept = [d["sha256"] for d in deps if canonicalize_name(str(d["distribution"])) not in names]
    return (first["sha256"], *kept, *(w.sha256 for w in locked if w.sha256 != first["sha256"]))


def unservable(lock_json: str) -> list[str]:
    """The platform keys a stored lock cannot serve."""
    return sorted(k for k, p in Lock.from_json(lock_json).platforms.items() if p.error) if lock_json else []


def platform_key(platform_json: str) -> str:
    """The key of a platform stored as JSON (a worker's); "" for none."""
    if not platform_json:
        return ""
    return Platform(**json.loads(platform_json)).key


def unservable_handlers(conn: Connection) -> dict[str, list[str]]:
    """Platform key -> the ids of the handler instances whose lock cannot serve it (a store read)."""
    out: dict[str, list[str]] = {}
    for hid, lock_json in conn.execute(
        select(handlers.c.id, handlers.c.deps_lock_json).where(handlers.c.deps_lock_json != "")
    ):
        for key in unservable(lock_json):
            out.setdefault(key, []).append(hid)
    return out
