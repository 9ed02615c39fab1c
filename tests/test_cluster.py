"""The cluster path (serve --cluster) on a private one-node Ray cluster with two CPU
replicas, run by tests/cluster_scenario.py inside a network namespace of its own
that has only the loopback interface (`unshare -n`): Ray listens on more than
127.0.0.1, so it must never run in the machine's own namespace here.

Runs in CI (.ci/run installs the `cluster` extra); elsewhere it skips, with the
reason, without Ray or without the right to make a namespace. About 70 s."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
KILLS = 5


def _unavailable_reason() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "Ray Serve is not installed: pip install -e '.[cluster]'"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot make a network namespace here (unshare -n: {probe.stderr.strip() or probe.returncode})"
    return None


@pytest.fixture(scope="module")
def scenario(weights_file):
    reason = _unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the cluster test must run in CI: {reason}")
        pytest.skip(reason)
    command = f"ip link set lo up && exec {sys.executable} {HERE / 'cluster_scenario.py'} " \
              f"--weights {weights_file} --kills {KILLS} --repeats 3"
    done = subprocess.run(["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, timeout=540)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert not result["errors"], json.dumps(result, indent=1)
    return result


def test_concurrent_jobs_complete_byte_identical_to_a_local_run(scenario):
    assert scenario["concurrent_complete"] == 8
    assert scenario["concurrent_identical"] == 8  # same seed, one thread: the same bytes as the local engine
    assert scenario["positions_monotone"] and scenario["queued_jobs"] >= 1
    assert scenario["replicas_used"] == 2


def test_a_second_front_attaches_to_the_same_replicas(scenario):
    assert scenario["second_front_attached"]
    assert scenario["second_front_results"] == 4  # two jobs through each front, all byte-identical


def test_killed_replicas_retry_or_unavailable_never_hang(scenario):
    assert len(scenario["kills"]) == KILLS
    for kill in scenario["kills"]:
        assert kill["hung"] == 0, kill
        assert kill["last_end_after_kill_s"] < 30, kill
        assert all(o in ("result", "UNAVAILABLE") for o in kill["outcomes"]), kill
        assert kill["outcomes"].count("UNAVAILABLE") <= 1, kill  # only the job on the killed replica
        assert all("died" in d for d in kill["details"]), kill
    affected = sum(k["outcomes"].count("UNAVAILABLE") for k in scenario["kills"]) + scenario["retried"]
    assert affected >= KILLS  # each kill hit a running job: retried, or ended UNAVAILABLE


def test_cancel_frees_a_replica_for_the_queued_job(scenario):
    assert scenario["cancel_queued_first"] and scenario["cancel_next_completed"]
    # within one step (40 ms here) plus Ray's hand-over (0.15-0.35 s in the probe)
    assert scenario["cancel_to_next_start_s"] < 2 * scenario["step_s"] + 1.0, scenario


def test_cluster_overhead_and_clean_exit(scenario):
    assert scenario["overhead_s"] < 1.0  # one small job, cluster path over the single server
    assert scenario["front_exit"] == 0
