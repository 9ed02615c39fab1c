"""The `style-transfer stylize` command: results on disk, and one clear line with
exit status 2 for each kind of bad input (never a traceback)."""

from __future__ import annotations

import dataclasses
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

from stylecore.params import FIELDS, PRESETS, StyleParams
from styleserver.cli import main
from styleserver.cli.options import show
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


@pytest.mark.parametrize("extra", [("--size", "full"), ("--size", "full", "--tile", "32")], ids=["whole", "tiled"])
def test_size_full_works_at_the_photos_own_size(files, weights_file, extra):
    assert stylize(files, weights_file, *extra, "--steps", "2") == 0
    assert read_image(files / "out.png").shape == (43, 64, 3)


def test_init_image_starts_from_an_earlier_result(files, weights_file):
    assert stylize(files, weights_file, "--steps", "2") == 0
    (files / "out.png").rename(files / "first.png")
    assert stylize(files, weights_file, "--steps", "2", "--init-image", str(files / "first.png")) == 0
    assert read_image(files / "out.png").shape == (32, 48, 3)


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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "abc"], "argument --size: expected a whole number, got 'abc'"),
        (["--steps", "many"], "argument --steps: expected a whole number, got 'many'"),
        (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["--style-layer-weights", "1,x"], "argument --style-layer-weights: expected comma-separated numbers"),
        (["--sizee", "3"], "unrecognized arguments: --sizee"),
    ],
)
def test_command_line_mistakes_get_one_line_naming_the_option(files, weights_file, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        stylize(files, weights_file, *args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("style-transfer stylize: error: ") and len(err.strip().splitlines()) == 1
    assert message in err and "usage:" not in err


def test_a_missing_output_option_gets_one_line(files, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["stylize", str(files / "content.jpg"), str(files / "style.png")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "the following arguments are required: -o/--output" in err


@pytest.fixture(scope="module")
def stylize_help() -> str:
    """`style-transfer stylize --help`, whitespace collapsed (argparse wraps lines)."""
    proc = subprocess.run([sys.executable, "-m", "styleserver.cli", "stylize", "--help"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0
    return " ".join(proc.stdout.split())


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(StyleParams) if "choices" in f.metadata])
def test_help_lists_the_choices_the_parameters_accept(stylize_help, name):
    choices = dataclasses.fields(StyleParams)[FIELDS.index(name)].metadata["choices"]
    assert f"--{name.replace('_', '-')} {{{','.join(choices)}}}" in stylize_help


@pytest.mark.parametrize(
    "option, defaults",
    [
        ("--optimizer {lbfgs,adam}", "(default: lbfgs; seed: adam)"),
        ("--size SIZE", "(default: 512; draft: 256, high: 1024, full: 0, seed: 400)"),
        ("--style-weight STYLE_WEIGHT", "(default: 1e+06)"),
        ("--preset {default,draft,high,full,seed}", "(default: default;"),
        ("--save-every N", "(default: 0, none)"),
        ("--max-pixels N", "(default: 64,000,000)"),
    ],
)
def test_help_shows_defaults(stylize_help, option, defaults):
    assert option in stylize_help
    after = stylize_help[stylize_help.index(option):]
    assert defaults in after[: after.index(" --", len(option))]


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


@pytest.fixture(scope="module")
def presets_output() -> str:
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["presets"]) == 0
    return out.getvalue()


@pytest.mark.parametrize("name", FIELDS)
def test_presets_shows_each_value_in_its_own_column(presets_output, name):
    line = next(l for l in presets_output.splitlines() if l.startswith(f"--{name.replace('_', '-')} "))
    values = [show(getattr(p, name)) for p in PRESETS.values()]
    cells = line.split()[1:]
    assert cells == values or cells == [values[0], "(every", "preset)"]
    assert len(line) <= 80


def test_presets_header_names_the_presets(presets_output):
    assert presets_output.splitlines()[0].split() == ["option", *PRESETS]


# --- the progress bar ---------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _feed(bar, scales=((2, 10), (1, 5))) -> None:
    """Started, then a Progress for every step of each (scale count, steps) pair."""
    from stylecore.events import Progress, Started

    levels = [steps for n, steps in scales for _ in range(n)]
    bar.update(Started(device="cpu", dtype="float32", sizes=tuple((32 * i, 48 * i) for i in range(1, len(levels) + 1)),
                       total_steps=sum(levels)))
    for scale, steps in enumerate(levels, start=1):
        for step in range(1, steps + 1):
            bar.update(Progress(scale=scale, scales=len(levels), step=step, steps=steps,
                                losses={"total": 123456.789}, best=123456.789, elapsed=3725.0, eta=59.0))


@pytest.mark.parametrize("columns", [200, 80, 50, 30, 12])
def test_progress_bar_redraws_in_place_within_the_terminal_width(monkeypatch, columns):
    from styleserver.cli.progress import ProgressBar

    monkeypatch.setenv("COLUMNS", str(columns))
    stream = _Terminal()
    _feed(ProgressBar(stream))
    started, drawn = stream.getvalue().split("\n", 1)
    assert "\n" not in drawn  # every step redrew the same line
    frames = [f.removesuffix("\x1b[K") for f in drawn.split("\r")[1:]]
    assert len(frames) == 25 and all(0 < len(f) < columns for f in frames)


def test_progress_bar_on_a_wide_terminal_shows_every_figure(monkeypatch):
    from styleserver.cli.progress import ProgressBar

    monkeypatch.setenv("COLUMNS", "120")
    stream = _Terminal()
    _feed(ProgressBar(stream))
    last = stream.getvalue().split("\r")[-1]
    assert "100% scale 3/3 step 5/5 loss 1.235e+05 elapsed 1:02:05 ETA 0:59" in last and last.startswith("[###")


def test_progress_without_a_terminal_is_a_line_now_and_then():
    from styleserver.cli.progress import ProgressBar

    stream = io.StringIO()
    _feed(ProgressBar(stream, log_every=3600))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # the first step, then the end of each scale
    assert [l.split(" (")[0] for l in lines[1:]] == ["scale 1/3 step 1/10", "scale 1/3 step 10/10",
                                                     "scale 2/3 step 10/10", "scale 3/3 step 5/5"]


# --- protecting the user's files ----------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "relative path", "symlink", "hard link", "style"])
def test_an_output_that_is_an_input_is_refused_before_any_work(files, weights_file, capsys, monkeypatch, how):
    monkeypatch.chdir(files)
    out, role = {"same path": (files / "content.jpg", "content"), "relative path": ("./content.jpg", "content"),
                 "symlink": (files / "link.jpg", "content"), "hard link": (files / "hard.jpg", "content"),
                 "style": (files / "style.png", "style")}[how]
    if how == "symlink":
        (files / "link.jpg").symlink_to(files / "content.jpg")
    elif how == "hard link":
        os.link(files / "content.jpg", files / "hard.jpg")
    before = (files / "content.jpg").read_bytes(), (files / "style.png").read_bytes()
    assert main(["stylize", "content.jpg", str(files / "style.png"), "-o", str(out), "--weights", "/nonexistent",
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"is the {role} image" in err
    assert ((files / "content.jpg").read_bytes(), (files / "style.png").read_bytes()) == before


@pytest.mark.parametrize("umask, existing, mode", [
    (0o022, None, 0o644),  # a new file: 0666 less the umask, as a plain write makes it
    (0o077, None, 0o600),
    (0o022, 0o664, 0o664),  # a replaced file keeps its own mode
    (0o077, 0o644, 0o644),
])
def test_the_result_gets_the_mode_a_plain_write_gives(files, weights_file, umask, existing, mode):
    if existing is not None:
        (files / "out.png").write_bytes(b"old")
        os.chmod(files / "out.png", existing)
    old = os.umask(umask)
    try:
        assert stylize(files, weights_file) == 0
    finally:
        os.umask(old)
    assert oct((files / "out.png").stat().st_mode & 0o777) == oct(mode)


@pytest.mark.parametrize("target", ["existing", "dangling"])
def test_an_output_that_is_a_symlink_writes_the_file_it_points_to(files, weights_file, target):
    (files / "results").mkdir()
    if target == "existing":
        (files / "results" / "final.png").write_bytes(b"old")
    (files / "out.png").symlink_to(files / "results" / "final.png")
    assert stylize(files, weights_file) == 0
    assert (files / "out.png").is_symlink()
    assert read_image(files / "results" / "final.png").shape == (32, 48, 3)


class Where(list):
    """Extra stylize arguments: none for the local engine, or --server with `running`."""

    running = None


@pytest.fixture(params=["local", "remote"])
def where(request):
    if request.param == "local":
        return Where()
    running = request.getfixturevalue("start_server")()
    where = Where(["--server", f"127.0.0.1:{running.port}"])
    where.running = running
    return where


def test_input_the_server_finds_invalid_is_bad_input_there_too(files, weights_file, capsys, start_server):
    """The same exit status as run here: max_memory below what the server's own process
    holds is refused there (INVALID_ARGUMENT), as it would be here."""
    running = start_server()
    (files / "out.png").write_bytes(b"precious")
    assert stylize(files, weights_file, "--max-memory", "0.001", "--server", f"127.0.0.1:{running.port}") == 2
    err = capsys.readouterr().err
    assert "refused the job: max_memory:" in err and "INVALID_ARGUMENT" in err
    assert (files / "out.png").read_bytes() == b"precious"


def test_a_diverging_run_is_an_error_and_writes_nothing(files, weights_file, capsys, where):
    (files / "out.png").write_bytes(b"precious")
    assert stylize(files, weights_file, "--optimizer", "adam", "--lr", "1e6", "--clamp", "0", *where) == 2
    err = capsys.readouterr().err
    assert err.startswith("style-transfer: error: diverged: at scale 1/1 the objective ended at ")
    assert len(err.strip().splitlines()) == 1
    assert (files / "out.png").read_bytes() == b"precious"


@pytest.mark.parametrize("channels", [3, 4])
def test_ctrl_c_writes_the_best_image_so_far_beside_the_output(files, weights_file, content, capsys, monkeypatch,
                                                               where, channels):
    """Ctrl-C (KeyboardInterrupt in the main thread) during the second step."""
    from styleserver.cli.progress import ProgressBar
    from stylecore.events import Progress

    alpha = np.tile(np.arange(64, dtype=np.uint8) * 4, (43, 1))
    Image.fromarray(np.dstack([content, alpha][: channels - 2])).save(files / "c.png")
    seen = []

    def update(self, event):
        seen.append(event)
        if sum(isinstance(e, Progress) for e in seen) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBar, "update", update)
    # 1000 steps: the remote job would hold the server for minutes unless it is cancelled
    assert stylize(files, weights_file, "--steps", "1000", *where, content="c.png") == 130
    err = capsys.readouterr().err
    assert f"wrote the best image so far to {files / 'out.interrupted.png'}" in err
    assert not (files / "out.png").exists()
    saved = read_image(files / "out.interrupted.png")
    assert saved.shape == (32, 48, channels)
    if channels == 4:  # the output's alpha: the content's, shrunk to --size 48
        expected = read_image(files / "c.png")
        from styleserver.imageio import shrink
        assert np.array_equal(saved[:, :, 3], shrink(expected, 48)[:, :, 3])
    if where.running:  # the server stopped the job: it is free at once
        import time

        deadline = time.monotonic() + 10
        while where.running.service.scheduler.depth != (False, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert where.running.service.scheduler.depth == (False, 0)


def test_ctrl_c_from_the_terminal_stops_the_real_command(files, weights_file):
    """SIGINT to the installed command mid-run: status 130, the image so far on disk."""
    import signal
    import time

    exe = Path(sys.executable).with_name("style-transfer")
    proc = subprocess.Popen(
        [str(exe), "stylize", str(files / "content.jpg"), str(files / "style.png"), "-o", str(files / "out.png"),
         "--weights", weights_file, "--size", "48", "--scales", "1", "--steps", "100000"],
        stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # not a terminal: a plain line at the first step
            if line.startswith("scale 1/1 step 1/"):
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert "wrote the best image so far to" in err and "Traceback" not in err
    assert read_image(files / "out.interrupted.png").shape == (32, 48, 3)
    assert not (files / "out.png").exists()


@pytest.mark.parametrize("args, expected", [
    (["--server", "127.0.0.1:9", "--device", "cpu"], "--device: a server runs on the device it was started with"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
])
def test_device_is_the_local_engines_only(tmp_path, capsys, args, expected):
    from PIL import Image

    for name in ("c.png", "s.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    try:
        code = main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(tmp_path / "o.png"), *args])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("link_to, words", [
    ("missing/final.png", "does not exist"),
    ("final.jpg", "JPEG cannot store the content's transparency"),
    ("final.blob", "unknown format"),
    ("out.png", "symbolic links"),  # a link to itself
])
def test_a_symlinked_output_that_cannot_be_written_is_refused_before_running(files, weights_file, capsys, content,
                                                                              link_to, words):
    rgba = np.concatenate([content, np.full((*content.shape[:2], 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba).save(files / "rgba.png")
    (files / "out.png").symlink_to(files / link_to)
    assert stylize(files, "/nonexistent-weights", content="rgba.png") == 2
    err = capsys.readouterr().err
    assert words in err and "weights" not in err, err


def _sky16(content: np.ndarray, alpha: bool = True) -> np.ndarray:
    """A 16-bit RGBA image of the content's size: a smooth sky gradient with thousands of
    levels per channel, and a 16-bit alpha ramp."""
    h, w = content.shape[:2]
    t = np.linspace(0.15, 0.85, h * w).reshape(h, w)
    channels = [t, t * 0.95, t * 0.8] + ([np.linspace(0.1, 1, h * w).reshape(h, w)] if alpha else [])
    return np.rint(np.stack(channels, 2) * 65535).astype(np.uint16)


@pytest.mark.parametrize("out, depth", [("out.png", 16), ("out.tif", 16), ("out.jpg", 8)])
def test_a_16_bit_content_gives_a_result_at_the_depth_the_output_holds(files, weights_file, capsys, content,
                                                                        where, out, depth):
    from styleserver.imageio import write_image

    sky = _sky16(content, alpha=out != "out.jpg")
    write_image(files / "sky.png", sky)
    assert stylize(files, weights_file, "--keep-size", *where, content="sky.png", out=out) == 0
    result = read_image(files / out)
    assert result.dtype == (np.uint16 if depth == 16 else np.uint8) and result.shape == sky.shape
    if depth == 16:
        assert np.array_equal(result[:, :, 3], sky[:, :, 3])  # alpha bit for bit at 16 bits
        assert len(np.unique(result[:, :, 0])) > 256


def test_a_16_bit_content_written_as_jpeg_is_told_it_has_8_bits(files, weights_file, capsys, content):
    from styleserver.imageio import write_image

    write_image(files / "sky.png", _sky16(content, alpha=False))
    assert main(["stylize", str(files / "sky.png"), str(files / "style.png"), "-o", str(files / "out.jpg"),
                 "--weights", weights_file, "--size", "48", "--scales", "1", "--steps", "1"]) == 0
    assert "16 bits per channel; .jpg holds 8: the result has 8" in capsys.readouterr().err


@pytest.mark.parametrize("depth, dtype", [("8", np.uint8), ("32", np.float32)])
def test_output_depth_chooses_the_results_depth(files, weights_file, where, depth, dtype):
    assert stylize(files, weights_file, "--output-depth", depth, *where, out="out.tif") == 0
    assert read_image(files / "out.tif").dtype == dtype


def test_an_output_depth_the_format_cannot_hold_is_refused_before_running(files, weights_file, capsys):
    assert stylize(files, "/nonexistent-weights", "--output-depth", "32") == 2
    err = capsys.readouterr().err
    assert "--output-depth 32: .png files hold 8 or 16 bits per channel; write .tif" in err, err


def _mask(files, name: str, content: np.ndarray, left: bool = True, rgb: bool = False) -> str:
    h, w = content.shape[:2]
    m = np.zeros((h, w), np.uint8)
    m[:, : w // 2] = 255
    m = m if left else 255 - m
    Image.fromarray(np.dstack([m, 255 - m, m]) if rgb else m).save(files / name)
    return str(files / name)


def test_style_masks_style_each_region_and_keep_the_rest(files, weights_file, content, where):
    """One masked style, no background: the right half keeps the content's pixels."""
    mask = _mask(files, "left.png", content)
    Image.fromarray(content).save(files / "content.png")
    assert stylize(files, weights_file, "--keep-size", "--style-mask", mask, *where, content="content.png") == 0
    out = read_image(files / "out.png")
    w = content.shape[1]
    assert np.array_equal(out[:, w // 2 + 1:], content[:, w // 2 + 1:])
    assert not np.array_equal(out[:, : w // 2], content[:, : w // 2])


def test_a_background_style_styles_what_no_mask_covers(files, weights_file, content, where):
    mask = _mask(files, "left.png", content)
    Image.fromarray(content).save(files / "content.png")
    assert stylize(files, weights_file, "--keep-size", "--style-mask", mask, "--background-style",
                   str(files / "style.png"), *where, content="content.png") == 0
    w = content.shape[1]
    assert not np.array_equal(read_image(files / "out.png")[:, w // 2 + 1:], content[:, w // 2 + 1:])


@pytest.mark.parametrize("how, message", [
    ("size", "--style-mask {d}/small.png: is 10x10 px; a mask must be the size of its image, 64x43"),
    ("colour", "is not gray: its colour channels differ"),
    ("count", "--style-mask: given 2 times for 1 style image(s); at most one per style"),
    ("background", "--background-style: styles what no --style-mask covers; give --style-mask too"),
])
def test_a_bad_mask_is_refused_before_any_work(files, content, capsys, how, message):
    """Refused before the weights are even looked for: nothing is spent."""
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(files / "small.png")
    args = {"size": ["--style-mask", str(files / "small.png")],
            "colour": ["--style-mask", _mask(files, "rgb.png", content, rgb=True)],
            "count": ["--style-mask", _mask(files, "a.png", content), "--style-mask", _mask(files, "b.png", content)],
            "background": ["--background-style", str(files / "style.png")]}[how]
    assert stylize(files, "/nonexistent-weights", *args) == 2
    err = capsys.readouterr().err
    assert message.format(d=files) in err and "weights" not in err and "Traceback" not in err, err


def test_tileable_alone_means_1(files, weights_file, content):
    Image.fromarray(content).save(files / "content.png")
    assert stylize(files, weights_file, "--keep-size", "--tileable", content="content.png") == 0
    assert read_image(files / "out.png").shape == content.shape
