"""VGG19's convolutional part, as a feature extractor with named layers.

The module indices match torchvision's `vgg19().features`, so the ImageNet
checkpoint `vgg19-dcbb9e9d.pth` (keys `features.N.weight`) loads unchanged. Only
the layers up to the deepest one a job reads are built: for the paper's layers
that is relu5_1, which saves conv5_2..conv5_4 and pool5 (a quarter of the weights).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's configuration "E" (VGG19): channel counts, "M" = 2x2 pool.
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

# ImageNet statistics the weights were trained with (torchvision's transforms).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The real checkpoint's sha256 starts with this (torchvision checks the same prefix).
IMAGENET_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_WEIGHTS_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
IMAGENET_SHA256_PREFIX = "dcbb9e9d"


def _layer_table() -> list[tuple[str, int]]:
    """(name, output channels) of each module of `features`, index by index:
    conv1_1, relu1_1, ..., pool5. Pools and ReLUs keep their input's channels."""
    table, block, conv, channels = [], 1, 1, 3
    for v in _CFG:
        if v == "M":
            table.append((f"pool{block}", channels))
            block, conv = block + 1, 1
        else:
            channels = int(v)
            table += [(f"conv{block}_{conv}", channels), (f"relu{block}_{conv}", channels)]
            conv += 1
    return table


_TABLE = _layer_table()
LAYER_NAMES = [name for name, _ in _TABLE]  # 37 names; LAYER_NAMES[21] == "conv4_2"
CONV_INDICES = [i for i, n in enumerate(LAYER_NAMES) if n.startswith("conv")]


def stride(layer: str) -> int:
    """The input pixels between neighbouring positions of `layer`: 2 per pool before it."""
    return 2 ** sum(name.startswith("pool") for name in LAYER_NAMES[: LAYER_NAMES.index(layer)])


def receptive_radius(layer: str) -> int:
    """How far (px of the input) a position's activation at `layer` reads from its own
    pixels: half its receptive field, rounded up (conv1_1 1, conv2_1 5, conv3_1 12,
    conv4_1 34, conv5_1 78). Each 3x3 convolution widens the field by 2 of its input's
    strides, each 2x2 pool by 1 and doubles the stride."""
    size, step = 1, 1  # the field's width and the input pixels between positions so far
    for name in LAYER_NAMES[: LAYER_NAMES.index(layer) + 1]:
        if name.startswith("conv"):
            size += 2 * step
        elif name.startswith("pool"):
            size, step = size + step, step * 2
    return size // 2


class VGGFeatures(nn.Module):
    """VGG19 features truncated after `last_layer`; frozen; returns named activations.

    Activations are read after the ReLU of the named conv layer (Gatys et al. 2016
    call them "conv4_2" etc. and use the rectified responses; the reference notebook
    does too, because torchvision's in-place ReLU overwrites the conv output it keeps).
    """

    def __init__(self, last_layer: str = "conv5_1", device: str | torch.device | None = None):
        """device "meta": the layers without storage or initialization, for
        `from_state_dict` to fill (initializing 12.9 M weights randomly only to
        overwrite them took 0.12 s of start-up)."""
        super().__init__()
        last = LAYER_NAMES.index(last_layer) + 1  # include its ReLU
        channels, modules = 3, []
        for name, out in _TABLE[: last + 1]:
            if name.startswith("conv"):
                modules.append(nn.Conv2d(channels, out, kernel_size=3, padding=1, device=device))
                channels = out
            elif name.startswith("relu"):
                modules.append(nn.ReLU(inplace=True))  # in-place: the conv's output is not needed for backward
            else:
                modules.append(nn.MaxPool2d(2, 2))
        self.layers = nn.Sequential(*modules)
        self.last_layer = last_layer
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], last_layer: str = "conv5_1") -> "VGGFeatures":
        """Build from torchvision's full VGG19 state dict or a features-only one.

        Raises ValueError naming the first missing or misshapen tensor.
        """
        model = cls(last_layer, device="meta")
        prefix = "features." if any(k.startswith("features.") for k in state_dict) else ""
        own = model.layers.state_dict()
        for key, target in own.items():
            src = state_dict.get(prefix + key)
            if src is None:
                raise ValueError(f"weights have no tensor {prefix + key!r}: not a VGG19 state dict")
            if tuple(src.shape) != tuple(target.shape):
                raise ValueError(
                    f"weights tensor {prefix + key!r} has shape {tuple(src.shape)}, "
                    f"VGG19 needs {tuple(target.shape)}"
                )
            # A sum is finite only if every element is (NaN and ±inf propagate), 5x cheaper than
            # an element-wise test; a sum that overflows is checked element by element.
            if not torch.isfinite(src.sum()) and not torch.isfinite(src).all():
                raise ValueError(f"weights tensor {prefix + key!r} has NaN or infinite values")
            own[key] = src.detach().to(torch.float32, copy=True)  # its own memory, not the caller's (or a mapped file)
        model.layers.load_state_dict(own, assign=True)  # the meta layers take these tensors
        return model.requires_grad_(False)

    def forward(self, x: torch.Tensor, layers: Iterable[str], pooling: str = "max",
                wrap: bool = False) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) ImageNet-normalized. Returns {name: (B, C, H', W')} for each
        requested name (read after its ReLU), stopping at the deepest one.

        wrap: the image is a torus (a tileable texture): every convolution pads
        circularly, so the right edge's neighbours are the left edge's pixels, instead
        of zeros. The 2x2 poolings need nothing: with sides that are multiples of 16
        (sizes.pyramid makes them so) no window straddles an edge, so the features of
        an image rolled by 16k px are its features rolled (tests/test_regions.py)."""
        wanted = set(layers)
        taps = {LAYER_NAMES.index(n) + 1: n for n in wanted}  # index of the ReLU that follows
        deepest = max(taps)
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.layers[: deepest + 1]):
            if wrap and isinstance(module, nn.Conv2d):
                x = F.conv2d(_wrap_pad(x), module.weight, module.bias)  # 3x3, no zero padding
            elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
                # Gatys et al. found average pooling gives slightly more appealing results.
                x = F.avg_pool2d(x, 2, 2)
            else:
                x = module(x)
            if i in taps:
                out[taps[i]] = x
        return out


def _wrap_pad(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H + 2, W + 2), each edge extended by the opposite one (a
    torus). By concatenation rather than F.pad(mode="circular"), which returns the
    contiguous layout and sends the convolution down oneDNN's slow path: a 64-channel
    512x512 forward+backward took 0.78 s that way, 0.51 s this way (fp32; zero padding
    0.23 s) on the AVX512-BF16 EPYC."""
    x = torch.cat([x[..., -1:, :], x, x[..., :1, :]], -2)
    return torch.cat([x[..., -1:], x, x[..., :1]], -1)


def random_state_dict(seed: int = 0, features_only: bool = False) -> dict[str, torch.Tensor]:
    """A seeded random VGG19 state dict in torchvision's exact format and init scheme.

    For tests and benchmarks, which cannot download the ImageNet weights. It is
    never used as a fallback: the weights loader refuses to run without a file.
    """
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    channels = 3
    for i in CONV_INDICES:
        out = _TABLE[i][1]
        # kaiming_normal_(mode="fan_out", nonlinearity="relu"), as torchvision does.
        std = (2.0 / (out * 9)) ** 0.5
        sd[f"features.{i}.weight"] = torch.randn(out, channels, 3, 3, generator=gen) * std
        sd[f"features.{i}.bias"] = torch.zeros(out)
        channels = out
    if not features_only:
        for idx, (fan_in, fan_out) in zip((0, 3, 6), ((512 * 7 * 7, 4096), (4096, 4096), (4096, 1000))):
            sd[f"classifier.{idx}.weight"] = torch.randn(fan_out, fan_in, generator=gen) * 0.01
            sd[f"classifier.{idx}.bias"] = torch.zeros(fan_out)
    else:
        sd = {k.removeprefix("features."): v for k, v in sd.items()}
    return sd
