"""The GIMP plug-in's gRPC client, in pure Python.

GIMP 3 on Windows and macOS bundles its own Python without pip, and PyPI's grpcio
wheels do not fit it, so the plug-in cannot import grpcio. It speaks gRPC itself
with grpclib (asyncio, HTTP/2 through the pure-Python h2) and the protobuf
runtime's pure-Python implementation; `style-transfer gimp install` copies those,
without their optional C extensions, into the plug-in's `vendor` folder.

This module knows nothing of GIMP, so it is tested against a real server outside GIMP.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

STYLIZE = "/styletransfer.v1.StyleTransfer/Stylize"
CHUNK = 1 << 20


class ServerError(Exception):
    """A readable message for the user: the server is down, or refused the job."""


@dataclass
class Job:
    """What the plug-in sends: raw 8-bit buffers, exactly as GIMP hands them out."""

    content: bytes
    width: int
    height: int
    channels: int
    styles: list  # of encoded image files (bytes) or (bytes, width, height, channels) raw buffers
    preset: str = "default"
    params: dict = field(default_factory=dict)  # StyleParams field -> value
    preview_every: int = 0
    preview_max_side: int = 256


@dataclass
class Result:
    pixels: bytes  # raw, same width, height and channels as the content
    losses: dict


def _pb():
    from styletransfer.v1 import style_transfer_pb2 as pb

    return pb


def _meta(pb, image):
    if isinstance(image, (bytes, bytearray)):
        return pb.ImageMeta(format=pb.IMAGE_FORMAT_PNG, size_bytes=len(image)), bytes(image)
    data, w, h, c = image
    return pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=w, height=h, channels=c, size_bytes=len(data)), data


def requests(job: Job):
    """The Stylize request stream for `job`."""
    pb = _pb()
    params = pb.Params()
    for name, value in job.params.items():
        if isinstance(value, (list, tuple)):
            getattr(params, name).extend(value)
        else:
            setattr(params, name, value)
    metas, blobs = [], []
    for image in [(job.content, job.width, job.height, job.channels), *job.styles]:
        meta, data = _meta(pb, image)
        metas.append(meta)
        blobs.append(data)
    yield pb.StylizeRequest(header=pb.Header(
        preset=job.preset, params=params, preview_every=job.preview_every,
        preview_max_side=job.preview_max_side, result_format=pb.IMAGE_FORMAT_RAW,
        content=metas[0], styles=metas[1:],
    ))
    for index, data in enumerate(blobs):
        for offset in range(0, len(data), CHUNK):
            yield pb.StylizeRequest(chunk=pb.ImageChunk(image=index, offset=offset, data=data[offset:offset + CHUNK]))


def describe(event) -> str | None:
    """Progress text for GIMP's progress bar, or None."""
    kind = event.WhichOneof("event")
    if kind == "queued":
        return f"Waiting for the server: {event.queued.position} job(s) ahead"
    if kind == "started":
        return f"Started on {event.started.device}"
    if kind == "progress":
        p = event.progress
        eta = int(round(p.eta))
        return f"Style transfer: scale {p.scale}/{p.scales}, step {p.step}/{p.steps}, {eta // 60}:{eta % 60:02d} left"
    return None


def run(address: str, job: Job, on_event: Callable, token: str | None = None) -> Result:
    """Run `job` on the server at HOST:PORT; calls on_event(message) for every event.
    Raises ServerError with a message fit for the user."""
    try:
        return asyncio.run(_run(address, job, on_event, token))
    except ServerError:
        raise
    except (ConnectionError, OSError, asyncio.TimeoutError) as e:
        port = address.rsplit(":", 1)[-1]
        raise ServerError(
            f"No style-transfer server answers at {address} ({e.__class__.__name__}).\n"
            f"Start one with:  style-transfer serve --port {port}"
        ) from None


async def _run(address: str, job: Job, on_event: Callable, token: str | None) -> Result:
    from grpclib.client import Channel
    from grpclib.const import Cardinality
    from grpclib.exceptions import GRPCError, StreamTerminatedError

    pb = _pb()
    host, _, port = address.rpartition(":")
    channel = Channel(host.strip("[]") or "127.0.0.1", int(port))
    metadata = {"authorization": f"Bearer {token}"} if token else None
    meta, parts, losses = None, [], {}
    try:
        async with channel.request(STYLIZE, Cardinality.STREAM_STREAM, pb.StylizeRequest, pb.StylizeEvent,
                                   metadata=metadata) as stream:
            for message in requests(job):
                await stream.send_message(message)
            await stream.end()
            async for event in stream:
                kind = event.WhichOneof("event")
                if kind == "result":
                    if event.result.offset == 0:
                        meta, parts = event.result.meta, []
                    parts.append(event.result.data)
                elif kind == "done":
                    losses = dict(event.done.losses)
                on_event(event)
    except GRPCError as e:
        raise ServerError(f"The server refused the job: {e.message} [{e.status.name}]") from None
    except StreamTerminatedError as e:
        raise ServerError(f"The server closed the connection: {e}") from None
    finally:
        channel.close()
    if meta is None:
        raise ServerError("The server sent no result")
    pixels = b"".join(parts)
    if len(pixels) != job.width * job.height * job.channels:
        raise ServerError(f"The server's result has {len(pixels)} bytes, expected "
                          f"{job.width}x{job.height}x{job.channels}")
    return Result(pixels=pixels, losses=losses)

