"""Pixel buffers as the engine, the server and GIMP exchange them: numpy arrays of
shape (H, W, C), C = 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA), at one of three
depths: 8 bits (uint8), 16 bits (uint16) or 32-bit float (float32, 0..1 nominal).
No torch here: the client side checks and converts buffers too.

A depth is named by its bits per channel (8, 16, 32) everywhere: the CLI's
--output-depth, the contract's ImageMeta.depth and Header.result_depth, the plug-in.
"""

from __future__ import annotations

import numpy as np

# bits per channel -> the numpy type a buffer of that depth has
DEPTHS: dict[int, type] = {8: np.uint8, 16: np.uint16, 32: np.float32}
_BITS = {np.dtype(t): bits for bits, t in DEPTHS.items()}


def depth_of(array: np.ndarray) -> int:
    """Bits per channel of a buffer: 8, 16 or 32 (float)."""
    try:
        return _BITS[array.dtype]
    except KeyError:
        raise ValueError(f"pixels of type {array.dtype} are not an image depth "
                         "(uint8: 8 bits, uint16: 16 bits, float32: 32-bit float)") from None


def check_buffer(array: np.ndarray, name: str) -> np.ndarray:
    """Validate an (H, W, C) or (H, W) buffer of a known depth; returns it as (H, W, C)."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{name}: expected shape (height, width, 1..4 channels), got {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: image is empty ({array.shape[1]}x{array.shape[0]})")
    if array.dtype not in _BITS:
        raise ValueError(f"{name}: expected 8-bit (uint8), 16-bit (uint16) or 32-bit float (float32) pixels, "
                         f"got {array.dtype}")
    return array


def to_unit(array: np.ndarray) -> np.ndarray:
    """A buffer's values as float32 in [0, 1] nominal (float buffers as they are, NaN as 0)."""
    bits = depth_of(array)
    if bits == 32:
        return np.nan_to_num(array.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return array.astype(np.float32) / float(np.iinfo(DEPTHS[bits]).max)


def from_unit(values: np.ndarray, bits: int) -> np.ndarray:
    """float values in [0, 1] -> a buffer of `bits` (rounded to the nearest level; float
    kept as float32, clipped to [0, 1])."""
    values = np.clip(values, 0.0, 1.0)
    if bits == 32:
        return values.astype(np.float32, copy=False)
    if bits not in DEPTHS:
        raise ValueError(f"depth must be 8, 16 or 32 bits, got {bits}")
    top = np.iinfo(DEPTHS[bits]).max
    return np.rint(values * top).astype(DEPTHS[bits])


def to_depth(array: np.ndarray, bits: int) -> np.ndarray:
    """A buffer at another depth; the same array where it is at that depth already.
    8 <-> 16 bits exactly where it can be (v * 257 up; the nearest level down)."""
    have = depth_of(array)
    if have == bits:
        return array
    if have == 8 and bits == 16:
        return array.astype(np.uint16) * np.uint16(257)
    if have == 16 and bits == 8:  # integer arithmetic: no float copy of a large image
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return from_unit(to_unit(array), bits)


def check_mask(array: np.ndarray, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A region mask (regions.py): gray (H, W, 1), gray + alpha (the alpha multiplies:
    a selection saved as a transparent PNG), or RGB(A) whose colour channels are
    equal, of `size` (h, w) where given. Returns it as (H, W, C); raises ValueError
    saying what is wrong (the caller names the mask)."""
    array = check_buffer(array, name)
    h, w, c = array.shape
    if size is not None and (h, w) != tuple(size):
        raise ValueError(f"is {w}x{h} px; a mask must be the size of its image, {size[1]}x{size[0]}")
    if c >= 3 and not (np.array_equal(array[:, :, 0], array[:, :, 1])
                       and np.array_equal(array[:, :, 0], array[:, :, 2])):
        raise ValueError("is not gray: its colour channels differ (a mask is a gray image: white where the "
                         "style applies, black where it does not)")
    return array
