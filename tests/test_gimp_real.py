"""The plug-in in a real, headless GIMP 3.0 against a real server on 127.0.0.1.

GIMP 3.0 is packaged in Debian 13 only. On a Debian 13 machine with GIMP installed
the tests run it directly; elsewhere they run it in a Debian 13 root made by
tests/gimp/make_root.sh (debootstrap; about 3 minutes the first time, reused
after). GIMP's Python there has no grpcio. In CI (CI=true) these tests build
what they need and never skip; elsewhere they skip when no GIMP 3 is at hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stylegimp
from stylecore import Result, Started, preset
from styleserver.client import Client

from serve_process import EXE, health

HERE = Path(__file__).resolve().parent / "gimp"
ROOT = os.environ.get("GIMP_ROOT", "/var/cache/gimp-trixie")
IN_CI = os.environ.get("CI") == "true"
AUTO_IDLE = 3.0  # --idle-exit of the server the plug-in starts in these tests


def gimp_root() -> str:
    """'/' when this machine has GIMP 3, else the Debian 13 root (built in CI)."""
    if Path("/usr/bin/gimp-console-3.0").exists():
        return "/"
    if Path(ROOT, "usr/bin/gimp-console-3.0").exists():
        return ROOT
    if not IN_CI:
        pytest.skip(f"no GIMP 3 here: run tests/gimp/make_root.sh {ROOT} (as root, ~3 min) or set CI=true")
    subprocess.run(["bash", str(HERE / "make_root.sh"), ROOT], check=True, timeout=1800)
    return ROOT


@pytest.fixture(scope="module")
def root() -> str:
    return gimp_root()


@pytest.fixture(scope="module")
def server(start_server):
    return start_server()


# The server the plug-in starts runs on the host, whose Python the GIMP root cannot run:
# the plug-in's recorded command is this launcher, which hands its arguments over to
# the host (Relay) and lives as long as the server does, so that the plug-in sees
# what a real one shows: a process that serves, or exits with its log.
LAUNCHER = """#!/bin/sh
R={relay}
printf '%s\\n' "$@" > "$R/request.new" && mv "$R/request.new" "$R/request"
while [ ! -e "$R/exited" ] && [ -e "$R/request" ]; do sleep 0.2; done
cat "$R/server.log" 2>/dev/null
exit "$(cat "$R/exited" 2>/dev/null || echo 1)"
"""


class Relay:
    """Host side of the launcher: runs `style-transfer ARGS` for its request, its output
    in relay/server.log, its exit status in relay/exited (and when, in `exited_at`)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.args: list[str] = []
        self.exited_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        request = self.folder / "request"
        while not self._stop.is_set():
            if request.exists() and self.process is None:
                self.args = request.read_text().splitlines()
                with open(self.folder / "server.log", "wb") as log:
                    self.process = subprocess.Popen([EXE, *self.args], stdout=log, stderr=subprocess.STDOUT)
            if self.process is not None and self.exited_at is None and self.process.poll() is not None:
                self.exited_at = time.time()
                (self.folder / "exited").write_text(str(self.process.returncode))
            time.sleep(0.05)

    def reset(self) -> None:
        for name in ("request", "exited", "server.log"):
            (self.folder / name).unlink(missing_ok=True)
        self.process, self.args, self.exited_at = None, [], None

    def close(self) -> None:
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reset()


@pytest.fixture(scope="module")
def work(tmp_path_factory, weights_file) -> Path:
    """Under /tmp, which the GIMP root shares: the plug-in, the images, the reports, and
    the launcher of the server the plug-in starts (relay/)."""
    base = Path(tmp_path_factory.mktemp("gimp-real"))
    assert str(base).startswith("/tmp/")
    relay = base / "relay"
    relay.mkdir()
    launcher = relay / "launch"
    launcher.write_text(LAUNCHER.format(relay=relay))
    launcher.chmod(0o755)
    stylegimp.install(base / "plug-ins", command=[str(launcher)], idle_exit=AUTO_IDLE, weights=weights_file)
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((64, 64), Image.LANCZOS)
    alpha = np.tile(np.linspace(40, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(np.dstack([np.asarray(photo), alpha]), "RGBA").save(base / "photo.png")
    Image.fromarray(data.immunohistochemistry()).resize((64, 64)).save(base / "style.png")
    return base


def run_gimp(root: str, work: Path, params: dict, name: str, background: bool = False, timeout: int = 600):
    params = dict(params, photo=str(work / "photo.png"), style=str(work / "style.png"), out=str(work / f"{name}.json"))
    (work / f"{name}.params.json").write_text(json.dumps(params))
    command = [
        "bash", str(HERE / "gimp_batch.sh"), "--root", root, "--plugins", str(work / "plug-ins"), "--bind", str(HERE),
        "--gimp-arg", "-d", "--gimp-arg", "-f",
        f"PARAMS = {str(work / f'{name}.params.json')!r}; exec(open({str(HERE / 'in_gimp.py')!r}).read())",
    ]
    if background:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    report = work / f"{name}.json"
    assert report.exists(), f"GIMP wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(report.read_text())["cases"]


def test_plugin_in_real_gimp(root, server, work):
    cases = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}", "selection": [20, 15, 30, 25],
                                  "cases": ["selection", "feathered", "server_down", "gray_style_layer"]}, "main")

    sel = cases["selection"]
    assert "error" not in sel, sel.get("error")
    assert sel["status"] == "success", sel["message"]
    assert len(sel["layer_names"]) == 2  # the preview layer is gone, the result is above the source
    assert sel["layer_names"][0] == "Background - style x1 (seed 3)"
    assert sel["new_size"] == [sel["width"], sel["height"]] == [64, 64]
    assert sel["new_offsets"] == sel["source_offsets"] == [12, 7]
    assert sel["source_unchanged"]
    assert sel["outside_changed"] == 0  # outside the selection the result equals the source
    assert sel["inside_changed"] > 0.5 * 30 * 25
    assert sel["alpha_changed"] == 0  # alpha preserved

    feathered = cases["feathered"]
    assert feathered["status"] == "success", feathered.get("message") or feathered.get("error")
    diff, counts = feathered["mean_diff"], feathered["counts"]
    assert counts["partial"] > 100 and counts["none"] > 0 and counts["full"] > 0
    assert diff["none"] == 0  # unselected pixels untouched
    assert 0 < diff["partial"] < diff["full"]  # the feathered edge is a blend

    down = cases["server_down"]  # remote: never started, only connected to
    assert down["status"] == "execution-error"
    assert "No style-transfer server answers at 192.0.2.1:9" in down["message"]
    assert "style-transfer serve --port 9" in down["message"]
    assert down["layers"] == 1  # the document is unchanged
    assert not (work / "relay" / "request").exists()  # nothing was started

    gray = cases["gray_style_layer"]
    assert gray["status"] == "success", gray.get("message") or gray.get("error")
    assert gray["layers"] == 3 and gray["new_is_gray"] and gray["source_unchanged"]


@pytest.fixture
def relay(work):
    relay = Relay(work / "relay")
    yield relay
    relay.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plugin_starts_its_own_server_in_real_gimp(root, work, relay):
    """No server running: the plug-in starts the recorded one, stylizes, and the server
    exits by itself after its idle time (within 2 s of it)."""
    address = f"127.0.0.1:{free_port()}"
    cases = run_gimp(root, work, {"auto_server": address, "cases": ["auto_start"]}, "auto")
    auto = cases["auto_start"]
    assert auto.get("status") == "success", auto.get("message") or auto.get("error")
    assert auto["layers"] == 2
    assert relay.args[:5] == ["serve", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    assert relay.args[5:7] == ["--idle-exit", str(AUTO_IDLE)] and "--weights" in relay.args
    deadline = time.time() + AUTO_IDLE + 20
    while relay.exited_at is None and time.time() < deadline:
        time.sleep(0.1)
    assert relay.exited_at is not None, "the server the plug-in started is still running"
    assert relay.process.returncode == 0
    after = relay.exited_at - auto["ended"]
    assert after <= AUTO_IDLE + 2, f"exited {after:.1f} s after the job, idle time {AUTO_IDLE} s"
    assert health(address) == "UNAVAILABLE"


def test_plugin_says_why_its_server_did_not_start_in_real_gimp(root, work, relay):
    address = f"127.0.0.1:{free_port()}"
    info = json.loads((work / "plug-ins" / "style-transfer" / "install.json").read_text())
    broken = dict(info, server=dict(info["server"], weights="/tmp/no-such-weights.pth"))
    (work / "plug-ins" / "style-transfer" / "install.json").write_text(json.dumps(broken))
    try:
        cases = run_gimp(root, work, {"auto_server": address, "cases": ["auto_start_fails"]}, "auto_fails")
    finally:
        (work / "plug-ins" / "style-transfer" / "install.json").write_text(json.dumps(info))
    failed = cases["auto_start_fails"]
    assert failed.get("status") == "execution-error", failed
    assert "stopped at start" in failed["message"] and "no-such-weights.pth" in failed["message"]
    assert "style-transfer-server.log" in failed["message"] and failed["layers"] == 1


def test_plugin_with_a_token_and_tls_in_real_gimp(root, start_server, work):
    """A shared GPU box's set-up: a token (from a file; a typed wrong one is refused with
    advice) and TLS with a self-signed certificate made here."""
    from certs import make_cert

    (work / "tls").mkdir(exist_ok=True)
    cert, key = make_cert(work / "tls")
    guarded = start_server(token="s3cret", tls=(cert.read_bytes(), key.read_bytes()))
    (work / "token").write_text("s3cret\n")
    cases = run_gimp(root, work, {"guarded": f"127.0.0.1:{guarded.port}", "token_file": str(work / "token"),
                                  "ca": str(cert), "cases": ["guarded", "guarded_wrong_token",
                                                             "guarded_without_tls"]}, "guarded")
    ok = cases["guarded"]
    assert ok.get("status") == "success", ok.get("message") or ok.get("error")
    assert ok["layer_names"][0] == "Background - style + style2 x1 (seed 0)"
    wrong = cases["guarded_wrong_token"]
    assert wrong["status"] == "execution-error" and wrong["layers"] == 1
    assert "refused the token (UNAUTHENTICATED)" in wrong["message"] and "Token field" in wrong["message"]
    plain = cases["guarded_without_tls"]
    assert plain["status"] == "execution-error" and "turn TLS on" in plain["message"], plain["message"]


def test_killing_the_plugin_stops_the_job_at_once(root, server, work, content, style):
    gimp = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}", "cases": ["long_job"]}, "kill",
                    background=True)
    try:
        deadline = time.monotonic() + 120
        while server.service.scheduler.depth != (True, 0):  # the plug-in's job is running
            assert gimp.poll() is None, gimp.stdout.read()
            assert time.monotonic() < deadline, "the plug-in's job never started"
            time.sleep(0.1)
        time.sleep(0.5)
        plugin = subprocess.run(["pgrep", "-f", "style-transfer/style-transfer.py"], capture_output=True, text=True)
        pids = [int(p) for p in plugin.stdout.split()]
        assert pids, "no plug-in process found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # what GIMP does when the user cancels the progress
        t_kill = time.monotonic()
        started = threading.Event()
        events = []

        def next_job():
            with Client(f"127.0.0.1:{server.port}") as client:
                for event in client.stylize(content, [style], preset("default").replace(size=32, scales=1, steps=2)):
                    events.append(event)
                    if isinstance(event, Started):
                        started.set()

        thread = threading.Thread(target=next_job)
        thread.start()
        assert started.wait(30), "the next job did not start"
        assert time.monotonic() - t_kill < 15  # the killed job ended within a step or so
        thread.join(60)
        assert isinstance(events[-1], Result)
    finally:
        gimp.wait(120)


SHOTS = ("dialog", "result", "variations", "regions", "server")  # docs/gimp-NAME.png


def test_one_undo_removes_the_result_and_the_dialog_opens(root, server, work, monkeypatch):
    """The full UI under Xvfb: libgimp 3.0 has no undo call, so Ctrl+Z is pressed
    in the image window. The dialog's preset drop-down lists the server's presets: the
    server offers one of its own, which the keyboard picks. Also screenshots the dialog
    (README's pictures)."""
    from stylecore import params as core_params

    # Last in the server's list (GetInfo), so End picks it; one scale of two steps.
    monkeypatch.setitem(core_params.PRESETS, "tiny", core_params.PRESETS["draft"].replace(scales=1, steps=2))
    if root == ROOT and not Path(ROOT, "usr/bin/xvfb-run").exists():
        subprocess.run(["bash", str(HERE / "make_root.sh"), ROOT], check=True, timeout=900,
                       env=dict(os.environ, WITH_GUI="1"))
    elif root == "/" and not Path("/usr/bin/xvfb-run").exists():
        pytest.skip("needs xvfb, xauth, x11-apps and xdotool")
    from skimage import data

    Image.fromarray(data.astronaut()).resize((384, 384), Image.LANCZOS).save(work / "astronaut.png")
    Image.fromarray(data.hubble_deep_field()[:256, :256]).resize((64, 64), Image.LANCZOS).save(work / "style2.png")
    params = {"server": f"127.0.0.1:{server.port}", "photo": str(work / "astronaut.png"), "style": str(work / "style.png"),
              "style2": str(work / "style2.png"), "selection": [60, 40, 260, 300], "ellipse": [90, 20, 200, 230],
              "shots": str(work / "shots"), "out": str(work / "gui.json")}
    (work / "gui.params.json").write_text(json.dumps(params))
    proc = subprocess.run(
        ["bash", str(HERE / "gimp_batch.sh"), "--gui", "--root", root, "--plugins", str(work / "plug-ins"),
         "--bind", str(HERE),
         f"PARAMS = {str(work / 'gui.params.json')!r}; exec(open({str(HERE / 'in_gimp_gui.py')!r}).read())"],
        capture_output=True, text=True, timeout=600)
    report_file = work / "gui.json"
    assert report_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert "error" not in report, report["error"]
    assert report["status"] == "success"
    assert report["layers_after_run"] == ["Background - style x1 (seed 1)", "Background"]
    assert report["layers_after_one_undo"] == ["Background"]  # one undo step removed the result
    assert report["multi_status"] == "success"  # two layers selected: a result above each
    assert report["layers_after_multi"] == ["Copy - style x1 (seed 2)", "Copy", "Background - style x1 (seed 2)",
                                            "Background"]
    assert report["layers_after_multi_undo"] == ["Copy", "Background"]  # one undo step removed both
    assert report["variations_status"] == "success"
    assert report["variations_group"] == [f"Background - style x{s} (seed 1)" for s in (0.3, 1, 3)]
    assert report["regions_status"] == "success"
    assert report["layers_after_regions"] == ["Background - style + style2 x1 (seed 1)", "Background"]  # one layer
    assert report["server_settings"] == "success"
    assert report["dialog_status"] == "success"  # the dialog opened, and OK ran it
    assert report["dialog_preset"] == "tiny"  # with the preset picked from the server's list
    assert report["server_dialog_status"] == "cancel"
    for name in SHOTS:
        assert (work / "shots" / f"{name}.png").exists(), name
    if os.environ.get("STYLE_TRANSFER_SCREENSHOTS"):  # refresh the README's pictures
        for name in SHOTS:
            shot = Image.open(work / "shots" / f"{name}.png").convert("RGB")
            shot.crop(shot.getbbox()).save(Path(os.environ["STYLE_TRANSFER_SCREENSHOTS"]) / f"gimp-{name}.png")


def _record(mp, module, name, sink):
    """Wraps module.name so that every call's first argument and result land in `sink`."""
    original = getattr(module, name)

    def wrapper(first, *args, **kwargs):
        result = original(first, *args, **kwargs)
        sink.append((first, result))
        return result

    mp.setattr(module, name, wrapper)


@pytest.fixture(scope="module")
def full_server(start_server, work):
    """A server offering `tiny-full` (the full preset, two scales, one step each) whose
    budget fits the whole 2048x1536 image (so the plug-in's Memory limit is what tiles
    it), the events it sends, and the large RGBA photograph big.png."""
    from stylecore import params as core_params
    from styleserver import convert
    from styleserver.service.limits import GiB, Limits

    photo = Image.fromarray(np.asarray(Image.open(work / "photo.png").convert("RGB").resize((2048, 1536))))
    alpha = np.tile(np.linspace(0, 255, 2048).astype(np.uint8), (1536, 1))
    alpha[:100] = 255
    Image.fromarray(np.dstack([np.asarray(photo), alpha]), "RGBA").save(work / "big.png")
    sent = []
    with pytest.MonkeyPatch.context() as mp:
        tiny = core_params.PRESETS["full"].replace(steps=1, coarse_steps=1, scales=2)
        mp.setitem(core_params.PRESETS, "tiny-full", tiny)  # the server offers it (GetInfo) and runs it
        _record(mp, convert, "event_to_proto", sent)
        yield start_server(limits=Limits(max_job_bytes=8 * GiB)), sent


# A 2048x1536 job tiled under 2.5 GiB: within 10 minutes on a Zen 4 EPYC (bf16), over
# 10 minutes on an AVX2-only Zen 1 (2026-12-06; fp32 there, whose activations are twice
# bf16's: smaller tiles, more of each one halo, and slower arithmetic).
FULL_TIMEOUT = 1800


def _full_params(server):
    return {"server": f"127.0.0.1:{server.port}", "preset": "tiny-full", "max_memory": 2.5, "cases": ["full_resolution"]}


def test_full_resolution_on_a_large_layer_in_real_gimp(root, full_server, work):
    """A 2048x1536 RGBA photograph at full resolution, with a tiny schedule and a memory
    limit that makes the server work the final scale tile by tile: the result has the
    layer's size, the alpha is untouched byte for byte, the colours changed; the server
    sent every tile of both passes."""
    server, sent = full_server
    sent.clear()
    cases = run_gimp(root, work, dict(_full_params(server), big_photo=str(work / "big.png")), "fullres",
                     timeout=FULL_TIMEOUT)
    full = cases["full_resolution"]
    assert full.get("status") == "success", full.get("message") or full.get("error")
    assert full["layers"] == 2 and full["new_size"] == [2048, 1536] and full["channels"] == 4
    assert full["alpha_unchanged"] and full["source_unchanged"]
    assert full["changed"] > 0.25 * full["sampled"] and full["mean_diff"] > 0.5  # one step at full size: it moved
    messages = [message for _, message in sent]
    started = next(m.started for m in messages if m.WhichOneof("event") == "started")
    assert [(s.width, s.height) for s in started.scales][-1] == (2048, 1536)
    assert started.tiles[-1] > 0  # the final scale was worked tile by tile
    tiles = [m.tile for m in messages if m.WhichOneof("event") == "tile" and m.tile.scale == 2]
    assert tiles and tiles[0].tiles > 1
    assert {(t.phase, t.tile) for t in tiles} == {(p, i) for p in (1, 2) for i in range(1, tiles[0].tiles + 1)}


def test_killing_the_plugin_mid_tile_stops_the_full_resolution_job(root, full_server, work, content, style):
    """GIMP's progress cancel kills the plug-in: during a tiled full-resolution step the
    server stops the job between tiles and takes the next one."""
    server, sent = full_server
    sent.clear()
    gimp = run_gimp(root, work, dict(_full_params(server), big_photo=str(work / "big.png")), "fullres-kill",
                    background=True)
    finished = False
    try:
        deadline = time.monotonic() + FULL_TIMEOUT / 2
        while not any(m.WhichOneof("event") == "tile" and m.tile.scale == 2 for _, m in list(sent)):
            assert gimp.poll() is None, gimp.stdout.read()
            assert time.monotonic() < deadline, "the full-size scale never started"
            time.sleep(0.2)
        plugin = subprocess.run(["pgrep", "-f", "style-transfer/style-transfer.py"], capture_output=True, text=True)
        pids = [int(p) for p in plugin.stdout.split()]
        assert pids, "no plug-in process found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        with Client(f"127.0.0.1:{server.port}") as client:
            for event in client.stylize(content, [style], preset("default").replace(size=32, scales=1, steps=1)):
                if isinstance(event, Started):
                    waited = time.monotonic() - t_kill
                    break
        assert waited < 30  # the killed job ended within a tile or so
        tiles = [m.tile for _, m in sent if m.WhichOneof("event") == "tile" and m.tile.scale == 2]
        assert len(tiles) < 2 * tiles[0].tiles  # it did not run to the end
        finished = True
    finally:
        if not finished:
            gimp.kill()  # a failed check leaves the job running: its own error, not a wait's, is reported
        gimp.wait(180)


@pytest.fixture(scope="module")
def init_cases(root, server, work):
    """One GIMP run for the start-layer cases; the headers the server was sent."""
    from styleserver.service import admission

    checked = []
    with pytest.MonkeyPatch.context() as mp:
        _record(mp, admission, "check", checked)
        cases = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}",
                                      "cases": ["init_layer", "init_without_layer"]}, "init")
    return cases, [header for header, _ in checked]


def test_start_from_another_layer_in_real_gimp(init_cases):
    cases, headers = init_cases
    ok = cases["init_layer"]
    assert ok.get("status") == "success", ok.get("message") or ok.get("error")
    assert ok["layer_names"] == ["Background - style x1 (seed 0)", "Background", "earlier result"]
    with_init = [h for h in headers if h.HasField("init_image")]
    assert with_init and all(h.params.init == "image" for h in with_init)
    meta = with_init[0].init_image  # the start layer's part over the selected 40x30 of the source
    assert (meta.width, meta.height, meta.channels) == (40, 30, 4)
    assert (with_init[0].content.width, with_init[0].content.height) == (40, 30)


def test_start_from_another_layer_without_one_in_real_gimp(init_cases):
    cases, _ = init_cases
    missing = cases["init_without_layer"]
    assert missing["status"] == "execution-error" and missing["layers"] == 1
    assert "choose the layer to start from" in missing["message"]


def test_regions_and_depth_in_real_gimp(root, server, work):
    """A 16-bit image comes back as a 16-bit layer; a style's region from the selection
    (feathered) and from a layer mask; two styles, one per region."""
    cases = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}",
                                  "cases": ["deep", "region_selection", "region_layer_mask", "region_two_styles",
                                            "region_without_a_mask"]}, "regions")
    deep = cases["deep"]
    assert "error" not in deep, deep.get("error")
    assert deep["status"] == "success", deep["message"]
    assert deep["precision"] == "GIMP_PRECISION_U16_NON_LINEAR" and deep["layers"] == 2
    assert deep["alpha_unchanged"] and deep["changed"] > 0
    assert deep["off_8_bit_grid"] > 0.5  # values an 8-bit round trip (v * 257) cannot give
    assert deep["levels"] > 256

    for name in ("region_selection", "region_layer_mask"):
        case = cases[name]
        assert "error" not in case, case.get("error")
        assert case["status"] == "success", case["message"]
        assert case["size"] == [64, 64]  # the whole layer, not the selection's bounding box
        assert case["left_changed"] > 0.5 * 28 * 64, name
        assert case["right_changed"] == 0, name  # no style, no second style: the layer's own pixels

    two = cases["region_two_styles"]
    assert two["status"] == "success", two.get("message") or two.get("error")
    assert two["left_changed"] > 0.5 * 28 * 64 and two["right_changed"] > 0.5 * 28 * 64

    none = cases["region_without_a_mask"]
    assert none["status"] == "execution-error" and "which has none: add a layer mask" in none["message"]
    assert none["layers"] == 1


def test_results_remember_how_they_were_made_in_real_gimp(root, server, work):
    """The record parasite, and Again with Changes with no change: the same pixels."""
    case = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}", "cases": ["again"]}, "again")["again"]
    assert "error" not in case, case.get("error")
    assert case["status"] == "success", case["message"]
    assert case["first_name"] == "Background - style x2.5 (seed 5)"
    record = case["record"]
    assert case["flags"] & 1  # GIMP_PARASITE_PERSISTENT: saved with the XCF
    assert record["source_layer"] == "Background" and record["preset"] == "draft"
    assert record["settings"]["seed"] == 5 and record["settings"]["strength"] == 2.5
    assert record["settings"]["style-file"] == str(work / "style.png")
    assert "server" not in record["settings"] and "token" not in record["settings"]
    assert record["params"]["seed"] == 5 and record["params"]["size"] == 40
    import hashlib
    assert record["styles"] == [{"name": "style", "path": str(work / "style.png"),
                                 "sha256": hashlib.sha256((work / "style.png").read_bytes()).hexdigest()}]
    assert record["server"]["model_sha256"] == server.service.model.sha256 and record["plugin"] == stylegimp.version()
    assert case["again"] == "success", case["again_message"]
    # The new result above the one it was made from (GIMP numbers the second name).
    assert case["layer_names"] == ["Background - style x2.5 (seed 5) #1", "Background - style x2.5 (seed 5)",
                                   "Background"]
    assert case["same_pixels"] and case["same_record"] and case["source_under_both"]
    assert case["not_a_result"] == "execution-error" and "was not made by Style Transfer" in case["why"]


def test_variations_in_one_go_in_real_gimp(root, server, work):
    """Variations: one layer each in a group named after the run, each with its own
    record (that one result's settings); a bad list of values: an error, nothing added."""
    cases = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}",
                                  "cases": ["variations_seeds", "variations_strength", "variations_bad_values",
                                            "variations_seeds_from_the_layer"]},
                     "variations")
    seeds = cases["variations_seeds"]
    assert "error" not in seeds, seeds.get("error")
    assert seeds["status"] == "success", seeds["message"]
    assert seeds["top_names"] == ["Background - style: 3 variations of seed (7, 8, 9)", "Background"]
    assert seeds["names"] == [f"Background - style x1 (seed {s})" for s in (7, 8, 9)]
    assert [r["settings"]["seed"] for r in seeds["records"]] == [7, 8, 9]
    assert all(r["settings"]["variations"] == 1 and r["settings"]["vary"] == "seed" for r in seeds["records"])
    assert seeds["distinct_pixels"] == 3

    strength = cases["variations_strength"]
    assert strength["status"] == "success", strength.get("message") or strength.get("error")
    assert strength["names"] == ["Background - style x0.5 (seed 7)", "Background - style x2 (seed 7)"]
    assert [r["settings"]["strength"] for r in strength["records"]] == [0.5, 2.0]
    assert strength["records"][0]["params"]["style_weight"] * 4 == strength["records"][1]["params"]["style_weight"]

    bad = cases["variations_bad_values"]
    assert bad["status"] == "execution-error" and "'big' is not a number" in bad["message"]
    assert bad["top_names"] == ["Background"]

    same = cases["variations_seeds_from_the_layer"]  # every seed would give the same result
    assert same["status"] == "execution-error" and "need Start from: Noise" in same["message"]
    assert same["top_names"] == ["Background"]


def test_the_server_settings_are_stored_once_and_used_by_runs_in_real_gimp(root, server, work):
    cases = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}", "cases": ["server_settings"]}, "settings")
    case = cases["server_settings"]
    assert "error" not in case, case.get("error")
    assert case["status"] == "success", case["message"]
    assert case["stored"] == {"address": f"127.0.0.1:{server.port}", "token_file": "", "tls": False, "ca_file": ""}
    assert case["run"]["status"] == "success" and case["run"]["layers"] == 2, case["run"]
    status, message = case["down"]
    assert status == "execution-error" and "Settings saved; the test failed" in message
    assert "No style-transfer server answers at 192.0.2.1:9" in message
    assert case["stored_after_down"] == "192.0.2.1:9"


def test_an_animation_in_real_gimp(root, server, work):
    """Three frames as layers: a new image of three stylized frames, their names (and so
    their timing) kept, the source image unchanged."""
    case = run_gimp(root, work, {"server": f"127.0.0.1:{server.port}", "cases": ["animation"]},
                    "animation")["animation"]
    assert "error" not in case, case.get("error")
    assert case["status"] == "success", case["message"]
    assert case["new_images"] == 1
    assert case["names"] == ["Frame 3 (100ms)", "Frame 2 (100ms)", "Frame 1 (100ms)"]
    assert all(case["changed"]) and case["frames_differ"] == 3
    assert case["source_unchanged"]
