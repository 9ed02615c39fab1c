"""server/imageio.py: files keep their bit depth (8 bits, 16 bits, 32-bit float) through
read, write, probe and shrink; what a format cannot hold is refused with a clear message."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from stylecore.buffers import to_depth
from styleserver import imageio
from styleserver.imageio import ImageError, ImageTooLarge, decode_image, encode_image, read_image, shrink, write_image

DTYPES = {8: np.uint8, 16: np.uint16, 32: np.float32}


def pixels(bits: int, channels: int, height: int = 40, width: int = 50, seed: int = 0) -> np.ndarray:
    """Random pixels over a depth's whole range: at 16 bits about 2000 distinct levels a channel."""
    rng = np.random.default_rng(seed)
    if bits == 32:
        return rng.random((height, width, channels), dtype=np.float32)
    return rng.integers(0, np.iinfo(DTYPES[bits]).max + 1, (height, width, channels)).astype(DTYPES[bits])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, bits: int = 16, colour: int = 2) -> bytes:
    """A PNG whose IHDR declares width x height, with junk for pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"\x78\x9c" + b"\x00" * 500)
            + png_chunk(b"IEND", b""))


def tiff_declaring(width: int, height: int, bits: int = 16) -> bytes:
    """An uncompressed gray TIFF whose header declares width x height, with 64 bytes of pixels."""
    pixels_at = 8 + 2 + 9 * 12 + 4  # after the header and the IFD
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 1), (262, 3, 1), (273, 4, pixels_at),
               (277, 3, 1), (278, 4, height), (279, 4, width * height * bits // 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<I", v) if kind == 4 else struct.pack("<HH", v, 0))
        for tag, kind, v in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def tiff_bytes(array: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, array, metadata=None, **options)
    return out.getvalue()


def with_exif_orientation(png: bytes, orientation: int) -> bytes:
    """A PNG with an eXIf chunk (orientation) inserted after IHDR."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[6:]  # the TIFF structure, without Pillow's "Exif\0\0"
    return png[:33] + png_chunk(b"eXIf", body) + png[33:]


# --- round trips -------------------------------------------------------------------------------------

LOSSLESS = [(suffix, bits, channels) for suffix, depths in ((".png", (8, 16)), (".tif", (8, 16, 32)))
            for bits in depths for channels in (1, 2, 3, 4)]


@pytest.mark.parametrize("suffix, bits, channels", LOSSLESS)
def test_lossless_formats_round_trip_bit_for_bit(tmp_path, suffix, bits, channels):
    image = pixels(bits, channels)
    write_image(tmp_path / f"out{suffix}", image)
    back = read_image(tmp_path / f"out{suffix}")
    assert back.dtype == image.dtype and back.shape == image.shape
    assert np.array_equal(back, image)  # alpha too, bit for bit


@pytest.mark.parametrize("suffix, channels", [(".jpg", 1), (".jpg", 3), (".webp", 3), (".webp", 4)])
def test_lossy_formats_stay_8_bit(tmp_path, suffix, channels):
    smooth = np.linspace(0, 255, 40 * 50 * channels).reshape(40, 50, channels).astype(np.uint8)
    write_image(tmp_path / f"out{suffix}", smooth)
    back = read_image(tmp_path / f"out{suffix}")
    assert back.dtype == np.uint8 and back.shape[:2] == (40, 50)
    assert np.abs(back[:, :, :channels].astype(int) - smooth).mean() < 4


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_gradient_keeps_its_thousands_of_levels(tmp_path, suffix):
    ramp = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64, 1)  # 4096 levels
    image = np.concatenate([ramp, ramp[::-1], ramp.transpose(1, 0, 2)], axis=2)
    write_image(tmp_path / f"ramp{suffix}", image)
    back = read_image(tmp_path / f"ramp{suffix}")
    assert all(len(np.unique(back[:, :, c])) == 4096 for c in range(3))
    assert np.array_equal(back, image)


def test_16_bit_gray_alpha_png_keeps_gray_and_alpha_apart(tmp_path):
    """OpenCV decodes gray+alpha as BGRA and cannot write it: both sides are handled here."""
    image = np.stack([np.full((8, 9), 1234, np.uint16), np.arange(72, dtype=np.uint16).reshape(8, 9) * 900], axis=2)
    write_image(tmp_path / "ga.png", image)
    data = (tmp_path / "ga.png").read_bytes()
    assert data[24:26] == bytes([16, 4])  # IHDR: 16 bits, colour type gray+alpha
    Image.open(io.BytesIO(data)).verify()  # a PNG another reader accepts (CRCs, structure)
    assert np.array_equal(read_image(tmp_path / "ga.png"), image)


@pytest.mark.parametrize("bits", [8, 16])
def test_pillow_opens_our_gray_tiffs(tmp_path, bits):
    image = pixels(bits, 1)
    write_image(tmp_path / "gray.tif", image)
    with Image.open(tmp_path / "gray.tif") as img:
        assert img.mode == ("L" if bits == 8 else "I;16")
        assert np.array_equal(np.asarray(img), image[:, :, 0])


@pytest.mark.parametrize("channels", [2, 4])
def test_deep_tiff_alpha_is_marked_unassociated(channels):
    data = encode_image(pixels(16, channels), "TIFF")
    page = tifffile.TiffFile(io.BytesIO(data)).pages[0]
    assert [int(e) for e in page.extrasamples] == [2]  # unassociated alpha
    assert page.compression.name in ("ADOBE_DEFLATE", "DEFLATE")


# --- refusals -------------------------------------------------------------------------------------------

REFUSED = [
    (".png", 32, 3, "PNG cannot hold 32-bit float; write .tif"),
    (".jpg", 16, 3, "JPEG holds 8 bits per channel; write .png or .tif for a 16-bit result, or use --output-depth 8"),
    (".webp", 16, 3, "WebP holds 8 bits per channel; write .png or .tif for a 16-bit result"),
    (".jpg", 32, 1, "JPEG holds 8 bits per channel; write .tif for a 32-bit float result"),
    (".webp", 32, 4, "WebP holds 8 bits per channel; write .tif for a 32-bit float result"),
    (".jpg", 16, 4, "JPEG cannot store transparency"),
]


@pytest.mark.parametrize("suffix, bits, channels, message", REFUSED)
def test_a_depth_a_format_cannot_hold_is_refused(tmp_path, suffix, bits, channels, message):
    with pytest.raises(ImageError, match=message.replace(".", r"\.")):
        write_image(tmp_path / f"out{suffix}", pixels(bits, channels))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


def test_pixels_of_no_image_depth_are_refused():
    with pytest.raises(ImageError, match="cannot write PNG: .*float64"):
        encode_image(np.zeros((2, 2, 3)), "PNG")


# --- the size guard, before any pixel is decoded -----------------------------------------------------

@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Decoding a pixel fails the test: the size guard must refuse first."""
    def boom(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(imageio._cv2(), "imdecode", boom)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", boom)


@pytest.mark.parametrize("name, data, max_pixels", [
    ("16-bit PNG declaring 100000x100000", png_declaring(100_000, 100_000), imageio.DEFAULT_MAX_PIXELS),
    ("16-bit TIFF declaring 20000x20000", tiff_declaring(20_000, 20_000), imageio.DEFAULT_MAX_PIXELS),
    ("32-bit TIFF declaring 20000x20000", tiff_declaring(20_000, 20_000, 32), imageio.DEFAULT_MAX_PIXELS),
    ("real 16-bit PNG over a small limit", encode_image(pixels(16, 3), "PNG"), 1000),
    ("real 16-bit TIFF over a small limit", encode_image(pixels(16, 4), "TIFF"), 1000),
    ("real float TIFF over a small limit", encode_image(pixels(32, 1), "TIFF"), 1000),
])
def test_deep_files_over_the_limit_are_refused_before_decoding(no_pixel_decoding, name, data, max_pixels):
    with pytest.raises(ImageTooLarge, match=f"^content: .* more than the limit of {max_pixels:,}"):
        decode_image(data, max_pixels, "content")


# --- corrupt and truncated deep files ------------------------------------------------------------------

@pytest.mark.parametrize("fmt, bits, channels, keep", [
    ("PNG", 16, 3, 0.5), ("PNG", 16, 2, 0.9), ("PNG", 16, 1, 60 / 100),
    ("TIFF", 16, 3, 0.5), ("TIFF", 32, 4, 0.9), ("TIFF", 32, 1, 0.3),
])
def test_truncated_deep_files_are_an_image_error(fmt, bits, channels, keep):
    data = encode_image(pixels(bits, channels), fmt)
    with pytest.raises(ImageError, match=r"^style x: corrupt or truncated image \(.*\)$") as caught:
        decode_image(data[: int(len(data) * keep)], what="style x")
    assert "\n" not in str(caught.value)


def test_a_16_bit_png_with_a_broken_crc_is_an_image_error():
    data = bytearray(encode_image(pixels(16, 3), "PNG"))
    data[60] ^= 0xFF  # inside IDAT
    with pytest.raises(ImageError, match="^content: corrupt or truncated image"):
        decode_image(bytes(data), what="content")


# --- what the server may decode ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt, formats", [("PNG", ("TIFF",)), ("TIFF", ("PNG",)), ("PNG", ("JPEG",))])
def test_deep_files_are_decoded_only_in_the_format_named(fmt, formats):
    data = encode_image(pixels(16, 3), fmt)
    with pytest.raises(ImageError, match=r"not an image in the format named"):
        decode_image(data, what="content", formats=formats)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_deep_files_decode_in_their_own_format(fmt):
    image = pixels(16, 4)
    assert np.array_equal(decode_image(encode_image(image, fmt), formats=(fmt,)), image)


# --- other TIFFs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_tiffs_become_float32(dtype):
    image = pixels(32, 3).astype(dtype)
    back = decode_image(tiff_bytes(image, photometric="rgb"))
    assert back.dtype == np.float32 and np.array_equal(back, image.astype(np.float32))


def test_float_tiff_nan_and_infinities_become_finite():
    image = np.array([[[np.nan], [np.inf], [-np.inf], [0.25]]], np.float32)
    back = decode_image(tiff_bytes(image[:, :, 0], photometric="minisblack"))
    assert back[0, :, 0].tolist() == [0.0, 1.0, 0.0, 0.25]


@pytest.mark.parametrize("dtype, words", [
    (np.int32, "32-bit signed integer samples"), (np.uint32, "32-bit unsigned integer samples"),
    (np.int16, "16-bit signed integer samples"),
])
def test_integer_tiffs_of_no_image_depth_are_refused(dtype, words):
    data = tiff_bytes(np.arange(12, dtype=dtype).reshape(3, 4), photometric="minisblack")
    with pytest.raises(ImageError, match=f"^content: TIFF with {words}; .*save it at 16 bits or as 32-bit float"):
        decode_image(data, what="content")


def test_lzw_tiffs_are_read_through_opencv():
    """tifffile needs imagecodecs for LZW; OpenCV writes it (and reads it) by default."""
    cv2 = imageio._cv2()
    image = pixels(16, 4)
    ok, data = cv2.imencode(".tif", cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA))
    assert ok and tifffile.TiffFile(io.BytesIO(data.tobytes())).pages[0].compression.name == "LZW"
    assert np.array_equal(decode_image(data.tobytes()), image)


def test_premultiplied_alpha_is_undone():
    straight = np.array([[[40000, 20000, 0, 32768], [1000, 2000, 3000, 0], [500, 600, 700, 65535]]], np.uint16)
    alpha = straight[:, :, 3:].astype(np.float64) / 65535
    premultiplied = np.concatenate([np.rint(straight[:, :, :3] * alpha), straight[:, :, 3:]], axis=2).astype(np.uint16)
    back = decode_image(tiff_bytes(premultiplied, photometric="rgb", extrasamples=["assocalpha"]))
    assert np.abs(back[:, [0, 2]].astype(int) - straight[:, [0, 2]]).max() <= 2
    assert back[0, 1].tolist() == [0, 0, 0, 0]  # no colour under zero alpha


def test_white_is_zero_gray_is_inverted():
    image = np.array([[0, 1000, 65535]], np.uint16)
    back = decode_image(tiff_bytes(image, photometric="miniswhite"))
    assert back[0, :, 0].tolist() == [65535, 64535, 0]


def test_16_bit_pgm_is_16_bit():
    """Pillow's I mode (16-bit PGM) and I;16 modes give uint16, no longer 8 bits."""
    values = np.array([[0, 1, 300], [65535, 4096, 12345]], np.uint16)
    data = b"P5\n3 2\n65535\n" + values.astype(">u2").tobytes()
    back = decode_image(data)
    assert back.dtype == np.uint16 and np.array_equal(back[:, :, 0], values)


# --- EXIF orientation ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upright_by_pillow():
    """orientation -> what Pillow's 8-bit path makes of a 5x7 image with that EXIF orientation."""
    image = pixels(8, 3, 5, 7)
    found = {}
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = io.BytesIO()
        Image.fromarray(image).save(out, "PNG", exif=exif.tobytes())
        found[orientation] = decode_image(out.getvalue())
    return image, found


@pytest.mark.parametrize("orientation", range(1, 9))
def test_deep_tiff_orientation_turns_it_as_pillow_turns_8_bit_files(upright_by_pillow, orientation):
    image, expected = upright_by_pillow
    deep = to_depth(image, 16)
    data = tiff_bytes(deep, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    assert np.array_equal(decode_image(data), to_depth(expected[orientation], 16))
    width, height, _ = imageio.probe(data, "TIFF")
    assert (height, width) == expected[orientation].shape[:2]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_16_bit_png_exif_orientation_is_applied(upright_by_pillow, orientation):
    image, expected = upright_by_pillow
    data = with_exif_orientation(encode_image(to_depth(image, 16), "PNG"), orientation)
    assert np.array_equal(decode_image(data), to_depth(expected[orientation], 16))


# --- probe, probe_depth, source_bits --------------------------------------------------------------------

PROBED = [("PNG", bits, c) for bits in (8, 16) for c in (1, 2, 3, 4)] + \
         [("TIFF", bits, c) for bits in (8, 16, 32) for c in (1, 2, 3, 4)] + [("JPEG", 8, 3), ("WEBP", 8, 4)]


@pytest.mark.parametrize("fmt, bits, channels", PROBED)
def test_probe_reads_size_channels_and_depth_from_the_header(fmt, bits, channels):
    data = encode_image(pixels(bits, channels, 30, 20), fmt)
    # TIFF: the IFD may follow the pixels; WebP: Pillow wants the whole (small) file
    head = data if fmt in ("TIFF", "WEBP") else data[:1024]
    assert imageio.probe(head, fmt) == (20, 30, channels)
    assert imageio.probe_depth(head, fmt) == bits


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG", "WEBP"])
def test_probe_says_not_yet_on_a_few_bytes(fmt):
    data = encode_image(pixels(16 if fmt in ("PNG", "TIFF") else 8, 3), fmt)
    assert imageio.probe(data[:3], fmt) is None
    assert imageio.probe_depth(data[:3], fmt) is None
    if fmt == "PNG":
        assert imageio.probe_depth(data[:20], fmt) is None


def test_probe_depth_refuses_what_decoding_refuses():
    data = tiff_bytes(np.zeros((3, 4), np.int32), photometric="minisblack")
    with pytest.raises(ImageError, match="32-bit signed integer samples"):
        imageio.probe_depth(data, "TIFF")
    with pytest.raises(ImageError, match="not a PNG file"):
        imageio.probe_depth(data, "PNG")


@pytest.mark.parametrize("name, bits, channels, want", [
    ("a.png", 16, 3, 16), ("a.png", 8, 4, 8), ("a.tif", 16, 2, 16), ("a.tif", 32, 3, 32), ("a.tif", 8, 1, 8),
    ("a.jpg", 8, 3, 8),
])
def test_source_bits(tmp_path, name, bits, channels, want):
    write_image(tmp_path / name, pixels(bits, channels))
    assert imageio.source_bits(tmp_path / name) == want


# --- shrink -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits, channels", [(bits, c) for bits in (16, 32) for c in (1, 2, 3, 4)])
def test_shrink_keeps_the_depth(bits, channels):
    image = pixels(bits, channels, 40, 60)
    small = shrink(image, 30)
    assert small.dtype == image.dtype and small.shape == (20, 30, channels)
    if bits == 32:  # Lanczos's ringing is clipped to each channel's range (uint16: to 0..65535)
        assert (small.min(axis=(0, 1)) >= image.min(axis=(0, 1))).all()
        assert (small.max(axis=(0, 1)) <= image.max(axis=(0, 1))).all()


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_shrink_at_16_bits_matches_8_bits(channels):
    """The same Lanczos (alpha-weighted) at every depth: a 16-bit copy of an 8-bit image
    shrinks to within a level of what the 8-bit one shrinks to (two with alpha, which
    Pillow's 8-bit path multiplies in at 8 bits)."""
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([(x * 4) % 256, (y * 5) % 256, (x + y) * 2, 255 - y * 3][:channels], axis=2).astype(np.uint8)
    small8, small16 = shrink(image, 16), shrink(to_depth(image, 16), 16)
    assert small16.dtype == np.uint16
    assert np.abs(to_depth(small16, 8).astype(int) - small8).max() <= (2 if channels == 4 else 1)


def test_shrink_keeps_opaque_alpha_opaque_at_16_bits():
    image = pixels(16, 4, 40, 60)
    image[:, :, 3] = 65535
    assert (shrink(image, 30)[:, :, 3] == 65535).all()
