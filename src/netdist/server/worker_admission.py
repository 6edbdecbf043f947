"""Whether a worker's Hello may speak for its worker id: the credential check, and a new credential.

The first Hello of an id binds a fresh credential to it (issued in the
Welcome); every later Hello must present it. A Hello that may not speak for
the id, or one of a disabled worker, is refused before anything changes, so
the worker holding the id keeps its stream and its leases.
"""

from __future__ import annotations

from sqlalchemy import Connection

from netdist.errors import PermissionDeniedError
from netdist.server.lease_model import WorkerInfo
from netdist.server.store import catalog, credentials
from netdist.server.store.writer import GroupCommitWriter
from netdist.server.tokens import digest, new_credential


async def admit(
    writer: GroupCommitWriter, info: WorkerInfo, credential: str, *, hostname: str, version: str, platform_json: str
) -> str | None:
    """Raise PermissionDeniedError unless the worker may connect; the credential newly bound to it, if any.

    An admitted worker's row (name, labels, platform, connected) is written in
    the same transaction, so no reader sees the worker without its labels.
    """
    issued = new_credential()
    admission = await writer.run(
        _admit_and_record,
        info,
        presented_sha256=digest(credential) if credential else None,
        issue_sha256=digest(issued),
        hostname=hostname,
        version=version,
        platform_json=platform_json,
    )
    if admission == credentials.Admission.CLAIMED:
        raise PermissionDeniedError(
            f"worker id {info.worker_id} belongs to another worker: this Hello carried "
            f"{'a wrong' if credential else 'no'} credential (a worker keeps its own next to its id in its "
            f"cache dir); netdist-admin workers remove {info.worker_id} frees the id"
        )
    if admission == credentials.Admission.DISABLED:
        raise PermissionDeniedError(
            f"worker {info.name} ({info.worker_id}) is disabled: netdist-admin workers enable {info.worker_id}"
        )
    return issued if admission == credentials.Admission.ISSUED else None


def _admit_and_record(
    conn: Connection,
    info: WorkerInfo,
    *,
    presented_sha256: str | None,
    issue_sha256: str,
    hostname: str,
    version: str,
    platform_json: str,
) -> credentials.Admission:
    admission = credentials.admit_worker(
        conn, info.worker_id, name=info.name, presented_sha256=presented_sha256, issue_sha256=issue_sha256
    )
    if admission in (credentials.Admission.KNOWN, credentials.Admission.ISSUED):
        catalog.worker_connected(
            conn,
            worker_id=info.worker_id,
            name=info.name,
            labels=info.labels,
            slots=info.slots,
            hostname=hostname,
            version=version,
            platform_json=platform_json,
        )
    return admission
