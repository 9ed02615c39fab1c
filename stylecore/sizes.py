"""Working sizes: the one place that says at what size each image is worked, for
the engine and for the server's admission check (which must know before any pixel
arrives). Plain integers, no torch: sizes are (height, width)."""

from __future__ import annotations

from .params import StyleParams

# VGG19 halves the resolution four times before conv5_1; below 32 px the deepest
# style layer would be 2x2 or less. Thinner images are stretched to this and back.
MIN_SIDE = 32

Size = tuple[int, int]  # (h, w)

# A tileable job's sides are multiples of this: the four 2x2 poolings before conv5_1.
WRAP_ALIGN = 16


def work_size(height: int, width: int, longest: int) -> Size:
    """(h, w) with the longest side `longest` (never more than the original's),
    aspect kept, each side at least MIN_SIDE."""
    scale = min(longest, max(height, width)) / max(height, width)
    return max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))


def notebook_size(height: int, width: int, size: int) -> Size:
    """(h, w) as the reference notebook's load_image makes it: torchvision's
    Resize(n) sets the *shorter* side to n (the longer one scaled and truncated to
    an int), with n = size when the longest side exceeds size, else n = the longest
    side (so a small image is enlarged). Each side at least MIN_SIDE (our addition)."""
    n = size if max(height, width) > size else max(height, width)
    short, long = min(height, width), max(height, width)
    new_short, new_long = n, int(n * long / short)
    h, w = (new_long, new_short) if width <= height else (new_short, new_long)
    return max(MIN_SIDE, h), max(MIN_SIDE, w)


def pyramid(height: int, width: int, params: StyleParams) -> list[tuple[Size, int]]:
    """[((h, w), steps)] per scale for a content of height x width, coarsest first.
    Levels that come out the same size (a small input) merge into one."""
    rule = notebook_size if params.resize == "notebook" else work_size
    levels: list[tuple[Size, int]] = []
    sides = params.scale_sizes(full=max(height, width))
    for i, side in enumerate(sides):
        size = rule(height, width, side)
        if params.tileable:  # whole 2x2 pooling windows at every stride: a torus (vgg.py, wrap)
            size = (wrap_side(size[0]), wrap_side(size[1]))
        steps = params.steps if i == len(sides) - 1 else params.coarse_steps
        if levels and levels[-1][0] == size:
            levels.pop()
        if steps:
            levels.append((size, steps))
    return levels


def wrap_side(side: int) -> int:
    """A tileable job's working side: a multiple of WRAP_ALIGN, rounded down (an image
    is never enlarged by more than MIN_SIDE asks), at least MIN_SIDE."""
    return max(MIN_SIDE, side // WRAP_ALIGN * WRAP_ALIGN)


def style_size(height: int, width: int, level: Size, style_scale: float) -> Size:
    """The working size of a height x width style image at a content level: the
    content's shape (style_scale 0, the reference notebook), else longest side =
    style_scale x the level's."""
    if style_scale == 0:
        return level
    k = max(level) * style_scale / max(height, width)
    return max(MIN_SIDE, round(height * k)), max(MIN_SIDE, round(width * k))
