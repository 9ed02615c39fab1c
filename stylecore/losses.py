"""The loss terms of Gatys et al. 2016, as small functions and one objective module.

Every sum here is accumulated in fp32, whatever precision the network ran in: a Gram
matrix sums H*W products per entry, which overflows fp16 at ordinary image sizes
(a known source of NaN in other implementations) and, rounded to bf16, would lose the
small differences the style loss is made of. bf16 activations are multiplied as they
are (their products are exact in the fp32 accumulator), ROWS positions at a time:
see _Gram.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .regions import guided_gram
from .temporal import temporal_loss, temporal_map
from .vgg import stride


# Positions per partial Gram when the activations are bf16 (see _Gram).
ROWS = 512


class _Gram(torch.autograd.Function):
    """G = Xᵀ X for X: (B, N, C), fp32 or bf16; G is fp32.

    Autograd's own backward of bmm(Xᵀ, X) does two matmuls (one per operand) and adds
    them; the gradient is one matmul: dL/dX = X (dG + dGᵀ). That halves the Gram's
    backward cost.

    bf16 X (on CPU; see gram_matrix): a bf16 matmul is 3-4x faster than an fp32 one on
    CPUs with AVX512-BF16 (and AMX), and the Gram was a fifth of a step in fp32. But
    its result comes back rounded to bf16, and PyTorch's CPU matmul has no fp32 output
    for bf16 operands.
    So the positions are cut into blocks of ROWS; each block's Gram is accumulated in
    fp32 inside the matmul (products of bf16 values are exact there) and rounded once
    to bf16, and the blocks are summed in fp32. Every entry of a block's Gram of
    post-ReLU (non-negative) activations is then within bf16's unit roundoff (2^-8,
    relative) of its exact value, so the whole G is too, and mostly far closer: the
    blocks' roundings are independent (tests/test_losses.py). 512 positions a block:
    256 cost 1.3-1.6x as much in the sums of the blocks, 1024 and more gained nothing
    (measured on this AVX512-BF16 EPYC). Measured at a converged 400 px result:
    the objective's gradient moves by 1.3% (norm), against 46% between the bf16 and
    the fp32 network (docs/precision.md, "Gram matrices of bf16 activations"). The
    gradient dL/dX is made in X's dtype: X's own gradient, which autograd rounds to it
    anyway.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        if x.dtype != torch.bfloat16:
            return torch.bmm(x.transpose(1, 2), x)  # (B, C, C)
        b, n, c = x.shape
        whole = n // ROWS * ROWS
        g = x.new_zeros((b, c, c), dtype=torch.float32)
        if whole:
            blocks = x[:, :whole].reshape(b, whole // ROWS, ROWS, c).flatten(0, 1)  # (B·K, ROWS, C)
            g += torch.bmm(blocks.transpose(1, 2), blocks).view(b, -1, c, c).sum(1, dtype=torch.float32)
        if whole < n:
            rest = x[:, whole:]
            g += torch.bmm(rest.transpose(1, 2), rest).float()
        return g

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.bmm(x, (grad + grad.transpose(1, 2)).to(x.dtype))  # (B, N, C)


def gram_matrix(features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """features: (B, C, H, W), any float dtype -> (B, C, C) fp32.

    G = F Fᵀ with F the (C, H*W) matrix of one image's activations (paper eq. 3).
    With `normalize`, G is divided by H*W so that images of different sizes compare.
    bf16 features on a CPU are multiplied in bf16 blocks with fp32 sums (see _Gram);
    everything else in fp32, CUDA included: there cuBLAS may add partial products in
    bf16 (torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction), which
    the blocks' bound does not cover. Targets, computed once, pass fp32 features: exact
    at no cost that matters.
    """
    b, c, h, w = features.shape
    if features.dtype != torch.bfloat16 or features.device.type != "cpu":
        features = features.float()
    # (B, N, C): a view, no copy, for the channels_last activations the engine uses.
    x = features.permute(0, 2, 3, 1).reshape(b, h * w, c)
    g = _Gram.apply(x)
    return g / (h * w) if normalize else g


def as_floats(terms: Mapping[str, torch.Tensor]) -> dict:
    """The terms as Python numbers: floats, and "blocks" a tuple of floats (a device sync)."""
    return {k: float(v.detach()) if v.dim() == 0 else tuple(v.detach().tolist()) for k, v in terms.items()}


def total_variation(image: torch.Tensor, wrap: bool = False, blocks: torch.Tensor | None = None,
                    count: int = 0) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels; 0 on a constant image.
    image: (B, 3, H, W). A smoothness prior (Mahendran & Vedaldi 2015), not in Gatys.
    wrap: the image is a torus (a tileable texture): the last row's neighbour is the
    first row, and likewise for columns.
    blocks: (H, W) labels 0..count-1 (B = 1): the (count,) shares of the same number,
    each difference counted in the block of its first pixel (the upper, the left)."""
    x = image.float()
    if blocks is not None:
        return _by_block(_differences(x, wrap), blocks, count)
    if wrap:
        return (x - x.roll(1, -2)).pow(2).mean() + (x - x.roll(1, -1)).pow(2).mean()
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() if x.shape[-2] > 1 else x.new_zeros(())
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean() if x.shape[-1] > 1 else x.new_zeros(())
    return dh + dw


def _differences(x: torch.Tensor, wrap: bool) -> torch.Tensor:
    """(H, W): each pixel's squared differences to its lower and right neighbours, each
    direction divided by its count of differences as total_variation's means are."""
    h, w = x.shape[-2:]
    out = x.new_zeros(h, w)
    if wrap:
        out += (x.roll(-1, -2) - x).pow(2).sum((0, 1)) / x.numel()
        out += (x.roll(-1, -1) - x).pow(2).sum((0, 1)) / x.numel()
        return out
    if h > 1:
        out[:-1] += (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum((0, 1)) / x[..., 1:, :].numel()
    if w > 1:
        out[:, :-1] += (x[..., :, 1:] - x[..., :, :-1]).pow(2).sum((0, 1)) / x[..., :, 1:].numel()
    return out


def _by_block(values: torch.Tensor, blocks: torch.Tensor, count: int) -> torch.Tensor:
    """(count,): the sums of `values` (H, W) over each block's pixels."""
    return torch.bincount(blocks.reshape(-1).long(), weights=values.reshape(-1), minlength=count).float()


def _shares(blocks: torch.Tensor, count: int, layer: str) -> torch.Tensor:
    """(1, count, h, w): each position's share of each block's pixels at `layer`, a
    block's indicator averaged over the position's footprint. blocks: (H, W) labels."""
    s = stride(layer)
    maps = []
    for k in range(count):  # one (H, W) map at a time: no (count, H, W) temporary
        m = (blocks == k).float()[None, None]
        maps.append(F.avg_pool2d(m, s, s) if s > 1 else m)
    return torch.cat(maps, dim=1)


def blend_grams(grams: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Several style images as one target: the weighted mean of their Grams
    (jcjohnson/neural-style's -style_blend_weights)."""
    return sum(w * g for w, g in zip(weights, grams))  # type: ignore[return-value]


@dataclass(frozen=True)
class StyleTarget:
    """What one region's style statistics are pulled toward (regions.py).

    grams: {style layer: (1, C, C) fp32, normalized: the region's styles' blended Grams}
    guides: {style layer: (1, 1, h, w) fp32, the region's mask at that layer's
        resolution over the whole image}, or None: the region is the whole image
    weight: the region's share of the style term (λ_r)
    """

    grams: dict[str, torch.Tensor]
    guides: dict[str, torch.Tensor] | None = None
    weight: float = 1.0

    def masses(self) -> dict[str, float] | None:
        """{layer: Σ guide}: the positions the region holds at each layer (soft ones in
        part); None for an unguided target. A device sync: call once per scale."""
        return None if self.guides is None else {k: float(g.sum()) for k, g in self.guides.items()}


@dataclass
class Statistics:
    """What the objective needs from an image's activations: sums over positions, so
    that tiles of one image add up to the whole image's (tiling.py).

    grams: {(region, style layer): (1, C, C) fp32 unnormalized Gram Σ_positions w f fᵀ},
        w the region's guide (1 for an unguided region)
    positions: {style layer: the number of positions summed (H·W of the whole image)}
    content_sq: fp32 scalar Σ (F - T)² over the content layer's elements
    content_count: the number of those elements (C·H·W of the whole image)
    content_blocks: (K,) fp32, content_sq split by the objective's blocks (each
        position's share of each block's pixels), or None without blocks
    """

    grams: dict[tuple[int, str], torch.Tensor]
    positions: dict[str, int]
    content_sq: torch.Tensor
    content_count: int
    content_blocks: torch.Tensor | None = None

    def add(self, other: "Statistics") -> "Statistics":
        return Statistics(
            grams={k: g + other.grams[k] for k, g in self.grams.items()},
            positions={k: n + other.positions[k] for k, n in self.positions.items()},
            content_sq=self.content_sq + other.content_sq,
            content_count=self.content_count + other.content_count,
            content_blocks=None if self.content_blocks is None else self.content_blocks + other.content_blocks,
        )


class Objective(torch.nn.Module):
    """total = content_weight·content + style_weight·Σ_r λ_r Σ_l w_l·style_{r,l} + tv_weight·tv.

    Built once per scale from the targets (Engine.objective). Both ways of evaluating
    it go through `terms`: the whole image at once (`forward`), or tile by tile
    (tiling.py), which sums `statistics` over tiles first. A plain job has one style
    target, unguided; a job with masks one per region (regions.py).
    """

    def __init__(
        self,
        content_layer: str,
        content_target: torch.Tensor,
        style_targets: Sequence[StyleTarget],
        style_layer_weights: Mapping[str, float],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        wrap: bool = False,
        temporal: tuple[torch.Tensor, torch.Tensor] | None = None,
        temporal_weight: float = 0.0,
        blocks: torch.Tensor | None = None,
    ):
        """temporal: (target (1, 3, h, w), weight (1, 1, h, w)) at this level's size, for a
        frame after the first of a sequence (temporal.py), weighted by temporal_weight.
        blocks: (h, w) uint8 at this level's size, a region job's labels (regions.labels:
        region r's pixels r, the pixels no region claims len(style_targets)): `terms`
        then also gives each block's part of the total (see there)."""
        super().__init__()
        self.content_layer = content_layer
        self.content_target = content_target  # (1, C, H, W), detached
        self.style_targets = list(style_targets)
        self.style_layer_weights = dict(style_layer_weights)
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        self.wrap = wrap  # the image is a torus: TV wraps (the network's padding is the caller's)
        self.temporal, self.temporal_weight = temporal, temporal_weight
        self.style_layers = list(self.style_targets[0].grams)
        # {(region, layer): Σ guide} of the guided regions' whole-image guides; a region
        # with no mass at a layer (an empty mask) has no term there, and no Gram is taken.
        self.masses = {(r, k): n for r, t in enumerate(self.style_targets) for k, n in (t.masses() or {}).items()}
        self.blocks = blocks
        self.block_count = len(self.style_targets) + 1
        # (1, K, h/8, w/8): each content-layer position's share of each block's pixels.
        self.content_shares = None if blocks is None else _shares(blocks, self.block_count, content_layer)

    @property
    def needs_image(self) -> bool:
        """Whether a term reads the image's pixels themselves (TV, the temporal term): the
        tiled path then keeps a whole-image copy for them."""
        return bool(self.tv_weight) or self.temporal is not None

    def image_terms(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms of the pixels themselves: image (1, 3, h, w) in [0, 1], the whole image."""
        out = {}
        if self.tv_weight:
            out["tv"] = total_variation(image, self.wrap)
        if self.temporal is not None:
            out["temporal"] = temporal_loss(image, *self.temporal)
        if self.blocks is not None:  # each block's share of them, (K,) each (no gradient needed)
            with torch.no_grad():
                if self.tv_weight:
                    out["tv blocks"] = total_variation(image.detach(), self.wrap, self.blocks, self.block_count)
                if self.temporal is not None:
                    out["temporal blocks"] = _by_block(temporal_map(image.detach(), *self.temporal), self.blocks,
                                                       self.block_count)
        return out

    @property
    def layers(self) -> list[str]:
        """The network layers this objective reads."""
        return [*self.style_layers, self.content_layer]

    def statistics(self, features: Mapping[str, torch.Tensor], content_target: torch.Tensor,
                   where: Mapping[str, tuple[slice, slice]] | None = None) -> Statistics:
        """The sums over the positions of `features` (a whole image, or a tile's core
        with the matching slice of the content target and `where`: {layer: (rows,
        cols)}, the core's place in the whole image's activations, where the guides
        are read)."""
        grams, positions = {}, {}
        for name in self.style_layers:
            f = features[name]
            positions[name] = f.shape[-2] * f.shape[-1]
            plain = None
            for r, target in enumerate(self.style_targets):
                if target.guides is None:
                    plain = gram_matrix(f, normalize=False) if plain is None else plain
                    grams[(r, name)] = plain
                elif self.masses[(r, name)] > 0:
                    guide = target.guides[name]
                    if where is not None:
                        guide = guide[..., where[name][0], where[name][1]]
                    grams[(r, name)] = guided_gram(f, guide)
        f = features[self.content_layer]
        sq = (f.float() - content_target.float()).pow(2)
        blocks = None
        if self.content_shares is not None:
            shares = self.content_shares
            if where is not None:
                shares = shares[..., where[self.content_layer][0], where[self.content_layer][1]]
            with torch.no_grad():
                blocks = (sq.detach().sum(1, keepdim=True) * shares).sum((0, 2, 3))  # (K,)
        return Statistics(grams, positions, sq.sum(), f.numel(), blocks)

    def terms(self, stats: Statistics, pixels: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The scalar fp32 terms content, style, tv (and temporal, for a frame after the
        first) and total from whole-image statistics and `image_terms` (None: none weighted).

        Content: the mean squared difference of the content layer's activations (paper
        eq. 1 up to a constant factor, as in the reference notebook).

        Style, per layer, in the reference notebook's scaling:
            mean((G - G_s)²) / (C·H·W)       with unnormalized G = F Fᵀ,
        computed with H·W-normalized Grams g = G / (H·W), the same number:
            (H·W)² · mean((g - g_s)²) / (C·H·W) = (H·W / C) · mean((g - g_s)²)
        but with small fp32 values; it also lets the style image have its own size (its
        Gram is normalized by its own H·W). A guided region is the same with its mass
        Σ guide in place of H·W: its term grows with its area, as a plain run's on that
        area would, and a region that covers everything is the plain term exactly."""
        c = stats.content_sq / stats.content_count
        s = c.new_zeros(())
        regions = [c.new_zeros(()) for _ in self.style_targets]  # each region's weighted style term
        for (r, name), gram in stats.grams.items():
            target = self.style_targets[r]
            n = self.masses[(r, name)] if target.guides is not None else stats.positions[name]
            term = target.weight * self.style_layer_weights[name] * (
                (gram / n - target.grams[name]).pow(2).mean() * (n / gram.shape[-1]))
            s = s + term
            regions[r] = regions[r] + term
        pixels = pixels or {}
        tv = pixels.get("tv", c.new_zeros(()))
        total = self.content_weight * c + self.style_weight * s + self.tv_weight * tv
        terms = {"content": c, "style": s, "tv": tv}
        if self.temporal is not None:
            terms["temporal"] = pixels["temporal"]
            total = total + self.temporal_weight * pixels["temporal"]
        if self.blocks is not None:
            # Each block's part of the total (they sum to it): its region's style term,
            # and its share of the content, TV and temporal terms. L-BFGS judges each
            # region by its own (lbfgs.py, BlockLBFGS).
            with torch.no_grad():
                parts = self.content_weight * stats.content_blocks / stats.content_count
                parts[: len(regions)] += self.style_weight * torch.stack(regions).detach()
                if "tv blocks" in pixels:
                    parts += self.tv_weight * pixels["tv blocks"]
                if "temporal blocks" in pixels:
                    parts += self.temporal_weight * pixels["temporal blocks"]
            terms["blocks"] = parts
        return {**terms, "total": total}

    def forward(self, features: Mapping[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        """features: {layer: activations} of the whole image; image: (1, 3, H, W) in
        [0, 1] (for TV). Returns the scalar fp32 terms: content, style, tv and total."""
        return self.terms(self.statistics(features, self.content_target),
                          self.image_terms(image) if self.needs_image else None)
