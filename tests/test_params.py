"""The parameters dataclass validates itself and names the bad field."""

from __future__ import annotations

import math

import pytest

from stylecore.params import PRESETS, ParamError, StyleParams, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid(name):
    assert preset(name) == PRESETS[name]


def test_seed_preset_is_the_reference_notebook():
    p = PRESETS["seed"]
    assert (p.optimizer, p.lr, p.steps, p.size, p.scales) == ("adam", 0.003, 3000, 400, 1)
    assert (p.content_weight, p.style_weight) == (1.0, 1e6)
    assert p.style_layer_weights == (1.0, 0.7, 0.5, 0.3, 0.2)
    assert (p.init, p.pooling, p.precision, p.style_scale) == ("content", "max", "fp32", 0.0)
    assert p.clamp == 0  # the notebook never clamps its image


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("steps", 0, "between 1"),
        ("size", -5, "between 0"), ("tile", 40, "multiple of 16"), ("max_memory", -1.0, "positive number of GiB"),
        ("style_weight", -1.0, "negative"),
        ("content_weight", math.nan, "finite"),
        ("tv_weight", math.inf, "finite"),
        ("lr", 0.0, "positive"),
        ("lr", 1e38, "up to 1e+06"),
        ("max_memory", 1e300, "up to 1048576"),
        ("optimizer", "sgd", "lbfgs, adam"),
        ("pooling", "min", "max, avg"),
        ("style_layer_weights", (1.0, 2.0), "needs 5"),
        ("style_layer_weights", (1.0, 1.0, 1.0, 1.0, math.nan), "finite"),
        ("style_blend", (-1.0,), "negative"),
        ("steps", 2.5, "integer"),
        ("seed", -1, "between 0"),
    ],
)
def test_invalid_values_name_the_field(field, value, words):
    with pytest.raises(ParamError) as err:
        StyleParams(**{field: value})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}:") and words in str(err.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ParamError, match="unknown preset 'fast'; choose one of default, draft, high, full, seed"):
        preset("fast")


def test_scale_sizes_are_geometric_and_end_at_size():
    assert StyleParams(size=512, scales=3, min_scale=128).scale_sizes() == [128, 256, 512]
    assert StyleParams(size=100, scales=3, min_scale=128).scale_sizes() == [100]


def test_blend_weights_are_normalized_and_counted():
    assert StyleParams(style_blend=(1, 3)).blend_weights(2) == [0.25, 0.75]
    assert StyleParams().blend_weights(4) == [0.25] * 4
    with pytest.raises(ParamError, match="2 weights for 3 style images"):
        StyleParams(style_blend=(1, 1)).blend_weights(3)


@pytest.mark.parametrize("height, width, size, expected", [
    (400, 600, 400, (400, 600)),  # longest side above size: the shorter side becomes size
    (3000, 4000, 400, (400, 533)),  # ... and the longer one is truncated
    (4000, 3000, 400, (533, 400)),
    (267, 400, 400, (400, 599)),  # longest side at most size: the shorter becomes it (enlarged)
    (500, 500, 400, (400, 400)),
    (10, 12, 400, (32, 32)),  # never below sizes.MIN_SIDE (not the notebook's rule: ours)
])
def test_notebook_size_is_torchvisions_resize_of_the_notebook(height, width, size, expected):
    from stylecore.sizes import notebook_size

    assert notebook_size(height, width, size) == expected
