"""Fault soak: the fault suite's main test, longer — more mentions and more broker-leader kills.

    .venv/bin/python bench/fault_soak.py [--total 300000] [--broker-kills 20] [--rounds 1]

Runs tests/faults/test_cluster_faults.py::test_exact_through_broker_worker_and_replica_kills with
ECOUTE_FAULTS_TOTAL and ECOUTE_FAULTS_BROKER_KILLS set (a 3-node Kafka cluster, ingest, analyzer workers and
API replicas as processes; the broker leading most of mentions.raw SIGKILLed again and again, a worker killed
and one added, an API replica killed) and prints each round's recovery table and its outcome. Every round
must end with exact counts in both API replicas and in kpi.snapshots, as in `make test-faults`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/faults/test_cluster_faults.py::test_exact_through_broker_worker_and_replica_kills"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--total", type=int, default=300_000, help="mentions posted over HTTP at least")
    parser.add_argument("--broker-kills", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    env = {
        **os.environ,
        "ECOUTE_FAULTS_TOTAL": str(args.total),
        "ECOUTE_FAULTS_BROKER_KILLS": str(args.broker_kills),
        # ~350 mentions/s and ~30 s a broker kill: room for both, and for the final count.
        "ECOUTE_FAULTS_TIMEOUT": str(int(600 + args.total / 200 + args.broker_kills * 60)),
    }
    failures = 0
    for round_ in range(1, args.rounds + 1):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q", TEST], cwd=ROOT, env=env, check=False
        )
        failures += result.returncode != 0
        outcome = "exact" if result.returncode == 0 else f"FAILED ({result.returncode})"
        print(f"round {round_}: {outcome} in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
