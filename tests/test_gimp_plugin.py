"""The GIMP plug-in's installation and its gRPC client, outside GIMP: the client
runs in a bare interpreter that sees only the standard library and the plug-in's
own folder, as in a GIMP whose Python has no grpcio."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import stylegimp
from styleserver.cli import main


@pytest.fixture(scope="module")
def server(start_server):
    return start_server()


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    return stylegimp.install(tmp_path_factory.mktemp("gimp") / "plug-ins")


def test_install_layout(plugin_dir):
    main_file = plugin_dir / "style-transfer.py"
    assert plugin_dir.name == "style-transfer" and main_file.is_file()
    assert main_file.stat().st_mode & stat.S_IXUSR
    assert main_file.read_text().startswith("#!/usr/bin/env python3")
    for name in stylegimp.VENDORED:
        assert plugin_dir.joinpath("vendor", *name.split(".")).is_dir(), name
    compiled = [p for p in plugin_dir.rglob("*") if p.suffix in (".so", ".pyd", ".dylib", ".dll")]
    assert compiled == []


CLIENT = r"""
import hashlib, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/vendor"]
import os; os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
import style_transfer_rpc as rpc
w, h, c = 40, 30, 4
pixels = bytes((i * 7) % 256 for i in range(w * h * c))
style = bytes((i * 13) % 256 for i in range(32 * 32 * 3))
events = []
job = rpc.Job(content=pixels, width=w, height=h, channels=c, styles=[(style, 32, 32, 3)],
              params={"size": 32, "steps": 3, "scales": 1}, preview_every=1)
try:
    result = rpc.run(sys.argv[2], job, lambda e: events.append(e.WhichOneof("event")))
except rpc.ServerError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
print(json.dumps({
    "modules": sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("grpc", "grpclib", "torch", "numpy")}),
    "alpha_kept": result.pixels[3::4] == pixels[3::4], "changed": result.pixels != pixels,
    "size": len(result.pixels), "events": events, "protobuf": __import__("google.protobuf.internal.api_implementation",
    fromlist=["x"]).Type(),
}))
"""


def run_client(plugin_dir, address):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", CLIENT, str(plugin_dir), address],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plugin_client_speaks_grpc_with_only_the_stdlib_and_its_vendor_folder(plugin_dir, server):
    out = run_client(plugin_dir, f"127.0.0.1:{server.port}")
    assert out["modules"] == ["grpclib"]  # no grpcio, no numpy, no torch
    assert out["protobuf"] == "python"
    assert out["alpha_kept"] and out["changed"] and out["size"] == 40 * 30 * 4
    assert out["events"][0] == "started" and out["events"][-1] == "done"
    assert "preview" in out["events"] and "progress" in out["events"]


def test_plugin_client_with_no_server_names_the_address_and_the_command(plugin_dir):
    out = run_client(plugin_dir, "127.0.0.1:9")
    assert "No style-transfer server answers at 127.0.0.1:9" in out["error"]
    assert "style-transfer serve --port 9" in out["error"]


def test_gimp_commands_install_doctor_uninstall(tmp_path, capsys, server):
    plugins = tmp_path / "GIMP" / "3.0" / "plug-ins"
    assert main(["gimp", "install", "--dir", str(plugins)]) == 0
    assert (plugins / "style-transfer" / "style-transfer.py").is_file()
    assert main(["gimp", "doctor", "--dir", str(plugins), "--server", f"127.0.0.1:{server.port}"]) == 0
    assert main(["gimp", "doctor", "--dir", str(plugins), "--server", "127.0.0.1:9"]) == 1
    out = capsys.readouterr().out
    assert "[!!] no server at 127.0.0.1:9" in out and "style-transfer serve --port 9" in out
    assert main(["gimp", "uninstall", "--dir", str(plugins)]) == 0
    assert not (plugins / "style-transfer").exists()
    assert main(["gimp", "uninstall", "--dir", str(plugins)]) == 0
    assert "nothing to do" in capsys.readouterr().out
