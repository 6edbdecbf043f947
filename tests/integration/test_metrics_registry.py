"""Metrics of servers in the test process: each server counts its own, and handler host restarts show."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from netdist.testing import Admin, wait_until
from tests.inprocess import InProcessServer, in_process
from tests.support import counter_script, counter_wheel

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: InProcessServer) -> Samples:
    assert server.app.metrics_address, "the server serves no metrics"
    with urllib.request.urlopen(f"http://{server.app.metrics_address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def refused(samples: Samples) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: n for (name, labels), n in samples.items() if name == "netdist_refused_total"}


def test_two_servers_in_one_process_keep_their_metrics_apart(tmp_path: Path) -> None:
    with (
        in_process(tmp_path / "a", log_dir=tmp_path / "logs", name="a", metrics_port=0) as a,
        in_process(tmp_path / "b", log_dir=tmp_path / "logs", name="b", metrics_port=0) as b,
    ):
        assert a.app.metrics_address != b.app.metrics_address
        admin = Admin(a.address)
        try:
            with pytest.raises(grpc.RpcError) as missing:
                admin.handler("nope")
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            admin.close()
        # Counted as the call's coroutine ends, which may be after the client has its status: once,
        # in CI under load, the scrape came first.
        counted = wait_until(lambda: refused(scrape(a)), 10, what="server a to count the refusal")
        assert counted == {frozenset({("method", "AdminService/GetHandler"), ("reason", "not_found")}): 1}
        assert refused(scrape(b)) == {}
    assert "metrics on http://127.0.0.1:" in a.output()


def test_handler_host_restarts_are_counted_by_reason(tmp_path: Path) -> None:
    with in_process(tmp_path / "data", log_dir=tmp_path / "logs", metrics_port=0) as server:
        admin = Admin(server.address)
        try:
            admin.upload(counter_wheel(tmp_path, "1.0"))
            script = counter_script(tmp_path / "r.py", job="restarted", settings="auto-start = true", count=100)
            hid = admin.add_script(script).handler.id  # no worker: it keeps running with its jobs available

            def restarts() -> dict[str, float]:
                found = {}
                for (name, labels), n in scrape(server).items():
                    if name == "netdist_handler_host_restarts_total":
                        label = dict(labels)
                        assert (label["handler"], label["handler_id"]) == ("restarted", hid), label
                        found[label["reason"]] = n
                return found

            wait_until(lambda: scrape(server).get(("netdist_jobs", _jobs(hid, "available"))) == 100, 30)
            assert restarts() == {}
            assert list(admin.upload(counter_wheel(tmp_path, "2.0")).restarted_handlers) == [hid]
            wait_until(lambda: restarts() == {"upgrade": 1}, 30, what="the upgrade to be counted")
            again = counter_script(tmp_path / "r.py", job="restarted", settings="auto-start = true", count=101)
            assert admin.add_script(again).outcome == "replaced"
            assert restarts() == {"upgrade": 1, "script": 1}
        finally:
            admin.close()


def _jobs(handler_id: str, state: str) -> frozenset[tuple[str, str]]:
    return frozenset({("handler", "restarted"), ("handler_id", handler_id), ("state", state)})
