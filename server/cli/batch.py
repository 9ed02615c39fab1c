"""`style-transfer batch PHOTO [PHOTO ...] --style STYLE -o FOLDER`: many photos after
the same style(s) in one process: the network is loaded once and the style's Gram
matrices are computed once per working size (stylecore's style cache), not once a
photo. A photo whose result exists already is skipped (an interrupted batch resumes),
unless --overwrite; a photo that cannot be read or stylized is named and the others go
on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from ..errors import UsageError
from ..frames import IMAGES
from ..imageio import ImageError, read_image, shrink, write_image
from . import options as o


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="stylize many photos after the same style",
                       description="Stylize every PHOTO (files, or folders of images) after STYLE, loading the "
                                   "network once; results go to FOLDER under the photos' names.",
                       usage="%(prog)s PHOTO [PHOTO ...] --style STYLE [--style STYLE] -o FOLDER [options]")
    p.add_argument("photos", metavar="PHOTO", nargs="+", help="image files, or folders whose images are all taken")
    p.add_argument("--style", action="append", required=True, metavar="STYLE",
                   help="a style image; give it again to blend several (--style-blend)")
    p.add_argument("-o", "--output", required=True, metavar="FOLDER", help="where the results go (made if missing)")
    p.add_argument("--format", default="png", choices=("png", "jpg", "webp", "tif"),
                   help="the results' file type (default: png; 16-bit photos stay 16-bit in png and tif)")
    p.add_argument("--overwrite", action="store_true", help="stylize photos whose result exists already")
    o.add_local_options(p, "images")
    o.add_client_options(p, required=False)
    o.add_param_options(p)
    p.set_defaults(func=run)


def photos_of(paths: list[str]) -> list[Path]:
    """The photo files: each file as given, each folder's images in name order."""
    found = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGES)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not found:
        raise UsageError("no photos: the folders given hold no images")
    stems = {}
    for f in found:
        if f.stem in stems:
            raise UsageError(f"{f} and {stems[f.stem]} would both be written as {f.stem}: rename one")
        stems[f.stem] = f
    return found


def run(args: argparse.Namespace) -> int:
    from stylecore import Result
    from stylecore.buffers import depth_of, to_depth

    from .progress import ProgressBar

    params = o.params_from_args(args)
    photos = photos_of(args.photos)
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output {folder}: not a folder")
    styles = [read_image(s, args.max_pixels, "style") for s in args.style]
    style_files = {Path(s).resolve() for s in args.style}
    todo = []
    for photo in photos:
        out = folder / f"{photo.stem}.{args.format}"
        if photo.resolve() in style_files or out.resolve() == photo.resolve():
            raise UsageError(f"{photo}: is a style image or would be overwritten by its own result")
        if out.exists() and not args.overwrite:
            continue
        todo.append((photo, out))
    if not args.quiet and len(todo) < len(photos):
        print(f"{len(photos) - len(todo)} of {len(photos)} photos have results in {folder} already "
              "(--overwrite to redo them)", file=sys.stderr)
    if not todo:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    if args.server:
        if args.device:
            raise UsageError("--device: a server runs on the device it was started with; leave --device out "
                             "with --server")
        from .info import client

        remote = client(args)

        def events_of(content):
            return remote.stylize(content, styles, params, preset=args.preset)
    else:
        from stylecore import Engine

        from ..weights import load

        weights = load(args.weights, download=not args.no_download)
        if not args.quiet:
            print(f"weights: {weights.describe()}", file=sys.stderr)
        engine = Engine(weights.model)

        def events_of(content):
            return engine.run(content, styles, params, device=args.device or "auto")

    failed = []
    bar = ProgressBar(quiet=args.quiet)
    for n, (photo, out) in enumerate(todo, start=1):
        try:
            content = read_image(photo, args.max_pixels, "photo")
            if params.size and params.resize == "longest":
                content = shrink(content, params.size)
            if not args.quiet:
                print(f"photo {n}/{len(todo)}: {photo}", file=sys.stderr)
            for event in events_of(content):
                bar.update(event)
                if isinstance(event, Result):
                    bar.end_line()
                    bits = min(depth_of(content), 16 if args.format in ("png", "tif") else 8)
                    write_image(out, to_depth(event.image, bits))
        except (ImageError, ValueError) as e:  # this photo's fault: name it, go on with the others
            bar.end_line()
            failed.append(f"{photo}: {e}")
            print(f"style-transfer: {photo}: {e}", file=sys.stderr)
        except KeyboardInterrupt:
            bar.end_line()
            print(f"style-transfer: interrupted at {photo}; the results so far are in {folder}: run the same "
                  "command again to go on", file=sys.stderr)
            return o.EXIT_CANCELLED
    bar.end_line()
    if failed:
        print(f"style-transfer: {len(failed)} of {len(todo)} photos were not stylized", file=sys.stderr)
        return o.EXIT_FAILED
    if not args.quiet:
        print(f"wrote {len(todo)} results to {folder}", file=sys.stderr)
    return 0
