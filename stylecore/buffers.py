"""Pixel buffers as the engine, the server and GIMP exchange them: numpy uint8
arrays of shape (H, W, C), C = 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA).
No torch here: the client side checks buffers too."""

from __future__ import annotations

import numpy as np


def check_buffer(array: np.ndarray, name: str) -> np.ndarray:
    """Validate an (H, W, C) or (H, W) uint8 buffer; returns it as (H, W, C)."""
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{name}: expected shape (height, width, 1..4 channels), got {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name}: image is empty ({array.shape[1]}x{array.shape[0]})")
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: expected 8-bit pixels (uint8), got {array.dtype}")
    return array
