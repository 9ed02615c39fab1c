"""A fuzzer over the Stylize request stream (hypothesis): headers with every field
drawn from valid, edge and absurd values, images raw or encoded (real small files,
truncated ones, random bytes), chunked right or wrong, and raw garbage messages.
Each generated stream is one call; the figures say how the server answered.
Used by tests/test_hostile.py (150 requests by default, 10,000 with -m slow)."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter

import grpc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from styletransfer.v1 import style_transfer_pb2 as pb

_FORMATS = {"PNG": pb.IMAGE_FORMAT_PNG, "JPEG": pb.IMAGE_FORMAT_JPEG, "WEBP": pb.IMAGE_FORMAT_WEBP,
            "TIFF": pb.IMAGE_FORMAT_TIFF}


def _files() -> list[tuple[int, bytes]]:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    out = []
    for name, fmt in _FORMATS.items():
        b = io.BytesIO()
        Image.fromarray(rgb).save(b, name)
        out.append((fmt, b.getvalue()))
    b = io.BytesIO()
    Image.fromarray(np.dstack([rgb, rgb[:, :, :1]]), "RGBA").save(b, "PNG")
    out.append((pb.IMAGE_FORMAT_PNG, b.getvalue()))
    return out


FILES = _files()
U32 = 2**32 - 1
words = st.sampled_from(["lbfgs", "adam", "content", "noise", "gray", "max", "avg", "none", "luminance", "match",
                         "auto", "fp32", "bf16", "cuda", "", "\x00", "é" * 3])
floats = st.sampled_from([0.0, 1e-9, 0.003, 0.5, 1.0, 8.0, 9.0, 1e6, 1e308, -1.0, float("nan"), float("inf")])


@st.composite
def params(draw) -> pb.Params:
    p = pb.Params()
    ints = {"size": [1, 16, 32, 48, 64, 16384, 20000, U32], "scales": [0, 1, 2, 3, 9, U32],
            "min_scale": [0, 16, 32, 64, U32], "steps": [0, 1, 2, 100_001, U32],
            "coarse_steps": [0, 1, 2, U32], "clamp": [0, 1, 2], "seed": [0, 1, 2**64 - 1]}
    for name, values in ints.items():
        if draw(st.booleans()):
            setattr(p, name, draw(st.sampled_from(values)))
    for name in ("lr", "average", "content_weight", "style_weight", "tv_weight", "style_scale"):
        if draw(st.booleans()):
            setattr(p, name, draw(floats))
    for name in ("optimizer", "init", "pooling", "preserve_colors", "precision"):
        if draw(st.integers(0, 3)) == 0:
            setattr(p, name, draw(words))
    if draw(st.integers(0, 3)) == 0:
        p.style_layer_weights.extend(draw(st.lists(floats, max_size=6)))
    if draw(st.integers(0, 3)) == 0:
        p.style_blend.extend(draw(st.lists(floats, max_size=4)))
    if p.steps in (1, 2) or not p.HasField("steps"):  # a job that passes must stay short
        p.steps = draw(st.sampled_from([1, 2]))
        p.coarse_steps = draw(st.sampled_from([0, 1]))
        p.size = min(p.size, 64) if p.HasField("size") and p.size <= 64 else 48
    return p


@st.composite
def image(draw) -> tuple[pb.ImageMeta, bytes]:
    kind = draw(st.integers(0, 4))
    if kind <= 1:  # raw
        w, h = draw(st.integers(0, 40)), draw(st.integers(0, 40))
        c = draw(st.sampled_from([0, 1, 2, 3, 4, 5]))
        data = draw(st.binary(min_size=w * h * c, max_size=w * h * c)) if w * h * c <= 4800 else b""
        size = w * h * c if draw(st.integers(0, 5)) else draw(st.sampled_from([0, 1, len(data) + 1, U32]))
        fmt = draw(st.sampled_from([pb.IMAGE_FORMAT_RAW, pb.IMAGE_FORMAT_UNSPECIFIED]))
        return pb.ImageMeta(format=fmt, width=w, height=h, channels=c, size_bytes=size), data
    if kind <= 3:  # a real small file, maybe mislabelled, truncated or with wrong declared sizes
        fmt, data = draw(st.sampled_from(FILES))
        if draw(st.integers(0, 4)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
        if draw(st.integers(0, 4)) == 0:
            fmt = draw(st.sampled_from(list(_FORMATS.values()) + [0, 1, 6, 99]))
        meta = pb.ImageMeta(format=fmt, size_bytes=len(data))
        if draw(st.integers(0, 4)) == 0:
            meta.width, meta.height = draw(st.sampled_from([(8, 6), (6, 8), (1, 1), (0, 5), (70000, 70000)]))
        return meta, data
    data = draw(st.binary(max_size=300))  # random bytes under a format name
    return pb.ImageMeta(format=draw(st.sampled_from([0, 1, 2, 3, 4, 5, 7])), size_bytes=len(data)), data


@st.composite
def streams(draw) -> list[bytes]:
    images = draw(st.lists(image(), min_size=1, max_size=4))
    near_valid = draw(st.integers(0, 2)) == 0  # a valid job, then maybe one mutation below
    if near_valid:
        rgb = bytes(range(256)) * 6  # 32x16 RGB
        images = [(pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=32, height=16, channels=3, size_bytes=1536), rgb)]
        images += [(pb.ImageMeta(format=f, size_bytes=len(d)), d) for f, d in draw(st.lists(
            st.sampled_from(FILES), min_size=1, max_size=2))]
    h = pb.Header(preset=draw(st.sampled_from(["", "default", "draft", "seed", "high", "turbo"])),
                  params=pb.Params(size=32, scales=1, steps=1) if near_valid else draw(params()), preview_every=draw(st.sampled_from([0, 1, U32])),
                  preview_max_side=draw(st.sampled_from([0, 8, 5000, U32])),
                  result_format=draw(st.sampled_from([0, 1, 2, 3, 4, 5] + ([] if near_valid else [6, 99]))),
                  content=images[0][0], styles=[m for m, _ in images[1:]])
    messages = [pb.StylizeRequest(header=h)]
    size = draw(st.sampled_from([1, 7, 100, 4096]))
    for index, (_, data) in enumerate(images):
        for offset in range(0, len(data), size):
            messages.append(pb.StylizeRequest(chunk=pb.ImageChunk(image=index, offset=offset,
                                                                  data=data[offset: offset + size])))
    raw = [m.SerializeToString() for m in messages[:400]]
    mutation = draw(st.integers(0, 9))
    if mutation == 1 and len(raw) > 1:
        raw.pop(draw(st.integers(0, len(raw) - 1)))
    elif mutation == 2 and len(raw) > 2:
        i, j = draw(st.integers(0, len(raw) - 1)), draw(st.integers(0, len(raw) - 1))
        raw[i], raw[j] = raw[j], raw[i]
    elif mutation == 3:
        raw.insert(draw(st.integers(0, len(raw))), draw(st.binary(max_size=64)))  # garbage message
    elif mutation == 4:
        raw.append(raw[-1])  # a duplicate
    elif mutation == 5 and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] = raw[i][: draw(st.integers(0, len(raw[i])))]  # a cut message
    elif mutation == 6:
        raw = draw(st.lists(st.binary(max_size=100), max_size=5))  # nothing but garbage
    return raw


def _other_threads() -> Counter:
    return Counter(t.name.split("_")[0].split("-")[0] for t in threading.enumerate()
                   if not t.name.startswith("grpc-worker"))


def run_fuzzer(address: str, examples: int, timeout: float = 20.0) -> dict:
    codes: Counter = Counter()
    bad: list[str] = []
    crashes = 0
    threads0 = _other_threads()
    t0 = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream("/styletransfer.v1.StyleTransfer/Stylize", request_serializer=None,
                                     response_deserializer=None)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(streams())
        def one(raw: list[bytes]) -> None:
            nonlocal crashes
            try:
                for _ in call(iter(raw), timeout=timeout):
                    pass
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
                if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) and len(bad) < 5:
                    bad.append(f"{code.name}: {e.details()}")
                if code == grpc.StatusCode.UNAVAILABLE:
                    crashes += 1
            codes[code.name] += 1

        one()
    deadline = time.monotonic() + 10
    while _other_threads() - threads0 and time.monotonic() < deadline:
        time.sleep(0.1)
    leaked = _other_threads() - threads0
    return {"requests": sum(codes.values()), "seconds": round(time.monotonic() - t0, 1), "codes": dict(codes),
            "crashes": crashes, "unknown_or_internal": codes["UNKNOWN"] + codes["INTERNAL"], "examples": bad,
            "leaked_threads": sum(leaked.values()), "leaked": dict(leaked)}
