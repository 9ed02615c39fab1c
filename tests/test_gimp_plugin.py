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
server = rpc.Server(**json.loads(sys.argv[2]))
w, h, c = 40, 30, 4
pixels = bytes((i * 7) % 256 for i in range(w * h * c))
style = bytes((i * 13) % 256 for i in range(32 * 32 * 3))
events = []
job = rpc.Job(content=pixels, width=w, height=h, channels=c, styles=[(style, 32, 32, 3)],
              params={"size": 32, "steps": 3, "scales": 1}, preview_every=1)
try:
    info = rpc.info(server)
    rpc.preset_values(info, "draft")
    result = rpc.run(server, job, lambda e: events.append(e.WhichOneof("event")))
except rpc.ServerError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
print(json.dumps({
    "modules": sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("grpc", "grpclib", "torch", "numpy")}),
    "alpha_kept": result.pixels[3::4] == pixels[3::4], "changed": result.pixels != pixels,
    "size": len(result.pixels), "events": events, "protobuf": __import__("google.protobuf.internal.api_implementation",
    fromlist=["x"]).Type(),
}))
"""


def run_client(plugin_dir, address, **server):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    settings = json.dumps(dict(server, address=address))
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", CLIENT, str(plugin_dir), settings],
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


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    from certs import make_cert

    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def guarded(start_server, cert):
    """A server that wants a token and speaks TLS only."""
    return start_server(token="s3cret", tls=(cert[0].read_bytes(), cert[1].read_bytes()))


@pytest.mark.parametrize("settings, expected", [
    ({"token": "s3cret", "tls": True, "ca": True}, None),
    ({"token": "wrong", "tls": True, "ca": True}, "refused the token (UNAUTHENTICATED)"),
    ({"token": None, "tls": True, "ca": True}, "wants a token (UNAUTHENTICATED)"),
    ({"token": "s3cret", "tls": True, "ca": False}, "check that it serves TLS"),  # the system's roots: not ours
    ({"token": "s3cret", "tls": False, "ca": False}, "turn TLS on"),
])
def test_plugin_client_with_token_and_tls(plugin_dir, guarded, cert, settings, expected):
    ca = str(cert[0]) if settings.pop("ca") else ""
    out = run_client(plugin_dir, f"127.0.0.1:{guarded.port}", ca_file=ca, **settings)
    if expected is None:
        assert "error" not in out, out
        assert out["alpha_kept"] and out["events"][-1] == "done"
    else:
        assert expected in out.get("error", ""), out


def test_plugin_client_unknown_preset_names_the_servers(plugin_dir, server):
    rpc = _rpc(plugin_dir)
    info = rpc.info(rpc.Server(f"127.0.0.1:{server.port}"))
    assert info.contract_version == rpc.wire.CONTRACT_VERSION
    assert rpc.preset_values(info, "draft")["size"] == 256
    with pytest.raises(rpc.ServerError, match="offers: default, draft, high, full, seed"):
        rpc.preset_values(info, "ultra")


def _rpc(plugin_dir):
    sys.path.insert(0, str(plugin_dir))
    try:
        import style_transfer_rpc

        return style_transfer_rpc
    finally:
        sys.path.remove(str(plugin_dir))


@pytest.mark.parametrize("typed, file_token, kept, keep, expected, stored", [
    ("typed", None, None, True, "typed", "typed"),  # typed once: kept in the profile
    ("typed", None, None, False, "typed", None),  # a script's token: not kept
    ("", "from-file", "old", True, "from-file", "old"),  # a token file beats the kept one
    ("", None, "old", True, "old", "old"),
    ("", None, None, True, None, None),
])
def test_token_resolution(plugin_dir, tmp_path, typed, file_token, kept, keep, expected, stored):
    rpc = _rpc(plugin_dir)
    profile = tmp_path / "profile"
    profile.mkdir()
    kept_file = profile / rpc.TOKEN_FILE_NAME
    if kept:
        rpc.store_token(str(kept_file), kept)
    token_file = ""
    if file_token:
        token_file = str(tmp_path / "token")
        (tmp_path / "token").write_text(file_token + "\n")
    assert rpc.resolve_token(typed, token_file, str(profile), keep=keep) == expected
    assert (kept_file.read_text().strip() if kept_file.exists() else None) == stored
    if kept_file.exists():
        assert stat.S_IMODE(kept_file.stat().st_mode) == 0o600


def test_token_file_missing_says_so(plugin_dir, tmp_path):
    rpc = _rpc(plugin_dir)
    with pytest.raises(rpc.ServerError, match="Cannot read the token file"):
        rpc.resolve_token("", str(tmp_path / "nope"), None)


def _profile(folder, mtime=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sessionrc").write_text("")
    if mtime is not None:
        os.utime(folder / "sessionrc", (mtime, mtime))
    return folder


FLATPAK = ".var/app/org.gimp.GIMP/config/GIMP"


@pytest.mark.parametrize("profiles, env, expected", [
    ({".config/GIMP/3.0": 1}, {}, ".config/GIMP/3.0"),
    ({f"{FLATPAK}/3.0": 1}, {}, f"{FLATPAK}/3.0"),
    ({".config/GIMP/3.0": 2, f"{FLATPAK}/3.0": 1}, {}, ".config/GIMP/3.0"),  # the one GIMP wrote last
    ({".config/GIMP/3.0": 1, f"{FLATPAK}/3.0": 2}, {}, f"{FLATPAK}/3.0"),
    ({".config/GIMP/3.0": 2, f"{FLATPAK}/3.2": 1}, {}, f"{FLATPAK}/3.2"),  # the newest GIMP 3 first
    ({"snap/gimp/current/.config/GIMP/3.0": 1}, {}, "snap/gimp/current/.config/GIMP/3.0"),
    ({".config/GIMP/3.0": 1}, {"XDG_CONFIG_HOME": ""}, ".config/GIMP/3.0"),  # empty means unset
    ({".config/GIMP/3.0": 1}, {"XDG_CONFIG_HOME": "  "}, ".config/GIMP/3.0"),
    ({".config/GIMP/3.0": 1}, {"GIMP3_DIRECTORY": ""}, ".config/GIMP/3.0"),
    ({"xdg/GIMP/3.0": 1}, {"XDG_CONFIG_HOME": "{home}/xdg"}, "xdg/GIMP/3.0"),
    ({".config/GIMP/3.0": 1}, {"GIMP3_DIRECTORY": "{home}/mine"}, "mine"),
    ({".config/GIMP/2.10": 1}, {}, None),  # GIMP 2.10 is not supported
    ({}, {}, None),
])
def test_profile_detection(tmp_path, monkeypatch, profiles, env, expected):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CONFIG_HOME", "GIMP3_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(home=home))
    for folder, mtime in profiles.items():
        _profile(home / folder, 1_700_000_000 + mtime)
    (home / ".config/GIMP/3.0x").mkdir(parents=True)  # not a version
    if expected is None:
        with pytest.raises(stylegimp.NoProfile, match="start GIMP 3 once"):
            stylegimp.default_plugins_dir()
        assert main(["gimp", "install"]) == 2
        assert not (tmp_path / "GIMP").exists()  # never into the current folder
    else:
        assert stylegimp.default_plugins_dir() == home / expected / "plug-ins"
        assert main(["gimp", "install"]) == 0
        assert (home / expected / "plug-ins" / "style-transfer" / "style-transfer.py").is_file()


def _doctor(capsys, *args):
    code = main(["gimp", "doctor", *args])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("dir_, expected", [
    ("/nonexistent/plug-ins", "[!!] /nonexistent is not a GIMP 3 profile (missing)"),
    ("/nonexistent", "[!!] / is not a GIMP 3 profile (none of gimprc"),
])
def test_doctor_refuses_what_is_no_profile(capsys, server, dir_, expected):
    code, out = _doctor(capsys, "--dir", dir_, "--server", f"127.0.0.1:{server.port}")
    assert code == 1 and expected in out


def test_doctor_reports_gimp_contract_and_weights(tmp_path, capsys, monkeypatch, server):
    plugins = _profile(tmp_path / "GIMP" / "3.0") / "plug-ins"
    stylegimp.install(plugins)
    monkeypatch.setattr(stylegimp, "find_gimp", lambda: None)
    code, out = _doctor(capsys, "--dir", str(plugins), "--server", f"127.0.0.1:{server.port}")
    assert code == 1
    assert "[!!] no GIMP 3 installation found" in out
    assert f"[ok] GIMP 3 profile {plugins.parent} (from --dir)" in out
    from styletransfer.v1.wire import CONTRACT_VERSION

    assert f"[ok] contract: plug-in {CONTRACT_VERSION}, server {CONTRACT_VERSION}" in out
    assert "[!!] server weights vgg19-random-seed0.pth sha256:test are UNVERIFIED" in out  # the test server's


def test_doctor_flags_an_older_plugin_contract(tmp_path, capsys, monkeypatch, server):
    plugins = _profile(tmp_path / "GIMP" / "3.0") / "plug-ins"
    wire_copy = stylegimp.install(plugins) / "vendor" / "styletransfer" / "v1" / "wire.py"
    wire_copy.write_text(wire_copy.read_text().replace('CONTRACT_VERSION = "', 'CONTRACT_VERSION = "old-'))
    code, out = _doctor(capsys, "--dir", str(plugins), "--server", f"127.0.0.1:{server.port}")
    assert code == 1 and "[!!] contract: plug-in old-v1" in out and "style-transfer gimp install" in out


def test_doctor_with_token_and_tls(tmp_path, capsys, monkeypatch, guarded, cert):
    plugins = _profile(tmp_path / "GIMP" / "3.0") / "plug-ins"
    stylegimp.install(plugins)
    (tmp_path / "token").write_text("s3cret\n")
    address = f"127.0.0.1:{guarded.port}"
    _, out = _doctor(capsys, "--dir", str(plugins), "--server", address, "--token-file", str(tmp_path / "token"),
                     "--tls-ca", str(cert[0]))
    assert f"[ok] server at {address}" in out
    (tmp_path / "token").write_text("wrong\n")
    _, out = _doctor(capsys, "--dir", str(plugins), "--server", address, "--token-file", str(tmp_path / "token"),
                     "--tls-ca", str(cert[0]))
    assert "refused the token" in out


def test_gimp_commands_install_doctor_uninstall(tmp_path, capsys, server):
    plugins = _profile(tmp_path / "GIMP" / "3.0") / "plug-ins"
    assert main(["gimp", "install", "--dir", str(plugins)]) == 0
    assert (plugins / "style-transfer" / "style-transfer.py").is_file()
    main(["gimp", "doctor", "--dir", str(plugins), "--server", f"127.0.0.1:{server.port}"])
    out = capsys.readouterr().out
    assert out.count("[ok]") >= 6 and f"[ok] server at 127.0.0.1:{server.port}" in out
    # Nothing on this machine: fine, the plug-in starts its server itself (install recorded which).
    main(["gimp", "doctor", "--dir", str(plugins), "--server", "127.0.0.1:9"])  # (exit 1 here: no GIMP on this host)
    out = capsys.readouterr().out
    assert "[ok] no server running at 127.0.0.1:9 now: the plug-in starts one itself" in out
    # A remote one is only connected to: not answering is a finding.
    assert main(["gimp", "doctor", "--dir", str(plugins), "--server", "192.0.2.1:9"]) == 1
    out = capsys.readouterr().out
    assert "[!!] no style-transfer server answers at 192.0.2.1:9" in out and "style-transfer serve --port 9" in out
    assert main(["gimp", "uninstall", "--dir", str(plugins)]) == 0
    assert not (plugins / "style-transfer").exists()
    assert main(["gimp", "uninstall", "--dir", str(plugins)]) == 0
    assert "nothing to do" in capsys.readouterr().out


# --- full resolution, tile progress and the start layer: the plug-in's request building ------


def _job(plugin_dir):
    _rpc(plugin_dir)
    sys.path.insert(0, str(plugin_dir))
    try:
        import style_transfer_job

        return style_transfer_job
    finally:
        sys.path.remove(str(plugin_dir))


class Config(dict):
    """The dialog's values, as GIMP's procedure config hands them out."""

    DEFAULTS = {"seed": 0, "strength": 1.0, "max-size": 0, "full-resolution": False, "max-memory": 0.0,
                "style-scale": 0.0, "smoothness": 0.0, "init": "preset", "preserve-colors": False,
                "style2-weight": 0.5, "tileable": False}

    def __init__(self, **values):
        super().__init__(self.DEFAULTS, **{k.replace("_", "-"): v for k, v in values.items()})

    def get_property(self, name):
        return self[name]


@pytest.fixture(scope="module")
def server_info(plugin_dir, server):
    rpc = _rpc(plugin_dir)
    return rpc.info(rpc.Server(f"127.0.0.1:{server.port}"))


def _params(plugin_dir, info, preset="default", w=2048, h=1536, **values):
    return _job(plugin_dir).job_params(Config(**values), info, preset, w, h, False, "127.0.0.1:1")


def test_full_resolution_sends_size_0(plugin_dir, server_info):
    params = _params(plugin_dir, server_info, full_resolution=True, max_size=512, max_memory=1.5)
    assert params["size"] == 0 and params["max_memory"] == 1.5


def test_the_full_preset_alone_means_full_resolution(plugin_dir, server_info):
    assert _params(plugin_dir, server_info, preset="full")["size"] == 0
    assert _params(plugin_dir, server_info, preset="full", max_size=1024)["size"] == 1024  # the user's limit


def test_maximum_size_is_clamped_to_the_layer_and_the_server(plugin_dir, server_info):
    assert _params(plugin_dir, server_info, max_size=4000, w=300, h=200)["size"] == 300
    info = type(server_info)()
    info.CopyFrom(server_info)
    info.limits.max_work_pixels = 1_000_000
    assert _params(plugin_dir, info, max_size=4000)["size"] == 1154  # sqrt(1e6 * 4/3)


def test_full_resolution_of_a_layer_over_max_work_pixels_says_what_to_do(plugin_dir, server_info):
    rpc = _rpc(plugin_dir)
    info = type(server_info)()
    info.CopyFrom(server_info)
    info.limits.max_work_pixels = 1_000_000
    with pytest.raises(rpc.ServerError) as e:
        _params(plugin_dir, info, full_resolution=True)
    text = str(e.value)
    assert "2048x1536 = 3,145,728 pixels" in text and "at most 1,000,000 pixels (max_work_pixels)" in text
    assert "a Maximum size of 1154 px fits" in text and "--max-work-pixels" in text


@pytest.mark.parametrize("option", [{"full_resolution": True}, {"init": "layer"}, {"tileable": True}])
def test_an_older_server_is_told_apart(plugin_dir, server_info, option):
    rpc = _rpc(plugin_dir)
    info = type(server_info)()
    info.CopyFrom(server_info)
    info.contract_version = "v1.1"
    with pytest.raises(rpc.ServerError, match="speaks contract v1.1, without .* update the server"):
        _params(plugin_dir, info, **option)


def test_start_from_another_layer_sends_init_image(plugin_dir, server_info):
    rpc = _rpc(plugin_dir)
    params = _params(plugin_dir, server_info, w=40, h=30, init="layer")
    assert params["init"] == "image"
    init = bytes(i % 256 for i in range(20 * 10 * 3))
    job = rpc.Job(content=bytes(40 * 30 * 4), width=40, height=30, channels=4,
                  styles=[(bytes(32 * 32 * 3), 32, 32, 3), (bytes(16 * 16), 16, 16, 1)], params=params,
                  init_image=(init, 20, 10, 3))
    messages = list(rpc.requests(job))
    head = messages[0].header
    assert head.params.init == "image"
    assert (head.init_image.width, head.init_image.height, head.init_image.channels) == (20, 10, 3)
    assert head.init_image.size_bytes == len(init)
    last = [m.chunk for m in messages[1:] if m.chunk.image == 3]  # after the content and the 2 styles
    assert b"".join(c.data for c in last) == init
    assert job.request_bytes() == 40 * 30 * 4 + 32 * 32 * 3 + 16 * 16 + len(init)


def test_start_from_another_layer_without_one_is_refused(plugin_dir):
    rpc = _rpc(plugin_dir)
    job = rpc.Job(content=bytes(12), width=2, height=2, channels=3, styles=[(bytes(12), 2, 2, 3)],
                  params={"init": "image"})
    with pytest.raises(rpc.ServerError, match="choose the layer to start from"):
        list(rpc.requests(job))


@pytest.mark.parametrize("source, area, init, size, expected", [
    ((0, 0), (10, 20, 30, 40), (0, 0), (100, 100), (10, 20, 30, 40)),  # an earlier result: the same part
    ((5, 5), (10, 20, 30, 40), (15, 25), (100, 100), (0, 0, 30, 40)),  # offsets differ
    ((0, 0), (10, 20, 30, 40), (0, 0), (39, 100), None),  # does not cover it: the whole layer
    ((0, 0), (0, 0, 30, 40), (1, 0), (100, 100), None),
])
def test_the_start_layers_part(plugin_dir, source, area, init, size, expected):
    assert _job(plugin_dir).init_area(source, area, init, size) == expected


def test_the_start_layer_changes_the_result(plugin_dir, server):
    """Through the plug-in's client: the same job started from the layer and from
    another image gives different results (so the initial image is used)."""
    rpc = _rpc(plugin_dir)
    w, h = 40, 30
    content = bytes((i * 7) % 256 for i in range(w * h * 3))
    style = (bytes((i * 13) % 256 for i in range(32 * 32 * 3)), 32, 32, 3)
    results = []
    for init in (None, (bytes(255 - b for b in content), w, h, 3)):
        params = {"size": 32, "steps": 2, "scales": 1, "init": "content" if init is None else "image"}
        job = rpc.Job(content=content, width=w, height=h, channels=3, styles=[style], params=params,
                      init_image=init)
        results.append(rpc.run(rpc.Server(f"127.0.0.1:{server.port}"), job, lambda e: None).pixels)
    assert len(results[1]) == w * h * 3 and results[0] != results[1]


def test_limits_are_checked_before_sending(plugin_dir, server_info):
    rpc, jobs = _rpc(plugin_dir), _job(plugin_dir)
    info = type(server_info)()
    info.CopyFrom(server_info)
    info.limits.max_request_bytes = 1000
    job = rpc.Job(content=bytes(20 * 20 * 3), width=20, height=20, channels=3, styles=[b"\x89PNG\r\n\x1a\n" + bytes(8)])
    with pytest.raises(rpc.ServerError, match="1,216 bytes; the server at 127.0.0.1:1 accepts at most 1,000"):
        jobs.check_limits(info, job, "127.0.0.1:1")
    info.limits.max_pixels = 100
    with pytest.raises(rpc.ServerError, match="The layer .* has 20x20 = 400 pixels.*at most 100 per image"):
        jobs.check_limits(info, job, "127.0.0.1:1")


def _events(rpc):
    pb = rpc.pb
    started = pb.StylizeEvent(started=pb.Started(
        device="cpu", dtype="float32", model_verified=True, total_steps=2, tiles=[0, 640],
        scales=[pb.Size(width=128, height=96), pb.Size(width=2048, height=1536)]))
    coarse = pb.StylizeEvent(progress=pb.Progress(scale=1, scales=2, step=1, steps=1, eta=75))
    tiles = [pb.StylizeEvent(tile=pb.TileProgress(scale=2, step=1, phase=phase, phases=2, tile=t, tiles=12))
             for phase in (1, 2) for t in range(1, 13)]
    final = pb.StylizeEvent(progress=pb.Progress(scale=2, scales=2, step=1, steps=1, eta=0))
    return [started, coarse, *tiles, final]


def test_progress_text_names_the_tile_pass_step_and_scale(plugin_dir):
    rpc = _rpc(plugin_dir)
    progress = rpc.Progress(steps=1, coarse_steps=1)
    texts = [progress.update(e) for e in _events(rpc)]
    assert texts[0].endswith("; 1 of 2 scales worked tile by tile")
    assert texts[1] == "Style transfer: scale 1/2 (128x96), step 1/1, 1:15 left"
    assert texts[2] == "Style transfer: scale 2/2 (2048x1536, tiles of 640 px), step 1/1: pass 1/2, tile 1/12"
    assert texts[-2] == "Style transfer: scale 2/2 (2048x1536, tiles of 640 px), step 1/1: pass 2/2, tile 12/12"


def test_progress_bar_moves_tile_by_tile(plugin_dir):
    rpc = _rpc(plugin_dir)
    progress = rpc.Progress(steps=1, coarse_steps=1)
    fractions = []
    for event in _events(rpc):
        progress.update(event)
        fractions.append(progress.fraction)
    tiles = fractions[2:-1]
    assert all(a < b for a, b in zip(tiles, tiles[1:]))  # every tile moves the bar
    assert fractions[1] < 0.01  # the coarse scale is a sliver of the work
    assert fractions[-1] == 1.0


# --- regions, tileable and depth: what the plug-in sends ------------------------------------


def test_tileable_sends_tileable(plugin_dir, server_info):
    assert _params(plugin_dir, server_info, tileable=True)["tileable"] == 1
    assert "tileable" not in _params(plugin_dir, server_info)


@pytest.mark.parametrize("precision, depth", [
    ("GIMP_PRECISION_U8_NON_LINEAR", 8), ("GIMP_PRECISION_U8_LINEAR", 8), ("GIMP_PRECISION_U16_NON_LINEAR", 16),
    ("GIMP_PRECISION_U16_PERCEPTUAL", 16), ("GIMP_PRECISION_U32_LINEAR", 32), ("GIMP_PRECISION_HALF_LINEAR", 32),
    ("GIMP_PRECISION_FLOAT_NON_LINEAR", 32), ("GIMP_PRECISION_DOUBLE_LINEAR", 32),
])
def test_an_images_precision_travels_at_its_depth(plugin_dir, precision, depth):
    assert _job(plugin_dir).precision_depth(precision) == depth


@pytest.mark.parametrize("contract, image, expected", [("v1.3", 16, 16), ("v1.3", 32, 32), ("v1.2", 16, 8),
                                                       ("v1.3", 8, 8)])
def test_an_older_server_gets_8_bits(plugin_dir, server_info, contract, image, expected):
    info = type(server_info)()
    info.CopyFrom(server_info)
    info.contract_version = contract
    assert _job(plugin_dir).transfer_depth(info, image) == expected


def test_a_region_mask_and_the_depth_travel_in_the_request(plugin_dir):
    rpc = _rpc(plugin_dir)
    w, h = 20, 10
    mask = (bytes(w * h * 2), w, h, 1, 16)
    job = rpc.Job(content=bytes(w * h * 4 * 2), width=w, height=h, channels=4, depth=16,
                  styles=[(bytes(32 * 32 * 3), 32, 32, 3), (bytes(16 * 16), 16, 16, 1)], style_masks=[mask])
    messages = list(rpc.requests(job))
    head = messages[0].header
    assert head.content.depth == 16 and head.content.size_bytes == w * h * 4 * 2 and head.result_depth == 16
    assert len(head.style_masks) == 1 and head.style_masks[0].depth == 16 and head.style_masks[0].channels == 1
    assert [m.chunk.image for m in messages[1:]] == [0, 1, 2, 3]  # the mask after the styles
    assert job.request_bytes() == w * h * 8 + 32 * 32 * 3 + 16 * 16 + w * h * 2


def test_a_16_bit_region_job_through_the_plugins_client(plugin_dir, server):
    """The plug-in's own client: a 16-bit RGB layer and a 16-bit mask over its left half;
    the result is 16-bit, the right half (no style, no second style) is the layer's."""
    import struct

    rpc = _rpc(plugin_dir)
    w, h = 40, 30
    values = [(x * 1500 + y * 700 + c * 9000) % 65536 for y in range(h) for x in range(w) for c in range(3)]
    content = struct.pack(f"<{len(values)}H", *values)
    mask = struct.pack(f"<{w * h}H", *[65535 if x < w // 2 else 0 for y in range(h) for x in range(w)])
    job = rpc.Job(content=content, width=w, height=h, channels=3, depth=16,
                  styles=[(bytes((i * 13) % 256 for i in range(32 * 32 * 3)), 32, 32, 3)],
                  params={"size": 40, "steps": 2, "scales": 1}, style_masks=[(mask, w, h, 1, 16)])
    result = rpc.run(rpc.Server(f"127.0.0.1:{server.port}"), job, lambda e: None).pixels
    assert len(result) == w * h * 3 * 2
    out = struct.unpack(f"<{w * h * 3}H", result)
    right = [i for i in range(w * h * 3) if (i // 3) % w > w // 2]
    assert all(out[i] == values[i] for i in right)
    assert any(out[i] != values[i] for i in range(w * h * 3) if (i // 3) % w < w // 2)


def test_the_dialog_layout_shows_every_setting_once():
    """The dialog is laid out by name (style-transfer.py: CREATIVE, FRAMES, EXPANDERS,
    CONNECTION):
    an argument missing there would never be shown, one listed twice is an error in GIMP."""
    import ast

    source = (stylegimp.SOURCE / "style-transfer.py").read_text()
    tree = ast.parse(source)
    arguments = [node.args[0].value for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("add_")
                 and getattr(node.func, "attr", "").endswith("_argument")]
    layout = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("CREATIVE", "FRAMES", "EXPANDERS",
                                                                                "CONNECTION"):
            layout[node.targets[0].id] = ast.literal_eval(node.value)
    shown = list(layout["CREATIVE"]) + [f for _, _, fields in layout["FRAMES"] + layout["EXPANDERS"] for f in fields]
    # The connection arguments are declared twice (the Server... procedure's, and the job
    # procedures' for scripts) and shown in the Server... dialog only.
    assert sorted(shown + list(layout["CONNECTION"])) == sorted(set(arguments))
    assert len(shown) == len(set(shown))


@pytest.mark.parametrize("offered, current, expected", [
    (["default", "draft"], "draft", [("default", "default"), ("draft", "draft")]),
    (["default", "mine"], "default", [("default", "default"), ("mine", "mine")]),  # the server's own
    (["default"], "house", [("default", "default"), ("house", "house (not on this server)")]),
    ([], "default", [("default", "default")]),  # no server answered: the value stays, unmarked
])
def test_the_preset_drop_down_lists_the_servers_presets(plugin_dir, offered, current, expected):
    """The dialog's preset drop-down (style-transfer.py: organise) from the server's
    presets; a value the server lacks is kept, marked, never silently replaced."""
    assert _job(plugin_dir).preset_choices(offered, current) == expected


def test_the_preset_drop_down_lists_a_real_servers_presets(plugin_dir, server_info):
    from stylecore.params import PRESETS

    names = [p.name for p in server_info.presets]
    assert [n for n, _ in _job(plugin_dir).preset_choices(names, "default")] == list(PRESETS)
