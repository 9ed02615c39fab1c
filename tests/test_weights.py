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
    monkeypatch.setenv(weights.CACHE_ENV_VAR, str(tmp_path / "cache"))
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


# --- the features-only cache (server/weights.py's module doc) ----------------------------


def _features(model, seed: int = 1) -> dict[str, torch.Tensor]:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return model(x, ["conv1_1", "conv3_1", "conv5_1"])


def test_second_load_reads_the_cache_and_gives_identical_features(weights_file):
    first = weights.load(weights_file)
    second = weights.load(weights_file)
    assert (first.cached, second.cached) == (False, True)
    assert second.sha256 == first.sha256 == weights.sha256_of(weights.Path(weights_file))
    for name, f in _features(first.model).items():
        assert torch.equal(f, _features(second.model)[name]), name
    cache = list((weights.cache_dir()).glob("vgg19-features-*.pt"))
    assert len(cache) == 1 and cache[0].stat().st_size < 60 << 20  # conv1_1..conv5_1 only: 52 MB at most


def test_the_cache_holds_only_the_layers_the_engine_uses(tmp_path):
    full = random_state_dict(seed=3)
    torch.save(full, tmp_path / "full.pth")
    weights.load(tmp_path / "full.pth")
    (cache,) = weights.cache_dir().glob("vgg19-features-*.pt")
    kept = torch.load(cache, weights_only=True)
    assert len(kept) == 26 and not any(k.startswith("classifier") for k in kept)  # 13 convs: weight + bias
    assert torch.equal(kept["28.weight"], full["features.28.weight"])


def test_a_cache_file_whose_hash_does_not_match_is_refused(weights_file, state_dict):
    weights.load(weights_file)
    (cache,) = weights.cache_dir().glob("vgg19-features-*.pt")
    forged = {k: torch.zeros_like(v) for k, v in torch.load(cache, weights_only=True).items()}
    torch.save(forged, cache)  # a valid checkpoint, other weights: only its hash betrays it
    w = weights.load(weights_file)
    assert not w.cached and torch.equal(w.model.layers[0].weight, state_dict["0.weight"])
    assert weights.load(weights_file).cached  # written again from the original


def test_a_changed_original_is_read_again(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(random_state_dict(seed=1, features_only=True), path)
    before = weights.load(path)
    other = random_state_dict(seed=2, features_only=True)
    torch.save(other, path)
    after = weights.load(path)
    assert not after.cached and after.sha256 != before.sha256
    assert torch.equal(after.model.layers[0].weight, other["0.weight"])


@pytest.mark.parametrize("damage", ["record not json", "record missing", "cache file truncated"])
def test_a_damaged_cache_falls_back_to_the_original(weights_file, state_dict, damage):
    weights.load(weights_file)
    (record,) = weights.cache_dir().glob("weights-*.json")
    (cache,) = weights.cache_dir().glob("vgg19-features-*.pt")
    if damage == "record not json":
        record.write_text("{not json")
    elif damage == "record missing":
        record.unlink()
    else:
        cache.write_bytes(cache.read_bytes()[:1000])
    w = weights.load(weights_file)
    assert not w.cached and torch.equal(w.model.layers[2].weight, state_dict["2.weight"])


def test_an_unwritable_cache_only_costs_the_speed_up(monkeypatch, tmp_path, weights_file):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv(weights.CACHE_ENV_VAR, str(blocker / "cache"))
    assert not weights.load(weights_file).cached
    assert not weights.load(weights_file).cached
