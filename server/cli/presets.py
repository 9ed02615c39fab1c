"""`style-transfer presets`: every option's value in each preset."""

from __future__ import annotations

import argparse
import dataclasses

from stylecore.params import PRESETS, StyleParams

from . import options as o


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the presets and their values")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(presets_table())
    return 0


def presets_table() -> str:
    """Every option's value in each preset, in columns two spaces apart at least. A row
    whose value is the same in every preset and too wide for the columns is shown once."""
    rows = [(f.name, [o.show(getattr(p, f.name)) for p in PRESETS.values()]) for f in dataclasses.fields(StyleParams)]
    width = max(len(name) for name in PRESETS)
    width = max([width, *(len(c) for _, cells in rows if len(set(cells)) > 1 for c in cells)])
    first = max(len(name) for name, _ in rows) + 2 + 2  # "--" + name
    lines = ["option".ljust(first) + "  ".join(p.rjust(width) for p in PRESETS)]
    for name, cells in rows:
        head = f"--{name.replace('_', '-')}".ljust(first)
        if len(set(cells)) == 1 and len(cells[0]) > width:
            lines.append(f"{head}{cells[0]}  (every preset)")
        else:
            lines.append(head + "  ".join(c.rjust(width) for c in cells))
    return "\n".join(lines)
