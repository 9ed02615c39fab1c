"""Run the `seed` preset (the reference notebook) for its full 3000 steps, once.

The photo goes in at its own size (600x400) and the preset resizes it as the
notebook does, so the run works at 600x400: about 50 minutes on a 2-core CPU with
AVX512. Writes bench/seed_reference.json (the objective every 50 steps and at the
end, with the settings) and bench/seed_reference.png (the result), which
bench/engine_bench.py reads. Progress goes to seed_reference.partial.json as it
goes; the reference is replaced only by a complete run.

    python bench/seed_reference.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WEIGHTS_SEED, bench_engine, bench_images, machine  # noqa: E402

from stylecore import PRESETS, Progress, Result, Started  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=PRESETS["seed"].steps)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = PRESETS["seed"].replace(steps=args.steps)
    content, style = bench_images(None)  # the seed preset resizes them itself
    engine = bench_engine()
    record = {
        "what": "seed preset, full run, objective in fp32 (seed definition)",
        "params": params.to_dict(),
        "weights": f"random_state_dict(seed={WEIGHTS_SEED})",
        "images": "content skimage.data.coffee(), style skimage.data.immunohistochemistry()",
        "machine": machine(),
        "curve": [],
    }
    out = HERE / "seed_reference.partial.json"
    t0 = time.perf_counter()
    for ev in engine.run(content, [style], params):
        if isinstance(ev, Started):
            record["size"] = ev.sizes[-1]  # (h, w) the notebook's resize made
        elif isinstance(ev, Progress) and (ev.step % 50 == 0 or ev.step == 1):
            record["curve"].append({"step": ev.step, "seconds": round(ev.elapsed, 2), **ev.losses})
            out.write_text(json.dumps(record, indent=1))
            print(f"step {ev.step}/{ev.steps} total {ev.losses['total']:.6g} {ev.elapsed:.0f}s", flush=True)
        elif isinstance(ev, Result):
            Image.fromarray(ev.image).save(HERE / "seed_reference.png")
            final = engine.evaluate(content, [style], params, ev.image)
            record["final_objective_uint8"] = final  # the delivered image, re-evaluated
            record["final_objective_float"] = ev.losses  # the last step's float iterate
            record["seconds"] = round(time.perf_counter() - t0, 1)
            record["seconds_per_step"] = round(record["seconds"] / params.steps, 4)
            out.write_text(json.dumps(record, indent=1))
            out.replace(HERE / "seed_reference.json")
            print(json.dumps(final))


if __name__ == "__main__":
    main()
