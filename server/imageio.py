"""Image files <-> (H, W, C) buffers at the file's own depth (stylecore.buffers: uint8,
uint16 or float32), with every failure turned into a one-line ImageError that names
the file and what is wrong with it.

8-bit files go through Pillow, as they always have. Deeper ones need other readers,
because Pillow reads 16-bit RGB(A) PNGs as 8 bits and most deep TIFFs not at all:
16-bit PNGs are decoded by OpenCV, TIFFs over 8 bits by tifffile (OpenCV where the
TIFF is compressed with a codec tifffile lacks without imagecodecs, such as LZW).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import stat
import struct
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stylecore.buffers import depth_of
from styletransfer.v1 import wire

# A guard against decompression bombs: the size is read from the header and
# checked before any pixel is decoded. 64 megapixels is a 8000x8000 photo.
DEFAULT_MAX_PIXELS = 64_000_000

WRITABLE = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


class ImageError(ValueError):
    """A file or buffer that is not a usable image."""


class ImageTooLarge(ImageError):
    """An image over the configured limit (refused before decoding)."""


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image") -> np.ndarray:
    """Read a file as (H, W, C), C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA), at the
    file's own depth: uint8; uint16 for 16-bit PNG, TIFF and gray; float32 for float
    TIFF. EXIF orientation is applied."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{what} {path}: no such file")
    if not path.is_file():
        raise ImageError(f"{what} {path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    return decode_image(data, max_pixels, f"{what} {path}")


def source_bits(path: str | os.PathLike) -> int:
    """Bits per channel the file stores (8 where it does not say more), so that a caller
    can say what a result at another depth keeps or loses. Reads the header only."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
        if _png_bits(head) is not None:  # Pillow reads 16-bit RGB(A) as 8-bit: IHDR says
            return _png_bits(head)
        if head[:4] in TIFF_MAGIC:
            try:
                with _tifffile().TiffFile(path) as tif:
                    return int(tif.pages[0].bitspersample)
            except Exception:  # noqa: BLE001 - Pillow may still read it
                pass
        with Image.open(path) as img:
            if img.mode.startswith("I;16"):
                return 16
            if img.mode in ("I", "F"):
                return 32
    except Exception:  # noqa: BLE001 - read_image says what is wrong with a file
        pass
    return 8


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image",
                 formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Encoded bytes -> (H, W, C) at the file's depth (see read_image). `formats` (Pillow
    names, e.g. ("PNG",)) restricts what is tried: the server decodes only the format a
    request names; None: any. 16-bit PNGs and TIFFs over 8 bits take their own readers,
    every other file Pillow's."""
    if not data:
        raise ImageError(f"{what}: empty file")
    if (formats is None or "PNG" in formats) and _png_bits(data) == 16:
        return _decode_png16(data, max_pixels, what)
    if (formats is None or "TIFF" in formats) and data[:4] in TIFF_MAGIC:
        deep = _decode_deep_tiff(data, max_pixels, what)
        if deep is not None:
            return deep
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=formats)
            check_size(img.width, img.height, max_pixels, what)
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        size = _png_header_size(data)
        if size is not None:
            check_size(*size, max_pixels, what)  # Pillow refuses 0-sized PNGs without saying why
        if formats:
            raise ImageError(f"{what}: not an image in the format named ({'/'.join(formats)}), or a corrupt one") from None
        raise ImageError(f"{what}: not an image in a format Pillow reads (PNG, JPEG, WebP, TIFF, BMP, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"{what}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise ImageError(f"{what}: corrupt or truncated image ({e})") from None
    return to_buffer(img, what)


def probe(data: bytes, fmt: str) -> tuple[int, int, int] | None:
    """(width, height, channels) from the first bytes of a `fmt` file (after EXIF
    orientation), without decoding a pixel; None when those bytes do not tell yet.
    Raises ImageError when they cannot begin a `fmt` file, or begin a TIFF whose
    samples decode_image refuses."""
    _check_magic(data, fmt)
    if fmt == "TIFF" and (page := _tiff_header(data)) is not None:  # over 8 bits: as tifffile reads it
        layout = _tiff_layout(page)
        width, height = int(page.imagewidth), int(page.imagelength)
        if layout.orientation in (5, 6, 7, 8):
            width, height = height, width
        return width, height, layout.channels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=(fmt,))
            width, height = img.size
            try:
                if img.getexif().get(0x0112) in (5, 6, 7, 8):
                    width, height = height, width
            except Exception:  # EXIF not readable yet: the size check is the same either way
                pass
            if fmt == "PNG" and _png_bits(data) == 16:  # Pillow calls 16-bit gray+alpha RGBA
                return width, height, _PNG16_CHANNELS.get(data[25], 0) or channels_of(img.mode)
            return width, height, channels_of(img.mode, "transparency" in img.info)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"refused as a decompression bomb ({e})") from None
    except Exception:  # noqa: BLE001 - any failure on partial bytes means "not yet"
        return None


def probe_depth(data: bytes, fmt: str) -> int | None:
    """Bits per channel (8, 16 or 32) of the buffer decode_image makes of a `fmt` file,
    from its first bytes; None while they do not tell. For counting memory before the
    pixels arrive. Raises ImageError as probe does."""
    _check_magic(data, fmt)
    if len(data) < 4:
        return None
    if fmt == "PNG":
        bits = _png_bits(data)
        return None if bits is None else 16 if bits == 16 else 8
    if fmt == "TIFF":
        page = _tiff_header(data)
        if page is not None:
            return 32 if _tiff_layout(page).float else 16
        try:  # 8 bits or fewer (or a header tifffile cannot parse): Pillow reads it
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mode = Image.open(io.BytesIO(data), formats=("TIFF",)).mode
        except Exception:  # noqa: BLE001 - not yet
            return None
        return 32 if mode == "F" else 16 if mode.startswith("I") else 8
    return 8  # JPEG and WebP: always 8 bits here


_MAGIC = {"PNG": (b"\x89PNG",), "JPEG": (b"\xff\xd8",), "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
          "WEBP": (b"RIFF",)}


def _check_magic(data: bytes, fmt: str) -> None:
    if len(data) >= 4 and not data.startswith(_MAGIC[fmt]):
        raise ImageError(f"not a {fmt} file (it begins with {data[:4]!r})")


def channels_of(mode: str, transparency: bool = False) -> int:
    """How many channels to_buffer gives for a PIL mode."""
    if mode in ("P", "PA"):
        return 4 if transparency or mode == "PA" else 3
    if mode in ("1", "L", "F") or mode.startswith("I"):
        return 1
    if mode == "LA":
        return 2
    return 4 if "A" in mode else 3


def _png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None if `data` is no PNG."""
    if len(data) >= 24 and data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def check_size(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{what}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{what}: {width}x{height} is {width * height:,} pixels, more than the limit of {max_pixels:,} "
            "(raise it with --max-pixels)"
        )


def to_buffer(img: Image.Image, what: str = "image") -> np.ndarray:
    """Any PIL mode -> (H, W, C) keeping gray as gray, alpha as alpha and the depth:
    uint8; uint16 for Pillow's 16-bit gray modes (I;16*, and I, which holds 16-bit
    PGM samples scaled to 0..65535); float32 for F (NaN as 0, infinities as 0 or 1)."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
    elif mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)[:, :, None]  # native byte order, also for I;16B
    elif mode == "I":
        return np.clip(np.asarray(img), 0, 65535).astype(np.uint16)[:, :, None]
    elif mode == "F":
        return _finite(np.asarray(img, dtype=np.float32).copy())[:, :, None]
    elif mode == "1":
        img = img.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in mode else "RGB")  # CMYK, YCbCr, LAB, RGBX, ...
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


def _finite(values: np.ndarray) -> np.ndarray:
    """Float pixels with NaN as 0 and infinities as 0 or 1, in place: the values
    stylecore.buffers.to_unit gives them anyway, so that every buffer handed on is finite."""
    return np.nan_to_num(values, copy=False, nan=0.0, posinf=1.0, neginf=0.0)


# --- 16-bit PNG (OpenCV) ------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG16_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # IHDR colour type -> channels (palette is 8 bits at most)


def _png_bits(data: bytes) -> int | None:
    """A PNG's bit depth from IHDR, or None if `data` does not begin a PNG (yet)."""
    if len(data) >= 26 and data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        return data[24]
    return None


def _decode_png16(data: bytes, max_pixels: int, what: str) -> np.ndarray:
    """A 16-bit PNG -> uint16 through OpenCV, after the size check on IHDR. The channels
    follow IHDR's colour type, as the 8-bit path's do: OpenCV hands gray+alpha over as
    BGRA with the gray copied three times (we keep the first and the alpha), and adds an
    alpha for a tRNS colour key in an RGB file, which the 8-bit path ignores too."""
    check_size(*_png_header_size(data), max_pixels, what)
    channels = _PNG16_CHANNELS.get(data[25])
    if channels is None:
        raise ImageError(f"{what}: corrupt PNG (colour type {data[25]} cannot have 16 bits)")
    cv2 = _cv2()
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception as e:  # noqa: BLE001 - cv2.error, MemoryError
        raise ImageError(f"{what}: corrupt or truncated image ({_one_line(e)})") from None
    if arr is None or arr.dtype != np.uint16:
        raise ImageError(f"{what}: corrupt or truncated image (OpenCV cannot decode this 16-bit PNG)")
    return _orient(_from_opencv(arr, channels, what), _png_orientation(data))


def _from_opencv(arr: np.ndarray, channels: int, what: str) -> np.ndarray:
    """OpenCV's (H, W), BGR or BGRA -> (H, W, channels) in RGB(A) order."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    have = arr.shape[2]
    if have == channels == 1:
        return arr
    pick = {1: [0], 2: [0, 3], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[channels]
    if max(pick) >= have:
        raise ImageError(f"{what}: OpenCV decoded {have} channels where the file has {channels}")
    return np.ascontiguousarray(arr[:, :, pick])


def _png_orientation(data: bytes) -> int:
    """EXIF orientation (1-8) from a PNG's eXIf chunk, 1 where it has none; reads chunk
    headers only."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"eXIf":
            return _exif_orientation(data[pos + 8:pos + 8 + length])
        if kind == b"IEND":
            break
        pos += 12 + length
    return 1


def _exif_orientation(raw: bytes) -> int:
    exif = Image.Exif()
    try:
        exif.load(raw)
        value = int(exif.get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: leave the image as it is
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """An (H, W, C) array turned upright by its EXIF orientation, as ImageOps.exif_transpose
    turns a PIL image."""
    turned = {
        2: lambda a: a[:, ::-1],                            # mirrored
        3: lambda a: a[::-1, ::-1],                         # 180 degrees
        4: lambda a: a[::-1],                               # flipped
        5: lambda a: a.transpose(1, 0, 2),                  # transposed
        6: lambda a: np.rot90(a, -1),                       # 90 degrees clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),      # transversed
        8: lambda a: np.rot90(a, 1),                        # 90 degrees counter-clockwise
    }.get(orientation)
    return arr if turned is None else np.ascontiguousarray(turned(arr))


# --- TIFF over 8 bits (tifffile) --------------------------------------------------------

TIFF_MAGIC = _MAGIC["TIFF"]  # classic and BigTIFF, both byte orders


class _TiffLayout(NamedTuple):
    """What decode_image makes of a deep TIFF page's samples."""
    keep: list[int]         # sample indices kept: gray or R, G, B, then alpha
    float: bool             # float samples (-> float32), else unsigned integers (-> uint16)
    invert: bool            # WhiteIsZero gray
    associated: bool        # alpha premultiplied into the colour (to undo)
    orientation: int        # EXIF/TIFF orientation, 1-8

    @property
    def channels(self) -> int:
        return len(self.keep)


def _tiff_header(data: bytes):
    """tifffile's first page of a TIFF over 8 bits per sample, header only; None for one
    of 8 bits or fewer, or one tifffile cannot parse (Pillow reads those, as before)."""
    try:
        with _tifffile().TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            return page if page.bitspersample > 8 else None
    except Exception:  # noqa: BLE001 - partial or odd bytes: Pillow's turn
        return None


def _tiff_layout(page) -> _TiffLayout:
    """How to read a deep TIFF page, or ImageError saying why it is not read."""
    bits, kind = int(page.bitspersample), int(page.sampleformat)
    if kind == 1 and bits <= 16:
        is_float = False
    elif kind == 3 and bits in (16, 24, 32, 64):
        is_float = True
    else:
        name = {1: "unsigned integer", 2: "signed integer", 3: "float"}.get(kind, f"sample format {kind}")
        raise ImageError(f"TIFF with {bits}-bit {name} samples; this reads unsigned integers of up to "
                         "16 bits and floats (save it at 16 bits or as 32-bit float)")
    photometric = int(page.photometric)
    if photometric not in (0, 1, 2):
        name = getattr(page.photometric, "name", photometric)
        raise ImageError(f"{bits}-bit TIFF in {name} colour; this reads gray and RGB TIFFs over 8 bits "
                         "(save it as RGB)")
    if int(page.imagedepth) > 1:
        raise ImageError(f"TIFF holds a volume ({page.imagedepth} slices), not an image")
    colour, samples = (3 if photometric == 2 else 1), int(page.samplesperpixel)
    if samples < colour:
        raise ImageError(f"corrupt TIFF ({samples} samples per pixel for RGB)")
    extras = [int(e) for e in page.extrasamples]
    # The first extra sample is alpha unless the file calls it unspecified (0), as Pillow
    # reads it: OpenCV, among others, writes RGBA without the ExtraSamples tag.
    alpha = samples > colour and (not extras or extras[0] in (1, 2))
    tag = page.tags.get(274)  # Orientation
    try:
        orientation = int(tag.value) if tag is not None else 1
    except (TypeError, ValueError):
        orientation = 1
    return _TiffLayout(keep=list(range(colour + alpha)), float=is_float, invert=photometric == 0,
                       associated=alpha and extras[:1] == [1],
                       orientation=orientation if 1 <= orientation <= 8 else 1)


def _decode_deep_tiff(data: bytes, max_pixels: int, what: str) -> np.ndarray | None:
    """A TIFF over 8 bits per sample -> uint16, or float32 for float samples (16, 32 or 64
    bits; NaN as 0, infinities as 0 or 1). None for a TIFF that Pillow reads instead."""
    tifffile = _tifffile()
    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - Pillow says what is wrong with it
        return None
    with tif:
        try:
            page = tif.pages[0]
            bits, width, height = int(page.bitspersample), int(page.imagewidth), int(page.imagelength)
        except Exception:  # noqa: BLE001
            return None
        if bits <= 8:
            return None
        check_size(width, height, max_pixels, what)
        try:
            layout = _tiff_layout(page)
        except ImageError as e:
            raise ImageError(f"{what}: {e}") from None
        samples = int(page.samplesperpixel)
        try:
            if page.compression in tifffile.TIFF.DECOMPRESSORS and page.predictor in tifffile.TIFF.PREDICTORS:
                arr = page.asarray()
                if int(page.planarconfig) == 2 and samples > 1:  # one plane per sample
                    arr = arr.reshape(samples, height, width).transpose(1, 2, 0)
                else:
                    arr = arr.reshape(height, width, samples)
            else:
                arr = _deep_tiff_via_opencv(data, page, what)
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001 - zlib.error, ValueError on short reads, MemoryError, ...
            raise ImageError(f"{what}: corrupt or truncated image ({_one_line(e)})") from None
    return _orient(_finish_tiff(arr, layout, bits), layout.orientation)


def _deep_tiff_via_opencv(data: bytes, page, what: str) -> np.ndarray:
    """Without imagecodecs, tifffile decodes no compression but Deflate, PackBits, LZMA
    and Zstd, and no float predictor; LZW is what GIMP and Photoshop often write. OpenCV's
    libtiff reads those for gray, RGB and RGBA (not gray+alpha) at 16 bits and float32."""
    samples, bits = int(page.samplesperpixel), int(page.bitspersample)
    how = getattr(page.compression, "name", page.compression)
    unreadable = (f"{what}: a {bits}-bit TIFF with {samples} samples per pixel, compressed with {how}, "
                  "which this cannot decode without the imagecodecs package; save it with Deflate (ZIP) "
                  "compression or none")
    want = {(1, 16): np.uint16, (3, 32): np.float32}.get((int(page.sampleformat), bits))
    if samples not in (1, 3, 4) or want is None:
        raise ImageError(unreadable)
    cv2 = _cv2()
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError(f"{what}: corrupt or truncated image (OpenCV cannot decode this {bits}-bit {how} TIFF)")
    if arr.dtype != want or (1 if arr.ndim == 2 else arr.shape[2]) != samples:
        raise ImageError(unreadable)
    return _from_opencv(arr, samples, what)


def _finish_tiff(arr: np.ndarray, layout: _TiffLayout, bits: int) -> np.ndarray:
    """A deep TIFF's samples (H, W, S) -> the buffer: alpha kept, extra samples dropped,
    integers at 16 bits, floats as finite float32, WhiteIsZero and premultiplied alpha undone."""
    if arr.shape[2] != layout.channels:
        arr = arr[:, :, layout.keep]
    if layout.float:
        arr = _finite(arr.astype(np.float32, copy=False))
        top = 1.0
    else:
        arr = arr.astype(np.uint16, copy=False)  # also to native byte order
        if bits < 16:  # 12-bit samples and the like: to the full 16-bit range
            top_in = (1 << bits) - 1
            arr = ((np.minimum(arr, top_in).astype(np.uint32) * 65535 + top_in // 2) // top_in).astype(np.uint16)
        top = 65535
    colour = arr.shape[2] - (1 if layout.channels in (2, 4) else 0)
    if layout.invert:
        arr[:, :, :colour] = top - arr[:, :, :colour]
    if layout.associated:
        alpha = arr[:, :, colour:].astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            straight = np.where(alpha > 0, arr[:, :, :colour] * (float(top) / alpha), 0)
        arr[:, :, :colour] = np.clip(np.rint(straight), 0, top) if not layout.float else straight
    return np.ascontiguousarray(arr)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@functools.cache
def _cv2():
    """OpenCV, imported on first use, with its logging off: it would print a warning
    for every corrupt file, which reaches the caller as an ImageError anyway."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # a build without the logging module: only noisier
        pass
    return cv2


@functools.cache
def _tifffile():
    """tifffile, imported on first use, its logger quietened: it logs about oddities
    in files it still reads, and about the partial bytes that probe hands it."""
    import tifffile

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    return tifffile


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, before a long job, if the result could not be written there. Returns
    the path to write: where `path` is a symbolic link, the file it points to (its
    format, its folder), as `cp` and Pillow write through a link."""
    given = Path(path)
    target = Path(os.path.realpath(given))
    name = f"{given} (a link to {target})" if given.is_symlink() else str(given)
    if target.suffix.lower() not in WRITABLE:
        raise ImageError(f"output {name}: unknown format {target.suffix!r}; use one of {', '.join(WRITABLE)}")
    if not target.parent.is_dir():
        raise ImageError(f"output {name}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise ImageError(f"output {name}: folder {target.parent} is not writable")
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    except OSError as e:  # a link that loops, ...
        raise ImageError(f"output {name}: {e.strerror or e}") from None
    if existing and stat.S_ISDIR(existing.st_mode):
        raise ImageError(f"output {name}: is a folder")
    return target


def format_code(fmt: str) -> int:
    """The contract's ImageFormat for a Pillow format name (0 for one it does not name)."""
    return {name: code for code, name in wire.FORMAT_NAMES.items()}.get(fmt, 0)


def alpha_fits(fmt: str, channels: int) -> bool:
    """wire.alpha_fits (the rule: JPEG cannot hold alpha) by Pillow's format name."""
    return wire.alpha_fits(format_code(fmt), channels)


_SHOWN = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "TIFF": "TIFF"}

# Deflate level for 16-bit and float files: their low bits are mostly noise, so level 6
# (Pillow's, for 8 bits) takes 4-5 times as long as 1 for files a few percent smaller.
DEEP_DEFLATE_LEVEL = 1


def depth_fits(fmt: str, bits: int) -> None:
    """Refuse a depth that a format cannot hold (the rule: wire.FORMAT_DEPTHS; JPEG and
    WebP hold 8 bits per channel, PNG 8 or 16, TIFF 8, 16 or 32-bit float), saying what
    to write instead."""
    name = _SHOWN.get(fmt, fmt)
    if bits in wire.FORMAT_DEPTHS.get(format_code(fmt), (8,)):
        return
    if fmt == "PNG":
        raise ImageError("PNG cannot hold 32-bit float; write .tif, or use --output-depth 16")
    result, instead = ("16-bit", ".png or .tif") if bits == 16 else ("32-bit float", ".tif")
    raise ImageError(f"{name} holds 8 bits per channel; write {instead} for a {result} result, "
                     "or use --output-depth 8")


def encode_image(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """(H, W, C) buffer -> encoded bytes at the buffer's depth: uint8 in any format,
    uint16 as PNG or TIFF, float32 as TIFF. Alpha or a depth that a format cannot
    hold is refused, not dropped or rounded."""
    channels = array.shape[2]
    if not alpha_fits(fmt, channels):
        raise ImageError("JPEG cannot store transparency; write PNG, WebP or TIFF instead")
    try:
        bits = depth_of(array)
    except ValueError as e:
        raise ImageError(f"cannot write {_SHOWN.get(fmt, fmt)}: {e}") from None
    if bits != 8:
        depth_fits(fmt, bits)
        return _encode_deep_tiff(array) if fmt == "TIFF" else _encode_png16(array)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    img = Image.fromarray(array[:, :, 0] if channels == 1 else array, mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()


def _encode_png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG: OpenCV writes gray, RGB and RGBA (given in BGR order); gray+alpha it
    cannot, so _png16_gray_alpha writes that one."""
    channels = array.shape[2]
    if channels == 2:
        return _png16_gray_alpha(array)
    cv2 = _cv2()
    if channels == 1:
        image = np.ascontiguousarray(array[:, :, 0])
    else:
        image = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, DEEP_DEFLATE_LEVEL])
    if not ok:
        raise ImageError("OpenCV could not encode a 16-bit PNG")
    return encoded.tobytes()


def _png16_gray_alpha(array: np.ndarray) -> bytes:
    """A 16-bit gray+alpha PNG (colour type 4), written directly: each row Sub-filtered
    (every byte less the one a pixel before it, mod 256), deflated, in IHDR/IDAT/IEND."""
    height, width, _ = array.shape
    raw = np.ascontiguousarray(array, dtype=">u2").view(np.uint8).reshape(height, width * 4)
    rows = np.empty((height, 1 + width * 4), np.uint8)
    rows[:, 0] = 1  # filter type Sub
    rows[:, 1:5] = raw[:, :4]
    np.subtract(raw[:, 4:], raw[:, :-4], out=rows[:, 5:])  # uint8 arithmetic wraps mod 256
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows, DEEP_DEFLATE_LEVEL))
            + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode_deep_tiff(array: np.ndarray) -> bytes:
    """A 16-bit or float TIFF: Deflate compression, which libtiff (GIMP's, Pillow's) reads,
    with the horizontal predictor for integers (the float predictor would need imagecodecs
    to read back here); alpha marked unassociated, as GIMP writes it."""
    channels = array.shape[2]
    out = io.BytesIO()
    _tifffile().imwrite(
        out, array[:, :, 0] if channels == 1 else array,
        photometric="minisblack" if channels <= 2 else "rgb", planarconfig="contig",
        extrasamples=["unassalpha"] if channels in (2, 4) else None,
        compression="zlib", compressionargs={"level": DEEP_DEFLATE_LEVEL}, predictor=array.dtype == np.uint16,
        metadata=None,
    )
    return out.getvalue()


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder, renamed over the target,
    so an existing file is never left half-written. Where `path` is a symbolic link,
    the file it points to is written (the link stays), as `cp` and Pillow do. The file
    gets the mode a plain write would give it: a replaced file keeps its own, a new one
    0666 less the umask (mkstemp's 0600 would hide a result from a web server, or from
    GIMP run as another user)."""
    path = check_output_path(path)
    data = encode_image(array, WRITABLE[path.suffix.lower()])
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it (os.umask
    can only be read by setting it, which another thread could see)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shrink(array: np.ndarray, longest: int) -> np.ndarray:
    """Downscale (H, W, C) so its longest side is `longest`, at the same depth; smaller
    images are returned as they are. Lanczos, with colour weighted by alpha as Pillow
    weights it when resizing RGBA/LA: 8-bit through Pillow's own modes, as always;
    16-bit and float a channel at a time as Pillow float images."""
    h, w, c = array.shape
    if max(h, w) <= longest:
        return array
    k = longest / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    if array.dtype != np.uint8:
        return _shrink_deep(array, size)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    img = Image.fromarray(array[:, :, 0] if c == 1 else array, mode).resize(size, Image.LANCZOS)
    return to_buffer(img)


def _shrink_deep(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """shrink for uint16 and float32: float32 planes through Pillow's Lanczos, then back
    to the depth (uint16 rounded and clipped; float clipped to the input's range per
    channel, so that Lanczos's ringing adds no values the image did not have)."""
    bits = depth_of(array)
    channels = array.shape[2]
    top = 65535.0 if bits == 16 else 1.0
    values = _finite(array.astype(np.float32))
    low, high = values.min(axis=(0, 1)), values.max(axis=(0, 1))
    alpha = channels in (2, 4)
    if alpha:
        values[:, :, :-1] *= np.clip(values[:, :, -1:] / top, 0, 1)
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(values[:, :, i]), "F").resize(size, Image.LANCZOS))
              for i in range(channels)]
    out = np.stack(planes, axis=2)
    if alpha:
        weight = np.clip(out[:, :, -1:] / top, 0, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, :, :-1] = np.where(weight > 0, out[:, :, :-1] / weight, 0)
    if bits == 16:
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16)
    return np.clip(out, low, high).astype(np.float32)
