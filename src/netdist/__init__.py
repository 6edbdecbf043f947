"""netdist: distribute Python jobs to many machines.

Package authors import from :mod:`netdist.handler`; everything else is the
server, the worker and the admin CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"
