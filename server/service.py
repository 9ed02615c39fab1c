"""The StyleTransfer servicer: reads a job, waits for the device, streams the
engine's events. Thin on purpose: what is accepted is decided in admission.py,
the upload is read by upload.py, conversions live in convert.py, queueing in
scheduler.py, the method in stylecore."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import grpc

from stylecore import Cancelled, Engine, ParamError, Result, Started
from stylecore.engine import Diverged
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import style_transfer_pb2_grpc as pb_grpc
from styletransfer.v1 import wire

from . import __version__, admission, convert
from .admission import Dims, Refused
from .devices import WorkerSpec
from .imageio import ImageError, ImageTooLarge
from .limits import Limits
from .scheduler import Abandoned, QueueFull, Scheduler, ShuttingDown
from .upload import ClientGone, Upload

log = logging.getLogger("styleserver")

__all__ = ["Limits", "Model", "StyleTransferService", "Unavailable", "add_to_server"]


class Model:
    """The loaded network and what clients are told about it. Set once loading ends."""

    def __init__(self):
        self.ready = threading.Event()
        self.engine: Engine | None = None
        self.name = self.sha256 = ""
        self.verified = False
        self.device = self.dtype = ""

    def set(self, engine: Engine, name: str, sha256: str, verified: bool, device: str, dtype: str) -> None:
        self.engine, self.name, self.sha256, self.verified = engine, name, sha256, verified
        self.device, self.dtype = device, dtype
        self.ready.set()


class Unavailable(Exception):
    """The job cannot go on now (e.g. its cluster replica died); the call ends with
    UNAVAILABLE and this message."""


class _Record:
    """What the job's log line says: sizes, preset, outcome and why."""

    def __init__(self):
        self.sizes, self.preset, self.outcome, self.reason = "?", "?", "failed", ""
        self.device = ""  # the worker it ran on
        self.ran_seconds: float | None = None  # on a worker; None: it never ran

    def set(self, outcome: str, reason: str = "") -> None:
        self.outcome, self.reason = outcome, reason


class StyleTransferService(pb_grpc.StyleTransferServicer):
    """`workers`: one per device (serve --devices), all fed by one queue; default one
    worker on `device`."""

    def __init__(self, model: Model, limits: Limits, device: str, workers: list[WorkerSpec] | None = None,
                 metrics=None):
        self.model = model
        self.limits = limits
        self.device = device
        self.workers = workers or _default_workers(device)
        self.scheduler = Scheduler(limits.max_queue, self.workers)
        self.metrics = metrics
        self.shutting_down = threading.Event()
        self._calls = threading.BoundedSemaphore(limits.calls)
        self._decoding = threading.Semaphore(1)  # one decode at a time bounds its memory
        self._in_flight = 0  # announced bytes of the uploads being received
        self._in_flight_lock = threading.Lock()

    # --- GetInfo ---------------------------------------------------------------------

    def GetInfo(self, request, context):
        from stylecore.params import PRESETS

        if isinstance(request, convert.Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a GetInfoRequest ({request.error})")
        return pb.Info(
            server_version=__version__, contract_version=wire.CONTRACT_VERSION, device=self.model.device, dtype=self.model.dtype,
            model=self.model.name, model_sha256=self.model.sha256, model_verified=self.model.verified,
            limits=convert.limits_to_proto(self.limits),
            presets=[pb.Preset(name=n, params=convert.params_to_proto(p)) for n, p in PRESETS.items()],
            devices=[convert.device_to_proto(d) for d in self.scheduler.snapshot()],
        )

    # --- Stylize ---------------------------------------------------------------------

    def Stylize(self, request_iterator, context) -> Iterator[pb.StylizeEvent]:
        job = uuid.uuid4().hex[:8]
        t0 = time.monotonic()
        record = _Record()
        if not self._calls.acquire(blocking=False):
            record.set("refused", "too many calls")
            log.info("job %s refused: %d Stylize calls at once (max_calls)", job, self.limits.calls)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the server is busy: {self.limits.calls} Stylize calls at once (max_calls)")
        upload = None
        try:
            if self.shutting_down.is_set():
                raise ShuttingDown()
            if not self.model.ready.is_set():
                record.set("refused", "model loading")
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is still loading VGG19; try again shortly")
            upload = Upload(request_iterator, self.limits, t0, context.is_active)
            header = upload.header()
            record.preset = header.preset or "default"
            plan = admission.check(header, self.limits)  # before any image byte is taken
            reserved = self._reserve(sum(m.size_bytes for m in plan.metas))
            try:
                data = upload.images(header, plan)
            finally:
                self._release(reserved)
            with self._decoding:
                images = [convert.image_from_bytes(m, d, self.limits.max_pixels, n)
                          for m, d, n in zip(plan.metas, data, plan.names)]
            del data
            record.sizes = " ".join(f"{a.shape[1]}x{a.shape[0]}x{a.shape[2]}" for a in images)
            admission.check(header, self.limits, [Dims(a.shape[1], a.shape[0], a.shape[2]) for a in images])
            yield from self._run(job, header, plan.params, images, context, record)
        except GeneratorExit:  # gRPC stopped reading the events: the client went away
            record.set("cancelled by client", f"while {record.outcome}" if record.outcome in ("queued", "running")
                       else "while streaming events")
            raise
        except ClientGone:
            record.set("cancelled by client", "during upload")
        except Refused as e:
            record.set("refused", str(e))
            self._abort(context, getattr(grpc.StatusCode, e.status), str(e))
        except (ImageError, ParamError, ValueError) as e:
            record.set("refused", str(e))
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(e, ImageTooLarge) else \
                grpc.StatusCode.INVALID_ARGUMENT
            self._abort(context, code, str(e))
        except QueueFull as e:
            record.set("refused", f"queue full: {e}")
            self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"the server is busy: {e}")
        except (Abandoned, Cancelled):
            if self.shutting_down.is_set():
                record.set("ended by shutdown")
                self._abort(context, grpc.StatusCode.UNAVAILABLE, "the server is shutting down; the job was stopped")
            record.set("cancelled by client", "while queued" if record.outcome == "queued" else "while running")
        except ShuttingDown:
            record.set("refused", "shutting down")
            self._abort(context, grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        except Unavailable as e:
            record.set("failed", str(e))
            self._abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
        except Diverged as e:
            record.set("failed", str(e))
            self._abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except MemoryError:
            record.set("failed", "out of memory")
            self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "the server ran out of memory for this job")
        except Exception as e:
            if not context.is_active():  # a call cancelled under us shows up as whatever it broke
                record.set("cancelled by client", type(e).__name__)
                return
            if record.outcome == "failed" and not record.reason:
                record.set("failed", f"{type(e).__name__}: {e}")
            raise
        finally:
            if upload is not None:
                upload.close()
            self._calls.release()
            reason = f" reason={record.reason!r}" if record.reason else ""
            log.info("job %s sizes=%s preset=%s device=%s seconds=%.1f outcome=%s%s", job, record.sizes,
                     record.preset, record.device or self.model.device, time.monotonic() - t0, record.outcome, reason)
            if self.metrics is not None:
                self.metrics.job_ended(record.outcome, record.ran_seconds)

    def _run(self, job, header, params, images, context, record) -> Iterator[pb.StylizeEvent]:
        ticket = self.scheduler.enter()
        try:
            record.outcome = "queued"
            for queued in self.scheduler.wait_turn(ticket, context.is_active):
                yield convert.event_to_proto(queued)
            record.outcome = "running"
            worker = ticket.worker.spec
            record.device = worker.name
            started = time.monotonic()

            def cancel() -> bool:  # checked by the engine between steps
                return ticket.cancel.is_set() or not context.is_active()

            if worker.threads:  # a CPU worker's share of the cores: OpenMP's count is this thread's own
                _set_threads(worker.threads)
            styles = images[1:1 + len(header.styles)]
            init = images[-1] if header.HasField("init_image") else None
            events = self.model.engine.run(images[0], styles, params, cancel, header.preview_every,
                                           device=worker.device,  # the worker's (the server's), never the client's
                                           budget=self.limits.max_job_bytes,  # and its memory budget
                                           init_image=init)
            try:
                with _on_device(worker.device):
                    yield from self._events(job, header, events, worker)
                record.set("done")
            finally:
                events.close()  # a job ended early (client gone, an error) leaves its level now, not at GC
                record.ran_seconds = time.monotonic() - started
        finally:
            self.scheduler.release(ticket)

    def _events(self, job, header, events, worker) -> Iterator[pb.StylizeEvent]:
        """The engine's events as messages; Started names the worker when there are several."""
        for event in events:
            if isinstance(event, Result):
                yield from convert.result_to_proto(event, header.result_format, self.limits.chunk_bytes)
            else:
                if isinstance(event, Started) and len(self.workers) > 1:
                    event = dataclasses.replace(event, device=worker.name)  # which worker runs it
                yield convert.event_to_proto(
                    event, job, self.model.name, self.model.verified, header.preview_max_side
                )

    def _reserve(self, n: int) -> int:
        with self._in_flight_lock:
            if self._in_flight + n > self.limits.bytes_in_flight:
                raise QueueFull(f"{self._in_flight:,} bytes of other uploads are being received; "
                                f"{n:,} more would pass {self.limits.bytes_in_flight:,}")
            self._in_flight += n
            return n

    def _release(self, n: int) -> None:
        with self._in_flight_lock:
            self._in_flight -= n

    @staticmethod
    def _abort(context, code: grpc.StatusCode, details: str) -> None:
        if context.is_active():
            context.abort(code, details)


def _default_workers(device: str) -> list[WorkerSpec]:
    """One worker on `device` ("auto": cuda:0 or cpu), as --device has always meant."""
    from . import devices

    try:
        return devices.parse(device)
    except devices.DeviceError:  # e.g. cuda without CUDA: the engine says so per job, as before
        return [WorkerSpec(device, device)]


def _on_device(device: str):
    """A GPU worker's thread works with its GPU as the current CUDA device (for
    anything allocated without an explicit device); elsewhere nothing."""
    import contextlib

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


def add_to_server(service: StyleTransferService, server: grpc.Server) -> None:
    """Register the servicer with deserializers that turn a malformed message into
    convert.Malformed (answered INVALID_ARGUMENT) instead of gRPC's INTERNAL."""
    handlers = {
        "Stylize": grpc.stream_stream_rpc_method_handler(
            service.Stylize, request_deserializer=convert.request_from_bytes,
            response_serializer=pb.StylizeEvent.SerializeToString),
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            service.GetInfo, request_deserializer=convert.info_request_from_bytes,
            response_serializer=pb.Info.SerializeToString),
    }
    name = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
