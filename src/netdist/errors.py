"""Errors of netdist, each carrying the gRPC status it maps to.

    NetDistError
    ├── InvalidArgumentError      INVALID_ARGUMENT     bad input: a wheel, a job script, a reference
    │   ├── JobScriptError        INVALID_ARGUMENT     metadata block of a job script
    │   ├── WheelError            INVALID_ARGUMENT     an uploaded wheel
    │   ├── DependencyError       INVALID_ARGUMENT     a job script's dependencies do not resolve (pip's words)
    │   ├── CertificateError      INVALID_ARGUMENT     a TLS certificate or key file (local: tls init, --tls-*)
    │   └── TokenFileError        INVALID_ARGUMENT     a token file (local: --token-file, the data dir's)
    ├── NotFoundError             NOT_FOUND            no such handler, package, worker or blob
    ├── FailedPreconditionError   FAILED_PRECONDITION  the request does not fit the current state
    │   ├── ArtifactError         FAILED_PRECONDITION  a job's script or wheel cannot be had (worker side)
    │   ├── DataDirInUseError     FAILED_PRECONDITION  another server holds the data dir (serve, local)
    │   └── StoreInUseError       FAILED_PRECONDITION  another server holds the PostgreSQL database (serve)
    ├── ResourceExhaustedError    RESOURCE_EXHAUSTED   over a size limit
    │   ├── UnpackLimitError      RESOURCE_EXHAUSTED   a zip would unpack past a limit (size, ratio, members)
    │   └── DiskFullError         RESOURCE_EXHAUSTED   the disk holding the database or the data dir is full
    ├── UnauthenticatedError      UNAUTHENTICATED      no token, or one the server does not know (revoked)
    ├── PermissionDeniedError     PERMISSION_DENIED    a known token whose role may not do this; a worker id
    │                                                  that belongs to another worker; a disabled worker
    ├── UnavailableError          UNAVAILABLE          the server cannot be reached (client side)
    │   └── StoreUnavailableError UNAVAILABLE          the server cannot reach its database (for now)
    ├── HandlerCodeError          UNKNOWN              a handler's own code raised (in its host process)
    ├── HostDiedError             INTERNAL             a handler's host process exited or stopped answering
    ├── ResultsNotStoredError     INTERNAL             results a handler had before their commit were not stored
    └── ProtocolError             INTERNAL             the server broke the worker stream's protocol (worker side)

DiskFullError and StoreUnavailableError answer an operator's call at once
while the server's own work waits for the store and resumes by itself.

The server turns a NetDistError into ``context.abort(code, message)``
(``netdist.server.grpc_errors``); the admin client turns a status back into the
matching class (see ``from_status`` and ``named``). The one error class
outside this module is ``netdist.handler.SettingsError``, a ValueError that
handler code raises in its host process, which imports no grpc.
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


class DependencyError(InvalidArgumentError):
    """A job script's dependencies do not resolve to wheels (unknown name, conflict, no wheel)."""


class CertificateError(InvalidArgumentError):
    """A certificate or key file is missing, unreadable, not PEM, or does not fit; the message names it."""


class TokenFileError(InvalidArgumentError):
    """A token file that cannot be read or holds no token; the message names the file."""

    code = grpc.StatusCode.INVALID_ARGUMENT  # as CertificateError: a local file given on the command line


class NotFoundError(NetDistError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(NetDistError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ArtifactError(FailedPreconditionError):
    """A job's script or wheel could not be fetched, verified or unpacked: the job cannot run (its result says why)."""

    code = grpc.StatusCode.FAILED_PRECONDITION  # what the job needs is not there: the job fails, not the worker


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


class DataDirInUseError(FailedPreconditionError):
    """Another running server holds the data dir (server/data_dir_lock.py); never an answer to a call."""


class StoreInUseError(FailedPreconditionError):
    """Another running server holds the PostgreSQL database (server/store_lock.py); never an answer to a call."""


class UnavailableError(NetDistError):
    code = grpc.StatusCode.UNAVAILABLE


class StoreUnavailableError(UnavailableError):
    """The database cannot be reached or refuses work for now (down, restarting, locked)."""


class HandlerCodeError(NetDistError):
    """The handler's own code raised; carries its type, message and traceback."""

    code = grpc.StatusCode.UNKNOWN  # gRPC's code for an error from another address space: the handler's

    def __init__(self, type_: str, message: str, tb: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.traceback = tb


class HostDiedError(NetDistError):
    """The handler host process exited (or was killed for not answering)."""

    code = grpc.StatusCode.INTERNAL  # the call could not complete and retrying it does not help


class ResultsNotStoredError(NetDistError):
    """Results a handler took before their commit were not stored after all: what it did with them must not be."""

    code = grpc.StatusCode.INTERNAL  # the server's own work; never an answer to a call


class ProtocolError(NetDistError):
    """The server broke the stream protocol (e.g. no Welcome first)."""

    code = grpc.StatusCode.INTERNAL  # what gRPC itself answers for a peer that breaks the protocol


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


def first_line(exc: BaseException) -> str:
    """The first line of a foreign error's text (a driver's rather than SQLAlchemy's wrapper), for a message."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def named(name: str) -> type[NetDistError] | None:
    """The class a server named in an answer's trailing metadata; None for a name unknown here,
    or for a class not made from its message alone (HandlerCodeError)."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, NetDistError) and cls.__init__ is NetDistError.__init__:
        return cls
    return None
