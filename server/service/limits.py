"""What one server accepts: every limit in one place, with its default.

`serve` options set them, GetInfo reports them (convert.limits_to_proto), the
admission check (admission.py) and the upload reader (upload.py) enforce them.
"""

from __future__ import annotations

from dataclasses import dataclass

from styletransfer.v1.wire import CHUNK_BYTES, MAX_MESSAGE_BYTES  # the contract's, shared with clients

from ..imageio import DEFAULT_MAX_PIXELS

MiB, GiB = 1 << 20, 1 << 30

# The memory model of one job. The image being optimized is planned by the engine's
# own model (stylecore.memory: whole, or tile by tile within what max_job_bytes
# leaves); the style images go forward once per level before it, tiled within the
# same budget when large; each style keeps its Gram targets (about 2.3 MB per
# level); every input costs its decoded bytes plus float copies.
# A style image is worked at most at the content's working size, or at this for a
# small content: a tiny request must not buy a large style (style_scale up to 8).
STYLE_WORK_FLOOR = 1024 * 1024
GRAM_BYTES = 2_400_000
INPUT_BYTES_PER_PIXEL = 20


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS  # per input image
    max_queue: int = 8  # jobs waiting beyond the running one
    max_styles: int = 8
    max_request_bytes: int | None = None  # None: max_pixels * 4 (one RGBA image at the limit) + 64 MiB
    upload_seconds: float = 120.0  # from the call's start to the client's half-close
    min_upload_rate: int = 256 * 1024  # bytes per second, averaged, checked after the first second
    max_work_pixels: int = 25_000_000  # full resolution up to 24 MP photos (6000x4000), worked tile by tile
    max_job_bytes: int = 6 * GiB  # a 24 MP photo at full resolution, tile by tile
    # Stylize calls at once (uploading, queued or running). A call costs two blocked
    # threads and nothing else until its bytes arrive, and a stalled upload is ended
    # after about a second (min_upload_rate), so this can be generous: it is what lets
    # a real job through while a hundred stalled uploads are being cut off.
    max_calls: int = 128
    upload_bytes_in_flight: int | None = None  # announced bytes of all uploads at once; None: 2 x request_bytes
    reflection_calls: int = 4  # concurrent reflection streams
    idle_seconds: float = 300.0  # a connection without calls is closed after this long
    chunk_bytes: int = CHUNK_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # What precision "auto" runs in on the workers' device ("bfloat16" or "float32"), for
    # the memory plan (admission plans as the engine will). "": not known yet (server.start
    # sets it from the first local worker's device, the cluster from a replica's); fp32
    # until then, the larger need.
    auto_dtype: str = ""

    @property
    def request_bytes(self) -> int:
        return self.max_request_bytes if self.max_request_bytes is not None else self.max_pixels * 4 + 64 * MiB

    @property
    def bytes_in_flight(self) -> int:
        return self.upload_bytes_in_flight if self.upload_bytes_in_flight is not None else 2 * self.request_bytes

    @property
    def reserved_workers(self) -> int:
        """Threads kept for short calls (health, GetInfo, refusals) beyond the bounded long ones."""
        return 8

    @property
    def workers(self) -> int:
        return self.max_calls + self.reflection_calls + self.reserved_workers
