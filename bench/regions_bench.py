"""Creative control (issue 20): a style per region, tileable results, 16-bit images.

    .venv/bin/python bench/regions_bench.py [--quick] [--only 1,3] [--threads N]

Every figure is measured in this one run, on the machine it names, with the seeded
random VGG19 weights every benchmark uses (bench/common.py: ImageNet weights cannot
be downloaded here), and printed with its target and PASS or FAIL.

Images: content, scikit-image's coffee cropped square (its right 400x400: columns
200..599, where the photo's own detail is spread evenly across the middle, so that
part 2's band holds no more edges than the halves: its own band / halves ratio is
1.03, the astronaut's 1.72), Lanczos-resized to 512x512 (256x256 for --quick). Style A: scikit-image's immunohistochemistry slide
(pink, brown and blue cells); style B: synthetic bold diagonal stripes, black and
saturated yellow, 32 px period (no colour, and no texture, in common with A: their
Grams differ a lot). Masks: L, the left half white; R, the right half white, (H, W, 1)
uint8.

1. Region fidelity. preset("default") (512 px, 4 scales, L-BFGS, precision auto),
   three runs per content, same seed and steps: two regions (styles [A, B], masks
   [L, R]); A alone restricted to the left half ([A], [L]); B alone restricted to the
   right ([B], [R]). Each result is scored by Engine.evaluate with one style and one
   mask, which is that region's guided style loss (fp32, final scale, the result at the
   working size):
       two_A    the two-region result's left half against A
       single_A the single-A result's left half against A
       cross_B  the two-region result's left half against B
   Targets: two_A <= 1.2 * single_A (within 20% of what a single-style run restricted
   to that half reaches) and cross_B >= 10 * two_A (the half took A, not B); the same
   for the right half with B (two_B, single_B, cross_A). Four contents (coffee as in
   the other parts, astronaut, chelsea, rocket: centred squares), and the fidelity
   target is judged on the geometric mean of their ratios: at 8 final steps the
   losses are thousands of times below the start, and a rounding-level change in the
   optimizer (the order of a sum) moved one content's ratio from 1.55 to 4.7
   (docs/creative.md, "One memory per region").
2. No halo at the seam. In the two-region result, the mean gradient magnitude
   (|dx| + |dy| between neighbouring pixels, averaged over R, G, B; 8-bit units) in a
   32 px band centred on the masks' border (columns 240..271 at 512 px) against the
   two halves outside the band. Target: band / halves within 15% of 1.
3. Cost. Seconds per step of the two-region job against a one-style job ([A], no
   masks), same size and preset: Result.elapsed over all steps (set-up included), and
   the final scale's steps alone (Progress.elapsed differences there). Target: ratio
   <= 1.15. Each job runs twice, interleaved, and the faster run counts (a shared
   2-core machine is noisy). Run last, after the other parts.
4. Tiled path with masks. The two-region job at 512 px with tiles forced (tile=256)
   against the untiled one, both fp32, same steps: the final objective
   (Result.losses["total"]) within 3%, and the mean |difference| of the images at most
   3 (8-bit units).
5. Tileable. Content: scikit-image's gravel (512x512 gray) made RGB and multiplied by
   a left-to-right brightness ramp 0.6..1.2 (clipped), so its left and right edges
   cannot meet; style A. preset("default") with tileable=1 and without: the seam
   ratio of each result (images.seam_ratio: the gradient across the wrap borders of
   the 2x2 mosaic over that across the interior lines of the network's 16 px lattice). Targets: tileable within 10% of 1;
   the plain result shows a seam (> 1.10). Both mosaics are written to
   /tmp/regions_bench/.
6. 16 bits. Content: a 768x512 16-bit RGBA sky, a vertical gradient from
   (0.25, 0.45, 0.85) to (0.75, 0.85, 0.98) plus a faint horizontal ramp (3% of the
   range), alpha a diagonal 16-bit ramp; style A, preset("default"). Target: the
   result has more than 1000 distinct levels in each colour channel, and its alpha is
   the content's bit for bit. For comparison, the same content reduced to 8 bits
   (buffers.to_depth) and run alike gives at most 256.

--steps N: N steps at the last scale instead of the preset's (part 1's trend with steps).
--quick: 256 px and fewer steps (3 coarse scales of 4 steps, 3 final steps), a smoke
run; its figures are not the targets' measurement. --only 1,5: selected parts.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import bench_engine, machine  # noqa: E402

from stylecore import Progress, Result, Started, images, preset  # noqa: E402
from stylecore.buffers import to_depth  # noqa: E402

OUT = Path("/tmp/regions_bench")
ORDER = (1, 2, 4, 5, 6, 3)  # the timing part last: the others warm the machine up and leave it alone


def line(label: str, value: str, target: str = "") -> None:
    print(f"  {label:<64} {value:>18}  {target}", flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- images ---------------------------------------------------------------------------------


def photo(size: int) -> np.ndarray:
    """coffee (600x400), its right 400x400 square, resized to size x size."""
    from skimage import data

    img = np.ascontiguousarray(data.coffee()[:, 200:600])
    return np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))


def style_a() -> np.ndarray:
    from skimage import data

    return data.immunohistochemistry()


def style_b(size: int = 512, period: int = 32) -> np.ndarray:
    """Bold diagonal stripes, black and saturated yellow."""
    y, x = np.mgrid[:size, :size]
    on = ((x + y) % period) < period // 2
    img = np.empty((size, size, 3), np.uint8)
    img[on] = (250, 210, 0)
    img[~on] = (15, 15, 15)
    return img


def half_mask(h: int, w: int, left: bool) -> np.ndarray:
    m = np.zeros((h, w, 1), np.uint8)
    if left:
        m[:, : w // 2] = 255
    else:
        m[:, w // 2:] = 255
    return m


def ramped_gravel(size: int) -> np.ndarray:
    """Gravel (a texture) lit unevenly: brightness 0.6 at the left edge to 1.2 at the right."""
    from skimage import data

    gray = data.gravel()
    if gray.shape[0] != size:
        gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.LANCZOS))
    ramp = np.linspace(0.6, 1.2, size)[None, :, None]
    return np.clip(np.repeat(gray[:, :, None], 3, 2) * ramp, 0, 255).round().astype(np.uint8)


def sky16(width: int = 768, height: int = 512) -> np.ndarray:
    """(height, width, 4) uint16: a vertical sky gradient, a faint horizontal ramp, and a
    diagonal alpha ramp."""
    top, bottom = np.array([0.25, 0.45, 0.85]), np.array([0.75, 0.85, 0.98])
    ty = np.linspace(0, 1, height)[:, None, None]
    tx = np.linspace(-0.5, 0.5, width)[None, :, None]
    rgb = np.clip(top + (bottom - top) * ty + 0.03 * tx, 0, 1)
    y, x = np.mgrid[:height, :width]
    alpha = (x + y) / (width + height - 2)
    pixels = np.concatenate([rgb, alpha[:, :, None]], axis=2)
    return np.rint(pixels * 65535).astype(np.uint16)


# --- running jobs ---------------------------------------------------------------------------


@dataclass
class Run:
    result: Result
    started: Started
    final: list[float] = field(default_factory=list)  # Progress.elapsed of the final scale's steps

    @property
    def per_step(self) -> float:
        return self.result.elapsed / self.started.total_steps

    @property
    def final_per_step(self) -> float:
        return (self.final[-1] - self.final[0]) / (len(self.final) - 1)


class Bench:
    def __init__(self, quick: bool, steps: int = 0):
        self.quick = quick
        self.size = 256 if quick else 512
        self.params = preset("default").replace(size=self.size)
        if quick:
            self.params = self.params.replace(scales=3, coarse_steps=4, steps=3)
        if steps:
            self.params = self.params.replace(steps=steps)
        self.engine = bench_engine()
        self.content = photo(self.size)
        self.a, self.b = style_a(), style_b()
        h, w = self.content.shape[:2]
        self.left, self.right = half_mask(h, w, True), half_mask(h, w, False)
        self._two: Run | None = None
        self._singles: tuple[Run, Run] | None = None

    def run(self, content, styles, params=None, masks=()) -> Run:
        started, result, final = None, None, []
        for ev in self.engine.run(content, styles, params or self.params, style_masks=masks):
            if isinstance(ev, Started):
                started = ev
            elif isinstance(ev, Progress) and ev.scale == ev.scales:
                final.append(ev.elapsed)
            elif isinstance(ev, Result):
                result = ev
        return Run(result, started, final)

    def two_regions(self) -> Run:
        """The two-region job with the preset (parts 1 and 2 share it)."""
        if self._two is None:
            self._two = self.run(self.content, [self.a, self.b], masks=[self.left, self.right])
        return self._two

    def singles(self) -> tuple[Run, Run]:
        """A alone on the left half, B alone on the right (parts 1 and 2 share them)."""
        if self._singles is None:
            self._singles = (self.run(self.content, [self.a], masks=[self.left]),
                             self.run(self.content, [self.b], masks=[self.right]))
        return self._singles

    def style_loss(self, style: np.ndarray, image: np.ndarray, mask: np.ndarray, content: np.ndarray) -> float:
        """The guided style loss of `image` (at the working size) against `style` within `mask`."""
        return self.engine.evaluate(content, [style], self.params, image, style_masks=[mask])["style"]


# --- the parts ------------------------------------------------------------------------------


def square(img: np.ndarray, size: int) -> np.ndarray:
    """The centred square of an image, RGB, resized to size x size."""
    h, w = img.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return np.asarray(Image.fromarray(np.ascontiguousarray(img[y:y + s, x:x + s, :3])).resize((size, size),
                                                                                               Image.LANCZOS))


def fidelity_contents(size: int) -> dict[str, np.ndarray]:
    """Part 1's contents: coffee as everywhere else, and three more photos (the centred
    square of each): one photo's ratio is a lottery (see the module doc)."""
    from skimage import data

    return {"coffee": photo(size), "astronaut": square(data.astronaut(), size),
            "chelsea": square(data.chelsea(), size), "rocket": square(data.rocket(), size)}


def region_fidelity(bench: Bench) -> None:
    p = bench.params
    contents = fidelity_contents(bench.size)
    print(f"1. region fidelity at {bench.size}x{bench.size} (default preset: {p.scales} scales, {p.coarse_steps} "
          f"steps at each coarser one, {p.steps} at the last); guided style losses evaluated in fp32; contents "
          f"{', '.join(contents)}; targets on the geometric mean over them")
    ratios: dict[str, list[float]] = {"A": [], "B": [], "crossA": [], "crossB": []}
    for name, content in contents.items():
        if name == "coffee":  # parts 2 and 3 share these runs
            two, (single_a, single_b) = bench.two_regions(), bench.singles()
        else:
            two = bench.run(content, [bench.a, bench.b], masks=[bench.left, bench.right])
            single_a = bench.run(content, [bench.a], masks=[bench.left])
            single_b = bench.run(content, [bench.b], masks=[bench.right])
        for half, mask, own, other, single, (own_name, other_name) in (
            ("left", bench.left, bench.a, bench.b, single_a, ("A", "B")),
            ("right", bench.right, bench.b, bench.a, single_b, ("B", "A")),
        ):
            start = bench.style_loss(own, content, mask, content)
            two_own = bench.style_loss(own, two.result.image, mask, content)
            single_own = bench.style_loss(own, single.result.image, mask, content)
            cross = bench.style_loss(other, two.result.image, mask, content)
            ratios[own_name].append(two_own / single_own)
            ratios["cross" + other_name].append(cross / two_own)
            line(f"{name}, {half} half vs {own_name}: content / two-region / single-{own_name} / vs {other_name}",
                 f"{start:.3g} / {two_own:.3g} / {single_own:.3g} / {cross:.3g}")
        line(f"{name}: two_A / single_A, two_B / single_B",
             f"{ratios['A'][-1]:.2f} / {ratios['B'][-1]:.2f}")
    geo = lambda v: float(np.exp(np.mean(np.log(v))))  # noqa: E731
    for own, other in (("A", "B"), ("B", "A")):
        r = geo(ratios[own])
        line(f"two_{own} / single_{own}: geometric mean (each: {' '.join(f'{v:.2f}' for v in ratios[own])})",
             f"{r:.3f}", f"target <= 1.2 {verdict(r <= 1.2)}")
        r = min(ratios["cross" + other])
        line(f"cross_{other} / two_{own}: the smallest", f"{r:.1f}x", f"target >= 10x {verdict(r >= 10)}")


def gradient_map(image: np.ndarray) -> np.ndarray:
    """(H-1, W-1): |dx| + |dy| at each pixel (to its right and lower neighbours), mean over
    R, G, B, in 8-bit units."""
    x = image[:, :, :3].astype(np.float64)
    dx = np.abs(np.diff(x, axis=1))[:-1]
    dy = np.abs(np.diff(x, axis=0))[:, :-1]
    return (dx + dy).mean(axis=2)


def band_ratio(image: np.ndarray, band: int = 32) -> tuple[float, float, float, float]:
    """(band, left outside, right outside, band / both halves outside): mean gradient
    magnitudes, the band `band` px wide centred on the middle column."""
    g = gradient_map(image)
    c0 = image.shape[1] // 2 - band // 2
    c1 = c0 + band  # columns c0..c1-1: 240..271 at 512 px
    inside, left, right = g[:, c0:c1], g[:, :c0], g[:, c1:]
    outside = np.concatenate([left.ravel(), right.ravel()]).mean()
    return float(inside.mean()), float(left.mean()), float(right.mean()), float(inside.mean() / outside)


def g_band_side(image: np.ndarray, left: bool, band: int = 32) -> float:
    """One side of the band (its 16 columns in that half) against that half outside it."""
    g = gradient_map(image)
    mid = image.shape[1] // 2
    if left:
        return float(g[:, mid - band // 2:mid].mean() / g[:, :mid - band // 2].mean())
    return float(g[:, mid:mid + band // 2].mean() / g[:, mid + band // 2:].mean())


def seam_halo(bench: Bench) -> None:
    two = bench.two_regions()
    c0 = bench.size // 2 - 16
    print(f"2. halo at the seam: mean gradient magnitude (8-bit units) in columns {c0}..{c0 + 31} of the "
          "two-region result against the halves outside them")
    band, left, right, ratio = band_ratio(two.result.image)
    line("band / left half outside / right half outside", f"{band:.2f} / {left:.2f} / {right:.2f}")
    line("band / halves", f"{ratio:.3f}", f"target 0.85..1.15 {verdict(0.85 <= ratio <= 1.15)}")
    w = bench.size // 2
    line("  band's left 16 columns / left half outside", f"{g_band_side(two.result.image, True):.3f}")
    line("  band's right 16 columns / right half outside", f"{g_band_side(two.result.image, False):.3f}")
    line("(for comparison: the content photo's own band / halves)", f"{band_ratio(bench.content)[3]:.3f}")
    single_a, single_b = bench.singles()
    stitched = np.concatenate([single_a.result.image[:, :w], single_b.result.image[:, w:]], axis=1)
    band, left, right, ratio = band_ratio(stitched)
    line("(the single-A and single-B results' halves side by side: band / halves)", f"{ratio:.3f}")
    line("  (their band / left outside / right outside)", f"{band:.2f} / {left:.2f} / {right:.2f}")
    line("  (their band's left 16 columns / left outside; right 16 / right outside)",
         f"{g_band_side(stitched, True):.3f} / {g_band_side(stitched, False):.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(two.result.image[:, :, :3]).save(OUT / "two_regions.png")
    Image.fromarray(stitched[:, :, :3]).save(OUT / "singles_side_by_side.png")
    line("two-region result and the singles side by side written", str(OUT / "{two_regions,singles_side_by_side}.png"))


def cost(bench: Bench) -> None:
    print(f"3. cost at {bench.size}x{bench.size}, default preset: two regions ([A, B], masks [L, R]) against one "
          "style ([A], no masks); each run twice, interleaved, the faster counts")
    runs: dict[str, list[Run]] = {"one": [], "two": []}
    for _ in range(2):
        runs["one"].append(bench.run(bench.content, [bench.a]))
        runs["two"].append(bench.run(bench.content, [bench.a, bench.b], masks=[bench.left, bench.right]))
    for what, attr in (("whole job: Result.elapsed / all steps", "per_step"),
                       ("final scale: seconds per step", "final_per_step")):
        one = min(getattr(r, attr) for r in runs["one"])
        two = min(getattr(r, attr) for r in runs["two"])
        both = lambda key: " ".join(f"{getattr(r, attr):.3f}" for r in runs[key])  # noqa: E731
        line(f"{what}, one style (runs: {both('one')})", f"{one:.3f} s")
        line(f"{what}, two regions (runs: {both('two')})", f"{two:.3f} s")
        ratio = two / one
        line(f"{what}: ratio", f"{ratio:.3f}", f"target <= 1.15 {verdict(ratio <= 1.15)}")
    line("steps per job / network precision", f"{runs['one'][0].started.total_steps} / {runs['one'][0].started.dtype}")


def tiled(bench: Bench) -> None:
    tile = bench.size // 2
    params = bench.params.replace(precision="fp32")
    print(f"4. tiled path with masks: the two-region job at {bench.size}x{bench.size}, fp32, tiles forced "
          f"(tile={tile}) against whole, same steps ({params.coarse_steps} per coarser scale, {params.steps} at "
          "the last)")
    styles, masks = [bench.a, bench.b], [bench.left, bench.right]
    whole = bench.run(bench.content, styles, params, masks)
    tiles = bench.run(bench.content, styles, params.replace(tile=tile), masks)
    line("tile side per scale: whole / tiled (0: untiled)", f"{whole.started.tiles} / {tiles.started.tiles}")
    line("wall time: whole / tiled", f"{whole.result.elapsed:.1f} s / {tiles.result.elapsed:.1f} s")
    va, vb = whole.result.losses["total"], tiles.result.losses["total"]
    line("final objective (Result.losses['total']): whole / tiled", f"{va:.5g} / {vb:.5g}")
    rel = abs(vb - va) / va
    line("objective difference", f"{rel:.2%}", f"target <= 3% {verdict(rel <= 0.03)}")
    fresh = [bench.engine.evaluate(bench.content, styles, params, r.result.image, style_masks=masks)["total"]
             for r in (whole, tiles)]
    line("(the delivered 8-bit images evaluated afresh, untiled: whole / tiled)", f"{fresh[0]:.5g} / {fresh[1]:.5g}")
    mad = np.abs(whole.result.image.astype(int) - tiles.result.image.astype(int)).mean()
    line("mean |difference| of the images (8-bit units)", f"{mad:.2f}", f"target <= 3 {verdict(mad <= 3)}")


def tileable(bench: Bench) -> None:
    content = ramped_gravel(bench.size)
    print(f"5. tileable: gravel ({bench.size}x{bench.size}, RGB) times a left-to-right brightness ramp 0.6..1.2, "
          "style A, default preset with tileable=1 and without")
    line("seam ratio of the content itself (for comparison)", f"{images.seam_ratio(content):.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    for flag, name in ((1, "tileable"), (0, "plain")):
        run = bench.run(content, [bench.a], bench.params.replace(tileable=flag))
        ratio = images.seam_ratio(run.result.image)
        path = OUT / f"{name}_mosaic.png"
        Image.fromarray(np.tile(run.result.image[:, :, :3], (2, 2, 1))).save(path)
        if flag:
            line("tileable=1: seam ratio", f"{ratio:.3f}", f"target within 10% of 1 {verdict(abs(ratio - 1) <= 0.10)}")
        else:
            line("tileable=0: seam ratio", f"{ratio:.3f}", f"target > 1.10 (a seam shows) {verdict(ratio > 1.10)}")
        line(f"  2x2 mosaic written ({run.result.elapsed:.1f} s run)", str(path))


def depth16(bench: Bench) -> None:
    content = sky16()
    h, w = content.shape[:2]
    print(f"6. 16 bits: a {w}x{h} RGBA sky gradient, 16 bits per channel, alpha a diagonal ramp; style A, "
          f"default preset (working size {bench.size} px)")
    levels = lambda img: [len(np.unique(img[:, :, c])) for c in range(3)]  # noqa: E731
    run = bench.run(content, [bench.a])
    out = run.result.image
    line("content: distinct levels in R, G, B", str(levels(content)))
    line(f"result ({out.dtype}, {out.shape[1]}x{out.shape[0]}x{out.shape[2]}): distinct levels in R, G, B",
         str(levels(out)), f"target > 1000 {verdict(min(levels(out)) > 1000)}")
    same = out.shape[2] == 4 and np.array_equal(out[:, :, 3], content[:, :, 3])
    line("alpha identical bit for bit", str(same), f"target True {verdict(same)}")
    content8 = to_depth(content, 8)
    out8 = bench.run(content8, [bench.a]).result.image
    line("the content reduced to 8 bits: its distinct levels in R, G, B", str(levels(content8)))
    line(f"  its result ({out8.dtype}): distinct levels in R, G, B", str(levels(out8)), "(at most 256)")


PARTS = {1: region_fidelity, 2: seam_halo, 3: cost, 4: tiled, 5: tileable, 6: depth16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 px and fewer steps: a smoke run, not the measurement")
    ap.add_argument("--only", help="comma-separated part numbers, e.g. 1,2 (default: all; part 3 runs last)")
    ap.add_argument("--steps", type=int, default=0, help="steps at the last scale (default: the preset's)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wanted = {int(v) for v in args.only.split(",")} if args.only else set(PARTS)
    if not wanted <= set(PARTS):
        ap.error(f"--only: parts are {', '.join(map(str, PARTS))}")
    print(f"machine: {machine()}")
    print("weights: seeded random VGG19 (bench/common.py; ImageNet weights cannot be downloaded here)")
    print("images: content coffee (its right 400x400 square, resized); style A immunohistochemistry, style B bold "
          "black/yellow stripes")
    if args.quick:
        print("QUICK RUN (256 px, 3 scales, 4 coarse + 3 final steps): a smoke test; these figures are NOT the "
              "targets' measurement")
    bench = Bench(args.quick, args.steps)
    for part in ORDER:
        if part in wanted:
            PARTS[part](bench)


if __name__ == "__main__":
    main()
