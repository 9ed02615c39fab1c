"""The gRPC service's benchmark: what the wire adds.

    python bench/grpc_bench.py [--threads N]

1. A 4096x4096 RGBA image round trip: the same tiny job (32 px, 1 step; the
   result is upscaled back to 4096x4096 with its alpha) run in process and through
   the service on loopback. The difference is the transfer overhead. Target < 1 s.
2. Streaming progress and previews: one job (192 px, 20 steps) in process with no
   events consumed, and through the service with Progress every step and a Preview
   every step. Target: under 3% more job time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import bench_engine, bench_images, machine  # noqa: E402

from stylecore import PRESETS, Result  # noqa: E402
from styleserver.client import Client  # noqa: E402
from styleserver.service.server import start  # noqa: E402
from styleserver.service.model import Model  # noqa: E402


def line(label: str, value: str, target: str = "") -> None:
    print(f"  {label:<58} {value:>12}  {target}", flush=True)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    engine = bench_engine()
    model = Model()
    model.set(engine, "random", "", False, "cpu", "float32")
    running = start(model, port=0)
    running.set_serving(True)
    client = Client(f"127.0.0.1:{running.port}")
    _, style = bench_images()

    big = np.random.default_rng(0).integers(0, 256, (4096, 4096, 4), dtype=np.uint8)
    tiny = PRESETS["default"].replace(size=32, scales=1, steps=1)

    def local():
        out = [e for e in engine.run(big, [style], tiny) if isinstance(e, Result)][0]
        assert out.image.shape == big.shape

    def remote():
        out = [e for e in client.stylize(big, [style], tiny) if isinstance(e, Result)][0]
        assert np.array_equal(out.image[:, :, 3], big[:, :, 3])

    copy = timed(lambda: big.copy(), args.repeats)
    local(), remote()  # warm-up
    t_local, t_remote = timed(local, args.repeats), timed(remote, args.repeats)
    print("1. 4096x4096 RGBA (64 MiB) round trip")
    line("plain in-process copy of the image", f"{copy * 1000:.0f} ms")
    line("tiny job in process", f"{t_local:.2f} s")
    line("same job through the service (loopback, 1 MiB chunks)", f"{t_remote:.2f} s")
    over = t_remote - t_local
    line("transfer overhead", f"{over:.2f} s", "target < 1 s " + ("MET" if over < 1 else "NOT MET"))

    content, style = bench_images(192)
    job = PRESETS["default"].replace(size=192, scales=1, steps=20)

    def quiet():
        for _ in engine.run(content, [style], job):
            pass

    def streamed():
        for _ in client.stylize(content, [style], job, preview_every=1):
            pass

    quiet(), streamed()
    t_quiet, t_streamed = timed(quiet, args.repeats), timed(streamed, args.repeats)
    print("2. progress and previews (192 px, 20 steps)")
    line("in process, no events consumed", f"{t_quiet:.2f} s")
    line("through the service, progress + a preview every step", f"{t_streamed:.2f} s")
    ratio = t_streamed / t_quiet - 1
    line("streaming overhead", f"{ratio:+.1%}", "target < 3% " + ("MET" if ratio < 0.03 else "NOT MET"))
    client.close()
    running.shutdown(0)


if __name__ == "__main__":
    main()
