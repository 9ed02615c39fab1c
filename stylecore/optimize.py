"""The image being optimized at one scale, and the optimizer that moves it.

One owner for what every optimizer shares: the valid pixel range (the box), the
precision the network runs in, and the iterate the scale delivers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import images
from .lbfgs import BoxLBFGS
from .params import StyleParams

# Evaluates the objective at an image: (1, 3, h, w) normalized, requires grad ->
# the scalar fp32 terms {content, style, tv, total}, with total differentiable.
Evaluate = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def autocast(device: torch.device, dtype: torch.dtype):
    """The network's precision: bf16 autocast, or nothing (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def pixel_box(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The valid pixel range [0, 1] in the normalized space the image lives in: (1, 3, 1, 1) each."""
    return (images.normalize(torch.zeros(1, 3, 1, 1, device=device)),
            images.normalize(torch.ones(1, 3, 1, 1, device=device)))


class ImageOptimizer:
    """x: the starting image, (1, 3, h, w) fp32 normalized; evaluate: the objective."""

    def __init__(self, x: torch.Tensor, evaluate: Evaluate, params: StyleParams):
        self.evaluate, self.params = evaluate, params
        self.x = x.detach().contiguous().clone().requires_grad_(True)  # (1, 3, h, w) fp32, normalized
        self.box = pixel_box(x.device) if params.clamp else None
        if params.optimizer == "lbfgs":
            lower, upper = self.box or (None, None)
            self.lbfgs: BoxLBFGS | None = BoxLBFGS(self.x, lower, upper, lr=params.lr)
            self.opt = self.lbfgs
        else:
            self.lbfgs = None
            self.opt = torch.optim.Adam([self.x], lr=params.lr)
        # Adam's iterate is noisy; an exponential moving average of it is a better image
        # (crowsonkb/style-transfer-pytorch). avg starts at 0 and is bias-corrected.
        self.avg = torch.zeros_like(self.x) if params.average and params.optimizer == "adam" else None
        self.n = 0
        self.terms: dict[str, float] = {}  # the last evaluation's
        self.best_terms: dict[str, float] = {}  # L-BFGS: the evaluation of the iterate delivered

    def _closure(self) -> torch.Tensor:
        self.x.grad = None
        terms = self.evaluate(self.x)
        terms["total"].backward()
        # The gradient comes back in channels_last strides; L-BFGS flattens it.
        self.x.grad = self.x.grad.contiguous()
        self._last = terms
        return terms["total"]

    def step(self) -> dict[str, float]:
        """One evaluation and one move. Returns the terms evaluated at the iterate
        before the move (device sync)."""
        self.opt.step(self._closure)
        if self.lbfgs is None and self.box is not None:
            with torch.no_grad():
                self.x.copy_(torch.maximum(torch.minimum(self.x, self.box[1]), self.box[0]))
        self.n += 1
        if self.avg is not None:
            self.avg.mul_(self.params.average).add_(self.x.detach(), alpha=1 - self.params.average)
        self.terms = {k: v.item() for k, v in self._last.items()}  # device sync
        if self.lbfgs is not None and self.lbfgs.best is not None and self.lbfgs.best[0] == self.terms["total"]:
            self.best_terms = self.terms
        return self.terms

    @property
    def delivered_terms(self) -> dict[str, float]:
        """The objective of the iterate `current()` returns, where it was evaluated: the
        best evaluation for L-BFGS; for Adam the last evaluation (the averaged image,
        with `average`, is never evaluated)."""
        return self.best_terms if self.lbfgs is not None else self.terms

    def current(self) -> torch.Tensor:
        """The iterate this scale delivers: the best evaluated (L-BFGS), the average
        (Adam with `average`), else the last."""
        if self.lbfgs is not None and self.lbfgs.best is not None:
            return self.lbfgs.best[1].view_as(self.x)
        if self.avg is not None:
            return self.avg / (1 - self.params.average**self.n)
        return self.x.detach()
