"""The loaded network and what clients are told about it (GetInfo, Started): set once
loading ends, by `load` for local devices or by the cluster runner from a replica."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .devices import WorkerSpec
from .jobs import ModelInfo

log = logging.getLogger("styleserver")


class Model:
    def __init__(self):
        self.ready = threading.Event()
        self.engine = None  # stylecore.Engine; None where the network lives elsewhere (cluster replicas)
        self.name = self.sha256 = ""
        self.verified = False
        self.device = self.dtype = ""
        self.describe_device: Callable[[], str] = lambda: self.device  # GetInfo's device, asked at each call

    def set(self, engine, name: str, sha256: str, verified: bool, device: str, dtype: str) -> None:
        self.engine, self.name, self.sha256, self.verified = engine, name, sha256, verified
        self.device, self.dtype = device, dtype
        self.ready.set()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.verified)


def load(model: Model, weights_path: str | None, workers: list[WorkerSpec], download: bool) -> None:
    """Load the weights into `model`, with a copy on every worker's device; raises
    WeightsError."""
    from stylecore import Engine, resolve_device, resolve_dtype

    from ..weights import load as load_weights

    weights = load_weights(weights_path, download=download)
    devices = [resolve_device(w.device) for w in workers]
    engine = Engine(weights.model)
    for device in dict.fromkeys(devices):
        engine.network(device)  # move it now, not during the first job (one copy per device)
    dtype = str(resolve_dtype("auto", devices[0])).removeprefix("torch.")
    names = ",".join(w.name for w in workers)
    model.set(engine, f"{weights.path.name} sha256:{weights.sha256}", weights.sha256, weights.verified,
              names, dtype)
    log.info("model: %s on %s (%s)", weights.describe(), names, dtype)
