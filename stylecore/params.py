"""The parameters of one style-transfer job, and the named presets.

`StyleParams` is the single source of truth: the CLI builds its options from
these fields, the gRPC layer converts to and from them, and the tests read
them. It validates itself on construction, so an invalid job cannot exist.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# VGG19 layers the method reads (Gatys et al. 2016, sec. 2): content from
# conv4_2, style from the first conv of each block. Names follow the paper;
# the values are the ReLU outputs, as in the paper and the reference notebook.
CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "gray", "image")
POOLINGS = ("max", "avg")
PRESERVE_COLORS = ("none", "luminance", "match")
PRECISIONS = ("auto", "fp32", "bf16")
RESIZES = ("longest", "notebook")
DEVICES = ("auto", "cpu", "cuda")  # where a run goes: Engine.run(device=...), not a job parameter


# Upper bounds that keep every value representable where it is used: a step size
# beyond this only diverges (and near fp32's limit overflows inside Adam), and a
# memory limit beyond a PiB overflows the byte counts.
MAX_LR = 1e6
MAX_MEMORY_GIB = 1 << 20


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A field with its help text, which the CLI and the gRPC contract's docs show, and
    for a field with a fixed set of values its `choices` (checked on construction; the
    CLI's --help lists them): `dataclasses.fields(StyleParams)[i].metadata["choices"]`."""
    return dataclasses.field(default=default, metadata={"help": help, **({"choices": choices} if choices else {})})


class ParamError(ValueError):
    """An invalid parameter. `field` names it, the message says what is wrong."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class StyleParams:
    """Everything that decides the result of a job (besides the images and the weights)."""

    # --- resolution and schedule ---
    size: int = _f(512, "longest side of the working image in px (the input is never upscaled); "
                        "0 = full resolution: the photo's own size")
    resize: str = _f(
        "longest",
        "how SIZE applies: longest (the longest side, never enlarged; bicubic) or notebook (the reference "
        "notebook's torchvision Resize(SIZE): the shorter side becomes SIZE, or the longest side's length "
        "when that is at most SIZE; bilinear on the 8-bit image; the style stretched to the content's shape)",
        RESIZES,
    )
    scales: int = _f(1, "coarse-to-fine pyramid levels, ending at SIZE")
    min_scale: int = _f(128, "longest side of the coarsest level in px")
    steps: int = _f(100, "optimizer steps at the final scale")
    coarse_steps: int = _f(100, "optimizer steps at each coarser scale")
    optimizer: str = _f("lbfgs", "lbfgs or adam", OPTIMIZERS)
    lr: float = _f(1.0, "step size (for L-BFGS a multiplier on its own step length)")
    average: float = _f(0.0, "adam only: decay of the moving average that is returned (0 = off)")
    init: str = _f("content", "starting image: content, noise, gray, or image (a given initial image, e.g. an "
                              "earlier result: --init-image)", INITS)
    clamp: int = _f(1, "1: keep every pixel in the valid range while optimizing (0: the notebook's unbounded image)")

    # --- objective ---
    content_weight: float = _f(1.0, "weight of the content loss (conv4_2)")
    style_weight: float = _f(1e6, "weight of the style loss (Gram matrices)")
    tv_weight: float = _f(0.0, "weight of the total-variation smoothness loss")
    style_layer_weights: tuple[float, ...] = _f(
        (1.0, 0.7, 0.5, 0.3, 0.2), "weights of conv1_1,conv2_1,conv3_1,conv4_1,conv5_1"
    )
    style_blend: tuple[float, ...] = _f((), "relative weights of several style images (default: equal)")
    style_scale: float = _f(
        1.0, "style image's longest side relative to the working image's; 0 = resize it to the content's shape"
    )
    pooling: str = _f("max", "max or avg (Gatys et al. prefer avg)", POOLINGS)
    preserve_colors: str = _f(
        "none", "none, luminance (luminance-only transfer) or match (colour matching)", PRESERVE_COLORS
    )

    # --- execution ---
    seed: int = _f(0, "random seed; the same seed and settings give the same output on CPU")
    precision: str = _f(
        "auto", "auto, fp32 or bf16 (auto: bf16 only where the hardware is fast at it)", PRECISIONS
    )
    max_memory: float = _f(
        0.0, "GiB the job may use (the whole process on a CPU); scales that do not fit are worked tile by "
        "tile; 0 = 80 percent of the device's free memory",
    )
    tile: int = _f(0, "tile side in px, a multiple of 16, for every scale (0 = whole where it fits, "
                      "else the largest tiles that fit in max_memory)")

    # --- the kind of result (last: the gRPC Params message mirrors this order) ---
    tileable: int = dataclasses.field(default=0, metadata={
        "help": "1: the result tiles seamlessly in both directions (optimized on a torus: circular padding, "
                "wrap-around tiles and smoothness; working sides multiples of 16); 0: an ordinary image",
        "flag": True})  # the CLI's --tileable alone means 1
    temporal_weight: float = _f(
        5e3, "sequences: weight of the temporal loss that holds each frame after the first to the previous "
             "result warped along the optical flow (Ruder et al. 2016); 0 = frames stylized independently "
             "(still started from the previous result); single images: not used")

    def __post_init__(self) -> None:
        _check_int(self, "size", 0, 65536)
        _check_int(self, "tile", 0, 65536)
        if self.tile % 16:
            raise ParamError("tile", f"must be a multiple of 16, got {self.tile}")
        if not (0.0 <= self.max_memory <= MAX_MEMORY_GIB):
            raise ParamError("max_memory", f"must be 0 (automatic) or a positive number of GiB up to "
                                           f"{MAX_MEMORY_GIB}, got {self.max_memory!r}")
        _check_int(self, "scales", 1, 8)
        _check_int(self, "min_scale", 16, 16384)
        _check_int(self, "steps", 1, 100_000)
        _check_int(self, "coarse_steps", 0, 100_000)
        _check_int(self, "seed", 0, 2**63 - 1)
        _check_int(self, "clamp", 0, 1)
        _check_int(self, "tileable", 0, 1)
        for f in dataclasses.fields(self):
            if "choices" in f.metadata:
                _check_choice(self, f.name, f.metadata["choices"])
        for name in ("content_weight", "style_weight", "tv_weight", "style_scale", "temporal_weight"):
            _check_float(self, name)
        if not (0.0 < self.lr <= MAX_LR):
            raise ParamError("lr", f"must be a positive number up to {MAX_LR:g}, got {self.lr!r}")
        if not (0.0 <= self.average < 1.0):
            raise ParamError("average", f"must be in [0, 1), got {self.average!r}")
        if self.style_scale and not (0.01 <= self.style_scale <= 8.0):
            raise ParamError("style_scale", f"must be 0 or in [0.01, 8], got {self.style_scale!r}")
        if len(self.style_layer_weights) != len(STYLE_LAYERS):
            raise ParamError(
                "style_layer_weights",
                f"needs {len(STYLE_LAYERS)} values ({', '.join(STYLE_LAYERS)}), "
                f"got {len(self.style_layer_weights)}",
            )
        for w in self.style_layer_weights:
            _check_number("style_layer_weights", w)
        for w in self.style_blend:
            _check_number("style_blend", w)
        if self.style_blend and sum(self.style_blend) <= 0:
            raise ParamError("style_blend", "at least one weight must be positive")
        if self.style_weight == 0 and self.content_weight == 0 and self.tv_weight == 0:
            raise ParamError("style_weight", "all loss weights are zero: nothing to optimize")

    def replace(self, **changes: Any) -> "StyleParams":
        """A copy with some fields changed (validated like any new instance)."""
        return dataclasses.replace(self, **changes)

    def scale_sizes(self, full: int | None = None) -> list[int]:
        """Longest side of each pyramid level, coarsest first, ending at `size` (size 0:
        at `full`, the photo's longest side).

        Levels are spaced geometrically, as in crowsonkb/style-transfer-pytorch.
        """
        size = self.size or full or self.min_scale
        if self.scales == 1 or self.min_scale >= size:
            return [size]
        ratio = (size / self.min_scale) ** (1.0 / (self.scales - 1))
        return [round(self.min_scale * ratio**i) for i in range(self.scales - 1)] + [size]

    def blend_weights(self, n_styles: int) -> list[float]:
        """Normalized blend weights for `n_styles` style images."""
        if n_styles < 1:
            raise ParamError("styles", "at least one style image is needed")
        if not self.style_blend:
            return [1.0 / n_styles] * n_styles
        if len(self.style_blend) != n_styles:
            raise ParamError(
                "style_blend",
                f"has {len(self.style_blend)} weights for {n_styles} style images",
            )
        total = sum(self.style_blend)
        return [w / total for w in self.style_blend]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_int(p: StyleParams, name: str, lo: int, hi: int) -> None:
    v = getattr(p, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ParamError(name, f"must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ParamError(name, f"must be between {lo} and {hi}, got {v}")


def _check_number(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParamError(name, f"must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ParamError(name, f"must be finite, got {v!r}")
    if v < 0:
        raise ParamError(name, f"must not be negative, got {v!r}")


def _check_float(p: StyleParams, name: str) -> None:
    _check_number(name, getattr(p, name))


def _check_choice(p: StyleParams, name: str, choices: tuple[str, ...]) -> None:
    v = getattr(p, name)
    if v not in choices:
        raise ParamError(name, f"must be one of {', '.join(choices)}; got {v!r}")


# --- presets --------------------------------------------------------------------

# The reference notebook exactly (../shared/reference): Adam lr 0.003 on the
# ImageNet-normalized image for 3000 steps at 400 px, fp32, max pooling, the
# style image resized to the content's shape, target initialized from content.
SEED = StyleParams(
    size=400,
    resize="notebook",
    scales=1,
    steps=3000,
    coarse_steps=0,
    optimizer="adam",
    lr=0.003,
    clamp=0,
    init="content",
    content_weight=1.0,
    style_weight=1e6,
    tv_weight=0.0,
    style_scale=0.0,
    pooling="max",
    precision="fp32",
)

# Chosen from measurements (see docs/optimizer.md, "Choosing the default preset"): L-BFGS
# reaches a given objective in far fewer VGG passes than Adam, and a coarse-to-fine
# pyramid puts most of those passes at low resolution where they are cheap. Since
# each level inherits the previous level's curvature pairs, four levels with 15
# coarse steps and 8 final ones beat three with 10 and 12 at about 1.1x the time
# (docs/optimizer.md, "L-BFGS across scales").
DEFAULT = StyleParams(
    size=512,
    scales=4,
    min_scale=128,
    steps=8,
    coarse_steps=15,
    optimizer="lbfgs",
    lr=1.0,
    init="content",
    tv_weight=0.0,
)

# Previews: two small scales.
DRAFT = DEFAULT.replace(size=256, scales=2, steps=10, coarse_steps=10)

# Print quality: a fourth, larger scale and more steps at each.
HIGH = DEFAULT.replace(size=1024, scales=4, steps=30, coarse_steps=30)

# Full resolution: the photo's own size, worked tile by tile where it does not fit in
# memory (tiling.py). Five levels from 128 px (about 2.4x apart for a 12 MP photo):
# the coarse levels do most of the work cheaply; a few steps at full size add the
# detail (docs/full-resolution.md, "Full resolution").
FULL = DEFAULT.replace(size=0, scales=5, min_scale=128, coarse_steps=10, steps=6)

PRESETS: dict[str, StyleParams] = {
    "default": DEFAULT,
    "draft": DRAFT,
    "high": HIGH,
    "full": FULL,
    "seed": SEED,
}


def preset(name: str) -> StyleParams:
    try:
        return PRESETS[name]
    except KeyError:
        raise ParamError("preset", f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


FIELDS = tuple(f.name for f in dataclasses.fields(StyleParams))
__all__ = [
    "StyleParams", "ParamError", "PRESETS", "preset", "FIELDS", "CONTENT_LAYER", "STYLE_LAYERS",
]
