"""Pixel buffers <-> tensors, resizing and colour handling.

Images enter and leave the engine as numpy uint8 arrays of shape (H, W, C),
C in 1..4: exactly a GIMP buffer (gray, gray+alpha, RGB, RGBA). Alpha never goes
through the network; it is split off here and put back bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .buffers import check_buffer
from .vgg import IMAGENET_MEAN, IMAGENET_STD

# Rec. 601 luma, also GIMP's "luminance" for 8-bit gray conversion.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class SplitImage:
    rgb: torch.Tensor  # (1, 3, H, W) fp32 in [0, 1]
    alpha: np.ndarray | None  # (H, W) uint8, untouched
    channels: int  # 1..4, what the caller gave

    @property
    def height(self) -> int:
        return self.rgb.shape[-2]

    @property
    def width(self) -> int:
        return self.rgb.shape[-1]


def split(array: np.ndarray, name: str = "image") -> SplitImage:
    """(H, W, C) uint8 -> RGB tensor in [0, 1] plus the untouched alpha channel."""
    array = check_buffer(array, name)
    channels = array.shape[2]
    color = array[:, :, :3] if channels >= 3 else np.repeat(array[:, :, :1], 3, axis=2)
    alpha = array[:, :, channels - 1].copy() if channels in (2, 4) else None
    rgb = torch.from_numpy(np.array(color, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    return SplitImage(rgb=rgb, alpha=alpha, channels=channels)


def merge(rgb: torch.Tensor, like: SplitImage) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, C) uint8 with `like`'s channel layout and alpha."""
    x = rgb.detach().float().clamp(0, 1)[0].cpu()  # device sync
    if like.channels <= 2:
        x = luminance(x[None])[0]  # (1, H, W)
    pixels = (x * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
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


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w), bicubic, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


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
