"""The C heap: whether freed memory stays in this process's heap for reuse or goes
back to the kernel at once (glibc only; elsewhere every function here does nothing).

Used by the engine around each pyramid level and by the tiled evaluation between its
passes (docs/full-resolution.md, "The C heap").
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .memory import ScalePlan

# glibc serves every block over 32 MB with a fresh mmap and gives it back on free; the
# kernel then zero-fills each page of the next one on first touch. On a CPU that was
# 18% of a default run at 1024x1024 (conv1_1's Gram backward at 512x512: 11.4 ms, 3.4
# with freed memory reused; docs/full-resolution.md, "The C heap"). So while a level is worked
# whole, freed memory stays in the heap, and what is free goes back to the kernel
# after each level, so that the next level's plan, counted from resident_bytes(), holds.
# Only where the budget has room for what the heap keeps: tiled levels, whose plans
# fill the job's budget, and whole ones near its edge keep glibc's way (measured with
# --max-memory 6, the heap kept at every level: 12 MP 5.80 GiB against 5.37, 24 MP
# 7.01 GiB against 5.76).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters
HEAP_KEEP = 1 << 30  # free bytes the heap may keep at its top before giving them back
# glibc's own behaviour once its dynamic threshold has grown, as it does here at once:
# blocks over 32 MB mapped, the heap trimmed above 64 MB free.
MMAP_THRESHOLD, TRIM_THRESHOLD, MMAP_MAX = 32 << 20, 64 << 20, 65536


@functools.cache  # called at every level: load the library once
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (musl, macOS, Windows): nothing to tune
        return None


def keep_freed_memory(keep: bool = True) -> bool:
    """keep: from now on, this process's heap keeps freed blocks for reuse instead of
    handing blocks over 32 MB back to the kernel at once; else glibc's way again.
    Process-wide; glibc only (returns whether it took)."""
    libc = _glibc()
    if libc is None:
        return False
    if keep:
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP))
    return (bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_MMAP_MAX, MMAP_MAX))
            and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))


def room_to_keep(plan: ScalePlan, budget: int) -> bool:
    """Whether a level planned so may keep freed memory in the heap: worked whole, with
    HEAP_KEEP to spare in the job's budget (bytes)."""
    return not plan.tiled and plan.estimate + HEAP_KEEP <= budget


def release_freed_memory() -> None:
    """Hands the heap's free pages back to the kernel (glibc's malloc_trim)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


# Levels running now in this process (a server may run several jobs at once, one per
# worker), and how many of them keep freed memory: the heap keeps it only while every
# one does, so that a tiled level's plan is never run beside a kept heap.
_levels_lock = threading.Lock()
_levels = {"running": 0, "keeping": 0}


@contextlib.contextmanager
def heap_kept(keep: bool) -> Iterator[None]:
    """While the block runs, freed memory stays in the heap (when `keep`, and every other
    level running in the process keeps too); when it ends, however it ends (a cancelled
    job, a consumer that closed the event stream), the heap keeps only if the levels
    still running all do, and what is free goes back to the kernel."""
    with _levels_lock:
        _levels["running"] += 1
        _levels["keeping"] += keep
        keep_freed_memory(_levels["running"] == _levels["keeping"])
    try:
        yield
    finally:
        with _levels_lock:
            _levels["running"] -= 1
            _levels["keeping"] -= keep
            keep_freed_memory(0 < _levels["running"] == _levels["keeping"])
        release_freed_memory()
