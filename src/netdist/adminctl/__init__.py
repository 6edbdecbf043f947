"""netdist-admin: the operator's command line (click + rich) over AdminService and PackageService."""

from __future__ import annotations

import os

# gRPC's core (1.85) logs each failed TLS handshake at INFO on stderr, next to
# the one line netdist prints about it. Only errors, unless the user set
# GRPC_VERBOSITY; gRPC reads it once, when grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
