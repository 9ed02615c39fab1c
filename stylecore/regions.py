"""A style per region: masks guide where each style's statistics are matched.

Gatys, Ecker, Bethge, Hertzmann & Shechtman, "Controlling Perceptual Factors in
Neural Style Transfer" (CVPR 2017), sec. 4.1, spatial control: R guidance channels
T_r (masks) are propagated to every style layer, each region's Gram matrix is taken
of the features weighted by its channel, G_r = (T_r ∘ F)(T_r ∘ F)ᵀ, and matched to
that region's own style target. Where this departs from the paper, and why:

- Weights. The paper multiplies the features by T_r, which weights a position's
  outer product by T_r². We multiply by √T_r, so the Gram is the T_r-weighted sum
  Σ_p T_r(p) f(p) f(p)ᵀ: linear in the mask, so a soft (feathered) border blends the
  two regions' statistics in proportion. For binary masks the two are the same.
- Normalisation. Each guided Gram is divided by the mask's mass Σ_p T_r(p) (the
  paper leaves it unnormalised): a region's Gram is then a weighted *mean* of outer
  products, comparable with the style image's however large either region is, and an
  all-white mask gives exactly the plain Gram (tests/test_regions.py).
- Propagation: the paper's "inside" channels. A position of a layer counts for a
  region only where its receptive field (vgg.receptive_radius: conv3_1 12 px,
  conv5_1 78 px) holds none of another region's pixels (each pixel belongs to the
  region whose mask weighs most there, `labels`); there the guide is the mask
  averaged over the position's pooling footprint (soft masks blend). So no region's
  statistics read another region's pixels, and each region's term is a function of
  its own pixels: L-BFGS can then judge each region by its own term (lbfgs.py,
  BlockLBFGS) and a two-region run follows each region's single-style run
  (docs/creative.md, "A region judged by its own terms"). The cost: within 78 px of
  a border only the shallower layers' positions count, and a region narrower than
  a layer's receptive field gets no term at that layer (at the coarse levels of a
  64 px first scale, conv4_1 and conv5_1 see none of a half/half split). Plain
  averaging (until December 2026) let the stripes' half of a two-region job reach
  into the other half's deep-layer statistics: 6.4 times its single-style loss.
- Regions without a style. Pixels that no mask covers (and no background style)
  get only the content loss, and the result is composited with the content there
  through the masks' coverage (engine.py), so they keep the content exactly.

Masks arrive as gray buffers of the content's size; the style images may carry a
mask of their own (which part of the painting to take the style from), which
guides their Gram the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import images
from .buffers import check_mask, to_unit
from .params import ParamError
from .vgg import receptive_radius


@dataclass(frozen=True)
class Region:
    """One region of a job: where (a mask at the content's own size, or everywhere)
    and which style target it is pulled toward (its styles' blended Grams)."""

    mask: torch.Tensor | None  # (1, 1, H, W) fp32 in [0, 1]; None: the whole image
    styles: tuple[int, ...]  # indices into the job's styles
    blend: tuple[float, ...]  # their weights within the region, summing to 1
    weight: float  # the region's share of the style term (λ_r in the paper); 1 with equal blend weights


def mask_tensor(array: np.ndarray, name: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A mask buffer (H, W) or (H, W, C) of any depth -> (1, 1, H, W) fp32 in [0, 1].
    What a mask may be: buffers.check_mask; `size` (h, w): what it must match.
    Raises ParamError naming the mask."""
    try:
        array = check_mask(array, name, size)
    except ValueError as e:
        raise ParamError(name, str(e).removeprefix(f"{name}: ")) from None
    c = array.shape[2]
    values = to_unit(array)  # (H, W, C) float32
    gray = values[:, :, 0]
    if c in (2, 4):
        gray = gray * values[:, :, c - 1]
    return torch.from_numpy(np.clip(gray, 0.0, 1.0).copy())[None, None]


def plan_regions(masks: Sequence[torch.Tensor | None], blend: Sequence[float]) -> tuple[Region, ...]:
    """The regions of a job whose i-th style has mask masks[i] (None: no mask), with
    the styles' normalized blend weights.

    No mask at all: one region, everywhere, the styles blended (the plain method).
    Otherwise each masked style is a region of its own, weighted by its blend weight
    (times the number of styles, so equal weights give 1); the unmasked styles, if
    any, share the background (1 - the masks' union, clamped), blended among
    themselves."""
    if all(m is None for m in masks):
        return (Region(None, tuple(range(len(blend))), tuple(blend), 1.0),)
    n = len(blend)
    regions = [Region(m, (i,), (1.0,), blend[i] * n) for i, m in enumerate(masks) if m is not None]
    background = [i for i, m in enumerate(masks) if m is None]
    if background:
        share = sum(blend[i] for i in background)
        rest = 1 - coverage(masks)
        regions.append(Region(rest, tuple(background), tuple(blend[i] / share for i in background),
                              share * n / len(background)))
    return tuple(regions)


def coverage(masks: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """(1, 1, H, W): how much of each pixel some mask claims (the union, clamped to 1)."""
    total = sum(m for m in masks if m is not None)
    return total.clamp(0, 1)  # type: ignore[union-attr]


def labels(regions: Sequence[Region], size: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    """(h·w,) uint8 on `device`: for each pixel at a working size (h, w), the region whose
    mask weighs most there (ties: the first), len(regions) where no region has any (pixels
    that keep the content); None for a plain job (one region, everywhere). A region's
    guides see only its own pixels (`guides`), and L-BFGS judges each label's pixels by
    that region's terms (lbfgs.py, BlockLBFGS)."""
    if len(regions) == 1 and regions[0].mask is None:
        return None
    stack = torch.cat([images.resize(r.mask, size).clamp(0, 1) if r.mask is not None
                       else torch.ones(1, 1, *size) for r in regions], dim=1)  # (1, R, h, w)
    weight, label = stack.max(dim=1)
    label[weight <= 0] = len(regions)
    return label.to(torch.uint8).reshape(-1).to(device)


def guides(mask: torch.Tensor, size: tuple[int, int], strides: dict[str, int], device: torch.device,
           own: torch.Tensor | None = None, wrap: bool = False) -> dict[str, torch.Tensor]:
    """A mask resized to a working size (h, w), then averaged over each layer's pooling
    footprint: {layer: (1, 1, h // s, w // s) fp32 on `device`}, the sizes max pooling
    gives (it floors odd sides, as avg_pool2d does).
    own: (h·w,) bool, the region's own pixels (labels == its index): a position whose
    receptive field reaches any other pixel gets 0 (the paper's "inside" channel; see
    the module doc), the receptive field wrapping around the edges when `wrap`.
    None: no erosion (a style image's own guide, which selects statistics to take)."""
    m = images.resize(mask, size).clamp(0, 1).to(device)
    other = None if own is None else (~own.to(device)).reshape(1, 1, *size).float()  # 1: another region's pixel
    out = {}
    for name, s in strides.items():
        g = m if s == 1 else F.avg_pool2d(m, s, s)
        if other is not None:
            # Any other pixel in a position's footprint, then within its receptive
            # radius, counted in positions of this layer (max pooling of an indicator).
            # ceil_mode: the last rows and columns of a side that s does not divide are
            # read by the network's fields too, though no position's footprint holds them.
            near = other if s == 1 else F.max_pool2d(other, s, s, ceil_mode=True)
            g = g * (1 - _dilate(near, -(-receptive_radius(name) // s), wrap)[..., : g.shape[-2], : g.shape[-1]])
        out[name] = g
    return out


def _dilate(m: torch.Tensor, r: int, wrap: bool) -> torch.Tensor:
    """The largest value within r positions of each (a (2r+1)² window), m (1, 1, h, w);
    across the edges on a torus, however many times r goes round (coarse levels)."""
    if not wrap:
        return F.max_pool2d(m, 2 * r + 1, 1, r)
    h, w = m.shape[-2:]
    if r <= min(h, w):  # once round at most: a padded copy (1 + 2r/h times m, not 9 times)
        return F.max_pool2d(F.pad(m, (r, r, r, r), mode="circular"), 2 * r + 1, 1)
    ny, nx = -(-r // h), -(-r // w)
    tiled = m.repeat(1, 1, 2 * ny + 1, 2 * nx + 1)  # the torus unrolled far enough each way
    tiled = tiled[..., ny * h - r: (ny + 1) * h + r, nx * w - r: (nx + 1) * w + r]
    return F.max_pool2d(tiled, 2 * r + 1, 1)


def guided_gram(features: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Σ_p guide(p) f(p) f(p)ᵀ, unnormalized: features (1, C, h, w), any float dtype;
    guide (1, 1, h, w) fp32 -> (1, C, C) fp32.

    Only the positions the guide touches are multiplied (a region's Gram costs its
    share of the image, so R disjoint regions cost about one plain Gram), each
    weighted by √guide so that the product carries guide once (see the module doc)."""
    from .losses import gram_matrix  # here, not at the top: losses imports this module

    b, c, h, w = features.shape
    g = guide.reshape(-1)
    where = torch.nonzero(g > 0).squeeze(1)  # device sync on CUDA: the support's size
    if where.numel() == g.numel() and bool((g == 1).all()):
        return gram_matrix(features, normalize=False)
    # (1, N, C): a view for channels_last activations; the support's rows copied, weighted.
    rows = features.permute(0, 2, 3, 1).reshape(b, h * w, c).index_select(1, where)
    rows = rows * g.index_select(0, where).sqrt().to(rows.dtype)[None, :, None]
    return gram_matrix(rows.permute(0, 2, 1)[..., None], normalize=False)  # as (1, C, N, 1)
