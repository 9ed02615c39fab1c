"""`style-transfer sequence`: videos, animations and folders in and out, resuming,
and clear errors (seeded random weights, tiny frames)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from styleserver.cli import main
from styleserver.frames import frame_path, frames_done, open_clip

FAST = ["--size", "48", "--scales", "1", "--steps", "2", "--precision", "fp32", "-q"]


def _frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    """A textured strip panned 3 px a frame."""
    rng = np.random.default_rng(0)
    strip = (rng.random((h, w + 3 * n, 3)) * 255).astype(np.uint8)
    return [np.ascontiguousarray(strip[:, 3 * i:3 * i + w]) for i in range(n)]


def _gif(path, n=3, durations=(100, 200, 150)):
    images = [Image.fromarray(f) for f in _frames(n)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=list(durations), loop=0)
    return path


def _video(path, n=4, fps=12):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for f in _frames(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_an_animated_gif_gives_all_frames_with_their_durations(tmp_path):
    clip = open_clip(_gif(tmp_path / "a.gif"))
    assert (clip.kind, clip.count, clip.durations) == ("animation", 3, (100, 200, 150))
    assert [f.shape for f in clip.frames()] == [(48, 64, 3)] * 3


def test_a_video_round_trip_keeps_frame_count_and_rate(tmp_path, weights_file, style):
    src = _video(tmp_path / "in.mp4")
    Image.fromarray(style).save(tmp_path / "style.png")
    out = tmp_path / "out.mp4"
    assert main(["sequence", str(src), str(tmp_path / "style.png"), "-o", str(out), "--weights", weights_file,
                 *FAST]) == 0
    clip = open_clip(out)
    assert (clip.count, clip.fps, clip.size) == (4, Fraction(12), (48, 36))  # --size 48: the longest side
    assert not (tmp_path / "out.mp4.frames").exists()  # assembled, then removed


def test_an_animation_keeps_its_durations(tmp_path, weights_file, style):
    Image.fromarray(style).save(tmp_path / "style.png")
    out = tmp_path / "out.gif"
    assert main(["sequence", str(_gif(tmp_path / "a.gif")), str(tmp_path / "style.png"), "-o", str(out),
                 "--weights", weights_file, *FAST]) == 0
    assert open_clip(out).durations == (100, 200, 150)


def test_a_stopped_sequence_resumes_after_its_last_frame(tmp_path, weights_file, style):
    """Frames land in the output folder as they are made; a run that stopped after two
    (here: the third deleted) goes on from the third, exactly as the whole run did."""
    folder = tmp_path / "frames_in"
    folder.mkdir()
    for i, f in enumerate(_frames(3)):
        Image.fromarray(f).save(folder / f"f{i + 1}.png")
    Image.fromarray(style).save(tmp_path / "style.png")
    out = tmp_path / "out"
    args = ["sequence", str(folder), str(tmp_path / "style.png"), "-o", str(out), "--weights", weights_file, *FAST]
    assert main(args) == 0 and frames_done(out) == 3
    whole = np.asarray(Image.open(frame_path(out, 2)))
    frame_path(out, 2).unlink()
    assert main(args) == 0 and frames_done(out) == 3
    assert np.array_equal(np.asarray(Image.open(frame_path(out, 2))), whole)


def _text(p):
    p.write_text("not a video")
    return p


def _empty_folder(p):
    folder = p.parent / "empty"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("make, output, message", [
    (_text, "out.mp4", "not a readable video"),
    (lambda p: _gif(p.with_suffix(".gif")), "out.bmp", "write a video"),
    (_empty_folder, "out.mp4", "a folder with no images"),
])
def test_bad_input_is_a_clear_error(tmp_path, weights_file, style, capsys, make, output, message):
    source = make(tmp_path / "in.mp4")
    Image.fromarray(style).save(tmp_path / "style.png")
    code = main(["sequence", str(source), str(tmp_path / "style.png"), "-o", str(tmp_path / output),
                 "--weights", weights_file, *FAST])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / output).exists()


def test_a_sequence_through_a_server_is_the_local_one(tmp_path, weights_file, style, start_server):
    """The same frames, locally and with --server: the same pixels (fp32)."""
    server = start_server()
    Image.fromarray(style).save(tmp_path / "style.png")
    src = _gif(tmp_path / "a.gif")
    common = [str(src), str(tmp_path / "style.png"), *FAST]
    assert main(["sequence", *common, "-o", str(tmp_path / "local"), "--weights", weights_file]) == 0
    assert main(["sequence", *common, "-o", str(tmp_path / "remote"), "--server", f"127.0.0.1:{server.port}"]) == 0
    for i in range(3):
        local = np.asarray(Image.open(frame_path(tmp_path / "local", i)))
        assert np.array_equal(np.asarray(Image.open(frame_path(tmp_path / "remote", i))), local), i


def _folder_and_style(tmp_path, style, n=2):
    """A folder of n frames and style.png beside it."""
    folder = tmp_path / "frames_in"
    folder.mkdir()
    for i, f in enumerate(_frames(n)):
        Image.fromarray(f).save(folder / f"f{i}.png")
    Image.fromarray(style).save(tmp_path / "style.png")
    return folder


def test_a_region_mask_styles_every_frame_there_and_keeps_the_rest(tmp_path, weights_file, style):
    """One style, masked to the left half (every style masked: what no mask covers
    keeps the content), the same mask for every frame; --size 48 shrinks the 64x48
    frames and the mask alike."""
    from styleserver.imageio import shrink

    folder = _folder_and_style(tmp_path, style)
    mask = np.zeros((48, 64), np.uint8)
    mask[:, :32] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert main(["sequence", str(folder), str(tmp_path / "style.png"), "-o", str(out), "--style-mask",
                 str(tmp_path / "mask.png"), "--weights", weights_file, "--size", "48", "--scales", "1", "--steps",
                 "10", "--precision", "fp32", "-q"]) == 0
    for i, frame in enumerate(_frames(2)):
        frame = shrink(frame, 48)
        result = np.asarray(Image.open(frame_path(out, i)))
        assert result.shape == frame.shape == (36, 48, 3)
        assert np.array_equal(result[:, 30:], frame[:, 30:])  # kept, away from the soft border
        assert np.abs(result[:, :18].astype(int) - frame[:, :18]).mean() > 2  # styled


def test_a_mask_of_another_size_than_the_frames_is_refused(tmp_path, weights_file, style, capsys):
    folder = _folder_and_style(tmp_path, style)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "mask.png")
    code = main(["sequence", str(folder), str(tmp_path / "style.png"), "-o", str(tmp_path / "out"), "--style-mask",
                 str(tmp_path / "mask.png"), "--weights", weights_file, *FAST])
    assert code == 2 and "--style-mask" in capsys.readouterr().err and not (tmp_path / "out").exists()
