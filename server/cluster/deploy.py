"""Deploying the engine replicas on Ray Serve, and finding them: `serve --cluster`,
and the application builder a KubeRay RayService imports (`build_app`).

What Ray Serve does: it places replicas (`num_gpus=1` or `num_cpus=N`), queues
requests at the router until a replica has capacity (`max_ongoing_requests=1`: one
job per device), streams each job's events back through a `DeploymentHandle` with
`stream=True`, health-checks and replaces replicas, and autoscales between bounds on
the number of ongoing requests (queued + running).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from ..errors import UsageError
from .replica import EngineReplica

log = logging.getLogger("styleserver")

APP = "style-transfer"
DEPLOYMENT = "EngineReplica"


class ClusterError(UsageError):
    """The cluster cannot be used as asked; the message says why."""


def require_ray():
    """Ray and Ray Serve, or ClusterError saying how to install them."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ClusterError("--cluster needs Ray Serve: pip install 'gimp-style-transfer[cluster]'") from None
    return ray, serve


@dataclass(frozen=True)
class ClusterOptions:
    address: str = "local"  # "local": a private one-node Ray started here; "auto" or HOST:PORT: a cluster this node joined
    replicas: tuple[int, int] = (1, 1)  # min, max: autoscaling between them on ongoing requests
    gpus: float = -1  # per replica; 0 = CPU replicas; -1: 1 where the cluster has GPUs, else 0
    cpus: float = 1  # per replica (CPU replicas: also their threads)
    weights: str | None = None  # path on the replicas' nodes; None: their STYLE_TRANSFER_WEIGHTS or cache
    local_cpus: int | None = None  # address "local": CPUs the private Ray may use
    attach: bool = False  # never deploy: wait for the application (deployed by a KubeRay RayService)


def parse_replicas(text: str) -> tuple[int, int]:
    """'2' -> (2, 2); '1:4' -> (1, 4)."""
    low, _, high = text.partition(":")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise ClusterError(f"--replicas {text}: expected N or MIN:MAX") from None
    if not 0 <= bounds[0] <= bounds[1] or bounds[1] < 1:
        raise ClusterError(f"--replicas {text}: expected 0 <= MIN <= MAX, MAX >= 1")
    return bounds


class Cluster:
    """Connects to Ray, deploys (or finds) the engine replicas, hands out the handle."""

    def __init__(self, options: ClusterOptions):
        self.options = options
        ray, serve = require_ray()
        self._ray, self._serve = ray, serve
        init = dict(logging_level=logging.WARNING, log_to_driver=False)
        if options.address == "local":
            ray.init(include_dashboard=False, num_cpus=options.local_cpus, **init)
        else:
            ray.init(address=options.address, **init)
        if options.gpus < 0:  # auto: a GPU per replica where the cluster has GPUs
            self.options = options = replace(options, gpus=1 if ray.cluster_resources().get("GPU", 0) else 0)
        self.handle = self._deploy()
        self._replicas = max(1, options.replicas[0])
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="cluster-status", daemon=True)
        self._poller.start()

    def _deploy(self):
        """The application, if this cluster has it (deployed by another front, or by a
        KubeRay RayService from build_app), else deployed here."""
        serve = self._serve
        waited = time.monotonic()
        while True:
            try:
                status = serve.status().applications.get(APP)
            except Exception:  # noqa: BLE001 - Serve not started on this cluster yet
                status = None
            if status is not None or not self.options.attach:
                break
            if time.monotonic() - waited > 30:
                log.info("cluster: waiting for the %s application to be deployed", APP)
                waited = time.monotonic()
            time.sleep(2)
        if status is not None:
            log.info("cluster: using the %s application (%s)", APP, status.status)
            return serve.get_deployment_handle(DEPLOYMENT, app_name=APP)
        serve.start(proxy_location="Disabled")  # no HTTP proxies: the gRPC front is the only way in
        o = self.options
        log.info("cluster: deploying %s (%s replicas, %s each)", DEPLOYMENT,
                 "%d" % o.replicas[0] if o.replicas[0] == o.replicas[1] else "%d..%d" % o.replicas,
                 f"{o.gpus:g} GPU" if o.gpus else f"{o.cpus:g} CPU")
        return serve.run(application(o), name=APP, route_prefix=None)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._replicas = self.running_replicas()
            except Exception:  # noqa: BLE001 - the controller is restarting: keep the last count
                pass

    def running_replicas(self) -> int:
        app = self._serve.status().applications.get(APP)
        if app is None or DEPLOYMENT not in app.deployments:
            return 0
        states = app.deployments[DEPLOYMENT].replica_states
        return sum(n for state, n in states.items() if str(state).endswith("RUNNING"))

    def replicas(self) -> int:
        """Replicas running now (refreshed every second), at least 1 for positions."""
        return max(1, self._replicas)

    def describe(self) -> dict:
        """One replica's model and device (waits for a free replica)."""
        return self.handle.describe.remote().result(timeout_s=300)

    def close(self, delete: bool = False) -> None:
        self._stop.set()
        if delete:
            try:
                self._serve.delete(APP)
            except Exception:  # noqa: BLE001
                pass
        if self.options.address == "local":
            self._serve.shutdown()
        self._ray.shutdown()


def application(o: ClusterOptions):
    """The engine replicas as a Ray Serve application: one job per replica at a time
    (max_ongoing_requests=1), a GPU or `cpus` cores each, health-checked every 2 s,
    a fixed count or autoscaling between bounds on ongoing requests (queued + running)."""
    _, serve = require_ray()
    actor = {"num_gpus": o.gpus, "num_cpus": o.cpus if not o.gpus else 1}
    scaling: dict = {}
    if o.replicas[0] == o.replicas[1]:
        scaling["num_replicas"] = o.replicas[0]
    else:
        scaling["autoscaling_config"] = {
            "min_replicas": o.replicas[0], "max_replicas": o.replicas[1],
            "target_ongoing_requests": 1,  # a replica for each job running or queued
            "upscale_delay_s": 5, "downscale_delay_s": 120,
        }
    deployment = serve.deployment(
        EngineReplica, name=DEPLOYMENT, max_ongoing_requests=1, ray_actor_options=actor,
        health_check_period_s=2, health_check_timeout_s=30, graceful_shutdown_timeout_s=5, **scaling,
    )
    return deployment.bind(o.weights, 0 if o.gpus else max(1, int(o.cpus)))


def build_app(args: dict):
    """Serve's application builder, for a config file or a KubeRay RayService
    (`import_path: styleserver.cluster:build_app`); args: weights (a path on the
    replicas' nodes), gpus, cpus, min_replicas, max_replicas. The config file's
    `deployments` section may override the options."""
    return application(ClusterOptions(
        address="auto", replicas=(int(args.get("min_replicas", 1)), int(args.get("max_replicas", 1))),
        gpus=float(args.get("gpus", 1)), cpus=float(args.get("cpus", 1)), weights=args.get("weights"),
    ))
