"""The local server the plug-in starts for itself (style_transfer_local.py), outside
GIMP: a bare interpreter that sees only the standard library and the plug-in's folder,
as GIMP's Python does, starting real `style-transfer serve` processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

import stylegimp

from serve_process import EXE, health

SCRIPT = r"""
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/vendor"]
import os; os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
import style_transfer_local as local
import style_transfer_rpc as rpc
args = json.loads(sys.argv[2])
server = rpc.Server(address=args["address"], token=args.get("token"), tls=args.get("tls", False))
statuses = []
ready_before = local.ready_info(server) is not None  # what the dialog asks each second while it starts
t0 = time.monotonic()
try:
    started = local.ensure(server, sys.argv[1], args["log_dir"], statuses.append, timeout=args.get("timeout", 120))
    info = rpc.info(server)
except rpc.ServerError as e:
    print(json.dumps({"error": str(e), "statuses": statuses, "ready_before": ready_before})); sys.exit(0)
ready = local.ready_info(server)
print(json.dumps({"started": started, "seconds": time.monotonic() - t0, "device": info.device,
                  "statuses": statuses, "pid": local.starting(args["log_dir"]), "ready_before": ready_before,
                  "ready_presets": [p.name for p in ready.presets] if ready else None}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install(tmp_path, **recorded):
    return stylegimp.install(tmp_path / "plug-ins", **recorded)


def plugin(plugin_dir, log_dir, address, **more) -> dict:
    settings = json.dumps(dict(more, address=address, log_dir=str(log_dir)))
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", SCRIPT, str(plugin_dir), settings], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_gone(pid: int, seconds: float) -> float | None:
    """Seconds until pid is gone (None: still there after `seconds`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return time.monotonic() - t0
        try:  # an exited child of the detached session is reaped by init; a zombie counts as gone
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return time.monotonic() - t0
        except OSError:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def test_install_records_this_installations_server(tmp_path, weights_file):
    target = install(tmp_path, weights=weights_file, idle_exit=42.0)
    recorded = json.loads((target / "install.json").read_text())["server"]
    assert recorded == {"command": [str(os.path.realpath(EXE))], "idle_exit": 42.0, "weights": weights_file}


def test_nothing_answering_on_this_machine_starts_a_server_that_exits_when_idle(tmp_path, weights_file):
    target = install(tmp_path, weights=weights_file, idle_exit=2.0)
    address = f"127.0.0.1:{free_port()}"
    out = plugin(target, tmp_path, address)
    assert out.get("started") is True, out
    assert out["statuses"] == ["Starting the style-transfer server (loading VGG19)..."]
    assert "cpu" in out["device"].lower()
    pid = out["pid"]
    assert pid and health(address) == "SERVING"
    # The dialog's poll: nothing before the start, the server's presets once it serves.
    assert out["ready_before"] is False and out["ready_presets"][:2] == ["default", "draft"]
    # A second run finds it serving: nothing more is started.
    again = plugin(target, tmp_path, address)
    assert again.get("started") is False and again["pid"] == pid
    gone = wait_gone(pid, 2.0 + 10)
    assert gone is not None, "the server the plug-in started is still running"
    assert health(address) == "UNAVAILABLE"
    log = (tmp_path / "style-transfer-server.log").read_text()
    assert "started by the GIMP plug-in" in log and "--idle-exit" in log and "exiting" in log


@pytest.mark.parametrize("address, settings", [
    ("192.0.2.1:50051", {}),  # TEST-NET-1: never this machine
    ("127.0.0.1:{port}", {"token": "s3cret"}),
    ("127.0.0.1:{port}", {"tls": True}),
], ids=["remote", "token", "tls"])
def test_a_remote_or_secured_server_is_never_started(tmp_path, weights_file, address, settings):
    target = install(tmp_path, weights=weights_file)
    out = plugin(target, tmp_path, address.format(port=free_port()), timeout=5, **settings)
    assert "No style-transfer server answers" in out.get("error", ""), out
    assert out["statuses"] == [] and out["ready_before"] is False
    assert not (tmp_path / "style-transfer-server.pid").exists()
    assert not (tmp_path / "style-transfer-server.log").exists()


def test_a_server_that_fails_to_start_says_why_and_where_its_log_is(tmp_path):
    target = install(tmp_path, command=[EXE], weights=str(tmp_path / "missing.pth"))
    out = plugin(target, tmp_path, f"127.0.0.1:{free_port()}")
    error = out.get("error", "")
    assert "stopped at start (exit status" in error, out
    assert "missing.pth" in error  # the server's own last line says what is wrong
    assert str(tmp_path / "style-transfer-server.log") in error


def test_a_plugin_installed_without_a_server_to_start_says_what_to_run(tmp_path):
    target = install(tmp_path)
    info = json.loads((target / "install.json").read_text())
    info["server"] = None
    (target / "install.json").write_text(json.dumps(info))
    out = plugin(target, tmp_path, f"127.0.0.1:{free_port()}")
    assert "run `style-transfer gimp install`" in out.get("error", ""), out
