"""A client in another language: examples/node/client.js (Node.js, @grpc/grpc-js,
the contract loaded from proto/) against an in-process server on an ephemeral
loopback port: GetInfo, a small RGBA job with its alpha checked byte for byte, and a
cancelled job after which the server takes the next one.

Skips without node or without examples/node/node_modules (`npm ci --prefix
examples/node`), except in CI (the CI variable set), where that is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        missing = "node is not installed"
    elif not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        missing = "the Node dependencies are not installed (npm ci --prefix examples/node)"
    else:
        return node
    if os.environ.get("CI"):
        pytest.fail(f"{missing}; CI must run the Node client (.ci/run installs it)")
    pytest.skip(missing)


def test_node_client_against_a_real_server(start_server):
    node = _node()
    running = start_server()
    proc = subprocess.run([node, str(EXAMPLE / "client.js"), f"127.0.0.1:{running.port}"],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [l.split(":")[0] for l in lines] == ["ok GetInfo", "ok Stylize", "ok Cancel"], proc.stdout
    assert running.service.scheduler.depth == (False, 0)
