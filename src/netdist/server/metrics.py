"""Prometheus metrics over HTTP (``netdist-server serve --metrics-port``); docs/metrics.md lists them.

Every metric is made when it is scraped, by one collector: the hot path only
adds to the plain tallies of :mod:`netdist.server.tallies` (per batch), and
the job counts per handler are the lease table's own. What the event loop
owns (the lease table, the tallies, the refused calls) is read on the loop,
in one callback per scrape, so a scrape sees one consistent moment and never
races the dispatcher; the store writer's histograms carry their own lock.

Each server has its own registry (never prometheus_client's global one), so
several servers in one process (the in-process tests) keep their numbers apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from netdist.server.states import JobStatus
from netdist.server.tallies import HistogramSnapshot

if TYPE_CHECKING:
    from netdist.server.call_refusals import CallRefusals
    from netdist.server.dispatcher import Dispatcher
    from netdist.server.manager import HandlerManager
    from netdist.server.store.writer import GroupCommitWriter

log = logging.getLogger("netdist.server.metrics")
SNAPSHOT_TIMEOUT_SECONDS = 5.0
"""A scrape waits this long for the event loop; past it, the loop's metrics are left out (and logged)."""


@dataclasses.dataclass(frozen=True, slots=True)
class MetricInfo:
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str


METRICS: Mapping[str, MetricInfo] = {
    "netdist_jobs": MetricInfo(
        "gauge",
        ("handler", "handler_id", "state"),
        "Jobs of each handler instance by state, as the server counts them (running handlers live; "
        "the last counts of those that stopped since the server started)",
    ),
    "netdist_leases_total": MetricInfo("counter", (), "Leases committed and sent to workers"),
    "netdist_results_total": MetricInfo(
        "counter", ("outcome",), "Results stored, by outcome: succeeded, or failed (an error, retried or final)"
    ),
    "netdist_job_duration_seconds": MetricInfo(
        "histogram", (), "Run time of each stored result, as its worker reported it"
    ),
    "netdist_dispatch_latency_seconds": MetricInfo(
        "histogram",
        (),
        "From a job's lease (the server picked it for a worker) to the worker's report that it started it",
    ),
    "netdist_workers_connected": MetricInfo("gauge", (), "Workers with an open job stream"),
    "netdist_worker_slots": MetricInfo("gauge", (), "Slots (jobs run at once) of the connected workers, together"),
    "netdist_store_commit_seconds": MetricInfo(
        "histogram", (), "Time of one group commit of the store writer: its operations and the COMMIT"
    ),
    "netdist_store_commit_operations": MetricInfo("histogram", (), "Operations in one group commit"),
    "netdist_store_retries_total": MetricInfo(
        "counter", (), "Group commits tried again because the store was unavailable or full"
    ),
    "netdist_store_available": MetricInfo(
        "gauge", (), "1 while the store takes writes, 0 during an outage (unavailable or disk full)"
    ),
    "netdist_handler_host_restarts_total": MetricInfo(
        "counter",
        ("handler", "handler_id", "reason"),
        "Handler host processes replaced while their handler ran on: upgrade (a new package version) or "
        "script (its job script was replaced)",
    ),
    "netdist_refused_total": MetricInfo(
        "counter",
        ("method", "reason"),
        "Calls refused, by method and gRPC status (unauthenticated, permission_denied, invalid_argument, ...), "
        "and results refused by fencing (method JobService/Connect, reason stale, unknown or duplicate)",
    ),
}
"""Every metric the server exports (sample names: counters end in _total; histograms add _bucket, _sum, _count)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sources:
    """What the metrics read: the server's parts."""

    dispatcher: Dispatcher
    manager: HandlerManager
    writer: GroupCommitWriter
    refusals: CallRefusals


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _LoopState:
    """What the event loop owns, copied on the loop at one moment."""

    jobs: list[tuple[str, str, dict[str, int]]]  # handler id, job name, counts by state
    workers: int
    slots: int
    leases: int
    results: dict[str, int]
    refused: dict[tuple[str, str], int]  # (method, reason) -> count
    restarts: dict[tuple[str, str, str], int]  # (handler id, job name, reason) -> count
    job_seconds: HistogramSnapshot
    dispatch_seconds: HistogramSnapshot


def _loop_state(sources: Sources) -> _LoopState:
    """Call on the event loop."""
    d = sources.dispatcher
    jobs = [(hid, q.spec.job_name, dict(q.counts)) for hid, q in d.table.handlers.items()]
    jobs += [(hid, name, dict(counts)) for hid, (name, counts) in d.resting.items() if hid not in d.table.handlers]
    connected = [w.slots for w in d.table.workers.values() if w.connected]
    refused = dict(sources.refusals.counts)
    for outcome, n in d.tally.refused.items():
        refused[("JobService/Connect", str(outcome))] = n
    return _LoopState(
        jobs=jobs,
        workers=len(connected),
        slots=sum(connected),
        leases=d.tally.leases,
        results=dict(d.tally.results),
        refused=refused,
        restarts=dict(sources.manager.host_restarts),
        job_seconds=d.tally.job_seconds.snapshot(),
        dispatch_seconds=d.tally.dispatch_seconds.snapshot(),
    )


class ServerCollector(Collector):
    """The server's metrics, made at each scrape. Build it on the server's event loop."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def describe(self) -> Iterator[Metric]:
        """The families without samples (the registry registers by these, without a scrape)."""
        for name in METRICS:
            yield _family(name)

    def collect(self) -> Iterator[Metric]:
        state = self._from_loop()
        if state is not None:
            yield from _loop_families(state)
        writer = self._sources.writer
        yield _histogram("netdist_store_commit_seconds", writer.commit_seconds.snapshot())
        yield _histogram("netdist_store_commit_operations", writer.commit_sizes.snapshot())
        yield _family("netdist_store_retries_total", writer.retries)
        yield _family("netdist_store_available", 0 if writer.health.outage is not None else 1)

    def _from_loop(self) -> _LoopState | None:
        if threading.get_ident() == self._loop_thread:
            return _loop_state(self._sources)
        future: concurrent.futures.Future[_LoopState] = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(_loop_state(self._sources))
            except BaseException as exc:  # handed to the scraping thread, which logs it
                future.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(take)
            return future.result(timeout=SNAPSHOT_TIMEOUT_SECONDS)
        except RuntimeError:  # the loop is closed: the server is stopping
            return None
        except concurrent.futures.TimeoutError:
            log.warning("the event loop did not answer a scrape within %g s", SNAPSHOT_TIMEOUT_SECONDS)
            return None


def _loop_families(state: _LoopState) -> Iterator[Metric]:
    jobs = _family("netdist_jobs")
    for hid, name, counts in sorted(state.jobs, key=lambda j: (j[1], j[0])):
        for status in JobStatus:
            jobs.add_metric([name, hid, status.value], counts.get(status, 0))
    yield jobs
    yield _family("netdist_leases_total", state.leases)
    results = _family("netdist_results_total")
    for outcome in ("succeeded", "failed"):
        results.add_metric([outcome], state.results.get(outcome, 0))
    yield results
    yield _histogram("netdist_job_duration_seconds", state.job_seconds)
    yield _histogram("netdist_dispatch_latency_seconds", state.dispatch_seconds)
    yield _family("netdist_workers_connected", state.workers)
    yield _family("netdist_worker_slots", state.slots)
    restarts = _family("netdist_handler_host_restarts_total")
    for (hid, name, reason), n in sorted(state.restarts.items()):
        restarts.add_metric([name, hid, reason], n)
    yield restarts
    refused = _family("netdist_refused_total")
    for (method, reason), n in sorted(state.refused.items()):
        refused.add_metric([method, reason], n)
    yield refused


def _family(name: str, value: float | None = None) -> Any:
    """An empty family of ``name`` (as METRICS describes it), or one without labels holding ``value``."""
    info = METRICS[name]
    labels = list(info.labels) if value is None else None
    if info.kind == "counter":
        return CounterMetricFamily(name, info.help, value=value, labels=labels)
    if info.kind == "gauge":
        return GaugeMetricFamily(name, info.help, value=value, labels=labels)
    return HistogramMetricFamily(name, info.help, labels=labels)


def _histogram(name: str, snap: HistogramSnapshot) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, METRICS[name].help)
    bounds = [repr(b) for b in snap.bounds] + ["+Inf"]
    family.add_metric([], buckets=list(zip(bounds, snap.cumulative, strict=True)), sum_value=snap.sum)
    return family


class MetricsServer:
    """``/metrics`` over plain HTTP on a thread of its own, from the server's own registry."""

    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ServerCollector(sources))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, open fds (Linux)
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> str:
        """Listen on ``host:port`` (0: a free port); the address it listens on. OSError when it cannot."""
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {_address(host, port)}: {exc.strerror or exc}") from exc
        return _address(host, self._httpd.server_address[1])

    async def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        await asyncio.to_thread(httpd.shutdown)  # waits up to its poll interval (0.5 s)
        httpd.server_close()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
