"""Rows written straight into a store by tests of the store's own functions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from netdist.server.store.schema import handlers


def insert_handler(conn: Connection, **overrides: Any) -> None:
    """A running handler instance ``h`` with empty settings; ``overrides`` replace any column."""
    values: dict[str, Any] = {
        "id": "h",
        "package": "p",
        "handler": "H",
        "job_name": "j",
        "script_sha256": "0" * 64,
        "script_source": "",
        "settings_json": "{}",
        "custom_json": "{}",
        "state": "running",
        "message": "",
        "handler_state_json": "{}",
        "summary": "",
        "total": None,
        "exhausted": False,
        "sequenced_errors": 0,
        "created_at": 0.0,
    }
    conn.execute(handlers.insert().values({**values, **overrides}))
