"""Runs of the engine on the real-shaped VGG19 (seeded random weights), small images."""

from __future__ import annotations

import numpy as np
import pytest

from stylecore import Cancelled, Engine, Preview, Progress, Result, Started, VGGFeatures, preset
from stylecore.losses import gram_matrix
from stylecore.params import ParamError

FAST = preset("default").replace(size=64, scales=1, steps=10)


def run(engine, content, styles, params=FAST, **kw):
    return list(engine.run(content, styles, params, **kw))


def result_of(events) -> np.ndarray:
    assert isinstance(events[-1], Result)
    return events[-1].image


def test_events_come_in_order_with_monotone_steps_and_previews(engine, content, style, precision):
    params = FAST.replace(size=64, scales=2, min_scale=32, steps=4, coarse_steps=3, precision=precision)
    events = run(engine, content, [style], params, preview_every=2)
    assert isinstance(events[0], Started) and isinstance(events[-1], Result)
    assert events[0].dtype == {"fp32": "float32", "bf16": "bfloat16"}[precision]
    progress = [e for e in events if isinstance(e, Progress)]
    assert [(p.scale, p.step) for p in progress] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (2, 4)]
    assert all(a.elapsed <= b.elapsed for a, b in zip(progress, progress[1:]))
    assert progress[-1].eta == 0.0
    previews = [(e.scale, e.step) for e in events if isinstance(e, Preview)]
    assert previews == [(1, 2), (2, 2), (2, 4)]
    assert events[0].sizes == ((32, 32), (43, 64))  # no side below sizes.MIN_SIDE


def test_style_loss_falls_by_a_large_factor_and_content_stays_bounded(engine, content, style, precision):
    """Coarse to fine, as every preset but `seed` runs. (A single 64 px scale is a poor
    test: there L-BFGS without line search is chaotic, and whether it escapes an early
    plateau depends on rounding, so on the CPU and thread count.)"""
    params = FAST.replace(scales=2, min_scale=32, coarse_steps=10, steps=20, precision=precision)
    start = engine.evaluate(content, [style], params, content)  # the content image, at the final scale
    delivered = run(engine, content, [style], params)[-1].losses
    assert delivered["style"] < start["style"] / 20
    # From the content image, content loss starts at 0; it must stay small next to
    # the style term that dominates the objective (content_weight 1, style_weight 1e6).
    assert delivered["content"] * params.content_weight < 0.05 * start["style"] * params.style_weight


def test_progress_and_result_report_the_delivered_objective(engine, content, style, precision):
    """Progress.best is the total of the image the scale would deliver (never rising);
    Result.losses are that image's terms; losses["total"] may be a rejected step's."""
    events = run(engine, content, [style], FAST.replace(steps=20, precision=precision))
    progress = [e for e in events if isinstance(e, Progress)]
    bests = [p.best for p in progress]
    assert all(b <= a for a, b in zip(bests, bests[1:]))
    assert all(p.best <= p.losses["total"] for p in progress)
    assert min(p.losses["total"] for p in progress) == bests[-1] == events[-1].losses["total"]
    result = events[-1].losses
    assert result["total"] == pytest.approx(result["content"] + 1e6 * result["style"], rel=1e-6)


def test_the_delivered_image_scores_what_the_result_says(engine, content, style, precision):
    """Evaluated afresh in fp32 on the delivered 8-bit image, the objective is what
    Result reported (up to rounding to 8 bits and, in bf16, the network's precision)."""
    params = FAST.replace(steps=15, precision=precision)
    result = run(engine, content, [style], params)[-1]
    again = engine.evaluate(content, [style], params, result.image)["total"]
    assert again == pytest.approx(result.losses["total"], rel=0.25 if precision == "bf16" else 0.05)


def test_result_grams_move_toward_the_style(engine, content, style):
    import torch

    from stylecore import images

    net = engine.network(torch.device("cpu"))

    def grams(rgb_uint8):
        x = images.normalize(images.split(rgb_uint8).rgb)
        with torch.no_grad():
            return {k: gram_matrix(v) for k, v in net(x, ["conv1_1", "conv3_1"]).items()}

    out = result_of(run(engine, content, [style], FAST.replace(steps=30, style_scale=0.0)))
    g_style, g_before, g_after = grams(style), grams(content), grams(out)
    for layer in g_style:
        before = (g_before[layer] - g_style[layer]).pow(2).mean()
        after = (g_after[layer] - g_style[layer]).pow(2).mean()
        assert after < before / 5, layer


def test_same_seed_gives_the_same_output(engine, content, style):
    params = FAST.replace(init="noise", seed=7)
    a = result_of(run(engine, content, [style], params))
    b = result_of(run(engine, content, [style], params))
    c = result_of(run(engine, content, [style], params.replace(seed=8)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cancel_stops_within_one_step(engine, content, style):
    calls = {"progress": 0}

    def cancel():
        return calls["progress"] >= 3

    events = engine.run(content, [style], FAST.replace(steps=50), cancel=cancel)
    with pytest.raises(Cancelled):
        for e in events:
            if isinstance(e, Progress):
                calls["progress"] += 1
    assert calls["progress"] == 3


@pytest.mark.parametrize("ending", ["cancelled", "closed by its consumer"])
def test_a_job_ended_inside_a_level_leaves_the_heap_as_glibc_keeps_it(engine, content, style, monkeypatch, ending):
    """A level keeps freed memory in the heap (docs/full-resolution.md, "The C heap"); a job that ends
    inside one must not leave the whole process keeping it (a server between jobs)."""
    from stylecore import heap

    calls: list[bool] = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda keep=True: calls.append(keep) or True)
    progress = {"n": 0}
    # 8 GiB: room for the level to keep memory (heap.room_to_keep) on any test machine.
    events = engine.run(content, [style], FAST.replace(steps=50, max_memory=8.0),
                        cancel=lambda: progress["n"] >= 2)
    if ending == "cancelled":
        with pytest.raises(Cancelled):
            for e in events:
                progress["n"] += isinstance(e, Progress)
    else:
        for e in events:
            if isinstance(e, Progress):
                break
        events.close()
    assert calls[0] is True, "the level should have kept freed memory"
    assert calls[-1] is False


def test_alpha_is_carried_through_bit_exactly(engine, content, style):
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 256, content.shape[:2], dtype=np.uint8)
    rgba = np.concatenate([content, alpha[:, :, None]], axis=2)
    out = result_of(run(engine, rgba, [style]))
    assert out.shape == rgba.shape
    assert np.array_equal(out[:, :, 3], alpha)
    assert not np.array_equal(out[:, :, :3], content)  # the colour was stylized


def test_alpha_is_kept_when_the_work_size_is_smaller(engine, content, style):
    big = np.repeat(np.repeat(content, 3, axis=0), 3, axis=1)  # 192x129
    alpha = np.full(big.shape[:2], 200, np.uint8)
    alpha[::7] = 0
    out = result_of(run(engine, np.dstack([big, alpha]), [style]))  # works at 64 px, upscales
    assert out.shape == (*big.shape[:2], 4)
    assert np.array_equal(out[:, :, 3], alpha)


@pytest.mark.parametrize(
    "shape",
    [(40, 40, 1), (40, 40, 2), (37, 53, 3), (53, 37, 4), (1, 50, 3), (50, 1, 3), (1, 1, 3), (3, 2, 1)],
    ids=["gray", "gray+alpha", "odd-wide", "odd-tall-rgba", "1px-high", "1px-wide", "1x1", "tiny-gray"],
)
def test_any_layout_and_shape_round_trips(engine, style, shape):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    out = result_of(run(engine, img, [style], FAST.replace(steps=2)))
    assert out.shape == shape and out.dtype == np.uint8
    if shape[2] in (2, 4):
        assert np.array_equal(out[:, :, -1], img[:, :, -1])


def test_grayscale_and_rgba_styles_are_accepted(engine, content, style):
    gray_style = style.mean(axis=2, keepdims=True).astype(np.uint8)
    rgba_style = np.dstack([style, np.full(style.shape[:2], 255, np.uint8)])
    out = result_of(run(engine, content, [gray_style, rgba_style], FAST.replace(steps=2, style_blend=(1, 2))))
    assert out.shape == content.shape


def test_several_styles_blend(engine, content, style):
    other = np.ascontiguousarray(style[::-1, :, ::-1])  # flipped, channels swapped
    a = result_of(run(engine, content, [style, other], FAST.replace(style_blend=(1, 0))))
    b = result_of(run(engine, content, [style], FAST))
    c = result_of(run(engine, content, [style, other], FAST.replace(style_blend=(1, 1))))
    assert np.array_equal(a, b)  # weight 0 removes a style
    assert not np.array_equal(a, c)


def test_preserve_colors_luminance_keeps_the_contents_chroma(engine, content, style):
    from stylecore import images

    out = result_of(run(engine, content, [style], FAST.replace(steps=8, preserve_colors="luminance")))
    plain = result_of(run(engine, content, [style], FAST.replace(steps=8)))

    def chroma(a):
        yiq = images.rgb_to_yiq(images.split(a).rgb)
        return yiq[:, 1:]

    base = chroma(content)
    assert (chroma(out) - base).abs().mean() < 0.5 * (chroma(plain) - base).abs().mean()


def test_preserve_colors_match_moves_style_colours_to_the_content(engine, content, style):
    from stylecore import images

    s, c = images.split(style).rgb, images.split(content).rgb
    matched = images.match_colors(s, c)
    assert (matched.mean((2, 3)) - c.mean((2, 3))).abs().max() < 0.02
    out = result_of(run(engine, content, [style], FAST.replace(preserve_colors="match")))
    assert out.shape == content.shape


@pytest.mark.parametrize("changes", [
    {"optimizer": "adam", "lr": 0.05, "average": 0.9},
    {"init": "gray"}, {"init": "noise"}, {"pooling": "avg"}, {"tv_weight": 10.0},
    {"style_scale": 0.5},
])
def test_options_run_and_produce_an_image(engine, content, style, changes):
    events = run(engine, content, [style], FAST.replace(**changes))
    assert result_of(events).shape == content.shape
    assert all(np.isfinite(v) for v in events[-1].losses.values())


def test_bad_inputs_raise_named_errors(engine, content, style):
    with pytest.raises(ParamError, match="styles: at least one style image"):
        run(engine, content, [])
    with pytest.raises(ValueError, match="content: image is empty"):
        run(engine, np.zeros((0, 5, 3), np.uint8), [style])
    with pytest.raises(ValueError, match=r"style 1: expected 8-bit \(uint8\), 16-bit \(uint16\) or 32-bit float"):
        run(engine, content, [style.astype(np.float64)])
    with pytest.raises(ValueError, match=r"content: expected shape \(height, width, 1..4 channels\)"):
        run(engine, np.zeros((4, 4, 5), np.uint8), [style])
    with pytest.raises(ParamError, match="style_blend: has 1 weights for 2 style images"):
        run(engine, content, [style, style], FAST.replace(style_blend=(1.0,)))


def test_style_targets_are_exact_fp32_grams_of_the_networks_activations(engine, style, precision):
    """The targets are computed once: in fp32, whatever the precision (the iterate's
    bf16 Grams go by blocks with a roundoff; the targets do not). The style is the
    content and the working size its own, so no resize stands between them."""
    import torch

    from stylecore import images
    from stylecore.optimize import autocast
    from stylecore.params import STYLE_LAYERS

    params = FAST.replace(size=64, scales=1, style_scale=0.0, precision=precision)
    job = engine.prepare(style, [style], params)
    objective = engine.objective(job, job.levels[-1])
    x = images.normalize(images.split(style).rgb).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(job.device, job.dtype):
        feats = engine.network(job.device)(x, STYLE_LAYERS, params.pooling)
    for name, f in feats.items():
        assert torch.equal(objective.style_targets[0].grams[name], gram_matrix(f.float())), name


def _optimizer_on_the_content(engine, content, style, params):
    """An ImageOptimizer at params' working size, starting from the content."""
    from stylecore import ImageOptimizer, images

    job = engine.prepare(content, [style], params)
    objective = engine.objective(job, job.levels[-1])
    return ImageOptimizer(images.normalize(job.content.rgb), engine.evaluator(job, objective), params)


def _step(opt) -> None:
    for _ in opt.step():  # drains the step's progress events
        pass


@pytest.mark.parametrize("optimizer, lr", [("lbfgs", 1.0), ("adam", 0.5)])
def test_clamped_optimizers_keep_every_pixel_in_range(engine, content, style, optimizer, lr):
    """Unbounded L-BFGS parks pixels far outside [0, 1]; the delivered image is then
    clamped and scores far worse than the iterate. Clamped runs stay inside."""
    from stylecore import images

    opt = _optimizer_on_the_content(engine, content, style, FAST.replace(optimizer=optimizer, lr=lr))
    for _ in range(8):
        _step(opt)
        px = images.denormalize(opt.x.detach())
        assert px.min() >= -1e-5 and px.max() <= 1 + 1e-5


def test_an_initial_image_is_where_the_run_starts(engine, content, style):
    """Continuing from an earlier result: the first evaluation is that result's objective."""
    params = FAST.replace(steps=8, precision="fp32")
    earlier = result_of(run(engine, content, [style], params))
    events = run(engine, content, [style], params.replace(init="image", steps=1), init_image=earlier)
    first = next(e for e in events if isinstance(e, Progress)).losses["total"]
    assert first == pytest.approx(engine.evaluate(content, [style], params, earlier)["total"], rel=1e-4)


@pytest.mark.parametrize("init, given", [("image", False), ("content", True)], ids=["no-image", "image-unused"])
def test_init_image_and_an_initial_image_go_together(engine, content, style, init, given):
    with pytest.raises(ParamError, match="init: init 'image' needs an initial image"):
        run(engine, content, [style], FAST.replace(init=init), init_image=content if given else None)


def test_a_level_hands_its_curvature_pairs_on_resized_to_the_next_level(engine, content, style):
    """L-BFGS across scales: the pairs a level kept, resized as the image is between
    levels, start the next level's memory (its first step is quasi-Newton)."""
    import torch

    from stylecore import ImageOptimizer, images

    params = FAST.replace(precision="fp32")
    opt = _optimizer_on_the_content(engine, content, style, params)
    for _ in range(4):
        _step(opt)
    h, w = opt.x.shape[-2:]
    pairs = opt.curvature_at((2 * h, 2 * w), 2)
    newest = opt.lbfgs.curvature()[-1]
    assert len(pairs) == 2 and pairs[0][0].shape == (3 * 4 * h * w,)
    assert torch.allclose(pairs[-1][0], images.resize(newest[0].view(1, 3, h, w), (2 * h, 2 * w)).reshape(-1))
    bigger = ImageOptimizer(images.resize(opt.current(), (2 * h, 2 * w)), opt.evaluate, params, curvature=pairs)
    assert len(bigger.lbfgs.curvature()) == 2


def test_a_style_s_grams_are_shared_between_jobs_and_change_nothing(state_dict, content, style):
    """The second job with the same style and sizes takes its Grams from the cache (one
    hit per scale) and gives the pixels a fresh engine gives."""
    params = preset("default").replace(size=48, scales=2, min_scale=32, coarse_steps=2, steps=2, precision="fp32")
    shared = Engine(VGGFeatures.from_state_dict(state_dict))
    *_, first = shared.run(content, [style], params)
    assert shared.style_cache_hits == 0
    *_, second = shared.run(content, [style], params.replace(seed=1))
    assert shared.style_cache_hits == 2
    *_, fresh = Engine(VGGFeatures.from_state_dict(state_dict)).run(content, [style], params.replace(seed=1))
    assert np.array_equal(second.image, fresh.image)
    *_, other = shared.run(content, [style[::-1].copy()], params)  # another style: computed
    assert shared.style_cache_hits == 2
