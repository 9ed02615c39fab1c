"""A Stylize upload, read with bounds: a deadline from the call's start, a minimum
average rate, no byte beyond what the (already admitted) header announced, and each
encoded image's size read from its first bytes and checked before the rest is taken.

gRPC's sync server gives the servicer a request iterator whose next() blocks with
no timeout, so a helper thread ("pump") moves messages into a small queue and the
servicer's thread waits on that queue with timeouts. The pump ends with the call.
"""

from __future__ import annotations

import queue
import threading
import time

import grpc

from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import wire

from .. import convert
from . import admission
from .admission import Dims, Invalid, Refused, TooLarge
from ..imageio import ImageError, ImageTooLarge
from .limits import Limits

PROBE_BYTES = 1 << 16  # an encoded image's size is read once this much of it (or all of it) is here
PROBE_UNTIL = 4 << 20  # ... retried with each chunk up to this much, then only on the whole file
RATE_GRACE = 1.0  # seconds before the minimum rate applies
HEADER_SECONDS = 5.0  # the header must arrive this soon after the call began


class TooSlow(Refused):
    status = "DEADLINE_EXCEEDED"


class ClientGone(Exception):
    """The client cancelled the call or disconnected during the upload."""


_END, _GONE = object(), object()


class Upload:
    def __init__(self, request_iterator, limits: Limits, started: float, is_active=lambda: True):
        self.limits = limits
        self.is_active = is_active  # False once the client cancelled: its half-close is no truncation
        self.started = started
        self.deadline = started + limits.upload_seconds
        self.received = 0  # image bytes
        self.expected = 0  # image bytes the header announced (0 until it arrived)
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._run, args=(request_iterator,), daemon=True, name="upload-pump")
        self._pump.start()

    def _run(self, request_iterator) -> None:
        try:
            for message in request_iterator:
                if not self._put(message):
                    return
            self._put(_END)
        except grpc.RpcError:
            self._put(_GONE)
        except Exception:  # noqa: BLE001 - the call ended under us (server shutdown)
            self._put(_GONE)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Stop taking messages (the pump drops the rest and ends with the call)."""
        self._stop.set()

    def _next(self):
        """The next message, _END, or raises TooSlow/ClientGone."""
        while True:
            now = time.monotonic()
            if not self.expected and now >= self.started + HEADER_SECONDS and now < self.deadline:
                raise TooSlow("header", f"not received within {HEADER_SECONDS:g} s of the call's start")
            if now >= self.deadline:
                raise TooSlow("upload", f"not complete after {self.limits.upload_seconds:g} s (upload_seconds); "
                                        f"got {self.received:,} of {self.expected:,} bytes")
            elapsed = now - self.started
            if self.expected and elapsed > RATE_GRACE:
                owed = min(self.expected, self.limits.min_upload_rate * (elapsed - RATE_GRACE))
                if self.received < owed:
                    raise TooSlow("upload", f"{self.received:,} bytes in {elapsed:.1f} s, slower than the minimum "
                                            f"of {self.limits.min_upload_rate:,} bytes/s (min_upload_bytes_per_second)")
            try:
                item = self._queue.get(timeout=min(0.25, self.deadline - now))
            except queue.Empty:
                continue
            if item is _GONE or (item is _END and not self.is_active()):
                raise ClientGone()
            if isinstance(item, convert.Malformed):
                raise Invalid("request", f"not a StylizeRequest message ({item.error})")
            return item

    def _cancelled_soon(self, wait: float = 0.2) -> bool:
        """A client's cancel can reach the request iterator as its end before the call
        shows as inactive: a short look tells a cancel from a truncated upload."""
        end = time.monotonic() + wait
        while self.is_active() and time.monotonic() < end:
            time.sleep(0.01)
        return not self.is_active()

    def header(self) -> pb.Header:
        first = self._next()
        if first is _END or first.WhichOneof("part") != "header":
            raise Invalid("header", "the first message must be the header")
        return first.header

    def images(self, header: pb.Header, plan: admission.Plan) -> list[bytes]:
        """Every image's bytes, whole, in order, checked as they arrive (see the module)."""
        metas, names = plan.metas, plan.names
        self.expected = sum(m.size_bytes for m in metas)
        buffers = [bytearray() for _ in metas]
        dims: list[Dims | None] = [None] * len(metas)
        for i, meta in enumerate(metas):
            if convert.format_name(meta) is None:
                dims[i] = Dims(meta.width, meta.height, meta.channels, wire.meta_depth(meta))
        probed = [convert.format_name(m) is None for m in metas]
        current = 0
        while True:
            while current < len(metas) and len(buffers[current]) == metas[current].size_bytes:
                current += 1
            if current == len(metas):
                break
            message = self._next()
            if message is _END:
                if self._cancelled_soon():
                    raise ClientGone()
                got, want = len(buffers[current]), metas[current].size_bytes
                raise Invalid(names[current], f"truncated: got {got} of {want} bytes")
            if message.WhichOneof("part") != "chunk":
                raise Invalid("header", "sent twice")
            chunk = message.chunk
            if len(chunk.data) > self.limits.chunk_bytes:
                raise Invalid("chunk", f"{len(chunk.data):,} bytes, more than chunk_bytes = {self.limits.chunk_bytes:,}")
            if chunk.image == current + 1 and chunk.offset == 0 and buffers[current]:
                got, want = len(buffers[current]), metas[current].size_bytes
                raise Invalid(names[current], f"truncated: got {got} of {want} bytes before the next image began")
            if (chunk.image, chunk.offset) != (current, len(buffers[current])):
                raise Invalid("chunk", f"out of order: got image {chunk.image} at offset {chunk.offset}, "
                                       f"expected image {current} at offset {len(buffers[current])}")
            if len(buffers[current]) + len(chunk.data) > metas[current].size_bytes:
                raise Invalid(f"{names[current]}.size_bytes",
                              f"more bytes than size_bytes = {metas[current].size_bytes}")
            buffers[current] += chunk.data
            self.received += len(chunk.data)
            buf, meta = buffers[current], metas[current]
            complete = len(buf) == meta.size_bytes
            if not probed[current] and (complete or PROBE_BYTES <= len(buf) <= PROBE_UNTIL + len(chunk.data)):
                try:
                    found = convert.probe_meta(meta, bytes(buf))
                except ImageTooLarge as e:
                    raise TooLarge(names[current], str(e)) from None
                except ImageError as e:
                    raise Invalid(names[current], str(e)) from None
                if found is not None:
                    probed[current] = True
                    dims[current] = Dims(*found)
                    admission.check(header, self.limits, dims)  # every working size, now that it is known
        # Anything already here beyond the announced bytes is an error; later messages are dropped.
        try:  # the client should half-close now; one that keeps the stream open still gets its job
            extra = self._queue.get(timeout=0.5)
        except queue.Empty:
            extra = _END
        if extra is not _END and extra is not _GONE:
            raise Invalid("chunk", "more data than the header announced")
        self.close()
        return [bytes(b) for b in buffers]
