"""A real `style-transfer serve` process: startup, the remote CLI, and SIGTERM
in the middle of a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from stylecore import Progress, preset
from styleserver.client import Client, RemoteError
from styleserver.cli import main

EXE = str(Path(sys.executable).with_name("style-transfer"))


def start_server(weights_file, *extra) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, STYLE_TRANSFER_WEIGHTS=weights_file, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([EXE, "serve", "--port", "0", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT"
    assert line.startswith("listening on 127.0.0.1:"), line + proc.stderr.read()
    port = int(line.rsplit(":", 1)[1])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # wait for SERVING
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    return proc, port


def test_sigterm_mid_job_ends_the_job_cleanly_and_exits_0(weights_file, content, style):
    proc, port = start_server(weights_file, "--grace", "1")
    try:
        client = Client(f"127.0.0.1:{port}")
        outcome: list = []

        def job():
            try:
                for e in client.stylize(content, [style], preset("default").replace(size=48, scales=1, steps=100_000)):
                    if isinstance(e, Progress) and not outcome:
                        outcome.append("running")
            except RemoteError as e:
                outcome.append(e)

        thread = threading.Thread(target=job)
        thread.start()
        while not outcome:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert proc.wait(30) == 0
        err = outcome[-1]
        assert isinstance(err, RemoteError) and err.code == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in err.details
        log = proc.stderr.read()
        assert "outcome=ended by shutdown" in log and "stopped" in log
    finally:
        proc.kill()


def test_remote_cli_stylize_and_info(weights_file, tmp_path, content, style, capsys):
    proc, port = start_server(weights_file)
    try:
        Image.fromarray(content).save(tmp_path / "c.png")
        Image.fromarray(style).save(tmp_path / "s.png")
        rc = main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"),
                   "--server", f"127.0.0.1:{port}", "--size", "48", "--scales", "1", "--steps", "2", "-q"])
        assert rc == 0 and Image.open(tmp_path / "o.png").size == (48, 32)
        assert main(["info", "--server", f"127.0.0.1:{port}"]) == 0
        out = capsys.readouterr().out
        assert "NOT the ImageNet VGG19 weights" in out and "presets  default, draft, high, full, seed" in out
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_remote_cli_with_no_server_says_how_to_start_one(tmp_path, content, style, capsys):
    Image.fromarray(content).save(tmp_path / "c.png")
    rc = main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "c.png"), "-o", str(tmp_path / "o.png"),
               "--server", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == ("style-transfer: error: no style-transfer server answers at 127.0.0.1:9; "
                           "start one with: style-transfer serve --port 9")


def test_serve_on_a_network_address_needs_a_token(weights_file):
    proc = subprocess.run([EXE, "serve", "--host", "0.0.0.0", "--port", "0", "--weights", weights_file],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--token-file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content_name", ["c.png"])
def test_remote_bad_parameters_are_refused_by_the_cli_first(tmp_path, content, content_name, capsys):
    Image.fromarray(content).save(tmp_path / content_name)
    rc = main(["stylize", str(tmp_path / content_name), str(tmp_path / content_name), "-o", str(tmp_path / "o.png"),
               "--server", "127.0.0.1:9", "--style-weight", "inf"])
    assert rc == 2 and "style_weight: must be finite" in capsys.readouterr().err
