"""Finding and loading the VGG19 ImageNet weights.

In order: an explicit file (--weights, or $STYLE_TRANSFER_WEIGHTS), torch hub's
cache (where torchvision keeps vgg19-dcbb9e9d.pth), torchvision's download URL.
Either torchvision's full VGG19 state dict or a features-only one is accepted.
There is no fallback to random weights: without a file, loading fails with a
message that says what to download and where to put it.

Start-up reads the 548 MB file once, and after the first time not at all: the
engine uses the layers up to conv5_1, 12.9 M of the file's 143.7 M parameters
(52 MB in fp32). The first load hashes the file (one pass, which leaves it in the
page cache), takes those tensors from it memory-mapped, and writes them to a
features-only cache file (`cache_dir()`), recorded with the original's identity
(path, size, modification time, inode), its SHA-256, and the cache file's own
SHA-256. A later load whose original still has that identity reads the cache file
instead, and uses it only if its SHA-256 is the recorded one; anything else (no
record, an original that changed, a cache file that does not match or cannot be
read) goes back to the original and writes the cache again. The original's hash is
thus computed once per version of the file, and the cache cannot hand the engine
other weights than the ones it was derived from without failing its own hash. An
unwritable cache directory only costs the speed-up. Measured: docs/performance.md,
"Start-up".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "STYLE_TRANSFER_WEIGHTS"
CACHE_ENV_VAR = "STYLE_TRANSFER_CACHE"  # where the features-only cache lives (default: cache_dir())


class WeightsError(Exception):
    """The weights could not be found or read; the message says what to do."""


@dataclass(frozen=True)
class Weights:
    model: "object"  # stylecore.VGGFeatures
    path: Path
    source: str  # how it was found: "--weights", "$STYLE_TRANSFER_WEIGHTS", "torch hub cache", "download"
    sha256: str  # the original file's
    verified: bool  # the sha256 is torchvision's vgg19-dcbb9e9d.pth
    cached: bool = False  # read from the features-only cache, not from the original

    def describe(self) -> str:
        tag = "ImageNet VGG19" if self.verified else "UNVERIFIED weights (not torchvision's vgg19-dcbb9e9d.pth)"
        return f"{tag}: {self.path} (sha256 {self.sha256[:16]}…, from {self.source})"


def hub_cache_path() -> Path:
    import torch.hub

    from stylecore.vgg import IMAGENET_WEIGHTS_FILE

    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_WEIGHTS_FILE


def missing_message() -> str:
    from stylecore.vgg import IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL

    return (
        f"VGG19 ImageNet weights not found. Download {IMAGENET_WEIGHTS_FILE} (548 MB) from\n"
        f"  {IMAGENET_WEIGHTS_URL}\n"
        f"and put it at {hub_cache_path()}\n"
        f"or pass --weights FILE, or set {ENV_VAR}=FILE."
    )


def locate(explicit: str | os.PathLike | None = None, download: bool = True) -> tuple[Path, str]:
    """(path, source) of the weights file, downloading it into torch hub's cache if
    allowed and nothing else was found. Raises WeightsError."""
    for value, source in ((explicit, "--weights"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise WeightsError(f"{source}: no weights file at {path}")
            return path, source
    cached = hub_cache_path()
    if cached.is_file():
        return cached, "torch hub cache"
    if not download:
        raise WeightsError(missing_message())
    return _download(cached), "download"


def _download(dest: Path) -> Path:
    import torch.hub

    from stylecore import vgg

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes to a temporary file and renames it: a broken download leaves nothing behind.
        torch.hub.download_url_to_file(vgg.IMAGENET_WEIGHTS_URL, str(dest), hash_prefix=vgg.IMAGENET_SHA256_PREFIX)
    except Exception as e:  # URLError, timeouts, hash mismatch: all mean "no weights"
        raise WeightsError(f"downloading the weights failed ({e}).\n{missing_message()}") from None
    return dest


def cache_dir() -> Path:
    """$STYLE_TRANSFER_CACHE, else $XDG_CACHE_HOME/style-transfer, else ~/.cache/style-transfer."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "style-transfer"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _identity(path: Path) -> dict:
    """What says the original is still the file the cache was made from."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _record_path(path: Path) -> Path:
    """The cache's record for an original, named after its resolved path."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / f"weights-{key}.json"


def _from_cache(path: Path):
    """(model, the original's sha256) from the features-only cache, or None when the
    cache has no valid entry for this version of `path` (see the module doc)."""
    import torch

    from stylecore.vgg import VGGFeatures

    try:
        record = json.loads(_record_path(path).read_text())
        if record.get("original") != _identity(path):
            return None
        data = (cache_dir() / record["features"]).read_bytes()  # 52 MB, read once: hashed, then loaded
        if hashlib.sha256(data).hexdigest() != record["features_sha256"]:
            return None
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return VGGFeatures.from_state_dict(state), record["sha256"]
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, AttributeError):
        return None  # no record, or a cache that cannot be read or built from: the original decides


def _write_cache(path: Path, model, digest: str) -> None:
    """Writes the features-only file and its record; silently nothing where the cache
    directory cannot be written (the next load reads the original again)."""
    import torch

    folder = cache_dir()
    name = f"vgg19-features-{digest[:16]}.pt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(model.layers.state_dict(), buffer)
        data = buffer.getvalue()
        _atomic_write(folder / name, data)
        record = {"original": _identity(path), "sha256": digest, "features": name,
                  "features_sha256": hashlib.sha256(data).hexdigest()}
        _atomic_write(_record_path(path), json.dumps(record, indent=1).encode())
    except OSError:
        pass


def _atomic_write(dest: Path, data: bytes) -> None:
    """Another process reading `dest` sees the old file or the new one, never a part."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def load(explicit: str | os.PathLike | None = None, download: bool = True) -> Weights:
    """Find, read and check the weights (from the features-only cache when it holds
    this version of the file: see the module doc); the network is built on the CPU."""
    from stylecore.vgg import IMAGENET_SHA256_PREFIX

    path, source = locate(explicit, download)
    cached = _from_cache(path)
    if cached is not None:
        model, digest = cached
    else:
        digest = sha256_of(path)  # one pass over the file; it is then in the page cache
        model = _from_original(path)
        _write_cache(path, model, digest)
    return Weights(model, path, source, digest, digest.startswith(IMAGENET_SHA256_PREFIX), cached is not None)


def _from_original(path: Path):
    import torch

    from stylecore.vgg import VGGFeatures

    try:
        # Memory-mapped: only the tensors the engine uses are read (from the page cache the hash filled).
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:  # a checkpoint in the legacy (pre-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found a {type(state).__name__}")
    try:
        return VGGFeatures.from_state_dict(state)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
