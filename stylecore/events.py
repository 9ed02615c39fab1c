"""What a running job reports. The CLI's progress bar and the gRPC stream both
consume these; nothing else about a run is visible from outside."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class Cancelled(Exception):
    """Raised by a run when its cancel callable returned True (checked between steps)."""


@dataclass(frozen=True)
class Started:
    device: str  # "cpu", "cuda:0"
    dtype: str  # what the network runs in: "float32" or "bfloat16"
    sizes: tuple[tuple[int, int], ...]  # (h, w) of each scale, coarsest first
    total_steps: int


@dataclass(frozen=True)
class Progress:
    scale: int  # 1-based
    scales: int
    step: int  # 1-based, within this scale
    steps: int  # steps at this scale
    losses: dict[str, float]  # content, style, tv, total: the objective before this step
    elapsed: float  # seconds since the run started
    eta: float  # seconds left, estimated from the work done so far


@dataclass(frozen=True)
class Preview:
    scale: int
    step: int
    image: np.ndarray = field(repr=False)  # (h, w, 3) uint8 at the current scale's size


@dataclass(frozen=True)
class Result:
    image: np.ndarray = field(repr=False)  # (H, W, C) uint8, the content's size and layout
    losses: dict[str, float]  # the objective at the final iterate, final scale
    elapsed: float


Event = Started | Progress | Preview | Result
