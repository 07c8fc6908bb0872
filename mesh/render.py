"""Render videos: ``python -m mesh.render``.

    --result pred.npz [--gt gt.npz] --out video.mp4 [--size 512] [--fps 30] [--views front,side] [--overlay]
    --checkpoint ckpt.pt --data data.pkl [--split test] [--sequence NAME] --out DIR
    --result OUT/person_*/result.npz --video clip.mp4 --out overlay.mp4     (mesh.infer results over the video)
    --result OUT/person_*/result.npz --canvas --out overlay.mp4             (the same on a blank canvas)

The renderer is :mod:`mesh.vis.renderer` (headless OpenGL); the videos are composed in :mod:`mesh.vis.compose`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from body_models import BodyModelFileError
from mesh.data.mesh_data import MeshDataError
from mesh.io.export import ResultFileError, load_result, load_result_camera
from mesh.io.video import VideoError
from mesh.vis.compose import VideoOptions, render_video, write_overlay
from mesh.vis.renderer import VIEW_ROTATIONS, RenderError
from motion.checkpoint import SHIPPED_MESH_MODEL, CheckpointError


def render_overlay(results: Sequence[str | Path], out: str | Path, video: str | Path | None = None,
                   fps: float | None = None, max_side: int = 1280, keypoints: bool = True,
                   views: Sequence[str] = (), log: Any = print) -> Path:
    """The meshes of ``mesh.infer`` results (one file per person, one run) over ``video``'s frames, or over a blank
    canvas of the recorded image size without a video, in the camera the results were placed in; with ``keypoints``
    the 2D input drawn on top, with ``views`` ('side', 'top') panels beside it."""
    from mesh.io.video import video_frames, video_info

    loaded = [load_result(p) for p in results]  # validated first: a broken file is named as such
    cams = [load_result_camera(p) for p in results]
    cam = cams[0]
    for path, other in zip(results[1:], cams[1:], strict=True):
        if not np.allclose(other.matrix, cam.matrix, rtol=1e-4):
            raise RenderError(f"{path}: placed in another camera than {results[0]} (overlay results of one "
                              "mesh.infer run)")
    width, height, background = cam.width, cam.height, None
    if video is not None:
        info = video_info(video)
        if not cam.size_assumed and (info.width, info.height) != (width, height):
            raise RenderError(f"{video}: {info.width} x {info.height} pixels, but {results[0]} was placed in a "
                              f"{width} x {height} image: is it the video the keypoints come from?")
        if cam.size_assumed:
            log(f"note: {results[0]} was placed in an assumed image (mesh.infer had no --video / --image-size): "
                "the mesh lines up with the keypoints, its distance is a guess")
        width, height, background, fps = info.width, info.height, video_frames(video), fps or info.fps
    return write_overlay(out, loaded, cam.matrix, width, height, background, fps, max_side, keypoints=keypoints,
                         views=views)


# ---------------------------------------------------------------------------------------------------------- CLI


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "track"


def render_from_checkpoint(checkpoint: str | Path, data: str | Path, out_dir: str | Path, split: str = "test",
                           sequence: str | None = None, options: VideoOptions | None = None,
                           fps: float = 30.0) -> list[Path]:
    """Predict every track of ``data[split]`` (or only ``sequence``) with ``checkpoint`` (clip 16, stride 8, flip
    test) and write ``DIR/<track>.mp4`` (ground truth | prediction) plus ``DIR/<track>.npz`` (the prediction)."""
    from body_models import load_body_model
    from mesh.data.mesh_data import read_mesh_split, require_same_conversion
    from mesh.inference.predict import require_camera_inputs
    from mesh.io.export import save_result, sequence_results
    from mesh.network.checkpoint import load_mesh_model
    from motion.data.transforms import normalisation_of

    for p, what in ((checkpoint, "checkpoint"), (data, "data file")):
        if not Path(p).is_file():
            raise RenderError(f"{p}: no such {what}")
    body = load_body_model()
    model, ckpt = load_mesh_model(checkpoint, body)
    ms = read_mesh_split(data, split, norm=normalisation_of(ckpt["metadata"]))
    try:
        require_same_conversion(ckpt["metadata"], ms, checkpoint)
        require_camera_inputs(model, ms)
    except ValueError as err:
        raise RenderError(str(err)) from None
    names = list(dict.fromkeys(ms.source.tolist()))
    if sequence is not None:
        if sequence not in names:
            raise RenderError(f"{data} [{split}]: no track {sequence!r} (first tracks: {', '.join(names[:5])})")
        names = [sequence]
    out_dir = Path(out_dir)
    written = []
    for name in names:
        result, gt = sequence_results(model, body, ms, name, fps)
        stem = out_dir / _safe_name(name)
        save_result(stem.with_suffix(".npz"), result)
        written.append(render_video(stem.with_suffix(".mp4"), result, gt, options))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mesh.render", description=__doc__.split("\n\n")[0])
    src = ap.add_argument_group("input (one of)")
    src.add_argument("--result", nargs="+", metavar="NPZ",
                     help="a result .npz (mesh.io.export format); with --video / --canvas: one or more mesh.infer "
                     "results of one run (person_*/result.npz), drawn together")
    src.add_argument("--checkpoint",
                     help="a mesh checkpoint (with --data); with --data alone: the shipped models/ssrstf_mesh.pt")
    ap.add_argument("--gt", help="ground-truth result .npz, shown beside the prediction (or over it: --overlay)")
    ap.add_argument("--data", help="mesh data file (with --checkpoint)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--sequence", help="only this track of the split")
    ap.add_argument("--out", required=True, help="video.mp4 (--result) or a folder (--checkpoint)")
    ap.add_argument("--size", type=int, default=512, help="panel size in pixels (even)")
    ap.add_argument("--fps", type=float, default=None, help="default: the result's fps (30 for --checkpoint)")
    ap.add_argument("--views", default="front",
                    help="comma-separated: front, side, top (with --video / --canvas: side and top panels beside the "
                    "overlay)")
    ap.add_argument("--overlay", action="store_true", help="ground truth translucent over the prediction")
    ap.add_argument("--no-keypoints", action="store_true",
                    help="no 2D keypoint panel (with --video / --canvas: no keypoints drawn over the frame)")
    ap.add_argument("--msaa", type=int, default=0, help="multisample anti-aliasing samples (0 = off, fastest)")
    cam = ap.add_argument_group("in the input camera (mesh.infer results)")
    cam.add_argument("--video", help="draw the meshes over this video's frames, pixel-aligned (the video the "
                     "keypoints come from)")
    cam.add_argument("--canvas", action="store_true",
                     help="draw the meshes in the input camera over a blank canvas of the image size (no video)")
    cam.add_argument("--max-side", type=int, default=1280, help="longest side of the overlay video in pixels")
    args = ap.parse_args(argv)
    try:
        views = tuple(v.strip() for v in args.views.split(",") if v.strip())
        bad = [v for v in views if v not in VIEW_ROTATIONS]
        if bad or not views:
            raise RenderError(f"--views: unknown view(s) {bad} (choose from {', '.join(VIEW_ROTATIONS)})")
        if args.size < 2 or args.size % 2:
            raise RenderError(f"--size must be a positive even number, got {args.size}")
        opt = VideoOptions(size=args.size, fps=args.fps, views=views, overlay=args.overlay,
                           keypoints=not args.no_keypoints, samples=args.msaa)
        if args.result is not None and args.checkpoint is not None:
            raise RenderError("give one of --result FILE.npz or --data FILE [--checkpoint CKPT], not both")
        if args.result is None and args.data is None:
            raise RenderError("give --result FILE.npz, or --data FILE (with the shipped model or --checkpoint CKPT)")
        if args.video is not None or args.canvas:
            if args.result is None or args.gt is not None:
                raise RenderError("--video / --canvas draw mesh.infer results: give --result person_*/result.npz "
                                  "(no --checkpoint, no --gt)")
            path = render_overlay(args.result, args.out, args.video, args.fps, args.max_side,
                                  keypoints=not args.no_keypoints, views=[v for v in views if v != "front"])
            print(f"wrote {path}")
            return 0
        if args.result is not None and len(args.result) > 1:
            raise RenderError("several --result files are drawn together only in the input camera: add --video FILE "
                              "or --canvas")
        if args.result is not None:
            pred = load_result(args.result[0])
            gt = load_result(args.gt) if args.gt else None
            if gt is not None and gt.faces.shape != pred.faces.shape:
                raise RenderError(f"{args.gt}: {len(gt.faces)} faces, the prediction has {len(pred.faces)}")
            path = render_video(args.out, pred, gt, opt)
            print(f"wrote {path}")
        else:
            checkpoint = args.checkpoint or SHIPPED_MESH_MODEL
            for path in render_from_checkpoint(checkpoint, args.data, args.out, args.split, args.sequence, opt,
                                               fps=args.fps or 30.0):
                print(f"wrote {path}")
    except (RenderError, ResultFileError, MeshDataError, CheckpointError, BodyModelFileError, VideoError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
