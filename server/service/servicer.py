"""The StyleTransfer servicer: protobuf in, a prepared Job to the queue, messages out.

Thin on purpose: what is accepted is decided in admission.py, the upload is read by
upload.py, conversions live in convert.py, the queue in scheduler.py, the job and
its failures in jobs.py, and a worker (workers.py, or the cluster's runner) runs it.
The same servicer serves local devices and a Ray Serve cluster.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import grpc

from stylecore import Cancelled, ParamError
from stylecore.buffers import check_mask, depth_of
from stylecore.params import PRESETS
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import style_transfer_pb2_grpc as pb_grpc
from styletransfer.v1 import wire

from .. import __version__, convert
from ..imageio import ImageError
from . import admission
from .activity import Activity
from .admission import Dims, Invalid, Refused
from .jobs import Job, JobFailed, failure
from .limits import Limits
from .model import Model
from .scheduler import Abandoned, QueueFull, Scheduler, ShuttingDown
from .upload import ClientGone, Upload

log = logging.getLogger("styleserver")


class _Record:
    """What the job's log line says: sizes, preset, outcome and why."""

    def __init__(self):
        self.sizes, self.preset, self.outcome, self.reason = "?", "?", "failed", ""
        self.device = ""  # the worker it ran on
        self.ran_seconds: float | None = None  # on a worker; None: it never ran

    def set(self, outcome: str, reason: str = "") -> None:
        self.outcome, self.reason = outcome, reason


class StyleTransferService(pb_grpc.StyleTransferServicer):
    """`scheduler` feeds the workers, local devices or cluster slots alike."""

    def __init__(self, model: Model, limits: Limits, scheduler: Scheduler, metrics=None):
        self.model = model
        self.limits = limits
        self.scheduler = scheduler
        self.metrics = metrics
        self.shutting_down = threading.Event()
        self._calls = threading.BoundedSemaphore(limits.max_calls)
        self._decoding = threading.Semaphore(1)  # one decode at a time bounds its memory
        self._in_flight = 0  # announced bytes of the uploads being received
        self._in_flight_lock = threading.Lock()
        self.activity = Activity()  # for serve --idle-exit

    # --- GetInfo ---------------------------------------------------------------------

    def GetInfo(self, request, context):
        if isinstance(request, convert.Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a GetInfoRequest ({request.error})")
        self.activity.touch()
        return pb.Info(
            server_version=__version__, contract_version=wire.CONTRACT_VERSION, device=self.model.describe_device(),
            dtype=self.model.dtype,
            model=self.model.name, model_sha256=self.model.sha256, model_verified=self.model.verified,
            limits=convert.limits_to_proto(self.limits),
            presets=[pb.Preset(name=n, params=convert.params_to_proto(p)) for n, p in PRESETS.items()],
            devices=[convert.device_to_proto(d) for d in self.scheduler.snapshot()],
        )

    # --- Stylize ---------------------------------------------------------------------

    def Stylize(self, request_iterator, context) -> Iterator[pb.StylizeEvent]:
        job_id = uuid.uuid4().hex[:8]
        t0 = time.monotonic()
        record = _Record()
        self.activity.begin()
        if not self._calls.acquire(blocking=False):
            self.activity.end()
            record.set("refused", "too many calls")
            log.info("job %s refused: %d Stylize calls at once (max_calls)", job_id, self.limits.max_calls)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the server is busy: {self.limits.max_calls} Stylize calls at once (max_calls)")
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
            plan = admission.check(header, self.limits, [Dims(a.shape[1], a.shape[0], a.shape[2], depth_of(a))
                                                         for a in images])
            job = _job(job_id, header, plan, images, self.limits.chunk_bytes)
            del images
            yield from self._run(job, context, record)
        except GeneratorExit:  # gRPC stopped reading the events: the client went away
            record.set("cancelled by client", f"while {record.outcome}" if record.outcome in ("queued", "running")
                       else "while streaming events")
            raise
        except ClientGone:
            record.set("cancelled by client", "during upload")
        except Refused as e:
            record.set("refused", str(e))
            self._abort(context, getattr(grpc.StatusCode, e.status), str(e))
        except (JobFailed, ImageError, ParamError, ValueError) as e:  # the input's fault, or the job failed
            failed = failure(e)
            record.set("refused" if failed.refused else "failed", str(failed))
            self._abort(context, getattr(grpc.StatusCode, failed.status), str(failed))
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
            self.activity.end()
            reason = f" reason={record.reason!r}" if record.reason else ""
            log.info("job %s sizes=%s preset=%s device=%s seconds=%.1f outcome=%s%s", job_id, record.sizes,
                     record.preset, record.device or self.model.device, time.monotonic() - t0, record.outcome, reason)
            if self.metrics is not None:
                self.metrics.job_ended(record.outcome, record.ran_seconds)

    def _run(self, job: Job, context, record: _Record) -> Iterator[pb.StylizeEvent]:
        """Waits for a worker (telling the client its place), then streams the worker's
        messages. An engine failure ends as jobs.failure says."""
        ticket = self.scheduler.enter()
        try:
            record.outcome = "queued"
            for queued in self.scheduler.wait_turn(ticket, context.is_active):
                yield convert.event_to_proto(queued)
            record.outcome = "running"
            record.device = ticket.worker.name
            started = time.monotonic()

            def cancel() -> bool:  # checked by the engine between steps
                return ticket.cancel.is_set() or not context.is_active()

            try:
                yield from ticket.worker.run(job, cancel)
                record.set("done")
            except Exception as e:  # noqa: BLE001 - the engine's and the runner's failures, one mapping
                failed = failure(e)
                if failed is None:
                    raise
                raise failed from None
            finally:
                record.ran_seconds = time.monotonic() - started
        finally:
            self.scheduler.release(ticket)

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


def _job(job_id: str, header: pb.Header, plan: admission.Plan, images: list, chunk_bytes: int) -> Job:
    """The Job from the decoded images, in upload order (plan.names); masks checked
    (gray, their image's size: INVALID_ARGUMENT naming the mask) before it is queued."""
    named = dict(zip(plan.names, images))
    styles = tuple(named[f"header.styles[{i}]"] for i in range(len(header.styles)))

    def masks(field: str, sizes: list) -> tuple:
        found = []
        for i in range(len(getattr(header, field))):
            name = f"header.{field}[{i}]"
            if name in named:
                try:
                    check_mask(named[name], name, sizes[i])
                except ValueError as e:
                    raise Invalid(name, str(e).removeprefix(f"{name}: ")) from None
            found.append(named.get(name))
        return tuple(found)

    content = named["header.content"]
    style_masks = masks("style_masks", [content.shape[:2]] * len(styles))
    sources = masks("style_source_masks", [s.shape[:2] for s in styles])
    return Job(job_id, content, styles, named.get("header.init_image"), plan.params, header.preview_every,
               header.preview_max_side, header.result_format, chunk_bytes, plan.budget, style_masks, sources,
               header.result_depth, named.get("header.previous_frame"), named.get("header.previous_result"))
