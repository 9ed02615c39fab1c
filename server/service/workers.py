"""A local device as a worker: runs a prepared job on this process's engine.

One LocalWorker per device (serve --devices, devices.py), all fed by the scheduler's
one queue. The cluster's worker (cluster/runner.py) has the same shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from styletransfer.v1 import style_transfer_pb2 as pb

from .devices import WorkerSpec
from .jobs import Job, job_messages
from .model import Model


class LocalWorker:
    def __init__(self, spec: WorkerSpec, model: Model, name_in_events: bool = False):
        """name_in_events: Started names this worker (when there are several) instead
        of the engine's device."""
        self.spec = spec
        self.model = model
        self.name, self.threads = spec.name, spec.threads
        self._name_in_events = name_in_events

    def run(self, job: Job, cancel: Callable[[], bool]) -> Iterator[pb.StylizeEvent]:
        if self.threads:  # a CPU worker's share of the cores
            _set_threads(self.threads)
        with _on_device(self.spec.device):
            yield from job_messages(self.model.engine, job, self.spec.device, cancel, self.model.info,
                                    self.name if self._name_in_events else None)


def local_workers(specs: list[WorkerSpec], model: Model) -> list[LocalWorker]:
    return [LocalWorker(spec, model, name_in_events=len(specs) > 1) for spec in specs]


def _on_device(device: str):
    """A GPU worker's thread works with its GPU as the current CUDA device (for
    anything allocated without an explicit device); elsewhere nothing."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.device(device)
    return contextlib.nullcontext()


def _set_threads(n: int) -> None:
    """This thread's intra-op threads. PyTorch's OpenMP thread count is a per-thread
    setting (what set_num_threads also writes globally only seeds new threads), so
    each worker's job runs on its own share of the cores."""
    import torch

    torch.set_num_threads(n)
