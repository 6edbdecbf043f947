"""The size of a handler's next batch of results, from how long its last call took."""

from __future__ import annotations

from netdist.server.runtime import RESULT_BATCH, RESULT_CALL_SECONDS, next_batch


def test_a_slow_handler_gets_what_it_does_in_about_the_target_time() -> None:
    # 16 results in 1.6 s: 0.1 s each, so 0.2 s holds 2.
    assert next_batch(16, 16, 1.6) == int(RESULT_CALL_SECONDS / 0.1)
    # Slower than the target for one result: still one at a time.
    assert next_batch(4, 1, 10.0) == 1


def test_a_fast_handler_grows_at_most_fourfold_per_call_up_to_the_cap() -> None:
    sizes = [16]
    while sizes[-1] < RESULT_BATCH:
        sizes.append(next_batch(sizes[-1], sizes[-1], 0.00001 * sizes[-1]))
    assert sizes == [16, 64, 256, 1024, RESULT_BATCH]
    # A call of one result is mostly the call's own cost (2 ms here): the batch falls to what that
    # pace allows, and grows back fourfold a call once results wait.
    assert next_batch(RESULT_BATCH, 1, 0.002) == 100
    assert next_batch(100, 100, 0.002) == 400


def test_a_call_without_items_keeps_the_size_and_one_too_quick_to_time_grows_it() -> None:
    assert next_batch(64, 0, 5.0) == 64
    assert next_batch(64, 10, 0.0) == 256


def test_one_result_a_call_grows_when_the_handler_is_quick_however_slow_the_call() -> None:
    """A no-op handler on a busy machine: a call of one result took 0.3 s (the host waited for a core,
    the server's loop for its turn) but the handler's code 20 µs of it. Sized by the call, the batch
    stayed at one result a call and its results piled up (bench/README.md); sized by the handler's time
    (``HandlerUpdate.seconds``), it grows fourfold a call."""
    assert next_batch(1, 1, 0.3) == 1
    assert next_batch(1, 1, 0.00002) == 4
