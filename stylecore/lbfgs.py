"""L-BFGS with box bounds, one function evaluation per step.

Why not torch.optim.LBFGS: the image must stay inside the valid pixel range. An
unconstrained L-BFGS run on this objective parks a few percent of the pixels far
outside [0, 1] (measured: 7% after 25 steps, values from -0.74 to 1.85), and the
delivered image, clamped and quantized, then scores 2000x worse than the iterate.
Here each step is projected onto the box, and the curvature pair is built from
the step actually taken, so the memory stays consistent with the iterates.
Like jcjohnson/neural-style there is no line search: one network evaluation per
step; the caller keeps the best iterate, since steps are not guaranteed to descend.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch


class BoxLBFGS:
    def __init__(
        self,
        x: torch.Tensor,
        lower: torch.Tensor | None,
        upper: torch.Tensor | None,
        lr: float = 1.0,
        history: int = 20,
        first_step: float = 0.05,
    ):
        """x: the leaf tensor to optimize, updated in place; lower/upper broadcast to it
        (None: unbounded).
        first_step: the largest change of any element in the first step, which has no
        curvature information yet to size it."""
        self.x, self.lower, self.upper = x, lower, upper
        self.lr, self.first_step = lr, first_step
        self.pairs: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=history)  # (s, y, 1/yᵀs)
        self.prev: tuple[torch.Tensor, torch.Tensor] | None = None  # (x, grad) flat, at the last step

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """closure: evaluates the loss at x and fills x.grad. Returns that loss."""
        with torch.enable_grad():
            loss = closure()
        x = self.x.detach().reshape(-1)
        g = self.x.grad.reshape(-1)
        if self.prev is not None:
            s, y = x - self.prev[0], g - self.prev[1]
            ys = torch.dot(y, s)
            if ys > 1e-10:  # skip pairs that would break positive definiteness (device sync)
                self.pairs.append((s, y, 1.0 / ys))
        self.prev = (x.clone(), g.clone())
        direction = self._direction(g)
        self.x.add_(direction.view_as(self.x))
        if self.lower is not None:
            self.x.copy_(torch.maximum(torch.minimum(self.x, self.upper), self.lower))  # project onto the box
        return loss

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion (Nocedal & Wright, algorithm 7.4)."""
        if not self.pairs:
            return g * (-self.lr * self.first_step / g.abs().max().clamp_min(1e-30))
        q = g.clone()
        alphas = []
        # Scalars stay 0-dim tensors (addcmul_ broadcasts them): no device sync per pair.
        for s, y, rho in reversed(self.pairs):
            a = rho * torch.dot(s, q)
            q.addcmul_(y, a, value=-1)
            alphas.append(a)
        s, y, _ = self.pairs[-1]
        q.mul_(torch.dot(s, y) / torch.dot(y, y))  # initial Hessian scale γ = sᵀy / yᵀy
        for (s, y, rho), a in zip(self.pairs, reversed(alphas)):
            b = rho * torch.dot(y, q)
            q.addcmul_(s, a - b)
        return q.mul_(-self.lr)
