"""The life cycle of a handler instance: what each operator action does in each state, in one table.

``TRANSITIONS`` maps every (state, action) pair to a :class:`Step` (what the
manager does and the state it leaves) or a :class:`Refusal` (the message the
operator gets; nothing changes). The manager (:mod:`netdist.server.manager`)
carries steps out; it decides nothing about states itself.

=========  ==========  ==========  =========  ==========  =========  ========
state      start       pause       stop       disable     enable     remove
=========  ==========  ==========  =========  ==========  =========  ========
idle       launch      refused     nothing    halt        nothing    remove
running    nothing     pause       halt       halt        nothing    remove
paused     resume      refused     halt       halt        nothing    remove
stopped    launch      refused     nothing    halt        nothing    remove
disabled   refused     refused     nothing    halt        settle     remove
finished   launch      refused     nothing    halt        nothing    remove
failed     launch      refused     nothing    halt        settle     remove
=========  ==========  ==========  =========  ==========  =========  ========

``settle`` clears the message and the failed results in a row and leaves the
state :func:`settled_state` reads from the record: ``idle`` if it never ran,
``finished`` if its last run went to the end, else ``stopped`` (start goes on
where it was). A new job script for a failed handler settles it the same way.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum

from netdist.errors import FailedPreconditionError, InvalidArgumentError
from netdist.server.states import HandlerState


class HandlerAction(StrEnum):
    """What an operator (or a schedule, or auto-start) asks of a handler instance."""

    START = "start"
    PAUSE = "pause"
    STOP = "stop"
    DISABLE = "disable"
    ENABLE = "enable"
    REMOVE = "remove"


class Effect(StrEnum):
    """What the manager does to carry a step out."""

    NOTHING = "nothing"  # already where the action leads
    LAUNCH = "launch"  # start a runtime (a handler host) and register with the dispatcher
    RESUME = "resume"  # a paused handler hands out jobs again
    PAUSE = "pause"  # hands out nothing; outstanding leases stay
    HALT = "halt"  # stop the runtime, revoke every lease, unregister
    SETTLE = "settle"  # back to where its last run got to (settled_state), error and streak forgotten
    REMOVE = "remove"  # halt, then delete the instance


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    effect: Effect
    target: HandlerState | None = None  # the state it leaves; None: unchanged (or removed)
    message: str = ""  # stored with the new state (a halt says why)


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """``template`` is formatted with ``handler_id`` and ``state``."""

    template: str

    def error(self, handler_id: str, state: HandlerState) -> FailedPreconditionError:
        return FailedPreconditionError(self.template.format(handler_id=handler_id, state=state))


ACTIVE = frozenset({HandlerState.RUNNING, HandlerState.PAUSED})
"""States with a runtime: resumed when the server starts again."""

SCHEDULE_SKIPS = frozenset({*ACTIVE, HandlerState.DISABLED, HandlerState.FAILED})
"""States a due schedule leaves alone: already going, or waiting for the operator (enable or start)."""

_NOTHING = Step(effect=Effect.NOTHING)
_LAUNCH = Step(effect=Effect.LAUNCH, target=HandlerState.RUNNING)
_HALT_STOP = Step(effect=Effect.HALT, target=HandlerState.STOPPED, message="stopped by the operator")
_HALT_DISABLE = Step(effect=Effect.HALT, target=HandlerState.DISABLED, message="disabled by the operator")
_SETTLE = Step(effect=Effect.SETTLE)  # the target is settled_state's
_REMOVE = Step(effect=Effect.REMOVE, target=HandlerState.STOPPED, message="removed")
_NOT_RUNNING = Refusal("handler {handler_id} is {state}: only a running handler can be paused")
_DISABLED = Refusal("handler {handler_id} is disabled: enable it first")


def _row(state: HandlerState) -> dict[HandlerAction, Step | Refusal]:
    """The column defaults; the table below overrides them per state."""
    return {
        HandlerAction.START: _LAUNCH,
        HandlerAction.PAUSE: _NOT_RUNNING,
        HandlerAction.STOP: _HALT_STOP if state in ACTIVE else _NOTHING,
        HandlerAction.DISABLE: _HALT_DISABLE,
        HandlerAction.ENABLE: _NOTHING,
        HandlerAction.REMOVE: _REMOVE,
    }


_OVERRIDES: dict[HandlerState, dict[HandlerAction, Step | Refusal]] = {
    HandlerState.RUNNING: {
        HandlerAction.START: _NOTHING,
        HandlerAction.PAUSE: Step(effect=Effect.PAUSE, target=HandlerState.PAUSED),
    },
    HandlerState.PAUSED: {HandlerAction.START: Step(effect=Effect.RESUME, target=HandlerState.RUNNING)},
    HandlerState.DISABLED: {HandlerAction.START: _DISABLED, HandlerAction.ENABLE: _SETTLE},
    HandlerState.FAILED: {HandlerAction.ENABLE: _SETTLE},
}

TRANSITIONS: dict[tuple[HandlerState, HandlerAction], Step | Refusal] = {
    (state, action): outcome
    for state in HandlerState
    for action, outcome in (_row(state) | _OVERRIDES.get(state, {})).items()
}


def parse_action(action: str) -> HandlerAction:
    try:
        return HandlerAction(action)
    except ValueError:
        raise InvalidArgumentError(f"unknown action {action!r}") from None


def step(handler_id: str, state: HandlerState, action: HandlerAction) -> Step:
    """The step ``action`` takes from ``state``; FailedPreconditionError when the table refuses it."""
    outcome = TRANSITIONS[(state, action)]
    if isinstance(outcome, Refusal):
        raise outcome.error(handler_id, state)
    return outcome


def settled_state(*, ran: bool, went_to_the_end: bool) -> HandlerState:
    """Where ``enable`` leaves a disabled or failed handler (and a new job script a failed one):
    ``idle`` if it never ran, ``finished`` if its last run went to the end, else ``stopped``."""
    if not ran:
        return HandlerState.IDLE
    return HandlerState.FINISHED if went_to_the_end else HandlerState.STOPPED
