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


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_tiled_run_agrees_with_the_whole_image_run(engine, style, precision):
    """The tiled objective on cuDNN: a forced-tile run and a whole run of a 224x160
    photo end at the same objective (within 3%) and nearly the same pixels."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((224, 160), Image.LANCZOS))
    params = preset("default").replace(size=0, scales=2, min_scale=112, coarse_steps=4, steps=6, precision=precision)
    whole = list(engine.run(photo, [style], params, device="cuda"))
    tiled = list(engine.run(photo, [style], params.replace(tile=64), device="cuda"))
    assert tiled[0].tiles == (64, 64)
    assert tiled[-1].losses["total"] == pytest.approx(whole[-1].losses["total"], rel=0.03)
    assert np.abs(whole[-1].image.astype(int) - tiled[-1].image.astype(int)).mean() <= 3


@pytest.mark.slow
def test_default_preset_at_full_size(engine):
    from skimage import data

    photo, texture = data.astronaut(), data.immunohistochemistry()
    events = list(engine.run(photo, [texture], preset("default")))
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.scale for p in progress if p.step == 1] == [1, 2, 3]
    assert progress[-1].losses["total"] < progress[0].losses["total"]
    assert events[-1].image.shape == photo.shape
