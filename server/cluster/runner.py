"""The cluster as workers of the one queue: `serve --cluster local|auto|HOST:PORT`.

The gRPC front is the same server as everywhere (service/): upload, admission,
decoding, the queue, cancel, shutdown, metrics and status codes. Its workers are
`slots` ClusterWorkers, one per replica the deployment may have (its maximum), and a
worker runs a prepared job by one streaming call to the deployment; the replica
(replica.py) sends the job's messages back serialized, and they are passed on.

With a fixed number of replicas a job leaves the front's queue when a replica is
free, so positions are exact. With autoscaling (--replicas MIN:MAX) up to MAX jobs
are handed to Ray at once, and those beyond the running replicas wait in Ray's
router (that is what makes Serve start replicas); their clients see Started when a
replica takes them. With several fronts each queues only its own jobs.

A client's cancel, a disconnect or shutdown cancels the call, which reaches the
replica as asyncio.CancelledError; the replica stops the engine within one step and
keeps its slot until then. A replica that dies mid-job (ActorDiedError within
milliseconds): the job is tried once more, unless its result had begun to stream;
otherwise it ends with UNAVAILABLE saying so.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

from stylecore import Cancelled
from styletransfer.v1 import style_transfer_pb2 as pb

from ..service.jobs import Job, JobFailed
from .deploy import Cluster

log = logging.getLogger("styleserver")

RETRIES = 1  # a job whose replica died is tried once more
_DIED = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
         "OwnerDiedError", "ObjectLostError", "DeploymentUnavailableError")
_CANCELLED = ("TaskCancelledError", "RequestCancelledError", "CancelledError")


class ClusterRunner:
    """The front's connection to the deployment, shared by its workers: None until
    `attach`, which comes once Ray is up (the server answers health meanwhile)."""

    def __init__(self):
        self.cluster: Cluster | None = None
        self.retried = 0  # jobs tried again after their replica died

    def workers(self, slots: int) -> list[ClusterWorker]:
        return [ClusterWorker(self, f"ray:{i}") for i in range(slots)]

    def attach(self, cluster: Cluster, running) -> None:
        """Connected: take jobs. The model's description is one replica's, and so is the
        precision admission plans in."""
        self.cluster = cluster
        d = cluster.describe()
        service = running.service
        service.limits = replace(service.limits, auto_dtype=d["dtype"])
        model = service.model
        model.describe_device = lambda: f"ray cluster, {cluster.replicas()} ray:{d['device']} replicas"
        model.set(None, d["model"], d["sha256"], d["verified"], f"ray:{d['device']}", d["dtype"])


class ClusterWorker:
    """One slot of the deployment: runs one job at a time on whichever replica Ray's
    router gives it."""

    threads = 0

    def __init__(self, runner: ClusterRunner, name: str):
        self.runner, self.name = runner, name

    def run(self, job: Job, cancel: Callable[[], bool]) -> Iterator[pb.StylizeEvent]:
        handle = self.runner.cluster.handle
        for attempt in range(RETRIES + 1):
            response = handle.options(stream=True).run.remote(job)
            items = _Reader(response)
            result_sent = False
            try:
                while True:
                    if cancel():  # the client or the shutdown; a client gone also closes this generator
                        raise Cancelled()
                    item = items.get(0.1)
                    if item is None:
                        continue
                    kind, value = item
                    if kind == "replica":
                        log.info("job %s: on replica %s (pid %d)", job.job_id, value["name"], value["pid"])
                    elif kind == "event":
                        message = pb.StylizeEvent.FromString(value)
                        result_sent |= message.WhichOneof("event") == "result"
                        yield message
                    elif kind == "failed":
                        raise JobFailed(*value)
                    elif kind == "end":
                        return
                    elif kind == "raised":
                        self._retry_or_raise(job, value, cancel, attempt, result_sent)
                        break  # tried again
            finally:
                items.stop()

    def _retry_or_raise(self, job: Job, error: BaseException, cancel, attempt: int, result_sent: bool) -> None:
        """Returns when the job is to be tried again (its replica died before its result
        began); else raises what the job ends with."""
        name = type(error).__name__
        if cancel() or name in _CANCELLED:
            raise Cancelled()
        if name not in _DIED and "died" not in str(error).lower():
            if type(error).__module__.startswith("ray."):  # the cluster's own failure
                raise JobFailed("UNAVAILABLE", f"the cluster could not run this job ({name}: {error})")
            raise error
        if attempt < RETRIES and not result_sent:
            log.warning("job %s: replica died (%s); retrying on another", job.job_id, name)
            self.runner.retried += 1
            return
        if result_sent:
            raise JobFailed("UNAVAILABLE", f"the cluster replica running this job died while sending its result "
                                           f"({name}); try again")
        raise JobFailed("UNAVAILABLE", f"the cluster replica running this job died ({name}), and so did the one "
                                       f"it was retried on; try again")


class _Reader:
    """Reads a streaming response in its own thread, so the caller can wait with a
    timeout (and check for cancel meanwhile)."""

    def __init__(self, response):
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
        try:
            return self._items.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self._response.cancel()
