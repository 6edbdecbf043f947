"""netdist example package: the PrimeCounter handler."""

from __future__ import annotations
