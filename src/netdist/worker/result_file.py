"""Results the server has not acknowledged, kept on disk from one run of a worker to the next.

A worker that stops while the server cannot take its results (the server
stopped or is draining, the network is down) does not wait its grace out for
acknowledgements that cannot come: it writes what is unacknowledged here, next
to its worker id (``worker-id.results``), and its next run names those leases
in its Hello and sends the results first. The server fences them as it fences
any result: each counts only if its lease is still this worker's (the lease of
a server that stopped cleanly is adopted by its next start, and waits for its
worker within the restart grace); one that comes too late is dropped as stale
and its job has run again elsewhere. Nothing is counted twice either way.

Each result names the server it was for (``HOST:PORT`` as the worker was
given it): job ids are a server's own, so the next run sends only those of the
server it connects to, and drops the others with a warning (their jobs run
again there; the file is written anew at the end of the run).

One JSON object a line, written to a temporary file, synced, then renamed in
place, readable by this user alone (outputs may be private). Like everything
in the cache dir it is not trusted: a line that does not read as a result is
skipped with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from netdist.atomic_file import write_atomically
from netdist.worker.job import JobError, JobRef, JobResult

log = logging.getLogger("netdist.worker")


def load_results(path: Path, server: str) -> list[JobResult]:
    """The results kept at ``path`` by an earlier run for ``server``; none when there is no file or it cannot
    be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read the results kept in %s: %s; they are not sent", path, exc.strerror or exc)
        return []
    results: list[JobResult] = []
    bad = 0
    others: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            result = _decode(item)
        except (ValueError, TypeError, KeyError, AttributeError):
            bad += 1
            continue
        if item.get("server") == server:
            results.append(result)
        else:
            others.add(str(item.get("server"))[:200])
    if bad:
        log.warning("skipped %d unreadable line(s) of the results kept in %s", bad, path)
    if others:
        log.warning(
            "dropped the results kept in %s for another server (%s): job ids are each server's own",
            path,
            ", ".join(sorted(repr(o) for o in others)),
        )
    return results


def save_results(path: Path, results: Iterable[JobResult], server: str) -> None:
    """Keep ``results`` (for ``server``) at ``path`` in place of what was there; none: the file goes."""
    lines = [json.dumps({"server": server, **_encode(result)}, separators=(",", ":")) + "\n" for result in results]
    if not lines:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    write_atomically(path, "".join(lines).encode("utf-8"), 0o600)


def _encode(result: JobResult) -> dict[str, Any]:
    error = result.error  # the stream sends an error if there is one, else the output (none: null)
    return {
        "job_id": result.ref.job_id,
        "lease_no": result.ref.lease_no,
        # JSON text; the server reads it as UTF-8 the same way.
        "output": None if result.output_json is None else result.output_json.decode("utf-8", "replace"),
        "error": None
        if error is None
        else {"type": error.type, "message": error.message, "traceback": error.traceback},
        "duration_seconds": result.duration_seconds,
    }


def _decode(item: Mapping[str, Any]) -> JobResult:
    job_id, lease_no, output, error = item["job_id"], item["lease_no"], item["output"], item["error"]
    duration = item.get("duration_seconds", 0.0)
    if type(job_id) is not int or type(lease_no) is not int or type(duration) not in (int, float):
        raise TypeError("not a result")
    ref = JobRef(job_id, lease_no)
    if error is not None:
        if not all(isinstance(error.get(key), str) for key in ("type", "message", "traceback")):
            raise TypeError("not an error")
        job_error = JobError(type=error["type"], message=error["message"], traceback=error["traceback"])
        return JobResult(ref, None, job_error, float(duration))
    if output is not None and not isinstance(output, str):
        raise TypeError("not an output")
    return JobResult(ref, None if output is None else output.encode(), None, float(duration))
