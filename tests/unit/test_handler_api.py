"""The API package authors import: pinned, so a change is a decision."""

from __future__ import annotations

import dataclasses
import logging

import pytest

import netdist.handler
from netdist.handler import Handler, SettingsError


def test_public_names_are_pinned() -> None:
    assert sorted(netdist.handler.__all__) == ["Handler", "JobContext", "JobFailure", "JsonValue", "SettingsError"]


@dataclasses.dataclass
class Knobs:
    limit: int
    ratio: float = 0.5
    name: str = "x"
    tags: list[str] = dataclasses.field(default_factory=list)


class Typed(Handler[Knobs]):
    settings_class = Knobs


def bind(handler: Handler[Knobs], raw: dict[str, object]) -> list[tuple[object, object]]:
    queued: list[tuple[object, object]] = []
    handler._bind(
        handler_id="h",
        job_name="j",
        raw_settings=raw,
        log=logging.getLogger("t"),
        enqueue=lambda i, e: queued.append((i, e)),
        state={},
    )
    return queued


def test_typed_settings_are_checked_and_coerced() -> None:
    h = Typed()
    bind(h, {"limit": 10, "ratio": 1, "tags": ["a"]})
    assert h.settings == Knobs(limit=10, ratio=1.0, tags=["a"])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"limit": "10"}, "setting 'limit': expected int, got str '10'"),
        ({"limit": True}, "setting 'limit': expected int, got True"),
        ({"limit": 1, "colour": "red"}, "unknown setting 'colour'"),
        ({"limit": 1, "tags": "a"}, "setting 'tags': expected a list"),
        ({}, "missing 1 required"),
    ],
)
def test_wrong_settings_name_the_setting(raw: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        bind(Typed(), raw)
    assert message in str(err.value)


def test_untyped_settings_are_a_dict_and_enqueue_reaches_the_sink() -> None:
    h: Handler[dict[str, object]] = Handler()
    queued = bind(h, {"anything": 1})  # type: ignore[arg-type]
    assert h.settings == {"anything": 1}
    h.enqueue({"i": 1}, extra={"k": 2})
    assert queued == [({"i": 1}, {"k": 2})]
