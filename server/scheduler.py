"""One queue in front of one or more workers (one per device, serve --devices). A
job goes to the first free worker; the others wait in arrival order and are told
their place in the queue as it changes.

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

from styletransfer.v1.wire import Queued  # the event is the contract's (wire.py), shared with clients

from .devices import WorkerSpec


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


class Abandoned(Exception):
    """The client went away while its job waited."""


@dataclass(eq=False)
class Ticket:
    """A job's place. `cancel` is set to stop it (server shutdown); `worker` is the
    worker it runs on once it has left the queue."""

    cancel: threading.Event = field(default_factory=threading.Event)
    worker: Worker | None = None
    entered: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Worker:
    spec: WorkerSpec
    ticket: Ticket | None = None  # the job it runs now
    jobs: int = 0  # jobs it has taken since the server started
    busy_seconds: float = 0.0  # finished jobs' time on it
    busy_since: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def busy(self) -> bool:
        return self.ticket is not None

    def busy_total(self, now: float) -> float:
        return self.busy_seconds + (now - self.busy_since if self.ticket is not None else 0.0)


class Scheduler:
    def __init__(self, max_queue: int, workers: Sequence[WorkerSpec] | None = None):
        self.max_queue = max_queue
        self.workers = [Worker(w) for w in (workers or [WorkerSpec("cpu", "cpu")])]
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
            for worker in self.workers:
                if worker.ticket is not None:
                    worker.ticket.cancel.set()

    @property
    def depth(self) -> tuple[int, int]:
        """(jobs running, jobs waiting); with one worker the first is 0 or 1."""
        with self._cond:
            return sum(w.busy for w in self.workers), len(self._waiting)

    def snapshot(self) -> list[dict]:
        """Every worker's name, state, threads, jobs taken and seconds busy."""
        now = time.monotonic()
        with self._cond:
            return [dict(name=w.name, busy=w.busy, threads=w.spec.threads, jobs=w.jobs,
                         busy_seconds=w.busy_total(now)) for w in self.workers]

    # --- under the lock --------------------------------------------------------------

    def _free(self) -> Worker | None:
        return next((w for w in self.workers if w.ticket is None), None)

    def _dispatch(self) -> None:
        """The queue's head takes the first free worker, while both exist."""
        while self._waiting and (worker := self._free()) is not None:
            ticket = self._waiting.popleft()
            ticket.worker, worker.ticket = worker, ticket
            worker.jobs += 1
            worker.busy_since = time.monotonic()
        self._cond.notify_all()
        if self.on_change is not None:
            self.on_change()

    def _leave(self, ticket: Ticket) -> None:
        worker = ticket.worker
        if worker is not None and worker.ticket is ticket:
            worker.ticket = None
            worker.busy_seconds += time.monotonic() - worker.busy_since
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
        self._dispatch()
