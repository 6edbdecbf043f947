"""``python -m netdist.worker``: the same as the ``netdist-worker`` console script."""

from __future__ import annotations

from netdist.worker.cli import main

if __name__ == "__main__":
    main(prog_name="netdist-worker")
