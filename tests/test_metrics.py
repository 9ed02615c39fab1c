"""Prometheus metrics (serve --metrics-port): jobs by outcome, queue depth, job
seconds, device busy time and fraction; in process and from a real server process,
scraped over HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from stylecore import Progress, Result, preset
from styleserver.service import devices
from styleserver.client import Client, RemoteError

pytest.importorskip("prometheus_client")
from styleserver.service.metrics import Metrics  # noqa: E402

FAST = preset("default").replace(size=48, scales=1, steps=3)
EXE = str(Path(sys.executable).with_name("style-transfer"))


def value(text: str, name: str, **labels) -> float:
    """One sample's value from the exposition text."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.M)
    assert match, f"{name} {labels} not in:\n{text}"
    return float(match.group(1))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def test_outcomes_queue_and_devices(start_server, content, style):
    metrics = Metrics()
    running = start_server(max_queue=4, max_pixels=10_000, workers=devices.parse("cpu:2", cores=2, gpus=0),
                           metrics=metrics)
    port = metrics.serve("127.0.0.1", 0)
    try:
        address = f"127.0.0.1:{running.port}"
        text = scrape(port)
        assert value(text, "style_transfer_queue_depth") == 0 and value(text, "style_transfer_running_jobs") == 0
        assert value(text, "style_transfer_jobs_total", outcome="done") == 0
        with Client(address) as c:
            assert isinstance(list(c.stylize(content, [style], FAST))[-1], Result)
            with pytest.raises(RemoteError):
                list(c.stylize(np.zeros((200, 200, 3), np.uint8), [style], FAST))  # over max_pixels: refused
        # Two long jobs hold both workers, a third waits: depth 1, two running.
        long_jobs = [Client(address).stylize(content, [style], FAST.replace(steps=100_000)) for _ in range(2)]
        for events in long_jobs:
            next(e for e in events if isinstance(e, Progress))
        waiting = threading.Thread(target=lambda: list(Client(address).stylize(content, [style], FAST)))
        waiting.start()
        deadline = time.monotonic() + 10
        while running.service.scheduler.depth != (2, 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        text = scrape(port)
        assert value(text, "style_transfer_queue_depth") == 1 and value(text, "style_transfer_running_jobs") == 2
        for events in long_jobs:
            events.close()  # cancelled by the client
        waiting.join(30)
        deadline = time.monotonic() + 10
        while running.service.scheduler.depth != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the cancelled calls' log lines (and counts) follow their release
        text = scrape(port)
        assert value(text, "style_transfer_jobs_total", outcome="done") == 2
        assert value(text, "style_transfer_jobs_total", outcome="refused") == 1
        assert value(text, "style_transfer_jobs_total", outcome="cancelled_by_client") == 2
        assert value(text, "style_transfer_job_seconds_count") == 4  # the refused one never ran
        assert value(text, "style_transfer_queue_depth") == 0
        busy = [value(text, "style_transfer_device_busy_seconds_total", device=d) for d in ("cpu:0", "cpu:1")]
        assert all(b > 0 for b in busy)
        fractions = [value(text, "style_transfer_device_busy_fraction", device=d) for d in ("cpu:0", "cpu:1")]
        assert all(0 < f <= 1 for f in fractions)
        assert sum(value(text, "style_transfer_device_jobs_total", device=d) for d in ("cpu:0", "cpu:1")) == 4
    finally:
        metrics.stop()


def test_serve_metrics_port_from_a_process(weights_file):
    env = dict(os.environ, STYLE_TRANSFER_WEIGHTS=weights_file, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([EXE, "serve", "--port", "0", "--devices", "cpu:2", "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("listening on 127.0.0.1:")
        line = proc.stdout.readline()
        match = re.fullmatch(r"metrics on http://127\.0\.0\.1:(\d+)/metrics\n", line)
        assert match, line
        text = scrape(int(match.group(1)))
        assert value(text, "style_transfer_queue_depth") == 0
        assert value(text, "style_transfer_device_busy_fraction", device="cpu:1") == 0
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
