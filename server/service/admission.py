"""Validate before spending: a whole Stylize header checked against the server's
Limits, before any image byte is read.

`check` is a pure function. From the header alone (and, for encoded files, the
sizes read from each file's header as soon as its first bytes arrive) it computes
every working size the engine would use: the content at each pyramid level and
every style image at `style_scale` at each level, and the job's memory estimate.
Problems raise `Invalid` (INVALID_ARGUMENT) or `TooLarge` (RESOURCE_EXHAUSTED),
naming the field in proto-path form (`header.params.style_scale`,
`header.styles[1].width`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stylecore import memory, precision, sizes
from stylecore.params import ParamError, StyleParams
from stylecore.sequence import frame_params
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import wire

from .. import convert
from .limits import GRAM_BYTES, INPUT_BYTES_PER_PIXEL, STYLE_WORK_FLOOR, Limits


class Refused(Exception):
    """A request the server will not run. `field` is the proto path of the culprit."""

    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class Invalid(Refused):
    status = "INVALID_ARGUMENT"


class TooLarge(Refused):
    status = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class Dims:
    """An image's size: declared (RAW, or an encoded file's optional width/height) or
    read from its file header. channels 0: not known yet."""

    width: int
    height: int
    channels: int = 0
    depth: int = 0  # bits per channel; 0: not known yet


@dataclass(frozen=True)
class Plan:
    params: StyleParams
    names: tuple[str, ...]  # "header.content", "header.styles[0]", ...
    metas: tuple[pb.ImageMeta, ...]
    levels: tuple[memory.Level, ...]  # the engine's plan of every level; empty while the content's size is unknown
    budget: int  # bytes the engine plans the job within (max_job_bytes less the inputs and targets)
    estimate_bytes: int  # the job's memory estimate over what is known so far


def image_names(header: pb.Header) -> tuple[str, ...]:
    """In upload order (wire.header_images): "header.content", "header.styles[0]", ..."""
    return tuple(name for name, _ in wire.header_images(header))


def image_metas(header: pb.Header) -> tuple[pb.ImageMeta, ...]:
    """In upload order (wire.header_images): the content, the styles, the initial image,
    the masks that are sent."""
    return tuple(meta for _, meta in wire.header_images(header))


def check(header: pb.Header, limits: Limits, dims: Sequence[Dims | None] | None = None) -> Plan:
    """The job the header describes, or Invalid/TooLarge. `dims`: per image (content
    first), sizes known from file headers; RAW sizes come from the header itself."""
    try:
        params = convert.params_from_proto(header.preset, header.params)
    except ParamError as e:
        where = "header.preset" if e.field == "preset" else f"header.params.{e.field}"
        raise Invalid(where, str(e).split(": ", 1)[1]) from None
    if header.result_format not in (pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW, *convert.FORMATS):
        raise Invalid("header.result_format", f"unknown image format {header.result_format}")
    if header.preview_max_side > 4096:
        raise Invalid("header.preview_max_side", f"must be at most 4096, got {header.preview_max_side}")
    if not header.styles:
        raise Invalid("header.styles", "at least one style image is needed")
    if len(header.styles) > limits.max_styles:
        raise TooLarge("header.styles", f"{len(header.styles)} style images; this server takes at most "
                                         f"{limits.max_styles} (max_styles)")
    try:
        params.blend_weights(len(header.styles))
    except ParamError as e:
        raise Invalid(f"header.params.{e.field}", str(e).split(": ", 1)[1]) from None

    for field in ("style_masks", "style_source_masks"):
        if len(getattr(header, field)) > len(header.styles):
            raise Invalid(f"header.{field}", f"{len(getattr(header, field))} masks for {len(header.styles)} style "
                                             "images: at most one per style")
    if header.result_depth and (text := wire.depth_refusal(header.result_format, header.result_depth)):
        raise Invalid("header.result_depth", text)
    names = image_names(header)
    metas = image_metas(header)
    if header.HasField("init_image") != (params.init == "image"):
        raise Invalid("header.init_image", "an initial image goes with params.init 'image', and init 'image' needs "
                                           f"one; got init {params.init!r} and {'an' if header.HasField('init_image') else 'no'} image")
    following = header.HasField("previous_frame")
    if following != header.HasField("previous_result"):
        given, missing = ("previous_frame", "previous_result") if following else ("previous_result", "previous_frame")
        raise Invalid(f"header.{missing}", f"a frame after the first needs both the previous frame and its result; "
                                           f"only header.{given} was given")
    if following and header.HasField("init_image"):
        raise Invalid("header.init_image", "a frame after the first starts from the previous result warped to it; "
                                           "do not send an initial image with it")
    if following:
        params = frame_params(params)  # one scale, from the warped previous result (stylecore/sequence.py)
    known = list(dims) if dims is not None else [None] * len(metas)
    total = 0
    for i, (meta, name) in enumerate(zip(metas, names)):
        declared = _check_meta(meta, name, limits)
        if known[i] is None:
            known[i] = declared
        elif declared is not None and (declared.width, declared.height) != (known[i].width, known[i].height):
            raise Invalid(f"{name}.width", f"the header says {declared.width}x{declared.height}, the file is "
                                           f"{known[i].width}x{known[i].height}")
        if known[i] is not None:
            _check_pixels(known[i], name, limits)
        total += meta.size_bytes
    _check_masks(names, known)
    if total > limits.request_bytes:
        raise TooLarge("header", f"the images total {total:,} bytes, more than this server accepts in one "
                                 f"request ({limits.request_bytes:,}, max_request_bytes)")

    content = known[0]
    if content is not None and content.channels and (text := wire.alpha_refusal(header.result_format,
                                                                                 content.channels)):
        raise Invalid("header.result_format", text)
    if (content is not None and content.depth and not header.result_depth
            and (text := wire.depth_refusal(header.result_format, content.depth))):
        raise Invalid("header.result_format", f"the content has {content.depth} bits per channel: {text}")
    levels: tuple[memory.Level, ...] = ()
    # Bytes, not pixels: a 16-bit or float image holds 2 or 4 bytes a sample.
    estimate = sum(d.width * d.height * (INPUT_BYTES_PER_PIXEL + 4 * (d.depth or 8) // 8)
                   for d in known if d is not None)
    estimate += len(header.styles) * GRAM_BYTES * len(params.scale_sizes())
    # The engine plans within what max_job_bytes leaves after the inputs and the style
    # targets, which are held before it plans; the job carries this budget to the engine.
    budget = limits.max_job_bytes - estimate
    if content is not None:
        sizes_ = [size for size, _ in sizes.pyramid(content.height, content.width, params)]
        for h, w in sizes_:
            if h * w > limits.max_work_pixels:
                raise TooLarge("header.params.size", f"the content would be worked at {w}x{h} = {h * w:,} pixels, "
                                                     f"more than max_work_pixels {limits.max_work_pixels:,}")
        # A style is worked at most as large as a square of the content's longest side
        # (style_scale 1 on a square style), or 1024x1024 for a small content: a tiny
        # request must not buy a large style (style_scale up to 8).
        style_limit = min(max(STYLE_WORK_FLOOR, max(max(h, w) ** 2 for h, w in sizes_)), limits.max_work_pixels)
        styles = [(d.height, d.width) for d in known[1:1 + len(header.styles)] if d is not None]
        for j, (sh, sw) in enumerate(styles):
            for level in sizes_:
                h, w = sizes.style_size(sh, sw, level, params.style_scale)
                if h * w > style_limit:
                    field = "header.params.style_scale" if params.style_scale else "header.params.size"
                    raise TooLarge(field, f"style image {j} would be worked at {w}x{h} = {h * w:,} pixels, "
                                          f"more than {style_limit:,} (the content's working size, at least "
                                          f"{STYLE_WORK_FLOOR:,}; max_work_pixels)")
        # The engine's own plan (stylecore.memory.plan_levels), in the precision the
        # workers run in: whole or tiled per level, and each style's; the largest
        # scale's plan is the job's peak (a large style is worked tile by tile before
        # the scale's optimization starts, within the same budget).
        dtype = precision.dtype_for(params.precision, getattr(torch, limits.auto_dtype or "float32"))
        try:
            guided = sum(1 for m in header.style_masks if m.size_bytes) + (
                0 < sum(1 for m in header.style_masks if m.size_bytes) < len(header.styles))  # + the background
            levels = memory.plan_levels((content.height, content.width), styles, params, dtype, budget, 0, guided,
                                        following)
        except ParamError as e:
            raise TooLarge("header.params.size", f"{str(e).split(': ', 1)[1]} (max_job_bytes)") from None
        estimate += levels[-1].plan.estimate
    if estimate > limits.max_job_bytes:
        raise TooLarge("header.params.size", f"the job needs about {estimate / 2**30:.1f} GiB, more than this "
                                             f"server's budget of {limits.max_job_bytes / 2**30:.1f} GiB "
                                             "(max_job_bytes); use a smaller size or fewer styles")
    return Plan(params, names, metas, levels, budget, estimate)


def _check_masks(names: Sequence[str], known: Sequence[Dims | None]) -> None:
    """Each mask has its image's size: a style mask the content's, a style's source mask
    that style's (as far as the sizes are known yet)."""
    index = {name: i for i, name in enumerate(names)}
    for i, name in enumerate(names):
        if name in ("header.previous_frame", "header.previous_result"):
            mask, image = known[i], known[0]
            if mask is not None and image is not None and (mask.width, mask.height) != (image.width, image.height):
                raise Invalid(f"{name}.width", f"is {mask.width}x{mask.height}; a sequence's frames share the "
                                               f"content's size, {image.width}x{image.height}")
            continue
        if not name.startswith("header.style_"):
            continue
        n = int(name[name.index("[") + 1:-1])
        owner = "header.content" if name.startswith("header.style_masks") else f"header.styles[{n}]"
        mask, image = known[i], known[index[owner]]
        if mask is not None and image is not None and (mask.width, mask.height) != (image.width, image.height):
            what = "the content's" if owner == "header.content" else f"style {n}'s"
            raise Invalid(f"{name}.width", f"is {mask.width}x{mask.height}; a mask must be {what} size, "
                                           f"{image.width}x{image.height}")


def _check_meta(meta: pb.ImageMeta, name: str, limits: Limits) -> Dims | None:
    """One ImageMeta on its own; returns the size it declares (None: an encoded file
    that does not say)."""
    if meta.format in (pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW):
        if meta.channels not in (1, 2, 3, 4):
            raise Invalid(f"{name}.channels", f"must be 1 to 4, got {meta.channels}")
        if wire.meta_depth(meta) not in wire.DEPTHS:
            raise Invalid(f"{name}.depth", f"must be 8 (or 0), 16 or 32 bits per channel, got {meta.depth}")
        dims = Dims(meta.width, meta.height, meta.channels, wire.meta_depth(meta))
        _check_pixels(dims, name, limits)
        expected = wire.raw_size(meta)
        if meta.size_bytes != expected:
            raise Invalid(f"{name}.size_bytes", f"{meta.size_bytes} does not match width*height*channels*depth/8 = "
                                                f"{meta.width}*{meta.height}*{meta.channels}*{wire.meta_depth(meta)}/8 "
                                                f"= {expected}")
        return dims
    if meta.format not in convert.FORMATS:
        raise Invalid(f"{name}.format", f"unknown image format {meta.format}")
    if meta.size_bytes == 0:
        raise Invalid(f"{name}.size_bytes", "an encoded image cannot be empty")
    if meta.size_bytes > limits.request_bytes:
        raise TooLarge(f"{name}.size_bytes", f"{meta.size_bytes:,} bytes is more than this server accepts "
                                             f"({limits.request_bytes:,}, max_request_bytes)")
    if meta.width or meta.height:
        dims = Dims(meta.width, meta.height)
        _check_pixels(dims, name, limits)
        return dims
    return None


def _check_pixels(dims: Dims, name: str, limits: Limits) -> None:
    if dims.width <= 0 or dims.height <= 0:
        raise Invalid(f"{name}.width", f"image has no pixels ({dims.width}x{dims.height})")
    if dims.width * dims.height > limits.max_pixels:
        raise TooLarge(f"{name}.width", f"{dims.width}x{dims.height} is {dims.width * dims.height:,} pixels, "
                                        f"more than the limit of {limits.max_pixels:,} (max_pixels)")
