"""The load targets of the hostile suite as figures: `python bench/hostile_bench.py`.

Starts `style-transfer serve` on 127.0.0.1 (seeded random weights, default limits),
times a small job on the idle server, then holds 100 header-only uploads, 100 idle
reflection streams and 1,000 junk connections open while it times a health check and
the same job; prints the server's resident memory. Bounded: about 30 s."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the hostile client's tools and the server process the tests start
from hostile import health, hold_open, junk_connections, small_job  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

from stylecore import random_state_dict  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vgg19-random-seed0.pth"
        torch.save(random_state_dict(seed=0, features_only=True), weights)
        server = ServeProcess.serving(str(weights))
        try:
            rng = np.random.default_rng(0)
            content = rng.integers(0, 256, (43, 64, 3), dtype=np.uint8)
            style = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            small_job(server.address, content, style)
            idle = min(small_job(server.address, content, style) for _ in range(3))
            held, outcomes, release = hold_open(server.address, 100, 100)
            socks = junk_connections(server.port, 1000)
            time.sleep(0.5)
            t0 = time.monotonic()
            status = health(server.address, timeout=5)
            health_ms = (time.monotonic() - t0) * 1000
            loaded = small_job(server.address, content, style)
            release.set()
            for s in socks:
                s.close()
            held.join(30)
            print(f"idle server: small job {idle:.2f} s")
            print(f"under 100 header-only uploads, 100 idle reflection streams, 1000 junk connections: "
                  f"health {health_ms:.0f} ms ({status}), small job {loaded:.2f} s ({loaded / idle:.2f}x idle)")
            print(f"server resident memory {server.rss_mb():.0f} MB, peak {server.peak_mb():.0f} MB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
