"""``serve --metrics-port``: a real server and worker run jobs; the metrics are scraped over HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netdist.api.v1 import admin_pb2, admin_pb2_grpc, jobs_pb2
from netdist.channel import ClientSecurity, sync_channel
from netdist.server.metrics import METRICS
from netdist.testing import wait_until
from tests.faults.hand import HandWorker, forged
from tests.integration.conftest import Cluster
from tests.support import counter_script, counter_wheel

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (KeyError when the server does not export it)."""
    return samples[(name, frozenset(labels.items()))]


def metrics_url(cluster: Cluster) -> str:
    assert cluster.server is not None
    found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", cluster.server.output())
    assert found, cluster.server.output()
    return found.group(1)


def test_a_run_shows_in_the_metrics(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_server(extra_args=("--metrics-port", "0"))
    url = metrics_url(cluster)
    before = scrape(url)
    exported = {name for name, _ in before}
    for name, info in METRICS.items():
        expected = f"{name}_count" if info.kind == "histogram" else name
        assert info.labels or expected in exported, f"{expected} is not exported"
    assert value(before, "netdist_workers_connected") == 0

    cluster.api.upload(counter_wheel(tmp_path))
    script = counter_script(
        tmp_path / "m.py", job="metered", settings="auto-start = true\nmax-attempts = 1", count=10, fail_every=100
    )  # job 0 fails (0 % 100 == 0), the other nine succeed
    hid = cluster.api.add_script(script).handler.id
    worker = cluster.add_worker("w1", slots=2)
    cluster.api.wait_state(hid, "finished", timeout=30)

    after = scrape(url)
    handler = {"handler": "metered", "handler_id": hid}
    assert value(after, "netdist_jobs", **handler, state="processed") == 9
    assert value(after, "netdist_jobs", **handler, state="failed") == 1
    assert value(after, "netdist_jobs", **handler, state="available") == 0
    assert value(after, "netdist_leases_total") >= 10
    assert value(after, "netdist_results_total", outcome="succeeded") == 9
    assert value(after, "netdist_results_total", outcome="failed") == 1
    assert value(after, "netdist_job_duration_seconds_count") == 10
    assert value(after, "netdist_job_duration_seconds_bucket", le="+Inf") == 10
    assert value(after, "netdist_job_duration_seconds_sum") > 0
    assert value(after, "netdist_dispatch_latency_seconds_count") == 10  # every job, reported started or not
    assert value(after, "netdist_store_commit_seconds_count") > value(before, "netdist_store_commit_seconds_count")
    assert value(after, "netdist_store_commit_operations_count") == value(after, "netdist_store_commit_seconds_count")
    assert value(after, "netdist_store_available") == 1
    assert value(after, "netdist_workers_connected") == 1
    assert value(after, "netdist_worker_slots") == 2
    assert value(after, "process_cpu_seconds_total") > 0

    assert worker.stop() == 0
    wait_until(lambda: value(scrape(url), "netdist_workers_connected") == 0, 15, what="the worker to be gone")
    assert value(scrape(url), "netdist_worker_slots") == 0


def test_refused_calls_are_counted_by_method_and_reason(cluster: Cluster) -> None:
    cluster.start_server(extra_args=("--metrics-port", "0"))
    url = metrics_url(cluster)
    assert cluster.server is not None
    address = cluster.server.address
    with sync_channel(address, ClientSecurity(token="not-a-token")) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListHandlers(admin_pb2.ListHandlersRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as invalid:
        cluster.api.handler(" ")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as missing:
        cluster.api.handler("nope")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    hand = HandWorker(address, "hand")  # a result for a job that never was: fencing answers UNKNOWN
    (ack,) = hand.results(forged(999_999, 1, 0))
    assert ack.outcome == jobs_pb2.ACK_OUTCOME_UNKNOWN
    hand.end()

    samples = scrape(url)
    refused_total = {labels: n for (name, labels), n in samples.items() if name == "netdist_refused_total"}
    assert refused_total == {
        frozenset({("method", "AdminService/ListHandlers"), ("reason", "unauthenticated")}): 2,
        frozenset({("method", "AdminService/GetHandler"), ("reason", "invalid_argument")}): 1,
        frozenset({("method", "AdminService/GetHandler"), ("reason", "not_found")}): 1,
        frozenset({("method", "JobService/Connect"), ("reason", "unknown")}): 1,
    }


def serve(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netdist.server", "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--metrics-port", "70000"), "--metrics-port"),
        (("--metrics-port", "-1"), "--metrics-port"),
        (("--metrics-port", "ninety"), "--metrics-port"),
        (("--metrics-host", "127.0.0.2"), "--metrics-host needs --metrics-port"),
    ],
)
def test_a_bad_metrics_option_is_a_usage_error(args: tuple[str, ...], says: str, tmp_path: Path) -> None:
    done = serve(*args, tmp_path=tmp_path)
    assert done.returncode == 2, done
    assert says in done.stderr and "Traceback" not in done.stderr and "listening" not in done.stdout


def test_a_taken_metrics_port_fails_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    taken = str(cluster.port)  # the gRPC port of the running server
    done = serve("--metrics-port", taken, tmp_path=tmp_path)
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"OSError: cannot serve metrics on 127.0.0.1:{taken}: "), done.stderr
    assert "Traceback" not in done.stderr
