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
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stylecore.params import DEVICES, PRESETS, ParamError, StyleParams, preset
from styletransfer.v1 import wire

from .errors import UsageError
from .imageio import (DEFAULT_MAX_PIXELS, ImageError, check_output_path, read_image, shrink, source_bits,
                      write_image)
from .limits import Limits

EXIT_USAGE = 2  # bad input: arguments, files, weights
EXIT_FAILED = 1  # the job itself failed
EXIT_CANCELLED = 130


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line naming the option
    (not the whole usage), with exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- options from the parameters dataclass --------------------------------------------


def _bytes(text: str) -> int:
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


def _positive_bytes(text: str) -> int:
    n = _bytes(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 bytes, got {text!r}")
    return n


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _count(lo: int, hi: int | None = None):
    """An argparse type: a whole number from lo (to hi)."""
    def parse(text: str) -> int:
        n = _int(text)
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"must be {f'{lo} to {hi}' if hi is not None else f'at least {lo}'}, "
                                             f"got {n}")
        return n
    return parse


_port = _count(0, 65535)


# gRPC takes durations in int32 milliseconds: 24 days at most; a week is plenty.
MAX_SECONDS = 7 * 24 * 3600


def _seconds(positive: bool = True):
    """An argparse type: seconds, finite, positive (or from 0), at most MAX_SECONDS."""
    def parse(text: str) -> float:
        v = _float(text)
        if not (0 < v if positive else 0 <= v) or not v <= MAX_SECONDS:  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be {'more than 0' if positive else '0 or more'} and at most "
                                             f"{MAX_SECONDS:,} seconds, got {text!r}")
        return v
    return parse


def _share(what: str, allow_auto: bool = False):
    """An argparse type: a finite share of a resource (0 or more; -1 = automatic where allowed)."""
    def parse(text: str) -> float:
        v = _float(text)
        if not (0 <= v < math.inf or (allow_auto and v == -1)):
            raise argparse.ArgumentTypeError(f"must be 0 or more {what}{' (or -1: automatic)' if allow_auto else ''}, "
                                             f"got {text!r}")
        return v
    return parse


_gpus, _cpus = _share("GPUs", allow_auto=True), _share("CPU cores")


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _size(text: str) -> int:
    """--size: px, or `full` (0): the photo's own size."""
    return 0 if text.strip().lower() == "full" else _int(text)


_PARSERS = {"int": _int, "float": _float, "str": str, "tuple[float, ...]": _float_list}
_FIELD_PARSERS = {"size": _size}  # fields whose option takes more than their type


def _defaults_help(name: str) -> str:
    """'default: 512; draft: 256, high: 1024, seed: 400': the default preset's value,
    then the other presets' where they differ."""
    base = _show(getattr(PRESETS["default"], name))
    others = [f"{p}: {_show(getattr(v, name))}" for p, v in PRESETS.items()
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
            default=None,
            metavar="{" + ",".join(choices) + "}" if choices else f.name.upper(),
            help=(f.metadata["help"] if "default:" in f.metadata["help"]
                  else f"{f.metadata['help']} ({_defaults_help(f.name)})").replace("%", "%%"),
        )


def params_from_args(args: argparse.Namespace) -> StyleParams:
    """The preset, with every option the user gave on top. Raises ParamError."""
    base = preset(args.preset)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(StyleParams)}
    return base.replace(**{k: v for k, v in changes.items() if v is not None})


# --- commands --------------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    print(presets_table())
    return 0


def presets_table() -> str:
    """Every option's value in each preset, in columns two spaces apart at least. A row
    whose value is the same in every preset and too wide for the columns is shown once."""
    rows = [(f.name, [_show(getattr(p, f.name)) for p in PRESETS.values()]) for f in dataclasses.fields(StyleParams)]
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


def _show(v: object) -> str:
    if isinstance(v, tuple):
        return ",".join(f"{x:g}" for x in v) or "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# A scale whose delivered objective ends more than this many times above where the
# scale started has diverged (each scale is compared with its own start: the style
# term grows with the image's size). Values below 1 count as 1, so a run that starts
# at (almost) zero is not flagged for moving a little.
DIVERGED_FACTOR = 10.0


class RunDiverged(UsageError):
    """The optimization made the image far worse: the parameters do not work (exit 2)."""


def _check_not_diverged(p, start: float) -> None:
    """At the last step of a scale: its delivered total against its first evaluation."""
    if p.best > DIVERGED_FACTOR * max(start, 1.0):
        raise RunDiverged(
            f"diverged: at scale {p.scale}/{p.scales} the objective ended at {p.best:.3g}, "
            f"{p.best / max(start, 1.0):.2g} times where it started ({start:.3g}); nothing was written. "
            "Try a smaller --lr, --clamp 1 or --optimizer lbfgs"
        )


def refuse_output_that_is_an_input(output: Path, inputs: Sequence[tuple[str, str]]) -> None:
    """Writing the result over an input would lose it: refuse the same file under any
    name (the same path, a symlink, a hard link) before any work."""
    for role, path in inputs:
        try:
            same = output.exists() and os.path.samefile(output, path)
        except OSError:
            continue  # a missing input is reported when it is read
        if same:
            raise UsageError(f"output {output}: is the {role} image {path}; choose another output file")


def _as_output(image, like):
    """A Preview's image ((h, w, 3) RGB at the current scale's size) in the result's
    layout: `like`'s size, gray when `like` is gray, `like`'s alpha bit for bit."""
    import numpy as np
    from PIL import Image

    h, w, c = like.shape
    img = Image.fromarray(np.ascontiguousarray(image[:, :, :3]))
    if img.size != (w, h):
        img = img.resize((w, h), Image.BICUBIC)
    if c <= 2:
        img = img.convert("L")  # ITU-R 601 luma, the engine's too
    pixels = np.asarray(img)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    if c in (2, 4):
        pixels = np.concatenate([pixels, like[:, :, -1:]], axis=2)
    return np.ascontiguousarray(pixels)


def interrupted_path(output: Path) -> Path:
    """Where Ctrl-C leaves the best image so far: OUT's name with .interrupted.png."""
    return output.with_name(f"{output.stem}.interrupted.png")


def cmd_stylize(args: argparse.Namespace) -> int:
    from .progress import ProgressBar

    params = params_from_args(args)
    if args.save_every < 0:
        raise UsageError(f"--save-every: must not be negative, got {args.save_every}")
    output = check_output_path(args.output)
    inputs = [("content", args.content), *(("style", s) for s in args.styles)]
    refuse_output_that_is_an_input(output, inputs + ([("initial image", args.init_image)] if args.init_image else []))
    content = read_image(args.content, args.max_pixels, "content")
    if not args.quiet and (bits := source_bits(args.content)) > 8:
        print(f"note: {args.content} has {bits} bits per channel; the result has 8", file=sys.stderr)
    styles = [read_image(p, args.max_pixels, "style") for p in args.styles]
    init = None
    if args.init_image:  # start from it (an earlier result, a run to continue): init "image"
        init = read_image(args.init_image, args.max_pixels, "initial image")
        params = params.replace(init="image")
    if not args.keep_size and params.resize == "longest" and params.size:
        # The output's longest side is --size (never enlarged); the engine then works
        # at the image's own size and alpha is carried through at that size. (With
        # --resize notebook the engine resizes as the notebook does, from the photo
        # itself, and the output keeps the photo's size, as with --keep-size.)
        content = shrink(content, params.size)
    if output.suffix.lower() in (".jpg", ".jpeg") and content.shape[2] in (2, 4):
        raise ImageError(f"output {output}: JPEG cannot store the content's transparency; write .png instead")

    bar = ProgressBar(quiet=args.quiet)
    # A Preview every step: the image the run would deliver now, kept for Ctrl-C (cheap
    # beside a VGG19 pass); only every --save-every-th is written.
    if args.server:
        events, engine_diverged = _remote_events(args, content, styles, params, init), ()
    else:
        events, engine_diverged = _local_events(args, content, styles, params, init)
    from stylecore.events import Preview, Progress, Result

    latest: Preview | None = None
    start = 0.0  # the first evaluation at the current scale
    try:
        for event in events:
            bar.update(event)
            if isinstance(event, Progress):
                start = event.losses.get("total", event.best) if event.step == 1 else start
                if event.step == event.steps:
                    _check_not_diverged(event, start)
            elif isinstance(event, Preview):
                latest = event
                if args.save_every and event.step % args.save_every == 0:
                    write_image(output.with_name(f"{output.stem}.scale{event.scale}.step{event.step:04d}.png"),
                                event.image)
            elif isinstance(event, Result):
                write_image(output, event.image)
                if not args.quiet:
                    print(f"wrote {output} ({event.image.shape[1]}x{event.image.shape[0]})", file=sys.stderr)
    except KeyboardInterrupt:
        bar.end_line()
        events.close()  # a remote job is cancelled now, not when the process exits
        if latest is None:
            print("style-transfer: interrupted before the first step; nothing was written", file=sys.stderr)
        else:
            saved = interrupted_path(output)
            write_image(saved, _as_output(latest.image, content))
            print(f"style-transfer: interrupted at scale {latest.scale}, step {latest.step}; wrote the best image "
                  f"so far to {saved} ({output} was not written)", file=sys.stderr)
        return EXIT_CANCELLED
    except engine_diverged as e:
        raise RunDiverged(f"diverged: {e}; nothing was written") from None
    finally:
        bar.end_line()
        events.close()
    return 0


def _local_events(args, content, styles, params, init=None):
    from stylecore import Engine
    from stylecore.engine import Diverged

    from .weights import load

    weights = load(args.weights, download=not args.no_download)
    if not args.quiet:
        print(f"weights: {weights.describe()}", file=sys.stderr)
    return Engine(weights.model).run(content, styles, params, preview_every=1, device=args.device or "auto",
                                     init_image=init), (Diverged,)


def _remote_events(args, content, styles, params, init=None):
    if args.device:
        raise UsageError("--device: a server runs on the device it was started with "
                         "(style-transfer serve --device); leave --device out with --server")
    client = _client(args)
    return client.stylize(content, styles, params, preset=args.preset,
                          preview_every=1, preview_max_side=max(content.shape[:2]), init_image=init)


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
    for d in info.get("devices", []):
        threads = f", {d['threads']} threads" if d.get("threads") else ""
        print(f"         {d['name']}: {d['state']}{threads}, {int(d['jobs'])} jobs, {d['busy_seconds']:.0f} s busy")
    print(f"model    {info['model']}{flag}")
    n = {k: int(float(v)) for k, v in limits.items()}  # int64 fields arrive as strings (proto3 JSON)
    print(f"limits   {n['max_pixels']:,} pixels per image, {n['max_work_pixels']:,} worked, "
          f"{_gib(n['max_job_bytes'])} per job; {n['max_styles']} styles and {_gib(n['max_request_bytes'])} "
          f"per request;\n         queue of {n['max_queue']}, {n['max_calls']} calls at once; uploads within "
          f"{float(limits['upload_seconds']):g} s at {n['min_upload_bytes_per_second'] // 1024} KiB/s or more, "
          f"in {n['chunk_bytes'] // 1024} KiB chunks")
    print(f"presets  {', '.join(p['name'] for p in info['presets'])}")
    return 0


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.3g} MiB"


def cmd_gimp(args: argparse.Namespace) -> int:
    import stylegimp

    plugins = Path(args.dir) if args.dir and args.dir.strip() else None
    if args.action == "install":
        try:
            where = stylegimp.describe_profile(plugins)
            target = stylegimp.install(plugins)
        except stylegimp.NoProfile as e:
            raise UsageError(str(e)) from None
        print(f"using the {where}")
        print(f"installed the GIMP plug-in in {target}")
        print("restart GIMP; it is under Filters > Artistic > Style Transfer... (start a server first: "
              "style-transfer serve)")
        return 0
    if args.action == "uninstall":
        try:
            removed = stylegimp.uninstall(plugins)
        except stylegimp.NoProfile as e:
            raise UsageError(str(e)) from None
        print(f"removed {removed}" if removed else "the plug-in was not installed there; nothing to do")
        return 0
    token = _read_text(args.token_file, "--token-file") if args.token_file else None
    checks = stylegimp.doctor(plugins, args.server or "127.0.0.1:50051", token=token, tls_ca=args.tls_ca)
    for ok, text in checks:
        print(f"[{'ok' if ok else '!!'}] {text}")
    return 0 if all(ok for ok, _ in checks) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    return run(args)


# --- parser and entry point ----------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="style-transfer",
        description="Neural style transfer (Gatys et al. 2016, VGG19) for GIMP and the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = sub  # main() lets the subcommand's parser report unknown options

    p = sub.add_parser("stylize", help="stylize an image", description="Stylize CONTENT after one or more STYLE images.",
                       usage="%(prog)s CONTENT STYLE [STYLE ...] -o OUT [options]")
    p.add_argument("content", metavar="CONTENT", help="the photograph (PNG, JPEG, WebP, TIFF, ...)")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s); blend them with --style-blend")
    p.add_argument("-o", "--output", required=True, help="result file (.png, .jpg, .webp, .tif)")
    p.add_argument("--weights", help=f"VGG19 weights file (default: ${'{'}STYLE_TRANSFER_WEIGHTS{'}'} or torch hub's cache)")
    p.add_argument("--no-download", action="store_true", help="never download the weights")
    p.add_argument("--init-image", metavar="FILE",
                   help="start from this image (an earlier result, or a run to continue), resized to each scale; "
                        "sets --init image")
    p.add_argument("--save-every", type=_int, default=0, metavar="N",
                   help="also write OUT.scaleS.stepNNNN.png every N steps (default: 0, none)")
    p.add_argument("--keep-size", action="store_true", help="output at the content's full size (work at --size, upscale)")
    p.add_argument("--max-pixels", type=_count(1), default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse images with more pixels (default: {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--device", default=None, choices=DEVICES,
                   help="where the local engine runs (default: auto, CUDA when present); with --server the server's own")
    _add_client_options(p, required=False)
    add_param_options(p)
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("serve", help="run the gRPC server", description="Serve style transfer over gRPC.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=50051, help="port (0: any free port; default 50051)")
    p.add_argument("--device", default=None, choices=DEVICES, help="where the network runs (default: auto)")
    p.add_argument("--devices", default=None, metavar="all|cuda:0,cuda:1|cpu|cpu:N",
                   help="one worker per device, all fed by one queue: all (every GPU), a list such as "
                        "cuda:0,cuda:1, cpu, or cpu:N (N CPU workers dividing the cores); default: --device")
    p.add_argument("--weights", help="VGG19 weights file (default: $STYLE_TRANSFER_WEIGHTS or torch hub's cache)")
    p.add_argument("--no-download", action="store_true", help="never download the weights")
    p.add_argument("--max-pixels", type=_count(1), default=Limits.max_pixels, metavar="N",
                   help=f"largest image accepted, pixels (default {Limits.max_pixels:,})")
    p.add_argument("--max-queue", type=_count(0), default=Limits.max_queue, metavar="N",
                   help=f"jobs that may wait for a device (default {Limits.max_queue})")
    p.add_argument("--token-file", help="require 'authorization: Bearer TOKEN' with the token in this file")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", help="... and this private key (PEM)")
    p.add_argument("--grace", type=_seconds(positive=False), default=10.0, help="seconds running jobs get at shutdown (default 10)")
    p.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics on --host (0: any free port; "
                        "default: none)")
    cg = p.add_argument_group("cluster (the `cluster` extra: Ray Serve)")
    cg.add_argument("--cluster", metavar="local|auto|HOST:PORT", default=None,
                    help="hand jobs to Ray Serve engine replicas: local (a private one-node Ray started here), "
                         "auto (the Ray cluster this node has joined with `ray start --address=...`), or that "
                         "cluster's GCS address (ray:// Ray Client addresses cannot stream and are refused)")
    cg.add_argument("--replicas", default="1", metavar="N|MIN:MAX",
                    help="engine replicas; MIN:MAX autoscales on ongoing requests (queued + running) (default 1)")
    cg.add_argument("--replica-gpus", type=_gpus, default=-1, metavar="G",
                    help="GPUs per replica (default: 1 where the cluster has GPUs, else 0)")
    cg.add_argument("--replica-cpus", type=_cpus, default=1, metavar="N",
                    help="CPU cores per replica; CPU replicas run on that many threads (default 1)")
    cg.add_argument("--attach", action="store_true",
                    help="never deploy the replicas: wait for the application another front or a KubeRay "
                         "RayService deployed (styleserver.cluster:build_app)")
    cg.add_argument("--ray-cpus", type=_count(1), default=None, metavar="N",
                    help="--cluster local: CPUs the private Ray may use (default: all)")
    lim = p.add_argument_group("limits (what one client may ask; all are reported by GetInfo)")
    lim.add_argument("--max-styles", type=_count(1), default=Limits.max_styles, metavar="N",
                     help=f"style images per job (default {Limits.max_styles})")
    lim.add_argument("--max-request-bytes", type=_positive_bytes, default=None, metavar="BYTES",
                     help="all images of one job together, e.g. 300M (default: 4 bytes x --max-pixels + 64 MiB)")
    lim.add_argument("--upload-seconds", type=_seconds(), default=Limits.upload_seconds, metavar="S",
                     help=f"an upload must be complete this long after the call began (default {Limits.upload_seconds:g})")
    lim.add_argument("--min-upload-rate", type=_bytes, default=Limits.min_upload_rate, metavar="BYTES",
                     help="slower uploads are ended, bytes per second averaged after the first second (default 256K)")
    lim.add_argument("--max-work-pixels", type=_count(1), default=Limits.max_work_pixels, metavar="N",
                     help="largest working image, every pyramid level and every style at --style-scale; "
                          "larger than fits in --max-job-bytes is worked tile by tile "
                          f"(default {Limits.max_work_pixels:,}: 24 MP photos at full resolution)")
    lim.add_argument("--max-job-bytes", type=_positive_bytes, default=Limits.max_job_bytes, metavar="BYTES",
                     help="memory budget of one job, estimated before it is accepted "
                          f"(default {Limits.max_job_bytes >> 30}G)")
    lim.add_argument("--max-calls", type=_count(1), default=Limits.max_calls, metavar="N",
                     help=f"Stylize calls at once, uploading, queued or running (default {Limits.max_calls})")
    lim.add_argument("--idle-seconds", type=_seconds(), default=Limits.idle_seconds, metavar="S",
                     help=f"close connections without calls after this long (default {Limits.idle_seconds:g})")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("gimp", help="install, remove or check the GIMP 3 plug-in",
                       description="Manage the GIMP 3 plug-in (Filters > Artistic > Style Transfer...).")
    p.add_argument("action", choices=("install", "uninstall", "doctor"))
    p.add_argument("--dir", help="GIMP's plug-ins folder (default: the one of your GIMP 3 profile)")
    p.add_argument("--server", help="doctor: the server address to check (default 127.0.0.1:50051)")
    p.add_argument("--token-file", help="doctor: file with the server's bearer token")
    p.add_argument("--tls-ca", nargs="?", const="", default=None, metavar="PEM",
                   help="doctor: connect with TLS (optionally trusting this CA file)")
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
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the subcommand's parser, whose --help lists what it takes
        parser.commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    from .client import ConnectionLost, RemoteError, ServerUnavailable
    from .weights import WeightsError

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


if __name__ == "__main__":
    sys.exit(main())
