"""The local server the plug-in manages: started when nothing answers, gone when idle.

A GIMP user should never need a terminal for the local case (Krita AI Diffusion's
model: the plug-in installs and runs its server). When the server address is this
machine, no token or TLS is set, and nothing answers there, the plug-in starts
`style-transfer serve` itself: the installation `style-transfer gimp install` recorded
in install.json ("server": the command, the idle time, the weights file), detached
from GIMP, its output in a log file in the GIMP profile, with `--idle-exit` so that
it ends by itself once unused (nothing tells it when GIMP closes). A remote or
secured server is never started, only connected to: its owner runs it.

This module knows nothing of GIMP (the plug-in passes a status callback), so it is
tested outside GIMP against real `style-transfer serve` processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from typing import Callable

import style_transfer_rpc as rpc
from styletransfer.v1 import wire

LOG_NAME = "style-transfer-server.log"  # in the GIMP profile
START_TIMEOUT = 300.0  # seconds for the server to load VGG19 and answer (a cold disk, a slow CPU)


def may_start(server: rpc.Server) -> bool:
    """Only a plain server on this machine: a token or TLS means someone else runs it."""
    host, _ = rpc.host_port(server.address)
    return host in wire.LOCAL_HOSTS and not server.token and not server.tls


def health(server: rpc.Server, timeout: float = 2.0) -> str:
    """SERVING, NOT_SERVING (VGG19 still loading), or DOWN (nothing answers there)."""
    from grpclib.client import Channel
    from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
    from grpclib.health.v1.health_grpc import HealthStub

    host, port = rpc.host_port(server.address)

    async def check():
        channel = Channel(host, port)
        try:
            reply = await HealthStub(channel).Check(HealthCheckRequest(), timeout=timeout)
            return HealthCheckResponse.ServingStatus.Name(reply.status)
        finally:
            channel.close()

    try:
        return asyncio.run(check())
    except Exception:  # noqa: BLE001 - refused, timed out, not gRPC: nothing usable answers
        return "DOWN"


def ready_info(server: rpc.Server):
    """The server's Info once it serves, None while it is down or still loading: quick
    enough (half a second at most when nothing answers) for a dialog to ask every second
    while a server it started loads."""
    try:
        if health(server, timeout=0.5) != "SERVING":
            return None
        return rpc.info(server, timeout=2.0)
    except rpc.ServerError:
        return None


def launcher(plugin_dir: str) -> dict:
    """install.json's "server": {"command": [...], "idle_exit": s, "weights": path or None}.
    Raises ServerError saying how to record one."""
    try:
        with open(os.path.join(plugin_dir, "install.json"), encoding="utf-8") as f:
            recorded = json.load(f).get("server") or {}
    except (OSError, ValueError):
        recorded = {}
    if not recorded.get("command") or not recorded.get("idle_exit"):
        raise rpc.ServerError("The plug-in does not know which style-transfer installation to start: run "
                              "`style-transfer gimp install` from it (or start `style-transfer serve` yourself).")
    return recorded


PID_NAME = "style-transfer-server.pid"  # in the GIMP profile: the server being started, for the next call
_children: dict = {}  # pid -> Popen, the servers this process started (to reap and read their exit status)


def start(server: rpc.Server, plugin_dir: str, log_dir: str) -> int:
    """Starts the recorded server for server.address, detached, its output appended
    to the log; returns its pid. One already starting (the pid file names a live
    `serve`) is not started twice: the dialog starts it, OK waits for it."""
    pid = starting(log_dir)
    if pid:
        return pid
    recorded = launcher(plugin_dir)
    host, port = rpc.host_port(server.address)
    command = [*recorded["command"], "serve", "--host", host, "--port", str(port),
               "--idle-exit", str(recorded["idle_exit"])]
    if recorded.get("weights"):
        command += ["--weights", recorded["weights"]]
    try:
        with open(os.path.join(log_dir, LOG_NAME), "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} started by the GIMP plug-in: "
                      f"{' '.join(command)}\n".encode())
            log.flush()
            # Detached (its own session): it outlives this plug-in process and GIMP's
            # signals, and ends by itself with --idle-exit.
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, close_fds=True)
    except OSError as e:
        raise rpc.ServerError(f"Cannot start the style-transfer server {recorded['command'][0]}: "
                              f"{e.strerror or e}. Run `style-transfer gimp install` again from the "
                              "installation you use.") from None
    _children[process.pid] = process
    with open(os.path.join(log_dir, PID_NAME), "w", encoding="utf-8") as f:
        f.write(f"{process.pid}\n")
    return process.pid


def starting(log_dir: str) -> int | None:
    """The pid of a server the plug-in started that is still alive, or None."""
    try:
        with open(os.path.join(log_dir, PID_NAME), encoding="utf-8") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None  # reaps it when it has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the pid
        return False
    try:  # a reused pid: make sure it is a server
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"serve" in f.read()
    except OSError:
        return True  # no /proc (macOS): trust the signal


def ensure(server: rpc.Server, plugin_dir: str, log_dir: str, on_status: Callable[[str], None] = lambda _: None,
           timeout: float = START_TIMEOUT) -> bool:
    """Makes sure a server answers at server.address: returns False when one already
    did, True when the plug-in started it (now or from the dialog) and it now serves.
    A remote or secured server is left alone (False). Raises ServerError when the start
    failed (with why and the log's path)."""
    if not may_start(server):
        return False  # only connected to: the calls themselves say what is wrong (down, token, TLS)
    state = health(server)
    if state == "SERVING":
        return False
    log_path = os.path.join(log_dir, LOG_NAME)
    pid = start(server, plugin_dir, log_dir) if state == "DOWN" else None
    on_status("Starting the style-transfer server (loading VGG19)...")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pid is not None and not alive(pid):
            child = _children.get(pid)
            status = f" (exit status {child.returncode})" if child is not None else ""
            raise rpc.ServerError(f"The style-transfer server stopped at start{status}: {last_line(log_path)}. "
                                  f"Its log: {log_path}")
        if health(server) == "SERVING":
            return pid is not None
        time.sleep(0.25)
    raise rpc.ServerError(f"The style-transfer server did not become ready in {timeout:.0f} s. Its log: {log_path}")


def last_line(path: str) -> str:
    """The log's last non-empty line, for an error message."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(nothing in the log)"
