"""Shared fixtures: seeded random VGG19 weights written in the real file format,
an engine on them, and small real photographs."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from stylecore import Engine, VGGFeatures, random_state_dict

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# The weights' features-only cache (server/weights.py) of this run, not the user's:
# set before any test starts a server or a CLI process, which inherit it.
os.environ["STYLE_TRANSFER_CACHE"] = tempfile.mkdtemp(prefix="style-transfer-cache-")


def fast_precisions() -> list[str]:
    """The precisions this machine is fast at: fp32 always; bf16 on CUDA and on CPUs
    with AMX or AVX512-BF16 (elsewhere it is emulated, ~100x slower). Tests that take
    a `precision` run once for each, so every machine exercises what `auto` may pick."""
    from stylecore.precision import bf16_is_fast

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return ["fp32", "bf16"] if bf16_is_fast(device) else ["fp32"]


def pytest_generate_tests(metafunc):
    explicit = any("precision" in (m.args[0].replace(" ", "").split(",") if isinstance(m.args[0], str) else m.args[0])
                   for m in metafunc.definition.iter_markers("parametrize"))
    if "precision" in metafunc.fixturenames and not explicit:  # a test's own table wins
        metafunc.parametrize("precision", fast_precisions())


@pytest.fixture(scope="session")
def state_dict() -> dict[str, torch.Tensor]:
    return random_state_dict(seed=0, features_only=True)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory, state_dict) -> str:
    """A features-only VGG19 checkpoint, as torch.save writes the real one."""
    path = tmp_path_factory.mktemp("weights") / "vgg19-random-seed0.pth"
    torch.save(state_dict, path)
    return str(path)


@pytest.fixture(scope="session")
def engine(state_dict) -> Engine:
    return Engine(VGGFeatures.from_state_dict(state_dict))


def _photo(name: str, longest: int) -> np.ndarray:
    from skimage import data

    img = Image.fromarray(getattr(data, name)())
    k = longest / max(img.size)
    return np.asarray(img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.LANCZOS))


@pytest.fixture(scope="session")
def content() -> np.ndarray:
    """A photograph, 64x43 RGB (scikit-image's coffee)."""
    return _photo("coffee", 64)


@pytest.fixture(scope="session")
def style() -> np.ndarray:
    """A colourful texture, 64x64 RGB (scikit-image's immunohistochemistry slide)."""
    return _photo("immunohistochemistry", 64)


@pytest.fixture(scope="module")
def start_server(engine):
    """Starts in-process gRPC servers on ephemeral loopback ports, serving the random-
    weights engine; every one still running is stopped after the module."""
    from styleserver.service.server import start
    from styleserver.service.model import Model

    started = []

    def start_(**options):
        model = Model()
        model.set(engine, "vgg19-random-seed0.pth sha256:test", "test", False, "cpu", "float32")
        running = start(model, port=0, **options)
        running.set_serving(True)
        started.append(running)
        return running

    yield start_
    for running in started:
        running.shutdown(0)


@pytest.fixture(scope="module")
def server(start_server):
    """A module's in-process server (a module needing other limits defines its own)."""
    return start_server(max_queue=4)


@pytest.fixture
def client(server):
    """A client of the module's `server`."""
    from styleserver.client import Client

    with Client(f"127.0.0.1:{server.port}") as c:
        yield c
