"""The cluster path's figures (issue 11), on a private one-node Ray cluster with two
CPU replicas inside a loopback-only network namespace (Ray listens on more than
127.0.0.1, so it never runs in the machine's own namespace here):

    python bench/cluster_bench.py [--kills 5]

Runs tests/cluster_scenario.py under `unshare -n` (root) and prints: Ray's start-up
and idle memory, the overhead of the cluster path for one small job over a single
server (same run), 8 concurrent jobs (complete, byte-identical to a local run),
kill -9 of a replica mid-job (each job's outcome and when the last ended), and how
soon a cancel lets a queued job start. Needs the `cluster` extra.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402

from stylecore import random_state_dict  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vgg19-random.pth"
        torch.save(random_state_dict(0), weights)
        command = (f"ip link set lo up && exec {sys.executable} {HERE.parent / 'tests' / 'cluster_scenario.py'} "
                   f"--weights {weights} --kills {args.kills} --repeats {args.repeats}")
        done = subprocess.run(["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, timeout=900)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        print(done.stdout[-3000:], done.stderr[-3000:])
        return 1
    r = json.loads(lines[-1])
    if r["errors"]:
        print(json.dumps(r, indent=1))
        return 1
    print(f"front + Ray (head, 2 CPU replicas) ready in {r['front_ready_s']} s; "
          f"idle proportional set size {r['idle_pss_mb']} MB")
    s = r["small_job_s"]
    print(f"one small job (64x43, 5 steps), median of {args.repeats}: cluster {s['cluster']:.3f} s, single server "
          f"{s['single']:.3f} s: overhead {r['overhead_s'] * 1000:+.0f} ms (target <= 1 s: "
          f"{'met' if r['overhead_s'] <= 1 else 'NOT met'})")
    print(f"8 concurrent small jobs: {r['concurrent_complete']}/8 complete, {r['concurrent_identical']}/8 "
          f"byte-identical to a local run, positions monotone: {r['positions_monotone']}, "
          f"{r['queued_jobs']} queued, {r['replicas_used']} replicas used, {r['concurrent_s']} s")
    for i, k in enumerate(r["kills"], 1):
        print(f"kill -9 #{i} (replica pid {k['pid']}): outcomes {', '.join(k['outcomes'])}; last job ended "
              f"{k['last_end_after_kill_s']} s after the kill; hung {k['hung']}")
    print(f"jobs retried on another replica: {r['retried']}")
    print(f"cancel with both replicas busy: the queued job started {r['cancel_to_next_start_s']} s later "
          f"(one step: {r['step_s']} s)")
    print(f"front stopped in {r['front_stop_s']} s, exit status {r['front_exit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
