"""What the plug-in asks the server for, from the dialog's values and the server's Info.

GIMP-free (a `config` is anything with get_property(name), layers enter as numbers),
so that tests/test_gimp_plugin.py checks the request building outside GIMP.
"""

from __future__ import annotations

import hashlib
import json
import math

import style_transfer_rpc as rpc

# Contract v1.2 added full resolution (size 0, tiles, TileProgress) and Header.init_image;
# v1.3 region masks, tileable results and images beyond 8 bits.
FULL_RESOLUTION_REVISION = 2
CREATIVE_REVISION = 3
SEQUENCE_REVISION = 4  # contract v1.4: a frame after the first (Header.previous_frame, previous_result)


def largest_side(limits, w, h):
    """The longest working side the server's max_work_pixels allows for a w x h layer."""
    if not limits.max_work_pixels:
        return None
    long, short = max(w, h), max(1, min(w, h))
    return int(math.sqrt(limits.max_work_pixels * long / short))


def full_resolution(config, base: dict) -> bool:
    """Whether the job runs at the layer's own size: *Full resolution* ticked, or
    *Maximum size* 0 with a preset whose size is 0 (the server's `full`)."""
    if config.get_property("full-resolution"):
        return True
    return not config.get_property("max-size") and "size" in base and base["size"] == 0


def _where(w, h):
    return f"{w}x{h} = {w * h:,} pixels"


def preset_choices(offered, current: str) -> list[tuple[str, str]]:
    """The preset drop-down's (name, label) rows: the server's presets in its order, and
    the current value when the server lacks it (a record from another server, a name
    typed by a script), so that opening the dialog never changes it silently."""
    rows = [(name, name) for name in offered]
    if current and current not in offered:
        rows.append((current, f"{current} (not on this server)" if offered else current))
    return rows


def job_params(config, info, preset_name, w, h, two_styles, address="the server"):
    """The fields to send: those the dialog sets, relative to the server's preset
    (strength multiplies its style weight; 0 means its own value elsewhere). Raises
    ServerError when the server cannot take the job as asked."""
    base = rpc.preset_values(info, preset_name)
    params = {"seed": config.get_property("seed"),
              "style_weight": base.get("style_weight", 1.0) * config.get_property("strength")}
    limit = largest_side(info.limits, w, h)
    if full_resolution(config, base):
        rpc.needs_contract(info, FULL_RESOLUTION_REVISION, "full resolution", address)
        if info.limits.max_work_pixels and w * h > info.limits.max_work_pixels:
            raise rpc.ServerError(
                f"At full resolution the layer (or its selected part) is {_where(w, h)}; the server at {address} "
                f"works at most {info.limits.max_work_pixels:,} pixels (max_work_pixels). Turn Full resolution off "
                f"(a Maximum size of {limit} px fits), select a smaller part, or start the server with a larger "
                "--max-work-pixels.")
        params["size"] = 0  # the layer's own size; the server tiles what does not fit in memory
    else:
        size = config.get_property("max-size") or base.get("size") or max(w, h)
        size = min(size, max(w, h))
        if limit and size > limit:
            size = limit
        params["size"] = size
    if config.get_property("max-memory") > 0:
        params["max_memory"] = config.get_property("max-memory")
    if config.get_property("style-scale") > 0:
        params["style_scale"] = config.get_property("style-scale")
    if config.get_property("smoothness") > 0:
        params["tv_weight"] = config.get_property("smoothness")
    init = config.get_property("init")
    if init in ("content", "noise"):
        params["init"] = init
    elif init == "layer":
        rpc.needs_contract(info, FULL_RESOLUTION_REVISION, "initial images", address)
        params["init"] = "image"
    if config.get_property("preserve-colors"):
        params["preserve_colors"] = "luminance"
    if config.get_property("tileable"):
        rpc.needs_contract(info, CREATIVE_REVISION, "tileable results", address)
        params["tileable"] = 1
    if two_styles:
        blend = config.get_property("style2-weight")
        params["style_blend"] = [1.0 - blend, blend]
    return params


def init_area(source_offsets, area, init_offsets, init_size):
    """The part of the start layer to send: the rectangle (x, y, w, h), in the start
    layer's own coordinates, over the same part of the image as the content sent
    (`area`, in the source layer's coordinates), when the start layer covers it (an
    earlier result, the source's copy); None when it does not: then the whole start
    layer is sent and the server resizes it to each scale."""
    x, y, w, h = area
    ax = source_offsets[0] + x - init_offsets[0]
    ay = source_offsets[1] + y - init_offsets[1]
    if ax >= 0 and ay >= 0 and ax + w <= init_size[0] and ay + h <= init_size[1]:
        return ax, ay, w, h
    return None


def check_limits(info, job, address="the server"):
    """The server's per-image and per-request limits, before anything is sent."""
    limits = info.limits
    images = [("The layer (or its selected part)", job.width, job.height)]
    if job.init_image is not None and not isinstance(job.init_image, (bytes, bytearray)):
        images.append(("The layer to start from", job.init_image[1], job.init_image[2]))
    for what, w, h in images:
        if limits.max_pixels and w * h > limits.max_pixels:
            raise rpc.ServerError(f"{what} has {_where(w, h)}; the server at {address} accepts at most "
                                  f"{limits.max_pixels:,} per image (max_pixels).")
    total = job.request_bytes()
    if limits.max_request_bytes and total > limits.max_request_bytes:
        raise rpc.ServerError(f"The images come to {total:,} bytes; the server at {address} accepts at most "
                              f"{limits.max_request_bytes:,} in one job (max_request_bytes): select a smaller "
                              "part, or use smaller style images.")


def progress_for(info, preset_name, params):
    """The progress bar's bookkeeping for a job: its steps per scale (the preset's,
    under the job's params)."""
    base = rpc.preset_values(info, preset_name)
    values = dict(base, **params)
    return rpc.Progress(steps=values.get("steps", 1), coarse_steps=values.get("coarse_steps", 1))


def transfer_depth(info, image_depth: int) -> int:
    """The depth the layer travels at: the image's own (8, 16 or 32 bits) where the server
    takes it (contract v1.3), else 8 (an older server: GIMP converts the 8-bit result
    back to the image's precision)."""
    if image_depth == 8 or rpc.contract_revision(info.contract_version) < CREATIVE_REVISION:
        return 8
    return image_depth


def precision_depth(precision_name: str) -> int:
    """Bits per channel to read an image of GIMP precision `precision_name` (the enum's
    value name, e.g. "GIMP_PRECISION_U16_NON_LINEAR") at: 8 and 16 as they are, the
    rest (32-bit integer, half, float, double) as float."""
    name = precision_name.upper()
    if "_U8_" in name + "_":
        return 8
    if "_U16_" in name + "_":
        return 16
    return 32


# --- how a result was made: the record every result layer carries (a parasite) ----------------

RECORD_PARASITE = "style-transfer-record"  # persistent: saved with the XCF
RECORD_VERSION = 1
# Settings a record never holds: where the job ran is the server procedure's business, and a
# token is a secret (docs/gimp.md, "What a result remembers").
NOT_RECORDED = ("run-mode", "image", "drawables", "token", "token-file", "server", "tls", "tls-ca-file")


def style_source(name: str, data: bytes, path: str = "") -> dict:
    """One style (or start) image of a job as a record keeps it: its file's path or its
    layer's name, and the SHA-256 of the bytes sent (the file's, or the layer's pixels)."""
    entry = {"name": name, "sha256": hashlib.sha256(data).hexdigest()}
    if path:
        entry["path"] = path
    return entry


def make_record(settings: dict, source_layer: str, styles: list, info, preset: str, params: dict,
                plugin_version: str) -> bytes:
    """The record of a result, JSON: the dialog's settings (files by path, layers by
    name; nothing in NOT_RECORDED), the layer stylized, the styles' hashes, the preset and
    the fields sent, and the server's model and device."""
    record = {
        "version": RECORD_VERSION, "plugin": plugin_version, "source_layer": source_layer,
        "settings": {k: v for k, v in settings.items() if k not in NOT_RECORDED},
        "styles": styles, "preset": preset, "params": params,
        "server": {"model_sha256": info.model_sha256, "device": info.device, "dtype": info.dtype,
                   "server_version": info.server_version},
    }
    return json.dumps(record, sort_keys=True).encode()


def read_record(data) -> dict:
    """A record from a parasite's data (bytes or GIMP's list of ints). Raises
    ServerError when it is not one this plug-in can read."""
    try:
        record = json.loads(bytes(data).decode("utf-8"))
    except (ValueError, TypeError):
        raise rpc.ServerError("This layer's style-transfer record is damaged; run Style Transfer afresh.") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise rpc.ServerError("This layer's style-transfer record is damaged; run Style Transfer afresh.")
    if record.get("version") != RECORD_VERSION:
        raise rpc.ServerError(f"This layer was made by plug-in {record.get('plugin', '?')} whose record (version "
                              f"{record.get('version')}) this one cannot read; run Style Transfer afresh.")
    return record


def result_name(source: str, style: str, strength: float, seed: int) -> str:
    """A result layer's name: what it was made from, its style and strength, its seed."""
    return f"{source} - {style} x{strength:g} (seed {seed})"


# --- variations: several results of one run -------------------------------------------------

MAX_VARIATIONS = 16
# The ranges of the settings a run can vary, also the dialog's (style-transfer.py); there a
# style scale of 0 means the preset's, which a listed value cannot mean.
RANGES = {"strength": (0.01, 100.0), "style-scale": (0.01, 8.0)}
VARIED = {"seed": "seed", "strength": "strength", "style-scale": "style scale"}  # setting -> words


class Overridden:
    """A config whose get_property answers from `overrides` first (one variation's)."""

    def __init__(self, config, overrides: dict):
        self.config, self.overrides = config, overrides

    def get_property(self, name):
        return self.overrides[name] if name in self.overrides else self.config.get_property(name)


def variations(config) -> list:
    """Each variation's overrides, [{}] for one result: N seeds from the seed on
    (Variations N, vary seed), or one result per value of Variation values (vary
    strength or style scale). Raises ServerError naming what is wrong."""
    vary = config.get_property("vary")
    count = config.get_property("variations")
    if vary == "seed":
        if count <= 1:
            return [{}]
        seed = config.get_property("seed")
        return [{"seed": seed + i} for i in range(count)]
    words = VARIED[vary]
    text = (config.get_property("vary-values") or "").replace(";", ",")
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise rpc.ServerError(f"Variation values: {item!r} is not a number; give the {words}s as a list, "
                                  "e.g. 0.5, 1, 2.") from None
        low, high = RANGES[vary]
        if not low <= value <= high:
            raise rpc.ServerError(f"Variation values: a {words} of {item} is outside {low:g}..{high:g}.")
        values.append(value)
    if not values:
        raise rpc.ServerError(f"Vary {words}: give the values in Variation values, e.g. 0.5, 1, 2.")
    if len(values) > MAX_VARIATIONS:
        raise rpc.ServerError(f"Variation values: {len(values)} values; at most {MAX_VARIATIONS} in one run.")
    return [{vary: v} for v in values]


def group_name(source: str, style: str, overrides: list) -> str:
    """The layer group of a run's variations: what and over what."""
    vary = next(iter(overrides[0]))
    values = ", ".join(f"{o[vary]:g}" for o in overrides)
    return f"{source} - {style}: {len(overrides)} variations of {VARIED[vary]} ({values})"


def check_seed_variations(config, info, preset_name: str, runs: list) -> None:
    """Seeds vary only a run that starts from noise: from the layer (the presets' usual
    start) or another layer, N seeds would give N equal results. Raises ServerError."""
    if len(runs) < 2 or "seed" not in runs[0]:
        return
    init = config.get_property("init")
    if init == "preset":
        init = rpc.preset_values(info, preset_name).get("init", "content")
    if init != "noise":
        raise rpc.ServerError(f"Variations over the seed need Start from: Noise (the preset {preset_name!r} starts "
                              "from the layer, and every seed would give the same result); or vary the strength "
                              "or the style scale.")
