"""Bearer tokens and each worker's own credential: functions of a Connection.

Only sha256 hex digests are stored; the values live with whoever holds them
(a token file, a worker's cache dir). Comparisons of a presented credential
with the stored one are constant-time.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import time
from collections.abc import Mapping

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from netdist.errors import InvalidArgumentError, NotFoundError
from netdist.server.store.schema import tokens, workers


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    name: str
    role: str
    sha256: str
    created_at: float
    last_used_at: float | None


_TOKEN_COLUMNS = [tokens.c[f.name] for f in dataclasses.fields(TokenRecord)]


def list_tokens(conn: Connection) -> list[TokenRecord]:
    return [TokenRecord(**r._mapping) for r in conn.execute(select(*_TOKEN_COLUMNS).order_by(tokens.c.name))]


def add_token(conn: Connection, *, name: str, role: str, sha256: str) -> TokenRecord:
    if conn.execute(select(tokens.c.id).where(tokens.c.name == name)).first() is not None:
        raise InvalidArgumentError(f"a token named {name!r} exists: revoke it first, or pick another name")
    record = TokenRecord(name=name, role=role, sha256=sha256, created_at=time.time(), last_used_at=None)
    conn.execute(insert(tokens).values(**dataclasses.asdict(record)))
    return record


def add_first_tokens(conn: Connection, records: Mapping[str, tuple[str, str]]) -> bool:
    """Store ``{name: (role, sha256)}`` if the store holds no token yet; False if it held some."""
    if conn.execute(select(func.count()).select_from(tokens)).scalar_one():
        return False
    now = time.time()
    try:
        conn.execute(
            insert(tokens),
            [
                {"name": name, "role": role, "sha256": sha256, "created_at": now}
                for name, (role, sha256) in records.items()
            ],
        )
    except IntegrityError:  # another server on this store made its first tokens at the same moment
        return False
    return True


def revoke_token(conn: Connection, name: str) -> None:
    if conn.execute(delete(tokens).where(tokens.c.name == name)).rowcount == 0:
        raise NotFoundError(f"no token named {name!r} (netdist-server tokens list shows them)")


def mark_used(conn: Connection, used: Mapping[str, float]) -> None:
    """Set last_used_at per token sha256 (the server batches these: at most once a minute per token)."""
    for sha256, at in used.items():
        conn.execute(update(tokens).where(tokens.c.sha256 == sha256).values(last_used_at=at))


# -- worker credentials ------------------------------------------------------------------------


class Admission(enum.StrEnum):
    KNOWN = "known"
    """The Hello carried the credential bound to its worker id."""
    ISSUED = "issued"
    """The id had no confirmed credential: a new one is bound to it (its hash stored)."""
    CLAIMED = "claimed"
    """The id belongs to another worker: no credential, or a wrong one."""
    DISABLED = "disabled"


def admit_worker(
    conn: Connection, worker_id: str, *, name: str, presented_sha256: str | None, issue_sha256: str
) -> Admission:
    """Decide a Hello's worker id; writes only when it issues a credential.

    A credential stays unconfirmed until its worker's first message after the
    Welcome that carried it (see :func:`confirm_credential`): a worker whose
    Welcome was lost on the way asks again without one and is issued another,
    instead of finding its own id taken for good.
    """
    row = conn.execute(
        select(workers.c.disabled, workers.c.credential_sha256, workers.c.credential_confirmed).where(
            workers.c.id == worker_id
        )
    ).first()
    stored = row.credential_sha256 if row is not None else None
    matches = stored is not None and presented_sha256 is not None and hmac.compare_digest(stored, presented_sha256)
    if stored is not None and row is not None and row.credential_confirmed and not matches:
        return Admission.CLAIMED
    if row is not None and row.disabled:
        return Admission.DISABLED
    if matches:
        if row is not None and not row.credential_confirmed:  # the worker has it: its Welcome arrived
            confirm_credential(conn, worker_id, presented_sha256 or "")
        return Admission.KNOWN
    values = {"credential_sha256": issue_sha256, "credential_confirmed": False}
    if row is None:
        conn.execute(insert(workers).values(id=worker_id, name=name, jobs_done=0, jobs_failed=0, **values))
    else:
        conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))
    return Admission.ISSUED


def confirm_credential(conn: Connection, worker_id: str, sha256: str) -> None:
    conn.execute(
        update(workers)
        .where(workers.c.id == worker_id, workers.c.credential_sha256 == sha256)
        .values(credential_confirmed=True)
    )


def forget_credential(conn: Connection, worker_id: str) -> None:
    """Free the worker id (``workers remove``): whoever connects with it next is issued a new credential."""
    conn.execute(
        update(workers).where(workers.c.id == worker_id).values(credential_sha256=None, credential_confirmed=False)
    )
