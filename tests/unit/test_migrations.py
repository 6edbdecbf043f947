"""Schema changes go through migrations: an old database upgrades with its rows kept."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from netdist.server.store.engine import open_engine
from netdist.server.store.schema import Base


def test_a_database_at_0001_upgrades_to_head_keeping_its_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", "netdist.server.store:migrations")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            text(
                "INSERT INTO workers (id, name, labels_json, slots, hostname, version, connected, jobs_done, jobs_failed)"
                " VALUES ('w', 'old-worker', '{}', 2, 'h', '0.1', 0, 7, 1)"
            )
        )
    engine.dispose()

    upgraded = open_engine(url)  # what the server does on start
    with upgraded.connect() as conn:
        row = conn.execute(text("SELECT name, jobs_done, disabled FROM workers")).one()
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert tuple(row) == ("old-worker", 7, False)
    assert version == ScriptDirectory.from_config(config).get_current_head()
    columns = {table: {c["name"] for c in inspect(upgraded).get_columns(table)} for table in Base.metadata.tables}
    assert all(columns[t.name] == {c.name for c in t.columns} for t in Base.metadata.sorted_tables)
    upgraded.dispose()


def test_open_leases_give_back_the_attempt_charged_when_they_were_made(tmp_path: Path) -> None:
    """Before 0003 an attempt was charged at lease time; now only when the lease started."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", "netdist.server.store:migrations")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        for job_id, status, attempts in ((1, "leased", 1), (2, "leased", 3), (3, "processed", 2), (4, "available", 1)):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, handler_id, status, input, extra, attempts, lease_no)"
                    f" VALUES ({job_id}, 'h', '{status}', '{{}}', 'null', {attempts}, 1)"
                )
            )
    engine.dispose()

    upgraded = open_engine(url)
    with upgraded.connect() as conn:
        charged = {r.id: r.attempts for r in conn.execute(text("SELECT id, attempts FROM jobs"))}
    assert charged == {1: 0, 2: 2, 3: 2, 4: 1}
    upgraded.dispose()
