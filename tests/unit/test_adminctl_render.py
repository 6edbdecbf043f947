"""netdist-admin rendering: protobuf messages to JSON dicts and rich tables."""

from __future__ import annotations

import json

from rich.console import Console, RenderableType

from netdist.adminctl import dashboard, handler_render, render, view
from netdist.api.v1 import admin_pb2, packages_pb2

REQUIRED_HANDLER_KEYS = {
    "id",
    "package",
    "handler",
    "job_name",
    "state",
    "message",
    "jobs_available",
    "jobs_pending",
    "jobs_processed",
    "jobs_failed",
    "jobs_total",
    "package_version",
    "result_summary",
}


def handler(**fields: object) -> admin_pb2.HandlerInfo:
    base: dict[str, object] = {
        "id": "3f2a9c0d1e2b4a5c",
        "package": "netdist-example-primes",
        "package_version": "0.1.0",
        "handler": "PrimeCounter",
        "job_name": "primes below 1e6",
        "state": "running",
        "jobs_available": 40,
        "jobs_pending": 4,
        "jobs_processed": 56,
        "jobs_failed": 1,
        "jobs_total": 100,
        "has_total": True,
        "settings_json": json.dumps({"package": "netdist-example-primes", "job-timeout": 60.0}),
        "custom_settings_json": json.dumps({"limit": 1000000, "chunk": 10000}),
        "created_at": 1_700_000_000.5,
        "result_summary": "4000 primes below 1000000, largest 99991",
    }
    base.update(fields)
    return admin_pb2.HandlerInfo(**base)  # type: ignore[arg-type]


def text_of(renderable: RenderableType) -> str:
    console = Console(width=200, color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def test_handler_dict_has_the_documented_keys_and_is_json() -> None:
    d = view.handler_dict(handler())
    assert d.keys() >= REQUIRED_HANDLER_KEYS
    assert json.loads(json.dumps(d)) == d
    assert d["jobs_total"] == 100
    assert d["jobs_processed"] == 56
    assert d["settings"] == {"package": "netdist-example-primes", "job-timeout": 60.0}
    assert d["custom_settings"] == {"limit": 1000000, "chunk": 10000}


def test_handler_dict_total_is_null_without_a_total() -> None:
    d = view.handler_dict(handler(has_total=False, jobs_total=0))
    assert d["jobs_total"] is None


def test_unset_times_are_null_and_set_times_are_floats() -> None:
    d = view.handler_dict(handler())
    assert d["created_at"] == 1_700_000_000.5
    assert d["started_at"] is None
    assert d["finished_at"] is None
    assert d["next_start_at"] is None


def test_malformed_or_empty_json_fields_do_not_break_the_view() -> None:
    d = view.handler_dict(handler(settings_json="{not json", custom_settings_json=""))
    assert d["settings"] == "{not json"
    assert d["custom_settings"] is None


def test_job_and_worker_dicts() -> None:
    job = admin_pb2.JobInfo(
        id=12,
        handler_id="3f2a",
        status="leased",
        attempts=1,
        worker_name="lab-1",
        progress_percent=50.0,
        progress_text="half",
        input_json='{"lo": 2, "hi": 10002}',
    )
    worker = admin_pb2.WorkerInfo(id="w1", name="lab-1", labels={"gpu": "no"}, running=[job])
    d = view.worker_dict(worker)
    assert d["labels"] == {"gpu": "no"}
    assert d["last_seen"] is None
    assert d["running"][0]["input"] == {"lo": 2, "hi": 10002}
    assert d["running"][0]["progress_percent"] == 50.0
    assert d["running"][0]["error"] is None


def test_package_dict() -> None:
    wheel = packages_pb2.WheelInfo(filename="p-0.1.0-py3-none-any.whl", size=3000)
    dep = packages_pb2.WheelInfo(filename="d-0.1.0-py3-none-any.whl", size=2000)
    p = packages_pb2.PackageInfo(name="p", version="0.1.0", handlers=["H"], wheel=wheel, dependencies=[dep])
    d = view.package_dict(p)
    assert d["handlers"] == ["H"]
    assert d["dependencies"][0]["filename"] == "d-0.1.0-py3-none-any.whl"
    assert d["uploaded_at"] is None


def test_handlers_table_shows_progress_state_and_summary() -> None:
    out = text_of(render.handlers_table([handler(), handler(id="77aa", has_total=False, state="idle")]))
    assert "3f2a9c0d" in out
    assert "3f2a9c0d1e" not in out  # short ids in tables
    assert "56/100 (56%)" in out
    assert "running" in out
    assert "4000 primes below 1000000, largest 99991" in out


def test_tables_print_names_literally_not_as_markup() -> None:
    out = text_of(render.handlers_table([handler(job_name="calc [x]", message="boom [red]x[/red]")]))
    assert "calc [x]" in out
    assert "boom [red]x[/red]" in out


def test_handler_detail_shows_every_field_and_pretty_settings() -> None:
    out = text_of(handler_render.handler_detail(handler()))
    assert "3f2a9c0d1e2b4a5c" in out
    assert "100 in total" in out
    assert '"job-timeout": 60.0' in out
    assert '"limit": 1000000' in out
    assert "finished" in out


def test_times_render_human_readable() -> None:
    assert render.fmt_time(0) == "-"
    assert render.fmt_time(1_700_000_000).startswith("2023-11-1")
    assert render.fmt_ago(0) == "-"
    assert render.fmt_ago(100, now=105) == "5s ago"
    assert render.fmt_ago(0.5, now=7200.5) == "2h ago"


def test_dashboard_frame_renders_handlers_and_workers() -> None:
    job = admin_pb2.JobInfo(id=12, handler_id="3f2a9c0d", progress_percent=50.0, progress_text="half")
    worker = admin_pb2.WorkerInfo(name="lab-1", connected=True, slots=2, jobs_running=1, running=[job])
    out = text_of(dashboard.build([handler()], [worker], address="127.0.0.1:50051", error="", now=1.0))
    assert "primes below 1e6" in out
    assert "lab-1" in out
    assert "#12" in out
    assert "50%" in out


def test_dashboard_frame_when_empty() -> None:
    out = text_of(dashboard.build([], [], address="127.0.0.1:50051", error="UnavailableError: x", now=1.0))
    assert "no handlers" in out
    assert "no worker connected" in out
    assert "UnavailableError: x" in out


def test_a_finished_handler_with_failed_jobs_reads_the_same_in_every_view() -> None:
    label = "finished, all 4 jobs failed"
    done = handler(state="finished", state_label=label, jobs_processed=0, jobs_failed=4, jobs_available=0)
    assert render.handler_state(done).style == "bold red"
    some = handler(state="finished", state_label="finished, 1 of 57 jobs failed", jobs_failed=1)
    assert render.handler_state(some).style == "bold yellow"
    assert render.handler_state(handler(state="finished", jobs_failed=0)).style == "bold green"
    wide = Console(width=250, record=True, color_system=None)
    for renderable in (
        render.handlers_table([done]),
        handler_render.handler_detail(done),
        dashboard.build([done], [], address="127.0.0.1:50051", error="", now=1.0),
    ):
        with wide.capture() as captured:
            wide.print(renderable)
        assert label in captured.get()
    assert view.handler_dict(done)["state_label"] == label and view.handler_dict(done)["state"] == "finished"


def test_why_jobs_wait_shows_in_every_view_and_prints_safely() -> None:
    """``waiting`` names workers as they named themselves: escape codes reach no terminal."""
    reason = (
        'no connected worker is allowed (clients-allowed = [{ label = "tpu" }]; 1 connected: w\x1b[2J1 [no labels])'
    )
    h = handler(waiting=reason)
    for out in (text_of(render.handlers_table([h])), text_of(handler_render.handler_detail(h))):
        assert "\x1b" not in out and "w\\x1b[2J1" in out, out
    assert "waiting: no connected worker is allowed" in text_of(render.handlers_table([h]))
    assert view.handler_dict(h)["waiting"] == reason
    assert view.handler_dict(handler())["waiting"] is None
    assert "waiting" not in text_of(handler_render.handler_detail(handler()))
