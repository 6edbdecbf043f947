"""docs/metrics.md and docs/grafana-dashboard.json say what the server exports, and only that."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import ProcessCollector

from netdist.server.metrics import METRICS

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\b(?:netdist|process)_[a-z_]+\b")


def sample_names() -> set[str]:
    """Every sample name a scrape can hold: the server's metrics and the process collector's."""
    names = set()
    for name, info in METRICS.items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if info.kind == "histogram" else {name}
    for family in ProcessCollector(registry=None).collect():
        names |= {s.name for s in family.samples}
    return names


def dashboard_queries() -> list[str]:
    board = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) > 20
    return exprs


def test_every_dashboard_query_uses_metrics_the_server_exports() -> None:
    known = sample_names()
    labels = {label for info in METRICS.values() for label in info.labels} | {"le"}
    for expr in dashboard_queries():
        used = set(NAME.findall(expr))
        assert used, f"{expr!r} reads no netdist metric"
        assert used <= known, f"{expr!r} reads {sorted(used - known)}, which the server does not export"
        selected = re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr) + [
            name.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for name in group.split(",")
        ]
        assert set(selected) <= labels, f"{expr!r} uses labels {sorted(set(selected) - labels)} no metric has"


def test_the_dashboard_is_valid_grafana_json() -> None:
    board: dict[str, Any] = json.loads((DOCS / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"type", "title", "gridPos", "targets"} <= panel.keys(), panel.get("title")
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    doc = (DOCS / "metrics.md").read_text()
    rows = {m.group(1): m for m in re.finditer(r"^\| `([a-z_]+)` \| (\w+) \|([^|]*)\|", doc, re.MULTILINE)}
    assert set(rows) == set(METRICS), "docs/metrics.md's table and METRICS differ"
    for name, info in METRICS.items():
        row = rows[name]
        assert row.group(2) == info.kind, name
        assert re.findall(r"`([a-z_]+)`", row.group(3)) == list(info.labels), name
