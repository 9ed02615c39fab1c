"""Tools of a hostile client, shared by tests/test_hostile.py and
bench/hostile_bench.py: a real server process on 127.0.0.1, raw calls, crafted
files and the probes that say the server is still well. Loopback only; every
loop is bounded in count and time."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib

import grpc
import numpy as np

from clients import FanOut
from serve_process import HOST, health  # noqa: F401 - health: for the tests
from stylecore import Result, preset
from styleserver import convert
from styleserver.client import Client
from styletransfer.v1 import style_transfer_pb2 as pb

FAST = preset("default").replace(size=48, scales=1, steps=2)


def small_job(address: str, content: np.ndarray, style: np.ndarray, token: str | None = None) -> float:
    """Seconds for a valid small job; raises if it does not end with a Result."""
    t0 = time.monotonic()
    with Client(address, token=token) as client:
        events = list(client.stylize(content, [style], FAST))
    assert isinstance(events[-1], Result), events[-1]
    return time.monotonic() - t0


def raw_call(address: str, requests, metadata=None, timeout: float = 30.0) -> tuple[grpc.StatusCode, str]:
    """Send raw request messages (bytes, or StylizeRequest); (status code, details)."""
    def encode(items):
        for item in items:
            yield item if isinstance(item, bytes) else item.SerializeToString()

    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 256 << 20)]) as channel:
        call = channel.stream_stream("/styletransfer.v1.StyleTransfer/Stylize", request_serializer=None,
                                     response_deserializer=None)
        try:
            for _ in call(encode(requests), metadata=metadata, timeout=timeout):
                pass
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""


def header(content_meta: pb.ImageMeta, style_metas, params: pb.Params | None = None, **fields) -> pb.StylizeRequest:
    base = convert.params_to_proto(FAST, preset("default"))
    if params is not None:
        base.MergeFrom(params)
    return pb.StylizeRequest(header=pb.Header(preset="default", params=base, content=content_meta,
                                              styles=list(style_metas), **fields))


def raw_meta(w: int, h: int, c: int = 3) -> pb.ImageMeta:
    return pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=w, height=h, channels=c, size_bytes=w * h * c)


def chunk(image: int, offset: int, data: bytes) -> pb.StylizeRequest:
    return pb.StylizeRequest(chunk=pb.ImageChunk(image=image, offset=offset, data=data))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, bit_depth: int = 8, color: int = 2, idat: bytes = b"") -> bytes:
    """A PNG that declares width x height; its pixel data (idat) may be short or absent."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_16bit_gray(width: int, height: int) -> bytes:
    """A real, complete 16-bit grayscale PNG of zeros (compresses to a few hundred kB)."""
    z = zlib.compressobj(9)
    row = bytes(1 + 2 * width)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return png_header_only(width, height, 16, 0, body)


def jpeg_declaring(width: int, height: int) -> bytes:
    """The start of a JPEG whose frame header declares width x height."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    qt = b"\x00" + bytes(range(1, 65))
    return (b"\xff\xd8" + b"\xff\xdb" + struct.pack(">H", len(qt) + 2) + qt
            + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\x00" * 512)


def junk_connections(port: int, n: int, payload: bytes = b"GET / HTTP/1.1\r\n\r\n") -> list[socket.socket]:
    """n TCP connections to the server that say something that is not HTTP/2 (or nothing)."""
    socks = []
    for i in range(n):
        s = socket.create_connection((HOST, port), timeout=5)
        if i % 2:
            try:
                s.sendall(payload)
            except OSError:
                pass
        socks.append(s)
    return socks



def hold_open(address: str, n_uploads: int, n_reflection: int, metadata=None, seconds: float = 30.0):
    """Start n header-only uploads and n idle reflection streams (no token); returns
    (held, outcomes, release): `held` a clients.FanOut to join. Each call waits at most `seconds`."""
    release = threading.Event()
    outcomes: list[str] = []
    lock = threading.Lock()
    meta = raw_meta(64, 43)

    def upload():
        def requests():
            yield header(meta, [raw_meta(64, 64)]).SerializeToString()
            release.wait(seconds)
        code, _ = raw_call(address, requests(), metadata, timeout=seconds)
        with lock:
            outcomes.append(f"upload {code.name}")

    def reflection():
        with grpc.insecure_channel(address) as channel:
            call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                         request_serializer=None, response_deserializer=None)

            def requests():
                release.wait(seconds)
                return
                yield
            try:
                for _ in call(requests(), timeout=seconds):
                    pass
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
        with lock:
            outcomes.append(f"reflection {code.name}")

    held = FanOut(lambda call: call(), [upload] * n_uploads + [reflection] * n_reflection, daemon=True)
    return held, outcomes, release
