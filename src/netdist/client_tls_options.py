"""The ``--tls``, ``--tls-ca``, ``--tls-cert`` and ``--tls-key`` options of netdist-admin and netdist-worker.

One definition for both clients; each gives its own environment variables and
names what its certificate is for. The values go to :mod:`netdist.channel`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])
PEM_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def client_tls_options(
    *, tls_env: str, ca_env: Sequence[str], cert_env: str, key_env: str, who: str
) -> Callable[[F], F]:
    """Decorate a click command with the four options; ``who``: "worker" or "client", for the help."""
    options = (
        click.option(
            "--tls",
            is_flag=True,
            envvar=tls_env,
            show_envvar=True,
            help="Speak TLS, trusting the system's roots (implied by the --tls-* options).",
        ),
        click.option(
            "--tls-ca",
            type=PEM_FILE,
            default=None,
            envvar=list(ca_env),
            show_envvar=True,
            help="Speak TLS, trusting these roots (PEM): the server's ca.crt from `tls init`.",
        ),
        click.option(
            "--tls-cert",
            type=PEM_FILE,
            default=None,
            envvar=cert_env,
            show_envvar=True,
            help=f"This {who}'s certificate (PEM), for a server that requires one (mutual TLS).",
        ),
        click.option(
            "--tls-key",
            type=PEM_FILE,
            default=None,
            envvar=key_env,
            show_envvar=True,
            help="The private key of --tls-cert (PEM, unencrypted).",
        ),
    )

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
