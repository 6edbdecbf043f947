"""``netdist-admin watch``: a live dashboard of handlers and workers, drawn from the server's event stream."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from netdist.adminctl import render
from netdist.adminctl.client import AdminClient
from netdist.adminctl.command_io import PLAIN_WIDTH
from netdist.adminctl.live_model import LiveModel
from netdist.adminctl.stopping import sigterm_ends
from netdist.api.v1 import admin_pb2
from netdist.errors import NetDistError, PermissionDeniedError, UnauthenticatedError

RETRY_SECONDS = 2.0


def build(
    handlers: Sequence[admin_pb2.HandlerInfo],
    workers: Sequence[admin_pb2.WorkerInfo],
    *,
    address: str,
    error: str = "",
    now: float | None = None,
    footer: bool = True,
) -> RenderableType:
    """One frame of the dashboard."""
    now = time.time() if now is None else now
    header = render.text(f"netdist at {address}", style="bold")
    header.append(f"   {time.strftime('%H:%M:%S', time.localtime(now))}", style="dim")
    if error:
        header.append("\n")
        header.append_text(render.text(error, style="red"))
    parts: list[RenderableType] = [header, _handlers(handlers), _workers(workers, now=now)]
    if footer:
        parts.append(Text("Ctrl-C to quit", style="dim"))
    return Group(*parts)


def _handlers(handlers: Sequence[admin_pb2.HandlerInfo]) -> Table:
    table = Table(title="Handlers", title_justify="left", expand=True)
    table.add_column("Job", overflow="fold", ratio=2)
    table.add_column("State")
    table.add_column("Progress", no_wrap=True)
    table.add_column("Done", justify="right", no_wrap=True)
    table.add_column("Avail", justify="right")
    table.add_column("Pending", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Summary / message", overflow="fold", ratio=3)
    for h in handlers:
        render.add_row(
            table,
            render.text(h.job_name)
            .append("\n")
            .append_text(render.text(f"{render.short_id(h.id)} {h.package}/{h.handler}", style="dim")),
            render.handler_state(h),
            render.handler_bar(h, width=24),
            render.progress_text(h),
            str(h.jobs_available),
            str(h.jobs_pending),
            Text(str(h.jobs_failed), style="red" if h.jobs_failed else ""),
            render.summary_text(h),
        )
    if not handlers:
        render.add_row(table, Text("no handlers: netdist-admin jobs add SCRIPT.py", style="dim"))
    return table


def _workers(workers: Sequence[admin_pb2.WorkerInfo], *, now: float) -> Table:
    table = Table(title="Workers", title_justify="left", expand=True)
    table.add_column("Name", overflow="fold")
    table.add_column("Running", justify="right")
    table.add_column("Connected")
    table.add_column("Running jobs", overflow="fold", ratio=3)
    for w in workers:
        if not w.connected:
            continue
        running = Text()
        for j in w.running:
            if running:
                running.append("\n")
            running.append_text(render.text(f"#{j.id} {render.short_id(j.handler_id)} "))
            running.append(f"{j.progress_percent:3.0f}%", style="cyan")
            if j.progress_text:
                running.append_text(render.text(f" {j.progress_text}", style="dim"))
        render.add_row(
            table,
            w.name,
            f"{w.jobs_running}/{w.slots}",
            render.fmt_ago(w.connected_since, now=now),
            running or Text("idle", style="dim"),
        )
    if not any(w.connected for w in workers):
        render.add_row(
            table,
            Text("no worker connected: netdist-worker connect HOST:PORT", style="dim"),
        )
    return table


def run(client: AdminClient, *, interval_seconds: float, console: Console) -> None:
    """Follow the server's event stream and draw it until SIGINT (exit 130) or SIGTERM (exit 0).

    On a terminal the screen is redrawn as events come (the server sends at most
    one batch per 50 ms); otherwise plain frames are printed, at most one per
    ``interval_seconds``, and the last one when it ends. The first answer must
    come; if the stream breaks later the error shows in the header, the last
    data stays, and it watches again (with a fresh snapshot) after a pause."""
    model = LiveModel()
    stream = client.watch()
    model.apply(next(stream))
    with sigterm_ends():
        if console.is_terminal:
            _on_terminal(client, stream, model, console)
        else:  # a file or a pipe has no width of its own: not the 80 columns rich assumes, which fold the tables
            wide = Console(file=console.file, width=PLAIN_WIDTH, highlight=False)
            _plain(client, stream, model, wide, interval_seconds=interval_seconds)


def _frame(model: LiveModel, client: AdminClient, error: str, *, footer: bool = True) -> RenderableType:
    return build(
        list(model.handlers.values()),
        list(model.workers.values()),
        address=client.address,
        error=error,
        footer=footer,
    )


def _on_terminal(
    client: AdminClient, stream: Iterator[admin_pb2.WatchResponse], model: LiveModel, console: Console
) -> None:
    with Live(_frame(model, client, ""), console=console, auto_refresh=False, screen=False) as live:
        for reply, error in _follow(client, [stream]):
            if reply is not None:
                model.apply(reply)
            live.update(_frame(model, client, error), refresh=True)


def _plain(
    client: AdminClient,
    stream: Iterator[admin_pb2.WatchResponse],
    model: LiveModel,
    console: Console,
    *,
    interval_seconds: float,
) -> None:
    """A frame at most every ``interval_seconds`` while things change, and one when a change is
    ``interval_seconds`` old even if nothing follows it (the stream is read by a thread of its own, so a
    quiet stream does not hold the last state back), and the last state on the way out."""
    console.print(_frame(model, client, "", footer=False))
    printed = time.monotonic()
    dirty, error = False, ""
    updates: queue.Queue[tuple[admin_pb2.WatchResponse | None, str | NetDistError]] = queue.Queue()
    current = [stream]  # the stream being read (the reader replaces it when it watches again)
    ending = threading.Event()

    def read() -> None:
        try:
            for item in _follow(client, current):
                updates.put(item)
        except NetDistError as exc:  # one that watching again cannot mend: the command ends with it
            updates.put((None, exc))
        except Exception:
            if not ending.is_set():  # the channel closed under it on the way out is no error
                raise

    threading.Thread(target=read, name="netdist-watch-reader", daemon=True).start()
    try:
        while True:
            try:
                wait = max(0.0, printed + interval_seconds - time.monotonic()) if dirty else None
                reply, said = updates.get(timeout=wait)
                if isinstance(said, NetDistError):
                    raise said
                error = said
                if reply is not None:
                    model.apply(reply)
                dirty = True
            except queue.Empty:
                pass
            if dirty and time.monotonic() - printed >= interval_seconds:
                console.print(_frame(model, client, error, footer=False))
                printed, dirty = time.monotonic(), False
    finally:
        ending.set()
        if dirty:  # the last state, on the way out (SIGTERM, Ctrl-C)
            console.print(_frame(model, client, error, footer=False))
        console.file.flush()


def _follow(
    client: AdminClient, current: list[Iterator[admin_pb2.WatchResponse]]
) -> Iterator[tuple[admin_pb2.WatchResponse | None, str]]:
    """Each answer of ``current[0]`` with "" as its error; when the stream breaks, (None, the error), and it
    watches again after a pause with a fresh stream (put in ``current[0]``)."""
    while True:
        try:
            for reply in current[0]:
                yield reply, ""
            problem = "the server ended the event stream"
        except (UnauthenticatedError, PermissionDeniedError):
            raise  # a refused token does not heal by watching again
        except NetDistError as exc:
            problem = f"{type(exc).__name__}: {exc.message}"
        yield None, f"{problem} (watching again in {RETRY_SECONDS:g} s)"
        time.sleep(RETRY_SECONDS)
        current[0] = client.watch()
