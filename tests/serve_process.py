"""`style-transfer serve` as a child process on an ephemeral loopback port: what the
hostile-client tests, the cluster scenario and the devices benchmark share.

    server = ServeProcess.serving(weights_path, "--devices", "cpu")  # started, SERVING
    ... server.address ...
    server.stop()

Its log (stderr) is kept in `log` (`output()` waits for the last of it); `tree`,
`pss_mb`, `status` and `cpu_seconds` read /proc for the memory and CPU figures the
tests and benchmarks report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXE = str(Path(sys.executable).with_name("style-transfer"))
HOST = "127.0.0.1"


def health(address: str, timeout: float = 1.0) -> str:
    """The health status name, or the gRPC error code's name."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as e:
            return e.code().name


class ServeProcess:
    """Starts `style-transfer serve --host 127.0.0.1 --port 0 *args` and reads the port
    it prints. weights: the weights file (STYLE_TRANSFER_WEIGHTS). env: added to this
    process's environment. new_session: its own process group (the cluster scenario
    kills Ray's processes with it)."""

    def __init__(self, *args: str, weights: str | None = None, env: dict | None = None, new_session: bool = False):
        environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        if weights is not None:
            environ["STYLE_TRANSFER_WEIGHTS"] = str(weights)
        self.proc = subprocess.Popen([EXE, "serve", "--host", HOST, "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=environ, start_new_session=new_session)
        line = self.proc.stdout.readline()
        assert line.startswith(f"listening on {HOST}:"), line + self.proc.stderr.read()
        self.port = int(line.rsplit(":", 1)[1])
        self.address = f"{HOST}:{self.port}"
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def serving(cls, weights: str, *args: str, wait: float = 60, **kw) -> "ServeProcess":
        """Started on the weights file and SERVING within `wait` seconds (else raises)."""
        server = cls(*args, weights=weights, **kw)
        server.wait_serving(wait)
        return server

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def output(self) -> str:
        """The whole log of an exited process (waits for the reader to reach its end)."""
        self._reader.join(10)
        return "\n".join(self.log)

    def wait_serving(self, seconds: float) -> float:
        """Waits until the health service says SERVING (the weights are loaded); returns
        the seconds waited. Raises with the log's tail if it does not within `seconds`."""
        t0 = time.monotonic()
        while health(self.address, timeout=2) != "SERVING":
            if time.monotonic() - t0 > seconds or self.proc.poll() is not None:
                raise RuntimeError("server did not become SERVING:\n" + "\n".join(self.log[-30:]))
            time.sleep(0.1)
        return time.monotonic() - t0

    # --- what /proc says -------------------------------------------------------------

    def status(self, key: str) -> int:
        """A /proc/PID/status figure: VmRSS, VmHWM (kB) or Threads."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def rss_mb(self) -> float:
        return self.status("VmRSS") / 1024

    def peak_mb(self) -> float:
        return self.status("VmHWM") / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tree(self) -> list[int]:
        """This process and every descendant (for a cluster front: Ray's raylet, GCS, workers)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def pss_mb(self) -> float:
        """Proportional set size of the whole tree, MiB."""
        total = 0
        for pid in self.tree():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self, wait: float = 30) -> int:
        """SIGTERM, then SIGKILL after `wait` seconds; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)
