"""``make demo``: the whole path on one machine, with real processes.

Builds the example wheels, starts a server on the embedded SQLite default and
two workers, uploads the package, adds the job scripts through the real
``netdist-admin``, waits until every handler finishes, prints the results and
stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from netdist.channel import ClientSecurity
from netdist.server.certs import TLSFiles
from netdist.testing import (
    Admin,
    Process,
    ServerProcess,
    build_wheel,
    start_server,
    start_worker,
    tls_args,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def admin(address: str, data_dir: Path, *args: str, security: ClientSecurity | None = None) -> None:
    """Run the real CLI, so the demo shows what an operator types (next to the server: its admin.token)."""
    print(f"$ netdist-admin {' '.join(args)}", flush=True)
    env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "150"), "NETDIST_DATA_DIR": str(data_dir)}
    subprocess.run(
        [sys.executable, "-m", "netdist.adminctl", "--server", address, *tls_args(security), *args], check=True, env=env
    )


def make_certificates(data_dir: Path, clients: list[str]) -> dict[str, ClientSecurity]:
    """``netdist-server tls init`` and a client certificate each (the demo's --tls: mutual TLS)."""
    commands = [["init", "--host", "localhost"], *(["client", "--name", name] for name in clients)]
    for command in commands:
        print(f"$ netdist-server tls {' '.join(command)}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "netdist.server", "tls", *command, "--data-dir", str(data_dir)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    files = TLSFiles.of(data_dir)
    return {
        name: ClientSecurity(tls_ca=files.ca_cert, tls_cert=files.client_cert(name), tls_key=files.client_key(name))
        for name in clients
    }


def start(args: argparse.Namespace, data_dir: Path) -> tuple[ServerProcess, dict[str, ClientSecurity]]:
    """The server (over mutual TLS with --tls), and what each client presents."""
    tls: dict[str, ClientSecurity] = {}
    if args.tls:
        tls = make_certificates(data_dir, ["worker-1", "worker-2", "admin"])
        files = TLSFiles.of(data_dir)
        server = start_server(
            data_dir,
            log_dir=args.dir / "logs",
            tls_cert=files.server_cert,
            tls_key=files.server_key,
            tls_client_ca=files.ca_cert,
        )
    else:
        server = start_server(data_dir, log_dir=args.dir / "logs")
    print(f"server listening on {server.address} (SQLite in {data_dir}{', mutual TLS' if args.tls else ''})")
    print(
        f"its first tokens are in {data_dir}: netdist-admin finds admin.token there with "
        f"NETDIST_DATA_DIR={data_dir}, workers get --token-file {data_dir / 'worker.token'}"
    )
    return server, tls


def wait_for_results(address: str, security: ClientSecurity | None, timeout: float, started: float) -> None:
    client = Admin(address, security=security)
    try:

        def all_finished() -> bool:
            handlers = client.handlers()
            failed = [h for h in handlers if h.state == "failed"]
            if failed:
                raise RuntimeError(f"handler {failed[0].job_name} failed: {failed[0].message}")
            return bool(handlers) and all(h.state == "finished" for h in handlers)

        wait_until(all_finished, timeout, interval=0.5, what="the handlers to finish")
        print(f"\nall handlers finished in {time.monotonic() - started:.1f} s\n")
        for h in client.handlers():
            print(f"  {h.job_name}: {h.result_summary}")
        print()
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=ROOT / "demo-data", help="where the demo keeps its files")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--tls", action="store_true", help="run over mutual TLS, with certificates made by tls init")
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    wheels = [build_wheel(EXAMPLES / name, args.dir / "wheels") for name in ("primes", "primality")]
    print(f"built {', '.join(w.name for w in wheels)}")
    data_dir = args.dir / "netdist-data"
    server, tls = start(args, data_dir)
    ops = tls.get("admin")
    processes: list[Process] = [server]
    started = time.monotonic()
    try:
        for name in ("worker-1", "worker-2"):
            processes.append(
                start_worker(
                    server.address,
                    name=name,
                    slots=1,
                    log_dir=args.dir / "logs",
                    cache_dir=args.dir / "cache" / name,
                    security=tls.get(name),
                )
            )
        admin(server.address, data_dir, "upload-package", *map(str, wheels), security=ops)
        for script in sorted((EXAMPLES / "jobs").glob("*.py")):
            admin(server.address, data_dir, "jobs", "add", str(script), security=ops)
        wait_for_results(server.address, ops, args.timeout, started)
        admin(server.address, data_dir, "handlers", "list", security=ops)
        admin(server.address, data_dir, "workers", "list", security=ops)
    except BaseException:
        for proc in processes:
            print(f"--- {proc.name} log (tail)\n{proc.output()[-3000:]}", file=sys.stderr)
        raise
    finally:
        codes = {proc.name: proc.stop() for proc in reversed(processes)}
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        print(f"processes exited badly: {bad}", file=sys.stderr)
        return 1
    print("every process stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
