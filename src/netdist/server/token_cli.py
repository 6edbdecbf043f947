"""``netdist-server tokens``: make, list and revoke the tokens clients present.

These work on the store itself (``--db`` / ``--data-dir`` as for ``serve``),
whether the server runs or not: a running server reloads the tokens about
once a second, so a revoked token stops working there within about a second,
on its open streams too. ``list`` opens the store read only; ``create`` and
``revoke`` write. A new token is printed once, on stdout, and never again.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import SQLAlchemyError

from netdist.cli_boundary import fail
from netdist.errors import NetDistError, first_line
from netdist.exit_codes import ExitCode
from netdist.server.store import credentials
from netdist.server.store.engine import describe, for_writing, open_engine, read_only_url
from netdist.server.store_url import checked_url, store_url
from netdist.server.tokens import Role, digest, new_token

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _store_options(fn: F) -> F:
    fn = click.option(
        "--db",
        "db_url",
        default=None,
        envvar="NETDIST_DB",
        show_envvar=True,
        help="SQLAlchemy URL of the store (default: the SQLite file in --data-dir).",
    )(fn)
    return click.option(
        "--data-dir",
        default="netdist-data",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        envvar="NETDIST_DATA_DIR",
        show_envvar=True,
        help="The server's data dir (its SQLite store).",
    )(fn)


@click.group("tokens")
def tokens() -> None:
    """Make, list and revoke tokens (on the store: the server may run or not).

    Roles: admin (everything), worker (the job stream and blob fetches), viewer
    (read-only admin calls). Exit codes: 0 ok, 1 refused (a name taken, no such
    token), 2 usage, 3 the store cannot be opened.
    """


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]), help="What the token may do.")
@click.option(
    "--name", required=True, help="A unique name (letters, digits, . _ @ -), shown in listings and the audit."
)
@_store_options
def create_command(role: str, name: str, db_url: str | None, data_dir: Path) -> None:
    """Make a token and print it once (keep it in a file readable by you alone)."""
    if not NAME.fullmatch(name):
        fail(
            f"UsageError: --name {name!r}: 1 to 100 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit",
            ExitCode.USAGE,
        )
    token = new_token()
    with _writing(db_url, data_dir) as engine:
        _run(engine, credentials.add_token, name=name, role=role, sha256=digest(token))
    click.echo(token)
    click.secho(
        f"made the {role} token {name!r}; it is shown only now: save it to a file only you can read "
        "and give it with --token-file FILE",
        fg="green",
        err=True,
    )


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")
@_store_options
def list_command(as_json: bool, db_url: str | None, data_dir: Path) -> None:
    """Names, roles, when each was made and last used (never a value: only hashes are stored)."""
    url = store_url(db_url, data_dir)
    try:
        engine = create_engine(read_only_url(checked_url(url), what="a listing"))
    except ValueError as exc:
        fail(f"UsageError: --db {describe(url)}: {first_line(exc)}", ExitCode.USAGE)
    try:
        records = _run(engine, credentials.list_tokens, read_only=True)
    finally:
        engine.dispose()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"name": r.name, "role": r.role, "created_at": r.created_at, "last_used_at": r.last_used_at}
                    for r in records
                ],
                indent=2,
            )
        )
        return
    rows = [("NAME", "ROLE", "CREATED", "LAST USED")] + [
        (r.name, r.role, _when(r.created_at), _when(r.last_used_at) if r.last_used_at else "never") for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not records:
        click.echo("(no tokens: the server makes an admin and a worker token on its next start)")


@tokens.command("revoke")
@click.argument("name")
@_store_options
def revoke_command(name: str, db_url: str | None, data_dir: Path) -> None:
    """Revoke the token NAME: a running server refuses it within about a second and ends its streams."""
    with _writing(db_url, data_dir) as engine:
        _run(engine, credentials.revoke_token, name)
    click.secho(f"revoked the token {name!r}", fg="green")


@contextmanager
def _writing(db_url: str | None, data_dir: Path) -> Iterator[Engine]:
    """The store opened to write (its schema brought up to date, as the server does)."""
    url = store_url(db_url, data_dir)
    checked_url(url)
    try:
        engine = open_engine(url)
    except ValueError as exc:
        fail(f"UsageError: --db {describe(url)}: {first_line(exc)}", ExitCode.USAGE)
    except SQLAlchemyError as exc:
        fail(f"DatabaseError: cannot open the store at {describe(url)}: {first_line(exc)}", ExitCode.UNAVAILABLE)
    try:
        yield engine
    finally:
        engine.dispose()


def _run(engine: Engine, fn: Callable[..., T], /, *args: Any, read_only: bool = False, **kwargs: Any) -> T:
    try:
        with engine.connect() as conn:
            if read_only:
                return fn(conn, *args, **kwargs)
            with for_writing(conn).begin():
                return fn(conn, *args, **kwargs)
    except NetDistError as exc:
        fail(f"{type(exc).__name__}: {exc.message}", ExitCode.FAILED)
    except SQLAlchemyError as exc:
        fail(f"DatabaseError: the store at {describe(str(engine.url))}: {first_line(exc)}", ExitCode.UNAVAILABLE)


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
