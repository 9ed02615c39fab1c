"""How long the server has been idle: `serve --idle-exit` ends a server nobody uses.

A server the GIMP plug-in starts for itself (docs/gimp.md, "The local server") must
not outlive the session that needed it, and nothing tells it when GIMP closes: it
ends itself once no call has been in progress for the idle time. What counts as use:
a Stylize call from its first byte to its last event (queued, uploading or running)
and a GetInfo. Health checks do not count: a client waiting for the server to come
up (or a monitor) would otherwise keep it alive for ever.
"""

from __future__ import annotations

import threading
import time


class Activity:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._busy = 0  # calls in progress
        self._last = clock()  # when the last call ended (or the server became ready)

    def begin(self) -> None:
        with self._lock:
            self._busy += 1

    def end(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last = self._clock()

    def touch(self) -> None:
        """A call that begins and ends at once (GetInfo)."""
        with self._lock:
            self._last = self._clock()

    def idle_for(self) -> float:
        """Seconds since the last call ended; 0 while one is in progress."""
        with self._lock:
            return 0.0 if self._busy else self._clock() - self._last
