"""The control: an undisturbed run passes the checker, and the checker catches what it claims to."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from netdist.server.store.schema import handlers, jobs
from tests.faults.conftest import Rig

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_an_undisturbed_run_passes_and_a_cooked_book_does_not(rig: Rig) -> None:
    rig.upload()
    rig.worker("w1", slots=2)
    hid = rig.add("plain", count=30)
    rig.finish(hid)
    rig.warmed_up()
    snap = rig.verify(hid, count=30)
    assert len(snap.by_status("processed")) == 30 and rig.inv.watch.samples > 0

    # The checker is not a rubber stamp: a result counted twice, a lost job,
    # and a lease number going back are each caught.
    state = dict(snap.state, seen={**snap.state["seen"], "3": 2})
    with rig.inv.engine.begin() as conn:
        conn.execute(update(handlers).where(handlers.c.id == hid).values(handler_state_json=json.dumps(state)))
    with pytest.raises(AssertionError, match="more than once"):
        rig.verify(hid, count=30)
    with rig.inv.engine.begin() as conn:
        conn.execute(update(handlers).where(handlers.c.id == hid).values(handler_state_json=json.dumps(snap.state)))
        conn.execute(
            update(jobs).where(jobs.c.id == snap.jobs[5].id).values(status="leased", worker_id="ghost", leased_at=1.0)
        )
    with pytest.raises(AssertionError, match="neither finished, queued nor held by a live lease"):
        rig.verify(hid, count=30, finished=False, settle_seconds=1)
    with rig.inv.engine.begin() as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == snap.jobs[5].id).values(status="processed", lease_no=0, attempts=0)
        )
    with pytest.raises(AssertionError, match="lease_no/attempts went from"):
        rig.verify(hid, count=30)
