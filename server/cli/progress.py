"""A terminal progress bar fed by engine events (local or from the gRPC stream).

On a terminal it redraws one line in place, never wider than the terminal (so it
never wraps into a new line per step); elsewhere (a log file, a pipe, CI) it prints
a plain line every `log_every` seconds and at the end of each scale.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import TextIO

from stylecore.events import Progress, Result, Started, TilePass

from styletransfer.v1.wire import Queued

MIN_BAR = 10  # narrowest bar worth drawing, inside its brackets
MAX_BAR = 40


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds))) if math.isfinite(seconds) else 0
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def terminal_columns(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to: $COLUMNS when set, else the
    terminal's own, else shutil's answer (80 when nothing knows)."""
    if os.environ.get("COLUMNS", "").isdigit() and int(os.environ["COLUMNS"]) > 0:
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False, log_every: float = 5.0):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.log_every = log_every
        self._last_log = -math.inf
        self._total = 1
        self._done = 0
        self._drawn = False  # a bar line is on the terminal, the cursor at its end

    def update(self, event: object) -> None:
        if self.quiet:
            return
        if isinstance(event, Queued):
            self._print(f"queued: {event.position} job(s) ahead")
        elif isinstance(event, Started):
            self._total = max(1, event.total_steps)
            tiles = event.tiles or (0,) * len(event.sizes)
            sizes = ", ".join(f"{w}x{h}" + (f" (tiles of {t} px)" if t else "") for (h, w), t in zip(event.sizes, tiles))
            self._print(f"running on {event.device} in {event.dtype}; scales {sizes}; {event.total_steps} steps")
        elif isinstance(event, TilePass):
            # Within one (long) step of a tiled scale: the step's tiles, on the bar's line.
            text = (f"scale {event.scale} step {event.step}: pass {event.phase}/{event.phases} "
                    f"tile {event.tile}/{event.tiles}")
            if self.tty:
                self.stream.write("\r" + text[: terminal_columns(self.stream) - 1] + "\x1b[K")
                self.stream.flush()
                self._drawn = True
            elif time.monotonic() - self._last_log >= self.log_every:
                self._last_log = time.monotonic()
                self._print(text)
        elif isinstance(event, Progress):
            self._done += 1
            if self.tty:
                self.stream.write("\r" + self.line(event, terminal_columns(self.stream) - 1) + "\x1b[K")
                self.stream.flush()
                self._drawn = True
            else:
                now = time.monotonic()
                if now - self._last_log >= self.log_every or event.step == event.steps:
                    self._last_log = now
                    self._print(self.plain_line(event))
        elif isinstance(event, Result):
            self.end_line()  # the finished bar stays on screen
            self._print(f"done in {_clock(event.elapsed)}; final loss {event.losses.get('total', float('nan')):.4g}")

    def end_line(self) -> None:
        """Leave the bar's line (before other output, e.g. an error)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _fraction(self) -> float:
        return min(1.0, self._done / self._total)

    def line(self, p: Progress, width: int) -> str:
        """The bar and the most of its figures that fit in `width` characters."""
        pct = f"{self._fraction():4.0%}"
        eta = f"ETA {_clock(p.eta)}"
        where = f"scale {p.scale}/{p.scales} step {p.step}/{p.steps}"
        tails = (
            f"{pct} {where} loss {p.best:.4g} elapsed {_clock(p.elapsed)} {eta}",
            f"{pct} {where} loss {p.best:.4g} {eta}",
            f"{pct} {where} {eta}",
            f"{pct} {p.scale}/{p.scales} {p.step}/{p.steps} {eta}",
            f"{pct} {eta}",
        )
        for tail in tails:
            room = width - len(tail) - 3  # "[", "] "
            if room >= MIN_BAR:
                inner = min(MAX_BAR, room)
                filled = int(self._fraction() * inner)
                return f"[{'#' * filled}{'.' * (inner - filled)}] {tail}"
        return tails[-1][: max(0, width)]

    def plain_line(self, p: Progress) -> str:
        return (f"scale {p.scale}/{p.scales} step {p.step}/{p.steps} ({self._fraction():.0%}) loss {p.best:.4g} "
                f"elapsed {_clock(p.elapsed)} ETA {_clock(p.eta)}")

    def _print(self, line: str) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")  # the message takes the bar's place; the bar redraws below it
            self._drawn = False
        self.stream.write(line + "\n")
        self.stream.flush()
