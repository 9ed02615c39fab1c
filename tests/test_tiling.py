"""The whole image's objective evaluated tile by tile (stylecore/tiling.py) equals the
untiled one, and the memory planner keeps a job within its budget."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from stylecore import Cancelled, Progress, Result, TilePass, images, preset
from stylecore.losses import gram_matrix
from stylecore.memory import ScalePlan, plan_scale
from stylecore.params import CONTENT_LAYER, STYLE_LAYERS, ParamError
from stylecore.tiling import HALO, features_whole, grams_whole, plan

CORE = 64  # small cores, so that a small image has many tiles and every kind of border


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 224x160 photograph (odd multiples of the tile grid on purpose: 224 = 3.5 x 64)."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((224, 160), Image.LANCZOS))


@pytest.mark.parametrize("height, width, core", [(160, 224, 64), (33, 47, 16), (100, 100, 128), (1, 300, 64)])
def test_tile_cores_cover_the_image_exactly_once(height, width, core):
    seen = np.zeros((height, width), np.int32)
    for tile in plan(height, width, core):
        y0, y1, x0, x1 = tile.core
        py0, py1, px0, px1 = tile.padded
        assert y0 % 16 == 0 and x0 % 16 == 0 and py0 % 16 == 0 and px0 % 16 == 0  # the pooling grid
        assert py0 == max(0, y0 - HALO) and px1 == min(width, x1 + HALO)
        seen[y0:y1, x0:x1] += 1
    assert (seen == 1).all()


def _normalized(photo: np.ndarray) -> torch.Tensor:
    return images.normalize(images.split(photo).rgb).contiguous(memory_format=torch.channels_last)


def test_the_gram_of_tiles_is_the_whole_images_gram(engine, photo):
    net, x = engine.network(torch.device("cpu")), _normalized(photo)
    tiled = grams_whole(net, x, list(STYLE_LAYERS), "max", torch.float32, CORE)
    with torch.no_grad():
        whole = {k: gram_matrix(f) for k, f in net(x, STYLE_LAYERS).items()}
    for layer in STYLE_LAYERS:
        assert torch.allclose(tiled[layer], whole[layer], rtol=1e-4, atol=1e-6 * whole[layer].abs().max()), layer


@pytest.mark.parametrize("height, width", [(157, 211), (150, 93)])
def test_tiles_of_an_image_off_the_pooling_grid_sum_to_its_gram(engine, height, width):
    """Sides that are not multiples of 16: max pooling floors them; the last tiles take
    every remaining row and column, as the whole image's pooling does."""
    rng = np.random.default_rng(0)
    net = engine.network(torch.device("cpu"))
    x = _normalized(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    tiled = grams_whole(net, x, list(STYLE_LAYERS), "max", torch.float32, 48)
    target = features_whole(net, x, CONTENT_LAYER, "max", torch.float32, 48)
    with torch.no_grad():
        whole = net(x, [*STYLE_LAYERS, CONTENT_LAYER])
    for layer in STYLE_LAYERS:
        g = gram_matrix(whole[layer])
        assert torch.allclose(tiled[layer], g, rtol=1e-4, atol=1e-6 * g.abs().max()), layer
    assert torch.allclose(target, whole[CONTENT_LAYER], rtol=1e-4, atol=1e-5 * whole[CONTENT_LAYER].abs().max())


def test_the_content_target_stitched_from_tiles_is_the_whole_images(engine, photo):
    net, x = engine.network(torch.device("cpu")), _normalized(photo)
    tiled = features_whole(net, x, CONTENT_LAYER, "max", torch.float32, CORE)
    with torch.no_grad():
        whole = net(x, [CONTENT_LAYER])[CONTENT_LAYER]
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, rtol=1e-4, atol=1e-5 * whole.abs().max())


def _terms_and_gradient(engine, content, style, params):
    """The objective and its gradient at the content image, through the engine's
    public seams, at the last level (tiled or not, as `params` says)."""
    job = engine.prepare(content, [style], params)
    level = job.levels[-1]
    x = images.normalize(job.content.rgb).requires_grad_(True)
    evaluation = engine.evaluator(job, engine.objective(job, level), core=level.plan.core)(x)
    events = []
    while True:
        try:
            events.append(next(evaluation))
        except StopIteration as done:
            return done.value, x.grad, events, level


# Tiled against whole: (terms, gradient) relative tolerances. fp32: rounding only. bf16:
# the tiles' convolutions and Gram blocks (losses._Gram) round differently from the
# whole image's; measured on the AVX512-BF16 EPYC: style term 9e-5, gradient 1.7e-3.
TILED_TOLERANCE = {"fp32": (1e-4, 1e-3), "bf16": (1e-3, 1e-2)}


def test_the_tiled_gradient_is_the_untiled_gradient(engine, photo, style, precision):
    params = preset("default").replace(size=0, scales=1, steps=1, precision=precision)
    whole_terms, whole_grad, _, whole_level = _terms_and_gradient(engine, photo, style, params)
    tiled_terms, tiled_grad, events, tiled_level = _terms_and_gradient(engine, photo, style, params.replace(tile=CORE))
    assert not whole_level.plan.tiled and tiled_level.plan.core == CORE
    n = len(plan(160, 224, CORE))
    assert [(e.phase, e.tile) for e in events] == [(p, i) for p in (1, 2) for i in range(1, n + 1)]
    terms_rel, grad_rel = TILED_TOLERANCE[precision]
    for k in ("content", "style", "total"):
        assert tiled_terms[k] == pytest.approx(whole_terms[k], rel=terms_rel), k
    relative = (tiled_grad - whole_grad).norm() / whole_grad.norm()
    assert relative < grad_rel


def test_a_tiled_run_and_an_untiled_run_agree(engine, photo, style):
    params = preset("default").replace(size=0, scales=2, min_scale=112, coarse_steps=4, steps=6, precision="fp32")
    whole = list(engine.run(photo, [style], params))
    tiled = list(engine.run(photo, [style], params.replace(tile=CORE)))
    assert whole[0].tiles == (0, 0) and tiled[0].tiles == (CORE, CORE)
    assert any(isinstance(e, TilePass) for e in tiled) and not any(isinstance(e, TilePass) for e in whole)
    a, b = whole[-1], tiled[-1]
    assert isinstance(a, Result) and isinstance(b, Result)
    assert b.losses["total"] == pytest.approx(a.losses["total"], rel=0.03)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() <= 3


def test_cancel_stops_a_tiled_step_within_one_tile(engine, photo, style):
    params = preset("default").replace(size=0, scales=1, steps=3, tile=CORE)
    seen = {"tiles": 0}
    events = engine.run(photo, [style], params, cancel=lambda: seen["tiles"] >= 5)
    with pytest.raises(Cancelled):
        for event in events:
            assert not isinstance(event, Progress)  # cancelled inside the first step
            if isinstance(event, TilePass):
                seen["tiles"] += 1
    assert seen["tiles"] == 5


@pytest.mark.parametrize("size, budget, expected", [
    ((512, 512), 8 << 30, ScalePlan(None, 20, 0)),  # fits whole with the full history
    ((3000, 4000), 5 << 30, "tiled"),
    ((6000, 4000), 6 << 30, "tiled"),  # 24 MP in the 6 GiB
])
def test_the_planner_works_whole_where_it_fits_and_tiles_elsewhere(size, budget, expected):
    got = plan_scale(size, torch.float32, budget)
    if expected == "tiled":
        assert got.tiled and got.core % 16 == 0 and 128 <= got.core < max(size)
        assert 2 <= got.history <= 20 and got.estimate <= budget
    else:
        assert (got.core, got.history) == (expected.core, expected.history)


def test_the_planner_says_when_nothing_fits():
    with pytest.raises(ParamError, match="max_memory: 6000x4000 px needs about"):
        plan_scale((4000, 6000), torch.float32, 1 << 30)


@pytest.mark.parametrize("room_gib, words", [
    (-0.01, "counts the whole process, which holds"),  # less than the process holds already
    (0.3, "(max_memory less the"),  # some room, not enough for the smallest tiles (about 0.7 GiB)
])
def test_a_max_memory_too_small_says_what_the_process_holds(engine, room_gib, words):
    """max_memory counts the whole process (PyTorch and the network hold most of a GiB
    before any job): the refusal says so and what would do, before any work."""
    from stylecore import memory

    photo = np.zeros((1200, 1800, 3), np.uint8)
    max_memory = memory.resident_bytes() / 2**30 + room_gib
    with pytest.raises(ParamError, match="max_memory") as err:
        engine.prepare(photo, [photo], preset("default").replace(size=0, max_memory=max_memory), device="cpu")
    assert words in str(err.value)
    if room_gib > 0:
        assert "give max_memory" in str(err.value)


_MEMORY_CHILD = """
import json, sys
import numpy as np, torch
from stylecore import Engine, VGGFeatures, preset
from stylecore.memory import peak_resident_bytes
from stylecore.vgg import random_state_dict
torch.set_num_threads(2)
engine = Engine(VGGFeatures.from_state_dict(random_state_dict(0, features_only=True)))
rng = np.random.default_rng(0)
photo = rng.integers(0, 256, (1024, 1536, 3), dtype=np.uint8)
style = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
params = preset("default").replace(size=0, scales=1, steps=1, max_memory=float(sys.argv[1]), precision="fp32")
events = list(engine.run(photo, [style], params))
print(json.dumps({"tiles": events[0].tiles, "peak": peak_resident_bytes()}))
"""


def test_a_mid_size_job_stays_within_its_memory_budget():
    """1536x1024 (1.5 MP) in a process of its own, budget 1.6 GiB for the whole process:
    untiled it would need about 3 GiB; tiled, its peak stays within 10% of the budget."""
    budget = 1.6
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(budget)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tiles"][0] > 0  # it had to tile
    assert result["peak"] <= budget * 1.1 * 2**30, f"peak {result['peak'] / 2**30:.2f} GiB"


@pytest.mark.parametrize("budget, tiled", [(8 << 30, False), (1 << 30, True)], ids=["whole", "tiled"])
def test_tiled_plans_keep_the_curvature_pairs_in_bf16(budget, tiled):
    """Where the image-sized vectors compete with the tiles, the pairs take half the memory."""
    plan = plan_scale((2048, 2048), torch.bfloat16, budget)
    assert plan.tiled == tiled
    assert plan.pair_dtype == (torch.bfloat16 if tiled else torch.float32)
