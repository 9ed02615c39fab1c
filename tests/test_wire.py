"""styletransfer.v1.wire: the wire rules every Python side shares (server, Python
client, the GIMP plug-in's pure-Python client)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import stylegimp
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import wire


def test_imports_with_only_protobuf(tmp_path):
    """In a bare interpreter that sees only the plug-in's folder (as GIMP's Python does)."""
    plugin = stylegimp.install(tmp_path / "plug-ins")
    code = (f"import sys, json; sys.path[:0] = [{str(plugin / 'vendor')!r}]\n"
            "from styletransfer.v1 import wire\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'numpy', 'PIL', 'grpc', 'grpclib', 'torch', 'stylecore', 'styleserver'})))")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("length, size, offsets", [
    (0, 4, [0]),  # one empty chunk: an empty image still has one
    (1, 4, [0]),
    (4, 4, [0]),
    (5, 4, [0, 4]),
    (9, 4, [0, 4, 8]),
])
def test_chunks(length, size, offsets):
    data = bytes(range(length))
    pieces = list(wire.image_chunks(2, data, size))
    assert [p.offset for p in pieces] == offsets
    assert all(p.image == 2 and len(p.data) <= size for p in pieces)
    assert b"".join(p.data for p in pieces) == data


@pytest.mark.parametrize("head, fmt", [
    (b"\x89PNG\r\n\x1a\n" + bytes(8), pb.IMAGE_FORMAT_PNG),
    (b"\xff\xd8\xff\xe0" + bytes(12), pb.IMAGE_FORMAT_JPEG),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 ", pb.IMAGE_FORMAT_WEBP),
    (b"II*\x00" + bytes(12), pb.IMAGE_FORMAT_TIFF),
    (b"MM\x00*" + bytes(12), pb.IMAGE_FORMAT_TIFF),
    (b"BM" + bytes(14), None),  # BMP: not a format the contract names
    (b"RIFF\x10\x00\x00\x00WAVEfmt ", None),
    (b"", None),
])
def test_sniff_format(head, fmt):
    assert wire.sniff_format(head) == fmt
    meta = wire.encoded_meta(head)
    assert (meta is None) == (fmt is None)
    if meta is not None:
        assert meta.format == fmt and meta.size_bytes == len(head) and meta.width == 0


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("result_format", [pb.IMAGE_FORMAT_UNSPECIFIED, pb.IMAGE_FORMAT_RAW, pb.IMAGE_FORMAT_PNG,
                                           pb.IMAGE_FORMAT_JPEG, pb.IMAGE_FORMAT_WEBP, pb.IMAGE_FORMAT_TIFF])
def test_alpha_fits_every_format_but_jpeg(result_format, channels):
    alpha = channels in (2, 4)
    assert wire.alpha_fits(result_format, channels) == (not (alpha and result_format == pb.IMAGE_FORMAT_JPEG))
    refusal = wire.alpha_refusal(result_format, channels)
    if wire.alpha_fits(result_format, channels):
        assert refusal is None
    else:
        assert refusal == "JPEG cannot store the content's alpha channel; ask for PNG, WebP, TIFF or RAW"


def test_formats_text():
    assert wire.formats_text() == "PNG, JPEG, WebP or TIFF"
    assert wire.formats_text([pb.IMAGE_FORMAT_PNG, pb.IMAGE_FORMAT_TIFF], "and") == "PNG and TIFF"
    assert wire.formats_text([pb.IMAGE_FORMAT_WEBP]) == "WebP"


def test_request_stream_is_the_header_then_each_image_in_order():
    head = wire.header(wire.raw_meta(3, 2, 1), [wire.raw_meta(2, 2, 3)], preset="draft",
                       params={"steps": 3, "style_blend": [1.0, 2.0]}, preview_every=2)
    messages = list(wire.request_stream(head, [bytes(6), bytes(12)], chunk=5))
    assert messages[0].header.preset == "draft" and messages[0].header.params.steps == 3
    assert list(messages[0].header.params.style_blend) == [1.0, 2.0]
    assert not messages[0].header.params.HasField("size")  # unset: the preset's value
    assert [(m.chunk.image, m.chunk.offset) for m in messages[1:]] == [(0, 0), (0, 5), (1, 0), (1, 5), (1, 10)]


def _result(data: bytes, size: int):
    return [e.result for e in wire.result_events(pb.ImageMeta(format=pb.IMAGE_FORMAT_RAW, size_bytes=len(data)),
                                                 data, size)]


@pytest.mark.parametrize("order, error", [
    ([0, 1, 2], None),
    ([1, 0, 2], "out of order"),  # the first chunk must carry the meta, at offset 0
    ([0, 2, 1], "out of order"),
    ([0, 1], "announced"),  # one chunk missing
    ([], "no result"),
])
def test_result_assembly(order, error):
    pieces = _result(bytes(range(10)), 4)
    assembler = wire.ResultAssembler()
    try:
        for i in order:
            assembler.add(pieces[i])
        meta, data = assembler.finish()
    except wire.WireError as e:
        assert error and error in str(e)
    else:
        assert error is None and data == bytes(range(10)) and meta.size_bytes == 10


@pytest.mark.parametrize("function, args, expected", [
    (wire.unavailable_text, ("127.0.0.1:9",),
     "no style-transfer server answers at 127.0.0.1:9; start one with: style-transfer serve --port 9"),
    (wire.unauthenticated_text, ("gpu:50051", True), "the server at gpu:50051 refused the token"),
    (wire.unauthenticated_text, ("gpu:50051", False), "the server at gpu:50051 wants a token"),
    (wire.tls_text, ("gpu:50051", "CERTIFICATE_VERIFY_FAILED", True), "the CA file"),
    (wire.tls_text, ("gpu:50051", "closed", False), "turn TLS on"),
    (wire.queued_text, (1,), "waiting for the server: 1 job ahead"),
    (wire.queued_text, (3,), "waiting for the server: 3 jobs ahead"),
])
def test_texts(function, args, expected):
    assert function(*args).startswith(expected) or expected in function(*args)


@pytest.mark.parametrize("token, metadata", [(None, []), ("", []), ("s3", [("authorization", "Bearer s3")])])
def test_auth_metadata(token, metadata):
    assert wire.auth_metadata(token) == metadata
