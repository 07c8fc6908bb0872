"""End-to-end in-the-wild inference speed: keypoints file -> result.npz + mesh.glb (+ render.mp4), frames/s.

A ~300-frame single-person COCO-17 track (MMPose JSON layout, a procedurally swaying and stepping figure) is run
through :func:`mesh.infer.run_inference` with random-weight SSR-STF-XS and SSR-STF-B mesh models (built and saved
like the tests: the speed does not depend on the weights), with and without the video. Defaults as the CLI: clip
length 16 (stride 8), flip test, shape pooled over the track, no smoothing, 512-pixel panels.

Stages: read (parse + convert + fill + normalise), load (checkpoint + body model), network (windows + flip test,
including the body model inside the network's forward), body (shape pooling, re-posing, parameters), export (npz +
glb), render (mp4); and refine (``--refine``: the test-time fit to the keypoints, a case of its own without rendering).
Run: ``python benchmarks/infer.py [--frames 300] [--models XS,B] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from body_models import load_body_model, load_mean_params
from mesh.infer import InferOptions, run_inference
from mesh.network.checkpoint import save_mesh_model
from mesh.network.head import HeadConfig
from mesh.network.model import MeshRecovery
from motion.encoders import build_encoder

W, H = 1920, 1080
# COCO-17 rest layout (pixels, a 400-pixel-tall person)
_BASE = np.array([[0, -160], [8, -168], [-8, -168], [16, -164], [-16, -164], [40, -120], [-40, -120], [50, -60],
                  [-50, -60], [55, 0], [-55, 0], [20, 0], [-20, 0], [22, 80], [-22, 80], [24, 160], [-24, 160]],
                 dtype=np.float64)


def make_track(path: Path, frames: int) -> Path:
    """Write a ``frames``-long MMPose-layout JSON of one person swaying, swinging arms and stepping."""
    out = []
    for i in range(frames):
        ph = 2 * np.pi * i / 40
        kp = _BASE.copy()
        kp[[7, 9], 1] += 25 * np.sin(ph) * np.array([1, 2])  # left arm
        kp[[8, 10], 1] -= 25 * np.sin(ph) * np.array([1, 2])
        kp[[13, 15], 0] += 20 * np.sin(ph) * np.array([1, 2])  # legs
        kp[[14, 16], 0] -= 20 * np.sin(ph) * np.array([1, 2])
        kp += [900 + 150 * np.sin(2 * np.pi * i / 300), 540 + 10 * np.sin(ph * 2)]
        out.append({"frame_id": i, "instances": [{"keypoints": kp.round(2).tolist(),
                                                  "keypoint_scores": [0.9] * 17, "track_id": 0}]})
    path.write_text(json.dumps({"meta_info": {"dataset_name": "coco"}, "image_size": [W, H], "fps": 30,
                                "instance_info": out}))
    return path


def make_checkpoint(path: Path, variant: str) -> Path:
    torch.manual_seed(0)
    model = MeshRecovery(build_encoder("ssrstf", {"variant": variant}), load_body_model(), load_mean_params(),
                         HeadConfig())
    save_mesh_model(path, model, "ssrstf", {"run_config": {"data": {"clip_len": 16}}})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--models", default="XS,B", help="comma-separated SSR-STF variants")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--render-size", type=int, default=512)
    ap.add_argument("--no-render-case", action="store_true", help="skip the cases with rendering")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.frames} frames, "
          f"render {args.render_size}px")
    header = (f"{'model':>5} {'case':>6} {'total s':>8} {'fps':>7} | {'read':>6} {'load':>6} {'network':>8} "
              f"{'body':>6} {'refine':>7} {'export':>7} {'render':>7}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        kp = make_track(tmp_path / "kp.json", args.frames)
        for variant in [v.strip() for v in args.models.split(",") if v.strip()]:
            ckpt = make_checkpoint(tmp_path / f"{variant}.pt", variant)
            cases = ["plain", "refine"] + ([] if args.no_render_case else ["render"])
            for case in cases:
                opt = InferOptions(render=case == "render", refine=case == "refine", render_size=args.render_size,
                                   device="cpu")
                t0 = time.perf_counter()
                run_inference(kp, ckpt, tmp_path / f"out_{variant}_{case}", opt, log=lambda *a: None)
                total = time.perf_counter() - t0
                t = opt.timings
                rows.append(f"{variant:>5} {case:>6} {total:8.2f} {args.frames / total:7.1f} | "
                            f"{t['read']:6.2f} {t['load']:6.2f} {t['network']:8.2f} {t['body']:6.2f} "
                            f"{t['refine']:7.2f} {t['export']:7.2f} {t['render']:7.2f}")
                print(rows[-1] if len(rows) > 1 else f"{header}\n{rows[-1]}", flush=True)


if __name__ == "__main__":
    main()
