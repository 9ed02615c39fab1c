"""The objective of a whole image, evaluated tile by tile in bounded memory.

The style term depends on the image only through Gram matrices, which are sums over
positions, and the content term is a sum over positions too (losses.Statistics). So
one evaluation of the whole image's objective and gradient is two passes over tiles:

1. forward only: each tile's statistics over its core, summed into the whole
   image's; from them the terms (exactly the untiled ones) and, by autograd through
   `Objective.terms` on those small tensors, dL/dG for every style layer and
   dL/d(content sum of squares);
2. forward and backward of each tile's surrogate
       Σ_l <dL/dG_l, G_l(core)> + dL/dcontent_sq · content_sq(core),
   whose gradient with respect to the tile's pixels is exactly that tile's share of
   the whole image's gradient; the shares add up in x.grad (halos overlap).

Each tile is its core plus a halo of HALO px on every side (clipped at the image's
borders; on a tileable job's torus the halo wraps around them instead, so the
tiled objective of a wrapped image is its untiled one too). HALO covers conv5_1's receptive radius (85 px), and tile corners sit on a
16 px grid (the four 2x2 poolings before conv5_1), so a core's activations equal the
untiled ones up to rounding: the tiled objective and gradient are the untiled ones,
not an approximation. (Per-tile style targets, which make tiled results drift and
seam, are never used: every tile is pulled toward the one whole-image Gram.)
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import torch

from . import images
from .events import Cancelled, TilePass
from .heap import release_freed_memory
from .losses import Objective, Statistics, as_floats, gram_matrix
from .regions import guided_gram
from .optimize import autocast
from .vgg import VGGFeatures, stride

ALIGN = 16  # four 2x2 poolings before conv5_1
HALO = 96  # >= conv5_1's receptive radius (85 px), a multiple of ALIGN
# Each layer's stride relative to the input (pooling halves the resolution).
STRIDE = {name: stride(name) for name in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1")}


@dataclass(frozen=True)
class Tile:
    core: tuple[int, int, int, int]  # y0, y1, x0, x1: the pixels whose activations this tile owns
    # The core and its halo: clipped to the image, or on a torus (wrap) reaching past
    # its edges (rows -HALO.. or ..H+HALO), which stand for the rows across the edge.
    padded: tuple[int, int, int, int]

    def inside(self, image: tuple[int, int]) -> bool:
        py0, py1, px0, px1 = self.padded
        return py0 >= 0 and px0 >= 0 and py1 <= image[0] and px1 <= image[1]


def plan(height: int, width: int, core: int, wrap: bool = False) -> list[Tile]:
    """Tiles covering a height x width image with cores of at most core x core px
    (core: a multiple of ALIGN), row by row; wrap: halos wrap around the edges."""
    if core % ALIGN:
        raise ValueError(f"tile core {core} is not a multiple of {ALIGN}")
    tiles = []
    for y0 in range(0, height, core):
        for x0 in range(0, width, core):
            y1, x1 = min(y0 + core, height), min(x0 + core, width)
            if wrap:
                padded = (y0 - HALO, y1 + HALO, x0 - HALO, x1 + HALO)
            else:
                padded = (max(0, y0 - HALO), min(height, y1 + HALO), max(0, x0 - HALO), min(width, x1 + HALO))
            tiles.append(Tile((y0, y1, x0, x1), padded))
    return tiles


def crop(x: torch.Tensor, tile: Tile) -> torch.Tensor:
    """The tile's padded part of x (..., H, W): a view where it lies inside the image,
    else a copy whose rows and columns wrap around the edges."""
    py0, py1, px0, px1 = tile.padded
    h, w = x.shape[-2], x.shape[-1]
    if tile.inside((h, w)):
        return x[..., py0:py1, px0:px1]
    rows = torch.arange(py0, py1, device=x.device) % h
    cols = torch.arange(px0, px1, device=x.device) % w
    return x.index_select(-2, rows).index_select(-1, cols)


def add_crop(total: torch.Tensor, tile: Tile, part: torch.Tensor) -> None:
    """total[tile's padded part] += part, wrapping like `crop` (rows and columns that
    wrap onto the same pixel add up there)."""
    py0, py1, px0, px1 = tile.padded
    h, w = total.shape[-2], total.shape[-1]
    if tile.inside((h, w)):
        total[..., py0:py1, px0:px1] += part
        return
    rows = torch.arange(py0, py1, device=total.device) % h
    cols = torch.arange(px0, px1, device=total.device) % w
    band = part.new_zeros((*part.shape[:-1], w)).index_add_(-1, cols, part)  # (..., tile rows, W)
    total.index_add_(-2, rows, band.to(total.dtype))


def _core_slices(tile: Tile, stride: int, image: tuple[int, int], features: tuple[int, int]):
    """The core's rows and columns in a tile's activations at `stride` (whose spatial
    size is `features`), and in the whole image's. A core that ends at the image's
    border takes every remaining row or column (max pooling floors odd sizes the same
    way in both, since tile corners sit on the ALIGN grid)."""
    (y0, y1, x0, x1), (py0, py1, px0, px1) = tile.core, tile.padded  # pixels
    ty0, tx0 = (y0 - py0) // stride, (x0 - px0) // stride
    ty1 = features[0] if y1 == py1 == image[0] else (y1 - py0) // stride
    tx1 = features[1] if x1 == px1 == image[1] else (x1 - px0) // stride
    gy0, gx0 = y0 // stride, x0 // stride
    return slice(ty0, ty1), slice(tx0, tx1), slice(gy0, gy0 + ty1 - ty0), slice(gx0, gx0 + tx1 - tx0)


def core_features(net: VGGFeatures, x: torch.Tensor, layers: list[str], pooling: str, dtype: torch.dtype,
                  core: int, cancel: Callable[[], bool] | None = None, wrap: bool = False
                  ) -> Iterator[dict[str, tuple[torch.Tensor, slice, slice]]]:
    """Without gradients, tile by tile: {layer: (the core's activations, rows, cols)},
    rows and cols being where the core sits in the whole image's activations."""
    image = (x.shape[-2], x.shape[-1])
    for tile in plan(*image, core, wrap):
        if cancel and cancel():
            raise Cancelled()
        with torch.no_grad(), autocast(x.device, dtype):
            feats = net(crop(x, tile).contiguous(memory_format=torch.channels_last), layers, pooling, wrap)
        yield _cores(feats, tile, image)


class _Core(torch.autograd.Function):
    """A core's part (rows ty, columns tx) of a tile's activations f, copied out in the
    channels_last layout the network works in (the Gram's (N, C) view needs one copy
    anyway); the backward puts the core's gradient into zeros of f's size in that same
    layout. Autograd's own slice backward zero-fills in the contiguous layout instead,
    and adding that to the network's channels_last gradient is a slow mixed-layout
    kernel: it took about 0.3 of pass 2 at 12 MP in bf16 (5.29 s per megapixel for a
    whole evaluation then, 4.08 now)."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, ty: slice, tx: slice) -> torch.Tensor:
        ctx.shape, ctx.ty, ctx.tx = f.shape, ty, tx
        return f[..., ty, tx].contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        whole = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=torch.channels_last)
        whole.zero_()
        whole[..., ctx.ty, ctx.tx] = grad
        return whole, None, None


def _cores(feats: dict[str, torch.Tensor], tile: Tile, image: tuple[int, int]
           ) -> dict[str, tuple[torch.Tensor, slice, slice]]:
    """{layer: (the core's part of a tile's activations, rows, cols in the whole image's)};
    the parts are channels_last copies, differentiable when grad is enabled (_Core)."""
    out = {}
    for name, f in feats.items():
        ty, tx, gy, gx = _core_slices(tile, STRIDE[name], image, (f.shape[-2], f.shape[-1]))
        out[name] = (_Core.apply(f, ty, tx), gy, gx)
    return out


def features_whole(net: VGGFeatures, x: torch.Tensor, layer: str, pooling: str, dtype: torch.dtype, core: int,
                   cancel: Callable[[], bool] | None = None, wrap: bool = False) -> torch.Tensor:
    """One layer's activations of the whole image (1, C, H/s, W/s), computed tile by
    tile: the content target of a scale too large for one pass. Kept in the network's
    dtype (bf16: half the memory of a full-size target; the loss is taken in fp32)."""
    h, w, out = x.shape[-2], x.shape[-1], None
    for feats in core_features(net, x, [layer], pooling, dtype, core, cancel, wrap):
        f, gy, gx = feats[layer]
        if out is None:  # max pooling floors: the whole image's size at this stride
            s = STRIDE[layer]
            out = torch.empty((1, f.shape[1], h // s, w // s), dtype=f.dtype, device=x.device)
        out[..., gy, gx] = f
    assert out is not None
    return out


def grams_whole(net: VGGFeatures, x: torch.Tensor, layers: list[str], pooling: str, dtype: torch.dtype, core: int,
                cancel: Callable[[], bool] | None = None, guides: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
    """Normalized Gram matrices {layer: (1, C, C) fp32} of the whole image, summed
    tile by tile: a style image too large for one pass. guides: {layer: (1, 1, h, w)}
    over the whole image (regions.guides): the guided Grams, normalized by the guide's
    mass, instead of the H·W-normalized plain ones."""
    sums: dict[str, torch.Tensor] = {}
    for feats in core_features(net, x, layers, pooling, dtype, core, cancel):
        for name, (f, gy, gx) in feats.items():
            f = f.float()  # a target: exact
            g = gram_matrix(f, normalize=False) if guides is None else guided_gram(f, guides[name][..., gy, gx])
            sums[name] = sums[name] + g if name in sums else g
    return {name: g / _mass(x, name, guides) for name, g in sums.items()}


def _mass(x: torch.Tensor, layer: str, guides: dict[str, torch.Tensor] | None) -> float:
    """The positions a Gram of x's activations at `layer` sums: H·W at that stride, or
    the guide's mass (at least a tiny positive number: an empty guide gives a zero Gram)."""
    if guides is None:
        return (x.shape[-2] // STRIDE[layer]) * (x.shape[-1] // STRIDE[layer])
    return max(float(guides[layer].sum()), 1e-12)


class TiledObjective:
    """`objective` evaluated on a whole image tile by tile, cores of `core` px."""

    def __init__(self, net: VGGFeatures, objective: Objective, pooling: str, dtype: torch.dtype, core: int,
                 cancel: Callable[[], bool] | None = None):
        self.net, self.objective, self.pooling, self.dtype = net, objective, pooling, dtype
        self.wrap = objective.wrap
        self.core = core
        self.cancel = cancel or (lambda: False)

    def _core_statistics(self, xt: torch.Tensor, tile: Tile, image: tuple[int, int]) -> Statistics:
        """xt: the padded tile (1, 3, h, w) -> the statistics of its core (differentiable
        with respect to xt when grad is enabled)."""
        with autocast(xt.device, self.dtype):
            feats = self.net(xt.contiguous(memory_format=torch.channels_last), self.objective.layers, self.pooling,
                             self.wrap)
        cores = _cores(feats, tile, image)
        _, gy, gx = cores[self.objective.content_layer]
        target = self.objective.content_target[..., gy, gx]
        return self.objective.statistics({name: f for name, (f, _, _) in cores.items()}, target,
                                         {name: (ry, rx) for name, (_, ry, rx) in cores.items()})

    def evaluate(self, x: torch.Tensor, where: tuple[int, int] = (0, 0), grad: bool = True
                 ) -> Generator[TilePass, None, dict[str, float]]:
        """x: (1, 3, H, W) normalized. Yields a TilePass after each tile of each pass
        (`where` = (scale, step) for them); returns the terms as floats. With `grad`,
        x.grad holds the whole image's gradient afterwards (fp32, contiguous)."""
        image = (x.shape[-2], x.shape[-1])
        tiles = plan(*image, self.core, self.wrap)
        phases = 2 if grad else 1
        leaf, x = x, x.detach()

        total: Statistics | None = None
        with torch.no_grad():
            for i, tile in enumerate(tiles, start=1):
                if self.cancel():
                    raise Cancelled()
                stats = self._core_statistics(crop(x, tile), tile, image)
                total = stats if total is None else total.add(stats)
                yield TilePass(*where, phase=1, phases=phases, tile=i, tiles=len(tiles))
        assert total is not None

        # dL/dG_l and dL/dcontent_sq by autograd through the formula the untiled path uses.
        objective = self.objective
        leaves = Statistics(
            grams={k: g.requires_grad_(grad) for k, g in total.grams.items()},
            positions=total.positions,
            content_sq=total.content_sq.requires_grad_(grad),
            content_count=total.content_count,
            content_blocks=total.content_blocks,
        )
        # TV, a sum over neighbouring pixels, needs the whole image: a full-size copy, only when weighted.
        image_01 = images.denormalize(x).requires_grad_(grad) if objective.needs_image else None
        with torch.set_grad_enabled(grad):
            terms = objective.terms(leaves, objective.image_terms(image_01) if image_01 is not None else None)
            if grad:
                terms["total"].backward()
        values = as_floats(terms)  # device sync
        if not grad:
            return values

        tv_grad = None
        if image_01 is not None:  # the pixel terms' share, through denormalize (x * std + mean), in its own storage
            tv_grad = image_01.grad.mul_(x.new_tensor(images.IMAGENET_STD).view(1, 3, 1, 1))
            del image_01  # the full-size copy is not needed in pass 2 (memory.py counts no such vector)
        release_freed_memory()  # between the passes: what pass 1 freed goes back before pass 2 allocates
        # (1, 3, H, W) fp32: the whole image's gradient, to which each tile adds its share.
        x_grad = tv_grad if tv_grad is not None else torch.zeros_like(x, memory_format=torch.contiguous_format)
        weights = {k: g.grad for k, g in leaves.grams.items()}  # {(region, layer): (1, C, C) dL/dG}
        content_coef = leaves.content_sq.grad  # scalar dL/dcontent_sq
        for i, tile in enumerate(tiles, start=1):
            if self.cancel():
                raise Cancelled()
            xt = crop(x, tile).clone().requires_grad_(True)
            with torch.enable_grad():
                stats = self._core_statistics(xt, tile, image)
                surrogate = content_coef * stats.content_sq
                for k, g in stats.grams.items():
                    surrogate = surrogate + (weights[k] * g).sum()
                surrogate.backward()
            add_crop(x_grad, tile, xt.grad)
            yield TilePass(*where, phase=2, phases=phases, tile=i, tiles=len(tiles))
        leaf.grad = x_grad
        release_freed_memory()
        return values
