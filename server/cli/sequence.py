"""`style-transfer sequence INPUT STYLE [STYLE ...] -o OUTPUT`: a video, an animation
or a folder of frames, stylized frame by frame without flicker (stylecore/sequence.py),
written in kind. Stylized frames land in a folder as they are made (server/frames.py):
stopped, the same command resumes after the last one."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


from ..errors import UsageError
from ..frames import assemble, frame_path, frames_done, frames_folder, open_clip, output_kind, write_frame
from ..imageio import read_image, shrink
from . import options as o


def add_parser(sub) -> None:
    p = sub.add_parser("sequence", help="stylize a video, an animation or a folder of frames",
                       description="Stylize every frame of INPUT after STYLE, each frame held to the previous one "
                                   "along the optical flow (Ruder et al. 2016), so that the result does not flicker.",
                       usage="%(prog)s INPUT STYLE [STYLE ...] -o OUTPUT [options]")
    p.add_argument("input", metavar="INPUT", help="a video (.mp4, .mov, .mkv, .webm, .avi), an animation (.gif, "
                                                  ".webp) or a folder of images (in name order)")
    p.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s); blend them with --style-blend")
    p.add_argument("-o", "--output", required=True,
                   help="a video, an animation or a folder (a name without an extension): the frames as PNG files")
    p.add_argument("--restart", action="store_true",
                   help="start from the first frame even where an earlier run of this command left frames")
    p.add_argument("--keep-frames", action="store_true",
                   help="keep OUTPUT.frames (the stylized frames as PNG files) after writing a video or animation")
    o.add_region_options(p.add_argument_group("regions (a style per region, from masks: the same for every frame)"),
                         "the frames' size")
    o.add_local_options(p, "frames")
    o.add_client_options(p, required=False)
    o.add_param_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stylecore import Cancelled, Engine, FrameDone, FrameStarted, stylize_frames

    from ..weights import load
    from .progress import ProgressBar

    params = o.params_from_args(args)
    output = Path(args.output)
    kind = output_kind(output)
    if output.resolve() == Path(args.input).resolve():
        raise UsageError(f"output {output}: is the input; choose another output")
    clip = open_clip(args.input, args.max_pixels)
    styles, masks, sources = o.read_styles(args, clip.size[::-1])
    if params.size and params.resize == "longest":
        masks = [shrink(m, params.size) for m in masks]  # as each frame is shrunk: same sides, same rounding
    folder = frames_folder(output)
    if args.restart and folder.is_dir():
        for i in range(frames_done(folder)):
            frame_path(folder, i).unlink()
    start = frames_done(folder)
    if start > clip.count:
        raise UsageError(f"{folder} holds {start} frames, {args.input} has {clip.count}: another sequence's? "
                         "Give --restart or another output")

    def frames(first: int):
        for frame in clip.frames(first):
            yield shrink(frame, params.size) if params.size and params.resize == "longest" else frame

    previous = None
    if start:
        # Resuming: the frame before the first one left to do, and its stylized result.
        previous = (next(frames(start - 1)), read_image(frame_path(folder, start - 1), args.max_pixels, "frame"))
        if not args.quiet:
            print(f"resuming after frame {start} of {clip.count} ({folder})", file=sys.stderr)
    if start < clip.count:
        if args.server:
            if args.device:
                raise UsageError("--device: a server runs on the device it was started with; leave --device out "
                                 "with --server")
            from .info import client

            events = remote_frames(client(args), frames(start), styles, params, args.preset, clip.count, start,
                                   previous, masks, sources)
        else:
            weights = load(args.weights, download=not args.no_download)
            if not args.quiet:
                print(f"weights: {weights.describe()}", file=sys.stderr)
            events = stylize_frames(Engine(weights.model), frames(start), styles, params,
                                    device=args.device or "auto", count=clip.count, first_index=start,
                                    previous=previous, style_masks=masks, style_guides=sources)
        bar = ProgressBar(quiet=args.quiet)
        try:
            for event in events:
                if isinstance(event, FrameStarted):
                    bar.end_line()
                    if not args.quiet:
                        print(f"frame {event.index + 1}/{clip.count}", file=sys.stderr)
                elif isinstance(event, FrameDone):
                    write_frame(folder, event.index, event.image)
                    if not args.quiet:
                        flicker = "" if event.temporal_error is None else f", flicker {event.temporal_error:.3g}"
                        bar.end_line()
                        print(f"frame {event.index + 1} done in {event.elapsed:.1f} s ({event.steps} steps{flicker})",
                              file=sys.stderr)
                else:
                    bar.update(event)
        except (KeyboardInterrupt, Cancelled):
            bar.end_line()
            done = frames_done(folder)
            print(f"style-transfer: interrupted; {done} of {clip.count} frames are in {folder}: run the same "
                  "command again to go on from there", file=sys.stderr)
            return o.EXIT_CANCELLED
        finally:
            bar.end_line()
            events.close()
    if kind != "folder":
        assemble(folder, output, clip, clip.count)
        if not args.keep_frames:
            shutil.rmtree(folder)
    if not args.quiet:
        print(f"wrote {output} ({clip.count} frames)", file=sys.stderr)
    return 0


def remote_frames(remote, frames, styles, params, preset, count, first_index=0, previous=None, masks=(), sources=()):
    """stylize_frames' events, each frame a job on a server (contract v1.4): a frame after
    the first travels with the frame before it and that frame's result, and the server
    warps and holds it as stylize_frames does (no flicker figure: the client computes no
    flow)."""
    import time

    from stylecore import FrameDone, FrameStarted, Result

    prev_frame, prev_result = previous if previous is not None else (None, None)
    for index, frame in enumerate(frames, start=first_index):
        yield FrameStarted(index, count)
        t0, steps, result = time.perf_counter(), 0, None
        for event in remote.stylize(frame, styles, params, preset=preset, previous_frame=prev_frame,
                                    previous_result=prev_result, style_masks=masks, style_source_masks=sources):
            if isinstance(event, Result):
                result = event
            else:
                steps = getattr(event, "total_steps", steps)
                yield event
        yield FrameDone(index, result.image, result.losses, time.perf_counter() - t0, steps)
        prev_frame, prev_result = frame, result.image
