"""Does a prediction follow its 2D input? Weak-perspective reprojection residuals, with no ground truth needed.

For each frame, fit one scale and a 2D shift (least squares) that map the x, y of the predicted H36M-17 joints
(camera frame) onto the input keypoints with confidence above 0.3 (at least 6 of them), and take the mean distance
as a percentage of the keypoints' vertical extent. The same fit for the track's time-averaged pose gives the
reference: the ratio per-frame / track-mean is about 1.0 for a model that ignores its input, lower is better.

The residual compares joint *centres* with detector keypoints converted to H36M-17, and whatever offset the
conversion leaves between the two (with MotionBERT's midpoint rule: shoulder keypoints above the shoulder joints, the
mid-eye point below the head joint; the fitted rule removes most of it, docs/protocols.md) counts in every frame, so
even exact 3D joints leave a floor: ``--synthetic FILE`` measures it with the ground truth of synthetic tracks against
their simulated detections (converted by the file's own rule).

Usage::

    python -m mesh.evaluation.reprojection OUT/person_*/result.npz      # results written by mesh.infer
    python -m mesh.evaluation.reprojection --synthetic data/synthetic/mesh_synthetic.pkl --split test
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_CONFIDENCE = 0.3
MIN_KEYPOINTS = 6


def reprojection_residual(joints: np.ndarray, keypoints: np.ndarray, confidence: np.ndarray) -> float:
    """Weak-perspective residual of one frame, % of the confident keypoints' vertical extent (NaN if fewer than
    :data:`MIN_KEYPOINTS` keypoints have confidence above :data:`MIN_CONFIDENCE`).

    Args:
        joints: (J, >=2) predicted joints (x, y used; camera frame, any unit).
        keypoints: (J, 2) input keypoints, pixels. confidence: (J,).
    """
    keep = np.asarray(confidence) > MIN_CONFIDENCE
    if keep.sum() < MIN_KEYPOINTS:
        return float("nan")
    x = np.asarray(joints, dtype=np.float64)[keep, :2]
    k = np.asarray(keypoints, dtype=np.float64)[keep, :2]
    xc, kc = x - x.mean(0), k - k.mean(0)
    scale = (xc * kc).sum() / max((xc * xc).sum(), 1e-12)
    height = k[:, 1].max() - k[:, 1].min()
    return 100.0 * float(np.linalg.norm(scale * xc - kc, axis=1).mean()) / max(height, 1e-6)


@dataclass(frozen=True)
class TrackReprojection:
    """Mean residuals of a track (% of the 2D height): per-frame predictions, the track-mean pose, their ratio."""

    frames: int
    per_frame: float
    track_mean: float

    @property
    def ratio(self) -> float:
        """per_frame / track_mean (NaN for a track whose keypoints never move: nothing to follow)."""
        return self.per_frame / self.track_mean if self.track_mean > 0 else float("nan")


def track_reprojection(joints: np.ndarray, keypoints: np.ndarray, confidence: np.ndarray) -> TrackReprojection:
    """Residuals of a track: ``joints (T, J, 3)``, ``keypoints (T, J, 2)``, ``confidence (T, J)``."""
    joints = np.asarray(joints, dtype=np.float64)
    mean_pose = joints.mean(axis=0)
    per_frame = [reprojection_residual(joints[t], keypoints[t], confidence[t]) for t in range(len(joints))]
    static = [reprojection_residual(mean_pose, keypoints[t], confidence[t]) for t in range(len(joints))]
    return TrackReprojection(len(joints), float(np.nanmean(per_frame)), float(np.nanmean(static)))


def result_reprojection(path: str | Path) -> TrackReprojection:
    """Residuals of a ``mesh.infer`` result file (its ``joints_h36m`` against its ``keypoints_2d``)."""
    with np.load(path) as data:
        missing = {"joints_h36m", "keypoints_2d"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a mesh.infer result (no {', '.join(sorted(missing))})")
        kp = data["keypoints_2d"]
        return track_reprojection(data["joints_h36m"], kp[..., :2], kp[..., 2])


def ground_truth_floor(path: str | Path, split: str) -> list[TrackReprojection]:
    """Residuals of the exact ground-truth joints of each track of a synthetic mesh file's ``split`` against the
    simulated detections the network sees (its ``joint_2d`` and ``confidence``)."""
    from body_models import safe_load_pickle

    data = safe_load_pickle(path)
    if split not in data:
        raise ValueError(f"{path}: no split {split!r} (has {', '.join(k for k in data if k != 'meta')})")
    part = data[split]
    source = np.asarray(part["source"])
    return [track_reprojection(part["joint_cam"][source == name], part["joint_2d"][source == name],
                               part["confidence"][source == name][..., 0])
            for name in dict.fromkeys(source.tolist())]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.evaluation.reprojection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", help="result.npz files written by mesh.infer")
    parser.add_argument("--synthetic", metavar="PKL", help="synthetic mesh file: the ground truth's floor")
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    if not args.results and not args.synthetic:
        parser.error("give result.npz files or --synthetic FILE")
    try:
        for path in args.results:
            r = result_reprojection(path)
            print(f"{path}: {r.frames} frames, residual {r.per_frame:.2f} % of height per frame, "
                  f"{r.track_mean:.2f} % for the track-mean pose, ratio {r.ratio:.2f}")
        if args.synthetic:
            ratios = np.array([r.ratio for r in ground_truth_floor(args.synthetic, args.split)])
            q1, median, q3 = np.nanpercentile(ratios, [25, 50, 75])
            print(f"{args.synthetic} [{args.split}]: ground-truth joints against the simulated detections, "
                  f"{len(ratios)} tracks: ratio median {median:.2f} (quartiles {q1:.2f}-{q3:.2f})")
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
