"""One queue in front of the workers, whatever they are (a local device each, serve
--devices; or the slots of a Ray Serve cluster, cluster/runner.py). A job goes to the
first free worker; the others wait in arrival order and are told their place in the
queue as it changes. Shutdown, cancel, depth and the per-worker figures of GetInfo
and the metrics are kept here for every kind of worker.

Dispatch happens under the one lock whenever a job arrives or a worker frees, so
the order is exact: the head of the queue always gets the next free worker, and a
waiting job's position (the jobs waiting ahead of it, plus one: 1 = next to start)
only ever falls."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1.wire import Queued  # the event is the contract's (wire.py), shared with clients

from .jobs import Job


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


class Abandoned(Exception):
    """The client went away while its job waited."""


class Worker(Protocol):
    """What runs a prepared job: a local device (workers.LocalWorker) or a slot of a
    Ray Serve cluster (cluster.runner.ClusterWorker)."""

    name: str  # what GetInfo, the metrics and the log lines call it
    threads: int  # CPU threads it runs on; 0: PyTorch's own count, or not a local CPU

    def run(self, job: Job, cancel: Callable[[], bool]) -> Iterator[pb.StylizeEvent]:
        """The job's events as messages. Raises Cancelled within one step of cancel()
        returning True, JobFailed (or an engine exception, jobs.failure) when it fails."""
        ...


@dataclass(eq=False)
class Ticket:
    """A job's place. `cancel` is set to stop it (server shutdown); `worker` is the
    worker it runs on once it has left the queue."""

    cancel: threading.Event = field(default_factory=threading.Event)
    worker: Worker | None = None
    entered: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Slot:
    """A worker and its figures."""

    worker: Worker
    ticket: Ticket | None = None  # the job it runs now
    jobs: int = 0  # jobs it has taken since the server started
    busy_seconds: float = 0.0  # finished jobs' time on it
    busy_since: float = 0.0

    @property
    def busy(self) -> bool:
        return self.ticket is not None

    def busy_total(self, now: float) -> float:
        return self.busy_seconds + (now - self.busy_since if self.ticket is not None else 0.0)


class Scheduler:
    def __init__(self, max_queue: int, workers: Sequence[Worker]):
        self.max_queue = max_queue
        self._slots = [_Slot(w) for w in workers]
        self.started = time.monotonic()
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._closed = False
        self.on_change: Callable[[], None] | None = None  # metrics: called (under the lock) on every change

    def enter(self) -> Ticket:
        """A new job's ticket, already on a worker when one is free. Raises QueueFull
        when every worker is busy and max_queue jobs already wait."""
        with self._cond:
            if self._closed:
                raise ShuttingDown()
            if self._free() is None and len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} jobs are already waiting (the limit is {self.max_queue})")
            ticket = Ticket()
            self._waiting.append(ticket)
            self._dispatch()
            return ticket

    def wait_turn(self, ticket: Ticket, is_active: Callable[[], bool], poll: float = 0.1) -> Iterator[Queued]:
        """Yields Queued whenever the position changes; returns once `ticket` holds a
        worker (ticket.worker). Raises Abandoned when is_active() turns False,
        ShuttingDown on close()."""
        last = None
        while True:
            with self._cond:
                while True:
                    if self._closed or not is_active():
                        self._leave(ticket)
                        raise ShuttingDown() if self._closed else Abandoned()
                    if ticket.worker is not None:
                        return
                    position = self._waiting.index(ticket) + 1
                    if position != last:
                        break
                    self._cond.wait(poll)  # is_active() has no callback here: poll it
            last = position
            yield Queued(position)

    def release(self, ticket: Ticket) -> None:
        with self._cond:
            self._leave(ticket)

    def close(self) -> None:
        """Refuse new jobs and wake the waiting ones (they raise ShuttingDown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel_running(self) -> None:
        with self._cond:
            for slot in self._slots:
                if slot.ticket is not None:
                    slot.ticket.cancel.set()

    @property
    def depth(self) -> tuple[int, int]:
        """(jobs running, jobs waiting); with one worker the first is 0 or 1."""
        with self._cond:
            return sum(s.busy for s in self._slots), len(self._waiting)

    def snapshot(self) -> list[dict]:
        """Every worker's name, state, threads, jobs taken and seconds busy."""
        now = time.monotonic()
        with self._cond:
            return [dict(name=s.worker.name, busy=s.busy, threads=s.worker.threads, jobs=s.jobs,
                         busy_seconds=s.busy_total(now)) for s in self._slots]

    # --- under the lock --------------------------------------------------------------

    def _free(self) -> _Slot | None:
        return next((s for s in self._slots if s.ticket is None), None)

    def _dispatch(self) -> None:
        """The queue's head takes the first free worker, while both exist."""
        while self._waiting and (slot := self._free()) is not None:
            ticket = self._waiting.popleft()
            ticket.worker, slot.ticket = slot.worker, ticket
            slot.jobs += 1
            slot.busy_since = time.monotonic()
        self._cond.notify_all()
        if self.on_change is not None:
            self.on_change()

    def _leave(self, ticket: Ticket) -> None:
        slot = next((s for s in self._slots if s.ticket is ticket), None)
        if slot is not None:
            slot.ticket = None
            slot.busy_seconds += time.monotonic() - slot.busy_since
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
        self._dispatch()
