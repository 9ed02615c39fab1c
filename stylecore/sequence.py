"""A sequence of frames (a video, an animation) stylized without flicker.

Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos" (GCPR 2016): the first
frame is stylized as a photo (the whole pyramid); each later one starts from the
previous result warped along the optical flow to it, and its objective has a temporal
term that holds it there wherever the flow is reliable (temporal.py). Where this
departs from the paper: frames after the first run one scale, the final one (the
warped start is already at the working size, and coarse scales would blur it away),
for `params.steps` steps; the paper's long-term terms and multi-pass are not used.

One frame in memory at a time, plus the previous frame and its result: a sequence of
any length runs in flat memory. Resuming: `previous` gives the last frame done and its
result, and the sequence goes on as if it had never stopped (the same warps).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from . import temporal
from .buffers import to_unit
from .events import Event, FrameDone, FrameStarted, Result, Started
from .params import StyleParams


def frame_params(params: StyleParams) -> StyleParams:
    """The parameters of a frame after the first (see the module doc)."""
    return params.replace(scales=1, init="image")


def follow_inputs(previous_frame: np.ndarray, previous_result: np.ndarray, frame: np.ndarray
                  ) -> tuple[np.ndarray, temporal.Temporal]:
    """What a frame after the first starts from and is held to: the previous result
    warped to `frame` ((H, W, 3) float32 in [0, 1], its init image) and the temporal
    target. The one place both a local sequence and a server's frame job make them."""
    if previous_frame.shape[:2] != frame.shape[:2] or previous_result.shape[:2] != frame.shape[:2]:
        raise ValueError(f"the previous frame is {previous_frame.shape[1]}x{previous_frame.shape[0]} and its result "
                         f"{previous_result.shape[1]}x{previous_result.shape[0]}; this frame is "
                         f"{frame.shape[1]}x{frame.shape[0]}: a sequence's frames share one size")
    rgb = to_unit(previous_result)
    rgb = rgb[:, :, :3] if rgb.shape[2] >= 3 else np.repeat(rgb[:, :, :1], 3, axis=2)
    follow = temporal.follow(previous_frame, frame, rgb)
    return follow.target[0].permute(1, 2, 0).numpy(), follow


def stylize_frames(
    engine,
    frames: Iterable[np.ndarray],
    styles: Sequence[np.ndarray],
    params: StyleParams,
    cancel: Callable[[], bool] | None = None,
    device: str = "auto",
    budget: int | None = None,
    count: int | None = None,
    first_index: int = 0,
    previous: tuple[np.ndarray, np.ndarray] | None = None,
    preview_every: int = 0,
    style_masks: Sequence[np.ndarray | None] = (),
    style_guides: Sequence[np.ndarray | None] = (),
) -> Iterator[Event]:
    """Yields, per frame: FrameStarted, the frame's own run's events, FrameDone.

    frames: (H, W, C) arrays of one size, any depth; count: how many, when known;
    style_masks, style_guides: a style per region, as Engine.prepare takes them, the
    same for every frame (the masks of the frames' size);
    first_index: the index of the first one in the whole sequence (resuming);
    previous: (the frame before the first, its result), to resume a sequence.
    Raises stylecore.Cancelled within a step of cancel() returning True (the frames
    done so far have been yielded)."""
    prev_frame, prev_result = previous if previous is not None else (None, None)
    later = frame_params(params)
    regions = dict(style_masks=style_masks, style_guides=style_guides)
    index = first_index
    for frame in frames:
        yield FrameStarted(index, count)
        t0 = time.perf_counter()
        if prev_frame is not None and prev_frame.shape[:2] != frame.shape[:2]:
            raise ValueError(f"frame {index + 1} is {frame.shape[1]}x{frame.shape[0]}, the frame before it "
                             f"{prev_frame.shape[1]}x{prev_frame.shape[0]}: a sequence's frames share one size")
        follow, warped = None, None
        if prev_frame is None:
            run = engine.run(frame, styles, params, cancel, preview_every, device, budget, **regions)
        else:
            warped, follow = follow_inputs(prev_frame, prev_result, frame)
            run = engine.run(frame, styles, later, cancel, preview_every, device, budget, init_image=warped,
                             temporal=follow, **regions)
        steps, result = 0, None
        for event in run:
            if isinstance(event, Started):
                steps = event.total_steps
            if isinstance(event, Result):
                result = event
            else:
                yield event
        assert result is not None
        error = None
        if follow is not None:
            error = temporal.temporal_error(to_unit(result.image)[:, :, :3], warped, follow.weight[0, 0].numpy())
        yield FrameDone(index, result.image, result.losses, time.perf_counter() - t0, steps, error)
        prev_frame, prev_result = frame, result.image
        index += 1
