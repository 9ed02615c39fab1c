"""The `style-transfer` command: one module per sub-command, each with its parser.

    style-transfer stylize CONTENT STYLE [STYLE ...] -o OUT [--server HOST:PORT] [options]
    style-transfer batch PHOTO [PHOTO ...] --style STYLE -o FOLDER [options]
    style-transfer sequence INPUT STYLE [STYLE ...] -o OUTPUT [options]
    style-transfer serve [--host 127.0.0.1] [--port PORT] [options]
    style-transfer info --server HOST:PORT
    style-transfer gimp install|uninstall|doctor
    style-transfer presets

Every engine option is generated from the fields of stylecore.params.StyleParams
(options.py), so the CLI cannot drift from the engine. Bad input ends with one line
on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from stylecore.params import ParamError
from styletransfer.v1 import wire

from ..errors import UsageError
from ..imageio import ImageError
from . import batch, gimp, info, presets, sequence, serve, stylize
from .options import EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="style-transfer",
        description="Neural style transfer (Gatys et al. 2016, VGG19) for GIMP and the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = sub  # main() lets the subcommand's parser report unknown options
    for command in (stylize, batch, sequence, serve, gimp, info, presets):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the subcommand's parser, whose --help lists what it takes
        parser.commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    from ..client import ConnectionLost, RemoteError, ServerUnavailable
    from ..weights import WeightsError

    try:
        return args.func(args)
    except (ParamError, ImageError, WeightsError, UsageError, ServerUnavailable) as e:
        print(f"style-transfer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionLost as e:
        print(f"style-transfer: {e.details}", file=sys.stderr)
        return EXIT_FAILED
    except RemoteError as e:
        if e.code.name == "FAILED_PRECONDITION":  # the server's engine diverged (NaN or infinity)
            print(f"style-transfer: error: diverged on the server: {e.details}; nothing was written", file=sys.stderr)
            return EXIT_USAGE
        text = wire.refused_text(e.code.name, e.details, "job" if args.command == "stylize" else "request")
        if e.code.name == "INVALID_ARGUMENT":  # bad input, as the server judged it: as it would be here
            print(f"style-transfer: error: {text}", file=sys.stderr)
            return EXIT_USAGE
        print(f"style-transfer: {text}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nstyle-transfer: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if os.environ.get("STYLE_TRANSFER_DEBUG"):
            raise
        print(f"style-transfer: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED

