"""Results a worker kept unacknowledged on disk, and its ledger taking them back on its next run."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from netdist.worker.job import JobRef, JobResult
from netdist.worker.ledger import Ledger
from netdist.worker.result_file import load_results, save_results

SERVER = "lab.example.org:50051"
A, B, C = (JobRef(job_id=n, lease_no=n + 10) for n in range(1, 4))
RESULTS = [
    JobResult(A, b'{"i":1,"text":"caf\\u00e9 \xc3\xa9"}', None, 0.25),
    JobResult.failed(B, "ValueError", "bad\nline", traceback="Traceback ...\n  line 1", duration_seconds=1.5),
    JobResult(C),  # no output: sent as null
]


def test_kept_results_read_back_the_same_and_only_this_user_may_read_them(tmp_path: Path) -> None:
    path = tmp_path / "worker-id.results"
    save_results(path, RESULTS, SERVER)
    assert load_results(path, SERVER) == RESULTS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_nothing_to_keep_removes_the_file_and_no_file_reads_as_nothing(tmp_path: Path) -> None:
    path = tmp_path / "worker-id.results"
    save_results(path, RESULTS, SERVER)
    save_results(path, [], SERVER)
    assert not path.exists()
    save_results(path, [], SERVER)
    assert load_results(path, SERVER) == []


@pytest.mark.parametrize(
    "junk",
    [
        "not json",
        "[1, 2]",
        '{"job_id": "1", "lease_no": 2, "output": "1", "error": null}',
        '{"job_id": true, "lease_no": 2, "output": "1", "error": null}',
        '{"job_id": 1, "lease_no": 2, "output": 1, "error": null}',
        '{"job_id": 1, "lease_no": 2, "output": null, "error": {"type": "E"}}',
        '{"job_id": 1, "output": "1", "error": null}',
    ],
)
def test_a_line_that_is_not_a_result_is_skipped(tmp_path: Path, junk: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "worker-id.results"
    save_results(path, RESULTS[:1], SERVER)
    path.write_text(junk + "\n" + path.read_text())
    assert load_results(path, SERVER) == RESULTS[:1]
    assert "skipped 1 unreadable line" in caplog.text


def test_results_kept_for_another_server_are_dropped_not_sent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Job ids are each server's own: job 1 of another server is not job 1 of this one."""
    path = tmp_path / "worker-id.results"
    save_results(path, RESULTS, "other.example.org:50051")
    assert load_results(path, SERVER) == []
    assert "for another server ('other.example.org:50051')" in caplog.text


def test_restored_results_are_claimed_sent_once_and_forgotten_when_acknowledged() -> None:
    ledger = Ledger()
    assert ledger.take(A)
    assert ledger.restore(RESULTS) == 2  # A is held by this run: not a result of an earlier one
    assert ledger.claimed == [A, B, C]
    assert not ledger.take(B)  # answered already
    assert ledger.unacked == RESULTS[1:]
    assert ledger.flush().results == RESULTS[1:]
    assert ledger.flush().results == []
    ledger.resend()
    assert ledger.flush().results == RESULTS[1:]
    assert ledger.acknowledge(B) and ledger.acknowledge(C)
    assert ledger.unacked == []
    assert ledger.claimed == [A]
