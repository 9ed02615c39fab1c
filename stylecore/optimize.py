"""The image being optimized at one scale, and the optimizer that moves it.

One owner for what every optimizer shares: the valid pixel range (the box), the
precision the network runs in, and the iterate the scale delivers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import torch

from . import images
from .events import TilePass
from .lbfgs import BlockLBFGS, BoxLBFGS
from .params import StyleParams

# Evaluates the objective at an image x ((1, 3, h, w) normalized, a leaf): a generator
# that may yield progress events (TilePass, for a tiled evaluation), returns the
# terms {content, style, tv, total} as floats and, with grad, leaves the gradient in
# x.grad (fp32, contiguous).
Evaluation = Generator[TilePass, None, dict[str, float]]
Evaluate = Callable[..., Evaluation]  # (x, where=(scale, step), grad=True) -> Evaluation


def autocast(device: torch.device, dtype: torch.dtype):
    """The network's precision: bf16 autocast, or nothing (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


# A run whose best improves by less than 5% in 4 evaluations, with a rise among them,
# starts afresh (lbfgs.py's module doc; docs/optimizer.md, "A fresh start when a run
# stalls"). The objective is a weighted sum of squares, bounded below by 0, as that
# rule requires.
STALL, PROGRESS = 4, 0.05
# No quasi-Newton step moves the image by more than this root-mean-square, as a
# fraction of the pixel range: an early curvature pair that underestimates the
# curvature gives a step that moves the average pixel past the whole box, the box
# flattens it, and a level can bounce between such steps to its end (docs/optimizer.md,
# "A step no longer than the box"). A healthy first step measured 0.38. None: no cap
# (bench/step_bench.py compares).
MAX_STEP_RMS: float | None = 0.45


def pixel_box(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The valid pixel range [0, 1] in the normalized space the image lives in: (1, 3, 1, 1) each."""
    return (images.normalize(torch.zeros(1, 3, 1, 1, device=device)),
            images.normalize(torch.ones(1, 3, 1, 1, device=device)))


class ImageOptimizer:
    """x: the starting image, (1, 3, h, w) fp32 normalized; evaluate: the objective."""

    def __init__(self, x: torch.Tensor, evaluate: Evaluate, params: StyleParams, history: int = 20,
                 curvature: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
                 pair_dtype: torch.dtype | None = None, blocks: torch.Tensor | None = None,
                 groups: list[int] | None = None):
        """history: L-BFGS curvature pairs kept (each costs two image-sized vectors, in
        pair_dtype, default x's: fp32). curvature: pairs (s, y) for L-BFGS to start with,
        flat, x's size: the previous pyramid level's, from its `curvature_at`. blocks:
        (h·w,) uint8, a label per pixel: one L-BFGS memory per block (lbfgs.py). groups:
        the judge of each block, each judged by its part of the objective (the terms'
        "blocks" entry; lbfgs.BlockLBFGS); None: one judge, the total."""
        self.evaluate, self.params = evaluate, params
        self.x = x.detach().contiguous().clone().requires_grad_(True)  # (1, 3, h, w) fp32, normalized
        self.box = pixel_box(x.device) if params.clamp else None
        if params.optimizer == "lbfgs":
            lower, upper = self.box or (None, None)
            # The box is in normalized units (per-channel std), so is the cap.
            max_rms = (None if self.box is None or MAX_STEP_RMS is None
                       else MAX_STEP_RMS * float((upper - lower).mean()))
            options = dict(lr=params.lr, history=history, pair_dtype=pair_dtype, stall=STALL, progress=PROGRESS,
                           max_rms=max_rms)
            self.lbfgs: BoxLBFGS | None = (BoxLBFGS(self.x, lower, upper, blocks=blocks, **options) if groups is None
                                           else BlockLBFGS(self.x, lower, upper, blocks, groups, **options))
            self.lbfgs.carry(list(curvature))
            self.adam = None
        else:
            self.lbfgs = None
            self.adam = torch.optim.Adam([self.x], lr=params.lr)
        # Adam's iterate is noisy; an exponential moving average of it is a better image
        # (crowsonkb/style-transfer-pytorch). avg starts at 0 and is bias-corrected.
        self.avg = torch.zeros_like(self.x) if params.average and params.optimizer == "adam" else None
        self.n = 0
        self.terms: dict[str, float] = {}  # the last evaluation's
        self.best_terms: dict[str, float] = {}  # L-BFGS: the evaluation of the iterate delivered

    def step(self, where: tuple[int, int] = (0, 0)) -> Generator[TilePass, None, dict[str, float]]:
        """One evaluation and one move; yields what the evaluation yields. Returns the
        terms evaluated at the iterate before the move."""
        self.x.grad = None
        self.terms = yield from self.evaluate(self.x, where)
        parts = self.terms.pop("blocks", None)  # each block's part of the total (an objective with blocks)
        if isinstance(self.lbfgs, BlockLBFGS):
            self.lbfgs.tell(parts)  # judge j's value is block j's part (engine._blocks)
            self.x.grad = None  # L-BFGS left its direction there: free it (memory at full size)
            # The delivered image is each region's best in its pixels, never evaluated as a
            # whole: until `settle`, its total is the sum of the regions' bests (its other
            # terms the last evaluation's).
            self.best_terms = {**self.terms, "total": self.lbfgs.best[0]} if self.lbfgs.best else self.terms
        elif self.lbfgs is not None:
            self.lbfgs.tell(self.terms["total"])
            self.x.grad = None  # L-BFGS left its direction there: free it (memory at full size)
            if self.lbfgs.best is not None and self.lbfgs.best[0] == self.terms["total"]:
                self.best_terms = self.terms
        else:
            self.adam.step()
            if self.box is not None:
                with torch.no_grad():
                    self.x.copy_(torch.maximum(torch.minimum(self.x, self.box[1]), self.box[0]))
        self.n += 1
        if self.avg is not None:
            self.avg.mul_(self.params.average).add_(self.x.detach(), alpha=1 - self.params.average)
        return self.terms

    def curvature_at(self, size: tuple[int, int], count: int, dtype: torch.dtype | None = None,
                     wrap: bool = False, labels: torch.Tensor | None = None
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The newest `count` L-BFGS curvature pairs (s, y), each resized to `size`
        (h, w) as the image is between levels (bicubic), flattened and made in `dtype`
        (the next level's pair dtype; default fp32) one at a time, wrapping around the
        edges for a tileable job; [] for Adam.
        labels: (h·w,) the next level's region labels, for regions judged apart
        (BlockLBFGS): each region's part is resized alone and lands on that region's
        pixels only. Bicubic resizing mixes values across a border, and the region
        whose steps are long (the smaller loss) then bent the other's first steps at
        the next level (measured on coffee: the stripes' half 3.3 times its single-style
        run, 1.7 with this; docs/creative.md, "A region judged by its own terms").
        y is not rescaled for the pixel count: the style term, which dominates the
        curvature, is normalized so that its per-pixel gradient does not shrink with
        the image (losses.style_loss), and scaling y by the pixel ratio measured worse
        (docs/optimizer.md, "L-BFGS across scales")."""
        if self.lbfgs is None:
            return []
        shape, dtype = self.x.shape, dtype or torch.float32

        if not isinstance(self.lbfgs, BlockLBFGS) or labels is None:
            def resized(v: torch.Tensor) -> torch.Tensor:
                return images.resize(v.float().view(shape), size, wrap).reshape(-1).to(dtype)

            return [(resized(s), resized(y)) for s, y in self.lbfgs.curvature()[-count:]]
        lbfgs = self.lbfgs
        # Each memory block's region (a frame's blocks split each region in two), here
        # and at the next size.
        here = lbfgs.groups[lbfgs.ops.labels.long()].view(1, 1, *shape[-2:])
        there = labels.view(1, 1, *size)

        def apart(v: torch.Tensor, valid: list[bool]) -> torch.Tensor:
            out = torch.zeros(*shape[:2], *size, device=v.device)
            for k, keep in enumerate(valid):  # one region at a time: (1, 3, h, w) temporaries
                if keep:
                    out += images.resize(v.float().view(shape) * (here == k), size, wrap) * (there == k)
            return out.reshape(-1).to(dtype)

        carried = []
        for s, y, rho, _ in list(lbfgs.pairs)[-count:]:
            # A region whose memory was dropped (a fresh start) carries none of this pair.
            valid = [bool(v) for v in torch.zeros(len(lbfgs.judges), device=rho.device).index_add_(
                0, lbfgs.groups, (rho > 0).float()).gt(0).tolist()]  # device sync
            carried.append((apart(s, valid), apart(y, valid)))
        return carried

    @property
    def delivered_terms(self) -> dict[str, float]:
        """The objective of the iterate `current()` returns, where it was evaluated: the
        best evaluation for L-BFGS; for Adam the last evaluation (the averaged image,
        with `average`, is never evaluated)."""
        return self.best_terms if self.lbfgs is not None else self.terms

    def settle(self, where: tuple[int, int] = (0, 0)) -> Generator[TilePass, None, dict[str, float]]:
        """The delivered image's own terms: for regions judged apart (BlockLBFGS), one
        evaluation without gradient (its pixels come from several iterates); else the
        terms already known. Returns delivered_terms, now the delivered image's."""
        if isinstance(self.lbfgs, BlockLBFGS) and self.lbfgs.best is not None:
            terms = yield from self.evaluate(self.current().detach(), where, grad=False)
            terms.pop("blocks", None)
            self.best_terms = terms
        return self.delivered_terms

    def current(self) -> torch.Tensor:
        """The iterate this scale delivers: the best evaluated (L-BFGS), the average
        (Adam with `average`), else the last."""
        if self.lbfgs is not None and self.lbfgs.best is not None:
            return self.lbfgs.best[1].view_as(self.x)
        if self.avg is not None:
            return self.avg / (1 - self.params.average**self.n)
        return self.x.detach()
