"""A hostile client against a real `style-transfer serve` process on 127.0.0.1
with seeded random weights and the default limits: every attack gets its status
code, and afterwards health says SERVING and a valid small job succeeds. Also the
load target (held uploads, idle reflection streams, junk connections), memory,
token variants, shutdown, and a fuzzer over the request stream (short here; 10,000
requests with -m slow). Loopback only; every loop bounded in count and time."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from styleserver.service import admission
from styleserver.client import Client, RemoteError
from styletransfer.v1 import style_transfer_pb2 as pb

from clients import FanOut
from hostile import (FAST, chunk, header, health, hold_open, jpeg_declaring, junk_connections, png_16bit_gray,
                     png_header_only, raw_call, raw_meta, small_job)
from serve_process import ServeProcess

MB = 1 << 20
INV, RES, DL = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.fixture(scope="module")
def server(weights_file):
    proc = ServeProcess.serving(weights_file)
    small_job(proc.address, *_warm_up_images())  # the first job's one-time allocations are not an attack's
    yield proc
    peak = proc.peak_mb()
    print(f"\nhostile suite: server peak resident memory {peak:.0f} MB")
    assert proc.stop() == 0
    assert peak < 3 * 1024
    assert not [line for line in proc.log if "Traceback" in line], "\n".join(proc.log)


def _warm_up_images():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (43, 64, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.fixture
def well(server, content, style):
    """Run the attack, then check the server is well and that its memory grew < 256 MB."""
    rss0 = server.rss_mb()
    yield server
    assert health(server.address) == "SERVING"
    small_job(server.address, content, style)
    assert server.rss_mb() - rss0 < 256, f"resident memory grew {server.rss_mb() - rss0:.0f} MB"


def header_then_wait(first: pb.StylizeRequest, done: threading.Event, then=()):
    """The header (and `then`), then nothing until the call has ended (at most 20 s)."""
    yield first
    yield from then
    done.wait(20)


def refused_before_bytes(address: str, first: pb.StylizeRequest) -> tuple[grpc.StatusCode, str, float]:
    done = threading.Event()
    t0 = time.monotonic()
    code, details = raw_call(address, header_then_wait(first, done), timeout=25)
    done.set()
    return code, details, time.monotonic() - t0


# --- refused from the header alone, before any image byte -------------------------------------------


def _header_cases():
    png = pb.IMAGE_FORMAT_PNG
    tiny = raw_meta(1, 1)
    return [
        ("style worked at 1536^2 (576 bytes)", header(raw_meta(192, 1), [tiny], pb.Params(style_scale=8, size=512)),
         RES, "header.params.style_scale"),
        ("1x16384 at size 16384, style_scale 8", header(raw_meta(16384, 1), [tiny],
                                                        pb.Params(size=16384, style_scale=8)),
         RES, "header.params.style_scale"),
        ("content worked beyond max_work_pixels", header(raw_meta(6000, 6000), [tiny], pb.Params(size=6000)),
         RES, "header.params.size"),
        ("400 styles", header(raw_meta(8, 8), [tiny] * 400), RES, "header.styles"),
        ("16-bit 7999^2 PNG with steps 0", header(pb.ImageMeta(format=png, size_bytes=124_000), [tiny],
                                                  pb.Params(steps=0)), INV, "header.params.steps"),
        ("result_format 99", header(raw_meta(8, 8), [tiny], result_format=99), INV, "header.result_format"),
        ("RGBA content, JPEG result", header(raw_meta(8, 8, 4), [tiny], result_format=pb.IMAGE_FORMAT_JPEG),
         INV, "header.result_format"),
        ("unknown image format", header(pb.ImageMeta(format=9, size_bytes=10), [tiny]), INV,
         "header.content.format"),
        ("six 64 MiB files", header(pb.ImageMeta(format=png, size_bytes=64 * MB),
                                    [pb.ImageMeta(format=png, size_bytes=64 * MB)] * 5), RES, "max_request_bytes"),
        ("raw content over max_pixels", header(raw_meta(8000, 8001), [tiny]), RES, "header.content.width"),
        ("encoded content declared over max_pixels",
         header(pb.ImageMeta(format=png, size_bytes=100, width=30000, height=30000), [tiny]), RES,
         "header.content.width"),
        ("unknown preset", pb.StylizeRequest(header=pb.Header(preset="turbo", content=raw_meta(8, 8), styles=[tiny])),
         INV, "header.preset"),
        ("style_blend count", header(raw_meta(8, 8), [tiny], pb.Params(style_blend=[1, 2])), INV,
         "header.params.style_blend"),
        ("zero channels", header(pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=2, height=2), [tiny]), INV,
         "header.content.channels"),
        ("no style", pb.StylizeRequest(header=pb.Header(content=raw_meta(8, 8))), INV, "header.styles"),
    ]


@pytest.mark.parametrize("name,first,code,words", _header_cases(), ids=[c[0] for c in _header_cases()])
def test_header_problems_are_refused_before_any_image_byte(well, name, first, code, words):
    got, details, seconds = refused_before_bytes(well.address, first)
    assert (got, words in details) == (code, True), (name, got, details)
    assert seconds < 2  # no image byte was sent: the refusal came from the header alone


# --- refused from a file's first bytes ------------------------------------------------------------------


def _file_cases():
    bmp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bmp, "BMP")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n" + b"0 0 moveto\n" * 20
    return [
        ("PNG bomb 30000^2", png_header_only(30000, 30000, idat=b"\x78\x9c" + b"\x00" * 60_000), RES),
        ("JPEG declaring 65000^2", jpeg_declaring(65000, 65000), RES),
        ("BMP labelled PNG", bmp.getvalue(), INV),
        ("EPS labelled PNG", eps, INV),
        ("truncated PNG", png_header_only(64, 64, idat=b"\x78\x9c\x00"), INV),
    ]


@pytest.mark.parametrize("name,data,code", _file_cases(), ids=[c[0] for c in _file_cases()])
def test_files_are_judged_by_their_header_before_decoding(well, name, data, code):
    meta = pb.ImageMeta(format=pb.IMAGE_FORMAT_PNG if not data.startswith(b"\xff\xd8") else pb.IMAGE_FORMAT_JPEG,
                        size_bytes=len(data))
    requests = [header(meta, [raw_meta(1, 1)]), chunk(0, 0, data), chunk(1, 0, b"\0\0\0")]
    got, details = raw_call(well.address, requests)
    assert got == code and "header.content" in details, (name, got, details)


def test_big_garbage_files_are_refused_at_their_first_chunk(well):
    garbage = os.urandom(MB)
    meta = pb.ImageMeta(format=pb.IMAGE_FORMAT_PNG, size_bytes=64 * MB)
    sent = [0]

    def requests():
        yield header(raw_meta(1, 1), [meta] * 4)
        yield chunk(0, 0, b"\0\0\0")
        for i in range(64):
            sent[0] += 1
            yield chunk(1, i * MB, garbage)

    got, details = raw_call(well.address, requests())
    assert got == INV and "header.styles[0]: not a PNG file" in details, details
    assert sent[0] < 32  # refused long before the 256 MiB were sent


def test_16bit_png_is_decoded_to_8bit_without_float_copies(well, content, style):
    data = png_16bit_gray(2000, 2000)  # 4 MP, 16 bit
    rss0 = well.rss_mb()
    with Client(well.address) as client:
        result = list(client.stylize(data, [style], FAST.replace(steps=1)))[-1]
    assert result.image.shape == (2000, 2000, 1)
    assert well.rss_mb() - rss0 < 256


# --- the transport and the stream ----------------------------------------------------------------------


def test_garbage_transport_and_junk_connections(well):
    socks = junk_connections(well.port, 50, os.urandom(4096))
    for s in socks:
        s.close()
    assert health(well.address) == "SERVING"


def test_malformed_protobuf_is_invalid_argument(well):
    for junk in (b"\xff\xff\xff\xff", b"\x0a\x05abc", os.urandom(64)):
        got, details = raw_call(well.address, [junk])
        assert got == INV, (junk, got, details)


def test_oversized_message_is_resource_exhausted(well):
    got, _ = raw_call(well.address, [header(raw_meta(2048, 2048), [raw_meta(1, 1)]), chunk(0, 0, bytes(8 * MB))])
    assert got == RES


def _chunk_cases():
    h = header(raw_meta(4, 4), [raw_meta(2, 2)])
    return [
        ("chunk before header", [chunk(0, 0, b"x")], "header"),
        ("header twice", [h, h], "sent twice"),
        ("out of order", [h, chunk(0, 8, b"x" * 8)], "out of order"),
        ("beyond the image", [h, chunk(0, 0, b"x" * 60)], "more bytes than size_bytes"),
        ("beyond the last image", [h, chunk(0, 0, b"x" * 48), chunk(1, 0, b"x" * 12), chunk(2, 0, b"x")],
         "more data than the header announced"),
        ("truncated", [h, chunk(0, 0, b"x" * 40)], "truncated"),
        ("empty stream", [], "header"),
    ]


@pytest.mark.parametrize("name,requests,words", _chunk_cases(), ids=[c[0] for c in _chunk_cases()])
def test_bad_chunks(well, name, requests, words):
    got, details = raw_call(well.address, requests)
    assert got == INV and words in details, (name, got, details)


def test_stalled_and_slow_uploads_are_cut_off(well):
    t0 = time.monotonic()
    done = threading.Event()
    got, details = raw_call(well.address, header_then_wait(header(raw_meta(64, 43), [raw_meta(8, 8)]), done))
    done.set()
    assert got == DL and "upload" in details and time.monotonic() - t0 < 3, details

    def drip():
        yield header(raw_meta(256, 256), [raw_meta(8, 8)])
        for i in range(40):
            yield chunk(0, i * 100, b"x" * 100)
            time.sleep(0.1)

    got, details = raw_call(well.address, drip())
    assert got == DL and "slower than the minimum" in details, details


def test_flood_beyond_the_queue(well, content, style):
    long_job = Client(well.address).stylize(content, [style], FAST.replace(steps=100_000))
    next(e for e in long_job if type(e).__name__ == "Progress")
    codes: list = []

    def job(_):
        try:
            small_job(well.address, content, style)
            codes.append("OK")
        except RemoteError as e:
            codes.append(e.code.name)

    jobs = FanOut(job, 12, gap=0.02)
    time.sleep(1)
    long_job.close()
    jobs.join(60, check=True)
    assert codes.count("RESOURCE_EXHAUSTED") >= 4 - 1 and set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes


def test_disconnect_storm_leaks_nothing_and_is_logged_as_cancelled(well, content, style):
    threads0 = well.status("Threads")
    log0 = len(well.log)
    done = threading.Event()

    for i in range(40):  # cancelled mid-upload
        with grpc.insecure_channel(well.address) as channel:
            call = channel.stream_stream("/styletransfer.v1.StyleTransfer/Stylize",
                                         request_serializer=pb.StylizeRequest.SerializeToString,
                                         response_deserializer=pb.StylizeEvent.FromString)
            it = call(header_then_wait(header(raw_meta(64, 43), [raw_meta(8, 8)]), done,
                                       [chunk(0, 0, b"x" * 100)]))
            time.sleep(0.02)
            it.cancel()
    for i in range(3):  # cancelled mid-job
        events = Client(well.address).stylize(content, [style], FAST.replace(steps=100_000))
        next(e for e in events if type(e).__name__ == "Progress")
        events.close()
    done.set()
    deadline = time.monotonic() + 10
    while well.status("Threads") > threads0 + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert well.status("Threads") <= threads0 + 2

    def cancelled(when: str) -> int:
        return sum("outcome=cancelled by client" in line and when in line for line in well.log[log0:])

    deadline = time.monotonic() + 10  # a loaded machine logs the last ones a little later
    while (cancelled("during upload"), cancelled("while running")) != (40, 3) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancelled("during upload") == 40, "\n".join(well.log[-50:])
    assert cancelled("while running") == 3, "\n".join(well.log[-50:])


def test_info_reports_the_limits(server):
    with Client(server.address) as client:
        limits = client.info()["limits"]
    assert int(limits["max_styles"]) == 8 and int(limits["max_work_pixels"]) == 25_000_000
    assert float(limits["upload_seconds"]) > 0 and int(limits["max_request_bytes"]) > 0
    assert int(limits["min_upload_bytes_per_second"]) > 0 and int(limits["max_calls"]) > 0


# --- the load target ---------------------------------------------------------------------------------


def test_held_uploads_reflection_streams_and_junk_connections_do_not_hold_the_server(server, content, style):
    idle = min(small_job(server.address, content, style) for _ in range(3))
    held, outcomes, release = hold_open(server.address, 100, 100)
    socks = junk_connections(server.port, 1000)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        status = health(server.address, timeout=5)
        health_s = time.monotonic() - t0
        loaded = small_job(server.address, content, style)
    finally:
        release.set()
        for s in socks:
            s.close()
        held.join(30, check=True)
    print(f"\nunder 100 header-only uploads, 100 idle reflection streams, 1000 junk connections: "
          f"health {health_s * 1000:.0f} ms ({status}); small job {loaded:.2f} s (idle {idle:.2f} s)")
    assert status == "SERVING" and health_s < 1
    assert loaded < max(2 * idle, idle + 0.5)
    from collections import Counter

    counts = Counter(outcomes)
    print(f"held calls ended as: {dict(counts)}")
    # Uploads: cut off (DEADLINE_EXCEEDED), or truncated when released (INVALID_ARGUMENT), or streams beyond
    # 64 on one connection refused (UNAVAILABLE, RST_STREAM REFUSED_STREAM); reflection: 4 slots, the rest refused.
    assert set(o.split()[1] for o in outcomes) <= {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "OK", "INVALID_ARGUMENT",
                                                   "UNAVAILABLE"}, counts


# --- tokens, reflection ---------------------------------------------------------------------------------


def test_token_variants_and_reflection_needs_the_token(start_server, content, style):
    running = start_server(token="s3cret")
    address = f"127.0.0.1:{running.port}"
    for value in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret"):
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary("/styletransfer.v1.StyleTransfer/GetInfo",
                                       request_serializer=None, response_deserializer=None)
            call(b"", metadata=[("authorization", value)], timeout=5)
    for value in (None, "Bearer wrong", "Basic s3cret", "s3cret", "Bearer", "Bearer s3cret extra"):
        metadata = [("authorization", value)] if value else None
        got, _ = raw_call(address, [header(raw_meta(1, 1), [raw_meta(1, 1)])], metadata)
        assert got == grpc.StatusCode.UNAUTHENTICATED, value
    held, outcomes, release = hold_open(address, 16, 16)
    time.sleep(0.5)
    assert health(address) == "SERVING"
    small_job(address, content, style, token="s3cret")
    release.set()
    held.join(30, check=True)
    assert outcomes.count("reflection UNAUTHENTICATED") == 16
    running.shutdown(0)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_v1_and_v1alpha(start_server, version):
    from grpc_reflection.v1alpha import reflection_pb2 as r

    running = start_server()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                     request_serializer=r.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=r.ServerReflectionResponse.FromString)
        reply = next(iter(call(iter([r.ServerReflectionRequest(list_services="")]), timeout=5)))
    names = [s.name for s in reply.list_services_response.service]
    assert "styletransfer.v1.StyleTransfer" in names
    running.shutdown(0)


@pytest.mark.parametrize("preset_name, width, height", [("default", 600, 400), ("seed", 600, 400), ("seed", 90, 60)])
def test_admission_plans_the_engines_working_sizes(engine, preset_name, width, height):
    """The server refuses by the sizes the engine will really use (stylecore.sizes)."""
    from styleserver.service.limits import Limits

    from stylecore import preset

    request = pb.Header(preset=preset_name, content=raw_meta(width, height), styles=[raw_meta(50, 70)])
    plan = admission.check(request, Limits())
    job = engine.prepare(np.zeros((height, width, 3), np.uint8), [np.zeros((70, 50, 3), np.uint8)], preset(preset_name))
    assert [level.size for level in plan.levels] == [level.size for level in job.levels]


# --- shutdown ----------------------------------------------------------------------------------------


def test_not_serving_during_grace_and_a_second_sigterm_exits_at_once(weights_file, content, style):
    proc = ServeProcess.serving(weights_file, "--grace", "30")
    try:
        events = Client(proc.address).stylize(content, [style], FAST.replace(steps=100_000))
        next(e for e in events if type(e).__name__ == "Progress")
        proc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while health(proc.address) != "NOT_SERVING" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health(proc.address) == "NOT_SERVING"
        with pytest.raises(RemoteError) as err:
            small_job(proc.address, content, style)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        t0 = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(5) == 128 + signal.SIGTERM and time.monotonic() - t0 < 3
    finally:
        proc.proc.kill()
        proc.proc.wait(10)


# --- fuzzing --------------------------------------------------------------------------------------------


def _fuzz(start_server, examples: int):
    from fuzz import run_fuzzer

    running = start_server(max_pixels=1_000_000)
    report = run_fuzzer(f"127.0.0.1:{running.port}", examples)
    print(f"\nfuzzer: {report}")
    assert report["crashes"] == 0 and report["unknown_or_internal"] == 0, report
    assert report["leaked_threads"] == 0, report
    assert health(f"127.0.0.1:{running.port}") == "SERVING"
    running.shutdown(0)


def test_fuzz_the_request_stream_briefly(start_server):
    _fuzz(start_server, 150)


@pytest.mark.slow
def test_fuzz_the_request_stream_10000(start_server):
    _fuzz(start_server, 10_000)
