"""The StyleTransfer servicer: reads a job, waits for the device, streams the
engine's events. Thin on purpose: conversions live in convert.py, queueing in
scheduler.py, the method in stylecore."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from stylecore import Cancelled, Engine, ParamError, Result
from stylecore.engine import Diverged
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import style_transfer_pb2_grpc as pb_grpc

from . import __version__, convert
from .imageio import ImageError, ImageTooLarge
from .scheduler import Abandoned, QueueFull, Scheduler, ShuttingDown

log = logging.getLogger("styleserver")


@dataclass(frozen=True)
class Limits:
    max_pixels: int
    max_queue: int
    chunk_bytes: int = convert.CHUNK_BYTES
    max_message_bytes: int = 4 * convert.CHUNK_BYTES


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


class StyleTransferService(pb_grpc.StyleTransferServicer):
    def __init__(self, model: Model, limits: Limits, device: str):
        self.model = model
        self.limits = limits
        self.device = device
        self.scheduler = Scheduler(limits.max_queue)
        self.shutting_down = threading.Event()

    # --- GetInfo ---------------------------------------------------------------------

    def GetInfo(self, request, context):
        from stylecore.params import PRESETS

        return pb.Info(
            server_version=__version__, device=self.model.device, dtype=self.model.dtype,
            model=self.model.name, model_sha256=self.model.sha256, model_verified=self.model.verified,
            limits=pb.Limits(max_pixels=self.limits.max_pixels, max_message_bytes=self.limits.max_message_bytes,
                             chunk_bytes=self.limits.chunk_bytes, max_queue=self.limits.max_queue),
            presets=[pb.Preset(name=n, params=convert.params_to_proto(p)) for n, p in PRESETS.items()],
        )

    # --- Stylize ---------------------------------------------------------------------

    def Stylize(self, request_iterator, context) -> Iterator[pb.StylizeEvent]:
        job = uuid.uuid4().hex[:8]
        t0 = time.monotonic()
        sizes, preset, outcome = "?", "?", "failed"
        try:
            if not self.model.ready.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is still loading VGG19; try again shortly")
            header, images = self._receive(request_iterator)
            params = convert.params_from_proto(header.preset, header.params).replace(device=self.device)
            preset = header.preset or "default"
            sizes = " ".join(f"{a.shape[1]}x{a.shape[0]}x{a.shape[2]}" for a in images)
            ticket = self.scheduler.enter()
            try:
                for queued in self.scheduler.wait_turn(ticket, context.is_active):
                    yield convert.event_to_proto(queued)

                def cancel() -> bool:  # checked by the engine between steps
                    return ticket.cancel.is_set() or not context.is_active()

                events = self.model.engine.run(images[0], images[1:], params, cancel, header.preview_every)
                for event in events:
                    if isinstance(event, Result):
                        yield from convert.result_to_proto(event, header.result_format, self.limits.chunk_bytes)
                    else:
                        yield convert.event_to_proto(
                            event, job, self.model.name, self.model.verified, header.preview_max_side
                        )
                outcome = "done"
            finally:
                self.scheduler.release(ticket)
        except (ParamError, ImageError, ValueError) as e:
            outcome = "invalid"
            too_large = isinstance(e, ImageTooLarge)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if too_large else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(e))
        except QueueFull as e:
            outcome = "queue full"
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the server is busy: {e}")
        except (Abandoned, Cancelled):
            if self.shutting_down.is_set():
                outcome = "ended by shutdown"
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; the job was stopped")
            outcome = "cancelled by client"
        except ShuttingDown:
            outcome = "refused: shutting down"
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        except Diverged as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        finally:
            log.info("job %s sizes=%s preset=%s device=%s seconds=%.1f outcome=%s",
                     job, sizes, preset, self.model.device, time.monotonic() - t0, outcome)

    def _receive(self, request_iterator) -> tuple[pb.Header, list]:
        """The header, then every image complete and decoded. Raises ImageError/ValueError
        (INVALID_ARGUMENT) or ImageTooLarge (RESOURCE_EXHAUSTED)."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ImageError("header: the first message must be the header")
        header = first.header
        if not header.styles:
            raise ImageError("header.styles: at least one style image is needed")
        metas = [header.content, *header.styles]
        names = ["content"] + [f"styles[{i}]" for i in range(len(header.styles))]
        for meta, name in zip(metas, names):
            convert.check_meta(meta, self.limits.max_pixels, name)
        buffers = [bytearray() for _ in metas]
        current = 0  # the image being received; images arrive whole, one after the other
        for message in request_iterator:
            if message.WhichOneof("part") != "chunk":
                raise ImageError("header: sent twice")
            chunk = message.chunk
            while current < len(metas) and len(buffers[current]) == metas[current].size_bytes:
                current += 1
            if current == len(metas):
                raise ImageError(f"chunk: image {chunk.image} at offset {chunk.offset} is beyond what the header announced")
            if chunk.image == current + 1 and chunk.offset == 0 and buffers[current]:
                got, want = len(buffers[current]), metas[current].size_bytes
                raise ImageError(f"{names[current]}: truncated: got {got} of {want} bytes before the next image began")
            if (chunk.image, chunk.offset) != (current, len(buffers[current])):
                raise ImageError(
                    f"chunk: out of order: got image {chunk.image} at offset {chunk.offset}, "
                    f"expected image {current} at offset {len(buffers[current])}"
                )
            if len(buffers[current]) + len(chunk.data) > metas[current].size_bytes:
                raise ImageError(f"{names[current]}: more bytes than size_bytes = {metas[current].size_bytes}")
            buffers[current] += chunk.data
        for meta, name, data in zip(metas, names, buffers):
            if len(data) != meta.size_bytes:
                raise ImageError(f"{name}: truncated: got {len(data)} of {meta.size_bytes} bytes")
        return header, [convert.image_from_bytes(m, bytes(d), self.limits.max_pixels, n)
                        for m, n, d in zip(metas, names, buffers)]
