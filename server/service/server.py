"""The gRPC server around the servicer (`style-transfer serve`, cli/serve.py).

Health (grpc.health.v1) says SERVING only once VGG19 is loaded; reflection (v1 and
v1alpha) lets grpcurl list the API. On a non-loopback address a bearer token (or
--insecure) is required; with a token, everything but health needs it. No client
can hold the server: Stylize calls and reflection streams have their own bounded
slots, so health and GetInfo always find a free thread; uploads are bounded in time,
rate and bytes (upload.py); idle connections are closed. SIGTERM/SIGINT:
NOT_SERVING, new jobs refused, running jobs get a grace period, then are stopped
with UNAVAILABLE; exit 0. A second signal exits at once.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_pb

from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1.wire import DEFAULT_HOST, DEFAULT_PORT

from ..errors import ConfigError
from . import devices
from .devices import WorkerSpec
from .limits import Limits
from .model import Model
from .scheduler import Scheduler, Worker
from .servicer import StyleTransferService, add_to_server
from .workers import local_workers

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name  # "styletransfer.v1.StyleTransfer"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
REFLECTION_SECONDS = 60.0  # a reflection stream is ended after this long
log = logging.getLogger("styleserver")


def _replace_behavior(handler, behavior):
    """The same kind of handler with another behavior (and the same (de)serializers)."""
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class TokenAuth(grpc.ServerInterceptor):
    """`authorization: Bearer <token>` (the scheme in any case, RFC 7235) on every call
    but health, so that probes work without the secret; reflection needs it too."""

    def __init__(self, token: str):
        self._expected = token.encode()

    def authorized(self, metadata) -> bool:
        given = dict(metadata or ()).get("authorization", "")
        scheme, _, credentials = given.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._expected)

    def intercept_service(self, continuation, details):
        if details.method.startswith(HEALTH_PREFIX) or self.authorized(details.invocation_metadata):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer ...)")

        return _replace_behavior(handler, deny)


class ReflectionGate(grpc.ServerInterceptor):
    """At most `slots` reflection streams at once, each at most `seconds` long: idle
    streams cannot take the threads that other calls need."""

    def __init__(self, slots: int, seconds: float = REFLECTION_SECONDS):
        self._slots = threading.BoundedSemaphore(slots)
        self._count = slots
        self._seconds = seconds

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or not details.method.startswith(REFLECTION_PREFIXES) or not handler.request_streaming:
            return handler
        inner = handler.stream_stream

        def gated(request_iterator, context):
            if not self._slots.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"the server is busy: {self._count} reflection streams at once")
            timer = threading.Timer(self._seconds, context.cancel)
            timer.daemon = True
            timer.start()
            try:
                yield from inner(request_iterator, context)
            except grpc.RpcError:
                return  # the client went away, or the stream ran out of time
            finally:
                timer.cancel()
                self._slots.release()

        return _replace_behavior(handler, gated)


class _OneLine(logging.Filter):
    """gRPC logs a traceback for every request it cannot deserialize (health,
    reflection); a client's garbage is worth one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.msg, record.args = f"{record.getMessage()} ({record.exc_info[1]!r})", ()
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("grpc._common").addFilter(_OneLine())


@dataclass
class Running:
    server: grpc.Server
    port: int
    service: StyleTransferService
    health: health.HealthServicer

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def shutdown(self, grace: float) -> None:
        """Stop taking work, give running jobs `grace` seconds, then stop them. During
        the grace period the server still answers: health says NOT_SERVING, new jobs
        get UNAVAILABLE."""
        self.set_serving(False)
        self.service.shutting_down.set()
        self.service.scheduler.close()
        end = time.monotonic() + max(0.0, grace - 0.5)
        while self.service.scheduler.depth[0] and time.monotonic() < end:
            time.sleep(0.05)
        self.service.scheduler.cancel_running()
        end = time.monotonic() + 10  # the running job stops within one step
        while self.service.scheduler.depth[0] and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.1 if grace else 0)  # let its UNAVAILABLE reach the client
        stopped = self.server.stop(0.5)
        while not stopped.wait(0.5):
            pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start(
    model: Model,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    insecure: bool = False,
    tls: tuple[bytes, bytes] | None = None,
    limits: Limits | None = None,
    workers: Sequence[WorkerSpec | Worker] | None = None,
    metrics=None,
    max_pixels: int | None = None,
    max_queue: int | None = None,
) -> Running:
    """Start serving (health NOT_SERVING until the model is set). port 0 = any free port.
    `limits` (default: Limits()) with max_pixels/max_queue, when given, on top.
    `workers`: local devices (devices.parse; default: `auto`), each run by the model's
    engine, or workers of another kind (the cluster's), as given."""
    if not is_loopback(host) and not token and not insecure:
        raise ConfigError(
            f"--host {host} is reachable from the network: give --token-file FILE "
            "(clients send 'authorization: Bearer TOKEN'), or --insecure to serve without one"
        )
    limits = limits or Limits()
    if max_pixels is not None:
        limits = replace(limits, max_pixels=max_pixels)
    if max_queue is not None:
        limits = replace(limits, max_queue=max_queue)
    workers = list(workers or devices.parse("auto"))
    specs = [w for w in workers if isinstance(w, WorkerSpec)]
    if specs:
        if not limits.auto_dtype:  # admission plans in the precision the engine will pick
            limits = replace(limits, auto_dtype=_auto_dtype(specs[0].device))
        workers = [*local_workers(specs, model), *(w for w in workers if not isinstance(w, WorkerSpec))]
    service = StyleTransferService(model, limits, Scheduler(limits.max_queue, workers), metrics)
    if metrics is not None:
        metrics.watch(service.scheduler)
    interceptors = ([TokenAuth(token)] if token else []) + [ReflectionGate(limits.reflection_calls)]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="grpc-worker"),
        interceptors=interceptors,
        # Beyond this many calls at once (running or waiting for a thread) gRPC answers
        # RESOURCE_EXHAUSTED by itself; the bounded slots above keep threads free well before.
        maximum_concurrent_rpcs=limits.workers * 4,
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.max_connection_idle_ms", int(limits.idle_seconds * 1000)),
            ("grpc.keepalive_time_ms", 60_000),  # ping idle transports, drop dead ones
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.server_handshake_timeout_ms", 10_000),  # a connection that never speaks HTTP/2
            ("grpc.max_concurrent_streams", 64),  # per connection
            ("grpc.http2.max_pings_without_data", 0),
            # gRPC sets SO_REUSEPORT by default: a second server on a port in use would
            # bind it too and the kernel would split the clients between the two.
            ("grpc.so_reuseport", 0),
        ],
    )
    add_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _add_reflection(server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls:
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(tls[1], tls[0])]))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen on {address}: {e}") from None
    if not bound:
        raise ConfigError(f"cannot listen on {address} (in use, or not an address of this machine)")
    server.start()
    running = Running(server, bound, service, health_servicer)
    running.set_serving(False)
    return running


def _add_reflection(server: grpc.Server) -> None:
    """grpc.reflection.v1alpha (grpcio-reflection's) and v1, the same messages under the
    v1 name (the installed grpcio-reflection serves only v1alpha)."""
    packages = ("grpc.reflection.v1alpha", "grpc.reflection.v1")
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             *(f"{package}.ServerReflection" for package in packages))
    servicer = reflection.ReflectionServicer(names)
    for package in packages:
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(f"{package}.ServerReflection", {"ServerReflectionInfo": handler}),))


def _auto_dtype(device: str) -> str:
    """What precision "auto" runs in on `device`: "bfloat16" or "float32" (fp32 for a
    device that cannot be used: the engine says so per job)."""
    from stylecore import resolve_device, resolve_dtype

    try:
        return str(resolve_dtype("auto", resolve_device(device))).removeprefix("torch.")
    except Exception:  # noqa: BLE001 - e.g. cuda without CUDA
        return "float32"
