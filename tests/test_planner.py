"""One planner: a server's admission and the engine plan every level of a job alike
(stylecore.memory.plan_levels), whole or tiled, with the same tiles and L-BFGS
history, for the same content, styles, precision and budget: what is admitted is
what runs, and what one refuses the other refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylecore import ParamError, preset
from stylecore.precision import resolve_dtype
from styleserver.service import admission
from styleserver.service.limits import GiB, MiB, Limits
from styletransfer.v1 import wire

AUTO = str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch.")

# (content w x h, style w x h, preset, precision, max_job_bytes)
TABLE = [
    ((640, 480), (256, 256), "default", "fp32", 6 * GiB),       # whole at every level
    ((1500, 1000), (512, 512), "full", "fp32", 1 * GiB),        # the last levels tiled
    ((1500, 1000), (512, 512), "full", "bf16", 1 * GiB),
    ((1500, 1000), (512, 512), "full", "auto", 1 * GiB),        # auto: as the server's device resolves it
    ((2400, 1600), (1024, 768), "full", "fp32", 1536 * MiB),    # tiled, short history
    ((1200, 900), (3000, 2000), "full", "fp32", 900 * MiB),     # a large style, tiled too
    ((1024, 1024), (256, 256), "high", "bf16", 2 * GiB),
]


def _header(content: tuple[int, int], style: tuple[int, int], preset_name: str, precision: str):
    return wire.header(wire.raw_meta(*content, 3), [wire.raw_meta(*style, 3)], preset=preset_name,
                       params={"precision": precision})


@pytest.mark.parametrize("content,style,preset_name,precision,budget", TABLE,
                         ids=[f"{c[0]}x{c[1]}-{p}-{q}-{b >> 20}MiB" for c, _, p, q, b in TABLE])
def test_admission_and_engine_plan_the_same_levels(engine, content, style, preset_name, precision, budget):
    limits = Limits(max_job_bytes=budget, auto_dtype=AUTO, max_pixels=50_000_000, max_work_pixels=50_000_000)
    plan = admission.check(_header(content, style, preset_name, precision), limits)
    job = engine.prepare(np.zeros((content[1], content[0], 3), np.uint8), [np.zeros((style[1], style[0], 3), np.uint8)],
                         preset(preset_name).replace(precision=precision), device="cpu", budget=plan.budget)
    assert plan.levels == job.levels


def test_the_table_covers_whole_and_tiled_levels_and_tiled_styles(engine):
    """The table above is worth its time: it has whole levels, tiled ones, and a tiled style."""
    kinds = set()
    for content, style, preset_name, precision, budget in TABLE:
        limits = Limits(max_job_bytes=budget, auto_dtype=AUTO, max_pixels=50_000_000, max_work_pixels=50_000_000)
        for level in admission.check(_header(content, style, preset_name, precision), limits).levels:
            kinds.add("tiled" if level.plan.tiled else "whole")
            kinds |= {"tiled style" for p in level.style_plans if p.tiled}
    assert kinds == {"whole", "tiled", "tiled style"}


def test_what_admission_refuses_the_engine_refuses(engine):
    content, style, budget = (6000, 4000), (512, 512), 400 * MiB
    limits = Limits(max_job_bytes=budget, auto_dtype=AUTO, max_pixels=50_000_000, max_work_pixels=50_000_000)
    with pytest.raises(admission.TooLarge, match="even in the smallest tiles"):
        admission.check(_header(content, style, "full", "fp32"), limits)
    # Even the whole of max_job_bytes (admission leaves the engine less: the inputs' share).
    with pytest.raises(ParamError, match="even in the smallest tiles"):
        engine.prepare(np.zeros((content[1], content[0], 3), np.uint8), [np.zeros((style[1], style[0], 3), np.uint8)],
                       preset("full").replace(precision="fp32"), device="cpu", budget=budget)
