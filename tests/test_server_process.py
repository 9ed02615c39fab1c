"""A real `style-transfer serve` process: startup, the remote CLI, and SIGTERM
in the middle of a job."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import grpc
import pytest
from PIL import Image

from stylecore import Progress, preset
from styleserver.client import Client, RemoteError
from styleserver.cli import main

from serve_process import EXE, ServeProcess


def test_sigterm_mid_job_ends_the_job_cleanly_and_exits_0(weights_file, content, style):
    server = ServeProcess.serving(weights_file, "--grace", "1")
    try:
        client = Client(server.address)
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
        server.proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert server.proc.wait(30) == 0
        err = outcome[-1]
        assert isinstance(err, RemoteError) and err.code == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in err.details
        log = server.output()
        assert "outcome=ended by shutdown" in log and "stopped" in log
    finally:
        server.proc.kill()


def test_remote_cli_stylize_and_info(weights_file, tmp_path, content, style, capsys):
    server = ServeProcess.serving(weights_file)
    try:
        Image.fromarray(content).save(tmp_path / "c.png")
        Image.fromarray(style).save(tmp_path / "s.png")
        rc = main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"),
                   "--server", server.address, "--size", "48", "--scales", "1", "--steps", "2", "-q"])
        assert rc == 0 and Image.open(tmp_path / "o.png").size == (48, 32)
        assert main(["info", "--server", server.address]) == 0
        out = capsys.readouterr().out
        assert "NOT the ImageNet VGG19 weights" in out and "presets  default, draft, high, full, seed" in out
    finally:
        assert server.stop() == 0


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
