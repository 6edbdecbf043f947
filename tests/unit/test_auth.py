"""Roles, tokens and credentials without a network: the table, the cache, the store, the files."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from netdist.api.v1 import admin_pb2, jobs_pb2, packages_pb2
from netdist.errors import PermissionDeniedError, TokenFileError
from netdist.server import cli
from netdist.server.auth import METHOD_ROLES, OPEN_METHODS, advice, bearer
from netdist.server.host import handler_environment
from netdist.server.lease_model import WorkerInfo
from netdist.server.store import catalog, credentials
from netdist.server.store.credentials import Admission
from netdist.server.store.engine import default_url, open_engine
from netdist.server.store.facade import Store
from netdist.server.tokens import (
    LAST_USED_EVERY_SECONDS,
    Role,
    TokenCache,
    digest,
    make_first_tokens,
    new_credential,
    new_token,
    write_secret,
)
from netdist.server.worker_admission import admit
from netdist.token_file import FoundToken, find_token
from tests.clock import ManualClock


def served_methods() -> set[str]:
    """Every method the server serves: its three services, health and reflection."""
    services = [
        jobs_pb2.DESCRIPTOR.services_by_name["JobService"],
        packages_pb2.DESCRIPTOR.services_by_name["PackageService"],
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ]
    return {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}


def test_every_served_method_is_in_the_table_and_admin_may_call_all_of_it() -> None:
    methods = served_methods()
    assert not methods - set(METHOD_ROLES) - OPEN_METHODS
    assert all(Role.ADMIN in METHOD_ROLES[m] for m in methods - OPEN_METHODS)
    assert {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"} == OPEN_METHODS
    worker = {m for m, roles in METHOD_ROLES.items() if Role.WORKER in roles and Role.VIEWER not in roles}
    assert worker == {"/netdist.api.v1.JobService/Connect", "/netdist.api.v1.PackageService/Fetch"}
    viewer = {
        m.rsplit("/", 1)[1] for m, roles in METHOD_ROLES.items() if Role.VIEWER in roles and m.startswith("/netdist")
    }
    assert viewer == {
        "GetStatus",
        "ListHandlers",
        "GetHandler",
        "GetHandlerLog",
        "GetJobLog",
        "ListJobs",
        "GetJob",
        "ListWorkers",
        "ListAudit",
        "Watch",
        "GetJobScriptDeps",
        "List",
    }


def test_bearer_and_advice() -> None:
    assert bearer([("authorization", "Bearer ndt_x")]) == "ndt_x"
    assert bearer([("x", "y"), ("authorization", "bearer  ndt_y ")]) == "ndt_y"
    assert bearer([("authorization", "Basic abc")]) == ""
    assert bearer([("other", "Bearer ndt_z")]) is None
    assert bearer(None) is None
    assert "NETDIST_WORKER_TOKEN" in advice(frozenset({Role.ADMIN, Role.WORKER}))
    assert advice(frozenset({Role.ADMIN})) == "give the admin token: --token-file FILE or NETDIST_TOKEN"


def test_tokens_and_credentials_carry_256_random_bits_and_a_prefix() -> None:
    made = {new_token() for _ in range(100)}
    assert len(made) == 100 and all(t.startswith("ndt_") and len(t) == 4 + 43 for t in made)
    assert new_credential().startswith("ndc_")
    assert digest("ndt_a") == digest("ndt_a") != digest("ndt_b") and len(digest("x")) == 64


def test_secret_files_are_made_owner_only_and_never_follow_a_link(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    write_secret(path, "ndt_first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "ndt_first\n"
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    path.unlink()
    path.symlink_to(target)  # planted: the new token must not end up in the link's target
    write_secret(path, "ndt_second")
    assert target.read_text() == "keep me"
    assert not path.is_symlink() and path.read_text() == "ndt_second\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(open_engine(default_url(tmp_path)))
    yield s
    s.close()


def test_first_start_writes_two_token_files_once(store: Store, tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Path] | None, list[Path] | None]:
        return await make_first_tokens(store, tmp_path), await make_first_tokens(store, tmp_path)

    first, again = asyncio.run(scenario())
    assert again is None and first == [tmp_path / "admin.token", tmp_path / "worker.token"]
    with store.engine.connect() as conn:
        records = {r.name: r for r in credentials.list_tokens(conn)}
    assert {n: r.role for n, r in records.items()} == {"admin": "admin", "worker": "worker"}
    for path in first:
        value = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert records[path.stem].sha256 == digest(value) and value not in repr(records)


def test_the_cache_knows_tokens_hears_of_revocations_and_notes_use_once_a_minute(store: Store) -> None:
    clock = ManualClock()
    cache = TokenCache(store, clock=clock)
    token = new_token()
    ended: list[str] = []

    def last_used() -> float | None:
        with store.engine.connect() as conn:
            return next(r.last_used_at for r in credentials.list_tokens(conn) if r.name == "ops")

    async def scenario() -> None:
        await store.write(credentials.add_token, name="ops", role="viewer", sha256=digest(token))
        await cache.refresh()
        known = cache.lookup(token)
        assert known is not None and (known.name, known.role) == ("ops", Role.VIEWER)
        assert cache.lookup("ndt_unknown") is None
        await cache.write_last_used()
        assert last_used() == clock.wall
        first = clock.wall
        clock.advance(LAST_USED_EVERY_SECONDS / 2)
        cache.lookup(token)
        await cache.write_last_used()
        assert last_used() == first  # not again within the minute
        clock.advance(LAST_USED_EVERY_SECONDS / 2)
        await cache.write_last_used()
        assert last_used() == first + LAST_USED_EVERY_SECONDS / 2  # the use noted half a minute ago

        cache.watch(known.sha256, lambda: ended.append("stream"))
        stop = cache.watch(known.sha256, lambda: ended.append("stopped watching"))
        stop()
        await store.write(credentials.revoke_token, "ops")
        assert cache.lookup(token) is not None  # until the next reload
        await cache.refresh()
        assert cache.lookup(token) is None and not cache.valid(known.sha256)

    asyncio.run(scenario())
    assert ended == ["stream"]


def test_a_worker_id_is_bound_to_the_credential_it_was_issued(store: Store) -> None:
    def admit(presented: str | None, issue: str) -> Admission:
        with store.engine.begin() as conn:
            return credentials.admit_worker(conn, "w", name="w", presented_sha256=presented, issue_sha256=issue)

    def run(fn: object, *args: object) -> None:
        with store.engine.begin() as conn:
            fn(conn, *args)  # type: ignore[operator]

    assert admit(None, "a" * 64) == Admission.ISSUED
    assert admit(None, "b" * 64) == Admission.ISSUED  # its Welcome was lost: not confirmed, so issued anew
    assert admit("a" * 64, "c" * 64) == Admission.ISSUED  # the lost one is gone for good
    run(credentials.confirm_credential, "w", "c" * 64)
    assert admit(None, "d" * 64) == Admission.CLAIMED
    assert admit("b" * 64, "d" * 64) == Admission.CLAIMED
    assert admit("c" * 64, "d" * 64) == Admission.KNOWN
    run(credentials.forget_credential, "w")  # workers remove: the id is free
    assert admit("c" * 64, "e" * 64) == Admission.ISSUED
    assert admit("e" * 64, "f" * 64) == Admission.KNOWN  # presenting it confirms it
    assert admit(None, "f" * 64) == Admission.CLAIMED
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE workers SET disabled = 1")
    assert admit("e" * 64, "f" * 64) == Admission.DISABLED
    assert admit(None, "f" * 64) == Admission.CLAIMED  # an impostor hears the id is taken, not that it is disabled


def test_an_admitted_worker_is_stored_with_its_labels_in_the_same_write_and_a_refused_one_changes_nothing(
    store: Store,
) -> None:
    # CI once listed a just-connected worker without its labels: the admission wrote the row, the labels came
    # in a second transaction, and `workers list` read in between.
    info = WorkerInfo(worker_id="w", name="gpu-box", labels={"gpu": "1"}, slots=2)

    async def admit_once(credential: str) -> str | None:
        return await admit(store.writer, info, credential, hostname="h", version="v", platform_json="")

    issued = asyncio.run(admit_once(""))
    assert issued is not None
    (row,) = asyncio.run(store.read(catalog.list_workers))
    assert (row.name, json.loads(row.labels_json), row.slots) == ("gpu-box", {"gpu": "1"}, 2)
    asyncio.run(store.write(credentials.confirm_credential, "w", digest(issued)))
    impostor = WorkerInfo(worker_id="w", name="impostor", labels={"gpu": "0"}, slots=9)
    with pytest.raises(PermissionDeniedError):
        asyncio.run(admit(store.writer, impostor, "", hostname="x", version="x", platform_json=""))
    assert asyncio.run(store.read(catalog.list_workers)) == [row]


def test_clients_find_their_token_flag_first_then_environment_then_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "netdist-data").mkdir()
    (tmp_path / "netdist-data" / "admin.token").write_text("ndt_local\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "admin.token").write_text("ndt_other\n")
    flag = tmp_path / "given.token"
    flag.write_text("ndt_flag\n")

    def find(token_file: Path | None = None, **env: str) -> FoundToken:
        return find_token(token_file=token_file, env=env, variable="NETDIST_TOKEN", default_name="admin.token")

    assert find(flag, NETDIST_TOKEN="ndt_env") == FoundToken("ndt_flag", f"--token-file {flag}")
    assert find(NETDIST_TOKEN="ndt_env", NETDIST_DATA_DIR=str(other)).value == "ndt_env"
    assert find(NETDIST_DATA_DIR=str(other)).value == "ndt_other"
    assert find() == FoundToken("ndt_local", os.path.join("netdist-data", "admin.token"))
    none = tmp_path / "none" / "admin.token"
    assert find(NETDIST_DATA_DIR=str(none.parent)) == FoundToken(
        None, f"none found: no --token-file, NETDIST_TOKEN unset, no {none}"
    )
    assert "ndt_flag" not in repr(find(flag))
    flag.write_text("two words\n")
    with pytest.raises(TokenFileError, match="does not hold one token"):
        find(flag)


def test_a_handler_host_environment_keeps_only_what_python_needs() -> None:
    env = handler_environment(
        {
            "PATH": "/bin",
            "HOME": "/h",
            "LANG": "C.UTF-8",
            "LC_ALL": "C",
            "TZ": "UTC",
            "TMPDIR": "/t",
            "NETDIST_DB": "postgresql://u:pw@h/db",
            "NETDIST_TOKEN": "ndt_x",
            "AWS_SECRET_ACCESS_KEY": "k",
            "PYTHONPATH": "/server/only",
        },
        [Path("/a"), Path("/b")],
    )
    assert env == {
        "PATH": "/bin",
        "HOME": "/h",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TZ": "UTC",
        "TMPDIR": "/t",
        "PYTHONPATH": os.pathsep.join(["/a", "/b"]),
    }


def test_tokens_cli_makes_lists_and_revokes_without_ever_showing_a_stored_value(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    runner = CliRunner()

    def tokens(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli.main, ["tokens", *args, "--data-dir", str(data)])
        return result.exit_code, result.stdout, result.stderr

    code, out, err = tokens("create", "--role", "viewer", "--name", "dash")
    assert code == 0 and out.startswith("ndt_") and out.count("\n") == 1
    made = out.strip()
    assert "shown only now" in err and made not in err
    assert tokens("create", "--role", "viewer", "--name", "dash")[:2] == (1, "")
    assert tokens("create", "--role", "boss", "--name", "x")[0] == 2
    assert tokens("create", "--role", "admin", "--name", "bad name")[0] == 2

    code, out, _ = tokens("list")
    assert code == 0 and made not in out and out.splitlines()[0].split() == ["NAME", "ROLE", "CREATED", "LAST", "USED"]
    assert out.splitlines()[1].split()[:2] == ["dash", "viewer"] and out.splitlines()[1].endswith("never")
    code, out, _ = tokens("list", "--json")
    assert code == 0 and made not in out and '"name": "dash"' in out and digest(made) not in out

    assert tokens("revoke", "dash")[0] == 0
    code, _, err = tokens("revoke", "dash")
    assert code == 1 and err.startswith("NotFoundError: no token named 'dash'")
    assert "(no tokens" in tokens("list")[1]
    result = runner.invoke(cli.main, ["tokens", "list", "--data-dir", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "is not a directory" in result.stderr
