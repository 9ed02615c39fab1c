"""The weights loader: explicit file, environment variable, torch hub cache,
download; full and features-only state dicts; and the message when none exists.
Every test goes through the real loading code with a seeded random state dict."""

from __future__ import annotations

import pytest
import torch

from styleserver import weights
from stylecore import random_state_dict
from stylecore.vgg import IMAGENET_WEIGHTS_FILE


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache and no environment variable."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.ENV_VAR, raising=False)


def test_explicit_file_features_only(weights_file, state_dict):
    w = weights.load(weights_file)
    assert w.source == "--weights" and not w.verified
    assert torch.equal(w.model.layers[0].weight, state_dict["0.weight"])
    assert "UNVERIFIED" in w.describe()


def test_full_torchvision_format_in_the_hub_cache(tmp_path):
    """The real file's layout: features.N.* plus the classifier, at torch hub's path."""
    full = random_state_dict(seed=3)
    assert any(k.startswith("classifier.") for k in full)
    path = weights.hub_cache_path()
    assert path.name == IMAGENET_WEIGHTS_FILE and str(path).startswith(str(tmp_path))
    path.parent.mkdir(parents=True)
    torch.save(full, path)
    w = weights.load()
    assert w.source == "torch hub cache" and w.path == path
    assert torch.equal(w.model.layers[28].weight, full["features.28.weight"])
    assert len(w.model.layers) == 30  # truncated after relu5_1


def test_environment_variable(monkeypatch, weights_file):
    monkeypatch.setenv(weights.ENV_VAR, weights_file)
    assert weights.load().source == f"${weights.ENV_VAR}"


def test_missing_weights_message_names_file_url_and_place():
    with pytest.raises(weights.WeightsError) as err:
        weights.load(download=False)
    msg = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in msg and "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in msg
    assert str(weights.hub_cache_path()) in msg and "--weights" in msg


def test_failed_download_gives_the_same_advice_and_leaves_no_file(monkeypatch):
    # Nothing listens on port 9 of loopback: the download fails at once, offline or not.
    monkeypatch.setattr("stylecore.vgg.IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth")
    with pytest.raises(weights.WeightsError, match="downloading the weights failed") as err:
        weights.load()
    assert "vgg19-dcbb9e9d.pth" in str(err.value)
    assert not weights.hub_cache_path().exists()


def test_explicit_path_that_does_not_exist(tmp_path):
    with pytest.raises(weights.WeightsError, match="--weights: no weights file at"):
        weights.load(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(weights.WeightsError, match="not a readable PyTorch checkpoint"):
        weights.load(bad)


def test_wrong_shapes_and_missing_tensors(tmp_path, state_dict):
    sd = dict(state_dict)
    sd["2.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(weights.WeightsError, match=r"'2.weight' has shape \(64, 3, 3, 3\), VGG19 needs \(64, 64, 3, 3\)"):
        weights.load(tmp_path / "shape.pth")
    del sd["2.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(weights.WeightsError, match="no tensor '2.weight'"):
        weights.load(tmp_path / "missing.pth")


def test_nan_weights_are_refused(tmp_path, state_dict):
    sd = dict(state_dict)
    sd["0.bias"] = torch.full((64,), float("nan"))
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(weights.WeightsError, match="NaN"):
        weights.load(tmp_path / "nan.pth")
