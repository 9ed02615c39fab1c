"""Frames that do not flicker: optical flow, warping and the temporal loss.

Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos" (GCPR 2016). A frame
after the first starts from the previous stylized frame warped along the optical flow
to this frame, and a temporal term pulls it toward that warped frame wherever the flow
is reliable:

    L_temporal(x) = (1/D) Σ_k c_k (x_k - ω(x_prev)_k)²      (paper eq. 5; D = C·H·W)

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
- Pixel scale. Images are in [0, 1] here (the paper: 0..255), so the weight is ours,
  chosen by measurement (docs/sequences.md, "The temporal weight").

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
    return dis.calc(_gray(source), _gray(target), None)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """image sampled at p + flow(p) for every pixel p (bilinear; points outside the
    image take the nearest edge pixel). image: (H, W, C) float32; flow: (H, W, 2)."""
    import cv2

    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
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
    warped = warp(np.ascontiguousarray(previous_result, np.float32), backward)
    c = consistency(backward, forward)
    return Temporal(target=torch.from_numpy(warped).permute(2, 0, 1)[None].contiguous(),
                    weight=torch.from_numpy(c)[None, None])


def temporal_error(result: np.ndarray, warped_previous: np.ndarray, weight: np.ndarray) -> float:
    """Ruder et al.'s measure of flicker: the mean squared difference between a
    stylized frame and the previous stylized frame warped to it, over the pixels
    `weight` (H, W) marks reliable. Images (H, W, 3) float in [0, 1]."""
    d = ((result - warped_previous) ** 2).sum(-1)
    return float((d * weight).sum() / max(float(weight.sum()) * result.shape[-1], 1.0))


def temporal_loss(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1/D) Σ c (x - ω)²: image and target (1, 3, h, w) in [0, 1], weight (1, 1, h, w)."""
    return (weight * (image.float() - target).pow(2)).mean()
