"""Finding and loading the VGG19 ImageNet weights.

In order: an explicit file (--weights, or $STYLE_TRANSFER_WEIGHTS), torch hub's
cache (where torchvision keeps vgg19-dcbb9e9d.pth), torchvision's download URL.
Either torchvision's full VGG19 state dict or a features-only one is accepted.
There is no fallback to random weights: without a file, loading fails with a
message that says what to download and where to put it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "STYLE_TRANSFER_WEIGHTS"


class WeightsError(Exception):
    """The weights could not be found or read; the message says what to do."""


@dataclass(frozen=True)
class Weights:
    model: "object"  # stylecore.VGGFeatures
    path: Path
    source: str  # how it was found: "--weights", "$STYLE_TRANSFER_WEIGHTS", "torch hub cache", "download"
    sha256: str
    verified: bool  # the sha256 is torchvision's vgg19-dcbb9e9d.pth

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


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(explicit: str | os.PathLike | None = None, download: bool = True) -> Weights:
    """Find, read and check the weights; the network is built on the CPU."""
    import torch

    from stylecore.vgg import IMAGENET_SHA256_PREFIX, VGGFeatures

    path, source = locate(explicit, download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found a {type(state).__name__}")
    try:
        model = VGGFeatures.from_state_dict(state)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None
    digest = sha256_of(path)
    return Weights(model, path, source, digest, digest.startswith(IMAGENET_SHA256_PREFIX))
