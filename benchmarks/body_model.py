"""Body-model throughput: shape once per clip vs once per frame, and against smplx.SMPL.

Run: ``.venv/bin/python benchmarks/body_model.py [--clips 32] [--frames 16] [--repeats 10]``

Prints frames/s (median of repeats, float32, no autograd) for 1 and 2 threads:
- ``per-clip``: betas (B, 1, 10) against poses (B, T, 24, 3, 3): the shaped template and rest joints once per clip;
- ``per-frame``: the same betas expanded to (B, T, 10): blended once per frame;
- ``smplx.SMPL``: the reference implementation on the same SMPL-sized arrays (6890 vertices, with pose correctives).
Models: the embedded open default (no pose correctives) and an SMPL-sized random model of SMPL's exact shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import smplx
import torch
from smplx.utils import Struct

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_smpl import fake_smpl_arrays

from body_models import BodyModel, load_body_model
from body_models.loading import parse_model_arrays
from body_models.rotations import axis_angle_to_rotmat


def frames_per_second(fn: Callable[[], object], frames: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return frames / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    b, t = args.clips, args.frames
    g = torch.Generator().manual_seed(0)
    rot = axis_angle_to_rotmat(torch.randn(b, t, 24, 3, generator=g) * 0.3)
    betas = torch.randn(b, 1, 10, generator=g)
    betas_frame = betas.expand(b, t, 10).contiguous()

    arrays = fake_smpl_arrays(6890, seed=0)
    smpl_sized = BodyModel(parse_model_arrays(arrays | {"J_regressor_h36m": arrays["J_regressor"][:17]},
                                              Path("fake")))
    reference = smplx.SMPL("unused", data_struct=Struct(**arrays), num_betas=10)
    default = load_body_model()
    print(f"frames/s, float32, {b} clips x {t} frames = {b * t} frames per call; torch {torch.__version__}")
    print(f"{'model':<34}{'path':<12}{'1 thread':>10}{'2 threads':>11}")
    rows: list[tuple[str, str, Callable[[], object]]] = [
        (f"open default ({default.num_vertices} v, no correctives)", "per-clip", lambda: default(rot, betas)),
        (f"open default ({default.num_vertices} v, no correctives)", "per-frame", lambda: default(rot, betas_frame)),
        ("SMPL-sized (6890 v, correctives)", "per-clip", lambda: smpl_sized(rot, betas)),
        ("SMPL-sized (6890 v, correctives)", "per-frame", lambda: smpl_sized(rot, betas_frame)),
        ("SMPL-sized (6890 v, correctives)", "smplx.SMPL", lambda: reference(
            global_orient=rot[:, :, :1].reshape(-1, 1, 3, 3), body_pose=rot[:, :, 1:].reshape(-1, 23, 3, 3),
            betas=betas_frame.reshape(-1, 10), pose2rot=False)),
    ]
    results: dict[tuple[str, str], list[float]] = {}
    with torch.inference_mode():
        for name, path, fn in rows:
            speeds = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                speeds.append(frames_per_second(fn, b * t, args.repeats))
            results[(name, path)] = speeds
            print(f"{name:<34}{path:<12}{speeds[0]:>10.0f}{speeds[1]:>11.0f}")
    for name in {n for n, _ in results}:
        clip, frame = results[(name, "per-clip")], results[(name, "per-frame")]
        print(f"ratio per-clip / per-frame, {name}: {clip[0] / frame[0]:.2f}x (1 thread), "
              f"{clip[1] / frame[1]:.2f}x (2 threads)")
    ref = results[("SMPL-sized (6890 v, correctives)", "smplx.SMPL")]
    ours = results[("SMPL-sized (6890 v, correctives)", "per-clip")]
    print(f"ratio per-clip / smplx.SMPL (SMPL-sized): {ours[0] / ref[0]:.2f}x (1 thread), "
          f"{ours[1] / ref[1]:.2f}x (2 threads)")


if __name__ == "__main__":
    main()
