"""Protobuf <-> domain conversion, in one place: parameters, images and events.

The servicer and the client call only these functions; neither touches a
message field for anything else.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from stylecore.events import Preview, Progress, Result, Started
from stylecore.params import ParamError, StyleParams, preset
from styletransfer.v1 import style_transfer_pb2 as pb

from .imageio import ImageError, ImageTooLarge, check_size, decode_image, encode_image
from .scheduler import Queued

CHUNK_BYTES = 1 << 20  # 1 MiB: well under gRPC's default 4 MiB message limit
PREVIEW_MAX_SIDE = 256

FORMATS = {
    pb.IMAGE_FORMAT_PNG: "PNG", pb.IMAGE_FORMAT_JPEG: "JPEG",
    pb.IMAGE_FORMAT_WEBP: "WEBP", pb.IMAGE_FORMAT_TIFF: "TIFF",
}

# StyleParams fields that are sequences travel as repeated fields.
_SEQUENCES = {f.name for f in dataclasses.fields(StyleParams) if str(f.type).startswith("tuple")}


# --- parameters -------------------------------------------------------------------------


def params_from_proto(preset_name: str, message: pb.Params) -> StyleParams:
    """The preset with every field the message sets on top. Raises ParamError.
    `device` is not taken: a server runs on its own device."""
    base = preset(preset_name or "default")
    changes = {}
    for f in dataclasses.fields(StyleParams):
        if f.name == "device":
            continue
        if f.name in _SEQUENCES:
            values = getattr(message, f.name)
            if len(values):
                changes[f.name] = tuple(float(v) for v in values)
        elif message.HasField(f.name):
            changes[f.name] = getattr(message, f.name)
    return base.replace(**changes)


def params_to_proto(params: StyleParams, base: StyleParams | None = None) -> pb.Params:
    """Every field (base None), or only those that differ from `base`."""
    message = pb.Params()
    for f in dataclasses.fields(StyleParams):
        value = getattr(params, f.name)
        if base is not None and value == getattr(base, f.name):
            continue
        if f.name in _SEQUENCES:
            getattr(message, f.name).extend(value)
        else:
            setattr(message, f.name, value)
    return message


# --- images -----------------------------------------------------------------------------


def image_meta(array: np.ndarray) -> pb.ImageMeta:
    h, w, c = array.shape
    return pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=w, height=h, channels=c, size_bytes=array.nbytes)


_MAGIC = ((b"\x89PNG", pb.IMAGE_FORMAT_PNG), (b"\xff\xd8", pb.IMAGE_FORMAT_JPEG),
          (b"II*\x00", pb.IMAGE_FORMAT_TIFF), (b"MM\x00*", pb.IMAGE_FORMAT_TIFF))


def encoded_meta(data: bytes) -> pb.ImageMeta:
    """Meta for an encoded file's bytes, its format told by its first bytes (the server
    decodes whatever Pillow reads; unknown formats travel as PNG-labelled bytes)."""
    fmt = next((f for magic, f in _MAGIC if data.startswith(magic)), None)
    if fmt is None:
        fmt = pb.IMAGE_FORMAT_WEBP if data[8:12] == b"WEBP" else pb.IMAGE_FORMAT_PNG
    return pb.ImageMeta(format=fmt, size_bytes=len(data))


def check_meta(meta: pb.ImageMeta, max_pixels: int, what: str) -> None:
    """Before any byte arrives: sizes consistent, within the limit. Raises ImageError,
    or ImageTooLarge for an image over the limit."""
    if meta.format in (pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW):
        if meta.channels not in (1, 2, 3, 4):
            raise ImageError(f"{what}.channels: must be 1 to 4, got {meta.channels}")
        check_size(meta.width, meta.height, max_pixels, what)
        expected = meta.width * meta.height * meta.channels
        if meta.size_bytes != expected:
            raise ImageError(
                f"{what}.size_bytes: {meta.size_bytes} does not match width*height*channels = "
                f"{meta.width}*{meta.height}*{meta.channels} = {expected}"
            )
    elif meta.format not in FORMATS:
        raise ImageError(f"{what}.format: unknown image format {meta.format}")
    elif meta.size_bytes == 0:
        raise ImageError(f"{what}.size_bytes: an encoded image cannot be empty")
    # An encoded image's pixel count is checked from its header before decoding; its
    # byte count is capped by the server's max_pixels * 4 (no format is bigger raw).
    elif meta.size_bytes > max_pixels * 4 + (1 << 20):
        raise ImageTooLarge(f"{what}.size_bytes: {meta.size_bytes} bytes is more than this server accepts")


def image_from_bytes(meta: pb.ImageMeta, data: bytes, max_pixels: int, what: str) -> np.ndarray:
    """(H, W, C) uint8 from a complete image's bytes."""
    if len(data) != meta.size_bytes:
        raise ImageError(f"{what}: got {len(data)} bytes, the header announced {meta.size_bytes}")
    if meta.format in (pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW):
        return np.frombuffer(data, np.uint8).reshape(meta.height, meta.width, meta.channels)
    return decode_image(data, max_pixels, what)


def encode_result(array: np.ndarray, fmt: int) -> tuple[pb.ImageMeta, bytes]:
    if fmt in (pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW):
        return image_meta(array), array.tobytes()
    data = encode_image(array, FORMATS[fmt])
    return pb.ImageMeta(format=fmt, size_bytes=len(data)), data


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(offset, piece) pairs; one empty piece for empty data."""
    view = memoryview(data)
    for offset in range(0, max(1, len(data)), size):
        yield offset, bytes(view[offset : offset + size])


def request_stream(header: pb.Header, images: Iterable[bytes], chunk: int = CHUNK_BYTES) -> Iterator[pb.StylizeRequest]:
    """The client side of Stylize: the header, then each image's bytes in chunks."""
    yield pb.StylizeRequest(header=header)
    for index, data in enumerate(images):
        for offset, piece in chunks(data, chunk):
            yield pb.StylizeRequest(chunk=pb.ImageChunk(image=index, offset=offset, data=piece))


# --- events -----------------------------------------------------------------------------


def preview_png(image: np.ndarray, max_side: int) -> bytes:
    img = Image.fromarray(image)
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)  # fast: previews are frequent and small
    return out.getvalue()


def event_to_proto(event, job_id: str = "", model: str = "", verified: bool = False,
                   preview_max_side: int = PREVIEW_MAX_SIDE) -> pb.StylizeEvent:
    """One engine event (not Result: see result_to_proto) as a message."""
    if isinstance(event, Started):
        return pb.StylizeEvent(started=pb.Started(
            job_id=job_id, device=event.device, dtype=event.dtype, model=model, model_verified=verified,
            scales=[pb.Size(width=w, height=h) for h, w in event.sizes], total_steps=event.total_steps,
        ))
    if isinstance(event, Progress):
        return pb.StylizeEvent(progress=pb.Progress(
            scale=event.scale, scales=event.scales, step=event.step, steps=event.steps,
            losses=event.losses, elapsed=event.elapsed, eta=event.eta, best=event.best,
        ))
    if isinstance(event, Preview):
        return pb.StylizeEvent(preview=pb.Preview(
            scale=event.scale, step=event.step, png=preview_png(event.image, preview_max_side or PREVIEW_MAX_SIDE),
        ))
    if isinstance(event, Queued):
        return pb.StylizeEvent(queued=pb.Queued(position=event.position))
    raise TypeError(f"no message for {type(event).__name__}")


def result_to_proto(result: Result, fmt: int, chunk: int = CHUNK_BYTES) -> Iterator[pb.StylizeEvent]:
    meta, data = encode_result(result.image, fmt)
    for offset, piece in chunks(data, chunk):
        yield pb.StylizeEvent(result=pb.ResultChunk(meta=meta if offset == 0 else None, offset=offset, data=piece))
    yield pb.StylizeEvent(done=pb.Done(elapsed=result.elapsed, losses=result.losses))


class EventDecoder:
    """The client side: messages back to engine events (Queued, Started, Progress,
    Preview with a decoded image, and one Result assembled from its chunks)."""

    def __init__(self, max_pixels: int = 1 << 31):
        self.max_pixels = max_pixels
        self._meta: pb.ImageMeta | None = None
        self._parts: list[bytes] = []
        self._received = 0

    def decode(self, message: pb.StylizeEvent):
        """Returns an event, or None for a message that is part of a larger one."""
        kind = message.WhichOneof("event")
        if kind == "queued":
            return Queued(position=message.queued.position)
        if kind == "started":
            s = message.started
            return Started(device=s.device, dtype=s.dtype, sizes=tuple((z.height, z.width) for z in s.scales),
                           total_steps=s.total_steps)
        if kind == "progress":
            p = message.progress
            return Progress(scale=p.scale, scales=p.scales, step=p.step, steps=p.steps, losses=dict(p.losses),
                            best=p.best, elapsed=p.elapsed, eta=p.eta)
        if kind == "preview":
            image = np.asarray(Image.open(io.BytesIO(message.preview.png)).convert("RGB"))
            return Preview(scale=message.preview.scale, step=message.preview.step, image=image)
        if kind == "result":
            r = message.result
            if r.offset == 0:
                self._meta, self._parts, self._received = r.meta, [], 0
            if self._meta is None or r.offset != self._received:
                raise ImageError(f"result chunk at offset {r.offset} out of order")
            self._parts.append(r.data)
            self._received += len(r.data)
            return None
        if kind == "done":
            if self._meta is None:
                raise ImageError("the server sent no result")
            image = image_from_bytes(self._meta, b"".join(self._parts), self.max_pixels, "result")
            return Result(image=image, losses=dict(message.done.losses), elapsed=message.done.elapsed)
        raise ImageError(f"unknown event {kind!r}")
