"""Start-up and the default job from the command line, this tree against a baseline (issue 23).

    git worktree add /tmp/baseline <previous main>
    .venv/bin/python bench/speed_bench.py --baseline /tmp/baseline [--repeat 5]

Both trees run the same way: `style-transfer stylize` in a fresh process, its import
names (stylecore, styleserver, styletransfer, stylegimp) taken from that tree (a
folder of links on PYTHONPATH, ahead of this checkout's editable install), the same
Python and packages, on the same files, interleaved (baseline, this tree, baseline,
...) so that a shared machine's drift hits both alike; the median counts.

Weights: a seeded random VGG19 in torchvision's full format (548 MB, like the real
vgg19-dcbb9e9d.pth; ImageNet weights cannot be downloaded here), written once. Each
tree has run once before timing starts (the page cache holds the file, and this
tree's features-only cache exists: what every run after a user's first one sees).

1. Start-up: a 32 px, one-scale, one-step job (scikit-image's astronaut after the
   Hubble deep field). Target: at most 0.5x the baseline.
2. The default preset at 512 px, the same images. Target: at most 0.7x the baseline.
3. `serve`: seconds from the process start until the health service answers SERVING
   (reported; the same start-up, in the server).
4. The start-up job sent with --server to a warm `serve` of this tree (reported: the
   client imports no torch and loads no network).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402

from stylecore import random_state_dict  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "speed_bench"
# The installed import names and the folders they come from in a checkout (pyproject.toml).
PACKAGES = {"stylecore": "stylecore", "styleserver": "server", "styletransfer": "proto/styletransfer",
            "stylegimp": "plugin"}
CLI = "import sys; from styleserver.cli import main; sys.exit(main())"


def line(label: str, value: str, target: str = "") -> None:
    print(f"  {label:<58} {value:>22}  {target}", flush=True)


def shim(tree: Path, name: str) -> Path:
    """A folder of links that makes `tree`'s sources the import names."""
    folder = WORK / f"path-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for package, source in PACKAGES.items():
        link = folder / package
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(tree / source)
    return folder


def files() -> tuple[Path, Path, Path]:
    from skimage import data

    WORK.mkdir(parents=True, exist_ok=True)
    weights, content, style = WORK / "vgg19-random-full.pth", WORK / "astronaut.png", WORK / "hubble.png"
    if not weights.exists():
        torch.save(random_state_dict(0), weights)
    Image.fromarray(data.astronaut()).save(content)
    Image.fromarray(np.ascontiguousarray(data.hubble_deep_field()[:512, :512])).save(style)
    return weights, content, style


def timed(path: Path, args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI, *args], env={**env, "PYTHONPATH": str(path)},
                          capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{path}: style-transfer {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return took


def serve_ready(path: Path, weights: Path, env: dict, then=None) -> float:
    """Seconds from starting `serve` until its health service says SERVING; then(port),
    if given, runs while it serves."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--port", str(port), "--host", "127.0.0.1",
                             "--weights", str(weights)], env={**env, "PYTHONPATH": str(path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = _wait_serving(port, t0)
        if then is not None:
            then(port)
        return ready
    finally:
        proc.terminate()
        proc.wait()


def _wait_serving(port: int, t0: float) -> float:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if True:
        while time.perf_counter() - t0 < 120:
            # A fresh channel per try: one channel backs off (1 s and more) after a refused connection.
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - t0
                except grpc.RpcError:
                    pass
            time.sleep(0.02)
        raise SystemExit("serve did not become ready in 120 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, type=Path, help="a checkout of the previous main (git worktree)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of each job per tree (the median counts)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    weights, content, style = files()
    trees = {"baseline": shim(args.baseline.resolve(), "baseline"), "this tree": shim(ROOT, "this")}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "STYLE_TRANSFER_CACHE": str(WORK / "cache")}
    out = WORK / "out.png"
    jobs = {
        "start-up (32 px, 1 scale, 1 step)": [str(content), str(style), "-o", str(out), "-q", "--weights", str(weights),
                                              "--size", "32", "--scales", "1", "--steps", "1"],
        "default preset, 512 px": [str(content), str(style), "-o", str(out), "-q", "--weights", str(weights)],
    }
    print(f"machine: {machine()}")
    print(f"baseline: {args.baseline} ({subprocess.run(['git', '-C', str(args.baseline), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}); "
          f"this tree: {ROOT}; median of {args.repeat} interleaved runs each")
    for path in trees.values():  # the page cache and this tree's features cache, as after a first run
        timed(path, ["stylize", *jobs["start-up (32 px, 1 scale, 1 step)"]], env)
    targets = {"start-up (32 px, 1 scale, 1 step)": 0.5, "default preset, 512 px": 0.7}
    start_base = 0.0
    for job, cli in jobs.items():
        times: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.repeat):
            for name, path in trees.items():
                times[name].append(timed(path, ["stylize", *cli], env))
        base, new = (statistics.median(times[n]) for n in trees)
        start_base = base if job.startswith("start-up") else start_base
        print(f"{job}:")
        line("baseline (s, each run)", " ".join(f"{t:.2f}" for t in times["baseline"]))
        line("this tree (s, each run)", " ".join(f"{t:.2f}" for t in times["this tree"]))
        ok = new <= targets[job] * base
        line("median: baseline / this tree / ratio", f"{base:.2f} / {new:.2f} / {new / base:.2f}",
             f"target <= {targets[job]} {'PASS' if ok else 'FAIL'}")
    ready = {name: [] for name in trees}
    for _ in range(max(1, args.repeat // 2)):
        for name, path in trees.items():
            ready[name].append(serve_ready(path, weights, env))
    base, new = (statistics.median(ready[n]) for n in trees)
    print("serve, start until SERVING:")
    line("median: baseline / this tree / ratio", f"{base:.2f} / {new:.2f} / {new / base:.2f}", "(reported)")

    # The start-up job sent to a warm server (serve, or the one the GIMP plug-in starts):
    # the client's process imports no torch and loads no network.
    warm: list[float] = []

    def jobs_on(port: int) -> None:
        cli = ["stylize", str(content), str(style), "-o", str(out), "-q", "--server", f"127.0.0.1:{port}",
               "--size", "32", "--scales", "1", "--steps", "1"]
        timed(trees["this tree"], cli, env)  # the server's first job warms it up
        warm.extend(timed(trees["this tree"], cli, env) for _ in range(args.repeat))

    serve_ready(trees["this tree"], weights, env, then=jobs_on)
    print("start-up job through a warm server (this tree, --server):")
    line("each run / median (s) / ratio to the baseline's in-process start-up",
         f"{' '.join(f'{t:.2f}' for t in warm)} / {statistics.median(warm):.2f} / "
         f"{statistics.median(warm) / start_base:.2f}", "(reported)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
