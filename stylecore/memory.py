"""How much memory a job may use, and how a scale is run within it: whole, or tile by
tile (tiling.py) with the largest tiles that fit, and how much L-BFGS history.

The model is measured, not guessed (README, "Full resolution": the constants below,
and the peaks of 12 and 24 MP jobs that bench/fullres_bench.py checks them with).
Figures are peak bytes per pixel.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .params import ParamError
from .tiling import ALIGN, HALO

# One forward+backward through VGG19 up to conv5_1 (activations kept for the backward,
# max-pool indices, the gradient), per pixel of the network's input, with a margin:
# peak resident growth of the second of two passes in a fresh process, measured at
# 512x512 and 768x768 on CPU (oneDNN): fp32 1490-1600 B, bf16 autocast 1130-1180 B.
NETWORK_BYTES = {torch.float32: 1700, torch.bfloat16: 1300}
# Image-sized fp32 vectors per pixel of a scale, besides L-BFGS's history, at most:
# the image, its gradient (which L-BFGS turns into the direction), L-BFGS's previous
# point and gradient, and its best point and gradient (lbfgs.py): 6 x 3 channels x 4
# bytes; the content target at conv4_2 (512 channels at 1/64 of the pixels: 8 values
# per pixel, in the network's dtype when tiled).
VECTOR_BYTES = 6 * 12
TARGET_VALUES = 8
# One L-BFGS curvature pair (s, y): fp32, or bf16 on a tiled level where memory is
# short, where the history competes with the tiles (24 MP in 6 GiB).
PAIR_BYTES = 2 * 12
TILED_PAIR_DTYPE = torch.bfloat16
TILED_PAIR_BYTES = 2 * 6
MAX_HISTORY, MIN_HISTORY = 20, 2
# Where memory is short (a tiled level with bf16 pairs), at most this many pairs: such a
# level runs a handful of steps (the full preset: 6), and a 12 MP job in 6 GiB with
# 14 pairs peaked at 6.15 GiB (the model misses about 1 GiB at that size; README).
SHORT_HISTORY = 8
MIN_CORE = 128  # smaller tiles would spend most of their work on the halo
GOOD_CORE = 1024  # larger tiles gain little: the tiled plan gives memory to tiles up to this, then to history
BUDGET_SHARE = 0.8  # of what the device has, when the job does not say
# A tiled plan leaves part of its budget unplanned, for the allocator's fragmentation
# and the temporaries between tiles: 10%, and at least TILED_RESERVE, which dominates
# small budgets (measured on CPU, peak resident against --max-memory: 24 MP at 6 GiB
# 5.14 GiB with a 20% margin; 1.5 MP at 1.6 GiB 1.60 GiB with 20%, 1.76 with 10%).
TILED_SHARE = 0.9
TILED_RESERVE = 384 << 20


@dataclass(frozen=True)
class ScalePlan:
    core: int | None  # tile core side in px, a multiple of tiling.ALIGN; None: the whole image at once
    history: int  # L-BFGS curvature pairs kept
    estimate: int  # the planned peak in bytes, over what the process held before
    pair_dtype: torch.dtype = torch.float32  # the precision L-BFGS keeps its pairs in

    @property
    def tiled(self) -> bool:
        return self.core is not None


# --- the C heap ----------------------------------------------------------------------
# glibc serves every block over 32 MB with a fresh mmap and gives it back on free; the
# kernel then zero-fills each page of the next one on first touch. On a CPU that was
# 18% of a default run at 1024x1024 (conv1_1's Gram backward at 512x512: 11.4 ms, 3.4
# with freed memory reused; README, "Notes on speed"). So while a level is worked
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


def resident_bytes() -> int:
    """This process's resident memory now (Linux; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_resident_bytes() -> int:
    """This process's peak resident memory (Linux's VmHWM; 0 where unknown). Unlike
    getrusage's ru_maxrss, it starts afresh at exec: a child started from a large
    process does not report its parent's size."""
    return _proc_kib("/proc/self/status", "VmHWM") or 0


def available_bytes(device: torch.device) -> int:
    """Memory the device has free now: CUDA's free memory, or the machine's
    MemAvailable (Linux) for the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return _proc_kib("/proc/meminfo", "MemAvailable") or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _proc_kib(path: str, key: str) -> int | None:
    """The `key:  N kB` line of a /proc file, in bytes (None where there is none)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def job_budget(max_memory_gib: float, device: torch.device) -> int:
    """Bytes the job may add to what the process holds now: `max_memory_gib` for the
    whole process (on CUDA: for the job's tensors) when given, else BUDGET_SHARE of
    what the device has free."""
    if max_memory_gib:
        held = torch.cuda.memory_allocated(device) if device.type == "cuda" else resident_bytes()
        if held >= max_memory_gib * 2**30:
            raise ParamError(
                "max_memory",
                f"{max_memory_gib:g} GiB counts the whole process, which holds {held / 2**30:.2f} GiB before "
                "the job (PyTorch, the network): nothing is left for the job; give more",
            )
        return int(max_memory_gib * 2**30) - held
    return int(available_bytes(device) * BUDGET_SHARE)


def plan_scale(size: tuple[int, int], dtype: torch.dtype, budget: int, force_core: int | None = None,
               held: int = 0) -> ScalePlan:
    """Whole where the scale fits in `budget` bytes with the full L-BFGS history; else
    tiles as large as fit after the image-sized vectors and a history cut to fit.
    force_core: tile with this core whatever fits (tests and benchmarks). Raises
    ParamError when even the smallest tiles do not fit; `held`, the bytes the process
    held when `budget` was counted from max_memory, lets it say what max_memory would do."""
    pixels = size[0] * size[1]
    network = NETWORK_BYTES.get(dtype, NETWORK_BYTES[torch.float32])
    whole = pixels * (VECTOR_BYTES + TARGET_VALUES * 4 + MAX_HISTORY * PAIR_BYTES + network)
    if force_core is None and whole <= budget:
        return ScalePlan(None, MAX_HISTORY, whole)
    room = int(min(budget * TILED_SHARE, budget - TILED_RESERVE))  # what a tiled plan may use
    image_bytes = pixels * (VECTOR_BYTES + TARGET_VALUES * (torch.finfo(dtype).bits // 8))

    def tile_bytes(core: int) -> int:
        return min(core + 2 * HALO, size[0]) * min(core + 2 * HALO, size[1]) * network

    def largest_core(history: int, pair_bytes: int) -> int:
        side = math.isqrt(max(0, (room - image_bytes - history * pair_bytes) // network)) - 2 * HALO
        return min(side // ALIGN * ALIGN, _round_up(max(size), ALIGN))

    if force_core is None and largest_core(MIN_HISTORY, pixels * TILED_PAIR_BYTES) < MIN_CORE:
        # The smallest plan, and the budget that leaves room for it after the tiled reserve.
        planned = image_bytes + MIN_HISTORY * pixels * TILED_PAIR_BYTES + tile_bytes(MIN_CORE)
        need = max(planned / TILED_SHARE, planned + TILED_RESERVE)
        hint = (f" (max_memory less the {held / 2**30:.2f} GiB the process holds before it): give max_memory "
                f"{math.ceil((need + held) / 2**30 * 10) / 10:g} or more" if held else "")
        raise ParamError(
            "max_memory",
            f"{size[1]}x{size[0]} px needs about {need / 2**30:.2f} GiB even in the smallest tiles, "
            f"but the job may use {max(budget, 0) / 2**30:.2f} GiB{hint}",
        )
    # Tiled. Tiles come first, up to GOOD_CORE: a small tile spends most of its work on
    # the halo ((528 + 192)² / 528² = 1.9x the pixels; (1024 + 192)² / 1024² = 1.4x).
    # What is left goes to the L-BFGS history, and past its full length to larger tiles.
    # Pairs are kept in fp32 where that still leaves the full history and such tiles,
    # else in bf16 (where memory is short: a 24 MP photo in 6 GiB).
    good = min(GOOD_CORE, _round_up(max(size), ALIGN))
    for pair_dtype, pair_bytes, most in ((torch.float32, pixels * PAIR_BYTES, MAX_HISTORY),
                                         (TILED_PAIR_DTYPE, pixels * TILED_PAIR_BYTES, SHORT_HISTORY)):
        core = force_core or _balanced(min(largest_core(MIN_HISTORY, pair_bytes), GOOD_CORE), size)
        history = max(MIN_HISTORY, min(most, (room - image_bytes - tile_bytes(core)) // max(1, pair_bytes)))
        if force_core is None and history == most:
            core = max(core, _balanced(largest_core(most, pair_bytes), size))
        if history == MAX_HISTORY and (force_core or core >= _balanced(good, size)):
            break  # memory to spare: fp32 pairs
    return ScalePlan(core, history, image_bytes + history * pair_bytes + tile_bytes(core), pair_dtype)


def _balanced(core: int, size: tuple[int, int]) -> int:
    """The smallest core (a multiple of ALIGN) that covers `size` (h, w) with as few
    tiles as cores of `core` px do: the same work, less memory per tile."""
    rows, cols = -(-size[0] // core), -(-size[1] // core)
    return _round_up(max(-(-size[0] // rows), -(-size[1] // cols)), ALIGN)


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k
