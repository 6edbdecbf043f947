"""The life cycle table, every (state, action) pair: the step it takes or the refusal the operator reads.

The expected table is written out here a second time, by hand, so that a change
to one cell of lifecycle.TRANSITIONS fails a named case.
"""

from __future__ import annotations

import grpc
import pytest

from netdist.errors import FailedPreconditionError, InvalidArgumentError
from netdist.server import lifecycle
from netdist.server.lifecycle import Effect, HandlerAction, Step
from netdist.server.states import HandlerState

S, A, E = HandlerState, HandlerAction, Effect

NOTHING = Step(effect=E.NOTHING)
LAUNCH = Step(effect=E.LAUNCH, target=S.RUNNING)
STOP = Step(effect=E.HALT, target=S.STOPPED, message="stopped by the operator")
DISABLE = Step(effect=E.HALT, target=S.DISABLED, message="disabled by the operator")
SETTLE = Step(effect=E.SETTLE)
REMOVE = Step(effect=E.REMOVE, target=S.STOPPED, message="removed")
PAUSE = Step(effect=E.PAUSE, target=S.PAUSED)
RESUME = Step(effect=E.RESUME, target=S.RUNNING)


def not_running(state: str) -> str:
    return f"handler h1 is {state}: only a running handler can be paused"


DISABLED = "handler h1 is disabled: enable it first"

#: state -> (start, pause, stop, disable, enable, remove); a str is the refusal's message
EXPECTED: dict[HandlerState, tuple[Step | str, ...]] = {
    S.IDLE: (LAUNCH, not_running("idle"), NOTHING, DISABLE, NOTHING, REMOVE),
    S.RUNNING: (NOTHING, PAUSE, STOP, DISABLE, NOTHING, REMOVE),
    S.PAUSED: (RESUME, not_running("paused"), STOP, DISABLE, NOTHING, REMOVE),
    S.STOPPED: (LAUNCH, not_running("stopped"), NOTHING, DISABLE, NOTHING, REMOVE),
    S.DISABLED: (DISABLED, not_running("disabled"), NOTHING, DISABLE, SETTLE, REMOVE),
    S.FINISHED: (LAUNCH, not_running("finished"), NOTHING, DISABLE, NOTHING, REMOVE),
    S.FAILED: (LAUNCH, not_running("failed"), NOTHING, DISABLE, SETTLE, REMOVE),
}
ORDER = (A.START, A.PAUSE, A.STOP, A.DISABLE, A.ENABLE, A.REMOVE)
CASES = [(state, action, row[i]) for state, row in EXPECTED.items() for i, action in enumerate(ORDER)]


def test_the_table_has_one_entry_for_every_state_and_action() -> None:
    assert set(EXPECTED) == set(HandlerState) and set(ORDER) == set(HandlerAction)
    assert set(lifecycle.TRANSITIONS) == {(s, a) for s in HandlerState for a in HandlerAction}
    assert len(CASES) == len(HandlerState) * len(HandlerAction) == 42


@pytest.mark.parametrize(("state", "action", "expected"), CASES, ids=[f"{s}-{a}" for s, a, _ in CASES])
def test_each_action_in_each_state(state: HandlerState, action: HandlerAction, expected: Step | str) -> None:
    if isinstance(expected, Step):
        assert lifecycle.step("h1", state, action) == expected
        return
    with pytest.raises(FailedPreconditionError) as caught:
        lifecycle.step("h1", state, action)
    assert caught.value.message == expected
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_step_that_moves_leaves_a_different_state_or_removes() -> None:
    """No step claims to change what it leaves as it was (NOTHING is the only way to stay)."""
    for (state, _), outcome in lifecycle.TRANSITIONS.items():
        if isinstance(outcome, Step) and outcome.effect not in (E.NOTHING, E.HALT, E.REMOVE, E.SETTLE):
            assert outcome.target is not None and outcome.target != state
        if isinstance(outcome, Step) and outcome.effect == E.SETTLE:  # settled_state leaves neither of these
            assert state in (S.DISABLED, S.FAILED)


def test_actions_are_parsed_from_their_names_and_an_unknown_one_is_refused() -> None:
    assert [lifecycle.parse_action(a.value) for a in HandlerAction] == list(HandlerAction)
    with pytest.raises(InvalidArgumentError) as caught:
        lifecycle.parse_action("restart")
    assert caught.value.message == "unknown action 'restart'"


def test_active_states_are_resumed_and_schedules_leave_waiting_ones_alone() -> None:
    assert {S.RUNNING, S.PAUSED} == lifecycle.ACTIVE
    assert {S.RUNNING, S.PAUSED, S.DISABLED, S.FAILED} == lifecycle.SCHEDULE_SKIPS
    # what a schedule does start, it starts by LAUNCH: never a refusal
    for state in set(HandlerState) - lifecycle.SCHEDULE_SKIPS:
        assert lifecycle.step("h1", state, A.START) == LAUNCH


def test_enable_settles_where_the_last_run_got_to() -> None:
    assert lifecycle.settled_state(ran=False, went_to_the_end=False) == S.IDLE
    assert lifecycle.settled_state(ran=True, went_to_the_end=True) == S.FINISHED
    assert lifecycle.settled_state(ran=True, went_to_the_end=False) == S.STOPPED
