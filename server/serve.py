"""`style-transfer serve`: the gRPC server around the servicer.

Health (grpc.health.v1) says SERVING only once VGG19 is loaded; reflection lets
grpcurl list the API. On a non-loopback address a bearer token (or --insecure)
is required. SIGTERM/SIGINT: NOT_SERVING, new calls refused, running jobs get
a grace period, then are stopped with UNAVAILABLE; exit 0.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import style_transfer_pb2_grpc as pb_grpc

from .errors import UsageError
from .service import Limits, Model, StyleTransferService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name  # "styletransfer.v1.StyleTransfer"
log = logging.getLogger("styleserver")


class ConfigError(UsageError):
    """A server option that cannot work; the message says which and why."""


class TokenAuth(grpc.ServerInterceptor):
    """`authorization: Bearer <token>` on every StyleTransfer call. Health and
    reflection stay open, so probes and grpcurl work without the secret."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or not details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler
        given = dict(details.invocation_metadata).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return handler

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer ...)")

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


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
        """Stop taking work, give running jobs `grace` seconds, then stop them."""
        self.set_serving(False)
        self.service.shutting_down.set()
        self.service.scheduler.close()
        timer = threading.Timer(max(0.0, grace - 0.5), self.service.scheduler.cancel_running)
        timer.start()
        self.server.stop(grace).wait()
        timer.cancel()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start(
    model: Model,
    host: str = "127.0.0.1",
    port: int = 50051,
    device: str = "auto",
    max_pixels: int = 64_000_000,
    max_queue: int = 8,
    token: str | None = None,
    insecure: bool = False,
    tls: tuple[bytes, bytes] | None = None,
) -> Running:
    """Start serving (health NOT_SERVING until the model is set). port 0 = any free port."""
    if not is_loopback(host) and not token and not insecure:
        raise ConfigError(
            f"--host {host} is reachable from the network: give --token-file FILE "
            "(clients send 'authorization: Bearer TOKEN'), or --insecure to serve without one"
        )
    limits = Limits(max_pixels=max_pixels, max_queue=max_queue)
    service = StyleTransferService(model, limits, device)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_queue + 8),
        interceptors=[TokenAuth(token)] if token else [],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
        ],
    )
    pb_grpc.add_StyleTransferServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
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


def load_model(model: Model, weights_path: str | None, device_name: str, download: bool) -> None:
    """Load the weights into `model`, on the chosen device; raises WeightsError."""
    from stylecore import Engine, resolve_device, resolve_dtype

    from .weights import load

    weights = load(weights_path, download=download)
    device = resolve_device(device_name)
    engine = Engine(weights.model)
    engine.network(device)  # move it now, not during the first job
    dtype = str(resolve_dtype("auto", device)).removeprefix("torch.")
    model.set(engine, f"{weights.path.name} sha256:{weights.sha256}", weights.sha256, weights.verified,
              str(device), dtype)
    log.info("model: %s on %s (%s)", weights.describe(), device, dtype)


def run(args) -> int:
    """The `serve` command. Returns the exit status."""
    from .weights import WeightsError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    token = _read_secret(args.token_file, "--token-file") if args.token_file else None
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        tls = (_read_secret(args.tls_cert, "--tls-cert").encode(), _read_secret(args.tls_key, "--tls-key").encode())
    model = Model()
    running = start(model, args.host, args.port, args.device, args.max_pixels, args.max_queue, token,
                    args.insecure, tls)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"listening on {args.host}:{running.port}", flush=True)
    try:
        load_model(model, args.weights, args.device, not args.no_download)
    except WeightsError:
        running.server.stop(0)
        raise
    running.set_serving(True)
    log.info("serving StyleTransfer on %s:%d", args.host, running.port)
    while not stop.wait(0.5):  # a timed wait, so the signal handlers get to run
        pass
    log.info("shutting down: %.0f s grace for running jobs", args.grace)
    running.shutdown(args.grace)
    log.info("stopped")
    return 0


def _read_secret(path: str, option: str) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"{option}: cannot read {path} ({e.strerror or e})") from None
    if not text:
        raise ConfigError(f"{option}: {path} is empty")
    return text
