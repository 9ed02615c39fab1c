"""Full resolution: fidelity of the tiled objective, seams, memory, cost and wall time.

    python bench/fullres_bench.py [--only fidelity|cost|memory|wall] [--threads N]

1. Fidelity: at 1024x1024 and 1536x1024 (where both fit), the `full` preset with
   tiling forced (--tile 512) and whole, same steps and seed, fp32: the delivered
   images' objectives (fp32, seed definition, evaluated afresh) within 3% of each
   other, mean absolute pixel difference at most 3/255; and the seam metric: the
   tiled result's mean gradient magnitude along tile borders against the interior,
   over the same ratio on the same lines of the whole-image result (the photo's own
   edges can run along a border line; the untiled result has them too), within 10%.
   Writes a crop across a tile corner to docs/tile-seam-crop.png.
2. Cost: one evaluation of a 12 MP and of a 24 MP image tile by tile (--max-memory 6,
   each planned in a fresh process as its job would be), per pixel, against a bare
   VGG19 forward+backward at 1024x1024 (whole), per pixel, in the same precision.
   Target: at most 2x.
3. Memory: a 12 MP (4000x3000) and a 24 MP (6000x4000) full-resolution job with
   --max-memory 6, each in a process of its own: peak resident memory (target at
   most 6 GiB, and within 10% of --max-memory). The 24 MP job runs 2 coarse and 3
   final steps (its L-BFGS history is full after 3 steps), to bound the time.
4. Wall time: the 12 MP job with the `full` preset (target on an AMX CPU: 10 min);
   with --only gpu, a 24 MP job with the `full` preset in the device's own memory
   budget (target on a GPU: 60 s).

Same images (scikit-image's astronaut, resized, and the immunohistochemistry slide)
and seeded random VGG19 weights as every benchmark (bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import bare_pass, bench_engine, machine  # noqa: E402

from stylecore import PRESETS, Result, Started, TilePass, images  # noqa: E402
from stylecore.memory import peak_resident_bytes  # noqa: E402

FULL = PRESETS["full"]


def line(label: str, value: str, target: str = "") -> None:
    print(f"  {label:<62} {value:>16}  {target}", flush=True)


def photo(width: int, height: int) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.LANCZOS))


def texture() -> np.ndarray:
    from skimage import data

    return data.immunohistochemistry()


def seam_ratio(image: np.ndarray, core: int) -> float:
    """Mean gradient magnitude on the pixel pairs that straddle a tile border, over the
    mean on the pairs at the same place of the 16 px pooling grid elsewhere (1.0:
    borders look like the interior). The grid matters: max pooling leaves a faint
    16 px periodic pattern in any result, tiled or not, so comparing borders with
    every other pixel pair would measure the pattern, not the tiling."""
    x = image[..., :3].astype(np.float32)
    dx = np.abs(np.diff(x, axis=1)).mean(axis=2)  # (H, W-1): pair (j, j+1) at column j
    dy = np.abs(np.diff(x, axis=0)).mean(axis=2)  # (H-1, W)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        j = np.arange(n)
        phase = j % 16 == (core - 1) % 16
        border = phase & ((j + 1) % core == 0)
        return border, phase & ~border

    bx, cx = split(dx.shape[1])
    by, cy = split(dy.shape[0])
    border = np.concatenate([dx[:, bx].ravel(), dy[by, :].ravel()])
    control = np.concatenate([dx[:, cx].ravel(), dy[cy, :].ravel()])
    return float(border.mean() / control.mean())


def fidelity(engine) -> None:
    print("1. fidelity: tiled (512 px tiles) against whole, the full preset in fp32, same seed")
    style = texture()
    for width, height in ((1024, 1024), (1536, 1024)):
        content = photo(width, height)
        params = FULL.replace(precision="fp32", max_memory=0)
        out = {}
        for name, p in (("whole", params), ("tiled", params.replace(tile=512))):
            t0 = time.perf_counter()
            events = list(engine.run(content, [style], p))
            seconds = time.perf_counter() - t0
            started, result = events[0], events[-1]
            assert isinstance(started, Started) and isinstance(result, Result)
            value = engine.evaluate(content, [style], params, result.image)["total"]
            out[name] = (result.image, value, started.tiles, seconds)
        (a, va, ta, sa), (b, vb, tb, sb) = out["whole"], out["tiled"]
        assert ta[-1] == 0 and tb[-1] == 512, (ta, tb)
        rel = abs(vb - va) / va
        mad = np.abs(a.astype(int) - b.astype(int)).mean()
        ratio, ratio_whole = seam_ratio(b, 512), seam_ratio(a, 512)
        own = ratio / ratio_whole  # what tiling adds: the same lines of the untiled result are the control
        label = f"{width}x{height}"
        line(f"{label}: objective whole / tiled ({sa:.0f} s / {sb:.0f} s)", f"{va:.5g} / {vb:.5g}")
        line(f"{label}: objective difference", f"{rel:.2%}", "target <= 3% " + ("MET" if rel <= 0.03 else "NOT MET"))
        line(f"{label}: mean absolute pixel difference", f"{mad:.2f}/255",
             "target <= 3/255 " + ("MET" if mad <= 3 else "NOT MET"))
        line(f"{label}: tiled result, gradient on tile borders / same grid phase inside", f"{ratio:.3f}")
        line(f"{label}: the same lines of the whole-image result", f"{ratio_whole:.3f}")
        line(f"{label}: seam metric (tiled / whole on those lines)", f"{own:.3f}",
             "target within 10% " + ("MET" if abs(own - 1) <= 0.10 else "NOT MET"))
        if (width, height) == (1536, 1024):
            crop = b[512 - 96:512 + 96, 512 - 96:512 + 96]  # around the corner of four tiles
            Image.fromarray(np.repeat(np.repeat(crop[..., :3], 2, 0), 2, 1)).save(HERE.parent / "docs" /
                                                                                 "tile-seam-crop.png")
            line("crop across a tile corner (2x) written", "docs/tile-seam-crop.png")


def cost_run(width: int, height: int, precision: str) -> dict:
    """One full-size evaluation tile by tile, planned as a fresh full-resolution job
    with --max-memory 6 would plan it, against a bare VGG19 forward+backward at
    1024x1024 (whole), both per pixel, in this (child) process."""
    engine = bench_engine()
    content, style = photo(width, height), texture()
    params = FULL.replace(precision=precision, max_memory=6.0)  # the memory jobs' budget: tiled
    job = engine.prepare(content, [style], params)
    level = job.levels[-1]
    device, dtype, net = job.device, job.dtype, engine.network(job.device)
    xb = torch.randn(1, 3, 1024, 1024, device=device, requires_grad=True)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        bare_pass(net, xb, params.pooling, dtype)
        times.append(time.perf_counter() - t0)
    del xb
    bare = min(times[1:]) / (1024 * 1024)
    objective = engine.objective(job, level)
    x = images.normalize(images.split(content).rgb).to(device).requires_grad_(True)
    evaluation = engine.evaluator(job, objective, core=level.plan.core)(x)
    t0, tiles = time.perf_counter(), 0
    for event in evaluation:
        tiles += isinstance(event, TilePass)
    tiled = (time.perf_counter() - t0) / (width * height)
    return {"bare": bare, "tiled": tiled, "tiles": tiles // 2, "core": level.plan.core,
            "history": level.plan.history, "dtype": str(dtype).removeprefix("torch.")}


def cost(threads: int, precision: str) -> None:
    print("2. cost of one full-size evaluation tile by tile (--max-memory 6, planned as the job plans it), "
          "each in its own process")
    for width, height in ((4000, 3000), (6000, 4000)):
        r = child(["cost", str(width), str(height), precision], threads)
        label = f"{width * height / 1e6:.0f} MP ({r['dtype']}, {r['tiles']} tiles of {r['core']} px, " \
                f"{r['history']} curvature pairs)"
        line(f"{label}: bare VGG19 f+b at 1024x1024 / tiled, s per MP",
             f"{r['bare'] * 1e6:.2f} / {r['tiled'] * 1e6:.2f}")
        ratio = r["tiled"] / r["bare"]
        line(f"{width * height / 1e6:.0f} MP: ratio", f"{ratio:.2f}x", "target <= 2x " + ("MET" if ratio <= 2 else "NOT MET"))


def job_run(width: int, height: int, max_memory: float, coarse_steps: int | None, steps: int | None) -> dict:
    """A full-resolution job in this (child) process: peak resident memory, seconds."""
    engine = bench_engine()
    content, style = photo(width, height), texture()
    params = FULL.replace(max_memory=max_memory)
    if coarse_steps is not None:
        params = params.replace(coarse_steps=coarse_steps, steps=steps)
    t0 = time.perf_counter()
    started, last = None, None
    for event in engine.run(content, [style], params):
        started = started or event
        last = event
    seconds = time.perf_counter() - t0
    peak = peak_resident_bytes()  # not ru_maxrss: that one can include the parent's size at the fork
    return {"seconds": seconds, "peak": peak, "sizes": started.sizes, "tiles": started.tiles,
            "dtype": started.dtype, "total": last.losses["total"]}


def child(args: list[str], threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args, "--threads", str(threads)],
                         capture_output=True, text=True)
    if out.returncode:  # a negative code: killed by that signal (e.g. -9, out of memory)
        raise SystemExit(f"child {' '.join(args)} exited with {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_and_wall(threads: int, only: str | None) -> None:
    budget = 6.0
    runs = []
    if only in (None, "memory", "wall"):
        runs.append(("12 MP (4000x3000), full preset", ["4000", "3000", str(budget)]))
    if only in (None, "memory"):
        runs.append(("24 MP (6000x4000), 2 coarse + 3 final steps", ["6000", "4000", str(budget), "2", "3"]))
    if only == "gpu":  # the GPU target: a whole 24 MP job with the full preset in the device's own budget
        runs = [("24 MP (6000x4000), full preset, default budget", ["6000", "4000", "0"])]
    print("4. a 24 MP job on the device, full preset" if only == "gpu" else
          f"3./4. full-resolution jobs with --max-memory {budget:g}, each in its own process")
    for label, args in runs:
        r = child(args, threads)
        gib = r["peak"] / 2**30
        scales = ", ".join(f"{w}x{h}" + (f" ({t} px tiles)" if t else "") for (h, w), t in zip(r["sizes"], r["tiles"]))
        line(f"{label}: scales", scales)
        line(f"{label}: peak resident memory ({r['dtype']})", f"{gib:.2f} GiB",
             "" if only == "gpu" else
             "target <= 6 GiB, within 10% of --max-memory " + ("MET" if gib <= budget * 1.1 else "NOT MET"))
        target = "(target on a GPU: 60 s)" if only == "gpu" else "(target on an AMX CPU: 10 min)"
        line(f"{label}: wall time", f"{r['seconds'] / 60:.1f} min ({r['seconds']:.0f} s)",
             target if "full preset" in label else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--only", choices=("fidelity", "cost", "memory", "wall", "gpu"))
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child and args.child[0] == "cost":
        print(json.dumps(cost_run(int(args.child[1]), int(args.child[2]), args.child[3])))
        return
    if args.child:
        w, h, mem, *steps = args.child
        coarse, final = (int(steps[0]), int(steps[1])) if steps else (None, None)
        print(json.dumps(job_run(int(w), int(h), float(mem), coarse, final)))
        return
    print(f"machine: {machine()}")
    engine = bench_engine()
    if args.only in (None, "fidelity"):
        fidelity(engine)
    if args.only in (None, "cost"):
        cost(args.threads, args.precision)
    if args.only in (None, "memory", "wall", "gpu"):
        memory_and_wall(args.threads, args.only)


if __name__ == "__main__":
    main()
