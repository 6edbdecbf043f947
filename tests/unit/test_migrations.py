"""Schema changes go through migrations: an old database upgrades with its rows kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from netdist.server.store import jobs as job_store
from netdist.server.store.engine import open_engine
from netdist.server.store.schema import Base


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "netdist.server.store:migrations")
    return config


def _old_database(url: str, revision: str, *statements: str) -> None:
    """A database migrated up to ``revision`` only, with ``statements`` run on it."""
    engine = create_engine(url)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_a_database_at_0001_upgrades_to_head_keeping_its_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_database(
        url,
        "0001",
        "INSERT INTO workers (id, name, labels_json, slots, hostname, version, connected, jobs_done, jobs_failed)"
        " VALUES ('w', 'old-worker', '{}', 2, 'h', '0.1', 0, 7, 1)",
    )

    upgraded = open_engine(url)  # what the server does on start
    with upgraded.connect() as conn:
        row = conn.execute(text("SELECT name, jobs_done, disabled FROM workers")).one()
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert tuple(row) == ("old-worker", 7, False)
    assert version == ScriptDirectory.from_config(_config()).get_current_head()
    columns = {table: {c["name"] for c in inspect(upgraded).get_columns(table)} for table in Base.metadata.tables}
    assert all(columns[t.name] == {c.name for c in t.columns} for t in Base.metadata.sorted_tables)
    upgraded.dispose()


def test_open_leases_give_back_the_attempt_charged_when_they_were_made(tmp_path: Path) -> None:
    """Before 0003 an attempt was charged at lease time; now only when the lease started."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _old_database(
        url,
        "0002",
        *(
            "INSERT INTO jobs (id, handler_id, status, input, extra, attempts, lease_no)"
            f" VALUES ({job_id}, 'h', '{status}', '{{}}', 'null', {attempts}, 1)"
            for job_id, status, attempts in (
                (1, "leased", 1),
                (2, "leased", 3),
                (3, "processed", 2),
                (4, "available", 1),
            )
        ),
    )

    upgraded = open_engine(url)
    with upgraded.connect() as conn:
        charged = {r.id: r.attempts for r in conn.execute(text("SELECT id, attempts FROM jobs"))}
    assert charged == {1: 0, 2: 2, 3: 2, 4: 1}
    upgraded.dispose()


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_job_ids_go_on_past_every_id_the_store_has_seen_and_past_32_bits(db_url: str) -> None:
    """0009 starts the job id counter past the jobs, the logs of pruned jobs, and PostgreSQL's sequence;
    0010 widens job ids on PostgreSQL (SQLite's are 64-bit already)."""
    _old_database(
        db_url,
        "0008",
        *(
            [
                "INSERT INTO jobs (handler_id, status, input, extra, attempts, lease_no)"
                " VALUES ('h', 'processed', '{}', 'null', 1, 1)"
            ]
            * 3  # ids 1, 2, 3 from the database,
        ),
        "DELETE FROM jobs",  # then pruned
        "INSERT INTO job_log (job_id, handler_id, lease_no, attempt, at, level, text, dropped)"
        " VALUES (2, 'h', 1, 1, 0, 'INFO', 'kept after its job', 0)",
    )

    upgraded = open_engine(db_url)
    with upgraded.begin() as conn:
        first = conn.execute(text("SELECT value FROM counters WHERE name = 'next_job_id'")).scalar_one()
        # and from 0010 they may pass 32 bits, with the rows kept beside a job
        far = 2**40
        conn.execute(
            text(
                "INSERT INTO jobs (id, handler_id, status, input, extra, attempts, lease_no)"
                f" VALUES ({far}, 'h', 'available', '{{}}', 'null', 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO job_log (job_id, handler_id, lease_no, attempt, at, level, text, dropped)"
                f" VALUES ({far}, 'h', 1, 1, 0, 'INFO', 'a far job', 0)"
            )
        )
        assert conn.execute(text("SELECT MAX(job_id) FROM job_log")).scalar_one() == far
    upgraded.dispose()
    # PostgreSQL's sequence remembers 3; SQLite reuses a pruned rowid, so the log is all that says 2.
    assert first == (4 if db_url.startswith("postgresql") else 3)


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_inputs_kept_apart_since_0011_go_back_into_their_rows_on_a_downgrade(db_url: str) -> None:
    """0011 adds ``job_inputs``; rows stored before it keep their inputs, and a downgrade puts the
    inputs kept apart back into their rows before it drops the table."""
    long_input = '{"pad": "' + "x" * 5000 + '"}'
    _old_database(
        db_url,
        "0010",
        "INSERT INTO jobs (id, handler_id, status, input, extra, attempts, lease_no)"
        " VALUES (1, 'h', 'available', '{\"old\": 1}', 'null', 0, 0)",
    )
    upgraded = open_engine(db_url)
    with upgraded.begin() as conn:
        job_store.insert(conn, "h", [2], [(long_input, "null")])
        assert [r.input for r in job_store.load_available(conn, "h", 0, 10)] == [b'{"old": 1}', long_input.encode()]
    upgraded.dispose()
    config = _config()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0010")
    with engine.connect() as conn:
        inputs: dict[int, str] = dict(conn.execute(text("SELECT id, input FROM jobs ORDER BY id")).all())
        assert "job_inputs" not in inspect(conn).get_table_names()
    engine.dispose()
    assert inputs == {1: '{"old": 1}', 2: long_input}
