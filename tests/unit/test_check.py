"""netdist-server check: stores built through the real migrations, then broken on purpose."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, create_engine, insert, text, update

from netdist.exit_codes import ExitCode
from netdist.jobscript import JobSettings
from netdist.server import check, cli
from netdist.server.blobs import BlobStore
from netdist.server.check_findings import Kind, Report
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import handlers, jobs, packages

NOW = 1_700_000_000.0


@dataclasses.dataclass
class Store:
    url: str
    engine: Engine
    data_dir: Path
    blobs: BlobStore
    wheel_sha: str
    script_sha: str
    ids: dict[str, int]  # one job of each kind a sound store holds

    def report(self, *, files: bool = True, limit: int = check.DEFAULT_LIMIT) -> Report:
        with self.engine.connect() as conn:
            return check.check(conn, self.data_dir if files else None, limit=limit)

    def change(self, fn: Callable[[Connection], object]) -> None:
        with self.engine.begin() as conn:
            fn(conn)

    def blob_path(self, sha: str) -> Path:
        return self.data_dir / "blobs" / sha[:2] / sha


def _job(conn: Connection, status: str, **values: object) -> int:
    row = {
        "handler_id": "h1",
        "status": status,
        "input": '{"i": 1}',
        "extra": "null",
        "attempts": 0,
        "lease_no": 0,
        **values,
    }
    return int(conn.execute(insert(jobs).values(**row)).inserted_primary_key[0])  # type: ignore[index]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A sound store: one package, one handler instance, a job in each status."""
    data_dir = tmp_path / "data"
    blobs = BlobStore(data_dir)
    wheel_sha = blobs.put(b"PK not really a wheel, but content-addressed all the same")
    script_sha = blobs.put(b"# /// script\n# ///\ndef process(job_input, ctx):\n    return job_input\n")
    url = f"sqlite:///{data_dir / 'netdist.db'}"
    engine = open_engine(url)
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        conn.execute(
            insert(packages).values(
                name="pkg",
                version="1.0",
                wheel_json=json.dumps({"sha256": wheel_sha, "filename": "pkg.whl"}),
                dependencies_json="[]",
                handlers_json='{"H": "pkg:H"}',
                uploaded_at=NOW,
                current=True,
            )
        )
        conn.execute(
            insert(handlers).values(
                id="h1",
                package="pkg",
                handler="H",
                job_name="job",
                script_sha256=script_sha,
                script_source="",
                settings_json=json.dumps({"max-attempts": 2}),
                custom_json="{}",
                state="running",
                handler_state_json='{"sum": 0}',
                created_at=NOW,
            )
        )
        ids["available"] = _job(conn, "available")
        ids["requeued"] = _job(conn, "available", attempts=1, lease_no=2, error_json='{"type": "WorkerLost"}')
        ids["leased"] = _job(conn, "leased", attempts=1, lease_no=1, worker_id="w1", leased_at=NOW)
        ids["succeeded"] = _job(
            conn, "succeeded", attempts=1, lease_no=1, worker_id="w1", leased_at=NOW, output='{"o": 1}', finished_at=NOW
        )
        ids["processed"] = _job(conn, "processed", attempts=1, lease_no=1, finished_at=NOW)
        ids["errored"] = _job(conn, "errored", attempts=2, lease_no=3, error_json="{}", finished_at=NOW)
        ids["failed"] = _job(conn, "failed", attempts=2, lease_no=2, error_json="{}", finished_at=NOW)
    yield Store(
        url=url, engine=engine, data_dir=data_dir, blobs=blobs, wheel_sha=wheel_sha, script_sha=script_sha, ids=ids
    )
    engine.dispose()


def kinds(report: Report) -> list[tuple[Kind, int | None]]:
    return [(p.kind, p.job_id) for p in report.problems]


def test_a_sound_store_has_no_problems(store: Store) -> None:
    report = store.report()
    assert report.problems == ()
    assert report.ok
    assert (report.jobs, report.handlers, report.blobs) == (7, 1, 2)


JOB_BREAKAGES: dict[str, tuple[str, dict[str, object], Kind]] = {
    "unknown status": ("available", {"status": "lost"}, Kind.JOB_STATUS),
    "leased without worker": ("leased", {"worker_id": None}, Kind.JOB_LEASE),
    "leased with an empty worker": ("leased", {"worker_id": ""}, Kind.JOB_LEASE),
    "leased without leased_at": ("leased", {"leased_at": None}, Kind.JOB_LEASE),
    "leased at lease 0": ("leased", {"lease_no": 0, "attempts": 0}, Kind.JOB_LEASE),
    "processed without finished_at": ("processed", {"finished_at": None}, Kind.JOB_FINISHED),
    "failed without finished_at": ("failed", {"finished_at": None}, Kind.JOB_FINISHED),
    "succeeded without output": ("succeeded", {"output": None}, Kind.JOB_FINISHED),
    "errored without error": ("errored", {"error_json": None}, Kind.JOB_FINISHED),
    "attempts over max-attempts": ("requeued", {"attempts": 3, "lease_no": 5}, Kind.JOB_ATTEMPTS),
    "attempts without leases": ("available", {"attempts": 1}, Kind.JOB_ATTEMPTS),
    "negative attempts": ("available", {"attempts": -1}, Kind.JOB_ATTEMPTS),
}


@pytest.mark.parametrize("breakage", list(JOB_BREAKAGES))
def test_each_broken_job_row_is_one_problem_naming_the_job(store: Store, breakage: str) -> None:
    which, values, kind = JOB_BREAKAGES[breakage]
    job_id = store.ids[which]
    store.change(lambda conn: conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values)))
    report = store.report()
    assert kinds(report) == [(kind, job_id)], [str(p) for p in report.problems]
    assert report.problems[0].handler_id == "h1"
    assert not report.ok


def test_max_attempts_defaults_to_the_job_scripts_default(store: Store) -> None:
    # What a job script that does not set max-attempts gets, as the parser reads it.
    default = JobSettings(package="p", handler="H", job="j").max_attempts
    store.change(lambda conn: conn.execute(update(handlers).values(settings_json="{}")))
    job_id = store.ids["requeued"]
    store.change(
        lambda conn: conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(attempts=default, lease_no=default + 1)
        )
    )
    assert store.report().ok
    store.change(lambda conn: conn.execute(update(jobs).where(jobs.c.id == job_id).values(attempts=default + 1)))
    problems = store.report().problems
    assert kinds(store.report()) == [(Kind.JOB_ATTEMPTS, job_id)]
    assert f"max-attempts {default}" in problems[0].message


def test_jobs_of_a_missing_handler_are_one_problem_per_handler(store: Store) -> None:
    def orphan(conn: Connection) -> None:
        for _ in range(3):
            _job(conn, "available", handler_id="gone")

    store.change(orphan)
    (problem,) = store.report().problems
    assert problem.kind == Kind.JOB_ORPHAN and problem.handler_id == "gone"
    assert problem.message.startswith("3 job(s)")


@pytest.mark.parametrize(
    ("column", "value", "kind"),
    [
        ("state", "sleeping", Kind.HANDLER_STATE),
        ("settings_json", "not json", Kind.HANDLER_DATA),
        ("settings_json", '{"max-attempts": 0}', Kind.HANDLER_DATA),
        ("handler_state_json", "[1, 2]", Kind.HANDLER_DATA),
    ],
)
def test_a_broken_handler_instance_is_named(store: Store, column: str, value: str, kind: Kind) -> None:
    store.change(lambda conn: conn.execute(update(handlers).values({column: value})))
    (problem,) = store.report().problems
    assert (problem.kind, problem.handler_id, problem.job_id) == (kind, "h1", None)


def test_many_problems_of_one_kind_are_listed_up_to_the_limit(store: Store) -> None:
    def many(conn: Connection) -> None:
        for _ in range(5):
            _job(conn, "leased", lease_no=1)  # no worker, no leased_at

    store.change(many)
    report = store.report(limit=2)
    lease = [p for p in report.problems if p.kind == Kind.JOB_LEASE]
    assert [p.job_id for p in lease[:2]] == [8, 9]
    assert lease[2].job_id is None and lease[2].message.startswith("... and 3 more")
    assert len(lease) == 6  # two checks (worker, leased_at), each two rows and a count


def test_a_missing_or_corrupt_blob_is_found(store: Store) -> None:
    store.blob_path(store.script_sha).unlink()
    store.blob_path(store.wheel_sha).write_bytes(b"flipped")
    problems = store.report().problems
    by_kind = {p.kind: p for p in problems}
    assert sorted(by_kind) == [Kind.BLOB_CORRUPT, Kind.BLOB_MISSING]
    assert by_kind[Kind.BLOB_MISSING].message == "the job script of handler h1 is missing"
    assert by_kind[Kind.BLOB_MISSING].path == f"blobs/{store.script_sha[:2]}/{store.script_sha}"
    assert by_kind[Kind.BLOB_CORRUPT].path == f"blobs/{store.wheel_sha[:2]}/{store.wheel_sha}"
    assert store.report(files=False).ok  # without the data dir, only the database is checked


def test_a_blob_named_by_a_dependency_is_checked(store: Store) -> None:
    dep = "ab" * 32
    store.change(
        lambda conn: conn.execute(
            update(packages).values(dependencies_json=json.dumps([{"sha256": dep, "filename": "dep.whl"}]))
        )
    )
    (problem,) = store.report().problems
    assert problem.kind == Kind.BLOB_MISSING and problem.message == "a wheel of package pkg 1.0 is missing"


def test_leftovers_of_interrupted_writes_are_found(store: Store) -> None:
    sub = store.blob_path(store.wheel_sha).parent
    (sub / ".tmp-abc123").write_bytes(b"half a wheel")
    (store.data_dir / "envs" / ".tmp-xyz").mkdir()
    (store.data_dir / "blobs" / "zz").mkdir()
    (store.data_dir / "blobs" / "zz" / "stray").write_bytes(b"?")
    problems = store.report().problems
    assert sorted((p.kind, p.path) for p in problems) == [
        (Kind.BLOB_CORRUPT, "blobs/zz/stray"),
        (Kind.PARTIAL_FILE, f"blobs/{sub.name}/.tmp-abc123"),
        (Kind.PARTIAL_FILE, "envs/.tmp-xyz"),
    ]


def test_a_store_at_another_revision_or_no_store_at_all(store: Store, tmp_path: Path) -> None:
    store.change(lambda conn: conn.execute(text("UPDATE alembic_version SET version_num = '0001'")))
    (problem,) = store.report().problems
    assert problem.kind == Kind.SCHEMA and "revision 0001" in problem.message
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    plain = create_engine(f"sqlite:///{empty}")
    with plain.connect() as conn:
        report = check.check(conn, None)
    plain.dispose()
    (problem,) = report.problems
    assert problem.kind == Kind.SCHEMA and problem.message.startswith("not a netdist store")


def test_sqlite_integrity_check_reports_a_damaged_index(store: Store) -> None:
    store.engine.dispose()
    path = store.data_dir / "netdist.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA writable_schema = ON")
    # The index now claims to hold another column than the rows it was built from.
    db.execute(
        "UPDATE sqlite_master SET sql = replace(sql, '(handler_id, status, id)', '(handler_id, input, id)')"
        " WHERE name = 'ix_jobs_handler_status'"
    )
    db.commit()
    db.close()
    problems = store.report(files=False).problems
    assert problems and all(p.kind == Kind.INTEGRITY for p in problems), [str(p) for p in problems]


# -- the command -------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, ["check", *args])
    return result.exit_code, result.stdout, result.stderr


def test_the_command_exits_0_on_a_sound_store(store: Store) -> None:
    code, out, err = run("--db", store.url, "--data-dir", str(store.data_dir))
    assert (code, err) == (ExitCode.OK, "")
    assert out == "ok: no problems (7 jobs, 1 handler instance, 2 blobs checked)\n"
    code, out, _ = run("--data-dir", str(store.data_dir))  # the SQLite file in the data dir by default
    assert code == 0 and "2 blobs" in out


def test_the_command_prints_one_line_per_problem_and_exits_1(store: Store) -> None:
    job_id = store.ids["leased"]
    store.change(lambda conn: conn.execute(update(jobs).where(jobs.c.id == job_id).values(worker_id=None)))
    store.blob_path(store.script_sha).unlink()
    code, out, _ = run("--db", store.url, "--data-dir", str(store.data_dir))
    assert code == ExitCode.FAILED
    lines = out.splitlines()
    assert lines[0] == f"job-lease: job {job_id}, handler h1: leased without a worker id"
    assert lines[1].startswith("blob-missing: blobs/")
    assert lines[2] == "2 problems found (7 jobs, 1 handler instance, 1 blob checked)"
    code, out, _ = run("--db", store.url, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["blobs"] is None
    assert report["problems"] == [
        {
            "kind": "job-lease",
            "job_id": job_id,
            "handler_id": "h1",
            "path": None,
            "message": "leased without a worker id",
        }
    ]


def test_the_command_never_creates_a_store(tmp_path: Path) -> None:
    code, out, err = run("--db", f"sqlite:///{tmp_path / 'nothing.db'}")
    assert code == ExitCode.USAGE and out == ""
    assert (
        err
        == f"UsageError: --db sqlite:///{tmp_path / 'nothing.db'}: no SQLite file at {tmp_path / 'nothing.db'} (a check never creates one)\n"
    )
    assert not (tmp_path / "nothing.db").exists()


@pytest.mark.parametrize(
    ("args", "code", "start"),
    [
        ((), 2, "UsageError: give the store"),
        (("--db", "not a url"), 2, "UsageError: --db 'not a url' is not a SQLAlchemy URL"),
        (("--db", "nosuchdb://x/y"), 2, "UsageError: --db nosuchdb://x/y: Can't load plugin"),
        (("--data-dir", "/nonexistent/dir"), 2, "UsageError: --data-dir /nonexistent/dir is not a directory"),
        (
            ("--db", "postgresql+psycopg://u:secret@127.0.0.1:1/x"),
            3,
            "DatabaseError: cannot check the store at postgresql+psycopg://u:***@127.0.0.1:1/x: ",
        ),
    ],
)
def test_bad_input_is_one_red_line(args: tuple[str, ...], code: int, start: str) -> None:
    got, out, err = run(*args)
    assert (got, out) == (code, "")
    assert err.startswith(start) and err.count("\n") == 1, err
    assert "Traceback" not in err and "secret" not in err
