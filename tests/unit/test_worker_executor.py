"""The executor with real child processes running real job script files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netdist.worker import child_process
from netdist.worker.executor import MAX_PIPELINE_DEPTH, Executor
from netdist.worker.job import Environment, Job, JobProgress, JobRef, JobResult

SCRIPT = """
import ctypes
import os
import sys
import time

print("printed at import time")


def process(job_input, ctx):
    kind = job_input["kind"]
    if kind == "echo":
        print("printed to stdout", job_input)
        sys.stdout.flush()
        return {"value": job_input.get("value"), "job_id": ctx.job_id, "attempt": ctx.attempt}
    if kind == "raise":
        raise ValueError("bad input")
    if kind == "not-json":
        return {1, 2}
    if kind == "nan":
        return float("nan")
    if kind == "sleep":
        time.sleep(job_input["seconds"])
        return "slept"
    if kind == "exit":
        os._exit(job_input["code"])
    if kind == "segv":
        ctypes.string_at(0)
    if kind == "pid":
        return os.getpid()
    if kind == "progress":
        for i in range(1, 101):
            ctx.progress(i, f"step {i}")
            time.sleep(job_input["seconds"] / 100)
        return "done"
    if kind == "log":
        ctx.log.info("hello from the job")
        return ctx.job_name
    if kind == "alloc":
        return len(bytearray(job_input["mb"] << 20))
    if kind == "faults":  # large buffers made and dropped in turn: the page faults of the second round
        import json, resource
        def rounds():
            for _ in range(20):
                json.loads(json.dumps({"items": ["x" * (1 << 20)] * 10}).encode())
        rounds()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rounds()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    if kind == "nan-progress":
        ctx.progress(float("nan"))
        return "unreachable"
    if kind == "big":
        return {"text": "x \\n" * job_input["size"], "input": job_input}
    if kind == "meet":  # touch my file, then wait (up to 20 s) for the other job's
        open(job_input["mine"], "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(job_input["other"]):
            if time.monotonic() > deadline:
                return "alone"
            time.sleep(0.01)
        return "met"
    raise AssertionError(kind)
"""


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Harness:
    """An executor plus what it reported."""

    def __init__(self, tmp_path: Path, *, slots: int = 1, max_memory_bytes: int | None = None) -> None:
        self.tmp_path = tmp_path
        self.results: dict[int, JobResult] = {}
        self.progress: list[JobProgress] = []
        self.started: list[JobRef] = []
        self.order: list[str] = []
        self.environment = self.script("job.py", SCRIPT)
        self.executor = Executor(
            slots=slots,
            on_result=self._result,
            on_progress=self._progress,
            on_started=self._started,
            max_memory_bytes=max_memory_bytes,
        )
        self._next_id = 0

    def _result(self, result: JobResult) -> None:
        self.results[result.ref.job_id] = result
        self.order.append(f"result {result.ref.job_id}")

    def _started(self, ref: JobRef) -> None:
        self.started.append(ref)
        self.order.append(f"started {ref.job_id}")

    def _progress(self, progress: JobProgress) -> None:
        self.progress.append(progress)
        self.order.append(f"progress {progress.ref.job_id}")

    def script(self, name: str, text: str) -> Environment:
        path = self.tmp_path / name
        path.write_text(text)
        return Environment(script_sha256=name, script_path=path)

    def submit(
        self,
        job_input: object,
        *,
        timeout: float = 0.0,
        environment: Environment | None = None,
        raw: bytes | None = None,
        script_name: str = "",
    ) -> JobRef:
        self._next_id += 1
        ref = JobRef(job_id=self._next_id, lease_no=1)
        job = Job(
            ref=ref,
            handler_id="handler-1",
            job_name="test job",
            attempt=2,
            environment=environment or self.environment,
            input_json=json.dumps(job_input).encode() if raw is None else raw,
            timeout_seconds=timeout,
            script_name=script_name,
        )
        self.executor.submit(job)
        return ref

    async def result(self, ref: JobRef, timeout: float = 10.0) -> JobResult:
        await wait_until(lambda: ref.job_id in self.results, timeout)
        return self.results[ref.job_id]


def run(
    tmp_path: Path,
    scenario: Callable[[Harness], object],
    *,
    slots: int = 1,
    max_memory_bytes: int | None = None,
) -> None:
    async def main() -> None:
        harness = Harness(tmp_path, slots=slots, max_memory_bytes=max_memory_bytes)
        try:
            await scenario(harness)  # type: ignore[misc]
        finally:
            await harness.executor.close()

    asyncio.run(main())


def test_input_and_output_pass_through_as_json_text(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        spaced = h.submit(None, raw=b'{ "kind" : "echo", "value": [1.5, "\\u00e9"] }')
        not_json = h.submit(None, raw=b'{"kind": "echo"')
        big = h.submit({"kind": "big", "size": 100_000, "pad": "\u00e9"})
        after = h.submit({"kind": "echo", "value": 3})

        output = (await h.result(spaced)).output_json
        assert output == f'{{"value":[1.5,"\\u00e9"],"job_id":{spaced.job_id},"attempt":2}}'.encode()
        error = (await h.result(not_json)).error
        assert error is not None
        assert error.type == "InputNotJson"
        assert error.message.startswith("the job's input is not JSON: ")
        big_output = json.loads((await h.result(big)).output_json or "")
        assert big_output["text"] == "x \n" * 100_000
        assert big_output["input"]["pad"] == "\u00e9"
        assert json.loads((await h.result(after)).output_json or "")["value"] == 3

    run(tmp_path, scenario)


def test_output_errors_and_stdout_noise(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    async def scenario(h: Harness) -> None:
        echo = h.submit({"kind": "echo", "value": [1, "two", None]})
        failing = h.submit({"kind": "raise"})
        not_json = h.submit({"kind": "not-json"})
        nan = h.submit({"kind": "nan"})
        logged = h.submit({"kind": "log"})

        ok = await h.result(echo)
        assert ok.error is None
        assert json.loads(ok.output_json or "") == {
            "value": [1, "two", None],
            "job_id": echo.job_id,
            "attempt": 2,
        }
        assert ok.duration_seconds >= 0

        error = (await h.result(failing)).error
        assert error is not None
        assert (error.type, error.message) == ("ValueError", "bad input")
        assert "raise ValueError" in error.traceback

        for ref in (not_json, nan):
            error = (await h.result(ref)).error
            assert error is not None
            assert error.type == "OutputNotJson"
        assert (await h.result(logged)).output_json == b'"test job"'
        assert len(h.executor.child_pids()) == 1

    run(tmp_path, scenario)
    err = capfd.readouterr().err
    assert "printed to stdout" in err
    assert "printed at import time" in err
    assert "hello from the job" in err


def test_timeout_kills_the_child_and_the_slot_recovers(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        slow = h.submit({"kind": "sleep", "seconds": 30}, timeout=0.3)
        after = h.submit({"kind": "echo", "value": 1})
        error = (await h.result(slow)).error
        assert error is not None
        assert error.type == "JobTimeout"
        assert "0.3 s" in error.message
        assert (await h.result(after)).error is None

    run(tmp_path, scenario)


def test_child_death_fails_the_job_and_requeues_the_rest(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        first_pid = h.submit({"kind": "pid"})
        pid_before = json.loads((await h.result(first_pid)).output_json or "")
        dying = h.submit({"kind": "exit", "code": 3})
        queued = [h.submit({"kind": "pid"}) for _ in range(3)]
        error = (await h.result(dying)).error
        assert error is not None
        assert error.type == "WorkerChildDied"
        assert "code 3" in error.message
        pids = {json.loads((await h.result(ref)).output_json or "") for ref in queued}
        assert pid_before not in pids
        assert all(h.results[ref.job_id].error is None for ref in queued)

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("death", "how"),
    [({"kind": "exit", "code": 7}, "exited with code 7"), ({"kind": "segv"}, "killed by SIGSEGV")],
    ids=["exit", "segv"],
)
def test_a_child_that_dies_keeps_the_results_of_the_jobs_before_it(
    tmp_path: Path, death: dict[str, object], how: str
) -> None:
    """The results of jobs that finished in a child reach the worker even if the next job kills it at once:
    only the job that was running is charged with the death (it used to wait in the child's writer thread)."""

    async def scenario(h: Harness) -> None:
        # Warm up with tiny jobs so the running average allows pipelining.
        for ref in [h.submit({"kind": "echo"}) for _ in range(20)]:
            await h.result(ref)
        finished = [h.submit({"kind": "echo", "value": i}) for i in range(2)]
        dying = h.submit(death)
        assert h.executor.pending == 0  # all three are in the one child
        error = (await h.result(dying)).error
        assert error is not None
        assert error.type == "WorkerChildDied"
        assert how in error.message
        for i, ref in enumerate(finished):
            result = h.results[ref.job_id]
            assert result.error is None, f"job {ref.job_id} finished before the death but was charged: {result.error}"
            assert json.loads(result.output_json or "")["value"] == i
        assert h.order.index(f"result {finished[-1].job_id}") < h.order.index(f"result {dying.job_id}")

    run(tmp_path, scenario)


def test_new_wheels_get_a_fresh_process_and_another_script_on_the_same_wheels_does_not(tmp_path: Path) -> None:
    # Seen from outside: 100 handlers of one package on 1-slot workers ran at 0.021x of one handler's
    # throughput: every switch between two handlers' job scripts started a fresh process.
    async def scenario(h: Harness) -> None:
        first = h.submit({"kind": "pid"})
        again = h.submit({"kind": "pid"})
        other_script = h.submit({}, environment=h.script("other.py", OTHER_SCRIPT))
        wheel = tmp_path / "wheel"
        wheel.mkdir()
        other_wheels = dataclasses.replace(h.environment, wheel_sha256s=("w",), wheel_dirs=(wheel,))
        on_other_wheels = h.submit({"kind": "pid"}, environment=other_wheels)
        pid_a = json.loads((await h.result(first)).output_json or "")
        pid_b = json.loads((await h.result(again)).output_json or "")
        name, pid_c = json.loads((await h.result(other_script)).output_json or "")
        pid_d = json.loads((await h.result(on_other_wheels)).output_json or "")
        assert pid_a == pid_b == pid_c and name == "other"
        assert pid_d != pid_a

    run(tmp_path, scenario)


def test_scripts_sharing_a_child_keep_their_own_globals_and_tracebacks(tmp_path: Path) -> None:
    script = "NAME = {name!r}\ndef process(job_input, ctx):\n    if job_input:\n        raise ValueError(NAME)\n    return NAME\n"

    async def scenario(h: Harness) -> None:
        one, two = (h.script(f"{name}.py", script.format(name=name)) for name in ("one", "two"))
        refs = [h.submit(None, environment=env) for env in (one, two, one, two)]
        outputs = [json.loads((await h.result(ref)).output_json or "") for ref in refs]
        assert outputs == ["one", "two", "one", "two"]
        error = (await h.result(h.submit(True, environment=two))).error
        assert error is not None and error.message == "two" and "two.py" in error.traceback

    run(tmp_path, scenario)


def test_two_versions_of_a_script_in_one_child_show_their_own_lines_in_tracebacks(tmp_path: Path) -> None:
    version = "def process(job_input, ctx):\n    raise ValueError({v!r})  # version {v}\n"

    async def scenario(h: Harness) -> None:
        one, two = (h.script(f"v{v}.py", version.format(v=v)) for v in (1, 2))
        errors = []
        for env in (one, two, one):  # the first again once both are loaded
            error = (await h.result(h.submit(None, environment=env, script_name="montecarlo.py"))).error
            assert error is not None
            errors.append(error.traceback)
        assert 'File "montecarlo.py", line 2' in errors[0] and "# version 1" in errors[0]
        assert f'File "montecarlo.py@{two.script_sha256[:12]}", line 2' in errors[1] and "# version 2" in errors[1]
        assert errors[2] == errors[0]

    run(tmp_path, scenario)


def test_a_script_that_loads_slowly_in_a_running_child_does_not_use_up_the_jobs_timeout(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        await h.result(h.submit({"kind": "pid"}))  # the child runs and has loaded job.py
        slow = h.script("slow.py", "import time\ntime.sleep(1.5)\ndef process(job_input, ctx):\n    return 'ok'\n")
        result = await h.result(h.submit({}, environment=slow, timeout=1.0), timeout=20)
        assert result.error is None and result.output_json == b'"ok"'

    run(tmp_path, scenario)


def test_a_child_past_its_script_bound_or_holding_a_repaired_script_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(child_process, "MAX_SCRIPTS", 2)

    async def scenario(h: Harness) -> None:
        pid = json.loads((await h.result(h.submit({"kind": "pid"}))).output_json or "")
        second = h.script("second.py", OTHER_SCRIPT)
        assert json.loads((await h.result(h.submit({}, environment=second))).output_json or "")[1] == pid
        third = h.script("third.py", OTHER_SCRIPT)
        pid_3 = json.loads((await h.result(h.submit({}, environment=third))).output_json or "")[1]
        assert pid_3 != pid
        repaired = dataclasses.replace(third, script_generation=1)
        pid_4 = json.loads((await h.result(h.submit({}, environment=repaired))).output_json or "")[1]
        assert pid_4 != pid_3

    run(tmp_path, scenario)


OTHER_SCRIPT = "import os\ndef process(job_input, ctx):\n    return ['other', os.getpid()]\n"


def test_interleaved_environments_on_one_slot_do_not_start_a_process_per_job(tmp_path: Path) -> None:
    # Seen from outside: 10 handlers' no-op jobs on 1-slot workers ran at 20 jobs/s in all (4,259
    # with one handler): each job of another environment replaced the child with a fresh process.
    async def scenario(h: Harness) -> None:
        other = h.script("other.py", OTHER_SCRIPT)
        refs = [h.submit({"kind": "pid"}) if n % 2 == 0 else h.submit({}, environment=other) for n in range(40)]
        outputs = [json.loads((await h.result(ref)).output_json or "") for ref in refs]
        pids = {out if isinstance(out, int) else out[1] for out in outputs}
        assert len(pids) < 10, f"{len(pids)} processes for 40 jobs of 2 environments"

    run(tmp_path, scenario)


def test_a_job_of_another_environment_is_not_passed_over_for_long(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        warm = h.submit({"kind": "sleep", "seconds": 0.01})
        await h.result(warm)  # the slot's child runs this environment now
        other = h.submit({}, environment=h.script("other.py", OTHER_SCRIPT))
        same = [h.submit({"kind": "sleep", "seconds": 0.02}) for _ in range(100)]  # about 2 s of work
        await h.result(other, timeout=20)
        done_before = sum(ref.job_id in h.results for ref in same)
        assert done_before < len(same), "the other environment's job waited for every job queued after it"
        for ref in same:
            await h.result(ref, timeout=20)

    run(tmp_path, scenario)


def test_a_broken_script_fails_each_job_without_crashing(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        broken = h.script("broken.py", "import no_such_module_here\n")
        ref = h.submit({}, environment=broken)
        error = (await h.result(ref)).error
        assert error is not None
        assert error.type == "ModuleNotFoundError"
        assert "cannot load the job script" in error.message
        assert (await h.result(h.submit({"kind": "echo"}))).error is None

    run(tmp_path, scenario)


def test_revoke_running_and_pending_jobs(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        running = h.submit({"kind": "sleep", "seconds": 30})
        pending = h.submit({"kind": "echo", "value": "never"})
        await wait_until(lambda: h.executor.running == 1 and len(h.executor.child_pids()) == 1)
        pid = h.executor.child_pids()[0]
        assert h.executor.revoke(pending)
        assert h.executor.revoke(running)
        assert not h.executor.revoke(JobRef(job_id=999, lease_no=1))
        after = h.submit({"kind": "pid"})
        new_pid = json.loads((await h.result(after)).output_json or "")
        assert new_pid != pid
        assert set(h.results) == {after.job_id}

    run(tmp_path, scenario)


def test_revoke_of_a_job_queued_in_the_child_skips_it(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        # Warm up with tiny jobs so the running average allows pipelining.
        for ref in [h.submit({"kind": "echo"}) for _ in range(20)]:
            await h.result(ref)
        blocker = h.submit({"kind": "sleep", "seconds": 0.3})
        queued = h.submit({"kind": "echo", "value": "skipped"})
        assert h.executor.pending == 0  # both are in the child already
        h.executor.revoke(queued)
        assert (await h.result(blocker)).output_json == b'"slept"'
        after = h.submit({"kind": "echo", "value": "after"})
        await h.result(after)
        assert queued.job_id not in h.results

    run(tmp_path, scenario)


def test_a_job_starts_when_it_reaches_an_idle_child_or_the_head_of_one(
    tmp_path: Path,
) -> None:
    async def scenario(h: Harness) -> None:
        # Warm up with tiny jobs so the running average allows pipelining.
        for ref in [h.submit({"kind": "echo"}) for _ in range(20)]:
            await h.result(ref)
        assert all(h.order.index(f"started {i}") < h.order.index(f"result {i}") for i in range(1, 21))
        h.started.clear()
        blocker = h.submit({"kind": "sleep", "seconds": 0.3})
        queued = h.submit({"kind": "echo", "value": "second"})
        assert h.executor.pending == 0  # both are in the child already
        assert h.started == [blocker]  # the second waits behind the first
        await h.result(queued)
        assert h.started == [blocker, queued]
        assert h.order.index(f"started {queued.job_id}") < h.order.index(f"result {queued.job_id}")

    run(tmp_path, scenario)


def test_a_job_for_an_idle_child_reaches_it_before_the_worker_places_the_rest_of_its_batch(
    tmp_path: Path,
) -> None:
    # A batch of leases is placed in one turn of the worker's loop (thousands of them take milliseconds):
    # the first job goes to the idle child at once, not when the turn ends.
    mine, other = tmp_path / "mine", tmp_path / "other"
    other.touch()

    async def scenario(h: Harness) -> None:
        await h.result(h.submit({"kind": "echo"}))  # the child is up and idle
        ref = h.submit({"kind": "meet", "mine": str(mine), "other": str(other)})
        deadline = time.monotonic() + 10
        while not mine.exists():  # the loop is held here, in the turn that submitted the job
            assert time.monotonic() < deadline, "the job did not start while the worker's turn went on"
            time.sleep(0.005)  # noqa: ASYNC251 -- holding the loop is the point
        assert (await h.result(ref)).output_json == b'"met"'

    run(tmp_path, scenario)


def test_drop_unstarted_returns_exactly_the_jobs_not_started(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        for ref in [h.submit({"kind": "echo"}) for _ in range(20)]:
            await h.result(ref)
        h.started.clear()
        running = h.submit({"kind": "sleep", "seconds": 0.3})
        # Some queue in the child behind it (pipelined, at most MAX_PIPELINE_DEPTH), the rest stay pending.
        waiting = [h.submit({"kind": "echo"}) for _ in range(2 * MAX_PIPELINE_DEPTH)]
        assert 0 < h.executor.pending < len(waiting)
        assert h.started == [running]
        assert sorted(h.executor.drop_unstarted()) == waiting
        assert h.executor.pending == 0
        assert (await h.result(running)).output_json == b'"slept"'
        after = h.submit({"kind": "echo", "value": "after"})
        await h.result(after)
        assert set(h.results) == {*range(1, 21), running.job_id, after.job_id}
        assert h.started == [running, after]

    run(tmp_path, scenario)


def test_a_job_past_the_memory_limit_fails_and_the_slot_recovers(
    tmp_path: Path,
) -> None:
    async def scenario(h: Harness) -> None:
        small = h.submit({"kind": "alloc", "mb": 8})
        assert (await h.result(small)).output_json == str(8 << 20).encode()
        greedy = h.submit({"kind": "alloc", "mb": 1024})
        error = (await h.result(greedy)).error
        assert error is not None
        assert error.type == "MemoryError"
        assert "128 MB" in error.message
        again = h.submit({"kind": "alloc", "mb": 8})
        assert (await h.result(again)).output_json == str(8 << 20).encode()

    run(tmp_path, scenario, max_memory_bytes=128 << 20)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_a_child_without_a_memory_limit_keeps_freed_memory_and_one_with_a_limit_does_not(tmp_path: Path) -> None:
    """netdist.malloc_tuning in the child: large buffers in turn fault far fewer pages, except under
    --max-job-memory, where the pad would count against the job's limit."""
    faults: dict[str, int] = {}

    def measure(name: str) -> Callable[[Harness], object]:
        async def scenario(h: Harness) -> None:
            result = await h.result(h.submit({"kind": "faults"}))
            assert result.output_json is not None, result.error
            faults[name] = int(result.output_json)

        return scenario

    for name, limit in (("free", None), ("limited", 4 << 30)):
        (tmp_path / name).mkdir()
        run(tmp_path / name, measure(name), max_memory_bytes=limit)
    assert faults["free"] * 2 < faults["limited"], faults


def test_progress_is_coalesced_and_the_last_value_arrives_first(tmp_path: Path) -> None:
    async def scenario(h: Harness) -> None:
        ref = h.submit({"kind": "progress", "seconds": 0.5})
        assert (await h.result(ref)).output_json == b'"done"'
        assert 2 <= len(h.progress) <= 6
        assert h.progress[-1].percent == 100
        assert h.progress[-1].text == "step 100"
        assert h.order[-1] == f"result {ref.job_id}"

    run(tmp_path, scenario)


def test_slots_run_in_parallel(tmp_path: Path) -> None:
    """Two jobs that each wait for the other to have started: they meet only if both run at once."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")

    async def scenario(h: Harness) -> None:
        refs = [h.submit({"kind": "meet", "mine": a, "other": b}), h.submit({"kind": "meet", "mine": b, "other": a})]
        outputs = [(await h.result(ref)).output_json for ref in refs]
        assert outputs == [b'"met"', b'"met"']
        assert len(h.executor.child_pids()) == 2

    run(tmp_path, scenario, slots=2)


def test_children_are_killed_on_close(tmp_path: Path) -> None:
    pids: list[int] = []

    async def scenario(h: Harness) -> None:
        h.submit({"kind": "sleep", "seconds": 30})
        await wait_until(lambda: bool(h.executor.child_pids()))
        pids.extend(h.executor.child_pids())

    run(tmp_path, scenario)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_wheel_dirs_go_on_sys_path_first_wheel_first(tmp_path: Path) -> None:
    package, dependency = tmp_path / "package", tmp_path / "dependency"
    for directory, value in ((package, "package"), (dependency, "dependency")):
        directory.mkdir()
        (directory / "shared_mod.py").write_text(f"VALUE = {value!r}\n")
    (dependency / "dep_only.py").write_text("VALUE = 'dep'\n")
    script = tmp_path / "uses_wheels.py"
    script.write_text(
        "import dep_only, shared_mod\ndef process(job_input, ctx):\n    return [shared_mod.VALUE, dep_only.VALUE]\n"
    )
    environment = Environment(
        script_sha256="s",
        script_path=script,
        wheel_sha256s=("p", "d"),
        wheel_dirs=(package, dependency),
    )

    async def scenario(h: Harness) -> None:
        ref = h.submit({}, environment=environment)
        assert json.loads((await h.result(ref)).output_json or "") == ["package", "dep"]

    run(tmp_path, scenario)


def test_a_child_that_writes_garbage_fails_its_job_saying_so(tmp_path: Path) -> None:
    """Not a crash of the worker: the child is killed and the job's error quotes the line."""
    fake_python = tmp_path / "garbage-python"
    fake_python.write_text("#!/bin/sh\nread init\necho 'Segmentation fault?'\nexec cat > /dev/null\n")
    fake_python.chmod(0o755)
    results: list[JobResult] = []

    async def main() -> None:
        executor = Executor(slots=1, on_result=results.append, python=str(fake_python))
        environment = Environment(script_sha256="x", script_path=tmp_path / "job.py")
        try:
            executor.submit(
                Job(
                    ref=JobRef(1, 1),
                    handler_id="h",
                    job_name="n",
                    attempt=1,
                    environment=environment,
                    input_json=b"null",
                )
            )
            await wait_until(lambda: bool(results))
        finally:
            await executor.close()

    asyncio.run(main())
    error = results[0].error
    assert error is not None
    assert error.type == "WorkerChildDied"
    assert "killed for writing a malformed line" in error.message
    assert "malformed line from the executor child: not JSON" in error.message
    assert "Segmentation fault?" in error.message


def test_a_progress_that_is_not_a_number_fails_the_job_clearly(tmp_path: Path) -> None:
    """JSON has no NaN: the child refuses it in the job instead of losing its writer thread."""

    async def scenario(h: Harness) -> None:
        ref = h.submit({"kind": "nan-progress"})
        error = (await h.result(ref)).error
        assert error is not None
        assert (error.type, error.message) == ("ValueError", "progress percent must be a finite number, not nan")
        after = h.submit({"kind": "echo", "value": 1})
        assert json.loads((await h.result(after)).output_json or "")["value"] == 1

    run(tmp_path, scenario)


def test_a_warmed_spare_process_runs_the_next_job_and_is_killed_on_close_when_unused(tmp_path: Path) -> None:
    spares: list[int] = []

    async def scenario(h: Harness) -> None:
        h.executor.warm()
        h.executor.warm()  # one spare at a time
        spare = h.executor._spare
        assert spare is not None
        pid = (await spare).pid
        ref = h.submit({"kind": "pid"})
        assert json.loads((await h.result(ref)).output_json or "") == pid  # the job ran in the spare
        h.executor.warm()  # the next one, left unused
        assert h.executor._spare is not None and h.executor._spare is not spare
        spares.append((await h.executor._spare).pid)

    run(tmp_path, scenario)
    with pytest.raises(ProcessLookupError):
        os.kill(spares[0], 0)  # close killed the spare no one took
