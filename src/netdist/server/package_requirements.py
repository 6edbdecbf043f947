"""A package's requirements: met by the wheels of its upload, or by dependency wheels the server holds.

Every ``Requires-Dist`` of an upload's wheels (the package's, and its
dependency wheels' in turn) whose marker holds for the server's Python, with
no extra asked for, must be met by a wheel whose version satisfies it. A
requirement the upload does not carry is met by a dependency wheel uploaded
with an earlier version of the same package when that wheel's version
satisfies it (the highest such version): the new version **carries it over**,
and its own requirements are met in turn. What is met by neither is
``unmet``; the package service then refuses the upload unless the handler
instances' dependency locks can take it from the index
(:mod:`netdist.server.package_service`).

``netdist`` itself is always met: the server and the workers provide it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from netdist.server.wheels import WheelInfo

PROVIDED = frozenset({"netdist"})
"""Projects every handler host and job process has without a wheel."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Unmet:
    requirement: str  # as its wheel's METADATA writes it
    required_by: str  # "name version" of the wheel that asks for it
    found: str = ""  # "name version" of the wheel of that project the package holds, which does not satisfy it

    def describe(self, package: str) -> str:
        """The requirement, through which wheel unless it is ``package``'s own ("name version")."""
        through = f" (through {self.required_by})" if self.required_by != package else ""
        found = f" (the upload's {self.found} does not satisfy it)" if self.found else ""
        return f"{self.requirement}{through}{found}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    carried: tuple[Mapping[str, Any], ...] = ()
    """Stored dependency wheels (as a package record keeps them) the new version takes in."""
    unmet: tuple[Unmet, ...] = ()


def complete(
    wheels: Sequence[WheelInfo],
    stored: Sequence[Mapping[str, Any]],
    requires_of: Callable[[Mapping[str, Any]], Sequence[str]],
) -> Completion:
    """Meet the requirements of an upload's ``wheels`` (the package first) from the wheels themselves, then
    from ``stored`` (dependency wheels of earlier versions, as package records keep them: filename, sha256,
    size, distribution, version); ``requires_of`` reads a stored wheel's Requires-Dist."""
    have = {canonicalize_name(w.distribution): w.version for w in wheels}
    names = {canonicalize_name(w.distribution): w.distribution for w in wheels}
    candidates = sorted(stored, key=lambda w: _sort_key(str(w["version"])), reverse=True)
    todo: list[tuple[str, Sequence[str]]] = [(f"{w.distribution} {w.version}", w.requires) for w in wheels]
    carried: list[Mapping[str, Any]] = []
    unmet: list[Unmet] = []
    while todo:
        required_by, requires = todo.pop(0)
        for text in requires:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name in PROVIDED or not _applies(req):
                continue
            if name in have:
                if not _satisfies(have[name], req):
                    found = f"{names[name]} {have[name]}"
                    unmet.append(Unmet(requirement=text, required_by=required_by, found=found))
                continue
            pick = next(
                (
                    w
                    for w in candidates
                    if canonicalize_name(str(w["distribution"])) == name and _satisfies(str(w["version"]), req)
                ),
                None,
            )
            if pick is None:
                unmet.append(Unmet(requirement=text, required_by=required_by))
                continue
            have[name], names[name] = str(pick["version"]), str(pick["distribution"])
            carried.append(pick)
            todo.append((f"{pick['distribution']} {pick['version']}", requires_of(pick)))
    return Completion(carried=tuple(carried), unmet=tuple(unmet))


def _applies(req: Requirement) -> bool:
    """Its marker holds for the server's Python, no extra asked for (pip evaluates markers there too)."""
    return req.marker is None or req.marker.evaluate({"extra": ""})


def _satisfies(version: str, req: Requirement) -> bool:
    if not req.specifier:
        return True
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _sort_key(version: str) -> tuple[int, Version]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, Version("0"))
