"""The cluster path end to end, on a private one-node Ray cluster: run INSIDE a
network namespace that has only the loopback interface (Ray listens on more than
127.0.0.1 otherwise), as tests/test_cluster.py and bench/cluster_bench.py do:

    unshare -n sh -c 'ip link set lo up && exec python tests/cluster_scenario.py --weights W'

It starts `style-transfer serve --cluster local --replicas 2 --replica-cpus 1` and,
for comparison, a single server on one thread (`--devices cpu`, OMP_NUM_THREADS=1),
then measures and checks:
  1. the cluster path's overhead for one small job over the single server's;
  2. 8 concurrent small jobs through the front: all complete, positions monotone,
     results byte-identical to a local run (same seed, one thread); then a second
     front (--cluster auto --attach) on the same application: jobs through both;
  3. kill -9 of a replica's process mid-job, N times: every job ends within 30 s,
     each with a result or UNAVAILABLE (never anything else), at most one such per kill;
  4. cancel: with both replicas busy and a job queued, cancelling one running job
     lets the queued one start (time reported, and one step's time beside it);
  5. the memory (proportional set size) of the front and Ray at idle.
Prints one JSON object as its last line. Bounded: every wait has a deadline, every
process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from clients import fan_out
from serve_process import ServeProcess
from stylecore import Engine, Progress, Result, Started, preset
from styleserver.client import Client, RemoteError
from styleserver.weights import load
from styletransfer.v1.wire import Queued

RAY = str(Path(sys.executable).with_name("ray"))
SMALL = preset("default").replace(size=64, scales=1, steps=5, init="noise", seed=7)


def images() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from skimage import data

    def photo(name, longest):
        img = Image.fromarray(getattr(data, name)())
        k = longest / max(img.size)
        return np.asarray(img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.LANCZOS))

    return photo("coffee", 64), photo("immunohistochemistry", 64)


class Server(ServeProcess):
    """A server in its own process group, whose stop also ends what Ray left behind."""

    def __init__(self, *args: str, env: dict | None = None):
        super().__init__(*args, env=env, new_session=True)

    def replica_pids(self) -> list[int]:
        """Replica pids in the order jobs were put on them (from 'job X: on replica R (pid P)')."""
        return [int(line.rsplit("(pid ", 1)[1].rstrip(")")) for line in list(self.log) if "on replica" in line]

    def stop(self, kill_children: bool = True) -> int:
        pids = self.tree() if kill_children else [self.proc.pid]
        status = super().stop(wait=60)
        for pid in pids[1:]:  # whatever Ray left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return status


def one_job(address: str, content, style, params=SMALL) -> tuple[list, float]:
    t0 = time.perf_counter()
    with Client(address) as c:
        events = list(c.stylize(content, [style], params))
    return events, time.perf_counter() - t0


def replicas_running(address: str) -> int:
    with Client(address) as c:
        text = c.info()["device"]  # "ray cluster, N ... replicas"
    return int(text.split(",")[1].split()[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="runs of the small job on each path (overhead)")
    args = ap.parse_args()
    out: dict = {"errors": []}
    content, style = images()
    torch.set_num_threads(1)  # the reference run: one thread, as each replica
    reference = [e for e in Engine(load(args.weights, download=False).model).run(content, [style], SMALL)][-1].image

    front = Server("--cluster", "local", "--replicas", "2", "--replica-cpus", "1", "--ray-cpus", "2",
                   "--weights", args.weights)
    single = Server("--devices", "cpu", "--weights", args.weights, env={"OMP_NUM_THREADS": "1"})
    try:
        out["front_ready_s"] = round(front.wait_serving(300), 1)
        single.wait_serving(120)
        time.sleep(2)  # let start-up settle before measuring memory
        out["idle_pss_mb"] = round(front.pss_mb())

        # 1. overhead of the cluster path for one small job
        one_job(front.address, content, style), one_job(single.address, content, style)  # warm-up
        times = {"cluster": [], "single": []}
        for _ in range(args.repeats):
            for path, server in (("cluster", front), ("single", single)):
                events, seconds = one_job(server.address, content, style)
                assert isinstance(events[-1], Result), events[-1]
                times[path].append(seconds)
        out["small_job_s"] = {k: round(statistics.median(v), 3) for k, v in times.items()}
        out["overhead_s"] = round(statistics.median(times["cluster"]) - statistics.median(times["single"]), 3)

        # 2. concurrent jobs, byte-identical to the local run
        results: list[list] = [[] for _ in range(args.jobs)]

        def run(i):
            try:
                with Client(front.address) as c:
                    results[i].extend(c.stylize(content, [style], SMALL))
            except Exception as e:  # noqa: BLE001
                results[i].append(e)

        t0 = time.perf_counter()
        fan_out(run, args.jobs, 180)
        out["concurrent_s"] = round(time.perf_counter() - t0, 2)
        finals = [r[-1] if r else None for r in results]
        out["concurrent_complete"] = sum(isinstance(f, Result) for f in finals)
        out["concurrent_identical"] = sum(isinstance(f, Result) and np.array_equal(f.image, reference)
                                          for f in finals)
        monotone = True
        for r in results:
            positions = [e.position for e in r if isinstance(e, Queued)]
            monotone &= positions == sorted(positions, reverse=True)
        out["positions_monotone"] = monotone
        out["queued_jobs"] = sum(any(isinstance(e, Queued) for e in r) for r in results)
        out["replicas_used"] = len({next((e.device for e in r if isinstance(e, Started)), None) for r in results})

        # 2b. a second, stateless front attached to the same application
        second = Server("--cluster", "auto", "--attach", "--weights", args.weights)
        try:
            second.wait_serving(120)
            both: list = []

            def via(address):
                both.append(one_job(address, content, style)[0][-1])

            for e in fan_out(via, (front.address, second.address) * 2, 120):
                if isinstance(e, BaseException):
                    print(f"second front: {type(e).__name__}: {e}", file=sys.stderr)
            out["second_front_results"] = sum(isinstance(r, Result) and np.array_equal(r.image, reference)
                                              for r in both)
            out["second_front_attached"] = any("using the style-transfer application" in line for line in second.log)
        finally:
            second.stop(kill_children=False)  # its Ray worker processes belong to the cluster

        # 3. kill -9 a replica mid-job
        kills = []
        for round_ in range(args.kills):
            deadline = time.monotonic() + 90
            while replicas_running(front.address) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("the killed replica was not replaced within 90 s")
                time.sleep(0.5)
            long = SMALL.replace(steps=60)
            seen_pids = len(front.replica_pids())
            ends: list = [None] * 3
            progressed = threading.Event()

            def job(i):
                try:
                    with Client(front.address) as c:
                        for e in c.stylize(content, [style], long):
                            if isinstance(e, Progress):
                                progressed.set()
                            last = e
                    ends[i] = ("result" if isinstance(last, Result) else type(last).__name__, time.monotonic())
                except RemoteError as e:
                    ends[i] = (e.code.name, time.monotonic(), e.details)
                except Exception as e:  # noqa: BLE001
                    ends[i] = (type(e).__name__, time.monotonic(), str(e))

            jobs = [threading.Thread(target=job, args=(i,)) for i in range(3)]
            for t in jobs:
                t.start()
            if not progressed.wait(60):
                raise RuntimeError("no job made progress within 60 s")
            # The front's log is read by a thread: the line naming the job's replica may
            # arrive after the job's first Progress on a loaded machine.
            deadline = time.monotonic() + 30
            while len(front.replica_pids()) <= seen_pids:
                if time.monotonic() > deadline:
                    raise RuntimeError("no job was logged on a replica within 30 s of its progress")
                time.sleep(0.05)
            victim = front.replica_pids()[seen_pids]
            os.kill(victim, signal.SIGKILL)
            t_kill = time.monotonic()
            for t in jobs:
                t.join(max(0.0, t_kill + 30 - time.monotonic()))
            hung = sum(t.is_alive() for t in jobs)
            outcomes = [e[0] if e else "hung" for e in ends]
            latest = max((e[1] - t_kill for e in ends if e), default=None)
            kills.append(dict(pid=victim, outcomes=outcomes, hung=hung,
                              last_end_after_kill_s=round(latest, 2) if latest is not None else None,
                              details=[e[2] for e in ends if e and len(e) > 2]))
            for t in jobs:
                t.join(120)
        out["kills"] = kills
        out["retried"] = sum("retrying on another" in line for line in front.log)

        # 4. cancel frees a replica
        deadline = time.monotonic() + 90
        while replicas_running(front.address) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        forever = SMALL.replace(steps=100_000)
        streams = [Client(front.address).stylize(content, [style], forever) for _ in range(2)]
        step_times = []
        for s in streams:
            first = next(e for e in s if isinstance(e, Progress))
            second = next(e for e in s if isinstance(e, Progress))
            step_times.append(second.elapsed - first.elapsed)
        waited: list = []
        started_at = [None]

        def queued_job():
            with Client(front.address) as c:
                for e in c.stylize(content, [style], SMALL):
                    waited.append(e)
                    if isinstance(e, Started) and started_at[0] is None:
                        started_at[0] = time.monotonic()

        waiter = threading.Thread(target=queued_job)
        waiter.start()
        deadline = time.monotonic() + 30
        while not any(isinstance(e, Queued) for e in waited) and time.monotonic() < deadline:
            time.sleep(0.01)
        out["cancel_queued_first"] = bool(waited) and isinstance(waited[0], Queued)
        t_cancel = time.monotonic()
        streams[0].close()
        waiter.join(60)
        out["cancel_to_next_start_s"] = round(started_at[0] - t_cancel, 3) if started_at[0] else None
        out["step_s"] = round(statistics.median(step_times), 3)
        out["cancel_next_completed"] = bool(waited) and isinstance(waited[-1], Result)
        streams[1].close()
        time.sleep(1)
        out["front_log_tail"] = front.log[-5:]
    except Exception as e:  # noqa: BLE001 - reported in the JSON, the test fails on it
        out["errors"].append(f"{type(e).__name__}: {e}")
        out["front_log_tail"] = front.log[-40:]
    finally:
        single.stop()
        t0 = time.monotonic()
        front.stop()
        out["front_stop_s"] = round(time.monotonic() - t0, 1)
        out["front_exit"] = front.proc.returncode
        subprocess.run([RAY, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
