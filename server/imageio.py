"""Image files <-> (H, W, C) uint8 buffers, with every failure turned into a
one-line ImageError that names the file and what is wrong with it."""

from __future__ import annotations

import io
import os
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
    """Read a file as (H, W, C) uint8, C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA).
    EXIF orientation is applied."""
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
    """Bits per channel the file stores (8 where it does not say more); results are
    always 8, so a caller can say what a deeper source loses. Reads the header only."""
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16"):
                return 16
            if img.mode in ("I", "F"):
                return 32
            if img.format == "PNG":  # Pillow reads 16-bit RGB(A) as 8-bit: the header says
                with open(path, "rb") as f:
                    head = f.read(25)
                return head[24] if len(head) == 25 else 8  # IHDR's bit depth
            if img.format == "TIFF":
                bits = img.tag_v2.get(258, 8)  # BitsPerSample
                return max(bits) if isinstance(bits, tuple) else int(bits)
    except Exception:  # noqa: BLE001 - read_image says what is wrong with a file
        pass
    return 8


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "image",
                 formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Encoded bytes -> (H, W, C) uint8. `formats` (Pillow names, e.g. ("PNG",)) restricts
    what is tried: the server decodes only the format a request names; None: any."""
    if not data:
        raise ImageError(f"{what}: empty file")
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
    Raises ImageError when they cannot begin a `fmt` file."""
    magic = {"PNG": (b"\x89PNG",), "JPEG": (b"\xff\xd8",), "TIFF": (b"II*\x00", b"MM\x00*"), "WEBP": (b"RIFF",)}
    if len(data) >= 4 and not data.startswith(magic[fmt]):
        raise ImageError(f"not a {fmt} file (it begins with {data[:4]!r})")
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
            return width, height, channels_of(img.mode, "transparency" in img.info)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"refused as a decompression bomb ({e})") from None
    except Exception:  # noqa: BLE001 - any failure on partial bytes means "not yet"
        return None


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
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
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
    """Any PIL mode -> (H, W, C) uint8 keeping gray as gray and alpha as alpha."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        # Integer arithmetic, no float copies: a 64 MP 16-bit image stays at 2-4 bytes a pixel.
        arr = np.asarray(img)
        if mode.startswith("I;16") or int(arr.max(initial=0)) > 255:
            arr = np.clip(arr, 0, 65535).astype(np.uint32, copy=False)
            return ((arr * 255 + 32767) // 65535).astype(np.uint8)[:, :, None]
        return np.clip(arr, 0, 255).astype(np.uint8)[:, :, None]
    elif mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)[:, :, None]
    elif mode == "1":
        img = img.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in mode else "RGB")  # CMYK, YCbCr, LAB, RGBX, ...
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr)


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


def alpha_fits(fmt: str, channels: int) -> bool:
    """wire.alpha_fits (the rule: JPEG cannot hold alpha) by Pillow's format name."""
    codes = {name: code for code, name in wire.FORMAT_NAMES.items()}
    return wire.alpha_fits(codes.get(fmt, 0), channels)


def encode_image(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """(H, W, C) uint8 -> encoded bytes. Alpha a format cannot hold is refused, not dropped."""
    channels = array.shape[2]
    if not alpha_fits(fmt, channels):
        raise ImageError("JPEG cannot store transparency; write PNG, WebP or TIFF instead")
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    img = Image.fromarray(array[:, :, 0] if channels == 1 else array, mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
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
    """Downscale (H, W, C) uint8 so its longest side is `longest`; smaller images are
    returned as they are. Lanczos; Pillow weights colour by alpha when resizing RGBA/LA."""
    h, w, c = array.shape
    if max(h, w) <= longest:
        return array
    k = longest / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    img = Image.fromarray(array[:, :, 0] if c == 1 else array, mode).resize(size, Image.LANCZOS)
    return to_buffer(img)
