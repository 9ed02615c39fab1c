"""One style-transfer run: a generator of events (see events.py).

The image itself is optimized (Gatys et al. 2016, sec. 2.3), in the ImageNet-
normalized space the reference notebook uses, optionally coarse-to-fine: each
scale starts from the previous scale's result, upsampled.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import heap, images, memory, regions, sizes, temporal, tiling
from .events import Cancelled, Event, Preview, Progress, Result, Started
from .losses import Objective, StyleTarget, as_floats, blend_grams, gram_matrix
from .optimize import Evaluate, Evaluation, ImageOptimizer, autocast
from .precision import resolve_dtype
from .temporal import Temporal
from .memory import Level
from .params import CONTENT_LAYER, STYLE_LAYERS, ParamError, StyleParams
from .vgg import VGGFeatures


class Diverged(RuntimeError):
    """The objective became NaN or infinite."""


def resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError("device", "CUDA was asked for, but PyTorch sees no CUDA device here")
    return torch.device(name)


@dataclass(frozen=True)
class Job:
    """A run's inputs, prepared once and shared by `run`, `evaluate` and `objective`."""

    params: StyleParams
    device: torch.device
    dtype: torch.dtype  # the network's precision (see precision.py)
    content: images.SplitImage  # tileable: made seamless (images.seamless), alpha as given
    styles: tuple[images.SplitImage, ...]
    init: images.SplitImage | None  # the image to start from (init "image"), any size
    blend: tuple[float, ...]  # normalized weights of the styles
    levels: tuple[Level, ...]  # coarsest first; the last is the working size
    budget: int  # bytes the job may add to what the process held when it was prepared
    regions: tuple[regions.Region, ...] = ()  # where each style applies (one, everywhere, without masks)
    # Each style's own guide (which part of the style image to take the style from), or None.
    style_guides: tuple[torch.Tensor | None, ...] = ()
    # (1, 1, H, W): how much of each pixel some region claims, where that is not all of
    # it (masks without a background style): the result keeps the content elsewhere.
    coverage: torch.Tensor | None = None
    # A frame after the first of a sequence: what it is pulled toward (temporal.py).
    temporal: Temporal | None = None

    @property
    def wrap(self) -> bool:
        return bool(self.params.tileable)


class Engine:
    """Holds the network (one copy per device) and runs jobs on it, one at a time."""

    # Style Grams kept between jobs (LRU): a batch of photos, a sequence's frames and a
    # run's variations share their style images and working sizes, and a style's Grams
    # were 7% of a default job (docs/sequences.md, "Batches"). About 2.4 MB an entry.
    STYLE_CACHE = 32

    def __init__(self, model: VGGFeatures):
        self._cpu_model = model
        self._placed: dict[torch.device, VGGFeatures] = {}
        self._grams: collections.OrderedDict[tuple, dict[str, torch.Tensor]] = collections.OrderedDict()
        self._grams_lock = threading.Lock()  # a server's workers share the engine
        self.style_cache_hits = 0  # for tests and benchmarks

    def _cached_grams(self, key: tuple, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """A style's Grams at one size, from the cache or `compute` (bit-identical: the
        same inputs through the same code)."""
        with self._grams_lock:
            if key in self._grams:
                self._grams.move_to_end(key)
                self.style_cache_hits += 1
                return self._grams[key]
        grams = compute()
        with self._grams_lock:
            self._grams[key] = grams
            while len(self._grams) > self.STYLE_CACHE:
                self._grams.popitem(last=False)
        return grams

    def network(self, device: torch.device) -> VGGFeatures:
        if device not in self._placed:
            # channels_last: oneDNN's and cuDNN's fast convolution layout (1.4x on CPU here).
            net = copy.deepcopy(self._cpu_model)  # .to moves in place: the CPU original stays as it is
            self._placed[device] = net.to(device, memory_format=torch.channels_last)
        return self._placed[device]

    # --- preparation -------------------------------------------------------------------

    def prepare(self, content: np.ndarray, styles: Sequence[np.ndarray], params: StyleParams,
                device: str | torch.device = "auto", budget: int | None = None,
                init_image: np.ndarray | None = None,
                style_masks: Sequence[np.ndarray | None] = (),
                style_guides: Sequence[np.ndarray | None] = (), temporal: Temporal | None = None) -> Job:
        """Checks the images, resolves the device (the caller's: a server's or the CLI's
        choice, never a job parameter) and precision, plans the pyramid.
        temporal: for a frame after the first of a sequence, the previous result warped to
        it and where to trust that (temporal.py), at the content's size.
        style_masks: per style, a gray mask of the content's size saying where that
        style applies (None or missing: no mask; regions.py); style_guides: per style,
        a gray mask of that style image's size saying which part of it to take the
        style from. Raises ParamError / ValueError naming what is wrong."""
        device = resolve_device(device)
        content_img = images.split(content, "content")
        if not styles:
            raise ParamError("styles", "at least one style image is needed")
        style_imgs = tuple(images.split(s, f"style {i + 1}") for i, s in enumerate(styles))
        for what, given in (("style_masks", style_masks), ("style_guides", style_guides)):
            if len(given) > len(style_imgs):
                raise ParamError(what, f"{len(given)} masks for {len(style_imgs)} style images: at most one "
                                       "per style")
        content_hw = (content_img.height, content_img.width)
        masks = _mask_tensors(style_masks, "mask of style {}", [content_hw] * len(style_imgs))
        guides = _mask_tensors(style_guides, "source mask of style {}", [(s.height, s.width) for s in style_imgs])
        for i, g in enumerate(guides):
            if g is not None and not bool((g > 0).any()):
                raise ParamError("style_guides", f"source mask of style {i + 1} is black everywhere: it takes "
                                                 "nothing from the style image")
        blend = tuple(params.blend_weights(len(style_imgs)))
        job_regions = regions.plan_regions(masks, blend)
        cover = None  # with a background style (or no mask) every pixel is styled
        if all(m is not None for m in masks):  # every style masked: what no mask claims keeps the content
            cover = regions.coverage(masks)
            if not bool((cover > 0).any()):
                raise ParamError("style_masks", "every mask is black everywhere: no style applies anywhere")
        if params.tileable:
            content_img = dataclasses.replace(content_img, rgb=images.seamless(content_img.rgb))
        if (init_image is not None) != (params.init == "image"):
            raise ParamError("init", "init 'image' needs an initial image, and an initial image needs init 'image'; "
                                     f"got init {params.init!r} and {'an' if init_image is not None else 'no'} image")
        init = images.split(init_image, "initial image") if init_image is not None else None
        if temporal is not None and (tuple(temporal.target.shape[-2:]) != (content_img.height, content_img.width)
                                     or tuple(temporal.weight.shape[-2:]) != tuple(temporal.target.shape[-2:])):
            raise ParamError("temporal", f"the previous frame's warped result is {tuple(temporal.target.shape[-2:])}"
                                         f", its weight {tuple(temporal.weight.shape[-2:])}; the frame is "
                                         f"{(content_img.height, content_img.width)}")
        dtype = resolve_dtype(params.precision, device)
        # The job's memory: params.max_memory, and at most the caller's `budget` (a
        # server's per-job limit, in bytes beyond what the process holds).
        budget, held = memory.job_budget(params.max_memory, device, budget)
        guided = sum(r.mask is not None for r in job_regions)
        levels = memory.plan_levels((content_img.height, content_img.width),
                                    [(s.height, s.width) for s in style_imgs], params, dtype, budget, held, guided,
                                    temporal is not None)
        return Job(
            params=params, device=device, dtype=dtype, content=content_img, styles=style_imgs, init=init,
            blend=blend, levels=levels, budget=budget, regions=job_regions, style_guides=tuple(guides),
            coverage=cover, temporal=temporal,
        )

    def objective(self, job: Job, level: Level, cancel: Callable[[], bool] | None = None) -> Objective:
        """The objective at one level: its targets, the content's conv4_2 activations and
        the blended style Gram matrices, computed once (fp32), tile by tile where the
        level is tiled (and for any style image too large for one pass)."""
        params, device, net = job.params, job.device, self.network(job.device)
        size, core = level.size, level.plan.core
        c = images.normalize(_resize_input(job.content, size, params)).to(device)
        if core:
            content_target = tiling.features_whole(net, c, CONTENT_LAYER, params.pooling, job.dtype, core, cancel,
                                                   job.wrap)
        else:
            with torch.no_grad(), autocast(device, job.dtype):
                content_target = net(c.contiguous(memory_format=torch.channels_last), [CONTENT_LAYER],
                                     params.pooling, job.wrap)[CONTENT_LAYER].float()
        del c
        strides = {name: tiling.STRIDE[name] for name in STYLE_LAYERS}
        labels = regions.labels(job.regions, size, device)  # None for a plain job
        grams = []  # per style image: {layer: (1, C, C) fp32, normalized}; style images never wrap
        for style, guide, style_plan in zip(job.styles, job.style_guides, level.style_plans):
            style_hw = sizes.style_size(style.height, style.width, size, params.style_scale)

            def compute(style=style, guide=guide, style_plan=style_plan, style_hw=style_hw):
                s = _resize_input(style, style_hw, params)
                if params.preserve_colors == "match":
                    s = images.match_colors(s, _resize_input(job.content, size, params))
                s = images.normalize(s).to(device).contiguous(memory_format=torch.channels_last)
                layer_guides = regions.guides(guide, style_hw, strides, device) if guide is not None else None
                if style_plan.core:
                    return tiling.grams_whole(net, s, list(STYLE_LAYERS), params.pooling, job.dtype,
                                              style_plan.core, cancel, layer_guides)
                with torch.no_grad(), autocast(device, job.dtype):
                    feats = net(s, STYLE_LAYERS, params.pooling)
                return {name: _style_gram(f.float(), layer_guides and layer_guides[name])  # exact
                        for name, f in feats.items()}

            if params.preserve_colors == "match":  # the style's colours are the content's: nothing to share
                grams.append(compute())
            else:
                key = (_digest(style.rgb), None if guide is None else _digest(guide), style_hw, params.resize,
                       params.pooling, job.dtype, style_plan.core, str(device))
                grams.append(self._cached_grams(key, compute))
        targets = [
            StyleTarget(
                grams={name: blend_grams([grams[i][name] for i in region.styles], region.blend)
                       for name in STYLE_LAYERS},
                guides=regions.guides(region.mask, size, strides, device, labels == r, job.wrap)
                if region.mask is not None else None,
                weight=region.weight,
            )
            for r, region in enumerate(job.regions)
        ]
        return Objective(
            content_layer=CONTENT_LAYER,
            content_target=content_target,
            style_targets=targets,
            style_layer_weights=dict(zip(STYLE_LAYERS, params.style_layer_weights)),
            content_weight=params.content_weight,
            style_weight=params.style_weight,
            tv_weight=params.tv_weight,
            wrap=job.wrap,
            temporal=None if job.temporal is None else (
                images.resize(job.temporal.target, size, job.wrap).clamp(0, 1).to(device),
                images.resize(job.temporal.weight, size, job.wrap).clamp(0, 1).to(device)),
            temporal_weight=params.temporal_weight,
            blocks=None if labels is None else labels.view(size),
        )

    def evaluator(self, job: Job, objective: Objective, dtype: torch.dtype | None = None, core: int | None = None,
                  cancel: Callable[[], bool] | None = None) -> Evaluate:
        """x (1, 3, h, w) normalized -> the objective's terms (see optimize.Evaluate),
        the network in `dtype` (default: the job's), the losses in fp32. core: tile by
        tile with cores of this side (tiling.py; `cancel` is checked between tiles),
        else the whole image at once."""
        net, dtype = self.network(job.device), dtype or job.dtype
        if core:
            return tiling.TiledObjective(net, objective, job.params.pooling, dtype, core, cancel).evaluate
        cast = autocast(job.device, dtype)

        def evaluate(x: torch.Tensor, where: tuple[int, int] = (0, 0), grad: bool = True) -> Evaluation:
            yield from ()  # nothing to report within one evaluation
            with torch.set_grad_enabled(grad):
                with cast:
                    feats = net(x.contiguous(memory_format=torch.channels_last), objective.layers,
                                job.params.pooling, job.wrap)
                terms = objective(feats, images.denormalize(x))
                if grad:
                    terms["total"].backward()
                    # The gradient comes back in channels_last strides; L-BFGS flattens it.
                    x.grad = x.grad.contiguous()
            return as_floats(terms)  # device sync

        return evaluate

    # --- the run -------------------------------------------------------------------

    def run(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        params: StyleParams,
        cancel: Callable[[], bool] | None = None,
        preview_every: int = 0,
        device: str | torch.device = "auto",
        budget: int | None = None,
        init_image: np.ndarray | None = None,
        style_masks: Sequence[np.ndarray | None] = (),
        style_guides: Sequence[np.ndarray | None] = (),
        temporal: Temporal | None = None,
    ) -> Iterator[Event]:
        """Stylize `content` (H, W, C; 8 bits, 16 bits or float: the result has its
        depth) after `styles`; yields Started, then Progress after every step (and
        Preview every `preview_every` steps), then Result.
        Runs on `device` ("auto": CUDA when present), within `budget` bytes when given
        (and params.max_memory), from `init_image` (H, W, C, any size) when
        params.init is "image"; style_masks and style_guides as `prepare` says.
        Raises Cancelled within one step (one tile, on a tiled scale) of `cancel()`
        returning True."""
        cancel = cancel or (lambda: False)
        if preview_every < 0:
            raise ParamError("preview_every", f"must not be negative, got {preview_every}")
        # What is free goes back to the kernel before this job's budget is counted from
        # what the process holds (docs/full-resolution.md, "The C heap").
        heap.release_freed_memory()
        job = self.prepare(content, styles, params, device, budget, init_image, style_masks, style_guides, temporal)
        t0 = time.perf_counter()
        yield Started(
            device=str(job.device),
            dtype=str(job.dtype).removeprefix("torch."),
            sizes=tuple(level.size for level in job.levels),
            total_steps=sum(level.steps for level in job.levels),
            tiles=tuple(level.plan.core or 0 for level in job.levels),
        )

        # ETA: seconds per pixel-step measured on the steps so far (set-up excluded).
        work_total = sum(level.size[0] * level.size[1] * level.steps for level in job.levels)
        work_done, step_seconds = 0, 0.0
        x: torch.Tensor | None = None
        carried: list[tuple[torch.Tensor, torch.Tensor]] = []  # curvature pairs for the next level
        delivered: dict[str, float] = {}
        for index, level in enumerate(job.levels, start=1):
            (h, w), steps = level.size, level.steps
            if cancel():
                raise Cancelled()
            # Only a level keeps freed memory, however it ends: what follows it (the next
            # level's plan, which counts on what is resident, and the server's decoding and
            # encoding) does not (docs/full-resolution.md, "The C heap").
            with heap.heap_kept(heap.room_to_keep(level.plan, job.budget)):
                objective = self.objective(job, level, cancel)
                x = self._initial(job, (h, w)) if x is None else images.resize(x, (h, w), job.wrap)
                evaluate = self.evaluator(job, objective, core=level.plan.core, cancel=cancel)
                # Each level after the first starts with the previous level's curvature pairs.
                blocks, groups = self._blocks(objective) if params.optimizer == "lbfgs" else (None, None)
                optimize = ImageOptimizer(x, evaluate, params, history=level.plan.history, curvature=carried,
                                          pair_dtype=level.plan.pair_dtype, blocks=blocks, groups=groups)
                del carried, x  # the optimizer holds its own copy of the image
                for step in range(1, steps + 1):
                    if cancel():
                        raise Cancelled()
                    t_step = time.perf_counter()
                    terms = yield from optimize.step((index, step))  # device sync: reads the loss values
                    step_seconds += time.perf_counter() - t_step
                    delivered = optimize.delivered_terms
                    if not math.isfinite(delivered.get("total", terms["total"])):
                        raise Diverged(
                            f"the objective became {terms['total']} at scale {index}, step {step}; try a "
                            + ("smaller lr or the lbfgs optimizer" if params.optimizer == "adam"
                               else "smaller lr or smaller loss weights")
                        )
                    work_done += h * w
                    yield Progress(
                        scale=index, scales=len(job.levels), step=step, steps=steps, losses=terms,
                        best=delivered["total"], elapsed=time.perf_counter() - t0,
                        eta=step_seconds / work_done * (work_total - work_done),
                    )
                    if preview_every and step % preview_every == 0:
                        rgb = images.denormalize(optimize.current()).clamp(0, 1)
                        yield Preview(scale=index, step=step, image=_to_uint8_rgb(rgb))
                if index == len(job.levels):  # the result's own terms (regions judged apart: optimize.py)
                    delivered = yield from optimize.settle((index, steps))
                x = optimize.current()
                if index < len(job.levels):
                    following = job.levels[index]
                    carried = optimize.curvature_at(following.size, following.plan.history, following.plan.pair_dtype,
                                                    job.wrap, regions.labels(job.regions, following.size, job.device))
                del optimize, evaluate, objective  # a full-size scale's history and targets: free them now

        assert x is not None
        out = images.resize(images.denormalize(x).float().cpu(), (job.content.height, job.content.width), job.wrap)
        out = out.clamp(0, 1)
        if params.preserve_colors == "luminance":
            out = images.keep_luminance_only(out, job.content.rgb)
        if job.coverage is not None:  # where no mask claims a pixel, it keeps the content (regions.py)
            out = job.coverage * out + (1 - job.coverage) * job.content.rgb
        yield Result(image=images.merge(out, job.content), losses=delivered, elapsed=time.perf_counter() - t0)

    def evaluate(
        self, content: np.ndarray, styles: Sequence[np.ndarray], params: StyleParams, image: np.ndarray,
        style_masks: Sequence[np.ndarray | None] = (), style_guides: Sequence[np.ndarray | None] = (),
    ) -> dict[str, float]:
        """The objective of `params` at its final scale for `image` (its working size,
        RGB at any depth), in fp32 whatever `params.precision` says; with masks, as
        `prepare` takes them (one style and one mask: that region's style loss). For
        benchmarks and tests."""
        job = self.prepare(content, styles, params, style_masks=style_masks, style_guides=style_guides)
        level = job.levels[-1]
        size = level.size
        rgb = images.split(image, "image").rgb
        if tuple(rgb.shape[-2:]) != size:
            raise ValueError(f"image is {rgb.shape[-1]}x{rgb.shape[-2]}, the working size is {size[1]}x{size[0]}")
        evaluate = self.evaluator(job, self.objective(job, level), torch.float32, core=level.plan.core)
        terms = _drain(evaluate(images.normalize(rgb).to(job.device), grad=False))
        terms.pop("blocks", None)
        return terms

    @staticmethod
    def _blocks(objective: Objective) -> tuple[torch.Tensor | None, list[int] | None]:
        """The pixel blocks L-BFGS keeps a memory each for at a level (lbfgs.py), and the
        judge of each: a region job's labels (regions.labels), each region judged by its
        own terms, each block split where a frame's temporal term holds its pixels and
        where it leaves them free (temporal.blocks), both halves under their region's
        judge; a plain frame's two blocks share one judge (groups None). (None, None):
        one memory."""
        labels = None if objective.blocks is None else objective.blocks.reshape(-1)
        count = objective.block_count
        groups = None if labels is None else list(range(count))
        if objective.temporal is None or not objective.temporal_weight:
            return labels, groups
        split = temporal.blocks(objective.temporal[1], labels)
        low, high = split.aminmax()
        if labels is None and int(low) == int(high):  # device sync: all held, or all free
            return None, None
        return split, None if labels is None else [b // 2 for b in range(2 * count)]

    @staticmethod
    def _initial(job: Job, size: tuple[int, int]) -> torch.Tensor:
        """The starting image, normalized: the content (paper fig. 6 uses white noise;
        the notebook and most tools start from the content), seeded noise, gray, or the
        given initial image resized to the first scale."""
        params, device = job.params, job.device
        if params.init == "content":
            rgb = _resize_input(job.content, size, params)
        elif params.init == "image":
            rgb = images.resize(job.init.rgb, size)
        elif params.init == "noise":
            gen = torch.Generator().manual_seed(params.seed)
            rgb = torch.rand((1, 3, *size), generator=gen)
        else:
            rgb = torch.full((1, 3, *size), 0.5)
        return images.normalize(rgb).to(device)


def _digest(t: torch.Tensor) -> bytes:
    """What identifies an image's pixels in the style cache: a hash of its values."""
    return hashlib.blake2b(t.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()


def _resize_input(image: images.SplitImage, size: tuple[int, int], params: StyleParams) -> torch.Tensor:
    """An input image at a working size: (1, 3, h, w) in [0, 1], resized the way
    `params.resize` says (the notebook's way is Pillow's bilinear on 8 bits)."""
    if params.resize == "notebook":
        return images.resize_bilinear_8bit(image.rgb, size)
    return images.resize(image.rgb, size)


def _mask_tensors(given: Sequence[np.ndarray | None], name: str, sizes: Sequence[tuple[int, int]]
                  ) -> list[torch.Tensor | None]:
    """One entry per style (len(sizes)): its mask, checked against that style's size in
    `sizes` (regions.mask_tensor; `name` formatted with the style's number), or None
    where none is given."""
    masks = [regions.mask_tensor(m, name.format(i + 1), size) if m is not None else None
             for i, (m, size) in enumerate(zip(given, sizes))]
    return masks + [None] * (len(sizes) - len(masks))


def _style_gram(features: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
    """A style image's normalized Gram (1, C, C) fp32: plain (by H·W), or guided by its
    source mask at this layer (by the mask's mass; regions.py)."""
    if guide is None:
        return gram_matrix(features)
    return regions.guided_gram(features, guide) / max(float(guide.sum()), 1e-12)


def _drain(evaluation: Evaluation) -> dict[str, float]:
    """Runs an evaluation to its end, dropping its progress events; returns its terms."""
    while True:
        try:
            next(evaluation)
        except StopIteration as done:
            return done.value


def _to_uint8_rgb(rgb: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) in [0, 1] -> (h, w, 3) uint8."""
    return (rgb[0].float().cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # device sync
