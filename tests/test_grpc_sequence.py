"""Sequences over the contract (v1.4): a frame after the first travels with the frame
before it and that frame's result; the server runs it as stylecore.stylize_frames does,
and refuses what does not fit before spending."""

from __future__ import annotations

import numpy as np
import pytest

from stylecore import FrameDone, Result, preset, stylize_frames
from styleserver.client import RemoteError

FAST = preset("default").replace(size=48, scales=2, min_scale=32, coarse_steps=2, steps=3, precision="fp32")


def _frames(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    strip = (rng.random((36, 48 + 3 * n, 3)) * 255).astype(np.uint8)
    return [np.ascontiguousarray(strip[:, 3 * i:3 * i + 48]) for i in range(n)]


def _result(client, frame, style, **kw) -> Result:
    result = list(client.stylize(frame, [style], FAST, **kw))[-1]
    assert isinstance(result, Result)
    return result


def test_a_frame_after_the_first_is_what_a_local_sequence_makes(client, engine, style):
    frames = _frames()
    local = [e.image for e in stylize_frames(engine, frames, [style], FAST) if isinstance(e, FrameDone)]
    first = _result(client, frames[0], style)
    assert np.array_equal(first.image, local[0])
    second = _result(client, frames[1], style, previous_frame=frames[0], previous_result=first.image)
    assert "temporal" in second.losses
    assert np.array_equal(second.image, local[1])


def test_a_masked_sequence_through_a_server_is_the_local_one(client, engine, style):
    """The command line's --server path (one job a frame, the mask with each) gives the
    frames stylize_frames gives with the same mask."""
    from styleserver.cli.sequence import remote_frames

    frames = _frames(3)
    mask = np.zeros((36, 48, 1), np.uint8)
    mask[:, :24] = 255
    local = [e.image for e in stylize_frames(engine, frames, [style], FAST, style_masks=[mask])
             if isinstance(e, FrameDone)]
    remote = [e.image for e in remote_frames(client, frames, [style], FAST, "default", 3, masks=[mask])
              if isinstance(e, FrameDone)]
    assert all(np.array_equal(a, b) for a, b in zip(local, remote)) and len(remote) == 3
    assert np.array_equal(local[2][:, 32:], frames[2][:, 32:])  # no mask there: the content kept


@pytest.mark.parametrize("case, field", [
    ("frame without result", "header.previous_result"),
    ("result without frame", "header.previous_frame"),
    ("with an initial image", "header.init_image"),
    ("another size", "header.previous_frame.width"),
])
def test_what_a_frame_job_refuses(client, style, case, field):
    frames = _frames()
    kw = {"frame without result": {"previous_frame": frames[0]},
          "result without frame": {"previous_result": frames[0]},
          "with an initial image": {"previous_frame": frames[0], "previous_result": frames[0],
                                    "init_image": frames[0]},
          "another size": {"previous_frame": frames[0][:, :40], "previous_result": frames[0]}}[case]
    params = FAST.replace(init="image") if "init_image" in kw else FAST
    with pytest.raises(RemoteError) as err:
        list(client.stylize(frames[1], [style], params, **kw))
    assert err.value.code.name == "INVALID_ARGUMENT" and field in err.value.details
