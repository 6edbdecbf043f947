"""Opening an :class:`~netdist.adminctl.client.AdminClient` from the root options.

The root group (:mod:`netdist.adminctl.cli`) does it for every command; shell
completion (:mod:`netdist.adminctl.completion`) does it from the options typed
so far, since click does not run the group's callback while completing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from netdist.adminctl.client import AdminClient
from netdist.channel import ClientSecurity
from netdist.cli_boundary import fail
from netdist.errors import CertificateError, TokenFileError
from netdist.exit_codes import ExitCode
from netdist.token_file import find_token

DEFAULT_SERVER = "127.0.0.1:50051"


def open_client(
    *,
    server: str,
    timeout_seconds: float,
    tls: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    token_file: Path | None,
) -> AdminClient:
    """A client for these options; a bad token file or certificate is a usage error."""
    try:
        token = find_token(token_file=token_file, env=os.environ, variable="NETDIST_TOKEN", default_name="admin.token")
    except TokenFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--token-file") from None
    security = ClientSecurity(token=token.value, tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    try:
        security.check()
    except CertificateError as exc:  # named as netdist-worker and netdist-server name it
        fail(f"CertificateError: {exc.message}", ExitCode.USAGE)
    return AdminClient(server, timeout_seconds=timeout_seconds, security=security, token_source=token.source)


def client_from_params(params: Mapping[str, Any], *, timeout_seconds: float) -> AdminClient:
    """A client from the root group's parsed parameters (None where not typed)."""
    return open_client(
        server=params.get("server") or DEFAULT_SERVER,
        timeout_seconds=timeout_seconds,
        tls=bool(params.get("tls")),
        tls_ca=params.get("tls_ca"),
        tls_cert=params.get("tls_cert"),
        tls_key=params.get("tls_key"),
        token_file=params.get("token_file"),
    )
