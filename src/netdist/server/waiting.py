"""Why a running handler with available jobs gives none to its idle workers: the short reason the admin
views show (``HandlerInfo.waiting``), or "" when no rule holds its jobs back.

Computed when an admin asks, from the lease table as it is: nothing here runs on the dispatch path.
The rules are :mod:`netdist.server.policy`'s; this module only says which of them holds, in the
order an operator would fix them: the idle window (nothing to fix, it ends by itself), no worker at
all, no worker the handler may serve (``clients-allowed`` / ``clients-denied``, or no wheels for
their platforms), every allowed worker at its daily budget. Worker names and labels are sent as the
workers gave them; the CLI makes them printable (:mod:`netdist.printable`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime

from netdist.jobscript import ClientSelector, JobSettings
from netdist.server import policy
from netdist.server.lease_book import LeaseBook
from netdist.server.lease_model import HandlerQueue, WorkerState
from netdist.server.states import JobStatus

NAMED_WORKERS = 3
"""The connected workers named in "no connected worker is allowed" (with their labels): a typo in a
label shows next to what the workers have."""


def waiting_reason(table: LeaseBook, handler_id: str, *, now: float) -> str:
    """Why the handler's available jobs wait at wall time ``now``; "" when it is not running, has no
    available job, or nothing but the workers' own room holds them back."""
    queue = table.handlers.get(handler_id)
    if queue is None or not queue.active or queue.failing or queue.counts.get(JobStatus.AVAILABLE, 0) <= 0:
        return ""
    settings = queue.settings
    if settings.idle_time is not None and policy.in_idle_window(settings, now):
        zone = f" ({settings.time_zone})" if settings.time_zone else ""
        return f"idle-time window until {settings.idle_time.end:%H:%M}{zone}"
    workers = table.workers
    allowed = (w for i in table.servable(queue) if (w := workers.get(i)) is not None and w.connected)
    cap = settings.max_time_per_client_per_day_seconds
    any_allowed = False
    for worker in allowed:  # most often the first one settles it: ListHandlers asks this of every handler
        any_allowed = True
        if cap is None or table.usage.used(worker.worker_id, handler_id) < cap:
            return ""
    if any_allowed:
        day = datetime.fromtimestamp(policy.next_day_start(now)).astimezone()  # the server's zone
        return f"every allowed worker reached max-time-per-client-per-day (until {day:%H:%M})"
    connected = [w for w in workers.values() if w.connected]
    return _none_allowed(queue, connected) if connected else "no worker connected"


def _none_allowed(queue: HandlerQueue, connected: Sequence[WorkerState]) -> str:
    settings = queue.settings
    by_clients = [w for w in connected if policy.client_allowed(settings, w)]
    if by_clients:  # allowed by name and labels, but the dependencies have no wheels for their platforms
        platforms = sorted({w.info.platform for w in by_clients})
        return f"no connected worker can run its dependencies (no wheels for {', '.join(platforms)})"
    return f"no connected worker is allowed ({_rules(settings)}; {_workers(connected)})"


def _rules(settings: JobSettings) -> str:
    rules = [("clients-allowed", settings.clients_allowed), ("clients-denied", settings.clients_denied)]
    return "; ".join(f"{key} = {_selectors(selectors)}" for key, selectors in rules if selectors)


def _selectors(selectors: Sequence[ClientSelector]) -> str:
    """As the job script spells them: ``[{ label = "tpu" }]``."""
    tables = (
        ", ".join(
            f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in dataclasses.asdict(s).items() if v is not None
        )
        for s in selectors
    )
    return "[" + ", ".join(f"{{ {t} }}" for t in tables) + "]"


def _workers(connected: Sequence[WorkerState]) -> str:
    """``2 connected: w1 [cpu=1], w2 [no labels]``: the first NAMED_WORKERS by name."""
    named = sorted(connected, key=lambda w: w.name)[:NAMED_WORKERS]
    shown = [
        f"{w.name} [{', '.join(f'{k}={v}' if v else k for k, v in sorted(w.labels.items())) or 'no labels'}]"
        for w in named
    ]
    more = f", {len(connected) - len(named)} more" if len(connected) > len(named) else ""
    return f"{len(connected)} connected: {', '.join(shown)}{more}"
