"""A package's Requires-Dist met by its upload, or by dependency wheels stored with earlier versions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netdist.server.package_requirements import Unmet, complete
from netdist.server.wheels import WheelInfo


def wheel(name: str, version: str, *requires: str, handlers: bool = False) -> WheelInfo:
    return WheelInfo(
        filename=f"{name.replace('-', '_')}-{version}-py3-none-any.whl",
        sha256=f"{name}-{version}",
        size=1,
        distribution=name,
        version=version,
        handlers={"H": "m:H"} if handlers else {},
        requires=requires,
    )


def stored(*wheels: WheelInfo) -> tuple[list[dict[str, Any]], dict[str, tuple[str, ...]]]:
    return [w.to_json_dict() for w in wheels], {w.sha256: w.requires for w in wheels}


def run(upload: Sequence[WheelInfo], *held: WheelInfo):  # type: ignore[no-untyped-def]
    rows, requires = stored(*held)

    def requires_of(w: Mapping[str, Any]) -> tuple[str, ...]:
        return requires[w["sha256"]]

    return complete(upload, rows, requires_of)


def test_met_by_the_upload_carries_nothing_over() -> None:
    done = run([wheel("pkg", "2", "dep>=1", handlers=True), wheel("dep", "1")], wheel("dep", "0.9"))
    assert done.carried == () and done.unmet == ()


def test_a_stored_wheel_that_satisfies_is_carried_over_the_highest_first_with_its_own_requirements() -> None:
    held = [wheel("dep", "1.0", "base<2"), wheel("dep", "1.5", "base<2"), wheel("dep", "3.0"), wheel("base", "1.2")]
    done = run([wheel("pkg", "2", "Dep>=1,<2", "netdist>=1", handlers=True)], *held)
    assert [(w["distribution"], w["version"]) for w in done.carried] == [("dep", "1.5"), ("base", "1.2")]
    assert done.unmet == ()


def test_what_nothing_meets_is_unmet_and_markers_and_extras_are_honoured() -> None:
    done = run(
        [
            wheel("pkg", "2", "dep>=2", 'win; sys_platform == "win32"', 'extra-dep; extra == "x"', handlers=True),
            wheel("other", "1.0"),
            wheel("helper", "1", "other>=2"),
        ],
        wheel("dep", "1.0"),
    )
    assert done.carried == ()
    assert done.unmet == (
        Unmet(requirement="dep>=2", required_by="pkg 2"),
        Unmet(requirement="other>=2", required_by="helper 1", found="other 1.0"),
    )
    assert done.unmet[1].describe("pkg 2") == "other>=2 (through helper 1) (the upload's other 1.0 does not satisfy it)"
