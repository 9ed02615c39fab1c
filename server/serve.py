"""`style-transfer serve`: the gRPC server around the servicer.

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
import os
import signal
import ssl
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_pb

from styletransfer.v1 import style_transfer_pb2 as pb

from . import devices
from .devices import WorkerSpec
from .errors import UsageError
from .limits import Limits
from .service import Model, StyleTransferService, add_to_server

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StyleTransfer"].full_name  # "styletransfer.v1.StyleTransfer"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
REFLECTION_SECONDS = 60.0  # a reflection stream is ended after this long
log = logging.getLogger("styleserver")


class ConfigError(UsageError):
    """A server option that cannot work; the message says which and why."""


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
    host: str = "127.0.0.1",
    port: int = 50051,
    device: str = "auto",
    max_pixels: int | None = None,
    max_queue: int | None = None,
    token: str | None = None,
    insecure: bool = False,
    tls: tuple[bytes, bytes] | None = None,
    limits: Limits | None = None,
    workers: list[WorkerSpec] | None = None,
    metrics=None,
    service: StyleTransferService | None = None,
) -> Running:
    """Start serving (health NOT_SERVING until the model is set). port 0 = any free port.
    `limits` (default: Limits()) with max_pixels/max_queue, when given, on top.
    `workers`: one per device (devices.parse), default one on `device`. `service`:
    another servicer with the same contract (the cluster front), used as given."""
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
    if service is None:
        service = StyleTransferService(model, limits, device, workers, metrics)
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


def load_model(model: Model, weights_path: str | None, device_name: str, download: bool,
               workers: list[WorkerSpec] | None = None) -> None:
    """Load the weights into `model`, on the chosen device (or every worker's);
    raises WeightsError."""
    from stylecore import Engine, resolve_device, resolve_dtype

    from .weights import load

    weights = load(weights_path, download=download)
    devices = [resolve_device(w.device) for w in workers] if workers else [resolve_device(device_name)]
    engine = Engine(weights.model)
    for device in dict.fromkeys(devices):
        engine.network(device)  # move it now, not during the first job (one copy per device)
    dtype = str(resolve_dtype("auto", devices[0])).removeprefix("torch.")
    names = ",".join(w.name for w in workers) if workers else str(devices[0])
    model.set(engine, f"{weights.path.name} sha256:{weights.sha256}", weights.sha256, weights.verified,
              names, dtype)
    log.info("model: %s on %s (%s)", weights.describe(), names, dtype)


def run(args) -> int:
    """The `serve` command. Returns the exit status."""
    from .weights import WeightsError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    token = _read_secret(args.token_file, "--token-file") if args.token_file else None
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        tls = _read_tls(args.tls_cert, args.tls_key)
    if token and not tls and not is_loopback(args.host):
        log.warning("the token travels in clear text to --host %s: serve TLS on a network "
                    "(--tls-cert and --tls-key)", args.host)
    model = Model()
    limits = Limits(
        max_pixels=args.max_pixels, max_queue=args.max_queue, max_styles=args.max_styles,
        max_request_bytes=args.max_request_bytes, upload_seconds=args.upload_seconds,
        min_upload_rate=args.min_upload_rate, max_work_pixels=args.max_work_pixels, max_job_bytes=args.max_job_bytes,
        max_calls=args.max_calls, idle_seconds=args.idle_seconds, bf16=_runs_in_bf16(args.device),
    )
    if args.cluster:
        return _run_cluster(args, model, limits, token, tls)
    if args.device and args.devices:
        raise ConfigError("give --device or --devices, not both (--devices cpu is --device cpu)")
    workers = devices.parse(args.devices or args.device or "auto")
    metrics = None
    if args.metrics_port is not None:
        try:
            from .metrics import Metrics
        except ImportError:
            raise ConfigError("--metrics-port needs prometheus_client: pip install 'gimp-style-transfer[server]'") \
                from None
        metrics = Metrics()
    running = start(model, args.host, args.port, workers[0].device, token=token, insecure=args.insecure, tls=tls,
                    limits=limits, workers=workers, metrics=metrics)
    if metrics is not None:
        try:
            metrics.serve(args.host, args.metrics_port)
        except OSError as e:
            running.server.stop(0)
            raise ConfigError(f"--metrics-port {args.metrics_port}: cannot listen on {args.host} ({e.strerror or e})") \
                from None
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # the second one: no more waiting
            log.info("second %s: exiting now", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(128 + signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"listening on {args.host}:{running.port}", flush=True)
    if metrics is not None:
        print(f"metrics on http://{args.host}:{metrics.port}/metrics", flush=True)
    try:
        load_model(model, args.weights, workers[0].device, not args.no_download, workers)
    except WeightsError:
        running.server.stop(0)
        raise
    running.set_serving(True)
    log.info("serving StyleTransfer on %s:%d", args.host, running.port)
    while not stop.wait(0.5):  # a timed wait, so the signal handlers get to run
        pass
    log.info("shutting down: %.0f s grace for running jobs", args.grace)
    running.shutdown(args.grace)
    if metrics is not None:
        metrics.stop()
    log.info("stopped")
    return 0


def _run_cluster(args, model: Model, limits: Limits, token, tls) -> int:
    """serve --cluster: the gRPC front of a Ray Serve deployment (cluster.py)."""
    from . import cluster as cl

    if args.cluster.startswith("ray://"):
        raise ConfigError(
            f"--cluster {args.cluster}: Ray Client cannot stream a deployment's responses (Ray Serve refuses "
            "streaming handles over ray://); run the front on a node of the cluster instead: "
            "`ray start --address=HEAD:6379` there, then `style-transfer serve --cluster auto`")
    if args.device or args.devices:
        raise ConfigError("--cluster: the replicas choose their devices (--replica-gpus, --replica-cpus); "
                          "leave --device/--devices out")
    options = cl.ClusterOptions(
        address=args.cluster, replicas=cl.parse_replicas(args.replicas), gpus=args.replica_gpus,
        cpus=args.replica_cpus, weights=str(Path(args.weights).resolve()) if args.weights else
        os.environ.get("STYLE_TRANSFER_WEIGHTS"), local_cpus=args.ray_cpus, attach=args.attach,
    )
    cl._ray()  # the extra is installed, or a clear error now
    metrics = None
    if args.metrics_port is not None:
        from .metrics import Metrics

        metrics = Metrics()
    service = cl.ClusterService(model, limits, metrics)
    if metrics is not None:
        metrics.watch(service.scheduler)
        metrics.serve(args.host, args.metrics_port)
    running = start(model, args.host, args.port, token=token, insecure=args.insecure, tls=tls, limits=limits,
                    service=service)
    print(f"listening on {args.host}:{running.port}", flush=True)
    if metrics is not None:
        print(f"metrics on http://{args.host}:{metrics.port}/metrics", flush=True)
    try:
        cluster = cl.Cluster(options)
    except Exception:
        running.server.stop(0)
        raise
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda signum, frame: os._exit(128 + signum) if stop.is_set() else stop.set())
    try:
        service.attach(cluster)
        running.set_serving(True)
        log.info("serving StyleTransfer on %s:%d, jobs on the Ray cluster (%s)", args.host, running.port, args.cluster)
        while not stop.wait(0.5):
            pass
        log.info("shutting down: %.0f s grace for running jobs", args.grace)
        running.shutdown(args.grace)
    finally:
        cluster.close()
        if metrics is not None:
            metrics.stop()
    log.info("stopped")
    return 0


def _runs_in_bf16(device: str) -> bool:
    """Whether jobs on `device` run in bf16 (the engine's `auto`): the memory plan's precision."""
    from stylecore import resolve_device
    from stylecore.precision import bf16_is_fast

    try:
        return bf16_is_fast(resolve_device(device))
    except Exception:  # an unusable device is reported when the model loads
        return False


def _read_tls(cert_path: str, key_path: str) -> tuple[bytes, bytes]:
    """The certificate chain and key, PEM, checked to be one (gRPC would only say it
    cannot bind). Raises ConfigError naming the file."""
    files = []
    for path, option, marker, tool in ((cert_path, "--tls-cert", b"-----BEGIN CERTIFICATE", "x509"),
                                       (key_path, "--tls-key", b"PRIVATE KEY-----", "pkey")):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"{option}: cannot read {path} ({e.strerror or e})") from None
        if marker not in data:
            raise ConfigError(f"{option}: {path} is not PEM (a DER file converts with "
                              f"openssl {tool} -inform der -in FILE -out FILE.pem)")
        files.append(data)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # judge the pair, not its key size: gRPC serves small keys too
    try:
        # A passphrase-protected key fails here instead of prompting on the terminal.
        context.load_cert_chain(cert_path, key_path, password=lambda: b"")
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"--tls-cert/--tls-key: {cert_path} and {key_path} are not a certificate and its "
                          f"unencrypted private key ({getattr(e, 'reason', None) or e})") from None
    return files[0], files[1]


def _read_secret(path: str, option: str) -> str:
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"{option}: cannot read {path} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{option}: {path} is not a text file") from None
    if not text:
        raise ConfigError(f"{option}: {path} is empty")
    return text
