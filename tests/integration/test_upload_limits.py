"""Uploads on a real server: streamed to disk in bounded memory, refused as early as possible, no leftovers."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from netdist.api.v1 import packages_pb2
from netdist.testing import known_token, wait_until, write_wheel
from tests.integration.conftest import Cluster
from tests.support import counter_wheel

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

MIB = 1024 * 1024
CHUNK = 256 * 1024
WHEEL = "junk-1.0-py3-none-any.whl"


def header(filename: str = WHEEL, size: int = MIB) -> packages_pb2.UploadPackageRequest:
    return packages_pb2.UploadPackageRequest(header=packages_pb2.WheelHeader(filename=filename, size=size))


def chunk(data: bytes) -> packages_pb2.UploadPackageRequest:
    return packages_pb2.UploadPackageRequest(chunk=data)


def temp_files(cluster: Cluster) -> list[Path]:
    return [p for p in (cluster.root / "data").rglob(".tmp-*")]


def stored(cluster: Cluster) -> list[Path]:
    return [p for p in (cluster.root / "data" / "blobs").rglob("*") if p.is_file()]


def refusal(cluster: Cluster, requests: Iterator[packages_pb2.UploadPackageRequest]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        cluster.api.packages.Upload(requests, timeout=60)
    return err.value.code(), err.value.details()


def deflated(wheel: Path) -> Path:
    """``wheel`` repacked with every member deflated (write_wheel stores them as they are)."""
    with zipfile.ZipFile(wheel) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return wheel


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    assert found, status
    return int(found.group(1)) * 1024


class Gate:
    """Holds a request stream after its first messages, to show the server answered without the rest."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.passed = False

    def stream(self, *first: packages_pb2.UploadPackageRequest) -> Iterator[packages_pb2.UploadPackageRequest]:
        yield from first
        self.opened.wait(60)
        self.passed = True
        yield chunk(b"PK\x03\x04" + bytes(CHUNK))


def test_a_junk_upload_is_streamed_to_disk_in_bounded_memory_and_cut_off(cluster: Cluster, tmp_path: Path) -> None:
    """The goal: a 1 GB junk upload costs the server under 50 MB. Here it declares 192 MiB (under the
    256 MiB limit), then streams on towards 1 GiB; the server writes it to disk as it comes and cuts it
    off the moment it passes what it declared."""
    cluster.start_server(extra_args=("--max-upload-bytes", "256M"))
    assert cluster.api.upload(counter_wheel(tmp_path)).created  # every code path warm
    pid = cluster.process.popen.pid
    baseline = rss_bytes(pid)
    declared, total = 192 * MIB, 1024 * MIB
    junk = os.urandom(CHUNK)
    sent = [0]
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_bytes(pid))

    def requests() -> Iterator[packages_pb2.UploadPackageRequest]:
        yield header(size=declared)
        yield chunk(b"PK\x03\x04" + junk[4:])
        sent[0] = CHUNK
        while sent[0] < total:
            yield chunk(junk)
            sent[0] += CHUNK

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        code, details = refusal(cluster, requests())
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], rss_bytes(pid, "VmHWM"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert details == f"{WHEEL}: more than the {declared} bytes its header declared; upload cut off"
    assert declared < sent[0] < declared + 64 * MIB  # it stopped at the refusal, far short of 1 GiB
    grown = peak[0] - baseline
    assert grown < 50 * MIB, f"the server grew by {grown / MIB:.1f} MiB receiving {sent[0] / MIB:.0f} MiB"
    wait_until(lambda: not temp_files(cluster), 10, what="the temporary file to be removed")


def test_a_header_over_the_limit_is_refused_before_any_byte_is_read(cluster: Cluster) -> None:
    cluster.start_server(extra_args=("--max-upload-bytes", "512M"))
    gate = Gate()
    try:
        code, details = refusal(cluster, gate.stream(header(size=1024 * MIB)))
        assert not gate.passed  # answered while the stream still held its body back
    finally:
        gate.opened.set()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details == (
        f"{WHEEL}: 1073741824 bytes would bring this upload to 1073741824 bytes, over the limit "
        "of 536870912 (--max-upload-bytes)"
    )
    gate = Gate()  # the second wheel of an upload counts with the first
    try:
        code, details = refusal(
            cluster,
            gate.stream(header(size=300 * MIB), chunk(b"PK\x03\x04"), header("other-1.0-py3-none-any.whl", 300 * MIB)),
        )
    finally:
        gate.opened.set()
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # the first wheel ended short of its declared size
    assert details == f"{WHEEL}: 4 bytes arrived, its header declared {300 * MIB}"
    assert not temp_files(cluster) and stored(cluster) == []


@pytest.mark.parametrize(
    ("first", "code", "message"),
    [
        ((header("evil\x1b[2J-1.0-py3-none-any.whl"),), grpc.StatusCode.INVALID_ARGUMENT, "not a wheel file name"),
        ((header("notes.txt"),), grpc.StatusCode.INVALID_ARGUMENT, "'notes.txt': not a wheel file name"),
        ((header(size=0),), grpc.StatusCode.INVALID_ARGUMENT, f"{WHEEL}: its header declares no size"),
        (
            (header(), chunk(b"MZ\x90\x00 an executable")),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{WHEEL}: not a valid zip archive (it does not start with a zip local-file header)",
        ),
        (
            (header(), chunk(b"P"), chunk(b"K"), chunk(b"\x05\x06")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a valid zip archive",
        ),
        ((chunk(b"PK\x03\x04"),), grpc.StatusCode.INVALID_ARGUMENT, "upload sent bytes before a wheel header"),
        (
            (header(size=10), chunk(b"PK\x03\x04" + bytes(7))),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{WHEEL}: more than the 10 bytes its header declared; upload cut off",
        ),
    ],
    ids=[
        "control-character",
        "not-a-wheel-name",
        "no-size",
        "not-a-zip",
        "not-a-zip-in-bytes",
        "no-header",
        "past-declared",
    ],
)
def test_bad_first_messages_are_refused_at_once(
    cluster: Cluster, first: tuple[packages_pb2.UploadPackageRequest, ...], code: grpc.StatusCode, message: str
) -> None:
    gate = Gate()
    try:
        answer, details = refusal(cluster, gate.stream(*first))
        assert not gate.passed
    finally:
        gate.opened.set()
    assert answer == code and message in details, details
    assert not temp_files(cluster) and stored(cluster) == []


def test_the_store_limit_refuses_an_upload_naming_the_limit_and_the_use(cluster: Cluster, tmp_path: Path) -> None:
    first = counter_wheel(tmp_path, "1.0")
    second = counter_wheel(tmp_path, "2.0")
    limit = first.stat().st_size + second.stat().st_size // 2
    cluster.start_server(extra_args=("--max-store-bytes", str(limit)))
    assert cluster.api.upload(first).created
    with pytest.raises(grpc.RpcError) as err:
        cluster.api.upload(second)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == (
        f"the blob store is full: {first.stat().st_size} bytes in use and 0 held for uploads in progress, "
        f"{second.stat().st_size} more would pass its limit of {limit} bytes (--max-store-bytes)"
    )
    versions = cluster.api.packages.List(packages_pb2.ListPackagesRequest(all_versions=True), timeout=10).packages
    assert [p.version for p in versions] == ["1.0"]
    assert not temp_files(cluster)
    cluster.start_server(extra_args=("--max-store-bytes", str(limit + second.stat().st_size)))
    assert cluster.api.upload(second).created  # room again under a higher limit


def test_a_zip_bomb_is_refused_at_upload_before_anything_is_unpacked(cluster: Cluster, tmp_path: Path) -> None:
    bomb = deflated(
        write_wheel(
            tmp_path / "bomb",
            name="bomb",
            version="1.0",
            files={"bomb/zeros.bin": bytes(64 * MIB)},
            entry_points={"netdist.handlers": {"B": "bomb:B"}},
        )
    )
    assert bomb.stat().st_size < 100_000
    with pytest.raises(grpc.RpcError) as err:
        cluster.api.upload(bomb)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "member 'bomb/zeros.bin': unpacks" in err.value.details()
    assert "(--max-compression-ratio)" in err.value.details()
    assert not temp_files(cluster) and stored(cluster) == []
    assert list((cluster.root / "data" / "envs").iterdir()) == []

    cluster.start_server(extra_args=("--max-unpacked-bytes", "2M"))
    big = write_wheel(
        tmp_path / "big",
        name="big",
        version="1.0",
        files={"big/r.bin": os.urandom(3 * MIB)},
        entry_points={"netdist.handlers": {"B": "big:B"}},
    )
    with pytest.raises(grpc.RpcError) as err:
        cluster.api.upload(big)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit of 2097152 (--max-unpacked-bytes)" in err.value.details()
    assert not temp_files(cluster) and stored(cluster) == []


CLIENT = textwrap.dedent("""
    import sys, time, grpc
    from netdist.api.v1 import packages_pb2, packages_pb2_grpc

    def requests():
        yield packages_pb2.UploadPackageRequest(header=packages_pb2.WheelHeader(filename={wheel!r}, size=100 << 20))
        yield packages_pb2.UploadPackageRequest(chunk=b"PK\\x03\\x04" + bytes(256 * 1024))
        print("sent", flush=True)
        time.sleep(3600)

    stub = packages_pb2_grpc.PackageServiceStub(grpc.insecure_channel(sys.argv[1]))
    stub.Upload(requests(), metadata=[("authorization", "Bearer " + sys.argv[2])])
""")


def test_no_temporary_file_outlives_a_client_that_disappears_mid_upload(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.server is not None
    log = (tmp_path / "client.log").open("wb")
    token = known_token(cluster.server.address)
    assert token is not None
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT.format(wheel=WHEEL), cluster.server.address, token],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        partial = wait_until(lambda: temp_files(cluster), 30, what="the upload to be under way")
        wait_until(lambda: partial[0].stat().st_size >= 4, 30, what="the first bytes on disk")
        client.kill()
    finally:
        client.kill()
        client.wait()
        log.close()
    wait_until(lambda: not temp_files(cluster), 30, what="the server to remove the temporary file")
    assert stored(cluster) == []
    assert cluster.api.upload(counter_wheel(tmp_path)).created  # still serving


def test_a_wheel_read_back_matches_what_was_sent(cluster: Cluster, tmp_path: Path) -> None:
    """Streamed to disk and hashed as written: the stored blob is the wheel, byte for byte."""
    wheel = write_wheel(
        tmp_path / "w",
        name="counter",
        version="3.0",
        files={"counter/__init__.py": "", "counter/blob.bin": os.urandom(3 * MIB)},
        entry_points={"netdist.handlers": {"Counter": "counter:Counter"}},
    )
    reply = cluster.api.upload(wheel)
    fetched = b"".join(
        r.chunk
        for r in cluster.api.packages.Fetch(packages_pb2.FetchRequest(sha256=reply.package.wheel.sha256), timeout=30)
    )
    assert fetched == wheel.read_bytes()
    with zipfile.ZipFile(io.BytesIO(fetched)) as zf:
        assert zf.testzip() is None
