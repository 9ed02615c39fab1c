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
from serve_process import health as health_status


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
        # Every limit the limits table names (docs/protocol.md, "Limits"), at its default, and the device with its jobs.
        for words in ("64,000,000 pixels per image", "25,000,000 worked", "6 GiB per job", "8 styles",
                      "308 MiB per request", "queue of 8", "128 calls at once", "within 120 s at 256 KiB/s",
                      "1024 KiB chunks", "cpu: idle"):
            assert words in out, (words, out)
    finally:
        assert server.stop() == 0


def test_a_server_lost_mid_job_is_a_lost_connection_not_an_absent_server(weights_file, content, style):
    server = ServeProcess.serving(weights_file)
    try:
        events = Client(server.address).stylize(content, [style],
                                                preset("default").replace(size=48, scales=1, steps=100_000))
        for event in events:
            if isinstance(event, Progress):
                break
        server.proc.kill()  # no goodbye: the connection just goes
        with pytest.raises(RemoteError) as err:
            for _ in events:
                pass
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert f"lost the connection to the server at {server.address}" in str(err.value)
    finally:
        server.stop()


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


# --- serve options: refused before anything starts -----------------------------------


@pytest.mark.parametrize("option, value, words", [
    ("--port", "70000", "0 to 65535"),
    ("--port", "-1", "0 to 65535"),
    ("--metrics-port", "70000", "0 to 65535"),
    ("--max-pixels", "-5", "at least 1"),
    ("--max-queue", "-5", "at least 0"),
    ("--max-calls", "-5", "at least 1"),
    ("--max-styles", "0", "at least 1"),
    ("--max-work-pixels", "0", "at least 1"),
    ("--idle-seconds", "nan", "more than 0"),
    ("--idle-seconds", "0", "more than 0"),
    ("--idle-seconds", "1e300", "at most"),
    ("--upload-seconds", "-5", "more than 0"),
    ("--grace", "nan", "0 or more"),
    ("--idle-exit", "0", "more than 0"),
    ("--idle-exit", "soon", "number"),
    ("--max-job-bytes", "0", "more than 0"),
    ("--max-request-bytes", "nan", "byte count"),
    ("--replica-gpus", "nan", "0 or more GPUs"),
    ("--replica-cpus", "-1", "0 or more CPU cores"),
])
def test_serve_options_out_of_range_are_refused_naming_the_option(capsys, option, value, words):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1 and option in err and words in err, err


@pytest.mark.parametrize("case", ["not PEM", "binary", "key of another certificate"])
def test_tls_material_that_cannot_work_is_named_before_serving(tmp_path, capsys, case):
    from certs import make_cert

    cert, key = make_cert(tmp_path)
    if case == "not PEM":
        cert.write_text("x\n")
    elif case == "binary":
        cert.write_bytes(bytes(range(128, 256)))
    else:
        (tmp_path / "other").mkdir()
        _, key = make_cert(tmp_path / "other")
    rc = main(["serve", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key), "--weights", "/nonexistent"])
    err = capsys.readouterr().err
    assert rc == 2 and "--tls-cert" in err and "Traceback" not in err, err


def test_idle_exit_ends_the_server_after_its_last_call_not_before(weights_file, content, style):
    """serve --idle-exit: a job and a GetInfo keep it alive, health checks do not; it
    exits 0 about the idle time after the last call."""
    idle = 2.0
    server = ServeProcess.serving(weights_file, "--idle-exit", str(idle))
    try:
        with Client(server.address) as client:
            for _ in client.stylize(content, [style], preset("default").replace(size=32, scales=1, steps=2)):
                pass
            time.sleep(idle * 0.6)
            client.info()  # a call: the idle time starts again
            last_call = time.monotonic()
        while server.proc.poll() is None and time.monotonic() - last_call < idle + 10:
            health_status(server.address)  # polling health does not keep it alive
            time.sleep(0.2)
        assert server.proc.wait(5) == 0
        waited = time.monotonic() - last_call
        assert idle <= waited <= idle + 5, waited
        assert "--idle-exit" in server.output()
    finally:
        server.proc.kill()
