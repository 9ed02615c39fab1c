"""Sequences (Ruder et al. 2016): flow, warping, the consistency mask, the temporal
loss, and stylize_frames over a few small frames (seeded random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylecore import Cancelled, FrameDone, FrameStarted, ParamError, preset, stylize_frames
from stylecore import temporal as T


def _texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth random texture (H, W, 3) uint8: every pixel distinguishable for the flow."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((h, w, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def _shifted(image: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    """The scene moved by (dx, dy) px: image content at p appears at p + (dx, dy)."""
    return np.roll(image, (dy, dx), axis=(0, 1))


def test_flow_of_a_known_translation():
    a = _texture()
    b = _shifted(a, 3, 2)
    flow = T.optical_flow(a, b)  # a(p) ≈ b(p + flow(p))
    inner = flow[12:-12, 12:-12]
    assert np.allclose(np.median(inner[..., 0]), 3, atol=0.25)
    assert np.allclose(np.median(inner[..., 1]), 2, atol=0.25)


def test_warp_moves_pixels_where_the_flow_says():
    image = np.zeros((20, 30, 3), np.float32)
    image[5, 10] = 1.0
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0] = 4.0  # every pixel samples 4 px to its right
    out = T.warp(image, flow)
    assert out[5, 6, 0] == 1.0 and out[5, 10, 0] == 0.0


def test_the_warped_previous_frame_is_the_current_one():
    a = _texture()
    b = _shifted(a, 2)
    backward = T.optical_flow(b, a)
    warped = T.warp(a.astype(np.float32), backward)
    assert np.abs(warped[8:-8, 8:-8] - b[8:-8, 8:-8].astype(np.float32)).mean() < 2.0


def test_the_consistency_mask_marks_a_revealed_region_as_occluded():
    """A square moves right over a static background: the background it uncovers (at its
    old place's left part) has no counterpart in the previous frame."""
    background = _texture(seed=1)
    square = _texture(40, 40, seed=2)
    prev, cur = background.copy(), background.copy()
    prev[28:68, 30:70] = square
    cur[28:68, 42:82] = square  # moved 12 px right
    backward, forward = T.optical_flow(cur, prev), T.optical_flow(prev, cur)
    c = T.consistency(backward, forward)
    revealed = c[34:62, 32:40]  # uncovered background, well inside
    static = c[75:90, 95:120]   # far from the motion
    assert revealed.mean() < 0.5 and static.mean() > 0.9


def test_points_from_outside_the_previous_frame_are_not_trusted():
    a = _texture()
    b = _shifted(a, -4)  # the scene moves left: a new strip enters at the right edge
    c = T.consistency(T.optical_flow(b, a), T.optical_flow(a, b))
    assert c[:, -3:].mean() < 0.1 and c[20:-20, 20:-20].mean() > 0.9


def test_temporal_loss_known_answer():
    image = torch.zeros(1, 3, 2, 2)
    target = torch.ones(1, 3, 2, 2)
    weight = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(T.temporal_loss(image, target, weight)) == pytest.approx(0.25)  # (1/D) Σ c (x - ω)²


def _clip(n: int) -> list[np.ndarray]:
    base = _texture(64, 96 + 2 * n, seed=3)
    return [np.ascontiguousarray(base[:, 2 * i:2 * i + 96]) for i in range(n)]


@pytest.fixture(scope="module")
def tiny():
    return preset("default").replace(size=64, scales=2, min_scale=32, coarse_steps=4, steps=4, precision="fp32")


def _run(engine, frames, params, **kw):
    return [e for e in stylize_frames(engine, frames, [_texture(48, 48, seed=9)], params, **kw)]


def test_a_sequence_yields_each_frame_in_order(engine, tiny):
    events = _run(engine, _clip(3), tiny, count=3)
    started = [e.index for e in events if isinstance(e, FrameStarted)]
    done = [e for e in events if isinstance(e, FrameDone)]
    assert started == [0, 1, 2] and [d.index for d in done] == [0, 1, 2]
    assert done[0].temporal_error is None and all(d.temporal_error is not None for d in done[1:])
    assert "temporal" in done[1].losses and "temporal" not in done[0].losses
    assert done[0].steps == 8 and done[1].steps == 4  # later frames: the final scale only
    assert all(d.image.shape == (64, 96, 3) and d.image.dtype == np.uint8 for d in done)


def test_the_temporal_loss_lowers_the_temporal_error(engine, tiny):
    """The same 3 frames, the same warped starts, with the temporal term and without it
    (weight 0). At 64 px after 4 steps the style term still pulls hard, so the weight
    here is 100x the default's (which the benchmark chose at 512 px: docs/sequences.md)."""
    frames = _clip(3)

    def errors(weight):
        done = [e for e in _run(engine, frames, tiny.replace(temporal_weight=weight)) if isinstance(e, FrameDone)]
        return sum(d.temporal_error for d in done[1:])

    assert errors(100 * tiny.temporal_weight) < 0.7 * errors(0.0)


def test_a_cancelled_sequence_resumes_where_it_stopped(engine, tiny):
    frames = _clip(3)
    whole = [e.image for e in _run(engine, frames, tiny) if isinstance(e, FrameDone)]
    done = []
    with pytest.raises(Cancelled):
        for e in stylize_frames(engine, frames, [_texture(48, 48, seed=9)], tiny,
                                cancel=lambda: len(done) == 2):
            if isinstance(e, FrameDone):
                done.append(e.image)
    assert len(done) == 2
    resumed = [e for e in stylize_frames(engine, frames[2:], [_texture(48, 48, seed=9)], tiny, first_index=2,
                                         previous=(frames[1], done[1])) if isinstance(e, FrameDone)]
    assert resumed[0].index == 2 and np.array_equal(resumed[0].image, whole[2])


def test_frames_of_different_sizes_are_refused(engine, tiny):
    frames = _clip(2)
    frames[1] = frames[1][:, :80]
    with pytest.raises(ValueError, match="frame 2 is 80x64, the frame before it 96x64"):
        _run(engine, frames, tiny)


def test_a_misshapen_temporal_target_is_refused(engine, tiny):
    follow = T.Temporal(torch.zeros(1, 3, 10, 10), torch.ones(1, 1, 10, 10))
    with pytest.raises(ParamError, match="temporal"):
        engine.prepare(_clip(1)[0], [_texture(48, 48)], tiny, temporal=follow)


def test_memory_stays_flat_over_a_long_sequence(engine):
    """50 frames: the process holds no more after the 50th than after the 10th (within
    what the allocator keeps), since only the previous frame and result are kept."""
    from stylecore.memory import resident_bytes

    params = preset("default").replace(size=32, scales=1, steps=1, precision="fp32")
    base = _texture(32, 48 + 50, seed=4)
    frames = (np.ascontiguousarray(base[:, i:i + 48]) for i in range(50))
    seen = {}
    for e in stylize_frames(engine, frames, [_texture(32, 32)], params):
        if isinstance(e, FrameDone) and e.index in (9, 49):
            seen[e.index] = resident_bytes()
    assert seen[49] - seen[9] < 20 << 20, seen
