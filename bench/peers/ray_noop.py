"""Ray's side of ``make bench-peers``: no-op tasks on a local Ray with N worker processes (num_cpus=N).

Throughput submits every task and waits for all results (``ray.get`` of the list); the round trip is
``ray.get(noop.remote(None))``, one at a time.
"""

from __future__ import annotations

import ray
from peer_common import measure, parse_args, report


@ray.remote
def noop(x: object) -> object:
    return x


def main() -> None:
    args = parse_args(__doc__ or "")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        result = measure(
            args,
            run_batch=lambda n: ray.get([noop.remote({"i": i}) for i in range(n)], timeout=args.timeout),
            round_trip=lambda: ray.get(noop.remote(None), timeout=args.timeout),
        )
        result["version"] = ray.__version__
        report(result)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
