"""How much memory a job may use, and the one planner: how each scale of a job runs
within it, whole or tile by tile (tiling.py) with the largest tiles that fit, and
how much L-BFGS history. The engine (Engine.prepare) and the server's admission
(styleserver.service.admission) both call `plan_levels` with the same inputs, so
what a server admits is what its engine runs.

The model is measured, not guessed: the constants below (docs/full-resolution.md,
"The memory model") and the peaks of 12 and 24 MP jobs that bench/fullres_bench.py
checks them with (docs/performance.md, "Full resolution").
Figures are peak bytes per pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import sizes
from .lbfgs import ONEHOT_BYTES
from .params import ParamError, StyleParams
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
# 14 pairs peaked at 6.15 GiB (the model misses about 1 GiB at that
# size; docs/performance.md, "Full resolution").
SHORT_HISTORY = 8
# A job with region masks (regions.py), per pixel of a scale: each guided region's
# guides (the mask at every style layer's resolution, 4/3 of a fp32 value a pixel;
# GUIDE_BYTES), and, while a pass runs, the regions' copies of the style layers'
# activations they weight (together about one copy: the regions share the positions;
# 122 values a pixel over conv1_1..conv5_1, in the network's dtype; GUIDED_VALUES).
GUIDE_BYTES = 6
GUIDED_VALUES = 122
# And the block label of each pixel (1 byte: regions.labels), and, while the terms
# are split by block, the TV differences' temporaries (two 3-channel fp32 maps: 24
# bytes; losses.total_variation with blocks).
LABEL_BYTES = 25
# A frame after the first of a sequence (temporal.py), per pixel of a scale: the warped
# previous result (3 fp32 values), its weight (1) and L-BFGS's block label (1 byte:
# held or free pixels, temporal.blocks).
TEMPORAL_BYTES = 17
# A tileable job's network pads every convolution's input circularly into a copy,
# which autograd keeps: peak growth of a 768x768 forward+backward measured 1.13x (fp32)
# and 1.11x (bf16) that of the zero-padded network on CPU.
WRAP_FACTOR = 1.15
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


def job_budget(max_memory_gib: float, device: torch.device, cap: int | None = None) -> tuple[int, int]:
    """(budget, held): the bytes a job may add to what the process holds now, and what
    the process held when `max_memory_gib` was counted (0 where it was not).

    max_memory_gib (params.max_memory) counts the whole process (on CUDA: the job's
    tensors); without it the job may use BUDGET_SHARE of what the device has free.
    `cap`: a caller's own limit (a server's per-job budget), which binds instead where
    max_memory is not given, and with it where it is smaller. `held` lets a plan that
    does not fit say what max_memory would do (not under a cap, which may bind instead)."""
    if not max_memory_gib:
        return (cap if cap is not None else int(available_bytes(device) * BUDGET_SHARE)), 0
    held = torch.cuda.memory_allocated(device) if device.type == "cuda" else resident_bytes()
    if held >= max_memory_gib * 2**30:
        raise ParamError(
            "max_memory",
            f"{max_memory_gib:g} GiB counts the whole process, which holds {held / 2**30:.2f} GiB before "
            "the job (PyTorch, the network): nothing is left for the job; give more",
        )
    own = int(max_memory_gib * 2**30) - held
    return (own, held) if cap is None else (min(cap, own), 0)


class Level(NamedTuple):
    """One pyramid level of a job: its working size, its steps, and how it fits in memory."""

    size: tuple[int, int]  # (h, w)
    steps: int
    plan: ScalePlan  # whole or tiled, and the L-BFGS history
    style_plans: tuple[ScalePlan, ...]  # each style image's at this level: whole, or tiled too


def plan_levels(content: tuple[int, int], styles: Sequence[tuple[int, int]], params: StyleParams,
                dtype: torch.dtype, budget: int, held: int = 0, guided: int = 0,
                temporal: bool = False) -> tuple[Level, ...]:
    """Every pyramid level of a job (coarsest first) for a content of `content` (h, w)
    px and style images of `styles` (h, w) px, in `dtype`, within `budget` bytes, with
    `guided` regions that have a mask (0: no masks). Raises ParamError naming
    max_memory when a level cannot fit even in the smallest tiles; `held` as
    job_budget says. The one planner: the engine and admission both call it."""
    levels = []
    for size, steps in sizes.pyramid(content[0], content[1], params):
        plan = plan_scale(size, dtype, budget, params.tile or None, held, guided, bool(params.tileable), temporal)
        # A style worked larger than the budget allows (style_scale > 1 at full size) is
        # tiled too, with the level's tiles where the level is tiled; one that does not
        # fit even so is refused now, not levels later.
        style_plans = tuple(plan_scale(sizes.style_size(h, w, size, params.style_scale), dtype, budget, plan.core,
                                       held) for h, w in styles)
        levels.append(Level(size, steps, plan, style_plans))
    return tuple(levels)


def plan_scale(size: tuple[int, int], dtype: torch.dtype, budget: int, force_core: int | None = None,
               held: int = 0, guided: int = 0, wrap: bool = False, temporal: bool = False) -> ScalePlan:
    """Whole where the scale fits in `budget` bytes with the full L-BFGS history; else
    tiles as large as fit after the image-sized vectors and a history cut to fit.
    force_core: tile with this core whatever fits (tests and benchmarks). Raises
    ParamError when even the smallest tiles do not fit; `held`, the bytes the process
    held when `budget` was counted from max_memory, lets it say what max_memory would do.
    guided: the job's regions with masks (the guides and the weighted copies they add);
    wrap: a tileable job (its circularly padded copies); temporal: a frame after the
    first of a sequence (its warped previous result and weight)."""
    pixels = size[0] * size[1]
    network = NETWORK_BYTES.get(dtype, NETWORK_BYTES[torch.float32])
    if wrap:
        network = int(network * WRAP_FACTOR)
    if guided:
        network += GUIDED_VALUES * (torch.finfo(dtype).bits // 8)
    guides = guided * GUIDE_BYTES + (LABEL_BYTES if guided else 0) + (TEMPORAL_BYTES if temporal else 0)
    # L-BFGS's blocks (lbfgs.py): the regions' (each, and the pixels no region claims),
    # each split in held and free pixels for a frame; their one-hot is kept up to
    # ONEHOT_BYTES, else made a piece at a time.
    blocks = (guided + 1 if guided else 1) * (2 if temporal else 1)
    onehot = min(blocks * pixels * 4, ONEHOT_BYTES) if blocks > 1 else 0
    whole = pixels * (VECTOR_BYTES + TARGET_VALUES * 4 + MAX_HISTORY * PAIR_BYTES + network + guides) + onehot
    if force_core is None and whole <= budget:
        return ScalePlan(None, MAX_HISTORY, whole)
    room = int(min(budget * TILED_SHARE, budget - TILED_RESERVE))  # what a tiled plan may use
    image_bytes = pixels * (VECTOR_BYTES + TARGET_VALUES * (torch.finfo(dtype).bits // 8) + guides) + onehot

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
