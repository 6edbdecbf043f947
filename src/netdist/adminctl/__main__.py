"""``python -m netdist.adminctl``: the same as ``netdist-admin``."""

from __future__ import annotations

from netdist.adminctl.cli import main

main(prog_name="netdist-admin")
