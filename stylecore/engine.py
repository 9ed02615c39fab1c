"""One style-transfer run: a generator of events (see events.py).

The image itself is optimized (Gatys et al. 2016, sec. 2.3), in the ImageNet-
normalized space the reference notebook uses, optionally coarse-to-fine: each
scale starts from the previous scale's result, upsampled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import images
from .lbfgs import BoxLBFGS
from .events import Cancelled, Event, Preview, Progress, Result, Started
from .losses import Objective, blend_grams, gram_matrix
from .params import CONTENT_LAYER, STYLE_LAYERS, ParamError, StyleParams
from .vgg import VGGFeatures


class Diverged(RuntimeError):
    """The objective became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError("device", "CUDA was asked for, but PyTorch sees no CUDA device here")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 convolutions are several times faster than fp32.
    Without them oneDNN emulates bf16, which is far slower than fp32 (measured
    100x on an AVX2-only AMD EPYC), so `auto` must not pick it."""
    cpu = getattr(torch, "cpu", None)
    amx = getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    return bool(amx or avx512_bf16)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


@dataclass
class _Scale:
    """What one pyramid level needs: its size, step count and objective."""

    size: tuple[int, int]  # (h, w)
    steps: int
    objective: Objective


class Engine:
    """Holds the network (one copy per device) and runs jobs on it, one at a time."""

    def __init__(self, model: VGGFeatures):
        self._cpu_model = model
        self._placed: dict[torch.device, VGGFeatures] = {}

    def network(self, device: torch.device) -> VGGFeatures:
        if device not in self._placed:
            # channels_last: oneDNN's and cuDNN's fast convolution layout (1.4x on CPU here).
            net = VGGFeatures(self._cpu_model.last_layer)
            net.load_state_dict(self._cpu_model.state_dict())
            self._placed[device] = net.to(device, memory_format=torch.channels_last)
        return self._placed[device]

    # --- the run -------------------------------------------------------------------

    def run(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        params: StyleParams,
        cancel: Callable[[], bool] | None = None,
        preview_every: int = 0,
    ) -> Iterator[Event]:
        """Stylize `content` (H, W, C uint8) after `styles`; yields Started, then Progress
        after every step (and Preview every `preview_every` steps), then Result.
        Raises Cancelled within one step of `cancel()` returning True."""
        cancel = cancel or (lambda: False)
        if preview_every < 0:
            raise ParamError("preview_every", f"must not be negative, got {preview_every}")
        device = resolve_device(params.device)
        dtype = resolve_dtype(params.precision, device)
        net = self.network(device)
        t0 = time.perf_counter()

        content_img = images.split(content, "content")
        if not styles:
            raise ParamError("styles", "at least one style image is needed")
        style_imgs = [images.split(s, f"style {i + 1}") for i, s in enumerate(styles)]
        blend = params.blend_weights(len(style_imgs))
        sizes = _pyramid(content_img, params)
        yield Started(
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            sizes=tuple(s for s, _ in sizes),
            total_steps=sum(n for _, n in sizes),
        )

        # ETA: seconds per pixel-step measured on the steps so far (set-up excluded).
        work_total = sum(h * w * n for (h, w), n in sizes)
        work_done, step_seconds = 0, 0.0
        x: torch.Tensor | None = None
        terms: dict[str, float] = {}
        for index, ((h, w), steps) in enumerate(sizes, start=1):
            if cancel():
                raise Cancelled()
            scale = self._scale(net, device, dtype, params, content_img, style_imgs, blend, (h, w), steps)
            x = self._initial(params, content_img, (h, w), device) if x is None else images.resize(x, (h, w))
            optimize = _Optimizer(net, scale.objective, x, params, dtype)
            for step in range(1, steps + 1):
                if cancel():
                    raise Cancelled()
                t_step = time.perf_counter()
                terms = optimize.step()  # device sync: reads the loss values
                step_seconds += time.perf_counter() - t_step
                if not math.isfinite(terms["total"]):
                    raise Diverged(
                        f"the objective became {terms['total']} at scale {index}, step {step}; "
                        "try a smaller lr, a smaller style_weight or the adam optimizer"
                    )
                work_done += h * w
                yield Progress(
                    scale=index, scales=len(sizes), step=step, steps=steps, losses=terms,
                    elapsed=time.perf_counter() - t0,
                    eta=step_seconds / work_done * (work_total - work_done),
                )
                if preview_every and step % preview_every == 0:
                    rgb = images.denormalize(optimize.current()).clamp(0, 1)
                    yield Preview(scale=index, step=step, image=_to_uint8_rgb(rgb))
            x = optimize.current()

        assert x is not None
        out = images.resize(images.denormalize(x).float().cpu(), (content_img.height, content_img.width))
        out = out.clamp(0, 1)
        if params.preserve_colors == "luminance":
            out = images.keep_luminance_only(out, content_img.rgb)
        yield Result(image=images.merge(out, content_img), losses=terms, elapsed=time.perf_counter() - t0)

    def evaluate(
        self, content: np.ndarray, styles: Sequence[np.ndarray], params: StyleParams, image: np.ndarray
    ) -> dict[str, float]:
        """The objective of `params` at its final scale for `image` (its working size,
        uint8 RGB), in fp32 whatever `params.precision` says. For benchmarks and tests."""
        device = resolve_device(params.device)
        net = self.network(device)
        content_img = images.split(content, "content")
        style_imgs = [images.split(s, f"style {i + 1}") for i, s in enumerate(styles)]
        blend = params.blend_weights(len(style_imgs))
        size = _pyramid(content_img, params)[-1][0]
        scale = self._scale(net, device, torch.float32, params, content_img, style_imgs, blend, size, 1)
        rgb = images.split(image, "image").rgb
        if tuple(rgb.shape[-2:]) != size:
            raise ValueError(f"image is {rgb.shape[-1]}x{rgb.shape[-2]}, the working size is {size[1]}x{size[0]}")
        x = images.normalize(rgb).to(device)
        with torch.no_grad():
            feats = net(x.contiguous(memory_format=torch.channels_last), scale.objective.layers, params.pooling)
            return {k: v.item() for k, v in scale.objective(feats, images.denormalize(x)).items()}

    # --- pieces ----------------------------------------------------------------------

    def _scale(self, net, device, dtype, params, content_img, style_imgs, blend, size, steps) -> _Scale:
        """Targets for one pyramid level, computed once: the content's conv4_2
        activations and the blended style Gram matrices (fp32)."""
        h, w = size
        autocast = _autocast(device, dtype)
        with torch.no_grad(), autocast:
            c = images.normalize(images.resize(content_img.rgb, size)).to(device)
            content_target = net(c.contiguous(memory_format=torch.channels_last), [CONTENT_LAYER], params.pooling)
            grams = []
            for style in style_imgs:
                s = images.resize(style.rgb, _style_size(style, size, params.style_scale))
                if params.preserve_colors == "match":
                    s = images.match_colors(s, images.resize(content_img.rgb, size))
                s = images.normalize(s).to(device).contiguous(memory_format=torch.channels_last)
                feats = net(s, STYLE_LAYERS, params.pooling)
                grams.append({name: gram_matrix(f) for name, f in feats.items()})  # (1, C, C) fp32
        style_grams = {name: blend_grams([g[name] for g in grams], blend) for name in STYLE_LAYERS}
        objective = Objective(
            content_layer=CONTENT_LAYER,
            content_target=content_target[CONTENT_LAYER].float(),
            style_grams=style_grams,
            style_layer_weights=dict(zip(STYLE_LAYERS, params.style_layer_weights)),
            content_weight=params.content_weight,
            style_weight=params.style_weight,
            tv_weight=params.tv_weight,
        )
        return _Scale(size=(h, w), steps=steps, objective=objective)

    @staticmethod
    def _initial(params: StyleParams, content_img: images.SplitImage, size, device) -> torch.Tensor:
        """The starting image, normalized: the content (paper fig. 6 uses white noise;
        the notebook and most tools start from the content), seeded noise, or gray."""
        if params.init == "content":
            rgb = images.resize(content_img.rgb, size)
        elif params.init == "noise":
            gen = torch.Generator().manual_seed(params.seed)
            rgb = torch.rand((1, 3, *size), generator=gen)
        else:
            rgb = torch.full((1, 3, *size), 0.5)
        return images.normalize(rgb).to(device)


class _Optimizer:
    """The image being optimized and the optimizer that moves it, for one scale."""

    def __init__(self, net: VGGFeatures, objective: Objective, x: torch.Tensor, params: StyleParams, dtype):
        self.net, self.objective, self.params = net, objective, params
        self.autocast = _autocast(x.device, dtype)
        self.x = x.detach().clone().requires_grad_(True)  # (1, 3, h, w) fp32, normalized
        self.layers = objective.layers
        # The valid pixel range [0, 1], in the normalized space x lives in: (1, 3, 1, 1).
        lower = images.normalize(torch.zeros(1, 3, 1, 1, device=x.device)) if params.clamp else None
        upper = images.normalize(torch.ones(1, 3, 1, 1, device=x.device)) if params.clamp else None
        self.bounds = (lower, upper)
        if params.optimizer == "lbfgs":
            self.opt = BoxLBFGS(self.x, lower, upper, lr=params.lr)
        else:
            self.opt = torch.optim.Adam([self.x], lr=params.lr)
        # Adam's iterate is noisy; an exponential moving average of it is a better image
        # (crowsonkb/style-transfer-pytorch). avg starts at 0 and is bias-corrected.
        self.avg = torch.zeros_like(self.x) if params.average and params.optimizer == "adam" else None
        # L-BFGS without line search is not monotone (an early step can overshoot by
        # orders of magnitude and come back): it returns the best iterate it evaluated.
        self.best: tuple[float, torch.Tensor] | None = None
        self.n = 0

    def _closure(self) -> torch.Tensor:
        self.x.grad = None
        with self.autocast:
            feats = self.net(self.x.contiguous(memory_format=torch.channels_last), self.layers, self.params.pooling)
        terms = self.objective(feats, images.denormalize(self.x))  # fp32
        if self.params.optimizer == "lbfgs":
            total = terms["total"].item()  # device sync
            if math.isfinite(total) and (self.best is None or total < self.best[0]):
                self.best = (total, self.x.detach().clone())
        terms["total"].backward()
        # The gradient comes back in channels_last strides; L-BFGS flattens it.
        self.x.grad = self.x.grad.contiguous()
        self._terms = terms
        return terms["total"]

    def step(self) -> dict[str, float]:
        self.opt.step(self._closure)
        if self.params.optimizer == "adam" and self.params.clamp:
            lower, upper = self.bounds
            with torch.no_grad():
                self.x.copy_(torch.maximum(torch.minimum(self.x, upper), lower))
        self.n += 1
        if self.avg is not None:
            self.avg.mul_(self.params.average).add_(self.x.detach(), alpha=1 - self.params.average)
        return {k: v.item() for k, v in self._terms.items()}  # device sync

    def current(self) -> torch.Tensor:
        """The iterate this scale delivers: the best (L-BFGS), the average (Adam with
        `average`), else the last."""
        if self.best is not None:
            return self.best[1]
        if self.avg is not None:
            return self.avg / (1 - self.params.average**self.n)
        return self.x.detach()


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def _pyramid(content: images.SplitImage, params: StyleParams) -> list[tuple[tuple[int, int], int]]:
    """[((h, w), steps)] per scale, coarsest first. Levels that come out the same size
    (a small input) merge into one."""
    levels: list[tuple[tuple[int, int], int]] = []
    sides = params.scale_sizes()
    for i, side in enumerate(sides):
        size = images.work_size(content.height, content.width, side)
        steps = params.steps if i == len(sides) - 1 else params.coarse_steps
        if levels and levels[-1][0] == size:
            levels.pop()
        if steps:
            levels.append((size, steps))
    return levels


def _style_size(style: images.SplitImage, size: tuple[int, int], style_scale: float) -> tuple[int, int]:
    """The style image's working size: the content's shape (style_scale 0, the
    reference notebook), else longest side = style_scale x the content's."""
    if style_scale == 0:
        return size
    longest = max(size) * style_scale
    k = longest / max(style.height, style.width)
    return (max(images.MIN_SIDE, round(style.height * k)), max(images.MIN_SIDE, round(style.width * k)))


def _to_uint8_rgb(rgb: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) in [0, 1] -> (h, w, 3) uint8."""
    return (rgb[0].float().cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # device sync
