"""Protobuf <-> domain conversion, in one place: parameters, images and events.

The servicer and the client call only these functions; neither touches a
message field for anything else.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import numpy as np
from PIL import Image

from stylecore.events import Preview, Progress, Result, Started, TilePass
from stylecore.params import StyleParams, preset
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import wire
from styletransfer.v1.wire import CHUNK_BYTES, PREVIEW_MAX_SIDE, Queued

from stylecore.buffers import DEPTHS, depth_of, to_depth

from .imageio import ImageError, decode_image, encode_image, probe, probe_depth
from .service.limits import Limits

# The wire rules themselves (chunking, reassembly, format sniffing, Queued, the texts
# clients show) live in styletransfer.v1.wire, shared with the GIMP plug-in; this
# module converts between messages and the engine's types (numpy, PIL, StyleParams).
FORMATS = wire.FORMAT_NAMES

# StyleParams fields that are sequences travel as repeated fields.
_SEQUENCES = {f.name for f in dataclasses.fields(StyleParams) if str(f.type).startswith("tuple")}


# --- parameters -------------------------------------------------------------------------


def params_from_proto(preset_name: str, message: pb.Params) -> StyleParams:
    """The preset with every field the message sets on top. Raises ParamError."""
    base = preset(preset_name or "default")
    changes = {}
    for f in dataclasses.fields(StyleParams):
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
    return wire.raw_meta(w, h, c, depth_of(array))


def encoded_meta(data: bytes) -> pb.ImageMeta | None:
    """wire.encoded_meta with the file's size read from its header (so that the server
    can refuse it before the upload). None for a format the contract does not name:
    send those decoded, as RAW."""
    fmt = wire.sniff_format(data)
    if fmt is None:
        return None
    try:
        dims = probe(data[: 1 << 16], FORMATS[fmt])
    except ImageError:
        dims = None  # the server will say what is wrong with it
    return wire.encoded_meta(data, dims[:2] if dims else None)


def format_name(meta: pb.ImageMeta) -> str | None:
    """Pillow's name of an encoded image's format; None for RAW."""
    return FORMATS.get(meta.format)


def probe_meta(meta: pb.ImageMeta, head: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, channels, depth) of an encoded image from its first bytes (depth
    0 where they do not say it yet), or None while they do not tell the size. Raises
    ImageError (not that format) or ImageTooLarge."""
    found = probe(head, FORMATS[meta.format])
    if found is None:
        return None
    return (*found, probe_depth(head, FORMATS[meta.format]) or 0)


def image_from_bytes(meta: pb.ImageMeta, data: bytes, max_pixels: int, what: str) -> np.ndarray:
    """(H, W, C) at its own depth from a complete image's bytes; encoded files only in
    the format the meta names."""
    if len(data) != meta.size_bytes:
        raise ImageError(f"{what}: got {len(data)} bytes, the header announced {meta.size_bytes}")
    if meta.format in (pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW):
        sample = np.dtype(DEPTHS[wire.meta_depth(meta)]).newbyteorder("<")  # the wire's byte order
        array = np.frombuffer(data, sample).reshape(meta.height, meta.width, meta.channels)
        return array.astype(array.dtype.newbyteorder("="), copy=False)
    return decode_image(data, max_pixels, what, formats=(FORMATS[meta.format],))


def limits_to_proto(limits: Limits) -> pb.Limits:
    return pb.Limits(
        max_pixels=limits.max_pixels, max_message_bytes=limits.max_message_bytes, chunk_bytes=limits.chunk_bytes,
        max_queue=limits.max_queue, max_request_bytes=limits.request_bytes, max_styles=limits.max_styles,
        upload_seconds=limits.upload_seconds, min_upload_bytes_per_second=limits.min_upload_rate,
        max_work_pixels=limits.max_work_pixels, max_job_bytes=limits.max_job_bytes, max_calls=limits.max_calls,
    )


def device_to_proto(worker: dict) -> pb.Device:
    """One worker of Scheduler.snapshot() as GetInfo's Device."""
    threads = worker["threads"]
    if not threads and worker["name"].startswith("cpu"):
        import torch

        threads = torch.get_num_threads()
    return pb.Device(name=worker["name"], state="busy" if worker["busy"] else "idle", threads=threads,
                     jobs=worker["jobs"], busy_seconds=worker["busy_seconds"])


class Malformed:
    """What a request that is no valid protobuf message deserializes to; the servicer
    answers it with INVALID_ARGUMENT (gRPC's own handling would log a traceback and
    answer INTERNAL)."""

    def __init__(self, error: str):
        self.error = error


def request_from_bytes(data: bytes) -> pb.StylizeRequest | Malformed:
    try:
        return pb.StylizeRequest.FromString(data)
    except Exception as e:  # noqa: BLE001 - DecodeError, or anything else protobuf raises
        return Malformed(f"{type(e).__name__}: {e}")


def info_request_from_bytes(data: bytes) -> pb.GetInfoRequest | Malformed:
    try:
        return pb.GetInfoRequest.FromString(data)
    except Exception as e:  # noqa: BLE001
        return Malformed(f"{type(e).__name__}: {e}")


def encode_result(array: np.ndarray, fmt: int) -> tuple[pb.ImageMeta, bytes]:
    if fmt in (pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW):  # little-endian samples (wire.raw_meta)
        return image_meta(array), array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    if fmt not in FORMATS:
        raise ImageError(f"header.result_format: unknown image format {fmt}")
    data = encode_image(array, FORMATS[fmt])
    return pb.ImageMeta(format=fmt, size_bytes=len(data), depth=depth_of(array)), data


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
            tiles=event.tiles,
        ))
    if isinstance(event, TilePass):
        return pb.StylizeEvent(tile=pb.TileProgress(
            scale=event.scale, step=event.step, phase=event.phase, phases=event.phases, tile=event.tile,
            tiles=event.tiles,
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


def result_to_proto(result: Result, fmt: int, chunk: int = CHUNK_BYTES, depth: int = 0
                    ) -> Iterator[pb.StylizeEvent]:
    """The result in `fmt` at `depth` bits per channel (0: the content's, as the engine
    made it), in chunks, then Done."""
    meta, data = encode_result(to_depth(result.image, depth) if depth else result.image, fmt)
    yield from wire.result_events(meta, data, chunk)
    yield pb.StylizeEvent(done=pb.Done(elapsed=result.elapsed, losses=result.losses))


class EventDecoder:
    """The client side: messages back to engine events (Queued, Started, Progress,
    Preview with a decoded image, and one Result assembled from its chunks)."""

    def __init__(self, max_pixels: int = 1 << 31):
        self.max_pixels = max_pixels
        self._result = wire.ResultAssembler()

    def decode(self, message: pb.StylizeEvent):
        """Returns an event, or None for a message that is part of a larger one."""
        kind = message.WhichOneof("event")
        if kind == "queued":
            return Queued(position=message.queued.position)
        if kind == "started":
            s = message.started
            return Started(device=s.device, dtype=s.dtype, sizes=tuple((z.height, z.width) for z in s.scales),
                           total_steps=s.total_steps, tiles=tuple(s.tiles))
        if kind == "tile":
            t = message.tile
            return TilePass(scale=t.scale, step=t.step, phase=t.phase, phases=t.phases, tile=t.tile, tiles=t.tiles)
        if kind == "progress":
            p = message.progress
            return Progress(scale=p.scale, scales=p.scales, step=p.step, steps=p.steps, losses=dict(p.losses),
                            best=p.best, elapsed=p.elapsed, eta=p.eta)
        if kind == "preview":
            image = np.asarray(Image.open(io.BytesIO(message.preview.png)).convert("RGB"))
            return Preview(scale=message.preview.scale, step=message.preview.step, image=image)
        if kind == "result":
            try:
                self._result.add(message.result)
            except wire.WireError as e:
                raise ImageError(str(e)) from None
            return None
        if kind == "done":
            try:
                meta, data = self._result.finish()
            except wire.WireError as e:
                raise ImageError(str(e)) from None
            image = image_from_bytes(meta, data, self.max_pixels, "result")
            return Result(image=image, losses=dict(message.done.losses), elapsed=message.done.elapsed)
        raise ImageError(f"unknown event {kind!r}")
