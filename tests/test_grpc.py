"""The gRPC service, in process on an ephemeral loopback port, with the seeded
random VGG19: round trips, events, queueing, cancellation, bad input, auth,
health, reflection and big images."""

from __future__ import annotations

import io
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from stylecore import Preview, Progress, Result, Started, preset
from styleserver import convert
from styleserver.client import Client, RemoteError, ServerUnavailable
from styletransfer.v1.wire import Queued
from styleserver.service.server import ConfigError, start
from styleserver.service.model import Model
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import style_transfer_pb2_grpc as pb_grpc
from styletransfer.v1 import wire

from clients import concurrent_stylize

FAST = preset("default").replace(size=48, scales=1, steps=3)


@pytest.fixture(scope="module")
def server(start_server):
    return start_server(max_queue=4, max_pixels=20_000_000)


def events_of(client, content, styles, params=FAST, **kw):
    return list(client.stylize(content, styles, params, **kw))


def test_raw_rgba_round_trip_keeps_size_and_alpha(client, content, style):
    alpha = np.random.default_rng(0).integers(0, 256, content.shape[:2], dtype=np.uint8)
    rgba = np.dstack([content, alpha])
    result = events_of(client, rgba, [style])[-1]
    assert isinstance(result, Result)
    assert result.image.shape == rgba.shape
    assert np.array_equal(result.image[:, :, 3], alpha)


def test_png_in_png_out(client, content, style):
    def png(a):
        b = io.BytesIO()
        Image.fromarray(a).save(b, "PNG")
        return b.getvalue()

    gray_alpha = np.dstack([content.mean(2).astype(np.uint8), np.full(content.shape[:2], 77, np.uint8)])
    result = events_of(client, png(gray_alpha), [png(style)], result_format=pb.IMAGE_FORMAT_PNG)[-1]
    assert result.image.shape == gray_alpha.shape
    assert np.array_equal(result.image[:, :, 1], gray_alpha[:, :, 1])


def test_events_are_ordered_with_previews_at_the_interval(client, content, style):
    params = FAST.replace(size=64, scales=2, min_scale=32, steps=4, coarse_steps=4)
    events = events_of(client, content, [style], params, preview_every=2, preview_max_side=40)
    assert isinstance(events[0], Started) and isinstance(events[-1], Result)
    progress = [(e.scale, e.step) for e in events if isinstance(e, Progress)]
    assert progress == [(s, i) for s in (1, 2) for i in range(1, 5)]
    previews = [e for e in events if isinstance(e, Preview)]
    assert [(p.scale, p.step) for p in previews] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert max(previews[-1].image.shape[:2]) == 40
    losses = [e.losses["total"] for e in events if isinstance(e, Progress)]
    assert all(np.isfinite(losses))


def test_info_reports_model_limits_and_presets(client):
    info = client.info()
    assert info["model_verified"] is False and "random" in info["model"]
    assert int(info["limits"]["max_pixels"]) == 20_000_000 and info["limits"]["max_queue"] == 4
    names = [p["name"] for p in info["presets"]]
    assert names == ["default", "draft", "high", "full", "seed"]
    seed = next(p for p in info["presets"] if p["name"] == "seed")["params"]
    assert int(seed["steps"]) == 3000 and seed["optimizer"] == "adam"


def _long_job(client, content, style, started: threading.Event, log: list):
    try:
        for e in client.stylize(content, [style], FAST.replace(steps=100_000)):
            log.append(e)
            if isinstance(e, Progress):
                started.set()
    except RemoteError as e:
        log.append(e)


def test_cancel_mid_job_frees_the_worker_for_the_queued_job(server, content, style):
    a, b = Client(f"127.0.0.1:{server.port}"), Client(f"127.0.0.1:{server.port}")
    events_a = a.stylize(content, [style], FAST.replace(steps=100_000))
    for e in events_a:
        if isinstance(e, Progress):
            break
    got_b: list = []
    thread = threading.Thread(target=lambda: got_b.extend(b.stylize(content, [style], FAST)))
    thread.start()
    deadline = time.monotonic() + 10
    while not any(isinstance(e, Queued) for e in got_b) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got_b and got_b[0] == Queued(position=1)
    t_cancel = time.monotonic()
    events_a.close()  # the client quits: the call is cancelled
    thread.join(30)
    assert isinstance(got_b[-1], Result)
    assert time.monotonic() - t_cancel < 10  # A stopped within a step, B ran at once
    a.close(), b.close()


def test_four_concurrent_clients_share_one_worker(server, content, style):
    # 40 steps (about half a second): each job outlasts the 50 ms between arrivals.
    results = concurrent_stylize(f"127.0.0.1:{server.port}", content, style, FAST.replace(steps=40), 4)
    assert all(isinstance(r[-1], Result) for r in results)
    first_positions = sorted(next((e.position for e in r if isinstance(e, Queued)), 0) for r in results)
    assert first_positions == [0, 1, 2, 3]  # one ran at once, the others queued behind it in turn
    for r in results:
        positions = [e.position for e in r if isinstance(e, Queued)]
        assert positions == sorted(positions, reverse=True) and (not positions or positions[-1] == 1)


def test_queue_limit_gives_resource_exhausted(start_server, content, style):
    running = start_server(max_queue=0)
    try:
        a, b = Client(f"127.0.0.1:{running.port}"), Client(f"127.0.0.1:{running.port}")
        events_a = a.stylize(content, [style], FAST.replace(steps=100_000))
        next(e for e in events_a if isinstance(e, Progress))
        with pytest.raises(RemoteError) as err:
            events_of(b, content, [style])
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in err.value.details
        events_a.close()
    finally:
        running.shutdown(0)


# --- bad input --------------------------------------------------------------------------------


def raw_header(content_image, style_images, **changes) -> pb.Header:
    h = pb.Header(preset="default", params=convert.params_to_proto(FAST, preset("default")),
                  content=convert.image_meta(content_image), styles=[convert.image_meta(s) for s in style_images])
    for k, v in changes.items():
        getattr(h, k).CopyFrom(v) if k == "content" else h.params.MergeFrom(v) if k == "params" else setattr(h, k, v)
    return h


def call_raw(server, requests):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        return list(stub.Stylize(iter(requests)))


def _bad_cases(content, style):
    c_bytes, s_bytes = content.tobytes(), style.tobytes()
    good = raw_header(content, [style])
    meta_c = convert.image_meta(content)

    def stream(header, images=(c_bytes, s_bytes)):
        return list(wire.request_stream(header, images))

    zero = pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=0, height=5, channels=3, size_bytes=0)
    mismatch = pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=64, height=43, channels=3, size_bytes=100)
    corrupt = pb.ImageMeta(format=pb.IMAGE_FORMAT_PNG, size_bytes=50)
    huge = pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=5000, height=5000, channels=4, size_bytes=5000 * 5000 * 4)
    big = np.zeros((700, 700, 3), np.uint8)  # 1.4 MiB: one chunk of it is over 1 MiB, under gRPC's 4 MiB
    swapped = stream(good)
    swapped[1], swapped[-1] = swapped[-1], swapped[1]
    return [
        ("no header", [pb.StylizeRequest(chunk=pb.ImageChunk(image=0, offset=0, data=b"x"))],
         grpc.StatusCode.INVALID_ARGUMENT, "first message must be the header"),
        ("no style", stream(pb.Header(content=meta_c), (c_bytes,)), grpc.StatusCode.INVALID_ARGUMENT,
         "at least one style image"),
        ("zero size", stream(raw_header(content, [style], content=zero), (b"", s_bytes)),
         grpc.StatusCode.INVALID_ARGUMENT, "no pixels"),
        ("size mismatch", stream(raw_header(content, [style], content=mismatch), (b"x" * 100, s_bytes)),
         grpc.StatusCode.INVALID_ARGUMENT, "does not match width*height*channels"),
        ("truncated", stream(good, (c_bytes[:-10], s_bytes)), grpc.StatusCode.INVALID_ARGUMENT,
         "content: truncated: got 8246 of 8256 bytes"),
        ("missing bytes at end", stream(good, (c_bytes, s_bytes[:-10])), grpc.StatusCode.INVALID_ARGUMENT,
         "truncated: got"),
        ("corrupt png", stream(raw_header(content, [style], content=corrupt), (b"\x89PNG" + b"\0" * 46, s_bytes)),
         grpc.StatusCode.INVALID_ARGUMENT, "not an image"),
        ("chunks out of order", swapped, grpc.StatusCode.INVALID_ARGUMENT, "out of order"),
        ("unknown preset", stream(raw_header(content, [style], preset="turbo")), grpc.StatusCode.INVALID_ARGUMENT,
         "unknown preset 'turbo'"),
        ("nan weight", stream(raw_header(content, [style], params=pb.Params(style_weight=float("nan")))),
         grpc.StatusCode.INVALID_ARGUMENT, "style_weight: must be finite"),
        ("negative weight", stream(raw_header(content, [style], params=pb.Params(content_weight=-2))),
         grpc.StatusCode.INVALID_ARGUMENT, "content_weight: must not be negative"),
        ("zero steps", stream(raw_header(content, [style], params=pb.Params(steps=0))),
         grpc.StatusCode.INVALID_ARGUMENT, "steps: must be between"),
        ("too many pixels", stream(raw_header(content, [style], content=huge), (b"", s_bytes))[:1],
         grpc.StatusCode.RESOURCE_EXHAUSTED, "more than the limit"),
        ("a chunk over chunk_bytes", list(wire.request_stream(raw_header(big, [style]), (big.tobytes(), s_bytes),
                                                                 2 << 20)),
         grpc.StatusCode.INVALID_ARGUMENT, "more than chunk_bytes = 1,048,576"),
    ]


def test_every_bad_input_gets_its_status_and_the_server_stays_healthy(server, client, content, style):
    for name, requests, code, words in _bad_cases(content, style):
        with pytest.raises(grpc.RpcError) as err:
            call_raw(server, requests)
        assert err.value.code() == code, name
        assert words in err.value.details(), (name, err.value.details())
        # ... and the next valid call succeeds.
    assert isinstance(events_of(client, content, [style])[-1], Result)


def test_big_rgba_image_travels_in_chunks(client, style):
    rng = np.random.default_rng(2)
    big = rng.integers(0, 256, (4096, 4096, 4), dtype=np.uint8)
    result = events_of(client, big, [style], FAST.replace(size=32, steps=1))[-1]
    assert result.image.shape == big.shape
    assert np.array_equal(result.image[:, :, 3], big[:, :, 3])


# --- auth, health, reflection, availability ------------------------------------------------------


def test_token_accepted_and_refused(start_server, content, style):
    running = start_server(token="s3cret")
    try:
        address = f"127.0.0.1:{running.port}"
        with Client(address, token="s3cret") as good:
            assert isinstance(events_of(good, content, [style])[-1], Result)
            assert good.info()["device"] == "cpu"
        for token in (None, "wrong"):
            with Client(address, token=token) as bad, pytest.raises(RemoteError) as err:
                bad.info()
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(address) as channel:  # probes need no token
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.shutdown(0)


def test_network_address_without_token_is_refused():
    with pytest.raises(ConfigError, match="--token-file"):
        start(Model(), host="0.0.0.0", port=0)


def test_health_is_serving_only_once_the_model_is_loaded(engine, content, style):
    model = Model()
    running = start(model, port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            req = health_pb2.HealthCheckRequest(service="styletransfer.v1.StyleTransfer")
            assert health.Check(req).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with Client(f"127.0.0.1:{running.port}") as c, pytest.raises(RemoteError, match="loading"):
                events_of(c, content, [style])
            model.set(engine, "m", "x", False, "cpu", "float32")
            running.set_serving(True)
            assert health.Check(req).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        running.shutdown(0)


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "styletransfer.v1.StyleTransfer" in services and "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1.ServerReflection" in services  # served beside v1alpha: listed too


def test_server_down_is_one_clear_error(content, style):
    with Client("127.0.0.1:9", connect_timeout=1) as c, pytest.raises(ServerUnavailable) as err:
        events_of(c, content, [style])
    assert str(err.value) == ("no style-transfer server answers at 127.0.0.1:9; "
                              "start one with: style-transfer serve --port 9")


def test_a_listener_that_never_speaks_grpc_is_one_clear_error_within_the_timeout():
    import socket

    with socket.socket() as listener:  # the kernel accepts connections; nothing ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        t0 = time.monotonic()
        with Client(f"127.0.0.1:{port}", connect_timeout=1) as c, pytest.raises(ServerUnavailable):
            c.info()
        assert time.monotonic() - t0 < 5


def test_a_server_without_health_gets_the_call_and_its_answer():
    """The client's connection probe is a health check; a gRPC server that has no
    health service answers UNIMPLEMENTED, which still means a server is there."""
    from concurrent import futures

    bare = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = bare.add_insecure_port("127.0.0.1:0")
    bare.start()
    try:
        with Client(f"127.0.0.1:{port}", connect_timeout=2) as c, pytest.raises(RemoteError) as err:
            c.info()
        assert err.value.code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        bare.stop(0)


def test_tls(start_server, tmp_path, content, style):
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    running = start_server(tls=(cert.read_bytes(), key.read_bytes()))
    try:
        with Client(f"localhost:{running.port}", tls_ca=str(cert)) as secure:
            assert isinstance(events_of(secure, content, [style])[-1], Result)
        with Client(f"localhost:{running.port}", connect_timeout=2) as plain, pytest.raises(ServerUnavailable):
            plain.info()  # a plaintext client cannot talk to a TLS server
    finally:
        running.shutdown(0)


def test_an_initial_image_travels_after_the_styles(server, engine, content, style):
    params = FAST.replace(steps=2, init="image", precision="fp32")
    start = np.ascontiguousarray(style[:43, :64])  # any image, any size: resized to each scale
    with Client(f"127.0.0.1:{server.port}") as c:
        remote = [e for e in c.stylize(content, [style], params, init_image=start) if isinstance(e, Progress)]
    local = [e for e in engine.run(content, [style], params, init_image=start) if isinstance(e, Progress)]
    assert [p.losses["total"] for p in remote] == pytest.approx([p.losses["total"] for p in local], rel=1e-5)


def test_a_port_in_use_is_refused_not_shared(start_server):
    """gRPC's default SO_REUSEPORT would let a second server bind the same port and
    take half of the first one's clients."""
    running = start_server()
    with pytest.raises(ConfigError, match="cannot listen"):
        start(Model(), port=running.port)
