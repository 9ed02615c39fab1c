"""The quasi-Newton step cap (docs/optimizer.md, "A step no longer than the box"):
the delivered objective with and without it.

    .venv/bin/python bench/step_bench.py [--only windows|pairs] [--caps none,0.45] [--precision auto]

1. windows: the first frame of the sequence bench's clip (bench/sequence_bench.py:
   coffee with the chelsea patch) seen through windows of 256x144 ... 576x324, the
   `default` preset at the window's size, style the immunohistochemistry slide. The
   320x180 window is the one that bounced to its end without the cap (2.3e4 where its
   neighbours delivered 50-250, bf16 on a Zen 4 EPYC).
2. pairs: six content x style pairs at 512 px (longest side), the `default` preset,
   and the geometric mean of their delivered objectives.

Each run's delivered 8-bit image is scored in fp32 (Engine.evaluate), whatever
precision it ran in; `--caps` lists the values of stylecore.optimize.MAX_STEP_RMS to
compare (a fraction of the pixel range; none: no cap). Seeded random VGG19 weights
(bench/common.py): the figures measure the optimizer, not beauty.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sequence_bench  # noqa: E402
from common import bench_engine, fit, machine  # noqa: E402

import stylecore.optimize  # noqa: E402
from stylecore import preset  # noqa: E402

WINDOWS = [(256, 144), (320, 180), (384, 216), (448, 252), (576, 324)]
PAIRS = [("coffee", "immunohistochemistry"), ("astronaut", "hubble_deep_field"),
         ("chelsea", "immunohistochemistry"), ("rocket", "immunohistochemistry"),
         ("rocket", "hubble_deep_field"), ("coffee", "hubble_deep_field")]


def delivered(engine, content: np.ndarray, style: np.ndarray, params) -> float:
    *_, result = engine.run(content, [style], params)
    return engine.evaluate(content, [style], params, result.image)["total"]


def windows(engine, precision: str) -> list[float]:
    style = sequence_bench.style_image()
    out = []
    for w, h in WINDOWS:
        frames, _ = sequence_bench.clip(1, size=(w, h))
        out.append(delivered(engine, frames[0], style, preset("default").replace(size=w, precision=precision)))
    return out


def pairs(engine, precision: str) -> list[float]:
    from skimage import data

    def rgb(name: str) -> np.ndarray:
        img = getattr(data, name)()
        return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]

    params = preset("default").replace(size=512, precision=precision)
    return [delivered(engine, fit(rgb(c), 512), rgb(s), params) for c, s in PAIRS]


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


PARTS = {"windows": windows, "pairs": pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=tuple(PARTS))
    ap.add_argument("--caps", default=f"none,{stylecore.optimize.MAX_STEP_RMS}",
                    help="comma-separated MAX_STEP_RMS values to compare (none: no cap)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    args = ap.parse_args()
    caps = [None if c == "none" else float(c) for c in args.caps.split(",")]
    print(f"machine: {machine()}")
    engine = bench_engine()
    for part, labels in (("windows", [f"{w}x{h}" for w, h in WINDOWS]),
                         ("pairs", [f"{c} x {s}" for c, s in PAIRS])):
        if args.only not in (None, part):
            continue
        print(f"{part}: delivered objective (fp32, 8-bit image), preset default, precision {args.precision}")
        print(f"  {'':<40}" + "".join(f"{'cap ' + str(c):>14}" for c in caps))
        rows = []
        for cap in caps:
            stylecore.optimize.MAX_STEP_RMS = cap
            t0 = time.perf_counter()
            rows.append(PARTS[part](engine, args.precision))
            print(f"  (cap {cap}: {time.perf_counter() - t0:.0f} s)", flush=True)
        for i, label in enumerate(labels):
            print(f"  {label:<40}" + "".join(f"{r[i]:>14.4g}" for r in rows))
        print(f"  {'geometric mean':<40}" + "".join(f"{geomean(r):>14.4g}" for r in rows), flush=True)


if __name__ == "__main__":
    main()
