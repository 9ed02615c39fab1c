"""Region styles, tileable results and images beyond 8 bits over the contract (v1.3):
what travels, what comes back, and what is refused before anything is spent."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from stylecore import Result, preset
from styleserver import convert
from styleserver.client import RemoteError
from styleserver.imageio import encode_image
from styletransfer.v1 import style_transfer_pb2 as pb
from styletransfer.v1 import style_transfer_pb2_grpc as pb_grpc
from styletransfer.v1 import wire

FAST = preset("default").replace(size=48, scales=1, steps=3)


def _half(content: np.ndarray) -> np.ndarray:
    h, w = content.shape[:2]
    m = np.zeros((h, w, 1), np.uint8)
    m[:, : w // 2] = 255
    return m


def _result(client, content, styles, params=FAST, **kw) -> Result:
    result = list(client.stylize(content, styles, params, **kw))[-1]
    assert isinstance(result, Result)
    return result


@pytest.mark.parametrize("dtype, top", [(np.uint16, 65535), (np.float32, 1.0)], ids=["16-bit", "float"])
def test_a_deep_raw_content_comes_back_at_its_depth_with_alpha_bit_for_bit(client, content, style, dtype, top):
    h, w = content.shape[:2]
    alpha = np.linspace(0, 1, h * w).reshape(h, w, 1) * top
    rgba = np.concatenate([content / 255.0 * top, alpha], 2)
    rgba = rgba.astype(dtype) if dtype == np.float32 else np.rint(rgba).astype(dtype)
    result = _result(client, rgba, [style])
    assert result.image.dtype == dtype and result.image.shape == rgba.shape
    assert np.array_equal(result.image[:, :, 3], rgba[:, :, 3])


@pytest.mark.parametrize("depth, fmt, dtype", [
    (16, pb.IMAGE_FORMAT_PNG, np.uint16), (32, pb.IMAGE_FORMAT_TIFF, np.float32), (8, pb.IMAGE_FORMAT_RAW, np.uint8),
    (16, pb.IMAGE_FORMAT_RAW, np.uint16),
])
def test_result_depth_asks_for_a_depth(client, content, style, depth, fmt, dtype):
    result = _result(client, content, [style], result_format=fmt, result_depth=depth)
    assert result.image.dtype == dtype


def test_a_16_bit_png_content_gives_a_16_bit_png(client, content, style):
    sky = np.rint(np.linspace(0.1, 0.9, content.size).reshape(content.shape) * 65535).astype(np.uint16)
    result = _result(client, encode_image(sky, "PNG"), [style], result_format=pb.IMAGE_FORMAT_PNG)
    assert result.image.dtype == np.uint16


def test_masks_travel_and_what_no_mask_covers_keeps_the_content(client, content, style):
    result = _result(client, content, [style], FAST.replace(size=64), style_masks=[_half(content)])
    w = content.shape[1]
    assert np.array_equal(result.image[:, w // 2 + 1:], content[:, w // 2 + 1:])


def test_an_encoded_mask_and_a_background_style_travel(client, content, style):
    mask = encode_image(_half(content), "PNG")
    result = _result(client, content, [style, style[::-1].copy()], FAST.replace(size=64), style_masks=[mask])
    w = content.shape[1]
    assert not np.array_equal(result.image[:, w // 2 + 1:], content[:, w // 2 + 1:])


def test_a_style_source_mask_travels(client, content, style):
    result = _result(client, content, [style], style_source_masks=[_half(style)])
    assert result.image.shape == content.shape


def test_tileable_travels_as_a_parameter(client, content, style):
    result = _result(client, content, [style], FAST.replace(size=64, tileable=1))
    assert result.image.shape == content.shape


def _header_only(server, header: pb.Header):
    """Sends the header alone (no image byte) and returns the status the call ends with."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.StyleTransferStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Stylize(iter([pb.StylizeRequest(header=header)])))
    return err.value


def _header(content, style, **kw) -> pb.Header:
    return wire.header(convert.image_meta(content), [convert.image_meta(style)],
                       params=convert.params_to_proto(FAST, preset("default")), **kw)


@pytest.mark.parametrize("case, field, words", [
    ("small mask", "header.style_masks[0].width", "is 10x10; a mask must be the content's size, 64x43"),
    ("two masks", "header.style_masks", "2 masks for 1 style images: at most one per style"),
    ("small source mask", "header.style_source_masks[0].width", "is 10x10; a mask must be style 0's size, 64x64"),
    ("jpeg 16", "header.result_depth", "JPEG holds 8 bits per channel, not 16"),
    ("depth 12", "header.result_depth", "must be 0 (the content's), 8, 16 or 32 bits, got 12"),
    ("raw depth 24", "header.content.depth", "must be 8 (or 0), 16 or 32 bits per channel, got 24"),
])
def test_a_bad_request_is_refused_from_its_header_before_any_byte(server, content, style, case, field, words):
    small = wire.raw_meta(10, 10, 1)
    header = {
        "small mask": lambda: _header(content, style, style_masks=[small]),
        "two masks": lambda: _header(content, style, style_masks=[convert.image_meta(_half(content))] * 2),
        "small source mask": lambda: _header(content, style, style_source_masks=[small]),
        "jpeg 16": lambda: _header(content, style, result_format=pb.IMAGE_FORMAT_JPEG, result_depth=16),
        "depth 12": lambda: _header(content, style, result_depth=12),
        "raw depth 24": lambda: _header(content, style),
    }[case]()
    if case == "raw depth 24":
        header.content.depth = 24
    error = _header_only(server, header)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}: {words}" in error.details(), error.details()


def test_a_mask_that_is_not_gray_is_refused_before_the_job_runs(client, content, style):
    colour = np.dstack([_half(content), 255 - _half(content), _half(content)])
    with pytest.raises(RemoteError) as err:
        list(client.stylize(content, [style], FAST, style_masks=[colour]))
    assert "INVALID_ARGUMENT" in str(err.value) and "header.style_masks[0]: is not gray" in str(err.value)
