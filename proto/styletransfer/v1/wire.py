"""The wire rules of styletransfer.v1, in one place for every Python side of the contract.

The server (styleserver), the Python client (styleserver.client) and the GIMP plug-in's
pure-Python client (which `style-transfer gimp install` vendors into GIMP's Python)
all take from here: the chunk size, how an image is cut into ImageChunks and how
the result's chunks are put together again, how a request's header is built, how an
encoded file's format is told from its first bytes, which result formats can hold the
content's alpha (JPEG cannot: alpha_fits, alpha_refusal), the Queued event, and the texts
of the failures every client shows (no server, wrong token, TLS).

Imports nothing but the standard library and the protobuf runtime (through the
generated style_transfer_pb2): no numpy, PIL, grpc or torch, so that GIMP's Python
can import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from . import style_transfer_pb2 as pb

# The contract's version: the package (v1) and a revision that grows whenever a field
# is added or retired. GetInfo reports the server's as Info.contract_version; `style-transfer
# gimp doctor` compares it with the installed plug-in's copy of this file.
# v1.2: full resolution (Params.size 0, max_memory, tile; TileProgress, Started.tiles),
# Header.init_image, and Info.devices; the GIMP plug-in asks for v1.2 before using them.
# v1.3: region styles (Header.style_masks, style_source_masks), Params.tileable, and
# images beyond 8 bits (ImageMeta.depth, Header.result_depth).
# v1.4: sequences (Header.previous_frame, previous_result, Params.temporal_weight).
CONTRACT_VERSION = "v1.4"

SERVICE = "styletransfer.v1.StyleTransfer"
STYLIZE = f"/{SERVICE}/Stylize"
GET_INFO = f"/{SERVICE}/GetInfo"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
DEFAULT_ADDRESS = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
# The hosts that are this machine by name: the GIMP plug-in starts a server only there
# (plugin/style-transfer/style_transfer_local.py), and `gimp doctor` knows it does.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CHUNK_BYTES = 1 << 20  # 1 MiB per ImageChunk / ResultChunk: well under gRPC's 4 MiB message limit
MAX_MESSAGE_BYTES = 4 * CHUNK_BYTES
PREVIEW_MAX_SIDE = 256  # Header.preview_max_side 0 means this

# Encoded formats the contract names, with the first bytes that tell them (Pillow's names).
FORMAT_NAMES = {
    pb.IMAGE_FORMAT_PNG: "PNG", pb.IMAGE_FORMAT_JPEG: "JPEG",
    pb.IMAGE_FORMAT_WEBP: "WEBP", pb.IMAGE_FORMAT_TIFF: "TIFF",
}
_MAGIC = (
    (pb.IMAGE_FORMAT_PNG, lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    (pb.IMAGE_FORMAT_JPEG, lambda h: h.startswith(b"\xff\xd8\xff")),
    (pb.IMAGE_FORMAT_WEBP, lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"),
    (pb.IMAGE_FORMAT_TIFF, lambda h: h[:4] in (b"II*\x00", b"MM\x00*")),
)
_SHOWN = {"WEBP": "WebP"}  # how a format's name is written for people, where not as Pillow's
# Formats that cannot hold an alpha channel (a content with channels 2 or 4).
NO_ALPHA = (pb.IMAGE_FORMAT_JPEG,)


class WireError(ValueError):
    """A message stream that breaks the contract (e.g. result chunks out of order)."""


@dataclass(frozen=True)
class Queued:
    """The job waits for the device: `position` jobs are ahead of it (1 = next)."""

    position: int


# --- images and chunks ------------------------------------------------------------------


def sniff_format(data: bytes) -> int | None:
    """The ImageFormat of an encoded file, told by its first bytes; None for a format
    the contract does not name (send those decoded, as RAW)."""
    head = bytes(data[:16])
    for fmt, test in _MAGIC:
        if test(head):
            return fmt
    return None


def _shown(fmt: int) -> str:
    return _SHOWN.get(FORMAT_NAMES[fmt], FORMAT_NAMES[fmt])


def formats_text(formats: Iterable[int] | None = None, last: str = "or") -> str:
    """The formats (ImageFormat values; default: every encoded one the contract names)
    as people read them: "PNG, JPEG, WebP or TIFF"."""
    names = [_shown(f) for f in (FORMAT_NAMES if formats is None else formats)]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


def alpha_fits(result_format: int, channels: int) -> bool:
    """Whether an image of `channels` (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) can be sent
    back in `result_format`: JPEG cannot hold alpha, so a content with alpha (channels 2
    or 4) cannot have a JPEG result (the server refuses such a header, INVALID_ARGUMENT)."""
    return not (channels in (2, 4) and result_format in NO_ALPHA)


def alpha_refusal(result_format: int, channels: int) -> str | None:
    """Why a content of `channels` cannot have a `result_format` result (what the server
    answers, INVALID_ARGUMENT on header.result_format), or None when alpha_fits."""
    if alpha_fits(result_format, channels):
        return None
    fitting = ", ".join(_shown(f) for f in FORMAT_NAMES if alpha_fits(f, channels))
    return f"{FORMAT_NAMES[result_format]} cannot store the content's alpha channel; ask for {fitting} or RAW"


# Bits per channel an image may have: uint8, uint16 and float32 samples (RAW:
# little-endian). What each encoded format holds; RAW and TIFF hold all three.
DEPTHS = (8, 16, 32)
FORMAT_DEPTHS = {pb.IMAGE_FORMAT_PNG: (8, 16), pb.IMAGE_FORMAT_JPEG: (8,), pb.IMAGE_FORMAT_WEBP: (8,),
                 pb.IMAGE_FORMAT_TIFF: DEPTHS}


def meta_depth(meta: pb.ImageMeta) -> int:
    """Bits per channel of a RAW image's samples (depth 0 means 8)."""
    return meta.depth or 8


def raw_size(meta: pb.ImageMeta) -> int:
    """The bytes a RAW image of this meta holds: width*height*channels*depth/8."""
    return meta.width * meta.height * meta.channels * meta_depth(meta) // 8


def raw_meta(width: int, height: int, channels: int, depth: int = 8) -> pb.ImageMeta:
    """A row-major, channels-interleaved buffer (1 gray .. 4 RGBA) of `depth` bits."""
    return pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, width=width, height=height, channels=channels,
                        size_bytes=width * height * channels * depth // 8, depth=depth)


def depth_refusal(result_format: int, depth: int) -> str | None:
    """Why a result of `depth` bits cannot be sent as `result_format` (INVALID_ARGUMENT
    on header.result_depth), or None when it can."""
    if depth not in DEPTHS:
        return f"must be 0 (the content's), 8, 16 or 32 bits, got {depth}"
    held = FORMAT_DEPTHS.get(result_format, DEPTHS)
    if depth in held:
        return None
    fitting = ", ".join(_shown(f) for f, d in FORMAT_DEPTHS.items() if depth in d)
    return (f"{FORMAT_NAMES[result_format]} holds {' or '.join(map(str, held))} bits per channel, not {depth}; "
            f"ask for {fitting} or RAW, or a result_depth it holds")


def header_images(header: pb.Header) -> list[tuple[str, pb.ImageMeta]]:
    """(proto path, meta) of every image a Stylize call uploads, in upload order: the
    content, the styles, the initial image, the non-empty style masks, the non-empty
    style source masks, the previous frame and its result. A chunk's `image` is its
    index in this list."""
    images = [("header.content", header.content)]
    images += [(f"header.styles[{i}]", m) for i, m in enumerate(header.styles)]
    if header.HasField("init_image"):
        images.append(("header.init_image", header.init_image))
    for field in ("style_masks", "style_source_masks"):
        images += [(f"header.{field}[{i}]", m) for i, m in enumerate(getattr(header, field)) if m.size_bytes]
    for field in ("previous_frame", "previous_result"):
        if header.HasField(field):
            images.append((f"header.{field}", getattr(header, field)))
    return images


def encoded_meta(data: bytes, size: tuple[int, int] | None = None) -> pb.ImageMeta | None:
    """Meta for an encoded file's bytes, or None when its format is not one the contract
    names. `size` (width, height, as displayed: after EXIF orientation) may be given by a
    caller that can read it; the server reads it from the file either way."""
    fmt = sniff_format(data)
    if fmt is None:
        return None
    width, height = size or (0, 0)
    return pb.ImageMeta(format=fmt, size_bytes=len(data), width=width, height=height)


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(offset, piece) pairs of at most `size` bytes; one empty piece for empty data."""
    view = memoryview(data)
    for offset in range(0, max(1, len(data)), size):
        yield offset, bytes(view[offset:offset + size])


def image_chunks(index: int, data: bytes, size: int = CHUNK_BYTES) -> Iterator[pb.ImageChunk]:
    """One image's ImageChunks: `index` is the image's place in header_images (0 the
    content, 1.. the styles, then the initial image, the masks)."""
    for offset, piece in chunks(data, size):
        yield pb.ImageChunk(image=index, offset=offset, data=piece)


def params_message(values: Mapping | None = None) -> pb.Params:
    """A Params message from {field name: value}; lists and tuples fill repeated fields."""
    message = pb.Params()
    for name, value in (values or {}).items():
        if isinstance(value, (list, tuple)):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def header(content: pb.ImageMeta, styles: Iterable[pb.ImageMeta], preset: str = "default",
           params: pb.Params | Mapping | None = None, preview_every: int = 0, preview_max_side: int = 0,
           result_format: int = pb.IMAGE_FORMAT_RAW, init_image: pb.ImageMeta | None = None,
           style_masks: Iterable[pb.ImageMeta | None] = (), style_source_masks: Iterable[pb.ImageMeta | None] = (),
           result_depth: int = 0, previous_frame: pb.ImageMeta | None = None,
           previous_result: pb.ImageMeta | None = None) -> pb.Header:
    """The first message of a Stylize call. `params`: a Params message, or a mapping of
    the fields to set (the preset's value stands for every field not set). A None
    style mask is sent as the empty ImageMeta: that style has none."""
    if not isinstance(params, pb.Params):
        params = params_message(params)
    return pb.Header(preset=preset, params=params, preview_every=preview_every,
                     preview_max_side=preview_max_side, result_format=result_format,
                     content=content, styles=list(styles), init_image=init_image,
                     style_masks=[m or pb.ImageMeta() for m in style_masks],
                     style_source_masks=[m or pb.ImageMeta() for m in style_source_masks],
                     result_depth=result_depth, previous_frame=previous_frame, previous_result=previous_result)


def request_stream(head: pb.Header, images: Iterable[bytes], chunk: int = CHUNK_BYTES) -> Iterator[pb.StylizeRequest]:
    """A whole upload: the header, then every image's bytes, in order, in chunks. The
    caller half-closes after the last message (that is what ends the upload)."""
    yield pb.StylizeRequest(header=head)
    for index, data in enumerate(images):
        for piece in image_chunks(index, data, chunk):
            yield pb.StylizeRequest(chunk=piece)


def result_events(meta: pb.ImageMeta, data: bytes, chunk: int = CHUNK_BYTES) -> Iterator[pb.StylizeEvent]:
    """The server's side of the result: ResultChunks in order, `meta` on the first only."""
    for offset, piece in chunks(data, chunk):
        yield pb.StylizeEvent(result=pb.ResultChunk(meta=meta if offset == 0 else None, offset=offset, data=piece))


class ResultAssembler:
    """The client's side of the result: feed every ResultChunk, then take the whole."""

    def __init__(self):
        self.meta: pb.ImageMeta | None = None
        self._parts: list[bytes] = []
        self._received = 0

    def add(self, chunk: pb.ResultChunk) -> None:
        if chunk.offset == 0:
            self.meta, self._parts, self._received = chunk.meta, [], 0
        if self.meta is None or chunk.offset != self._received:
            raise WireError(f"result chunk at offset {chunk.offset} out of order (expected {self._received})")
        self._parts.append(chunk.data)
        self._received += len(chunk.data)

    def finish(self) -> tuple[pb.ImageMeta, bytes]:
        """(meta, the result's bytes). Raises WireError when nothing or too little came."""
        if self.meta is None:
            raise WireError("the server sent no result")
        data = b"".join(self._parts)
        if self.meta.size_bytes and len(data) != self.meta.size_bytes:
            raise WireError(f"the result has {len(data)} bytes; its meta announced {self.meta.size_bytes}")
        return self.meta, data


def event_type(message: pb.StylizeEvent) -> str:
    """"queued", "started", "progress", "preview", "result" or "done"."""
    return message.WhichOneof("event")


# --- authentication ---------------------------------------------------------------------


def auth_metadata(token: str | None) -> list[tuple[str, str]]:
    """The call metadata a token-protected server wants (nothing without a token)."""
    return [("authorization", f"Bearer {token}")] if token else []


def read_token(path: str) -> str:
    """A token file's token (surrounding whitespace removed). Raises OSError, ValueError (empty)."""
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


# --- what clients tell their users ------------------------------------------------------


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[-1] if ":" in address else str(DEFAULT_PORT)


def unavailable_text(address: str) -> str:
    return (f"no style-transfer server answers at {address}; "
            f"start one with: style-transfer serve --port {port_of(address)}")


def unauthenticated_text(address: str, had_token: bool) -> str:
    if had_token:
        return (f"the server at {address} refused the token (UNAUTHENTICATED): use the token the server was "
                "started with (the contents of its --token-file)")
    return (f"the server at {address} wants a token (UNAUTHENTICATED): give the token the server was started "
            "with (the contents of its --token-file)")


def tls_text(address: str, detail: str, tls: bool) -> str:
    if tls:
        return (f"TLS with the server at {address} failed ({detail}): check that it serves TLS (--tls-cert), "
                "and that the CA file names the authority that signed its certificate (or leave it empty for "
                "the system's roots)")
    return (f"the server at {address} closed the connection ({detail}): if it serves TLS (--tls-cert), "
            "turn TLS on in the client")


# gRPC codes by which a server turns a call away for what it asks (invalid input, a
# token, a method it lacks). Others may come before a job runs or while it runs (a full
# queue, shutdown, memory): the details say which.
REFUSALS = ("INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "UNIMPLEMENTED")
# The server's own UNAVAILABLE answers (service.py words them so); any other UNAVAILABLE
# on a call to a server that was there is the connection going.
SERVER_UNAVAILABLE_WORDS = ("shutting down", "loading")


def refused_text(status_name: str, details: str, what: str = "job") -> str:
    verb = "refused" if status_name in REFUSALS else "stopped"
    return f"the server {verb} the {what}: {details} [{status_name}]"


def connection_lost(status_name: str, details: str) -> bool:
    """Whether a failed call's status means the connection went, not an answer."""
    return status_name == "UNAVAILABLE" and not any(w in (details or "") for w in SERVER_UNAVAILABLE_WORDS)


def lost_text(address: str, detail: str) -> str:
    return f"lost the connection to the server at {address} ({detail or 'no reason given'})"


def queued_text(position: int) -> str:
    return f"waiting for the server: {position} job{'s' if position != 1 else ''} ahead"


def unverified_text(model: str) -> str:
    return (f"the server's weights are UNVERIFIED ({model}): not the ImageNet VGG19 weights, "
            "so results are meaningless")
