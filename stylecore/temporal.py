"""Frames that do not flicker: optical flow, warping and the temporal loss.

Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos" (GCPR 2016). A frame
after the first starts from the previous stylized frame warped along the optical flow
to this frame, and a temporal term pulls it toward that warped frame wherever the flow
is reliable:

    L_temporal(x) = (1/C) Σ_k c_k (x_k - ω(x_prev)_k)²      (paper eq. 5 has 1/D, D = C·H·W)

with c the per-pixel weight: 0 where the previous frame holds no such point
(disocclusions, found by a forward-backward consistency check) and at motion
boundaries, 1 elsewhere. Where this departs from the paper, and why:

- Flow. The paper used DeepFlow or EpicFlow (seconds to minutes a frame, external
  binaries). We use OpenCV's DIS optical flow (Kroeger et al. 2016, preset MEDIUM):
  a maintained library, milliseconds a frame at 512 px; its errors are larger, and
  the consistency check below marks where they show.
- Only the short-term term (the previous frame). The paper's long-term terms and
  multi-pass algorithm are left for later: the drift test (a static background over
  100 frames) measures what the short-term term alone keeps.
- Normalisation: a sum over the pixels, not the paper's mean. Our style term is
  normalised so that its gradient per pixel does not shrink with the image
  (losses.Objective.terms); a mean would make the temporal term's pull on each pixel
  1/(H·W) as strong, weaker the larger the frame: at 512x288 the paper's form needed a
  weight near 10⁹ to hold a static background at all (docs/sequences.md, "Drift").
  Images are in [0, 1] (the paper: 0..255), so the weight is ours, chosen by
  measurement (docs/sequences.md, "The temporal weight").
- Static pixels. Where zero motion explains the two frames clearly better than the
  estimated flow, or as well when that flow is under a quarter of a pixel, the flow is
  taken as zero (`settle`): DIS leaks fractions of a pixel of
  motion onto a still background next to a moving object, and every warp along such a
  flow shifts (and, bilinear, blurs) the stylized background a little, frame after
  frame (docs/sequences.md, "Drift").
- The warp of the previous result is Lanczos, not the paper's bilinear: held by the
  temporal term, a frame keeps what the warp gives it, and bilinear blur compounds
  from frame to frame wherever the motion is not a whole number of pixels
  (docs/sequences.md, "Sharpness").

No file I/O here (stylecore's rule): frames come in and go out as arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Forward-backward consistency (Ruder et al., sec. 3.3, from Sundaram et al. 2010): a
# pixel is disoccluded where |w̃ + ŵ|² > OCCLUSION_REL (|w̃|² + |ŵ|²) + OCCLUSION_ABS,
# and on a motion boundary where |∇û|² + |∇v̂|² > BOUNDARY_REL |ŵ|² + BOUNDARY_ABS
# (flow in pixels). The paper's constants.
OCCLUSION_REL, OCCLUSION_ABS = 0.01, 0.5
BOUNDARY_REL, BOUNDARY_ABS = 0.01, 0.002

# Static pixels (ours; see the module doc): residuals are mean absolute luma differences
# (0..255) over a STATIC_WINDOW² neighbourhood, with zero motion (r0) and along the
# estimated flow (rf). The flow is set to zero where r0 < rf - STATIC_TOLERANCE (zero
# motion is clearly the better explanation: the flow leaked there from a moving object),
# or where it is shorter than STATIC_FLOW px and r0 <= rf + STATIC_SAME (zero motion
# explains the frames as well, within rounding: the estimator's sub-pixel noise on a
# still area). A slow pan over a smooth area (0.2 px a frame over 5 levels a pixel: r0
# about 1) keeps its flow, and so does any longer flow over a flat area (a clear sky).
STATIC_WINDOW, STATIC_TOLERANCE, STATIC_FLOW, STATIC_SAME = 5, 1.0, 0.25, 0.25


@dataclass(frozen=True)
class Temporal:
    """What a frame after the first is pulled toward, at the content's full size.

    target: (1, 3, H, W) fp32 in [0, 1], the previous stylized frame warped to this one
    weight: (1, 1, H, W) fp32 in [0, 1], the per-pixel c of the temporal loss
    """

    target: torch.Tensor
    weight: torch.Tensor


def _gray(frame: np.ndarray) -> np.ndarray:
    """(H, W, C) of any depth -> (H, W) uint8, what DIS takes."""
    from .buffers import to_unit

    unit = to_unit(frame)
    rgb = unit[:, :, :3] if unit.shape[2] >= 3 else np.repeat(unit[:, :, :1], 3, axis=2)
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(gray * 255 + 0.5, 0, 255).astype(np.uint8)


def optical_flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow (dx, dy) such that source(p) ≈ target(p + flow(p)):
    for each pixel of `source`, where it went in `target`. Frames: (H, W, C), any depth."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    source, target = _gray(source), _gray(target)
    return settle(dis.calc(source, target, None), source, target)


def settle(flow: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`flow` (H, W, 2) with zero motion where the frames say nothing moved (see
    STATIC_WINDOW); source, target: (H, W) uint8 luma. A new array."""
    import cv2

    s, t = source.astype(np.float32), target.astype(np.float32)
    box = (STATIC_WINDOW, STATIC_WINDOW)
    still = cv2.blur(np.abs(s - t), box)  # r0
    moved = cv2.blur(np.abs(s - warp(t[..., None], flow)[..., 0]), box)  # rf
    short = (flow**2).sum(-1) < STATIC_FLOW**2
    zero = (still < moved - STATIC_TOLERANCE) | (short & (still <= moved + STATIC_SAME))
    out = flow.copy()
    out[zero] = 0
    return out


def warp(image: np.ndarray, flow: np.ndarray, sharp: bool = False) -> np.ndarray:
    """image sampled at p + flow(p) for every pixel p (points outside the image take the
    nearest edge pixel): bilinear, or with `sharp` Lanczos (8x8), for an image that is
    warped again and again (see follow). image: (H, W, C) float32; flow: (H, W, 2)."""
    import cv2

    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mode = cv2.INTER_LANCZOS4 if sharp else cv2.INTER_LINEAR
    out = cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], mode, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def consistency(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """(H, W) float32 c: 1 where the flow from this frame back to the previous one
    (`backward`, this frame's pixels) is confirmed by the flow forward from the previous
    frame (`forward`, the previous frame's pixels), 0 at disocclusions, motion
    boundaries and points the previous frame did not hold (see the module doc)."""
    returned = warp(forward, backward)  # w̃: the forward flow where each pixel came from
    both = returned + backward
    occluded = (both**2).sum(-1) > OCCLUSION_REL * ((returned**2).sum(-1) + (backward**2).sum(-1)) + OCCLUSION_ABS
    du = np.gradient(backward[..., 0])
    dv = np.gradient(backward[..., 1])
    gradient = du[0] ** 2 + du[1] ** 2 + dv[0] ** 2 + dv[1] ** 2
    boundary = gradient > BOUNDARY_REL * (backward**2).sum(-1) + BOUNDARY_ABS
    # Points that come from outside the previous frame (the edge a pan reveals): the
    # warp copies the edge there, and both flows agree on it, so the check above passes.
    h, w = backward.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = xs + backward[..., 0], ys + backward[..., 1]
    outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    return (~(occluded | boundary | outside)).astype(np.float32)


def follow(previous_frame: np.ndarray, frame: np.ndarray, previous_result: np.ndarray) -> Temporal:
    """The temporal target of `frame`: `previous_result` (the stylized previous frame,
    (H, W, 3) float32 in [0, 1]) warped to `frame`, and where that can be trusted."""
    backward = optical_flow(frame, previous_frame)  # this frame's pixels -> the previous frame
    forward = optical_flow(previous_frame, frame)
    # Each frame's result is warped from the last, so the interpolation's blur compounds:
    # thirty half-pixel bilinear warps keep 0.43 of a texture's gradient, Lanczos 0.97
    # (docs/sequences.md, "Sharpness"). Lanczos overshoots a little: clipped to [0, 1].
    warped = np.clip(warp(np.ascontiguousarray(previous_result, np.float32), backward, sharp=True), 0, 1)
    c = consistency(backward, forward)
    return Temporal(target=torch.from_numpy(warped).permute(2, 0, 1)[None].contiguous(),
                    weight=torch.from_numpy(c)[None, None])


def blocks(weight: torch.Tensor, within: torch.Tensor | None = None) -> torch.Tensor:
    """(h·w,) uint8 on weight's device, from the temporal weight at a working size
    (1, 1, h, w): 1 where the temporal term holds a pixel (c >= 0.5), 0 where it leaves
    it free (disocclusions, motion boundaries); with `within` ((h·w,) uint8, other
    blocks: a region job's), each of those split in two. L-BFGS keeps one memory per
    block (lbfgs.py): with one, the temporal term's stiff curvature on the held pixels
    sets the step scale γ for all, and the free ones, which start from whatever the
    warp put there, barely move in a frame's few steps (docs/sequences.md, "The method")."""
    held = (weight.reshape(-1) >= 0.5).to(torch.uint8)
    return held if within is None else within * 2 + held


def temporal_error(result: np.ndarray, warped_previous: np.ndarray, weight: np.ndarray) -> float:
    """Ruder et al.'s measure of flicker: the mean squared difference between a
    stylized frame and the previous stylized frame warped to it, over the pixels
    `weight` (H, W) marks reliable. Images (H, W, 3) float in [0, 1]."""
    d = ((result - warped_previous) ** 2).sum(-1)
    return float((d * weight).sum() / max(float(weight.sum()) * result.shape[-1], 1.0))


def temporal_loss(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1/C) Σ c (x - ω)², summed over the pixels (see the module doc): image and target
    (1, C, h, w) in [0, 1], weight (1, 1, h, w)."""
    return _weighted(image, target, weight).sum() / image.shape[1]


def temporal_map(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """temporal_loss's terms per pixel, (h, w): their sum is temporal_loss (split by a
    region job's blocks, losses.py)."""
    return _weighted(image, target, weight).sum((0, 1)) / image.shape[1]


def _weighted(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """c (x - ω)², (1, C, h, w)."""
    return weight * (image.float() - target).pow(2)
