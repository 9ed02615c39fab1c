"""Sequences of frames on disk: videos (PyAV), animations (GIF, WebP: Pillow) and
folders of numbered images, read one frame at a time and written back in kind.

A sequence's stylized frames are written as they are made, as PNG files in a folder
(`frames_folder`): the output itself when it is a folder, else OUTPUT.frames beside
it, which is assembled into the video or animation at the end and then removed. A
run that stops (Ctrl-C, a crash, a power cut) leaves that folder, and the same
command resumes after the last frame in it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from .imageio import DEFAULT_MAX_PIXELS, ImageError, check_size, read_image, to_buffer, write_image

VIDEOS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
ANIMATIONS = (".gif", ".webp")
IMAGES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
FRAME_NAME = "frame_{:06d}.png"
_FRAME = re.compile(r"frame_(\d{6})\.png$")
# Video output: H.264 in yuv420p, what every player takes; its chroma is half-size,
# so an odd side is padded by repeating the last row or column (the video is then one
# pixel larger there than the frames).
VIDEO_CODEC, VIDEO_PIXELS = "libx264", "yuv420p"


@dataclass(frozen=True)
class Clip:
    """A sequence on disk: what it is, its frames' count and timing."""

    path: Path
    kind: str  # "video", "animation" or "folder"
    count: int
    size: tuple[int, int]  # (width, height)
    fps: Fraction | None = None  # video
    durations: tuple[int, ...] = ()  # animation: ms per frame
    loop: int = 0  # animation: 0 = forever
    files: tuple[Path, ...] = ()  # folder: the images, in order

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """The frames from index `start` on, (H, W, C) uint8 (a folder's images: any depth)."""
        if self.kind == "folder":
            for f in self.files[start:]:
                yield read_image(f, DEFAULT_MAX_PIXELS, "frame")
        elif self.kind == "animation":
            with Image.open(self.path) as im:
                for i, frame in enumerate(ImageSequence.Iterator(im)):
                    if i >= start:
                        yield to_buffer(frame.convert("RGBA" if _has_alpha(frame) else "RGB"), "frame")
        else:
            import av

            with av.open(str(self.path)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i >= start:
                        yield frame.to_ndarray(format="rgb24")


def _has_alpha(frame: Image.Image) -> bool:
    return frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info


def open_clip(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Clip:
    """Reads what a sequence is (not its frames). Raises ImageError naming what is wrong."""
    path = Path(path)
    if path.is_dir():
        files = tuple(sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGES and f.is_file()),
                             key=lambda f: _natural(f.name)))
        if not files:
            raise ImageError(f"{path}: a folder with no images ({', '.join(IMAGES)})")
        first = read_image(files[0], max_pixels, "frame")
        return Clip(path, "folder", len(files), (first.shape[1], first.shape[0]), files=files)
    if not path.is_file():
        raise ImageError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in ANIMATIONS:
        try:
            with Image.open(path) as im:
                count = getattr(im, "n_frames", 1)
                durations = []
                for frame in ImageSequence.Iterator(im):
                    durations.append(int(frame.info.get("duration", 100)))
                check_size(im.width, im.height, max_pixels, "frame")
                return Clip(path, "animation", count, im.size, durations=tuple(durations),
                            loop=int(im.info.get("loop", 0)))
        except (OSError, SyntaxError) as e:
            raise ImageError(f"{path}: not a readable animation ({e})") from None
    if suffix in VIDEOS:
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ImageError(f"{path}: has no video stream")
                stream = container.streams.video[0]
                width, height = stream.codec_context.width, stream.codec_context.height
                count = stream.frames or sum(1 for _ in container.decode(video=0))
                fps = stream.average_rate or stream.guessed_rate
        except av.error.FFmpegError as e:
            raise ImageError(f"{path}: not a readable video ({e})") from None
        check_size(width, height, max_pixels, "frame")
        return Clip(path, "video", count, (width, height), fps=Fraction(fps) if fps else Fraction(25))
    raise ImageError(f"{path}: a sequence is a video ({', '.join(VIDEOS)}), an animation "
                     f"({', '.join(ANIMATIONS)}) or a folder of images")


def _natural(name: str) -> list:
    """frame2 before frame10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def output_kind(output: Path) -> str:
    suffix = output.suffix.lower()
    if suffix in VIDEOS:
        return "video"
    if suffix in ANIMATIONS:
        return "animation"
    if suffix == "":
        return "folder"
    raise ImageError(f"output {output}: write a video ({', '.join(VIDEOS)}), an animation "
                     f"({', '.join(ANIMATIONS)}) or a folder (a name without an extension)")


def frames_folder(output: Path) -> Path:
    """Where the stylized frames are written as they are made (see the module doc)."""
    return output if output_kind(output) == "folder" else output.with_name(output.name + ".frames")


def frames_done(folder: Path) -> int:
    """How many frames a folder holds from the first on, without a gap (resuming)."""
    if not folder.is_dir():
        return 0
    numbers = {int(m.group(1)) for f in folder.iterdir() if (m := _FRAME.match(f.name))}
    n = 0
    while n + 1 in numbers:
        n += 1
    return n


def frame_path(folder: Path, index: int) -> Path:
    """The file of frame `index` (0-based)."""
    return folder / FRAME_NAME.format(index + 1)


def write_frame(folder: Path, index: int, image: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_image(frame_path(folder, index), image)  # written whole, then renamed (imageio)


def assemble(folder: Path, output: Path, clip: Clip, count: int, progress: Callable[[int], None] = lambda i: None
             ) -> None:
    """Writes the `count` frames in `folder` to `output` with the clip's timing: a video
    at its frame rate, an animation with its frames' durations and loop."""
    kind = output_kind(output)
    frames = (read_image(frame_path(folder, i), DEFAULT_MAX_PIXELS, "frame") for i in range(count))
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp{output.suffix}")
    try:
        if kind == "video":
            _write_video(tmp, frames, clip.fps or Fraction(25), progress)
        else:
            _write_animation(tmp, frames, clip, progress)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _write_video(path: Path, frames: Iterator[np.ndarray], fps: Fraction, progress) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = None
        for i, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame[:, :, :3])
            h, w = frame.shape[:2]
            if stream is None:
                stream = container.add_stream(VIDEO_CODEC, rate=fps)
                stream.width, stream.height = w + w % 2, h + h % 2  # yuv420p: even sides
                stream.pix_fmt = VIDEO_PIXELS
                stream.options = {"crf": "18"}  # visually lossless
            if w % 2 or h % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            progress(i)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)


def _write_animation(path: Path, frames: Iterator[np.ndarray], clip: Clip, progress) -> None:
    images = []
    for i, frame in enumerate(frames):
        images.append(Image.fromarray(frame))
        progress(i)
    durations = list(clip.durations[:len(images)]) or [100] * len(images)
    durations += [durations[-1]] * (len(images) - len(durations))
    fmt = "GIF" if path.suffix.lower() == ".gif" else "WEBP"
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=durations, loop=clip.loop,
                   **({"lossless": True} if fmt == "WEBP" else {}))
