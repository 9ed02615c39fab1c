"""Pixel buffers <-> tensors, resizing and colour handling.

Images enter and leave the engine as numpy arrays of shape (H, W, C), C in 1..4:
exactly a GIMP buffer (gray, gray+alpha, RGB, RGBA), at 8 bits, 16 bits or 32-bit
float (buffers.py). The engine computes in floating point whatever the depth; the
result comes back at the content's depth. Alpha never goes through the network; it
is split off here and put back bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .buffers import check_buffer, depth_of, from_unit, to_unit
from .vgg import IMAGENET_MEAN, IMAGENET_STD

# Rec. 601 luma, also GIMP's "luminance" for 8-bit gray conversion.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class SplitImage:
    rgb: torch.Tensor  # (1, 3, H, W) fp32 in [0, 1]
    alpha: np.ndarray | None  # (H, W) at the buffer's depth, untouched
    channels: int  # 1..4, what the caller gave
    depth: int = 8  # bits per channel the caller gave: 8, 16 or 32 (float)

    @property
    def height(self) -> int:
        return self.rgb.shape[-2]

    @property
    def width(self) -> int:
        return self.rgb.shape[-1]


def split(array: np.ndarray, name: str = "image") -> SplitImage:
    """(H, W, C) buffer at any depth -> RGB tensor in [0, 1] (float buffers clipped to
    it: the network's input range) plus the untouched alpha channel."""
    array = check_buffer(array, name)
    channels, depth = array.shape[2], depth_of(array)
    color = array[:, :, :3] if channels >= 3 else np.repeat(array[:, :, :1], 3, axis=2)
    alpha = array[:, :, channels - 1].copy() if channels in (2, 4) else None
    if depth == 8:  # the common case without a float copy of the whole buffer first
        rgb = torch.from_numpy(np.array(color, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    else:
        rgb = torch.from_numpy(np.clip(to_unit(color), 0, 1)).permute(2, 0, 1)[None].contiguous()
    return SplitImage(rgb=rgb, alpha=alpha, channels=channels, depth=depth)


def merge(rgb: torch.Tensor, like: SplitImage) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, C) with `like`'s channel layout, depth and alpha."""
    x = rgb.detach().float().clamp(0, 1)[0].cpu()  # device sync
    if like.channels <= 2:
        x = luminance(x[None])[0]  # (1, H, W)
    if like.depth == 8:
        pixels = (x * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    else:
        pixels = from_unit(x.permute(1, 2, 0).numpy(), like.depth)
    if like.alpha is not None:
        pixels = np.concatenate([pixels, like.alpha[:, :, None]], axis=2)
    return np.ascontiguousarray(pixels)


def resize_bilinear_8bit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1], holding 8-bit values -> (1, 3, h, w), resized exactly as
    the notebook's torchvision Resize does on a PIL image: Pillow's bilinear filter
    (antialiased when shrinking) on the 8-bit image, then ToTensor's / 255."""
    pixels = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()  # (H, W, 3)
    img = Image.fromarray(pixels).resize((size[1], size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float().div(255.0).to(x.device)


def resize(x: torch.Tensor, size: tuple[int, int], wrap: bool = False) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w), bicubic, antialiased when shrinking.
    wrap: x is one period of a tileable image, and so is the result: the kernel reads
    across the edges into the opposite side (for enlarging: the steps between a
    tileable job's levels and to the content's size; no antialiasing)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if wrap:
        return _resize_wrapped(x, size)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


def _resize_wrapped(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resampling of a periodic image: x padded circularly by the kernel's 2 px,
    sampled where F.interpolate (align_corners=False) would sample the unpadded one."""
    b, c, h, w = x.shape
    pad = 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="circular")  # (B, C, H + 4, W + 4)

    def axis(n_in: int, n_out: int) -> torch.Tensor:
        u = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5 + pad  # padded pixel coords
        return (u / (n_in + 2 * pad - 1) * 2 - 1).to(x.dtype)  # grid_sample's [-1, 1], align_corners=True

    gy, gx = torch.meshgrid(axis(h, size[0]), axis(w, size[1]), indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(b, -1, -1, -1).to(x.device)  # (B, h, w, 2)
    return F.grid_sample(padded, grid, mode="bicubic", padding_mode="border", align_corners=True)


def seamless(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> a version that tiles without a seam, for a tileable job's content
    (not in Gatys et al.: without it the content loss would pull the result back to the
    content's own jump across its edges). Along each axis in turn, the image is
    cross-faded with itself rolled by half a period in a band along the edges: at the
    edge the rolled copy alone (continuous across it: its own seam is in the middle,
    where its weight is 0), the image itself alone beyond a quarter of the side. GIMP's
    Filters > Map > Tile Seamless blends the whole image with its rolled copies instead,
    which ghosts everywhere; here the middle half keeps its detail untouched."""
    def weight(n: int) -> torch.Tensor:  # 1 at the wrap border, 0 from n/4 inward (raised cosine)
        distance = torch.minimum(torch.arange(n) + 0.5, n - 0.5 - torch.arange(n))
        band = max(n / 4, 1.0)
        return torch.where(distance < band, 0.5 * (1 + torch.cos(torch.pi * distance / band)), 0.0).to(x)

    h, w = x.shape[-2], x.shape[-1]
    wx = weight(w).view(1, 1, 1, w)
    x = (1 - wx) * x + wx * x.roll(w // 2, -1)
    wy = weight(h).view(1, 1, h, 1)
    return (1 - wy) * x + wy * x.roll(h // 2, -2)


# VGG19's stride at conv5_1 (four 2x2 poolings): its activations lie on a 16 px lattice.
LATTICE = 16


def seam_ratio(image: np.ndarray, lattice: int = LATTICE) -> float:
    """How visible the seam of a tile is: the mean gradient magnitude across the wrap
    borders (between the last column and the first, the last row and the first: the
    joints of the 2x2 mosaic) over that across the interior lines at the same place of
    the network's `lattice` (between columns k·lattice - 1 and k·lattice, and likewise
    rows). About 1 for a seamless tile; well above 1 where the edges do not meet.

    Why the lattice: a result is a little sharper across the lines of the network's
    pooling lattice than between them (measured on a 512 px tileable result: 1.12 at
    the wrap border and 1.07-1.13 at interior lines 32, 64, 128 and 256 px in, 0.90-1.03
    at lines off the lattice), and the wrap border is one of them: comparing it with its
    neighbours would call the lattice a seam (docs/creative.md, "Tileable textures").
    (The criterion of a tileable result: tests/test_regions.py, bench/regions_bench.py.)"""
    x = image[:, :, :3].astype(np.float64)
    h, w = x.shape[:2]
    dx = np.abs(np.roll(x, -1, axis=1) - x).sum(2)  # dx[:, j]: between columns j and j + 1 (mod w)
    dy = np.abs(np.roll(x, -1, axis=0) - x).sum(2)
    across = np.concatenate([dx[:, w - 1], dy[h - 1, :]]).mean()
    cols = [j - 1 for j in range(lattice, w, lattice)] or list(range(w - 1))
    rows = [i - 1 for i in range(lattice, h, lattice)] or list(range(h - 1))
    inside = np.concatenate([dx[:, cols].ravel(), dy[rows, :].ravel()]).mean()
    return float(across / inside)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> the ImageNet-normalized input VGG19 was trained on."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W)."""
    w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> YIQ (NTSC): Y the luminance, I and Q the chroma."""
    m = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    return torch.einsum("ij,bjhw->bihw", m, x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of rgb_to_yiq."""
    m = x.new_tensor([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
    return torch.einsum("ij,bjhw->bihw", m, x)


def keep_luminance_only(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the stylized image's Y with the content's chroma (IQ).
    Gatys et al. 2016b, "Preserving Color in Neural Artistic Style Transfer", sec. 2.2,
    applied as a post-process as in jcjohnson/neural-style's -original_colors."""
    y = rgb_to_yiq(stylized)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], 1)).clamp(0, 1)


def match_colors(style: torch.Tensor, content: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Colour histogram matching (Gatys et al. 2016b, sec. 2.1): an affine map of the
    style's RGB so its mean and covariance equal the content's. (1, 3, H, W) each."""
    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = x[0].reshape(3, -1).double()  # (3, N)
        mu = p.mean(1, keepdim=True)
        d = p - mu
        cov = d @ d.T / max(1, p.shape[1] - 1) + eps * torch.eye(3, dtype=p.dtype)
        return mu, cov

    def sqrtm(c: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(c)
        vals = vals.clamp_min(eps).sqrt()
        if inverse:
            vals = 1 / vals
        return vecs @ torch.diag(vals) @ vecs.T

    mu_s, cov_s = stats(style)
    mu_c, cov_c = stats(content)
    a = sqrtm(cov_c) @ sqrtm(cov_s, inverse=True)  # (3, 3)
    p = style[0].reshape(3, -1).double()
    out = a @ (p - mu_s) + mu_c
    return out.reshape_as(style[0])[None].to(style.dtype).clamp(0, 1)
