"""A Ray instance on this machine for the distributed tests: started here, kept until stdin closes.

Prints one JSON line with the cluster's address once it is up. Two CPUs (two worker processes),
no dashboard, a small object store. Closing stdin shuts the instance down cleanly.
"""

from __future__ import annotations

import json
import sys

import ray


def main() -> None:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 2**20,
    )
    print(json.dumps({"address": ray.get_runtime_context().gcs_address}), flush=True)
    sys.stdin.read()
    ray.shutdown()


if __name__ == "__main__":
    main()
