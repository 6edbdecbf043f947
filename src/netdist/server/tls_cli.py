"""``netdist-server tls``: a private CA, the server's certificate and client certificates.

Exit codes: 0 done, 2 usage (a bad name, an existing CA without --force, no
CA yet), 1 a file could not be written. Errors are one red line.
"""

from __future__ import annotations

import datetime
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import click

from netdist.cli_boundary import IntRange, fail
from netdist.errors import CertificateError
from netdist.exit_codes import ExitCode
from netdist.server import certs

T = TypeVar("T")

DEFAULT_DATA_DIR = "netdist-data"
"""serve's default --data-dir too."""
_data_dir_option = click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="NETDIST_DATA_DIR",
    show_envvar=True,
    help="The server's data dir; the files go to DIR/tls/.",
)
_days_option = click.option(
    "--days",
    default=certs.DEFAULT_DAYS,
    show_default=True,
    type=IntRange(1, 3650),
    help="Days the certificate is valid (never past the CA's end).",
)
_hosts_option = click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    metavar="NAME",
    help="A DNS name or IP address clients reach the server by (repeatable). localhost, 127.0.0.1 and ::1 "
    "are always added.",
)


@click.group()
def tls() -> None:
    """Make a private CA and the certificates for TLS and mutual TLS.

    \b
    netdist-server tls init --host lab.example.org --host 10.0.0.5
    netdist-server serve --host 0.0.0.0 --tls-cert netdist-data/tls/server.crt --tls-key netdist-data/tls/server.key
    netdist-worker connect lab.example.org:50051 --tls-ca ca.crt
    """


@tls.command("init")
@_data_dir_option
@_hosts_option
@_days_option
@click.option("--force", is_flag=True, help="Replace an existing CA (every client then needs the new ca.crt).")
def init_command(data_dir: Path, hosts: Sequence[str], days: int, force: bool) -> None:
    """Create a private CA and a server certificate for the given names (under DATA_DIR/tls/)."""
    files = certs.TLSFiles.of(data_dir)
    names = _run(lambda: certs.server_names(hosts))  # a bad name is refused before a CA is made
    made = datetime.datetime.now(datetime.UTC)  # in the name: a CA made again is told apart from the old one
    ca = _run(
        lambda: certs.create_ca(files, common_name=f"netdist CA {names[0]} {made:%Y-%m-%dT%H:%M:%SZ}", force=force)
    )
    server = _run(lambda: certs.issue_server(files, hosts, days=days))
    click.echo(f"created a private CA and a server certificate in {files.directory}:")
    _rows(
        [
            (ca.cert_path, "the CA's certificate: give it to every client (--tls-ca)"),
            (ca.key_path, "the CA's key (mode 0600): stays here, it signs client certificates"),
            (server.cert_path, f"for {', '.join(server.names)}; valid until {server.not_after:%Y-%m-%d}"),
            (server.key_path, "the server's key (mode 0600)"),
        ]
    )
    _serve_hint(files, hosts[0])


@tls.command("server")
@_data_dir_option
@_hosts_option
@_days_option
def server_command(data_dir: Path, hosts: Sequence[str], days: int) -> None:
    """Issue a new server certificate from the existing CA (renewal, new names); clients keep their ca.crt.

    The running server takes it on its next start.
    """
    files = certs.TLSFiles.of(data_dir)
    server = _run(lambda: certs.issue_server(files, hosts, days=days))
    click.echo(f"issued a server certificate from the CA in {files.directory}:")
    _rows(
        [
            (server.cert_path, f"for {', '.join(server.names)}; valid until {server.not_after:%Y-%m-%d}"),
            (server.key_path, "the server's key (mode 0600)"),
        ]
    )
    _serve_hint(files, hosts[0])


@tls.command("client")
@_data_dir_option
@click.option("--name", required=True, help="Who the certificate is for (its common name, and the file names).")
@_days_option
@click.option("--force", is_flag=True, help="Issue it again when one of this name exists.")
def client_command(data_dir: Path, name: str, days: int, force: bool) -> None:
    """Issue a client certificate signed by the CA, for a server that requires one (--tls-client-ca)."""
    files = certs.TLSFiles.of(data_dir)
    client = _run(lambda: certs.issue_client(files, name, days=days, force=force))
    click.echo(f"issued a client certificate for {name!r}, valid until {client.not_after:%Y-%m-%d}:")
    _rows(
        [
            (client.cert_path, "the client's certificate"),
            (client.key_path, "its key (mode 0600): copy both to that client only, with ca.crt"),
        ]
    )
    click.echo("the client connects with:")
    flags = (
        f"--tls-ca ca.crt --tls-cert {shlex.quote(client.cert_path.name)} --tls-key {shlex.quote(client.key_path.name)}"
    )
    click.echo(f"  netdist-worker connect HOST:PORT {flags}")
    click.echo(f"  netdist-admin --server HOST:PORT {flags} status")


def _serve_hint(files: certs.TLSFiles, host: str) -> None:
    cert, key, ca = (shlex.quote(str(p.resolve())) for p in (files.server_cert, files.server_key, files.ca_cert))
    address = f"[{host}]" if ":" in host and not host.startswith("[") else host
    data_dir = files.server_cert.parent.parent.resolve()  # DIR/tls/server.crt
    on = "" if data_dir == Path(DEFAULT_DATA_DIR).resolve() else f" --data-dir {shlex.quote(str(data_dir))}"
    click.echo("serve with:")
    click.echo(f"  netdist-server serve --host 0.0.0.0{on} --tls-cert {cert} --tls-key {key}")
    click.echo(f"  (add --tls-client-ca {ca} to require client certificates: `netdist-server tls client`)")
    click.echo("clients connect by one of the names above and trust ca.crt:")
    click.echo(f"  netdist-worker connect {address}:50051 --tls-ca ca.crt")
    click.echo(f"  netdist-admin --server {address}:50051 --tls-ca ca.crt status")


def _rows(rows: Sequence[tuple[Path, str]]) -> None:
    width = max(len(str(path)) for path, _ in rows)
    for path, what in rows:
        click.echo(f"  {path!s:<{width}}  {what}")


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except CertificateError as exc:
        fail(f"CertificateError: {exc.message}", ExitCode.USAGE)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"OSError: cannot write{where}: {exc.strerror or exc}", ExitCode.FAILED)
