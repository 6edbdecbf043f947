"""Every scheduling setting of a job script, enforced on a real server with real workers.

Time scales are short (a setting may take a second where a real one takes
minutes). Tests that only exercise the dispatcher's in-memory policy run on
SQLite only; the others run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from netdist.api.v1 import admin_pb2
from netdist.testing import wait_until
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel, expected_sum

Gates = Callable[[str], Path]
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
pytestmark = pytest.mark.in_process


def jobs_with_status(cluster: Cluster, hid: str, status: str) -> list[admin_pb2.JobInfo]:
    reply = cluster.api.admin.ListJobs(admin_pb2.ListJobsRequest(handler_ref=hid, status=status, limit=1000))
    return list(reply.jobs)


def done_by(cluster: Cluster, hid: str) -> Counter[str]:
    """Processed jobs of a handler per worker name."""
    names = {w.id: w.name for w in cluster.api.workers()}
    return Counter(names[j.worker_id] for j in jobs_with_status(cluster, hid, "processed"))


def log_text(cluster: Cluster, hid: str) -> str:
    return "\n".join(line.message for line in cluster.api.log(hid))


def sample_until_finished(
    cluster: Cluster, hid: str, sample: Callable[[list[admin_pb2.JobInfo]], None], timeout: float = 30
) -> admin_pb2.HandlerInfo:
    """Call ``sample`` with the running jobs of ``hid`` until it is finished."""

    def finished() -> admin_pb2.HandlerInfo | None:
        sample(cluster.api.running_jobs(hid))
        info = cluster.api.handler(hid)
        assert info.state != "failed", info.message
        return info if info.state == "finished" else None

    return wait_until(finished, timeout, interval=0.02, what=f"handler {hid} to finish")


# -- auto-start -----------------------------------------------------------------------------


def test_auto_start_on_upload_and_after_a_server_restart(cluster: Cluster, tmp_path: Path, gates: Gates) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    gate = gates("auto")
    auto = cluster.api.add_script(
        counter_script(tmp_path / "a.py", job="auto", settings="auto-start = true", count=3, gate=str(gate))
    )
    assert auto.handler.state == "running"  # started by the upload itself
    manual = cluster.api.add_script(counter_script(tmp_path / "m.py", job="manual", count=3))
    assert manual.handler.state == "idle"
    hid = auto.handler.id
    wait_until(lambda: cluster.api.running_jobs(hid), 30, what="a job at the gate")

    port = cluster.port
    assert cluster.server is not None and cluster.server.stop() == 0
    cluster.start_server(port=port)
    assert cluster.api.handler(hid).state == "running"
    assert cluster.api.handler(manual.handler.id).state == "idle"
    wait_until(
        lambda: "server restarted: resuming the handler" in log_text(cluster, hid),
        10,
        what="the resume in the handler log",
    )
    gate.touch()
    info = cluster.api.wait_state(hid, "finished", timeout=40)
    assert info.jobs_processed == 3 and info.result_summary == f"1.0 sum={expected_sum(3)} seen=3 failures=0"
    manual_info = cluster.api.handler(manual.handler.id)
    assert manual_info.state == "idle" and manual_info.jobs_processed == manual_info.jobs_available == 0


# -- schedule -------------------------------------------------------------------------------


@sqlite_only
def test_schedule_starts_the_handler_at_each_occurrence(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    # croniter takes a sixth field for seconds: every two seconds.
    hid = cluster.api.add_script(
        counter_script(tmp_path / "s.py", job="s", settings='schedule = "* * * * * */2"', count=2)
    ).handler.id
    hourly = cluster.api.add_script(
        counter_script(tmp_path / "h.py", job="h", settings='schedule = "0 * * * *"', count=2)
    ).handler.id

    def handler_if(ok: Callable[[admin_pb2.HandlerInfo], bool]) -> Callable[[], admin_pb2.HandlerInfo | None]:
        def check() -> admin_pb2.HandlerInfo | None:
            info = cluster.api.handler(hid)
            return info if ok(info) else None

        return check

    info = wait_until(handler_if(lambda i: i.next_start_at > 0), 5, what="a next start")
    # -1: a start due this very moment may not have happened yet on a loaded machine
    assert info.state == "idle" and -1 < info.next_start_at - time.time() <= 2.5
    assert int(info.next_start_at) % 2 == 0

    first = cluster.api.wait_state(hid, "finished", timeout=15)
    assert first.jobs_processed == 2 and first.started_at > 0
    # Finished is not running: the next occurrence starts it again.
    again = wait_until(handler_if(lambda i: i.started_at > first.started_at), 10, what="a second scheduled start")
    assert again.started_at - first.started_at <= 4.5
    wait_until(
        lambda: log_text(cluster, hid).count("schedule '* * * * * */2': starting") >= 2,
        10,
        what="two scheduled starts in the log",
    )

    top = wait_until(lambda: cluster.api.handler(hourly).next_start_at, 5, what="the hourly next start")
    assert top % 3600 == 0 and 0 < top - time.time() <= 3600
    assert cluster.api.handler(hourly).state == "idle"


# -- idle-time ------------------------------------------------------------------------------


def _hhmm(moment: datetime) -> str:
    return f"{moment:%H:%M}"


def _zone_where_it_is_night() -> str:
    """An Etc/GMT zone where it is now between 00:00 and 05:00, inside 22:00-06:00."""
    for offset in range(-12, 15):
        name = f"Etc/GMT{-offset:+d}"  # Etc/GMT-2 is UTC+2
        if 0 <= datetime.now(zoneinfo.ZoneInfo(name)).hour <= 4:
            return name
    raise AssertionError("no zone has night now")


@sqlite_only
def test_idle_time_hands_out_nothing_during_the_window(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    now = datetime.now().astimezone()  # the server's time zone: the same machine
    around_now = f'idle-time = "{_hhmm(now - timedelta(hours=1))}-{_hhmm(now + timedelta(hours=1))}"'
    idle = cluster.api.add_script(
        counter_script(tmp_path / "i.py", job="idle", settings=f"auto-start = true\n{around_now}", count=5)
    ).handler.id
    night = f'idle-time = "22:00-06:00"\ntime-zone = "{_zone_where_it_is_night()}"'
    zoned = cluster.api.add_script(
        counter_script(tmp_path / "z.py", job="zoned", settings=f"auto-start = true\n{night}", count=5)
    ).handler.id
    # A handler outside any window runs to the end on the same worker meanwhile.
    free = cluster.api.add_script(
        counter_script(tmp_path / "f.py", job="free", settings="auto-start = true", count=30)
    ).handler.id
    cluster.api.wait_state(free, "finished", timeout=30)
    for hid in (idle, zoned):
        info = cluster.api.handler(hid)
        assert (info.state, info.jobs_available, info.jobs_pending, info.jobs_processed) == ("running", 5, 0, 0)
    assert not cluster.api.running_jobs(idle) and not cluster.api.running_jobs(zoned)

    # The same script with a window that does not contain now: it runs.
    later = f'idle-time = "{_hhmm(now + timedelta(hours=2))}-{_hhmm(now + timedelta(hours=3))}"'
    replaced = cluster.api.add_script(
        counter_script(tmp_path / "i.py", job="idle", settings=f"auto-start = true\n{later}", count=5)
    )
    assert replaced.outcome == "replaced"
    info = cluster.api.wait_state(idle, "finished", timeout=30)
    assert info.jobs_processed == 5, [j.error_info for j in jobs_with_status(cluster, idle, "failed")]
    assert cluster.api.handler(zoned).jobs_processed == 0


# -- job-timeout and max-attempts -----------------------------------------------------------


def test_job_timeout_revokes_the_job_and_retries_it(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    cluster.add_worker("w2")
    # The first attempt of each job sleeps 60 s, far past the 1 s timeout.
    script = counter_script(
        tmp_path / "t.py",
        job="t",
        settings="auto-start = true\njob-timeout = 1",
        count=2,
        slow_attempts=1,
        slow_sleep=60.0,
    )
    hid = cluster.api.add_script(script).handler.id
    # Both slots were taken by the slow attempts: finishing before they could end means they were killed.
    info = cluster.api.wait_state(hid, "finished", timeout=25)
    assert info.jobs_processed == 2 and info.jobs_failed == 0
    # Each first attempt was cut short, not waited out: else it would have ended as attempt 1.
    assert [j.attempts for j in jobs_with_status(cluster, hid, "processed")] == [2, 2]
    # Who cut it (the worker's watchdog or the server's deadline, whichever ticks first) is a race
    # here; test_protocol.py and test_worker_executor.py each check one side alone.


def test_job_timeout_on_every_attempt_fails_the_job_with_job_timeout(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=2)
    settings = "auto-start = true\njob-timeout = 0.5\nmax-attempts = 2"
    hid = cluster.api.add_script(
        counter_script(tmp_path / "t.py", job="t", settings=settings, count=3, slow_attempts=99, slow_sleep=30.0)
    ).handler.id
    info = cluster.api.wait_state(hid, "finished", timeout=30)
    assert info.jobs_failed == 3 and info.jobs_processed == 0 and "failures=3" in info.result_summary
    failed = jobs_with_status(cluster, hid, "failed")
    assert len(failed) == 3 and all(j.attempts == 2 and j.error_info.type == "JobTimeout" for j in failed)
    # Every attempt is "timed out", whoever stopped it: the worker's watchdog (which reports an error) or the
    # server's deadline (which ends the lease). It showed "errored" for the first and "timed out" for the last.
    for job in failed:
        shown = cluster.api.admin.GetJob(admin_pb2.GetJobRequest(id=job.id), timeout=10)
        assert [a.outcome for a in shown.attempt_history] == ["timed out", "timed out"], shown.attempt_history
    # process_failure ran for each (its warning is in the handler's log).
    wait_until(lambda: log_text(cluster, hid).count("failed for good") == 3, 10, what="three process_failure calls")


# -- max-sequenced-errors ----------------------------------------------------------------------


def test_max_sequenced_errors_fails_the_handler_and_a_success_resets_the_count(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    limit = "auto-start = true\nmax-attempts = 1\nmax-sequenced-errors = 2"
    # Every other job fails: never two failures in a row.
    alternating = cluster.api.add_script(
        counter_script(tmp_path / "a.py", job="alternating", settings=limit, count=12, fail_every=2)
    ).handler.id
    info = cluster.api.wait_state(alternating, "finished", timeout=30)
    assert info.jobs_failed == 6 and info.jobs_processed == 6

    # Failing jobs of 0.1 s on one slot: the handler fails long before it runs out of jobs.
    broken = cluster.api.add_script(
        counter_script(tmp_path / "b.py", job="broken", settings=limit, count=20, fail_every=1, sleep=0.1)
    ).handler.id
    info = cluster.api.wait_state(broken, "failed", timeout=30)
    # The last error is in the message: it was only in the jobs, under --status available.
    assert re.search(
        r"failed results in a row \(max-sequenced-errors = 2\); the last: ValueError: job \d+ fails", info.message
    ), info.message
    assert info.jobs_available > 0  # it stopped handing out its jobs
    wait_until(lambda: "max-sequenced-errors = 2" in log_text(cluster, broken), 10, what="the failure in the log")


# -- max-parallel-jobs, max-jobs-per-client ------------------------------------------------------


@sqlite_only
def test_max_parallel_jobs_caps_leases_across_all_workers(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=3)
    cluster.add_worker("w2", slots=3)
    hid = cluster.api.add_script(
        counter_script(
            tmp_path / "p.py", job="p", settings="auto-start = true\nmax-parallel-jobs = 2", count=16, sleep=0.2
        )
    ).handler.id
    seen: list[int] = []
    info = sample_until_finished(cluster, hid, lambda jobs: seen.append(len(jobs)))
    assert info.jobs_processed == 16
    assert max(seen) == 2, f"outstanding leases seen: {sorted(Counter(seen).items())}"


@sqlite_only
def test_max_jobs_per_client_runs_one_job_per_worker(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1", slots=3)
    cluster.add_worker("w2", slots=3)
    hid = cluster.api.add_script(
        counter_script(
            tmp_path / "c.py", job="c", settings="auto-start = true\nmax-jobs-per-client = 1", count=12, sleep=0.2
        )
    ).handler.id
    per_worker: Counter[str] = Counter()
    total: list[int] = []

    def sample(jobs: list[admin_pb2.JobInfo]) -> None:
        total.append(len(jobs))
        for name, n in Counter(j.worker_name for j in jobs).items():
            per_worker[name] = max(per_worker[name], n)

    info = sample_until_finished(cluster, hid, sample)
    assert info.jobs_processed == 12
    assert dict(per_worker) == {"w1": 1, "w2": 1}  # both worked, never two at once on one
    assert max(total) == 2


# -- max-time-per-client-per-day ------------------------------------------------------------------


@sqlite_only
def test_max_time_per_client_per_day_stops_a_worker_after_its_budget(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("w1")
    hid = cluster.api.add_script(
        counter_script(
            tmp_path / "b.py",
            job="b",
            settings="auto-start = true\nmax-time-per-client-per-day = 0.8",
            count=12,
            sleep=0.3,
        )
    ).handler.id
    # Three jobs of 0.3 s spend w1's 0.8 s of the day on this handler.
    wait_until(lambda: cluster.api.handler(hid).jobs_processed >= 3, 20, what="w1 to spend its budget")
    # Another handler runs to the end on w1 meanwhile: w1 is free, yet gets no more of the first one's jobs.
    other = cluster.api.add_script(
        counter_script(tmp_path / "o.py", job="o", settings="auto-start = true", count=10)
    ).handler.id
    cluster.api.wait_state(other, "finished", timeout=30)
    info = cluster.api.handler(hid)
    assert info.state == "running" and 3 <= info.jobs_processed <= 4 and info.jobs_pending == 0
    assert info.jobs_available == 12 - info.jobs_processed
    # The day's usage survives a server restart: it is read back from the stored results.
    cluster.start_server(port=cluster.port)
    again = cluster.api.add_script(
        counter_script(tmp_path / "o2.py", job="o2", settings="auto-start = true", count=10)
    ).handler.id
    cluster.api.wait_state(again, "finished", timeout=30)  # w1 is back and free ...
    assert cluster.api.handler(hid).jobs_processed == info.jobs_processed  # ... yet gets none of these
    # The budget is per worker: a new worker gets jobs (and spends its own budget).
    before = info.jobs_processed
    cluster.add_worker("w2")
    wait_until(lambda: cluster.api.handler(hid).jobs_processed >= before + 3, 20, what="w2 to take jobs")
    by = done_by(cluster, hid)
    assert by["w1"] == before and by["w2"] >= 3, by


# -- clients-allowed / clients-denied -----------------------------------------------------------


def test_clients_allowed_and_denied_by_name_id_and_label(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    cluster.add_worker("lab-1")
    cluster.add_worker("gpu-box", labels={"gpu": "1"})
    cluster.add_worker("other", labels={"gpu": "0"})

    def three() -> dict[str, admin_pb2.WorkerInfo] | None:
        found = {w.name: w for w in cluster.api.workers()}
        return found if len(found) == 3 else None

    workers = wait_until(three, 20, what="three workers")
    assert dict(workers["gpu-box"].labels) == {"gpu": "1"}
    lab_id, other_id = workers["lab-1"].id, workers["other"].id

    def add(job: str, selectors: str) -> str:
        script = counter_script(
            tmp_path / f"{job}.py", job=job, settings=f"auto-start = true\n{selectors}", count=12, sleep=0.05
        )
        return cluster.api.add_script(script).handler.id

    by_name_or_label = add("a", 'clients-allowed = [{ name = "^lab-" }, { label = "gpu=1" }]')
    # lab-1 is denied by name but allowed by id: allowed wins, as in NetDist.
    precedence = add("b", f'clients-allowed = [{{ id = "{lab_id}" }}]\nclients-denied = [{{ name = "^lab-" }}]')
    denied_only = add("c", f'clients-denied = [{{ label = "gpu" }}, {{ id = "{other_id}" }}]')
    for hid in (by_name_or_label, precedence, denied_only):
        assert cluster.api.wait_state(hid, "finished", timeout=40).jobs_processed == 12
    a = done_by(cluster, by_name_or_label)
    assert set(a) <= {"lab-1", "gpu-box"} and a["gpu-box"] > 0, a
    assert set(done_by(cluster, precedence)) == {"lab-1"}
    assert set(done_by(cluster, denied_only)) == {"lab-1"}
    assert next(w for w in cluster.api.workers() if w.name == "other").jobs_done == 0


# -- priority -------------------------------------------------------------------------------


@sqlite_only
def test_priority_shares_one_worker_by_weight(cluster: Cluster, tmp_path: Path) -> None:
    cluster.api.upload(counter_wheel(tmp_path))
    heavy = cluster.api.add_script(
        counter_script(tmp_path / "h.py", job="heavy", settings="priority = 3", count=1000, sleep=0.01)
    ).handler.id
    light = cluster.api.add_script(counter_script(tmp_path / "l.py", job="light", count=1000, sleep=0.01)).handler.id
    for hid in (heavy, light):
        cluster.api.control(hid, admin_pb2.HANDLER_ACTION_START)
    wait_until(
        lambda: cluster.api.handler(heavy).jobs_available and cluster.api.handler(light).jobs_available,
        20,
        what="jobs of both handlers",
    )
    cluster.add_worker("w1")  # one worker, both handlers compete for it

    def done() -> tuple[int, int]:
        h, li = cluster.api.handler(heavy), cluster.api.handler(light)
        return h.jobs_processed + h.jobs_pending, li.jobs_processed + li.jobs_pending

    def after(jobs: int, since: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        def check() -> tuple[int, int] | None:
            now = done()
            return now if sum(now) - sum(since) >= jobs else None

        return wait_until(check, 30, what=f"{jobs} more jobs")

    start = after(20)  # a warm-up
    end = after(120, start)
    h, li = end[0] - start[0], end[1] - start[1]
    assert li > 0, "the light handler was starved"
    assert 2.2 <= h / li <= 4.0, (h, li)
    for hid in (heavy, light):
        cluster.api.control(hid, admin_pb2.HANDLER_ACTION_STOP)
