"""The loss terms on tiny tensors with known answers, and the `seed` preset's
objective against an independent, line-by-line re-implementation of the
reference notebook (torchvision's VGG19, unnormalized Grams)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylecore import Progress, preset
from stylecore.losses import Objective, StyleTarget, gram_matrix, total_variation


def test_gram_matrix_of_a_known_tensor():
    # Two channels over a 2x2 image: F = [[1, 2, 3, 4], [0, 1, 0, 1]].
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    expected = torch.tensor([[[30.0, 6.0], [6.0, 2.0]]])  # F Fᵀ
    assert torch.equal(gram_matrix(f, normalize=False), expected)
    assert torch.allclose(gram_matrix(f), expected / 4)


def test_gram_matrix_gradient_matches_autograd_of_the_plain_formula():
    f = torch.randn(1, 6, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = torch.randn(1, 6, 6)
    (gram_matrix(f) * w).sum().backward()
    ours = f.grad.clone()
    f.grad = None
    flat = f.reshape(1, 6, 35)
    ((flat @ flat.transpose(1, 2) / 35) * w).sum().backward()
    assert torch.allclose(ours, f.grad, atol=1e-5)


def test_gram_matrix_is_fp32_for_half_inputs_and_does_not_overflow():
    # 64 channels of value 100 over 128x128: entries are 1.6e8, far beyond fp16's 65504.
    f = torch.full((1, 64, 128, 128), 100.0, dtype=torch.float16)
    g = gram_matrix(f, normalize=False)
    assert g.dtype == torch.float32
    assert torch.isfinite(g).all() and g[0, 0, 0].item() == pytest.approx(100.0 * 100.0 * 128 * 128)


@pytest.mark.parametrize("batch, height, width, layout", [
    (1, 16, 32, "channels_last"),  # whole blocks only (512 positions)
    (1, 23, 71, "channels_last"),  # blocks and a rest
    (1, 10, 10, "channels_last"),  # a rest only
    (3, 23, 71, "channels_last"),  # a batch
    (2, 23, 71, "nchw"),  # the layout the engine does not use: a copy, same result
])
def test_bf16_gram_is_within_bf16_roundoff_of_the_exact_one(batch, height, width, layout):
    # Non-negative (post-ReLU) bf16 activations against the exact Gram of the same values
    # (fp64). bf16's unit roundoff is 2^-8; the fp32 sums of the blocks add a hair.
    gen = torch.Generator().manual_seed(0)
    f = torch.rand((batch, 8, height, width), generator=gen).mul(50).to(torch.bfloat16)
    if layout == "channels_last":
        f = f.contiguous(memory_format=torch.channels_last)
    g = gram_matrix(f, normalize=False)
    flat = f.double().reshape(batch, 8, height * width)
    exact = flat @ flat.transpose(1, 2)
    assert g.dtype == torch.float32 and g.shape == (batch, 8, 8)
    assert ((g.double() - exact).abs() / exact).max().item() <= 2.0**-8 * 1.001


def test_bf16_gram_gradient_matches_the_fp32_formula_in_bf16():
    f = torch.randn(1, 6, 40, 30).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    f.requires_grad_(True)
    w = torch.randn(1, 6, 6)
    (gram_matrix(f) * w).sum().backward()
    assert f.grad.dtype == torch.bfloat16
    flat = f.detach().double().reshape(1, 6, 1200)
    expected = ((w + w.transpose(1, 2)).double() @ flat / 1200).reshape(1, 6, 40, 30)
    assert torch.allclose(f.grad.double(), expected, rtol=2**-7, atol=1e-4)


def _objective(content_target, style_grams=None) -> Objective:
    grams = style_grams or {}
    return Objective("content", content_target, [StyleTarget(grams)], {name: 1.0 for name in grams}, content_weight=1.0,
                     style_weight=1.0, tv_weight=0.0)


@pytest.mark.parametrize("shift, expected", [(0.0, 0.0), (1.0, 1.0), (2.0, 4.0)])
def test_the_content_term_is_the_mean_squared_difference(shift, expected):
    x = torch.randn(1, 8, 5, 7)
    terms = _objective(x)({"content": x + shift}, torch.zeros(1, 3, 4, 4))
    assert terms["content"].item() == pytest.approx(expected)


def test_total_variation_is_zero_on_a_constant_image():
    assert total_variation(torch.full((1, 3, 9, 13), 0.37)).item() == 0.0
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 3, 2, 4)
    assert total_variation(ramp).item() == pytest.approx(1.0)  # every horizontal step is 1


def test_the_style_term_equals_the_notebook_scaling():
    f, s = torch.randn(1, 6, 5, 4), torch.randn(1, 6, 5, 4)
    g_t, g_s = gram_matrix(f, normalize=False)[0], gram_matrix(s, normalize=False)[0]
    expected = torch.mean((g_t - g_s) ** 2) / (6 * 5 * 4)
    content = torch.zeros(1, 2, 3, 3)
    terms = _objective(content, {"style": gram_matrix(s)})({"style": f, "content": content}, torch.zeros(1, 3, 4, 4))
    assert terms["style"].item() == pytest.approx(expected.item(), rel=1e-5)


# --- the reference notebook, written out independently ------------------------------------


def _notebook_objective_trace(state_dict, content_rgb, style_rgb, steps):
    """The notebook's loop (torchvision VGG19, in-place ReLUs, its get_features and
    gram_matrix), on tensors already at the working size. Returns the total loss of
    each step."""
    import torchvision

    vgg = torchvision.models.vgg19().features
    vgg.load_state_dict({k.removeprefix("features."): v for k, v in state_dict.items()})
    for p in vgg.parameters():
        p.requires_grad_(False)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    content, style = (content_rgb - mean) / std, (style_rgb - mean) / std

    def get_features(image):
        layers = {"0": "conv1_1", "5": "conv2_1", "10": "conv3_1", "19": "conv4_1", "21": "conv4_2", "28": "conv5_1"}
        features, x = {}, image
        for name, layer in vgg.named_children():
            x = layer(x)
            if name in layers:
                features[layers[name]] = x
        return features

    def gram(t):
        _, d, h, w = t.size()
        t = t.view(d, h * w)
        return torch.mm(t, t.t())

    content_features = get_features(content)
    style_grams = {k: gram(v) for k, v in get_features(style).items()}
    target = content.clone().requires_grad_(True)
    style_weights = {"conv1_1": 1.0, "conv2_1": 0.7, "conv3_1": 0.5, "conv4_1": 0.3, "conv5_1": 0.2}
    optimizer = torch.optim.Adam([target], lr=0.003)
    totals = []
    for _ in range(steps):
        tf = get_features(target)
        c_loss = torch.mean((tf["conv4_2"] - content_features["conv4_2"]) ** 2)
        s_loss = 0
        for layer, w in style_weights.items():
            _, d, h, w_ = tf[layer].shape
            s_loss = s_loss + w * torch.mean((gram(tf[layer]) - style_grams[layer]) ** 2) / (d * h * w_)
        total = s_loss * 1e6 + c_loss * 1
        totals.append(total.item())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    return totals


def _notebook_load_image(array: np.ndarray, max_size: int = 400, shape=None) -> torch.Tensor:
    """The notebook's load_image, on an array instead of a path (before Normalize:
    _notebook_objective_trace normalizes)."""
    from PIL import Image
    from torchvision import transforms

    image = Image.fromarray(array).convert("RGB")
    size = max_size if max(image.size) > max_size else max(image.size)
    if shape is not None:
        size = shape
    return transforms.Compose([transforms.Resize(size), transforms.ToTensor()])(image)[:3, :, :].unsqueeze(0)


@pytest.mark.parametrize("size", [400, 48], ids=["small-photo-enlarged", "shorter-side-to-size"])
def test_seed_preset_matches_the_reference_notebook(engine, state_dict, content, style, size):
    """The notebook's own preprocessing (torchvision Resize on PIL images: the shorter
    side to `size`, or to the longest side when that is smaller, which enlarges the
    64x43 photo; the style to the content's shape) and loop, against the seed preset."""
    params = preset("seed").replace(size=size, steps=4)
    events = list(engine.run(content, [style], params))
    c = _notebook_load_image(content, size)
    s = _notebook_load_image(style, size, shape=c.shape[-2:])
    assert events[0].sizes == (tuple(c.shape[-2:]),)  # the same working size
    ours = [e.losses["total"] for e in events if isinstance(e, Progress)]
    theirs = _notebook_objective_trace(state_dict, c, s, steps=4)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert theirs[-1] < theirs[0]  # the trace moves: it is a real comparison
