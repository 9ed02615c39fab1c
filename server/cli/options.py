"""What every sub-command shares: the parser, argument types, exit statuses, the
client options, and the engine options generated from the fields of
stylecore.params.StyleParams, so the CLI cannot drift from the engine."""

from __future__ import annotations

import argparse
import dataclasses
import math

from stylecore.params import PRESETS, StyleParams, preset
from styletransfer.v1 import wire

from ..errors import UsageError

EXIT_USAGE = 2  # bad input: arguments, files, weights
EXIT_FAILED = 1  # the job itself failed
EXIT_CANCELLED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line naming the option
    (not the whole usage), with exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")



def byte_count(text: str) -> int:
    """A byte count: 1234, 64K, 300M, 4G (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 300M)") from None
    if not 0 <= value < 2**63:  # NaN and infinity too
        raise argparse.ArgumentTypeError(f"must be a byte count from 0, got {text!r}")
    return int(value)


def positive_byte_count(text: str) -> int:
    n = byte_count(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 bytes, got {text!r}")
    return n


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def count(lo: int, hi: int | None = None):
    """An argparse type: a whole number from lo (to hi)."""
    def parse(text: str) -> int:
        n = whole(text)
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"must be {f'{lo} to {hi}' if hi is not None else f'at least {lo}'}, "
                                             f"got {n}")
        return n
    return parse


port = count(0, 65535)


# gRPC takes durations in int32 milliseconds: 24 days at most; a week is plenty.
MAX_SECONDS = 7 * 24 * 3600


def seconds(positive: bool = True):
    """An argparse type: seconds, finite, positive (or from 0), at most MAX_SECONDS."""
    def parse(text: str) -> float:
        v = number(text)
        if not (0 < v if positive else 0 <= v) or not v <= MAX_SECONDS:  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be {'more than 0' if positive else '0 or more'} and at most "
                                             f"{MAX_SECONDS:,} seconds, got {text!r}")
        return v
    return parse


def share(what: str, allow_auto: bool = False):
    """An argparse type: a finite share of a resource (0 or more; -1 = automatic where allowed)."""
    def parse(text: str) -> float:
        v = number(text)
        if not (0 <= v < math.inf or (allow_auto and v == -1)):
            raise argparse.ArgumentTypeError(f"must be 0 or more {what}{' (or -1: automatic)' if allow_auto else ''}, "
                                             f"got {text!r}")
        return v
    return parse


gpus, cpus = share("GPUs", allow_auto=True), share("CPU cores")


def number_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def size_or_full(text: str) -> int:
    """--size: px, or `full` (0): the photo's own size."""
    return 0 if text.strip().lower() == "full" else whole(text)


_PARSERS = {"int": whole, "float": number, "str": str, "tuple[float, ...]": number_list}
_FIELD_PARSERS = {"size": size_or_full}  # fields whose option takes more than their type


def _defaults_help(name: str) -> str:
    """'default: 512; draft: 256, high: 1024, seed: 400': the default preset's value,
    then the other presets' where they differ."""
    base = show(getattr(PRESETS["default"], name))
    others = [f"{p}: {show(getattr(v, name))}" for p, v in PRESETS.items()
              if p != "default" and getattr(v, name) != getattr(PRESETS["default"], name)]
    return f"default: {base}" + (f"; {', '.join(others)}" if others else "")


def add_param_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine options (their defaults come from --preset; any option overrides it)")
    group.add_argument("--preset", default="default", metavar="{" + ",".join(PRESETS) + "}",
                       help="starting values for every option below (default: default; "
                            "`style-transfer presets` lists them)")
    for f in dataclasses.fields(StyleParams):
        choices = f.metadata.get("choices")
        # No argparse `choices`: StyleParams checks them, with the same message as over gRPC.
        group.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=_FIELD_PARSERS.get(f.name, _PARSERS[str(f.type)]),
            default=None, **({"nargs": "?", "const": 1} if f.metadata.get("flag") else {}),
            metavar="{" + ",".join(choices) + "}" if choices else f.name.upper(),
            help=(f.metadata["help"] if "default:" in f.metadata["help"]
                  else f"{f.metadata['help']} ({_defaults_help(f.name)})").replace("%", "%%"),
        )


def params_from_args(args: argparse.Namespace) -> StyleParams:
    """The preset, with every option the user gave on top. Raises ParamError."""
    base = preset(args.preset)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(StyleParams)}
    return base.replace(**{k: v for k, v in changes.items() if v is not None})



def show(v: object) -> str:
    if isinstance(v, tuple):
        return ",".join(f"{x:g}" for x in v) or "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def add_local_options(p: argparse.ArgumentParser, what: str = "images") -> None:
    """What every command that may run the engine itself takes: the weights, the size
    limit of what it reads, quiet, and the device."""
    from stylecore.params import DEVICES

    from ..imageio import DEFAULT_MAX_PIXELS

    p.add_argument("--weights", help="VGG19 weights file (default: ${STYLE_TRANSFER_WEIGHTS} or torch hub's cache)")
    p.add_argument("--no-download", action="store_true", help="never download the weights")
    p.add_argument("--max-pixels", type=count(1), default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse {what} with more pixels (default: {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--device", default=None, choices=DEVICES,
                   help="where the local engine runs (default: auto, CUDA when present); with --server the "
                        "server's own")


def add_region_options(group, size: str = "CONTENT's size") -> None:
    """A style per region: --style-mask, --background-style, --style-source-mask (read
    with read_styles)."""
    group.add_argument("--style-mask", action="append", default=[], metavar="MASK",
                       help=f"a gray image of {size}: where a STYLE applies (white), in part (gray) or "
                            "not (black). Give it once per STYLE, in the STYLEs' order; STYLEs after the last mask "
                            "style the rest (the background). With every STYLE masked, what no mask covers keeps "
                            "the content")
    group.add_argument("--background-style", action="append", default=[], metavar="IMAGE",
                       help="a style for what no --style-mask covers (the same as a STYLE given after the masked "
                            "ones)")
    group.add_argument("--style-source-mask", action="append", default=[], metavar="MASK",
                       help="a gray image of a STYLE's size: which part of that style image to take the style "
                            "from; once per STYLE, in order (optional)")


def style_inputs(args) -> list[tuple[str, str]]:
    """The style images and masks the command line names, as (kind, path), after
    checking that they add up (before anything is read)."""
    style_paths = [*args.styles, *args.background_style]
    for option, given, styles in (("--style-mask", args.style_mask, args.styles),
                                  ("--style-source-mask", args.style_source_mask, style_paths)):
        if len(given) > len(styles):
            raise UsageError(f"{option}: given {len(given)} times for {len(styles)} style image(s); "
                             "at most one per style, in order")
    if args.background_style and not args.style_mask:
        raise UsageError("--background-style: styles what no --style-mask covers; give --style-mask too")
    return [*(("style", s) for s in style_paths), *(("mask", m) for m in args.style_mask + args.style_source_mask)]


def read_styles(args, content_size: tuple[int, int]):
    """(styles, masks, source masks) as arrays: every style image (the background ones
    last), each --style-mask checked against the content's (h, w), each source mask
    against its style's; UsageError naming the file that does not fit."""
    from ..imageio import read_image

    style_inputs(args)
    styles = [read_image(p, args.max_pixels, "style") for p in [*args.styles, *args.background_style]]
    masks = [read_mask(m, args.max_pixels, f"--style-mask {m}", content_size) for m in args.style_mask]
    sources = [read_mask(m, args.max_pixels, f"--style-source-mask {m}", s.shape[:2])
               for m, s in zip(args.style_source_mask, styles)]
    return styles, masks, sources


def read_mask(path: str, max_pixels: int, what: str, size) -> "np.ndarray":
    """A mask file, checked before any work: gray (or equal colour channels), of its
    image's size (h, w)."""
    from stylecore.buffers import check_mask

    from ..imageio import read_image

    mask = read_image(path, max_pixels, what)
    try:
        return check_mask(mask, what, tuple(size))
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


def add_client_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--server", required=required, metavar="HOST:PORT",
                   help="use a style-transfer server instead of the local engine" if not required else
                   f"the server (e.g. {wire.DEFAULT_ADDRESS})")
    p.add_argument("--token-file", help="file with the server's bearer token")
    p.add_argument("--tls-ca", nargs="?", const="", default=None, metavar="PEM",
                   help="connect with TLS (optionally trusting this CA file)")


def read_token_file(path: str, option: str = "--token-file") -> str:
    """A token file's token (wire.read_token: the one reader of the client, the server
    and the plug-in), or UsageError naming the option and the file."""
    try:
        return wire.read_token(path)
    except OSError as e:
        raise UsageError(f"{option}: cannot read {path} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{option}: {path} is not a text file") from None
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None
