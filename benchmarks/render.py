"""Rendering speed: frames/s of the naive pyrender loop vs ``mesh.render.MeshRenderer``, at 512 and 1024.

Cases: one mesh updated every frame (front view), and ground truth + prediction side by side (two meshes, two
panels). Frames are rendered to numpy (no video encoding). The mesh is the default body model posed differently in
every frame. Run: ``python benchmarks/render.py [--frames 60] [--sizes 512,1024] [--repeats 3]``; the best of the
repeats is reported (other processes share the CPU).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from body_models import load_body_model
from mesh.network.model import pose_body
from mesh.vis.renderer import (
    GT_COLOR,
    PRED_COLOR,
    Camera,
    Layer,
    MeshRenderer,
    NaivePyrenderRenderer,
    Panel,
    fit_cameras,
)


def _sequence(frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    body = load_body_model()
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(frames, 72, generator=g) * 0.15
    pose[:, :3] = torch.tensor([np.pi, 0.0, 0.0])  # upright in the camera frame
    from body_models.rotations import pose_to_rotmats

    out = pose_body(body, pose_to_rotmats(pose)[None], torch.zeros(1, frames, 10))
    return out.vertices[0].numpy().astype(np.float32), body.faces.numpy()


def _best_fps(fn: Callable[[int], object], frames: int, repeats: int) -> float:
    fn(0)  # warm-up (shader compile, buffers)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for k in range(frames):
            fn(k)
        best = max(best, frames / (time.perf_counter() - t))
    return best


def _cases(naive: NaivePyrenderRenderer, ours: MeshRenderer, pred: np.ndarray, gt: np.ndarray, faces: np.ndarray,
           cams: list[Camera]) -> list[tuple[str, Callable[[int], object], Callable[[int], object]]]:
    """(case, naive frame function, our frame function) pairs."""

    def naive_one(k: int) -> object:
        return naive.render([pred[k]], faces, cams[k])

    def ours_one(k: int) -> object:
        return ours.render(pred[k], cams[k])

    def naive_two(k: int) -> object:  # two renders, concatenated: what a naive side-by-side does
        return np.concatenate([naive.render([gt[k]], faces, cams[k], [GT_COLOR]),
                               naive.render([pred[k]], faces, cams[k], [PRED_COLOR])], axis=1)

    def ours_two(k: int) -> object:  # both meshes uploaded once, two panels, one read-back
        ours.set_meshes([pred[k], gt[k]])
        return ours.render_panels([Panel(cams[k], [Layer(1, GT_COLOR)]), Panel(cams[k], [Layer(0)])])

    return [("one mesh, front", naive_one, ours_one), ("GT | pred side by side", naive_two, ours_two)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    pred, faces = _sequence(args.frames, 0)
    gt, _ = _sequence(args.frames, 1)
    print(f"mesh: {pred.shape[1]} vertices, {len(faces)} faces; {args.frames} frames, best of {args.repeats}")
    print(f"{'case':<28}{'size':>6}{'naive fps':>12}{'ours fps':>12}{'ratio':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        cams = fit_cameras([pred, gt], "front", size, size)
        naive = NaivePyrenderRenderer(size, size)
        ours = MeshRenderer(faces, size, size)
        try:
            for case, a, b in _cases(naive, ours, pred, gt, faces, cams):
                fa = _best_fps(a, args.frames, args.repeats)
                fb = _best_fps(b, args.frames, args.repeats)
                print(f"{case:<28}{size:>6}{fa:>12.1f}{fb:>12.1f}{fb / fa:>7.1f}x", flush=True)
        finally:
            ours.close()
            naive.close()


if __name__ == "__main__":
    main()
