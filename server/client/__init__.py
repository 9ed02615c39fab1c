"""The Python client other tools import: the same typed events as the engine.

    from styleserver.client import Client
    client = Client()  # wire.DEFAULT_ADDRESS, or "host:port"
    for event in client.stylize(content, [style], preset="draft", preview_every=10):
        ...  # Queued (styletransfer.v1.wire), then stylecore.events: Started, Progress, Preview, Result
    client.info()  # a dict

Needs no torch. Closing the event generator (or breaking out of the loop)
cancels the call, and the server stops the job within one step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict

from stylecore.buffers import check_buffer
from stylecore.params import StyleParams, preset as get_preset
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import style_transfer_pb2_grpc as pb_grpc
from styletransfer.v1 import wire
from styletransfer.v1.wire import DEFAULT_ADDRESS

from .. import convert
from ..imageio import decode_image


class ServerUnavailable(Exception):
    """No server answers at the address; the message says how to start one."""


class RemoteError(Exception):
    """The server refused or failed the call; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{details} [{code.name}]")
        self.code = code
        self.details = details


class ConnectionLost(RemoteError):
    """The connection to a server that was there went during the call; `details` says so."""


class Client:
    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, tls_ca: str | None = None,
                 connect_timeout: float = 5.0):
        """connect_timeout: seconds to connect and get an answer to a health check before
        each call; past it the call raises ServerUnavailable (a server's health is
        answered outside its job slots, so a busy server still answers in time)."""
        self.address = address
        self.connect_timeout = connect_timeout
        self._token, self._tls = token, tls_ca is not None
        self._metadata = wire.auth_metadata(token)
        options = [("grpc.max_receive_message_length", 2 * wire.MAX_MESSAGE_BYTES)]
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes() if tls_ca else None)
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.StyleTransferStub(self._channel)
        # grpc.health.v1 Check with an empty request (all fields default), bytes in and out:
        # no dependency on the health package for a probe whose answer is not read.
        self._health_check = self._channel.unary_unary("/grpc.health.v1.Health/Check")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> None:
        """Fails within connect_timeout, saying how to start a server, when nothing answers
        at the address: one health check that waits for the connection. (Not
        grpc.channel_ready_future: its polling thread raises "Channel closed!" on stderr
        when a client is closed soon after connecting.) Any answer, even UNIMPLEMENTED or
        UNAUTHENTICATED, means a server is there; the call itself then says the rest."""
        try:
            self._health_check(b"", timeout=self.connect_timeout, wait_for_ready=True, metadata=self._metadata)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServerUnavailable(self._unavailable_message()) from None

    def _unavailable_message(self) -> str:
        return wire.unavailable_text(self.address)

    def _error(self, e: grpc.RpcError) -> Exception:
        """A failed call as the caller should read it. Calls come after _connect, so the
        server was there: UNAVAILABLE (but for its own shutting-down or loading answers)
        means the connection was lost, not that no server runs."""
        if wire.connection_lost(e.code().name, e.details() or ""):
            return ConnectionLost(e.code(), wire.lost_text(self.address, e.details() or ""))
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            return RemoteError(e.code(), wire.unauthenticated_text(self.address, bool(self._token)))
        return RemoteError(e.code(), e.details() or "")

    def info(self) -> dict:
        self._connect()
        try:
            reply = self._stub.GetInfo(pb.GetInfoRequest(), metadata=self._metadata, timeout=30)
        except grpc.RpcError as e:
            raise self._error(e) from None
        return MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    def stylize(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        params: StyleParams | None = None,
        preset: str = "default",
        preview_every: int = 0,
        preview_max_side: int = 0,
        result_format: int = pb.IMAGE_FORMAT_RAW,
        init_image: np.ndarray | bytes | None = None,
        style_masks: Sequence[np.ndarray | bytes | None] = (),
        style_source_masks: Sequence[np.ndarray | bytes | None] = (),
        result_depth: int = 0,
        previous_frame: np.ndarray | bytes | None = None,
        previous_result: np.ndarray | bytes | None = None,
    ) -> Iterator:
        """Send images, each an (H, W, C) buffer (8 bits, 16 bits or float32) or an
        encoded file's bytes; yield Queued, Started, Progress, Preview, then Result.
        `params` defaults to the preset; only the fields that differ from it travel.
        `init_image` (with params.init "image"): the image to start from. style_masks:
        per style, a gray mask of the content's size (None: that style has none);
        style_source_masks: per style, which part of it to take. result_depth: the
        result's bits per channel (0: the content's). previous_frame, previous_result:
        for a frame after the first of a sequence, the frame before it and its result."""

        def prepared(image, what: str) -> tuple[pb.ImageMeta, bytes]:
            meta = convert.encoded_meta(bytes(image)) if isinstance(image, (bytes, bytearray)) else None
            if meta is not None:
                return meta, bytes(image)
            if isinstance(image, (bytes, bytearray)):  # a format the contract does not name: send pixels
                image = decode_image(bytes(image), what=what)
            array = np.ascontiguousarray(check_buffer(image, what))
            return convert.image_meta(array), array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()

        content_meta, content_bytes = prepared(content, "content")
        style_parts = [prepared(s, f"style {i + 1}") for i, s in enumerate(styles)]
        init_part = prepared(init_image, "initial image") if init_image is not None else None
        mask_parts = [prepared(m, f"mask of style {i + 1}") if m is not None else None
                      for i, m in enumerate(style_masks)]
        source_parts = [prepared(m, f"source mask of style {i + 1}") if m is not None else None
                        for i, m in enumerate(style_source_masks)]
        previous = [prepared(m, what) if m is not None else None
                    for m, what in ((previous_frame, "previous frame"), (previous_result, "previous result"))]
        base = get_preset(preset)
        header = wire.header(
            content_meta, [m for m, _ in style_parts], preset=preset,
            params=convert.params_to_proto(params, base) if params is not None else None,
            preview_every=preview_every, preview_max_side=preview_max_side, result_format=result_format,
            init_image=init_part[0] if init_part else None,
            style_masks=[p[0] if p else None for p in mask_parts],
            style_source_masks=[p[0] if p else None for p in source_parts], result_depth=result_depth,
            previous_frame=previous[0][0] if previous[0] else None,
            previous_result=previous[1][0] if previous[1] else None,
        )
        # Upload order: wire.header_images.
        images = [content_bytes, *(d for _, d in style_parts), *([init_part[1]] if init_part else []),
                  *(p[1] for p in mask_parts if p), *(p[1] for p in source_parts if p),
                  *(p[1] for p in previous if p)]
        self._connect()
        call = self._stub.Stylize(wire.request_stream(header, images), metadata=self._metadata)
        decoder = convert.EventDecoder()
        try:
            for message in call:
                event = decoder.decode(message)
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            raise self._error(e) from None
        finally:
            call.cancel()  # a no-op after a finished call; stops the job when the caller quits early
