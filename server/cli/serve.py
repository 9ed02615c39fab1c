"""`style-transfer serve`: the options, the TLS and token files, and the server's life:
start, load the model (or attach to the cluster), serve until SIGTERM/SIGINT, shut
down with a grace period. The server itself is service/server.py."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path

from stylecore.params import DEVICES
from styletransfer.v1 import wire

from ..errors import ConfigError
from ..service.limits import Limits  # no torch: a client-only install has `style-transfer serve --help` too
from . import options as o

log = logging.getLogger("styleserver")


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the gRPC server", description="Serve style transfer over gRPC.")
    p.add_argument("--host", default=wire.DEFAULT_HOST,
                   help=f"address to listen on (default {wire.DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=o.port, default=wire.DEFAULT_PORT,
                   help=f"port (0: any free port; default {wire.DEFAULT_PORT})")
    p.add_argument("--device", default=None, choices=DEVICES, help="where the network runs (default: auto)")
    p.add_argument("--devices", default=None, metavar="all|cuda:0,cuda:1|cpu|cpu:N",
                   help="one worker per device, all fed by one queue: all (every GPU), a list such as "
                        "cuda:0,cuda:1, cpu, or cpu:N (N CPU workers dividing the cores); default: --device")
    p.add_argument("--weights", help="VGG19 weights file (default: $STYLE_TRANSFER_WEIGHTS or torch hub's cache)")
    p.add_argument("--no-download", action="store_true", help="never download the weights")
    p.add_argument("--max-pixels", type=o.count(1), default=Limits.max_pixels, metavar="N",
                   help=f"largest image accepted, pixels (default {Limits.max_pixels:,})")
    p.add_argument("--max-queue", type=o.count(0), default=Limits.max_queue, metavar="N",
                   help=f"jobs that may wait for a device (default {Limits.max_queue})")
    p.add_argument("--token-file", help="require 'authorization: Bearer TOKEN' with the token in this file")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="... and this private key (PEM)")
    p.add_argument("--grace", type=o.seconds(positive=False), default=10.0, help="seconds running jobs get at shutdown (default 10)")
    p.add_argument("--idle-exit", type=o.seconds(), default=None, metavar="SECONDS",
                   help="exit after this long without a call (Stylize or GetInfo; health checks do not count): "
                        "a server started for one session ends by itself (default: never)")
    p.add_argument("--metrics-port", type=o.port, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics on --host (0: any free port; "
                        "default: none)")
    cg = p.add_argument_group("cluster (the `cluster` extra: Ray Serve)")
    cg.add_argument("--cluster", metavar="local|auto|HOST:PORT", default=None,
                    help="hand jobs to Ray Serve engine replicas: local (a private one-node Ray started here), "
                         "auto (the Ray cluster this node has joined with `ray start --address=...`), or that "
                         "cluster's GCS address (ray:// Ray Client addresses cannot stream and are refused)")
    cg.add_argument("--replicas", default="1", metavar="N|MIN:MAX",
                    help="engine replicas; MIN:MAX autoscales on ongoing requests (queued + running) (default 1)")
    cg.add_argument("--replica-gpus", type=o.gpus, default=-1, metavar="G",
                    help="GPUs per replica (default: 1 where the cluster has GPUs, else 0)")
    cg.add_argument("--replica-cpus", type=o.cpus, default=1, metavar="N",
                    help="CPU cores per replica; CPU replicas run on that many threads (default 1)")
    cg.add_argument("--attach", action="store_true",
                    help="never deploy the replicas: wait for the application another front or a KubeRay "
                         "RayService deployed (styleserver.cluster:build_app)")
    cg.add_argument("--ray-cpus", type=o.count(1), default=None, metavar="N",
                    help="--cluster local: CPUs the private Ray may use (default: all)")
    lim = p.add_argument_group("limits (what one client may ask; all are reported by GetInfo)")
    lim.add_argument("--max-styles", type=o.count(1), default=Limits.max_styles, metavar="N",
                     help=f"style images per job (default {Limits.max_styles})")
    lim.add_argument("--max-request-bytes", type=o.positive_byte_count, default=None, metavar="BYTES",
                     help="all images of one job together, e.g. 300M (default: 4 bytes x --max-pixels + 64 MiB)")
    lim.add_argument("--upload-seconds", type=o.seconds(), default=Limits.upload_seconds, metavar="S",
                     help=f"an upload must be complete this long after the call began (default {Limits.upload_seconds:g})")
    lim.add_argument("--min-upload-rate", type=o.byte_count, default=Limits.min_upload_rate, metavar="BYTES",
                     help="slower uploads are ended, bytes per second averaged after the first second (default 256K)")
    lim.add_argument("--max-work-pixels", type=o.count(1), default=Limits.max_work_pixels, metavar="N",
                     help="largest working image, every pyramid level and every style at --style-scale; "
                          "larger than fits in --max-job-bytes is worked tile by tile "
                          f"(default {Limits.max_work_pixels:,}: 24 MP photos at full resolution)")
    lim.add_argument("--max-job-bytes", type=o.positive_byte_count, default=Limits.max_job_bytes, metavar="BYTES",
                     help="memory budget of one job, estimated before it is accepted "
                          f"(default {Limits.max_job_bytes >> 30}G)")
    lim.add_argument("--max-calls", type=o.count(1), default=Limits.max_calls, metavar="N",
                     help=f"Stylize calls at once, uploading, queued or running (default {Limits.max_calls})")
    lim.add_argument("--idle-seconds", type=o.seconds(), default=Limits.idle_seconds, metavar="S",
                     help=f"close connections without calls after this long (default {Limits.idle_seconds:g})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The `serve` command. Returns the exit status."""
    from ..service import devices
    from ..service.model import Model, load
    from ..service.server import is_loopback
    from ..weights import WeightsError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    token = o.read_token_file(args.token_file) if args.token_file else None
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        tls = _read_tls(args.tls_cert, args.tls_key)
    if token and not tls and not is_loopback(args.host):
        log.warning("the token travels in clear text to --host %s: serve TLS on a network "
                    "(--tls-cert and --tls-key)", args.host)
    limits = Limits(
        max_pixels=args.max_pixels, max_queue=args.max_queue, max_styles=args.max_styles,
        max_request_bytes=args.max_request_bytes, upload_seconds=args.upload_seconds,
        min_upload_rate=args.min_upload_rate, max_work_pixels=args.max_work_pixels, max_job_bytes=args.max_job_bytes,
        max_calls=args.max_calls, idle_seconds=args.idle_seconds,
    )
    metrics = _metrics(args)
    model = Model()
    if args.cluster:
        return _serve_cluster(args, model, limits, token, tls, metrics)
    if args.device and args.devices:
        raise ConfigError("give --device or --devices, not both (--devices cpu is --device cpu)")
    workers = devices.parse(args.devices or args.device or "auto")
    running = _start(args, model, limits, token, tls, metrics, workers)

    def load_model() -> None:
        try:
            load(model, args.weights, workers, download=not args.no_download)
        except WeightsError:
            running.server.stop(0)
            raise

    return _serve(args, running, metrics, load_model, f"on {args.host}:{running.port}")


def _serve_cluster(args, model, limits: Limits, token, tls, metrics) -> int:
    """serve --cluster: the same server, its workers the slots of a Ray Serve
    deployment (cluster/)."""
    from ..cluster.deploy import Cluster, ClusterOptions, parse_replicas, require_ray
    from ..cluster.runner import ClusterRunner
    if args.cluster.startswith("ray://"):
        raise ConfigError(
            f"--cluster {args.cluster}: Ray Client cannot stream a deployment's responses (Ray Serve refuses "
            "streaming handles over ray://); run the front on a node of the cluster instead: "
            "`ray start --address=HEAD:6379` there, then `style-transfer serve --cluster auto`")
    if args.device or args.devices:
        raise ConfigError("--cluster: the replicas choose their devices (--replica-gpus, --replica-cpus); "
                          "leave --device/--devices out")
    options = ClusterOptions(
        address=args.cluster, replicas=parse_replicas(args.replicas), gpus=args.replica_gpus,
        cpus=args.replica_cpus, weights=str(Path(args.weights).resolve()) if args.weights else
        os.environ.get("STYLE_TRANSFER_WEIGHTS"), local_cpus=args.ray_cpus, attach=args.attach,
    )
    require_ray()  # the extra is installed, or a clear error now
    runner = ClusterRunner()
    running = _start(args, model, limits, token, tls, metrics, runner.workers(options.replicas[1]))
    try:
        cluster = Cluster(options)
    except Exception:
        running.server.stop(0)
        raise
    try:
        return _serve(args, running, metrics, lambda: runner.attach(cluster, running),
                      f"on {args.host}:{running.port}, jobs on the Ray cluster ({args.cluster})")
    finally:
        cluster.close()


def _metrics(args):
    if args.metrics_port is None:
        return None
    try:
        from ..service.metrics import Metrics
    except ImportError:
        raise ConfigError("--metrics-port needs prometheus_client: pip install 'gimp-style-transfer[server]'") from None
    return Metrics()


def _start(args, model, limits, token, tls, metrics, workers):
    """The server listening (health NOT_SERVING until the model is set), and its metrics."""
    from ..service.server import start

    running = start(model, args.host, args.port, token=token, insecure=args.insecure, tls=tls, limits=limits,
                    workers=workers, metrics=metrics)
    if metrics is not None:
        try:
            metrics.serve(args.host, args.metrics_port)
        except OSError as e:
            running.server.stop(0)
            raise ConfigError(f"--metrics-port {args.metrics_port}: cannot listen on {args.host} ({e.strerror or e})") \
                from None
    print(f"listening on {args.host}:{running.port}", flush=True)
    if metrics is not None:
        print(f"metrics on http://{args.host}:{metrics.port}/metrics", flush=True)
    return running


def _serve(args, running, metrics, prepare, where: str) -> int:
    """prepare() (load the model, or attach to the cluster), then serving until SIGTERM
    or SIGINT, then the shutdown with --grace; a second signal exits at once."""
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # the second one: no more waiting
            log.info("second %s: exiting now", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(128 + signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, on_signal)
    prepare()
    running.set_serving(True)
    activity = running.service.activity
    activity.touch()  # the idle time counts from here, not from before the model loaded
    log.info("serving StyleTransfer %s", where + (f", exiting after {args.idle_exit:g} s without a call"
                                                  if args.idle_exit else ""))
    while not stop.wait(0.25):  # a timed wait, so the signal handlers get to run
        if args.idle_exit and activity.idle_for() >= args.idle_exit:
            log.info("no call for %g s (--idle-exit): exiting", args.idle_exit)
            break
    log.info("shutting down: %.0f s grace for running jobs", args.grace)
    running.shutdown(args.grace)
    if metrics is not None:
        metrics.stop()
    log.info("stopped")
    return 0


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


