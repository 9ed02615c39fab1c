"""A terminal progress bar fed by engine events (local or from the gRPC stream)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from stylecore.events import Progress, Result, Started

from .scheduler import Queued


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """Redraws one line on a terminal; elsewhere (a log, CI) prints a line every few seconds."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, quiet: bool = False, log_every: float = 5.0):
        self.stream = stream or sys.stderr
        self.width = width
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.log_every = log_every
        self._last_log = 0.0
        self._total = 1
        self._done = 0

    def update(self, event: object) -> None:
        if self.quiet:
            return
        if isinstance(event, Queued):
            self._print(f"queued: {event.position} job(s) ahead")
        elif isinstance(event, Started):
            self._total = max(1, event.total_steps)
            sizes = ", ".join(f"{w}x{h}" for h, w in event.sizes)
            self._print(f"running on {event.device} in {event.dtype}; scales {sizes}; {event.total_steps} steps")
        elif isinstance(event, Progress):
            self._done += 1
            line = self._line(event)
            now = time.monotonic()
            if self.tty:
                self.stream.write("\r" + line + "\x1b[K")
                self.stream.flush()
            elif now - self._last_log >= self.log_every or self._done == self._total:
                self._last_log = now
                self._print(line)
        elif isinstance(event, Result):
            if self.tty:
                self.stream.write("\n")
            self._print(f"done in {_clock(event.elapsed)}; final loss {event.losses.get('total', float('nan')):.4g}")

    def _line(self, p: Progress) -> str:
        frac = min(1.0, self._done / self._total)
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return (
            f"[{bar}] {frac:4.0%} scale {p.scale}/{p.scales} step {p.step}/{p.steps} "
            f"loss {p.best:.4g} elapsed {_clock(p.elapsed)} ETA {_clock(p.eta)}"
        )

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
