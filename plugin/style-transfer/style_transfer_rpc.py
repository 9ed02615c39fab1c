"""The GIMP plug-in's gRPC client, in pure Python.

GIMP 3 on Windows and macOS bundles its own Python without pip, and PyPI's grpcio
wheels do not fit it, so the plug-in cannot import grpcio. It speaks gRPC itself
with grpclib (asyncio, HTTP/2 through the pure-Python h2) and the protobuf
runtime's pure-Python implementation; `style-transfer gimp install` copies those,
without their optional C extensions, into the plug-in's `vendor` folder, together
with the contract's package, whose `wire` module holds the wire rules (chunking,
reassembly, headers, the texts for common failures) shared with the server and the
other Python client.

This module knows nothing of GIMP, so it is tested against a real server outside GIMP.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from dataclasses import dataclass, field
from typing import Callable

from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import wire

TOKEN_FILE_NAME = "style-transfer-token"  # in the GIMP profile, 0600: a token typed once


class ServerError(Exception):
    """A readable message for the user: the server is down, refused the token or the job."""


@dataclass
class Server:
    """Where the server is and how to reach it: its address, a bearer token, and TLS
    (with a CA file, or the system's roots when `ca_file` is empty)."""

    address: str = wire.DEFAULT_ADDRESS
    token: str | None = None
    tls: bool = False
    ca_file: str = ""


@dataclass
class Job:
    """What the plug-in sends: raw buffers exactly as GIMP hands them out, at the
    image's precision (8 bits, 16 bits or float: `depth`; the result comes back at it)."""

    content: bytes
    width: int
    height: int
    channels: int
    styles: list  # of encoded image files (bytes) or (bytes, width, height, channels[, depth]) raw buffers
    preset: str = "default"
    params: dict = field(default_factory=dict)  # Params field -> value
    preview_every: int = 0
    preview_max_side: int = wire.PREVIEW_MAX_SIDE
    init_image: object = None  # the image to start from (params init "image"): like a style, or None
    depth: int = 8  # bits per channel of `content` (and of the result): 8, 16 or 32 (float)
    # Per style: where it applies, a raw gray buffer (bytes, width, height, 1, depth) of the
    # content's size, or None (that style styles what no mask covers). Contract v1.3.
    style_masks: list = field(default_factory=list)
    # A frame after the first of an animation: (the frame before it, that frame's result),
    # raw buffers like the content's. Contract v1.4.
    previous: tuple | None = None

    def request_bytes(self) -> int:
        """The bytes the upload carries: what the server's max_request_bytes limits."""
        images = [self.content, *self.styles] + ([self.init_image] if self.init_image is not None else [])
        images += [m for m in self.style_masks if m is not None]
        images += list(self.previous or ())
        return sum(len(image if isinstance(image, (bytes, bytearray)) else image[0]) for image in images)


@dataclass
class Result:
    pixels: bytes  # raw, same width, height and channels as the content
    losses: dict


def sentence(text: str) -> str:
    """wire's texts are lower-case clauses (the CLI prefixes them); GIMP shows sentences."""
    return text[:1].upper() + text[1:]


# --- the token ----------------------------------------------------------------------------


def resolve_token(typed: str, token_file: str, profile: str | None, keep: bool = True) -> str | None:
    """The token to send: one typed in the dialog (with `keep`, kept in
    PROFILE/style-transfer-token, 0600, so that GIMP's plain-text saved settings never
    hold it), else the token file named in the dialog, else the one kept from an
    earlier typed token, else None. Raises ServerError when a named token file cannot
    be read."""
    kept = os.path.join(profile, TOKEN_FILE_NAME) if profile else None
    typed = (typed or "").strip()
    if typed:
        if kept and keep:
            store_token(kept, typed)
        return typed
    if token_file:
        try:
            return wire.read_token(token_file)
        except (OSError, ValueError) as e:
            raise ServerError(f"Cannot read the token file {token_file}: {getattr(e, 'strerror', None) or e}") from None
    if kept and os.path.isfile(kept):
        try:
            return wire.read_token(kept)
        except (OSError, ValueError):
            return None
    return None


def store_token(path: str, token: str) -> None:
    """Write `token` to `path`, readable by its owner only (created 0600, never wider)."""
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(path + ".new", 0o600)
    os.replace(path + ".new", path)


# --- the request ----------------------------------------------------------------------------


def _meta(image, what="style image"):
    if isinstance(image, (bytes, bytearray)):
        meta = wire.encoded_meta(bytes(image))
        if meta is None:
            raise ServerError(f"The {what} is not a {wire.formats_text()} file: open it in GIMP and "
                              "choose its layer instead.")
        return meta, bytes(image)
    data, w, h, c, *depth = image
    return wire.raw_meta(w, h, c, *depth), data


def requests(job: Job):
    """The Stylize request stream for `job`: the content, the styles, then the initial
    image if any (Header.init_image, with params init "image")."""
    metas, blobs = [], []
    for image in [(job.content, job.width, job.height, job.channels, job.depth), *job.styles]:
        meta, data = _meta(image)
        metas.append(meta)
        blobs.append(data)
    init = None
    if job.init_image is not None:
        if job.params.get("init") != "image":
            raise ServerError("An initial image goes with init 'image'.")
        init, data = _meta(job.init_image, "initial image")
        blobs.append(data)
    elif job.params.get("init") == "image":
        raise ServerError("Start from another layer: choose the layer to start from.")
    masks = []
    for i, mask in enumerate(job.style_masks):  # sent after the initial image: wire.header_images
        if mask is None:
            masks.append(None)
            continue
        meta, data = _meta(mask, f"mask of style {i + 1}")
        masks.append(meta)
        blobs.append(data)
    previous = []
    for image, what in zip(job.previous or (), ("previous frame", "previous frame's result")):
        meta, data = _meta(image, what)  # sent last: wire.header_images
        previous.append(meta)
        blobs.append(data)
    head = wire.header(metas[0], metas[1:], preset=job.preset, params=job.params,
                       preview_every=job.preview_every, preview_max_side=job.preview_max_side,
                       result_format=pb.IMAGE_FORMAT_RAW, init_image=init, style_masks=masks,
                       result_depth=job.depth if job.depth != 8 else 0,
                       previous_frame=previous[0] if previous else None,
                       previous_result=previous[1] if previous else None)
    return wire.request_stream(head, blobs)


def contract_revision(version: str) -> int:
    """N of a contract version "v1.N"; 0 for an empty or unreadable one (older than v1.1)."""
    major, _, minor = (version or "").partition(".")
    return int(minor) if major == "v1" and minor.isdigit() else 0


def needs_contract(info_reply, revision: int, feature: str, address: str) -> None:
    """Raise ServerError when the server's contract is older than v1.`revision`, which
    `feature` needs (an older server would skip the fields it does not know)."""
    theirs = info_reply.contract_version
    if contract_revision(theirs) < revision:
        said = f"contract {theirs}" if theirs else "a contract older than v1.1"
        raise ServerError(f"The server at {address} speaks {said}, without {feature} (v1.{revision}): "
                          "update the server, or turn the option off.")


def describe(event) -> str | None:
    """Progress text for GIMP's progress bar, or None (stateless: see Progress for tiles)."""
    kind = wire.event_type(event)
    if kind == "queued":
        return sentence(wire.queued_text(event.queued.position))
    if kind == "started":
        s = event.started
        text = f"Style transfer on the server's {s.device} ({s.dtype})"
        return text if s.model_verified else f"{text}. WARNING: {wire.unverified_text(s.model)}"
    if kind == "progress":
        p = event.progress
        eta = int(round(p.eta))
        return f"Style transfer: scale {p.scale}/{p.scales}, step {p.step}/{p.steps}, {eta // 60}:{eta % 60:02d} left"
    if kind == "tile":
        t = event.tile
        return f"Style transfer: scale {t.scale}, step {t.step}, pass {t.phase}/{t.phases}, tile {t.tile}/{t.tiles}"
    return None


class Progress:
    """What GIMP's progress bar shows: its text and how full it is, from the job's
    events. A full-resolution step can take minutes; on a tiled scale the server
    reports every tile of both passes of the step (TileProgress), so the text names
    the tile, pass, step and scale, and the bar moves tile by tile. The bar counts
    work as pixels times steps per scale (the final, full-size scale is most of it).

    `steps`, `coarse_steps`: the job's final and coarser steps per scale (the preset's
    values under the job's params), for scales whose first Progress has not come yet."""

    def __init__(self, steps: int = 1, coarse_steps: int = 1):
        self.final_steps, self.coarse_steps = max(1, steps), max(0, coarse_steps)
        self.sizes: list[tuple[int, int]] = []  # per scale, (width, height)
        self.tiles: list[int] = []  # per scale, tile side or 0
        self.steps: dict[int, int] = {}  # scale (1-based) -> steps, as the server reported them
        self.fraction = 0.0

    def _steps(self, scale: int) -> int:
        if scale in self.steps:
            return self.steps[scale]
        return self.final_steps if scale == len(self.sizes) else self.coarse_steps

    def _done(self, scale: int, steps_done: float) -> float:
        """Fraction of the job's work done after `steps_done` steps of `scale` (1-based)."""
        work = [w * h * self._steps(i + 1) for i, (w, h) in enumerate(self.sizes)]
        total = sum(work)
        if not total or scale < 1:
            return 0.0
        done = sum(work[:scale - 1])
        if scale <= len(self.sizes):
            w, h = self.sizes[scale - 1]
            done += w * h * min(steps_done, self._steps(scale))
        return min(1.0, done / total)

    def _where(self, scale: int) -> str:
        n = len(self.sizes)
        text = f"scale {scale}/{n}" if n else f"scale {scale}"
        if 1 <= scale <= n:
            w, h = self.sizes[scale - 1]
            tile = self.tiles[scale - 1] if scale - 1 < len(self.tiles) else 0
            text += f" ({w}x{h}" + (f", tiles of {tile} px)" if tile else ")")
        return text

    def update(self, event) -> str | None:
        """Takes one event; returns the bar's new text, or None to leave it. `fraction`
        is then how full the bar is (0..1)."""
        kind = wire.event_type(event)
        if kind == "started":
            s = event.started
            self.sizes = [(size.width, size.height) for size in s.scales]
            self.tiles = list(s.tiles)
            text = describe(event)
            tiled = sum(1 for t in self.tiles if t)
            if tiled:
                text += f"; {tiled} of {len(self.sizes)} scales worked tile by tile"
            return text
        if kind == "progress":
            p = event.progress
            self.steps[p.scale] = p.steps
            if not self.sizes:  # a server that sends no scales: even shares
                self.fraction = min(1.0, (p.scale - 1 + p.step / max(1, p.steps)) / max(1, p.scales))
            else:
                self.fraction = self._done(p.scale, p.step)
            eta = int(round(p.eta))
            return f"Style transfer: {self._where(p.scale)}, step {p.step}/{p.steps}, {eta // 60}:{eta % 60:02d} left"
        if kind == "tile":
            t = event.tile
            phases, tiles = max(1, t.phases), max(1, t.tiles)
            within = ((t.phase - 1) + t.tile / tiles) / phases  # of the step being evaluated
            self.fraction = max(self.fraction, self._done(t.scale, t.step - 1 + min(1.0, within)))
            steps = self._steps(t.scale)
            return (f"Style transfer: {self._where(t.scale)}, step {t.step}/{steps}: "
                    f"pass {t.phase}/{phases}, tile {t.tile}/{tiles}")
        return describe(event)


# --- calls ------------------------------------------------------------------------------------


def _ssl_context(server: Server):
    if not server.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=server.ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise ServerError(f"Cannot use the CA file {server.ca_file}: {getattr(e, 'strerror', None) or e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])  # gRPC is HTTP/2
    return ctx


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT (an IPv6 host in brackets or not). Raises ServerError."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ServerError(f"The server address {address!r} is not HOST:PORT (e.g. {wire.DEFAULT_ADDRESS}).")
    return host.strip("[]") or wire.DEFAULT_HOST, int(port)


def _channel(server: Server):
    from grpclib.client import Channel

    return Channel(*host_port(server.address), ssl=_ssl_context(server))


def _call(server: Server, coroutine_function):
    """Run one call; every failure becomes a ServerError that says what to do."""
    try:
        return asyncio.run(coroutine_function())
    except Exception as e:  # noqa: BLE001 - mapped, or re-raised as it is
        raise _failure(server, e) from None


def _failure(server: Server, e: Exception) -> Exception:
    """The ServerError a call's failure becomes (other exceptions unchanged): the one
    mapping of gRPC, TLS and connection failures to words."""
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

    if isinstance(e, ServerError):
        return e
    if isinstance(e, GRPCError):
        if e.status == Status.UNAUTHENTICATED:
            text = wire.unauthenticated_text(server.address, bool(server.token))
            return ServerError(sentence(text) + ": type it in the Token field, or name a token file.")
        if wire.connection_lost(e.status.name, e.message or ""):
            return ServerError(sentence(wire.lost_text(server.address, e.message or "")))
        return ServerError(sentence(wire.refused_text(e.status.name, e.message or "")))
    if isinstance(e, ssl.SSLError):
        return ServerError(sentence(wire.tls_text(server.address, e.reason or str(e), True)))
    if isinstance(e, (StreamTerminatedError, ProtocolError)):
        return ServerError(sentence(wire.tls_text(server.address, str(e) or type(e).__name__, server.tls)))
    if isinstance(e, (ConnectionError, OSError, asyncio.TimeoutError)):
        return ServerError(sentence(wire.unavailable_text(server.address)))
    if isinstance(e, wire.WireError):
        return ServerError(f"The server broke the protocol: {e}")
    return e


def info(server: Server, timeout: float = 10.0):
    """The server's Info (presets, limits, device, weights). Raises ServerError."""
    from grpclib.const import Cardinality

    async def call():
        channel = _channel(server)
        try:
            async with channel.request(wire.GET_INFO, Cardinality.UNARY_UNARY, pb.GetInfoRequest, pb.Info,
                                       timeout=timeout, metadata=dict(wire.auth_metadata(server.token))) as stream:
                await stream.send_message(pb.GetInfoRequest(), end=True)
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
                return reply
        finally:
            channel.close()

    return _call(server, call)


def preset_values(info_reply, name: str) -> dict:
    """{field: value} of one of the server's presets. Raises ServerError naming the server's presets."""
    for p in info_reply.presets:
        if p.name == name:
            return {f.name: v for f, v in p.params.ListFields()}
    names = ", ".join(p.name for p in info_reply.presets)
    raise ServerError(f"The server has no preset {name!r}; it offers: {names}.")


async def _stylize(channel, server: Server, job: Job, on_event: Callable) -> tuple:
    """One Stylize call on `channel`: ((meta, pixels), losses)."""
    from grpclib.const import Cardinality

    result, losses = wire.ResultAssembler(), {}
    async with channel.request(wire.STYLIZE, Cardinality.STREAM_STREAM, pb.StylizeRequest,
                               pb.StylizeEvent, metadata=dict(wire.auth_metadata(server.token))) as stream:
        for message in requests(job):
            await stream.send_message(message)
        await stream.end()
        async for event in stream:
            kind = wire.event_type(event)
            if kind == "result":
                result.add(event.result)
            elif kind == "done":
                losses = dict(event.done.losses)
            on_event(event)
    return result.finish(), losses


def _result(job: Job, pixels: bytes, losses: dict) -> Result:
    if len(pixels) != job.width * job.height * job.channels * job.depth // 8:
        raise ServerError(f"The server's result has {len(pixels)} bytes, expected "
                          f"{job.width}x{job.height}x{job.channels} at {job.depth} bits")
    return Result(pixels=pixels, losses=losses)


def run(server, job: Job, on_event: Callable, token: str | None = None) -> Result:
    """Run `job` on `server` (a Server, or a HOST:PORT string); calls on_event(message)
    for every event. Raises ServerError with a message fit for the user."""
    if isinstance(server, str):
        server = Server(server, token=token)
    return run_many(server, [job], lambda index, event: on_event(event))[0]


def run_many(server: Server, jobs: list, on_event: Callable) -> list:
    """Runs `jobs` at once on `server` (one connection, one Stylize call each: the
    server queues them and its workers take them as they free up); calls
    on_event(index, message) for every event. Returns one Result or ServerError per
    job, in order: one job failing does not lose the others. Raises ServerError when
    none could be run (the server is down, the token refused)."""

    async def call():
        channel = _channel(server)
        try:
            calls = [_stylize(channel, server, job, lambda e, i=i: on_event(i, e)) for i, job in enumerate(jobs)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            channel.close()

    outcomes = _call(server, call)
    results = []
    for job, outcome in zip(jobs, outcomes):
        try:
            if isinstance(outcome, Exception):
                raise _failure(server, outcome)
            (meta, pixels), losses = outcome
            results.append(_result(job, pixels, losses))
        except ServerError as e:
            results.append(e)
    if results and all(isinstance(r, ServerError) for r in results):
        raise results[0]
    return results


# --- the connection settings, stored once (Style Transfer Server...) ------------------------

SETTINGS_FILE_NAME = "style-transfer-server.json"  # in the GIMP profile; never a token (that is TOKEN_FILE_NAME)


def load_settings(profile: str) -> dict:
    """{"address", "token_file", "tls", "ca_file"} as Style Transfer Server... stored them;
    {} when none are stored (or the file is damaged: the defaults apply)."""
    try:
        with open(os.path.join(profile, SETTINGS_FILE_NAME), encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def save_settings(profile: str, address: str, token_file: str, tls: bool, ca_file: str) -> None:
    path = os.path.join(profile, SETTINGS_FILE_NAME)
    with open(path + ".new", "w", encoding="utf-8") as f:
        json.dump({"address": address, "token_file": token_file, "tls": tls, "ca_file": ca_file}, f, indent=1)
    os.replace(path + ".new", path)


def stored_server(profile: str) -> Server:
    """The server Style Transfer Server... set (the defaults: this machine, no token, no TLS)."""
    stored = load_settings(profile)
    token = resolve_token("", stored.get("token_file") or "", profile)
    return Server(address=(stored.get("address") or wire.DEFAULT_ADDRESS).strip(), token=token,
                  tls=bool(stored.get("tls")), ca_file=stored.get("ca_file") or "")
