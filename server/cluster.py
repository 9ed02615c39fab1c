"""`style-transfer serve --cluster local|auto|HOST:PORT`: the gRPC front keeps
today's contract and hands each job to a Ray Serve deployment of engine replicas
(one per GPU, or per N CPU cores). Needs the `cluster` extra (Ray Serve).

What Ray Serve does: it places replicas (`num_gpus=1` or `num_cpus=N`), queues
requests at the router until a replica has capacity (`max_ongoing_requests=1`: one
job per device), streams each job's events back through a `DeploymentHandle` with
`stream=True`, health-checks and replaces replicas, and autoscales between bounds on
the number of ongoing requests (queued + running).

What the front does (thin, stateless: several can run behind a gRPC load balancer):
upload, admission and decoding as a single server does (service.py), then one
streaming call per job; the events arrive as serialized StylizeEvents and are
passed on. A client's cancel or disconnect cancels the call, which reaches the
replica as asyncio.CancelledError; the replica sets the engine's cancel flag and
keeps its slot until the engine's thread has stopped (within one step). A replica
that dies mid-job (ActorDiedError within milliseconds): the job is retried once on
another replica (a second Started follows), unless its result had begun to stream;
otherwise it ends with UNAVAILABLE saying so. Queue positions count this front's
jobs that wait for a replica ahead of this one: exact with one front, an estimate
with several (each sees only its own jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from stylecore import Cancelled
from stylecore.engine import Diverged
from stylecore.params import StyleParams
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1.wire import Queued

from . import convert
from .errors import UsageError
from .limits import Limits
from .scheduler import QueueFull, ShuttingDown, Ticket
from .service import Model, StyleTransferService, Unavailable

log = logging.getLogger("styleserver")

APP = "style-transfer"
DEPLOYMENT = "EngineReplica"
RETRIES = 1  # a job whose replica died is tried once more


class ClusterError(UsageError):
    """The cluster cannot be used as asked; the message says why."""


def _ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ClusterError("--cluster needs Ray Serve: pip install 'gimp-style-transfer[cluster]'") from None
    return ray, serve


# --- the replica ---------------------------------------------------------------------


@dataclass
class ClusterJob:
    """What a replica needs for one job: decoded images, parameters, how to answer."""

    job_id: str
    content: np.ndarray
    styles: list[np.ndarray]
    params: StyleParams
    preview_every: int
    preview_max_side: int
    result_format: int
    chunk_bytes: int
    budget: int | None = None  # the front's --max-job-bytes: the engine plans tiles within it
    init_image: np.ndarray | None = None  # params.init "image"


class EngineReplica:
    """One engine on one device (a GPU, or `threads` CPU cores), one job at a time.

    `run` is an async generator on purpose: Serve delivers a caller's cancel only to
    async generators, and a slot is held until the engine's thread has stopped, so a
    device never runs two jobs at once."""

    def __init__(self, weights: str | None, threads: int = 0):
        import torch

        from stylecore import Engine, resolve_device, resolve_dtype

        from .weights import load

        w = load(weights, download=False)
        self.device = resolve_device("auto")
        self.threads = threads
        self.engine = Engine(w.model)
        self.engine.network(self.device)
        self.model = f"{w.path.name} sha256:{w.sha256}"
        self.sha256, self.verified = w.sha256, w.verified
        self.dtype = str(resolve_dtype("auto", self.device)).removeprefix("torch.")
        if threads:
            torch.set_num_threads(threads)
        try:
            from ray import serve

            self.name = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve (tests of the class itself)
            self.name = f"local-{os.getpid()}"
        self.pid = os.getpid()

    def describe(self) -> dict:
        return dict(name=self.name, pid=self.pid, model=self.model, sha256=self.sha256, verified=self.verified,
                    device=str(self.device), dtype=self.dtype, threads=self.threads)

    async def run(self, job: ClusterJob):
        """Yields ("replica", describe()), then ("event", serialized StylizeEvent) for
        every event, or ("error", (kind, message)) once."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def work() -> None:
            try:
                if self.threads:
                    import torch

                    torch.set_num_threads(self.threads)  # this thread's own OpenMP count
                run = self.engine.run(job.content, job.styles, job.params, stop.is_set, job.preview_every,
                                      device=self.device, budget=job.budget, init_image=job.init_image)
                with contextlib.closing(run):  # stopped early: the job leaves its level now, not at GC
                    for event in run:
                        if stop.is_set():
                            break
                        if event.__class__.__name__ == "Result":
                            for message in convert.result_to_proto(event, job.result_format, job.chunk_bytes):
                                put(("event", message.SerializeToString()))
                            continue
                        if event.__class__.__name__ == "Started":
                            event = replace(event, device=f"ray:{self.name}")
                        put(("event", convert.event_to_proto(event, job.job_id, self.model, self.verified,
                                                             job.preview_max_side).SerializeToString()))
            except Cancelled:
                pass
            except Diverged as e:
                put(("error", ("diverged", str(e))))
            except MemoryError:
                put(("error", ("memory", "the replica ran out of memory for this job")))
            except (ValueError, TypeError) as e:  # ParamError, ImageError: the job's own fault
                put(("error", ("invalid", str(e))))
            except Exception as e:  # noqa: BLE001 - reported, not raised: the replica stays up
                put(("error", ("failed", f"{type(e).__name__}: {e}")))
            finally:
                put(("end", None))

        yield "replica", self.describe()
        thread = threading.Thread(target=work, name=f"job-{job.job_id}", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = await events.get()
                if kind == "end":
                    return
                yield kind, value
        finally:  # cancelled (the caller went away) or done: free the slot only once the engine stopped
            stop.set()
            await asyncio.to_thread(thread.join)


# --- the front -----------------------------------------------------------------------


@dataclass(eq=False)
class _ClusterTicket(Ticket):
    started: bool = False
    replica: str = ""
    responses: list = field(default_factory=list)


class ClusterQueue:
    """The front's view of the cluster's queue: its own jobs in submission order,
    which of them a replica has started, and the replicas Serve reports. Quacks like
    scheduler.Scheduler for serve.Running and metrics.Metrics. Ray's router does the
    queueing and the choice of replica; this only counts."""

    def __init__(self, max_queue: int, replicas: Callable[[], int]):
        self.max_queue = max_queue
        self.started = time.monotonic()
        self.on_change = None
        self._replicas = replicas
        self._cond = threading.Condition()
        self._jobs: deque[_ClusterTicket] = deque()
        self._closed = False
        self._seen: dict[str, dict] = {}  # replica name -> jobs, busy seconds, busy since (this front's jobs)

    def enter(self) -> _ClusterTicket:
        with self._cond:
            if self._closed:
                raise ShuttingDown()
            waiting = len(self._jobs) - self._replicas()  # beyond what the replicas take at once
            if waiting >= self.max_queue:
                raise QueueFull(f"{waiting} jobs are already waiting for a replica (the limit is {self.max_queue})")
            ticket = _ClusterTicket()
            self._jobs.append(ticket)
            return ticket

    def position(self, ticket: _ClusterTicket) -> int:
        """0 while a replica is free for it, else its place: 1 + the jobs ahead of it
        (this front's, running or not) beyond what the replicas take at once."""
        with self._cond:
            if ticket.started:
                return 0
            ahead = self._jobs.index(ticket) if ticket in self._jobs else 0
            return max(0, ahead - self._replicas() + 1)

    def start(self, ticket: _ClusterTicket, replica: str) -> None:
        with self._cond:
            self._stop_clock(ticket)
            ticket.started, ticket.replica = True, replica
            seen = self._seen.setdefault(replica, dict(jobs=0, busy_seconds=0.0, since=0.0, busy=0))
            seen["jobs"] += 1
            seen["busy"] += 1
            seen["since"] = time.monotonic()

    def restart(self, ticket: _ClusterTicket) -> None:
        """Its replica died: it waits again."""
        with self._cond:
            self._stop_clock(ticket)
            ticket.started, ticket.replica = False, ""

    def release(self, ticket: _ClusterTicket) -> None:
        with self._cond:
            self._stop_clock(ticket)
            if ticket in self._jobs:
                self._jobs.remove(ticket)
            self._cond.notify_all()

    def _stop_clock(self, ticket: _ClusterTicket) -> None:
        seen = self._seen.get(ticket.replica)
        if ticket.started and seen is not None and seen["busy"]:
            seen["busy"] -= 1
            seen["busy_seconds"] += time.monotonic() - seen["since"]
            seen["since"] = time.monotonic()

    def close(self) -> None:
        with self._cond:
            self._closed = True

    def cancel_running(self) -> None:
        with self._cond:
            for ticket in self._jobs:
                ticket.cancel.set()
                for response in ticket.responses:
                    response.cancel()

    @property
    def depth(self) -> tuple[int, int]:
        with self._cond:
            running = sum(t.started for t in self._jobs)
            return running, len(self._jobs) - running

    def snapshot(self) -> list[dict]:
        """Replicas this front has used (its own jobs' figures)."""
        now = time.monotonic()
        with self._cond:
            return [dict(name=f"ray:{name}", busy=bool(s["busy"]), threads=0, jobs=s["jobs"],
                         busy_seconds=s["busy_seconds"] + (now - s["since"] if s["busy"] else 0.0))
                    for name, s in self._seen.items()]


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
        ray, serve = _ray()
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
    _, serve = _ray()
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


_DIED = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
         "OwnerDiedError", "ObjectLostError", "DeploymentUnavailableError")
_CANCELLED = ("TaskCancelledError", "RequestCancelledError", "CancelledError")


class ClusterService(StyleTransferService):
    """The same servicer (upload, admission, decoding, status codes, log lines), with
    the run handed to the cluster."""

    def __init__(self, model: Model, limits: Limits, metrics=None):
        super().__init__(model, limits, "cluster", metrics=metrics)
        self.cluster: Cluster | None = None  # attach() once connected; until then the model is not ready
        self.scheduler = ClusterQueue(limits.max_queue, lambda: self.cluster.replicas() if self.cluster else 1)
        self.replica_pids: dict[str, int] = {}  # job id -> the pid of the replica running it (tests kill them)
        self.retried = 0

    def _run(self, job, header, params, images, context, record) -> Iterator[pb.StylizeEvent]:
        payload = ClusterJob(job, images[0], list(images[1:1 + len(header.styles)]), params, header.preview_every,
                             header.preview_max_side, header.result_format, self.limits.chunk_bytes,
                             budget=self.limits.max_job_bytes,
                             init_image=images[-1] if header.HasField("init_image") else None)
        ticket = self.scheduler.enter()
        t_started = None
        try:
            record.outcome = "queued"
            for attempt in range(RETRIES + 1):
                response = self.cluster.handle.options(stream=True).run.remote(payload)
                ticket.responses.append(response)
                context.add_callback(response.cancel)  # the client cancels or goes away: the replica stops
                items = _Reader(response)
                result_sent = False
                last_position = 0
                try:
                    while True:
                        item = items.get(0.1)
                        if item is None:  # nothing yet: the client, the shutdown and the queue position
                            if ticket.cancel.is_set() or not context.is_active():
                                response.cancel()
                                raise Cancelled()
                            position = self.scheduler.position(ticket)
                            if position and position != last_position:
                                last_position = position
                                yield convert.event_to_proto(Queued(position))
                            continue
                        kind, value = item
                        if kind == "replica":
                            self.scheduler.start(ticket, value["name"])
                            self.replica_pids[job] = value["pid"]
                            record.outcome, record.device = "running", f"ray:{value['name']}"
                            log.info("job %s: on replica %s (pid %d)", job, value["name"], value["pid"])
                            t_started = time.monotonic()
                        elif kind == "event":
                            message = pb.StylizeEvent.FromString(value)
                            result_sent |= message.WhichOneof("event") == "result"
                            yield message
                        elif kind == "error":
                            _raise(*value)
                        elif kind == "end":
                            record.set("done")
                            return
                        elif kind == "raised":
                            name = type(value).__name__
                            if ticket.cancel.is_set() or not context.is_active() or name in _CANCELLED:
                                raise Cancelled()
                            if name not in _DIED and "died" not in str(value).lower():
                                if type(value).__module__.startswith("ray."):  # the cluster's own failure
                                    raise Unavailable(f"the cluster could not run this job ({name}: {value})")
                                raise value
                            replica = ticket.replica or "?"
                            if attempt < RETRIES and not result_sent:
                                log.warning("job %s: replica %s died (%s); retrying on another", job, replica, name)
                                self.retried += 1
                                self.scheduler.restart(ticket)
                                record.outcome = "queued"
                                break
                            if result_sent:
                                raise Unavailable(f"the cluster replica running this job died while sending its "
                                                  f"result ({name}); try again")
                            raise Unavailable(f"the cluster replica running this job died ({name}), and so did the "
                                              f"one it was retried on; try again")
                finally:
                    items.stop()
        finally:
            self.replica_pids.pop(job, None)
            if t_started is not None:
                record.ran_seconds = time.monotonic() - t_started
            self.scheduler.release(ticket)

    def attach(self, cluster: Cluster) -> None:
        """Connected: take jobs (the model's description is one replica's)."""
        self.cluster = cluster
        d = cluster.describe()
        self.model.set(None, d["model"], d["sha256"], d["verified"], f"ray:{d['device']}", d["dtype"])

    def GetInfo(self, request, context):
        info = super().GetInfo(request, context)
        if self.cluster is not None:
            info.device = f"ray cluster, {self.cluster.replicas()} {info.device} replicas"
        return info


def _raise(kind: str, message: str):
    if kind == "diverged":
        raise Diverged(message)
    if kind == "memory":
        raise MemoryError(message)
    if kind == "invalid":
        raise ValueError(message)
    raise RuntimeError(message)


class _Reader:
    """Reads a streaming response in its own thread, so the caller can wait with a
    timeout (and tell the client its place meanwhile)."""

    def __init__(self, response):
        import queue

        self._items: queue.Queue = queue.Queue()
        self._response = response
        self._thread = threading.Thread(target=self._read, name="cluster-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self._response:
                self._items.put(item)
            self._items.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self._items.put(("raised", e))

    def get(self, timeout: float):
        import queue

        try:
            return self._items.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._response.cancel()
