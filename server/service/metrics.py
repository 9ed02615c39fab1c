"""Prometheus metrics of one server (`serve --metrics-port N`), on its own registry:

    style_transfer_jobs_total{outcome}            jobs by outcome: done, refused,
                                                  cancelled_by_client, failed, ended_by_shutdown
    style_transfer_job_seconds                    histogram: time on a device, of jobs that ran
    style_transfer_queue_depth                    jobs waiting for a device
    style_transfer_running_jobs                   jobs on a device
    style_transfer_device_busy_seconds_total{device}   rate() of it is the busy fraction
    style_transfer_device_busy_fraction{device}   busy time / time since the server started
    style_transfer_device_jobs_total{device}      jobs each device has taken

The gauges are read from the scheduler at scrape time (exact, no sampling). Needs
prometheus_client (in the `server` extra)."""

from __future__ import annotations

import time

OUTCOMES = ("done", "refused", "cancelled_by_client", "failed", "ended_by_shutdown")
BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, float("inf"))


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter("style_transfer_jobs", "Stylize calls by outcome", ["outcome"], registry=self.registry)
        for outcome in OUTCOMES:
            self.jobs.labels(outcome)  # every outcome exported from the start, at 0
        self.job_seconds = Histogram("style_transfer_job_seconds", "seconds a job ran on a device",
                                     buckets=BUCKETS, registry=self.registry)
        self._source = None
        self._http = None
        self.port = 0

    def job_ended(self, outcome: str, ran_seconds: float | None) -> None:
        outcome = outcome.replace(" ", "_")
        self.jobs.labels(outcome if outcome in OUTCOMES else "failed").inc()
        if ran_seconds is not None:
            self.job_seconds.observe(ran_seconds)

    def watch(self, source) -> None:
        """`source` has depth -> (running, waiting), snapshot() -> every worker's dict
        (name, busy, jobs, busy_seconds) and `started` (monotonic): the scheduler,
        or the cluster front."""
        self._source = source
        self.registry.register(_Gauges(self))

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics on host:port (0: any free port); returns the port."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        self.port = server.server_address[1]
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


class _Gauges:
    """Queue and device figures, read at scrape time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        source = self.metrics._source
        if source is None:
            return
        running, waiting = source.depth
        yield GaugeMetricFamily("style_transfer_queue_depth", "jobs waiting for a device", value=waiting)
        yield GaugeMetricFamily("style_transfer_running_jobs", "jobs on a device", value=running)
        busy = CounterMetricFamily("style_transfer_device_busy_seconds", "seconds each device spent on jobs",
                                   labels=["device"])
        fraction = GaugeMetricFamily("style_transfer_device_busy_fraction",
                                     "busy time over the time since the server started", labels=["device"])
        jobs = CounterMetricFamily("style_transfer_device_jobs", "jobs each device has taken", labels=["device"])
        uptime = max(1e-9, time.monotonic() - source.started)
        for worker in source.snapshot():
            busy.add_metric([worker["name"]], worker["busy_seconds"])
            fraction.add_metric([worker["name"]], min(1.0, worker["busy_seconds"] / uptime))
            jobs.add_metric([worker["name"]], worker["jobs"])
        yield busy
        yield fraction
        yield jobs
