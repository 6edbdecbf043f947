"""Errors of netdist, each carrying the gRPC status it maps to.

    NetDistError
    ├── InvalidArgumentError      INVALID_ARGUMENT     bad input: a wheel, a job script, a reference
    │   ├── JobScriptError        INVALID_ARGUMENT     metadata block of a job script
    │   ├── WheelError            INVALID_ARGUMENT     an uploaded wheel
    │   └── CertificateError      INVALID_ARGUMENT     a TLS certificate or key file (local: tls init, --tls-*)
    ├── NotFoundError             NOT_FOUND            no such handler, package, worker or blob
    ├── FailedPreconditionError   FAILED_PRECONDITION  the request does not fit the current state
    ├── ResourceExhaustedError    RESOURCE_EXHAUSTED   over a size limit
    │   ├── UnpackLimitError      RESOURCE_EXHAUSTED   a zip would unpack past a limit (size, ratio, members)
    │   └── DiskFullError         RESOURCE_EXHAUSTED   the disk holding the database or the data dir is full
    ├── UnauthenticatedError      UNAUTHENTICATED      no token, or one the server does not know (revoked)
    ├── PermissionDeniedError     PERMISSION_DENIED    a known token whose role may not do this; a worker id
    │                                                  that belongs to another worker; a disabled worker
    └── UnavailableError          UNAVAILABLE          the server cannot be reached (client side)
        └── StoreUnavailableError UNAVAILABLE          the server cannot reach its database (for now)

DiskFullError and StoreUnavailableError answer an operator's call at once
while the server's own work waits for the store and resumes by itself.

The server turns a NetDistError into ``context.abort(code, message)``; the
admin client turns a status back into the matching class (see ``from_status``).
"""

from __future__ import annotations

import grpc


class NetDistError(Exception):
    """Base of every error netdist raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(NetDistError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class JobScriptError(InvalidArgumentError):
    """A job script's metadata is missing or wrong; the message names the key."""


class WheelError(InvalidArgumentError):
    """An uploaded wheel is not a safe, valid wheel."""


class CertificateError(InvalidArgumentError):
    """A certificate or key file is missing, unreadable, not PEM, or does not fit; the message names it."""


class NotFoundError(NetDistError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(NetDistError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(NetDistError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnpackLimitError(ResourceExhaustedError):
    """A zip archive (a wheel) would unpack past a limit: its size, its compression ratio, its members."""


class DiskFullError(ResourceExhaustedError):
    """No space left where the server writes; the message names the place."""


class UnauthenticatedError(NetDistError):
    """The call carried no token, or one the server does not know; the message says which token to give."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(NetDistError):
    code = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(NetDistError):
    code = grpc.StatusCode.UNAVAILABLE


class StoreUnavailableError(UnavailableError):
    """The database cannot be reached or refuses work for now (down, restarting, locked)."""


_BY_CODE: dict[grpc.StatusCode, type[NetDistError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        FailedPreconditionError,
        ResourceExhaustedError,
        UnauthenticatedError,
        PermissionDeniedError,
        UnavailableError,
    )
}


def from_status(code: grpc.StatusCode, details: str | None) -> NetDistError:
    """The error a client raises for a failed call."""
    cls = _BY_CODE.get(code, NetDistError)
    return cls(details or code.name)
