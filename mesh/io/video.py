"""Reading the user's video with imageio-ffmpeg: its size and frame rate, and its frames one at a time.

Frames are decoded lazily (one in memory at a time), so a video of any length can be read; a rotated phone video is
reported in the size ffmpeg displays it at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoError(RuntimeError):
    """The video cannot be read; the message is one line naming the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    duration_s: float


def video_info(path: str | Path) -> VideoInfo:
    """Size (as displayed), frame rate and duration of ``path``; :class:`VideoError` if it is not a readable video."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (RuntimeError, OSError, StopIteration) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise VideoError(f"{path}: not a readable video ({first})") from None
    width, height = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    if width <= 0 or height <= 0 or fps <= 0:
        raise VideoError(f"{path}: video reports size {width}x{height} and {fps} fps")
    return VideoInfo(str(path), int(width), int(height), fps, float(meta.get("duration") or 0.0))


def video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of ``path`` as ``(H, W, 3)`` uint8 RGB arrays, decoded one at a time."""
    import imageio_ffmpeg

    info = video_info(path)
    reader = imageio_ffmpeg.read_frames(info.path, pix_fmt="rgb24")
    try:
        next(reader)  # metadata
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(info.height, info.width, 3)
    finally:
        reader.close()
