"""Several clients at once against a test server: one thread each, arriving apart."""

from __future__ import annotations

import threading
import time

import numpy as np

from stylecore import StyleParams
from styleserver.client import Client


def concurrent_stylize(address: str, content: np.ndarray, style: np.ndarray, params: StyleParams, count: int,
                       gap: float = 0.05, timeout: float = 120) -> list[list]:
    """`count` clients, each starting `gap` seconds after the one before, each running
    one job; returns every client's events, in the clients' order."""
    results: list[list] = [[] for _ in range(count)]

    def run(i: int) -> None:
        with Client(address) as c:
            results[i].extend(c.stylize(content, [style], params))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
        time.sleep(gap)
    for t in threads:
        t.join(timeout)
    return results
