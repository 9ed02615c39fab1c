"""The `style-transfer` command.

    style-transfer stylize CONTENT STYLE [STYLE ...] -o OUT [--server HOST:PORT] [options]
    style-transfer serve [--host 127.0.0.1] [--port 50051] [options]
    style-transfer info --server HOST:PORT
    style-transfer presets

Every engine option is generated from the fields of stylecore.params.StyleParams,
so the CLI cannot drift from the engine. Bad input ends with one line on stderr
and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stylecore.params import PRESETS, ParamError, StyleParams, preset

from .errors import UsageError
from .imageio import DEFAULT_MAX_PIXELS, ImageError, check_output_path, read_image, shrink, write_image
from .limits import Limits

EXIT_USAGE = 2  # bad input: arguments, files, weights
EXIT_FAILED = 1  # the job itself failed
EXIT_CANCELLED = 130


# --- options from the parameters dataclass --------------------------------------------


def _bytes(text: str) -> int:
    """A byte count: 1234, 64K, 300M, 4G (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r} (e.g. 300M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return int(value)


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


_PARSERS = {"int": int, "float": float, "str": str, "tuple[float, ...]": _float_list}


def add_param_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine options (defaults come from --preset)")
    group.add_argument("--preset", default="default", help=f"starting values: {', '.join(PRESETS)} (default: default)")
    for f in dataclasses.fields(StyleParams):
        group.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=_PARSERS[str(f.type)], default=None,
            metavar=f.name.upper(), help=f.metadata["help"],
        )


def params_from_args(args: argparse.Namespace) -> StyleParams:
    """The preset, with every option the user gave on top. Raises ParamError."""
    base = preset(args.preset)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(StyleParams)}
    return base.replace(**{k: v for k, v in changes.items() if v is not None})


# --- commands --------------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    names = [f.name for f in dataclasses.fields(StyleParams)]
    print(f"{'option':<22}" + "".join(f"{p:>14}" for p in PRESETS))
    for name in names:
        cells = "".join(f"{_show(getattr(p, name)):>14}" for p in PRESETS.values())
        print(f"--{name.replace('_', '-'):<20}{cells}")
    return 0


def _show(v: object) -> str:
    if isinstance(v, tuple):
        return ",".join(f"{x:g}" for x in v) or "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def cmd_stylize(args: argparse.Namespace) -> int:
    from .progress import ProgressBar

    params = params_from_args(args)
    if args.save_every < 0:
        raise UsageError(f"--save-every: must not be negative, got {args.save_every}")
    if args.max_pixels < 1:
        raise UsageError(f"--max-pixels: must be positive, got {args.max_pixels}")
    output = check_output_path(args.output)
    content = read_image(args.content, args.max_pixels, "content")
    styles = [read_image(p, args.max_pixels, "style") for p in args.styles]
    if not args.keep_size and params.resize == "longest":
        # The output's longest side is --size (never enlarged); the engine then works
        # at the image's own size and alpha is carried through at that size. (With
        # --resize notebook the engine resizes as the notebook does, from the photo
        # itself, and the output keeps the photo's size, as with --keep-size.)
        content = shrink(content, params.size)
    if output.suffix.lower() in (".jpg", ".jpeg") and content.shape[2] in (2, 4):
        raise ImageError(f"output {output}: JPEG cannot store the content's transparency; write .png instead")

    bar = ProgressBar(quiet=args.quiet)
    if args.server:
        events = _remote_events(args, content, styles, params)
    else:
        events = _local_events(args, content, styles, params)
    from stylecore.events import Preview, Result

    for event in events:
        bar.update(event)
        if isinstance(event, Preview):
            write_image(output.with_name(f"{output.stem}.scale{event.scale}.step{event.step:04d}.png"), event.image)
        elif isinstance(event, Result):
            write_image(output, event.image)
            if not args.quiet:
                print(f"wrote {output} ({event.image.shape[1]}x{event.image.shape[0]})", file=sys.stderr)
    return 0


def _local_events(args, content, styles, params):
    from stylecore import Engine

    from .weights import load

    weights = load(args.weights, download=not args.no_download)
    if not args.quiet:
        print(f"weights: {weights.describe()}", file=sys.stderr)
    return Engine(weights.model).run(content, styles, params, preview_every=args.save_every)


def _remote_events(args, content, styles, params):
    client = _client(args)
    base = preset(args.preset)
    # --device is the server's business: it runs where it was started.
    return client.stylize(content, styles, params.replace(device=base.device), preset=args.preset,
                          preview_every=args.save_every, preview_max_side=max(content.shape[:2]))


def _client(args):
    from .client import Client

    token = _read_text(args.token_file, "--token-file") if args.token_file else None
    return Client(args.server, token=token, tls_ca=args.tls_ca)


def _read_text(path: str, option: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        raise UsageError(f"{option}: cannot read {path} ({e.strerror or e})") from None


def cmd_info(args: argparse.Namespace) -> int:
    info = _client(args).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    limits = info["limits"]
    flag = "" if info["model_verified"] else "   <-- NOT the ImageNet VGG19 weights: results are meaningless"
    print(f"server   {args.server} (version {info['server_version']})")
    print(f"device   {info['device']} ({info['dtype']})")
    print(f"model    {info['model']}{flag}")
    print(f"limits   {int(limits['max_pixels']):,} pixels per image, queue of {limits['max_queue']}, "
          f"{int(limits['chunk_bytes']) // 1024} KiB chunks")
    print(f"presets  {', '.join(p['name'] for p in info['presets'])}")
    return 0


def cmd_gimp(args: argparse.Namespace) -> int:
    import stylegimp

    plugins = Path(args.dir) if args.dir else None
    if args.action == "install":
        target = stylegimp.install(plugins)
        print(f"installed the GIMP plug-in in {target}")
        print("restart GIMP; it is under Filters > Artistic > Style Transfer... (start a server first: "
              "style-transfer serve)")
        return 0
    if args.action == "uninstall":
        removed = stylegimp.uninstall(plugins)
        print(f"removed {removed}" if removed else "the plug-in was not installed there; nothing to do")
        return 0
    checks = stylegimp.doctor(plugins, args.server or "127.0.0.1:50051")
    for ok, text in checks:
        print(f"[{'ok' if ok else '!!'}] {text}")
    return 0 if all(ok for ok, _ in checks) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    return run(args)


# --- parser and entry point ----------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="style-transfer",
        description="Neural style transfer (Gatys et al. 2016, VGG19) for GIMP and the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stylize", help="stylize an image", description="Stylize CONTENT after one or more STYLE images.")
    p.add_argument("content", metavar="CONTENT", help="the photograph (PNG, JPEG, WebP, TIFF, ...)")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s); blend them with --style-blend")
    p.add_argument("-o", "--output", required=True, help="result file (.png, .jpg, .webp, .tif)")
    p.add_argument("--weights", help=f"VGG19 weights file (default: ${'{'}STYLE_TRANSFER_WEIGHTS{'}'} or torch hub's cache)")
    p.add_argument("--no-download", action="store_true", help="never download the weights")
    p.add_argument("--save-every", type=int, default=0, metavar="N", help="also write the image every N steps")
    p.add_argument("--keep-size", action="store_true", help="output at the content's full size (work at --size, upscale)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_client_options(p, required=False)
    add_param_options(p)
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("serve", help="run the gRPC server", description="Serve style transfer over gRPC.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=50051, help="port (0: any free port; default 50051)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the network runs")
    p.add_argument("--weights", help="VGG19 weights file (default: $STYLE_TRANSFER_WEIGHTS or torch hub's cache)")
    p.add_argument("--no-download", action="store_true", help="never download the weights")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N", help="largest image accepted")
    p.add_argument("--max-queue", type=int, default=8, metavar="N", help="jobs that may wait for the device")
    p.add_argument("--token-file", help="require 'authorization: Bearer TOKEN' with the token in this file")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="... and this private key (PEM)")
    p.add_argument("--grace", type=float, default=10.0, help="seconds running jobs get at shutdown (default 10)")
    lim = p.add_argument_group("limits (what one client may ask; all are reported by GetInfo)")
    lim.add_argument("--max-styles", type=int, default=Limits.max_styles, metavar="N",
                     help=f"style images per job (default {Limits.max_styles})")
    lim.add_argument("--max-request-bytes", type=_bytes, default=None, metavar="BYTES",
                     help="all images of one job together, e.g. 300M (default: 4 bytes x --max-pixels + 64 MiB)")
    lim.add_argument("--upload-seconds", type=float, default=Limits.upload_seconds, metavar="S",
                     help=f"an upload must be complete this long after the call began (default {Limits.upload_seconds:g})")
    lim.add_argument("--min-upload-rate", type=_bytes, default=Limits.min_upload_rate, metavar="BYTES",
                     help="slower uploads are ended, bytes per second averaged after the first second (default 256K)")
    lim.add_argument("--max-work-pixels", type=int, default=Limits.max_work_pixels, metavar="N",
                     help="largest working image, every pyramid level and every style at --style-scale "
                          f"(default {Limits.max_work_pixels:,}: 1024x1024)")
    lim.add_argument("--max-job-bytes", type=_bytes, default=Limits.max_job_bytes, metavar="BYTES",
                     help="memory budget of one job, estimated before it is accepted (default 4G)")
    lim.add_argument("--max-calls", type=int, default=Limits.max_calls, metavar="N",
                     help=f"Stylize calls at once, uploading, queued or running (default {Limits.max_calls})")
    lim.add_argument("--idle-seconds", type=float, default=Limits.idle_seconds, metavar="S",
                     help=f"close connections without calls after this long (default {Limits.idle_seconds:g})")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("gimp", help="install, remove or check the GIMP 3 plug-in",
                       description="Manage the GIMP 3 plug-in (Filters > Artistic > Style Transfer...).")
    p.add_argument("action", choices=("install", "uninstall", "doctor"))
    p.add_argument("--dir", help="GIMP's plug-ins folder (default: the one of your GIMP 3 profile)")
    p.add_argument("--server", help="doctor: the server address to check (default 127.0.0.1:50051)")
    p.set_defaults(func=cmd_gimp)

    p = sub.add_parser("info", help="what a server runs", description="Ask a server what it runs and accepts.")
    _add_client_options(p, required=True)
    p.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("presets", help="list the presets and their values")
    p.set_defaults(func=cmd_presets)
    return parser


def _add_client_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--server", required=required, metavar="HOST:PORT",
                   help="use a style-transfer server instead of the local engine" if not required else "the server")
    p.add_argument("--token-file", help="file with the server's bearer token")
    p.add_argument("--tls-ca", nargs="?", const="", default=None, metavar="PEM",
                   help="connect with TLS (optionally trusting this CA file)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .client import RemoteError, ServerUnavailable
    from .weights import WeightsError

    try:
        return args.func(args)
    except (ParamError, ImageError, WeightsError, UsageError, ServerUnavailable) as e:
        print(f"style-transfer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RemoteError as e:
        print(f"style-transfer: the server refused the job: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nstyle-transfer: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if os.environ.get("STYLE_TRANSFER_DEBUG"):
            raise
        print(f"style-transfer: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
