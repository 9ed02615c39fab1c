"""One engine replica of the Ray Serve deployment (deploy.py): one engine on one
device (a GPU, or `threads` CPU cores), one job at a time.

It runs a prepared job (service/jobs.py) exactly as a local worker does, through
`job_messages`, and sends the messages back serialized; a failure goes back as the
status `jobs.failure` gives it, so the front answers as a single server would.
"""

from __future__ import annotations

import asyncio
import os
import threading

from stylecore import Cancelled

from ..service.jobs import Job, JobFailed, ModelInfo, failure, job_messages


class EngineReplica:
    """`run` is an async generator on purpose: Serve delivers a caller's cancel only to
    async generators, and a slot is held until the engine's thread has stopped, so a
    device never runs two jobs at once."""

    def __init__(self, weights: str | None, threads: int = 0):
        import torch

        from stylecore import Engine, resolve_device, resolve_dtype

        from ..weights import load

        w = load(weights, download=False)
        self.device = resolve_device("auto")
        self.threads = threads
        self.engine = Engine(w.model)
        self.engine.network(self.device)
        self.model = ModelInfo(f"{w.path.name} sha256:{w.sha256}", w.verified)
        self.sha256 = w.sha256
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
        return dict(name=self.name, pid=self.pid, model=self.model.name, sha256=self.sha256,
                    verified=self.model.verified, device=str(self.device), dtype=self.dtype, threads=self.threads)

    async def run(self, job: Job):
        """Yields ("replica", describe()), then ("event", serialized StylizeEvent) for
        every message, or ("failed", (status, message, refused)) once."""
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
                for message in job_messages(self.engine, job, str(self.device), stop.is_set, self.model,
                                            f"ray:{self.name}"):
                    if stop.is_set():
                        break
                    put(("event", message.SerializeToString()))
            except Cancelled:
                pass
            except Exception as e:  # noqa: BLE001 - reported, not raised: the replica stays up
                failed = failure(e) or JobFailed("UNKNOWN", f"{type(e).__name__}: {e}")
                put(("failed", (failed.status, str(failed), failed.refused)))
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
