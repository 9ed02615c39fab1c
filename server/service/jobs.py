"""A job, prepared once, and the one way its events become messages.

The servicer turns a Stylize request into a `Job` (validated, decoded, planned:
admission.py, upload.py); a worker (workers.py for a local device, the cluster
runner for a Ray Serve replica) turns the Job into StylizeEvent messages with
`job_messages`. An engine failure becomes a `JobFailed` with its gRPC status in
one place, `failure`, whichever worker ran the job.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from stylecore.events import Result, Started
from stylecore.params import ParamError, StyleParams
from styletransfer.v1 import style_transfer_pb2 as pb

from .. import convert
from ..imageio import ImageError, ImageTooLarge


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for one job; picklable (it travels to Ray replicas)."""

    job_id: str
    content: np.ndarray  # (H, W, C): uint8, uint16 or float32 (stylecore/buffers.py)
    styles: tuple[np.ndarray, ...]
    init_image: np.ndarray | None  # params.init "image"
    params: StyleParams
    preview_every: int
    preview_max_side: int
    result_format: int
    chunk_bytes: int
    budget: int  # bytes the engine may plan within: admission planned the same (admission.Plan.budget)
    style_masks: tuple[np.ndarray | None, ...] = ()  # per style: where it applies (regions), or None
    style_source_masks: tuple[np.ndarray | None, ...] = ()  # per style: which part of it to take, or None
    result_depth: int = 0  # bits per channel of the result; 0: the content's
    # A frame after the first of a sequence (stylecore/sequence.py): the frame before it
    # and its result, both the content's size; params are then already frame_params'.
    previous_frame: np.ndarray | None = None
    previous_result: np.ndarray | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the events say about the network that ran the job."""

    name: str  # "vgg19-dcbb9e9d.pth sha256:..."
    verified: bool


class JobFailed(Exception):
    """The job could not be run or finished; `status` is the gRPC status code's name,
    `refused` whether it was the input's fault (the log and metrics say "refused")."""

    def __init__(self, status: str, message: str, refused: bool = False):
        super().__init__(message)
        self.status, self.refused = status, refused


def failure(error: Exception) -> JobFailed | None:
    """An engine's exception as the status the client gets; None for one that is no
    verdict on the job (a bug: let it surface)."""
    from stylecore.engine import Diverged

    if isinstance(error, JobFailed):
        return error
    if isinstance(error, Diverged):
        return JobFailed("FAILED_PRECONDITION", str(error))
    if isinstance(error, MemoryError):
        return JobFailed("RESOURCE_EXHAUSTED", "the server ran out of memory for this job")
    if isinstance(error, ImageTooLarge):
        return JobFailed("RESOURCE_EXHAUSTED", str(error), refused=True)
    if isinstance(error, (ImageError, ParamError, ValueError)):  # the job's own fault
        return JobFailed("INVALID_ARGUMENT", str(error), refused=True)
    return None


def job_messages(engine, job: Job, device: str, cancel: Callable[[], bool], model: ModelInfo,
                 device_name: str | None = None) -> Iterator[pb.StylizeEvent]:
    """Runs `job` on `engine` on `device` and yields its events as messages: Started,
    Progress, TilePass and Preview as they come, then the result in chunks and Done.
    `device_name`: what Started says instead of the engine's device (a worker's name).
    Raises the engine's exceptions (Cancelled within one step of `cancel()`)."""
    init, follow = job.init_image, None
    if job.previous_frame is not None:
        from stylecore.sequence import follow_inputs

        init, follow = follow_inputs(job.previous_frame, job.previous_result, job.content)
    events = engine.run(job.content, list(job.styles), job.params, cancel, job.preview_every,
                        device=device,  # the worker's, never the client's
                        budget=job.budget, init_image=init, style_masks=job.style_masks,
                        style_guides=job.style_source_masks, temporal=follow)
    with contextlib.closing(events):  # a job ended early (client gone, an error) leaves its level now, not at GC
        for event in events:
            if isinstance(event, Result):
                yield from convert.result_to_proto(event, job.result_format, job.chunk_bytes, job.result_depth)
                continue
            if isinstance(event, Started) and device_name:
                event = dataclasses.replace(event, device=device_name)
            yield convert.event_to_proto(event, job.job_id, model.name, model.verified, job.preview_max_side)
