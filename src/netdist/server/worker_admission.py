"""Whether a worker's Hello may speak for its worker id: the credential check, and a new credential.

The first Hello of an id binds a fresh credential to it (issued in the
Welcome); every later Hello must present it. A Hello that may not speak for
the id, or one of a disabled worker, is refused before anything changes, so
the worker holding the id keeps its stream and its leases.
"""

from __future__ import annotations

from netdist.errors import PermissionDeniedError
from netdist.server.lease_model import WorkerInfo
from netdist.server.store import credentials
from netdist.server.store.writer import GroupCommitWriter
from netdist.server.tokens import digest, new_credential


async def admit(writer: GroupCommitWriter, info: WorkerInfo, credential: str) -> str | None:
    """Raise PermissionDeniedError unless the worker may connect; the credential newly bound to it, if any."""
    issued = new_credential()
    admission = await writer.run(
        credentials.admit_worker,
        info.worker_id,
        name=info.name,
        presented_sha256=digest(credential) if credential else None,
        issue_sha256=digest(issued),
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
