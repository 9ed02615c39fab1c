"""Opt-in tests: `pytest -m gpu` on a CUDA machine, `pytest -m slow` for full-size runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylecore import Progress, Result, Started, preset


@pytest.mark.gpu
def test_cuda_runs_in_bf16_with_fp32_losses(engine, content, style):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    events = list(engine.run(content, [style], preset("default").replace(size=64, scales=2, min_scale=32,
                                                                            steps=10), device="cuda"))
    started = events[0]
    assert isinstance(started, Started) and started.device.startswith("cuda")
    assert started.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    progress = [e for e in events if isinstance(e, Progress)]
    assert all(np.isfinite(p.losses["total"]) for p in progress)
    assert progress[-1].losses["style"] < progress[0].losses["style"]
    assert isinstance(events[-1], Result) and events[-1].image.shape == content.shape


@pytest.mark.slow
def test_default_preset_at_full_size(engine):
    from skimage import data

    photo, texture = data.astronaut(), data.immunohistochemistry()
    events = list(engine.run(photo, [texture], preset("default")))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.scale for p in progress if p.step == 1] == [1, 2, 3]
    assert progress[-1].losses["total"] < progress[0].losses["total"]
    assert events[-1].image.shape == photo.shape
