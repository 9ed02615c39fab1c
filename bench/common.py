"""What every benchmark shares: the images, the seeded random weights, the machine."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch

from stylecore import Engine, VGGFeatures, random_state_dict
from stylecore.optimize import autocast
from stylecore.params import CONTENT_LAYER, STYLE_LAYERS

WEIGHTS_SEED = 0  # VGG19 ImageNet weights cannot be downloaded here: seeded random ones


def bench_images(longest: int | None = 400) -> tuple[np.ndarray, np.ndarray]:
    """Content: a photograph (scikit-image's coffee, 600x400), resized to `longest`
    as the CLI does with --size, so results and objective share one size (None: at
    its own size, for the `seed` preset, which resizes as the notebook does). Style:
    a textured, colourful image (scikit-image's immunohistochemistry slide, 512x512)."""
    from skimage import data

    if longest is None:
        return data.coffee(), data.immunohistochemistry()
    return fit(data.coffee(), longest), data.immunohistochemistry()


def fit(img: np.ndarray, longest: int) -> np.ndarray:
    """img (H, W, C) uint8 resized (Lanczos) so that its longer side is `longest`, as the
    CLI's --size does."""
    from PIL import Image

    k = longest / max(img.shape[:2])
    h, w = round(img.shape[0] * k), round(img.shape[1] * k)
    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS))


def bench_engine() -> Engine:
    return Engine(VGGFeatures.from_state_dict(random_state_dict(WEIGHTS_SEED)))


def bare_pass(net: VGGFeatures, x: torch.Tensor, pooling: str, dtype: torch.dtype) -> None:
    """The baseline the engine's step is held against: one bare VGG19 forward+backward
    through the objective's layers, in `dtype` as the engine runs it, nothing else
    (each layer's output gets a gradient of ones, as the backward of a sum would, but
    without reading the activations: the network's own cost, nothing else). x: a
    (1, 3, h, w) leaf that requires grad; its gradient is dropped. Ends with a device
    sync, so that a caller can time it."""
    with autocast(x.device, dtype):
        feats = net(x.contiguous(memory_format=torch.channels_last), [*STYLE_LAYERS, CONTENT_LAYER], pooling)
    outs = list(feats.values())
    torch.autograd.backward(outs, [torch.ones((), dtype=f.dtype, device=f.device).expand_as(f) for f in outs])
    x.grad = None
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, {gpu}"
    )
