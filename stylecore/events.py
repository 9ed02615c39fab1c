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
    tiles: tuple[int, ...] = ()  # per scale: the tile side in px where it is worked tile by tile, else 0


@dataclass(frozen=True)
class Progress:
    scale: int  # 1-based
    scales: int
    step: int  # 1-based, within this scale
    steps: int  # steps at this scale
    # content, style, tv, total (unweighted terms, weighted total): the objective
    # evaluated at this step, at the iterate before the step moved it.
    losses: dict[str, float]
    # The total of the iterate this scale would deliver now (L-BFGS: the best so far;
    # a rejected L-BFGS step shows here as losses["total"] > best).
    best: float
    elapsed: float  # seconds since the run started
    eta: float  # seconds left, estimated from the work done so far


@dataclass(frozen=True)
class TilePass:
    """One tile done, within a step of a tiled (full-resolution) evaluation: phase 1
    sums the tiles' statistics, phase 2 computes their gradients (tiling.py)."""

    scale: int
    step: int  # the step being evaluated (1-based, within the scale)
    phase: int  # 1 or 2
    phases: int
    tile: int  # 1-based
    tiles: int


@dataclass(frozen=True)
class Preview:
    scale: int
    step: int
    image: np.ndarray = field(repr=False)  # (h, w, 3) uint8 at the current scale's size


@dataclass(frozen=True)
class Result:
    image: np.ndarray = field(repr=False)  # (H, W, C) uint8, the content's size and layout
    # The objective of the delivered iterate at the final scale, as it was evaluated
    # there (L-BFGS: its best evaluation; Adam: its last), before resizing and rounding.
    losses: dict[str, float]
    elapsed: float


@dataclass(frozen=True)
class FrameStarted:
    """A sequence (sequence.py): the next frame's run begins; its own Started,
    Progress, Preview and Result events follow, then FrameDone."""

    index: int  # 0-based, in the whole sequence
    count: int | None  # frames in the sequence, when known


@dataclass(frozen=True)
class FrameDone:
    index: int
    image: np.ndarray = field(repr=False)  # (H, W, C), the frame's size, layout and depth
    losses: dict[str, float]  # as Result.losses; "temporal" for a frame after the first
    elapsed: float  # seconds this frame took (flow included)
    steps: int  # the optimizer's steps for this frame
    # Ruder et al.'s flicker measure against the previous result warped to this frame
    # (temporal.temporal_error, over the pixels the flow is trusted); None for the first.
    temporal_error: float | None = None


Event = Started | Progress | TilePass | Preview | Result | FrameStarted | FrameDone
