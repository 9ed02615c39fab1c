"""`style-transfer batch`: many photos after one style, the network loaded once, results
under the photos' names, an interrupted batch resumed, bad photos named."""

from __future__ import annotations

import numpy as np
from PIL import Image

from styleserver.cli import main

FAST = ["--size", "40", "--scales", "2", "--min-scale", "32", "--coarse-steps", "2", "--steps", "2",
        "--precision", "fp32", "-q"]


def _photos(tmp_path, content, n=3):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.roll(content, 7 * i, axis=1)).save(folder / f"p{i}.png")
    return folder


def test_a_folder_of_photos_is_stylized_under_their_names(tmp_path, content, style, weights_file):
    photos = _photos(tmp_path, content)
    Image.fromarray(style).save(tmp_path / "style.png")
    out = tmp_path / "out"
    assert main(["batch", str(photos), "--style", str(tmp_path / "style.png"), "-o", str(out),
                 "--weights", weights_file, *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    # The same as `stylize` of one photo alone (the shared style Grams change nothing).
    assert main(["stylize", str(photos / "p1.png"), str(tmp_path / "style.png"), "-o", str(tmp_path / "one.png"),
                 "--weights", weights_file, *FAST]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "p1.png")), np.asarray(Image.open(tmp_path / "one.png")))


def test_an_interrupted_batch_resumes_and_skips_what_is_done(tmp_path, content, style, weights_file, capsys):
    photos = _photos(tmp_path, content)
    Image.fromarray(style).save(tmp_path / "style.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0.png").write_bytes(b"already made")  # as if the batch had stopped after p0
    assert main(["batch", str(photos), "--style", str(tmp_path / "style.png"), "-o", str(out),
                 "--weights", weights_file, *FAST[:-1]]) == 0
    assert (out / "p0.png").read_bytes() == b"already made" and (out / "p2.png").exists()
    assert "1 of 3 photos have results" in capsys.readouterr().err


def test_a_bad_photo_is_named_and_the_others_are_made(tmp_path, content, style, weights_file, capsys):
    photos = _photos(tmp_path, content, n=2)
    (photos / "broken.png").write_bytes(b"not a png")
    Image.fromarray(style).save(tmp_path / "style.png")
    out = tmp_path / "out"
    assert main(["batch", str(photos), "--style", str(tmp_path / "style.png"), "-o", str(out),
                 "--weights", weights_file, *FAST]) == 1
    assert "broken.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png"]
