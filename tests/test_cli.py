"""The `style-transfer stylize` command: results on disk, and one clear line with
exit status 2 for each kind of bad input (never a traceback)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from styleserver.cli import main
from styleserver.imageio import read_image

FAST = ["--size", "48", "--scales", "1", "--steps", "3", "-q"]


@pytest.fixture
def files(tmp_path, content, style):
    Image.fromarray(content).save(tmp_path / "content.jpg", quality=95)
    Image.fromarray(style).save(tmp_path / "style.png")
    return tmp_path


def stylize(files, weights_file, *extra, content="content.jpg", style="style.png", out="out.png"):
    return main(["stylize", str(files / content), str(files / style), "-o", str(files / out),
                 "--weights", weights_file, *FAST, *extra])


def test_writes_the_result_at_size(files, weights_file):
    assert stylize(files, weights_file) == 0
    out = read_image(files / "out.png")
    assert out.shape == (32, 48, 3)  # coffee is 3:2; --size 48 is the longest side


def test_keep_size_and_intermediate_images(files, weights_file):
    assert stylize(files, weights_file, "--keep-size", "--save-every", "1", "--steps", "2") == 0
    assert read_image(files / "out.png").shape == (43, 64, 3)
    assert sorted(p.name for p in files.glob("out.scale*.png")) == ["out.scale1.step0001.png", "out.scale1.step0002.png"]


def test_rgba_alpha_survives_the_cli(files, weights_file, content):
    alpha = np.tile(np.arange(64, dtype=np.uint8) * 4, (43, 1))
    Image.fromarray(np.dstack([content, alpha]), "RGBA").save(files / "rgba.png")
    assert stylize(files, weights_file, "--keep-size", content="rgba.png") == 0
    assert np.array_equal(read_image(files / "out.png")[:, :, 3], alpha)


def test_exif_orientation_is_honoured(files, content):
    img = Image.fromarray(content)  # 64 wide, 43 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(files / "rotated.jpg", exif=exif.tobytes())
    assert read_image(files / "rotated.jpg").shape == (64, 43, 3)


def _zero_sized_png() -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (4, 4)).save(b, "PNG")
    d = bytearray(b.getvalue())
    d[16:20] = struct.pack(">I", 0)  # IHDR width = 0, with a valid checksum
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    return bytes(d)


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["content=missing.png"], "content {d}/missing.png: no such file"),
        ("mkdir", ["content=adir"], "not a file"),
        ("garbage", ["content=garbage.png"], "not an image in a format Pillow reads"),
        ("truncated", ["style=truncated.png"], "corrupt or truncated image"),
        ("empty", ["style=empty.png"], "empty file"),
        ("zero", ["content=zero.png"], "image has no pixels (0x4)"),
        (None, ["--max-pixels", "1000"], "is 2,752 pixels, more than the limit of 1,000"),
        (None, ["--style-weight", "-1"], "style_weight: must not be negative"),
        (None, ["--content-weight", "nan"], "content_weight: must be finite"),
        (None, ["--tv-weight", "inf"], "tv_weight: must be finite"),
        (None, ["--steps", "0"], "steps: must be between 1 and"),
        (None, ["--preset", "turbo"], "unknown preset 'turbo'"),
        (None, ["--optimizer", "sgd"], "optimizer: must be one of lbfgs, adam"),
        (None, ["--style-layer-weights", "1,2"], "style_layer_weights: needs 5 values"),
        (None, ["out=out.gif"], "unknown format '.gif'"),
        (None, ["out=nowhere/out.png"], "folder {d}/nowhere does not exist"),
        (None, ["--save-every", "-3"], "--save-every: must not be negative"),
    ],
)
def test_bad_input_gets_one_line_and_status_2(files, weights_file, capsys, setup, args, message):
    if setup == "mkdir":
        (files / "adir").mkdir()
    elif setup == "garbage":
        (files / "garbage.png").write_bytes(os.urandom(300))
    elif setup == "truncated":
        data = (files / "style.png").read_bytes()
        (files / "truncated.png").write_bytes(data[: len(data) // 2])
    elif setup == "empty":
        (files / "empty.png").write_bytes(b"")
    elif setup == "zero":
        (files / "zero.png").write_bytes(_zero_sized_png())
    names = dict(a.split("=", 1) for a in args if "=" in a)
    flags = [a for a in args if "=" not in a]
    assert stylize(files, weights_file, *flags, **names) == 2
    err = capsys.readouterr().err
    assert err.startswith("style-transfer: error: ") and len(err.strip().splitlines()) == 1
    assert message.format(d=files) in err
    assert "Traceback" not in err
    assert not (files / names.get("out", "out.png")).exists()


def test_non_numeric_option_is_an_argparse_error(files, weights_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        stylize(files, weights_file, "--steps", "many")
    assert exit_.value.code == 2
    assert "argument --steps: invalid int value: 'many'" in capsys.readouterr().err


def test_jpeg_output_of_a_transparent_image_is_refused_before_running(files, weights_file, content, capsys):
    Image.fromarray(np.dstack([content, np.full(content.shape[:2], 9, np.uint8)]), "RGBA").save(files / "t.png")
    assert stylize(files, weights_file, content="t.png", out="out.jpg") == 2
    assert "JPEG cannot store the content's transparency" in capsys.readouterr().err


def test_an_existing_output_is_not_clobbered_by_a_failed_run(files, weights_file):
    (files / "out.png").write_bytes(b"precious")
    assert stylize(files, weights_file, "--steps", "0") == 2
    assert (files / "out.png").read_bytes() == b"precious"


def test_missing_weights_through_the_real_command(files, tmp_path):
    """The installed console script, with no weights anywhere: the advice, status 2."""
    env = {k: v for k, v in os.environ.items() if k != "STYLE_TRANSFER_WEIGHTS"}
    env["TORCH_HOME"] = str(tmp_path / "empty-torch-home")
    exe = Path(sys.executable).with_name("style-transfer")
    proc = subprocess.run(
        [str(exe), "stylize", str(files / "content.jpg"), str(files / "style.png"), "-o", str(files / "o.png"),
         "--no-download"], capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert "VGG19 ImageNet weights not found" in proc.stderr and "vgg19-dcbb9e9d.pth" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_presets_lists_every_option(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "--style-weight" in out and "seed" in out and "3000" in out
