"""One job pipeline: the same servicer, queue and job, run by a local worker or by the
cluster's worker (cluster/runner.py) on a real EngineReplica (cluster/replica.py).

Ray itself is replaced by `InProcessServe`, a stand-in for a Serve deployment handle
that runs the replica's async generator in an event loop of its own and delivers a
caller's cancel to it as Serve does (asyncio.CancelledError); tests/test_cluster.py
runs the real Ray Serve."""

from __future__ import annotations

import asyncio
import queue
import threading

import numpy as np
import pytest

from stylecore import Progress, Result, Started, preset
from styleserver.client import Client, RemoteError
from styleserver.cluster.replica import EngineReplica
from styleserver.cluster.runner import ClusterRunner
from styleserver.service.model import Model
from styleserver.service.server import start
from styletransfer.v1.wire import Queued

SEEDED = preset("default").replace(size=48, scales=2, steps=3, coarse_steps=2, init="noise", seed=3, precision="fp32")


class _Response:
    """What `handle.options(stream=True).run.remote(job)` returns: an iterator of the
    replica's items, and cancel()."""

    _END = object()

    def __init__(self, agen):
        self._items: queue.Queue = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._task = None
        started = threading.Event()

        async def pump():
            try:
                async for item in agen:
                    self._items.put(item)
            except asyncio.CancelledError:
                self._items.put(asyncio.CancelledError())
            finally:
                await agen.aclose()
                self._items.put(self._END)

        def run():
            self._task = self._loop.create_task(pump())
            started.set()
            self._loop.run_until_complete(self._task)

        threading.Thread(target=run, daemon=True).start()
        started.wait()

    def __iter__(self):
        while (item := self._items.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self):
        self._loop.call_soon_threadsafe(self._task.cancel)


class InProcessServe:
    """A deployment of one replica, `max_ongoing_requests=1` as deploy.py asks."""

    def __init__(self, replica: EngineReplica):
        self.replica = replica
        self.handle = self
        self.run = self
        self._one = threading.Semaphore(1)

    def options(self, stream: bool):
        return self

    def remote(self, job):
        replica, one = self.replica, self._one

        async def run():
            await asyncio.to_thread(one.acquire)  # Serve's router: one job per replica at a time
            try:
                async for item in replica.run(job):
                    yield item
            finally:
                one.release()

        return _Response(run())

    def describe(self) -> dict:
        return self.replica.describe()

    def replicas(self) -> int:
        return 1


@pytest.fixture(scope="module")
def servers(weights_file, start_server):
    """A server on the local device and a cluster front of one replica, both with one worker."""
    from styleserver.weights import load

    local_model = Model()
    local_weights = load(weights_file, download=False)
    from stylecore import Engine

    local_model.set(Engine(local_weights.model), f"{local_weights.path.name} sha256:{local_weights.sha256}",
                    local_weights.sha256, local_weights.verified, "cpu", "float32")
    local = start(local_model, port=0, max_queue=1)
    local.set_serving(True)
    runner = ClusterRunner()
    front = start(Model(), port=0, max_queue=1, workers=runner.workers(1))
    runner.attach(InProcessServe(EngineReplica(weights_file)), front)
    front.set_serving(True)
    yield {"local": local, "cluster": front}
    for running in (local, front):
        running.shutdown(0)


def _run(port: int, content, style, params=SEEDED, **kw) -> list:
    with Client(f"127.0.0.1:{port}") as client:
        return list(client.stylize(content, [style], params, **kw))


def test_a_seeded_job_gives_the_same_events_and_bytes_through_both_runners(servers, content, style):
    local = _run(servers["local"].port, content, style)
    cluster = _run(servers["cluster"].port, content, style)
    assert [type(e).__name__ for e in cluster] == [type(e).__name__ for e in local]
    assert [(e.scale, e.step, e.losses) for e in cluster if isinstance(e, Progress)] == \
        [(e.scale, e.step, e.losses) for e in local if isinstance(e, Progress)]
    started = [next(e for e in r if isinstance(e, Started)) for r in (local, cluster)]
    assert started[0].sizes == started[1].sizes and started[1].device.startswith("ray:")
    assert np.array_equal(cluster[-1].image, local[-1].image) and isinstance(local[-1], Result)


def test_a_region_job_at_16_bits_gives_the_same_bytes_through_both_runners(servers, content, style):
    """Masks, a tileable job and a 16-bit content travel to a Ray Serve replica as they
    reach a local worker."""
    h, w = content.shape[:2]
    deep = content.astype(np.uint16) * 257
    mask = np.zeros((h, w, 1), np.uint8)
    mask[:, : w // 2] = 255
    params = SEEDED.replace(tileable=1)
    local = _run(servers["local"].port, deep, style, params, style_masks=[mask])
    cluster = _run(servers["cluster"].port, deep, style, params, style_masks=[mask])
    assert isinstance(local[-1], Result) and local[-1].image.dtype == np.uint16
    assert np.array_equal(cluster[-1].image, local[-1].image)


@pytest.mark.parametrize("runner", ["local", "cluster"])
def test_cancel_frees_the_worker_for_the_queued_job_and_a_full_queue_refuses(servers, runner, content, style):
    """One worker, max_queue 1: a long job runs, a second waits (Queued 1), a third is
    refused RESOURCE_EXHAUSTED; cancelling the first lets the second run to its result."""
    port = servers[runner].port
    long = SEEDED.replace(steps=100_000, scales=1)
    first = Client(f"127.0.0.1:{port}").stylize(content, [style], long)
    next(e for e in first if isinstance(e, Progress))
    waited: list = []

    def follow():  # the second job, its events as they come
        with Client(f"127.0.0.1:{port}") as client:
            waited.extend(client.stylize(content, [style], SEEDED))

    second = threading.Thread(target=follow)
    second.start()
    for _ in range(300):
        if waited:
            break
        threading.Event().wait(0.01)
    assert waited and waited[0] == Queued(1)
    with pytest.raises(RemoteError) as refused:
        _run(port, content, style)
    assert refused.value.code.name == "RESOURCE_EXHAUSTED" and "busy" in refused.value.details
    first.close()  # the client cancels: the worker stops within one step
    second.join(60)
    assert isinstance(waited[-1], Result)


@pytest.mark.parametrize("runner", ["local", "cluster"])
def test_an_engine_refusal_has_the_same_status_through_both_runners(servers, runner, content, style):
    """max_memory binds where the job runs, in the worker's process (admission cannot
    know that process): 0.05 GiB is less than the process holds, and the engine says
    so before any work. Either way INVALID_ARGUMENT with the engine's words: one
    mapping of engine failures (service/jobs.py, failure)."""
    with pytest.raises(RemoteError) as failed:
        _run(servers[runner].port, content, style, SEEDED.replace(max_memory=0.05))
    assert failed.value.code.name == "INVALID_ARGUMENT"
    assert failed.value.details.startswith("max_memory: 0.05 GiB counts the whole process")
