"""Several workers behind one queue (serve --devices): throughput of 8 concurrent
small jobs against real `style-transfer serve` processes on 127.0.0.1.

    python bench/devices_bench.py [--jobs 8] [--size 128] [--steps 10] [--repeats 2]

Configurations (each a fresh server process, the clients in this process):
  one worker, 1 thread      --devices cpu with OMP_NUM_THREADS=1
  one worker, all threads   --devices cpu:1
  N workers                 --devices cpu:N (N = the cores, threads divided)
Target (issue 11): cpu:2 on 2 cores at least 1.6x the one-thread worker's
throughput, every job completed, every job's queue positions monotone.

The machine may be shared: the script reports the CPU time other processes took
during each run (from /proc/stat), so a figure taken beside other work says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the server process the tests start, the same way
from common import bench_images, machine  # noqa: E402
from clients import fan_out  # noqa: E402
from serve_process import HOST, ServeProcess  # noqa: E402

from stylecore import Result, Started, preset, random_state_dict  # noqa: E402
from styleserver.client import Client  # noqa: E402
from styleserver.service.devices import cpu_cores  # noqa: E402
from styletransfer.v1.wire import Queued  # noqa: E402



def machine_busy_seconds() -> float:
    """CPU seconds all processes have used (user+nice+system+irq+softirq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def run_jobs(address: str, n: int, content, style, params) -> tuple[float, list[list]]:
    results: list[list] = [[] for _ in range(n)]

    def one(i):
        with Client(address) as c:
            results[i].extend(c.stylize(content, [style], params))

    t0 = time.perf_counter()
    for i, outcome in enumerate(fan_out(one, n, 600)):
        if isinstance(outcome, BaseException):
            print(f"job {i}: {type(outcome).__name__}: {outcome}", file=sys.stderr)
    return time.perf_counter() - t0, results


def check(results: list[list]) -> tuple[bool, bool, list[str]]:
    complete = all(r and isinstance(r[-1], Result) for r in results)
    monotone = True
    for r in results:
        positions = [e.position for e in r if isinstance(e, Queued)]
        monotone &= positions == sorted(positions, reverse=True) and (not positions or positions[-1] == 1)
    used = sorted({next((e.device for e in r if isinstance(e, Started)), "?") for r in results})
    return complete, monotone, used


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    cores = cpu_cores()
    content, style = bench_images(args.size)
    style = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(style).resize((args.size, args.size)))
    params = preset("default").replace(size=args.size, scales=1, steps=args.steps)
    print(f"machine: {machine()}")
    print(f"{args.jobs} concurrent jobs, {content.shape[1]}x{content.shape[0]}, 1 scale x {args.steps} L-BFGS steps; "
          f"best of {args.repeats} runs; servers on {HOST}")
    configs = [
        ("one worker, 1 thread", "cpu", {"OMP_NUM_THREADS": "1"}),
        (f"one worker, {cores} threads", "cpu:1", {}),
        (f"{cores} workers, 1 thread each", f"cpu:{cores}", {}),
    ]
    rates = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "vgg19-random.pth")
        torch.save(random_state_dict(0), weights)
        for label, devices, env in configs:
            server = ServeProcess.serving(weights, "--devices", devices, "--max-queue", "64", env=env, wait=120)
            try:
                run_jobs(server.address, 1, content, style, params)  # warm-up: first-call costs
                walls, others = [], []
                for _ in range(args.repeats):
                    busy0, mine0, srv0 = machine_busy_seconds(), own_cpu_seconds(), server.cpu_seconds()
                    wall, results = run_jobs(server.address, args.jobs, content, style, params)
                    other = (machine_busy_seconds() - busy0) - (own_cpu_seconds() - mine0) - \
                        (server.cpu_seconds() - srv0)
                    complete, monotone, used = check(results)
                    ok &= complete and monotone
                    walls.append(wall)
                    others.append(max(0.0, other) / wall)
                wall = min(walls)
                rates[devices] = args.jobs / wall
                print(f"  --devices {devices:<6} {label:<28} {wall:6.2f} s  {rates[devices]:5.2f} jobs/s  "
                      f"complete={complete} positions monotone={monotone} workers={','.join(used)}  "
                      f"(other processes: {statistics.mean(others):.0%} of a core)", flush=True)
            finally:
                server.stop()
    many = f"cpu:{cores}"
    vs_one = rates[many] / rates["cpu"]
    vs_all = rates[many] / rates["cpu:1"]
    print(f"--devices {many} against one worker on 1 thread: {vs_one:.2f}x (target >= 1.6x: "
          f"{'met' if vs_one >= 1.6 else 'NOT met'})")
    print(f"--devices {many} against one worker on {cores} threads: {vs_all:.2f}x")
    print("all jobs complete, positions monotone" if ok else "SOME JOBS FAILED OR POSITIONS WERE NOT MONOTONE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
