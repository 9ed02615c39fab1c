"""The engine's benchmark: one command, figures and ratios against the targets.

    python bench/engine_bench.py [--threads N] [--quick]

1. `seed` preset: seconds per step at 400 px (measured afresh), and how soon the
   engine (its own optimizer, precision and schedule, on the seed's objective)
   reaches the objective value the seed preset reached after all 3000 steps
   (bench/seed_reference.json, made once by bench/seed_reference.py). The objective
   is evaluated in fp32 with the seed's definition on the delivered 8-bit image;
   evaluation time is not counted. Target: at least 500x sooner.
2. One optimization step at 512x512 against a bare VGG19 forward+backward through
   the same layers in the same precision, same process. Target: within 15%.
3. The default preset at 512x512 (wall time, target <= 60 s) and 1024x1024 (peak
   memory, target <= 4 GiB), each in a fresh process so the peak is its own.

Same images and the same seeded random VGG19 weights throughout (bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import bench_engine, bench_images, machine  # noqa: E402

from stylecore import PRESETS, Preview, Progress, Result, resolve_device, resolve_dtype  # noqa: E402
from stylecore.engine import _Optimizer, _autocast  # noqa: E402
from stylecore.params import CONTENT_LAYER, STYLE_LAYERS  # noqa: E402

SEED, DEFAULT = PRESETS["seed"], PRESETS["default"]


def line(label: str, value: str, target: str = "") -> None:
    print(f"  {label:<58} {value:>18}  {target}", flush=True)


def seed_vs_engine(engine, quick: bool) -> None:
    ref_file = HERE / "seed_reference.json"
    ref = json.loads(ref_file.read_text()) if ref_file.exists() else {}
    if "final_objective_uint8" not in ref:
        print("1. seed preset: no complete reference run yet; make it once with bench/seed_reference.py (~1-2 h)")
        return
    content, style = bench_images(SEED.size)
    # Per-step time of the seed preset, afresh: a few Adam steps after one warm-up.
    n = 2 if quick else 5
    times = []
    for ev in engine.run(content, [style], SEED.replace(steps=n + 1)):
        if isinstance(ev, Progress):
            times.append(ev.elapsed)
    seed_step = (times[-1] - times[0]) / n
    seed_total = seed_step * SEED.steps
    # The seed's own value on its float iterate: the stricter target. (Its delivered
    # 8-bit image scores far worse: the unclamped Adam iterate leaves pixels out of range.)
    target_value = ref["final_objective_float"]["total"]
    print(f"1. seed preset (400 px; reference: {ref['params']['steps']} steps on {ref['machine']})")
    line("seed: seconds per step (fp32, measured now)", f"{seed_step:.3f} s")
    line(f"seed: {SEED.steps} steps at that rate", f"{seed_total:.0f} s")
    line("seed: objective after 3000 steps (its float iterate)", f"{target_value:.6g}")
    line("seed: the same, evaluated on its delivered 8-bit image", f"{ref['final_objective_uint8']['total']:.6g}")
    if ref["params"]["steps"] != SEED.steps:
        line("WARNING: the reference did not run the full seed preset", "")

    # The engine on the seed's objective: its optimizer, precision and schedule.
    params = SEED.replace(
        optimizer=DEFAULT.optimizer, lr=DEFAULT.lr, precision=DEFAULT.precision, clamp=DEFAULT.clamp,
        scales=DEFAULT.scales, min_scale=DEFAULT.min_scale, coarse_steps=DEFAULT.coarse_steps, steps=300,
    )
    check_every = 5
    t0, excluded, reached = time.perf_counter(), 0.0, None
    last = None
    for ev in engine.run(content, [style], params, preview_every=check_every):
        if isinstance(ev, Preview) and ev.scale == len(params.scale_sizes()):
            t_eval = time.perf_counter()
            value = engine.evaluate(content, [style], SEED, ev.image)["total"]
            excluded += time.perf_counter() - t_eval
            last = (ev.step, value)
            if value <= target_value:
                reached = (time.perf_counter() - t0 - excluded, ev.step, value)
                break
    if reached:
        seconds, step, value = reached
        line(f"engine: reached it at final-scale step {step} ({value:.6g})", f"{seconds:.1f} s")
        ratio = seed_total / seconds
        line("engine: times sooner than the seed", f"{ratio:.0f}x", "target >= 500x " + ("MET" if ratio >= 500 else "NOT MET"))
    else:
        line(f"engine: did not reach it in {params.steps} steps (last {last})", "", "NOT MET")


def step_overhead(engine, quick: bool) -> None:
    content, style = bench_images(512)
    content = np.asarray(Image.fromarray(content).resize((512, 512), Image.LANCZOS))
    device = resolve_device(DEFAULT.device)
    dtype = resolve_dtype(DEFAULT.precision, device)
    net = engine.network(device)
    params = DEFAULT.replace(size=512, scales=1)
    scale = engine._scale(net, device, dtype, params, *_split(content, style), [1.0], (512, 512), 1)
    from stylecore import images

    x0 = images.normalize(images.split(content).rgb).to(device)
    opt = _Optimizer(net, scale.objective, x0, params, dtype)
    layers = [*STYLE_LAYERS, CONTENT_LAYER]
    xb = x0.clone().requires_grad_(True)

    def bare():
        with _autocast(device, dtype):
            feats = net(xb.contiguous(memory_format=torch.channels_last), layers, params.pooling)
        sum(f.float().sum() for f in feats.values()).backward()
        xb.grad = None
        _sync(device)

    def ours():
        opt.step()  # reads the loss values: a device sync
        _sync(device)

    bare(), ours()  # warm-up
    n = 2 if quick else 5
    t_bare = t_ours = 0.0
    for _ in range(n):  # interleaved, so machine noise hits both alike
        t = time.perf_counter(); bare(); t_bare += time.perf_counter() - t
        t = time.perf_counter(); ours(); t_ours += time.perf_counter() - t
    t_bare, t_ours = t_bare / n, t_ours / n
    print(f"2. one step at 512x512 on {device} in {str(dtype).removeprefix('torch.')}")
    line("bare VGG19 forward+backward (same layers)", f"{t_bare:.3f} s")
    line("engine optimization step (L-BFGS, full objective)", f"{t_ours:.3f} s")
    over = t_ours / t_bare - 1
    line("engine overhead", f"{over:+.1%}", "target <= 15% " + ("MET" if over <= 0.15 else "NOT MET"))


def _split(content, style):
    from stylecore import images

    return images.split(content, "content"), [images.split(style, "style")]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def default_run(size: int) -> dict:
    """The default preset on a size x size photograph; run in a child process."""
    engine = bench_engine()
    content, style = bench_images(size)
    content = np.asarray(Image.fromarray(content).resize((size, size), Image.LANCZOS))
    t0 = time.perf_counter()
    result = [ev for ev in engine.run(content, [style], DEFAULT.replace(size=size)) if isinstance(ev, Result)][0]
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()
    return {"size": size, "seconds": seconds, "peak_bytes": peak, "losses": result.losses}


def default_preset(threads: int, quick: bool) -> None:
    print(f"3. default preset ({DEFAULT.scales} scales: {DEFAULT.coarse_steps} steps at each coarser one, "
          f"{DEFAULT.steps} at the last)")
    for size in (512,) if quick else (512, 1024):
        out = subprocess.run(
            [sys.executable, __file__, "--child-default", str(size), "--threads", str(threads)],
            capture_output=True, text=True, check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        gib = r["peak_bytes"] / 2**30
        mem_what = "peak GPU memory" if torch.cuda.is_available() else "peak resident memory (whole process)"
        line(f"{size}x{size}: wall time", f"{r['seconds']:.1f} s",
             ("target <= 60 s " + ("MET" if r["seconds"] <= 60 else "NOT MET")) if size == 512 else "")
        line(f"{size}x{size}: {mem_what}", f"{gib:.2f} GiB",
             ("target <= 4 GiB " + ("MET" if gib <= 4 else "NOT MET")) if size == 1024 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 512 only (a smoke test)")
    ap.add_argument("--only", choices=("seed", "overhead", "default"))
    ap.add_argument("--child-default", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child_default:
        print(json.dumps(default_run(args.child_default)))
        return
    print(f"machine: {machine()}")
    engine = bench_engine()
    if args.only in (None, "seed"):
        seed_vs_engine(engine, args.quick)
    if args.only in (None, "overhead"):
        step_overhead(engine, args.quick)
    if args.only in (None, "default"):
        default_preset(args.threads, args.quick)


if __name__ == "__main__":
    main()
