"""One job at a time on the device; the others wait in arrival order and are told
their place in the queue as it changes."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from styletransfer.v1.wire import Queued  # the event is the contract's (wire.py), shared with clients


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


class Abandoned(Exception):
    """The client went away while its job waited."""


@dataclass(eq=False)
class Ticket:
    """A job's place. `cancel` is set to stop it (server shutdown)."""

    cancel: threading.Event = field(default_factory=threading.Event)


class Scheduler:
    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._running: Ticket | None = None
        self._closed = False

    def enter(self) -> Ticket:
        """A new job's ticket. Raises QueueFull when max_queue jobs already wait."""
        with self._cond:
            if self._closed:
                raise ShuttingDown()
            busy = self._running is not None or bool(self._waiting)
            if busy and len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} jobs are already waiting (the limit is {self.max_queue})")
            ticket = Ticket()
            self._waiting.append(ticket)
            return ticket

    def wait_turn(self, ticket: Ticket, is_active: Callable[[], bool], poll: float = 0.1) -> Iterator[Queued]:
        """Yields Queued whenever the position changes; returns once `ticket` holds the
        device. Raises Abandoned when is_active() turns False, ShuttingDown on close()."""
        last = None
        while True:
            with self._cond:
                while True:
                    if self._closed or not is_active():
                        self._waiting.remove(ticket)
                        self._cond.notify_all()
                        raise ShuttingDown() if self._closed else Abandoned()
                    if self._running is None and self._waiting[0] is ticket:
                        self._running = self._waiting.popleft()
                        self._cond.notify_all()
                        return
                    position = self._waiting.index(ticket) + (self._running is not None)
                    if position != last:
                        break
                    self._cond.wait(poll)  # is_active() has no callback here: poll it
            last = position
            yield Queued(position)

    def release(self, ticket: Ticket) -> None:
        with self._cond:
            if self._running is ticket:
                self._running = None
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()

    def close(self) -> None:
        """Refuse new jobs and wake the waiting ones (they raise ShuttingDown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel_running(self) -> None:
        with self._cond:
            if self._running is not None:
                self._running.cancel.set()

    @property
    def depth(self) -> tuple[bool, int]:
        """(a job is running, jobs waiting)."""
        with self._cond:
            return self._running is not None, len(self._waiting)
