"""Where a client finds its token: a file it was given, the environment, or the server's data dir.

In that order: ``--token-file FILE``; the token itself in an environment
variable (``NETDIST_TOKEN`` for netdist-admin, ``NETDIST_WORKER_TOKEN`` for
netdist-worker); else the file the server wrote on its first start
(``admin.token`` / ``worker.token``) in ``NETDIST_DATA_DIR`` or
``./netdist-data``, if it exists, so that clients started next to a server
need no flags. The CLIs read the environment and pass it in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from netdist.errors import TokenFileError

DEFAULT_DATA_DIR = Path("netdist-data")


@dataclasses.dataclass(frozen=True, slots=True)
class FoundToken:
    value: str | None = dataclasses.field(default=None, repr=False)
    source: str = "no token"
    """Where it came from, for messages: ``--token-file FILE``, the variable's name, a file's path;
    with no token, where the client looked."""


def read_token_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = text.strip()
    if not token or any(c.isspace() for c in token):
        raise TokenFileError(f"the token file {path} does not hold one token (one line, no spaces)")
    return token


def find_token(*, token_file: Path | None, env: Mapping[str, str], variable: str, default_name: str) -> FoundToken:
    """The token a client presents (see the module's docstring for the order)."""
    if token_file is not None:
        return FoundToken(read_token_file(token_file), f"--token-file {token_file}")
    if env.get(variable, "").strip():
        return FoundToken(env[variable].strip(), variable)
    data_dir = Path(env["NETDIST_DATA_DIR"]) if env.get("NETDIST_DATA_DIR") else DEFAULT_DATA_DIR
    path = data_dir / default_name
    if path.is_file():
        return FoundToken(read_token_file(path), str(path))
    return FoundToken(source=f"none found: no --token-file, {variable} unset, no {path}")
