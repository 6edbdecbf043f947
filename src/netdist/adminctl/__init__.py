"""netdist-admin: the operator's command line (click + rich) over AdminService and PackageService."""

from __future__ import annotations
