"""Several clients at once against a test server: one thread each, arriving apart.

`fan_out` (and `FanOut`, where the caller acts between starting the threads and
joining them) is the one thread fan-out of the tests and benchmarks (bench/ puts
tests/ on sys.path for it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

from stylecore import StyleParams
from styleserver.client import Client

_RUNNING = object()


class FanOut:
    """One thread per call of `fn`, started at once: `calls` is a count n (fn(0) ..
    fn(n - 1)) or the items to call it with (fn(item) each), started in order, `gap`
    seconds after each start. `join` waits for them and returns what they gave."""

    def __init__(self, fn: Callable, calls: int | Iterable, gap: float = 0.0, daemon: bool = False):
        items = list(range(calls)) if isinstance(calls, int) else list(calls)
        self._values: list = [_RUNNING] * len(items)
        self._raised: list[bool] = [False] * len(items)

        def run(i: int, item) -> None:
            try:
                self._values[i] = fn(item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller as a value
                self._values[i], self._raised[i] = e, True

        self.threads = [threading.Thread(target=run, args=(i, item), daemon=daemon) for i, item in enumerate(items)]
        for t in self.threads:
            t.start()
            if gap:
                time.sleep(gap)

    def join(self, timeout: float | None = None, check: bool = False) -> list:
        """Wait up to `timeout` seconds for each thread in turn; every call's result in
        the calls' order: what fn returned, the exception it raised, or a TimeoutError
        for one still running. `check`: raise the first exception a call raised, as an
        exception in a test's thread fails the test (one still running is not raised)."""
        for t in self.threads:
            t.join(timeout)
        values = [TimeoutError("still running") if v is _RUNNING else v for v in self._values]
        if check:
            for value, raised in zip(values, self._raised):
                if raised:
                    raise value
        return values


def fan_out(fn: Callable, calls: int | Iterable, timeout: float | None = None, gap: float = 0.0,
            check: bool = False) -> list:
    """Run fn once per call (see FanOut), each in its own thread, and wait for them:
    the results in order, exceptions as values (`check`: raised)."""
    return FanOut(fn, calls, gap).join(timeout, check)


def concurrent_stylize(address: str, content: np.ndarray, style: np.ndarray, params: StyleParams, count: int,
                       gap: float = 0.05, timeout: float = 120) -> list[list]:
    """`count` clients, each starting `gap` seconds after the one before, each running
    one job; returns every client's events, in the clients' order."""
    results: list[list] = [[] for _ in range(count)]

    def run(i: int) -> None:
        with Client(address) as c:
            results[i].extend(c.stylize(content, [style], params))

    fan_out(run, count, timeout, gap, check=True)
    return results
