"""Which devices one server drives: `serve --devices all|cuda:0,cuda:1|cpu|cpu:N`.

One worker per device, all fed by the scheduler's one queue. On CPU, `cpu:N` makes
N workers that divide the machine's cores between them (each sets its own number of
intra-op threads: PyTorch's OpenMP thread count is per calling thread, so two
workers with one thread each really run at once; bench/devices_bench.py measures it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError


class DeviceError(UsageError):
    """A --devices value that cannot work; the message says which part and why."""


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # what clients see: "cuda:0", "cpu", or with several CPU workers "cpu:0", "cpu:1"
    device: str  # the torch device: "cuda:0", "cpu"
    threads: int = 0  # CPU workers: intra-op threads; 0: leave PyTorch's setting (GPUs, a lone `cpu`)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cuda_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse(spec: str, cores: int | None = None, gpus: int | None = None) -> list[WorkerSpec]:
    """The workers of a --devices value (or of --device's auto|cpu|cuda).

    all            every CUDA device, or one CPU worker when there is none
    auto           cuda:0 when CUDA is present, else cpu (serve --device's meaning)
    cuda, cuda:K   the first / the K-th GPU; a comma-separated list names several
    cpu            one CPU worker with PyTorch's own thread count (every core)
    cpu:N          N CPU workers, the cores divided between them (at least one each)
    """
    cores = cpu_cores() if cores is None else cores
    gpus = cuda_count() if gpus is None else gpus
    spec = (spec or "auto").strip()
    if spec == "all":
        return [WorkerSpec(f"cuda:{i}", f"cuda:{i}") for i in range(gpus)] or [WorkerSpec("cpu", "cpu")]
    if spec == "auto":
        return [WorkerSpec("cuda:0", "cuda:0")] if gpus else [WorkerSpec("cpu", "cpu")]
    workers: list[WorkerSpec] = []
    cpu_parts = 0
    for part in (p.strip() for p in spec.split(",")):
        kind, _, count = part.partition(":")
        if kind == "cuda":
            if not gpus:
                raise DeviceError(f"--devices {spec}: {part} was asked for, but PyTorch sees no CUDA device here")
            index = _number(count, spec, part) if count else 0
            if index >= gpus:
                raise DeviceError(f"--devices {spec}: {part} does not exist (this machine has cuda:0..cuda:{gpus - 1})")
            workers.append(WorkerSpec(f"cuda:{index}", f"cuda:{index}"))
        elif kind == "cpu":
            cpu_parts += 1
            n = _number(count, spec, part) if count else 1
            if n < 1:
                raise DeviceError(f"--devices {spec}: {part}: at least one CPU worker")
            if n == 1 and not count:
                workers.append(WorkerSpec("cpu", "cpu"))
            else:
                workers.extend(WorkerSpec(f"cpu:{i}", "cpu", max(1, cores // n)) for i in range(n))
        else:
            raise DeviceError(f"--devices {spec}: unknown device {part!r} (all, auto, cpu, cpu:N, cuda, cuda:K)")
    if cpu_parts > 1:
        raise DeviceError(f"--devices {spec}: name the CPU once (cpu:N for N workers)")
    names = [w.name for w in workers]
    if len(set(names)) != len(names):
        raise DeviceError(f"--devices {spec}: a device is named twice")
    return workers


def _number(text: str, spec: str, part: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DeviceError(f"--devices {spec}: {part}: expected a number after ':'") from None
