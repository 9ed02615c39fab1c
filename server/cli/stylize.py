"""`style-transfer stylize CONTENT STYLE [STYLE ...] -o OUT`: the local engine, or a
server with --server (same options, same progress bar, same files)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stylecore.buffers import to_depth

from ..errors import UsageError
from ..imageio import (WRITABLE, ImageError, alpha_fits, check_output_path, format_code,
                       read_image, shrink, write_image)
from . import options as o
from .info import client


def add_parser(sub) -> None:
    p = sub.add_parser("stylize", help="stylize an image", description="Stylize CONTENT after one or more STYLE images.",
                       usage="%(prog)s CONTENT STYLE [STYLE ...] -o OUT [options]")
    p.add_argument("content", metavar="CONTENT", help="the photograph (PNG, JPEG, WebP, TIFF, ...)")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s); blend them with --style-blend")
    p.add_argument("-o", "--output", required=True, help="result file (.png, .jpg, .webp, .tif)")
    regions = p.add_argument_group("regions (a style per region, from masks) and depth")
    o.add_region_options(regions)
    regions.add_argument("--output-depth", type=int, choices=(8, 16, 32), default=None,
                         help="bits per channel of the result: 8, 16 or 32 (float, TIFF only) (default: the "
                              "content's, as far as the output format holds it: a 16-bit PNG gives a 16-bit PNG)")
    p.add_argument("--init-image", metavar="FILE",
                   help="start from this image (an earlier result, or a run to continue), resized to each scale; "
                        "sets --init image")
    p.add_argument("--save-every", type=o.whole, default=0, metavar="N",
                   help="also write OUT.scaleS.stepNNNN.png every N steps (default: 0, none)")
    p.add_argument("--keep-size", action="store_true", help="output at the content's full size (work at --size, upscale)")
    o.add_local_options(p)
    o.add_client_options(p, required=False)
    o.add_param_options(p)
    p.set_defaults(func=run)


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

    from stylecore.buffers import to_depth

    like = to_depth(like, 8)  # the preview is 8-bit: so is what is saved from it
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


def run(args: argparse.Namespace) -> int:
    from .progress import ProgressBar

    params = o.params_from_args(args)
    if args.save_every < 0:
        raise UsageError(f"--save-every: must not be negative, got {args.save_every}")
    output = check_output_path(args.output)
    inputs = [("content", args.content), *o.style_inputs(args)]
    refuse_output_that_is_an_input(output, inputs + ([("initial image", args.init_image)] if args.init_image else []))
    content = read_image(args.content, args.max_pixels, "content")
    styles, masks, sources = o.read_styles(args, content.shape[:2])
    depth = _output_depth(args, output, content)
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
        masks = [shrink(m, params.size) for m in masks]  # the content's new size: same sides, same rounding
    if not alpha_fits(WRITABLE[output.suffix.lower()], content.shape[2]):
        raise ImageError(f"output {output}: JPEG cannot store the content's transparency; write .png instead")

    bar = ProgressBar(quiet=args.quiet)
    # A Preview every step: the image the run would deliver now, kept for Ctrl-C (cheap
    # beside a VGG19 pass); only every --save-every-th is written.
    if args.server:
        events, engine_diverged = _remote_events(args, content, styles, params, init, masks, sources, depth), ()
    else:
        events, engine_diverged = _local_events(args, content, styles, params, init, masks, sources)
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
                write_image(output, to_depth(event.image, depth))
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
        return o.EXIT_CANCELLED
    except engine_diverged as e:
        raise RunDiverged(f"diverged: {e}; nothing was written") from None
    finally:
        bar.end_line()
        events.close()
    return 0


def _output_depth(args, output: Path, content) -> int:
    """The result's bits per channel: --output-depth, which the output's format must
    hold; else the content's, or the most the format holds below it (with a note)."""
    from stylecore.buffers import depth_of
    from styletransfer.v1 import wire

    held = wire.FORMAT_DEPTHS[format_code(WRITABLE[output.suffix.lower()])]
    if args.output_depth is not None:
        if args.output_depth not in held:
            raise UsageError(f"--output-depth {args.output_depth}: {output.suffix} files hold "
                             f"{' or '.join(map(str, held))} bits per channel; write "
                             f"{'.tif' if args.output_depth == 32 else '.png or .tif'} for {args.output_depth}")
        return args.output_depth
    bits = depth_of(content)
    depth = max(d for d in held if d <= bits)
    if depth < bits and not args.quiet:
        print(f"note: {args.content} has {bits} bits per channel; {output.suffix} holds {depth}: the result has "
              f"{depth} (write .tif{' or .png' if bits == 16 else ''} to keep {bits})", file=sys.stderr)
    return depth


def _local_events(args, content, styles, params, init=None, masks=(), sources=()):
    from stylecore import Engine
    from stylecore.engine import Diverged

    from ..weights import load

    weights = load(args.weights, download=not args.no_download)
    if not args.quiet:
        print(f"weights: {weights.describe()}", file=sys.stderr)
    return Engine(weights.model).run(content, styles, params, preview_every=1, device=args.device or "auto",
                                     init_image=init, style_masks=masks, style_guides=sources), (Diverged,)


def _remote_events(args, content, styles, params, init=None, masks=(), sources=(), depth=0):
    if args.device:
        raise UsageError("--device: a server runs on the device it was started with "
                         "(style-transfer serve --device); leave --device out with --server")
    remote = client(args)
    return remote.stylize(content, styles, params, preset=args.preset,
                          preview_every=1, preview_max_side=max(content.shape[:2]), init_image=init,
                          style_masks=masks, style_source_masks=sources, result_depth=depth)


