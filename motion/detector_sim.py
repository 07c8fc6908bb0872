"""A simulated 2D pose detector: what COCO-17 / Halpe-26 detectors report for a person whose body surface we know.

Input: the detector landmarks of the posed body (:mod:`body_models.landmarks`, Halpe-26 order; COCO-17 is the first
17) in the camera frame, the SMPL joints (for self-occlusion) and the camera. Output: keypoints ``(T, J, 3)`` = x, y
pixels and a confidence, in the detector's own joint order, ready for the same conversion to H36M-17 that
``mesh.infer`` applies to real files (:func:`body_models.convert_keypoints`).

Error model (every rate and scale is per sequence, so sequences range from a clean to a poor detector):

- **jitter** scaled by the person's size in the image and by keypoint type (face points are precise, hips and
  extremities are not), part white, part slowly drifting, with a small constant per-keypoint bias (annotation
  conventions differ between datasets) and a floor of about a pixel (low-resolution people are noisier);
- **self-occlusion**: a keypoint whose line of sight passes through the body (a capsule model of torso, head and
  limbs) gets a larger error and a low confidence;
- **confidence** falls with the actual error, then a per-sequence calibration curve (detectors differ);
- **left/right swaps** in bursts (legs most often, arms, or the whole body), **missed joints** (bursts of very low
  confidence at a wrong position), rare **outliers** (a keypoint jumps elsewhere on the body for a frame);
- **truncation**: keypoints outside the image are pulled to the border with a confidence near zero.

Before any of that, :func:`annotation_convention` moves the shoulder, hip and ankle landmarks on the body by a
per-sequence offset (:data:`CONVENTION_RANGES_M`): detectors and their training annotations disagree by several
centimetres on where these points are (real COCO detections put the hips lower and the shoulders narrower, relative
to the torso, than the rest-pose landmarks do), and a network trained on one convention misreads another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from body_models.joint_sets import HALPE26
from motion.synthetic_poses import smooth_noise

# Jitter std as a fraction of the person's size (max of box width, height), per Halpe-26 keypoint.
_FRAC = {"nose": 0.006, "eye": 0.005, "ear": 0.008, "shoulder": 0.011, "elbow": 0.013, "wrist": 0.016,
         "hip": 0.017, "knee": 0.014, "ankle": 0.015, "head": 0.012, "neck": 0.011, "toe": 0.018, "heel": 0.018}


def _frac(name: str) -> float:
    if name == "hip":
        return _FRAC["hip"]
    for key, value in _FRAC.items():
        if key in name:
            return value
    raise KeyError(name)


JITTER_FRAC = np.array([_frac(n) for n in HALPE26.joint_names])
FLIP26 = np.array(HALPE26.flip_permutation)
_IDX = {n: i for i, n in enumerate(HALPE26.joint_names)}
SWAP_GROUPS = {  # keypoints that swap together in a left/right confusion
    "legs": [_IDX[f"{s}_{k}"] for s in ("left", "right") for k in ("knee", "ankle", "big_toe", "small_toe", "heel")],
    "arms": [_IDX[f"{s}_{k}"] for s in ("left", "right") for k in ("elbow", "wrist")],
    "body": [i for i in range(26) if FLIP26[i] != i],
}

# Capsules of the self-occlusion model: (SMPL joint a, SMPL joint b, radius m).
CAPSULES = ((0, 9, 0.12), (9, 12, 0.09), (15, 15, 0.095), (1, 2, 0.09), (16, 17, 0.06), (16, 18, 0.05),
            (17, 19, 0.05), (18, 20, 0.04), (19, 21, 0.04), (1, 4, 0.075), (2, 5, 0.075), (4, 7, 0.05), (5, 8, 0.05))
OCCLUSION_DEPTH = 0.05  # m: a keypoint is hidden when its line of sight meets the body this far in front of it


# Per-sequence annotation-convention offsets, metres, drawn uniformly (same for both sides, plus 5 mm per side):
# along the torso axis (pelvis -> neck; up > 0 / down > 0), outward along the shoulder or hip line, and up the shin
# (ankle -> knee). The ranges cover the rest-pose landmarks (offset 0) and are centred on what real AlphaPose COCO-17
# detections show on upright, front-facing people (medians over about 8 people in public files: shoulder width 0.55-0.59
# and hip width 0.38-0.41 of the shoulder-to-hip length, that length 0.69-0.71 of the hip-to-ankle length, thigh
# 1.08 x the shin; the rest landmarks give 0.76, 0.48, 0.57 and 0.95).
CONVENTION_RANGES_M = {"shoulder_up": (0.0, 0.05), "shoulder_out": (-0.06, 0.0), "hip_down": (-0.02, 0.08),
                       "hip_out": (-0.035, 0.01), "ankle_up": (0.0, 0.06)}
_SIDE_SPREAD_M = 0.005
_H = {name: i for i, name in enumerate(HALPE26.joint_names)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def annotation_convention(rng: np.random.Generator, landmarks: np.ndarray, smpl_joints: np.ndarray
                          ) -> tuple[np.ndarray, dict[str, float]]:
    """Move the shoulder, hip and ankle landmarks by one sequence's annotation convention.

    Args:
        landmarks: (T, 26, 3) posed Halpe-26 landmarks (any frame in which ``smpl_joints`` are given).
        smpl_joints: (T, 24, 3) the posed SMPL joints in the same frame (they give the body's axes per frame, so the
            offsets follow the body: "down" is down the torso whether the person stands or lies).

    Returns:
        the moved landmarks (a copy; Halpe's mid-hip follows the two hips) and the drawn offsets (metres).
    """
    draw = {k: float(rng.uniform(*r)) for k, r in CONVENTION_RANGES_M.items()}
    J = smpl_joints
    up = _unit(J[:, 12] - J[:, 0])
    out = landmarks.copy()
    for sign, (sho, hip, ank), (j_knee, j_ank) in ((1.0, (5, 11, 15), (4, 7)), (-1.0, (6, 12, 16), (5, 8))):
        jitter = rng.normal(0.0, _SIDE_SPREAD_M, size=5)
        shoulder_line = sign * _unit(J[:, 16] - J[:, 17])
        hip_line = sign * _unit(J[:, 1] - J[:, 2])
        out[:, sho] += (draw["shoulder_up"] + jitter[0]) * up + (draw["shoulder_out"] + jitter[1]) * shoulder_line
        out[:, hip] += -(draw["hip_down"] + jitter[2]) * up + (draw["hip_out"] + jitter[3]) * hip_line
        out[:, ank] += (draw["ankle_up"] + jitter[4]) * _unit(J[:, j_knee] - J[:, j_ank])
    out[:, _H["hip"]] = 0.5 * (out[:, _H["left_hip"]] + out[:, _H["right_hip"]])
    return out, draw


def _segment_distance(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Closest distance between segments ``p0 p1`` and ``q0 q1`` (broadcast ``(..., 3)``) and the parameter
    ``s`` in [0, 1] of the closest point on the first segment."""
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a = (d1 * d1).sum(-1)
    e = (d2 * d2).sum(-1)
    f = (d2 * r).sum(-1)
    c = (d1 * r).sum(-1)
    b = (d1 * d2).sum(-1)
    denom = np.maximum(a * e - b * b, 1e-12)
    s = np.clip(np.where(e > 1e-12, (b * f - c * e) / denom, -c / np.maximum(a, 1e-12)), 0.0, 1.0)
    t = np.where(e > 1e-12, (b * s + f) / np.maximum(e, 1e-12), 0.0)
    t_clip = np.clip(t, 0.0, 1.0)
    s = np.where(t != t_clip, np.clip((b * t_clip - c) / np.maximum(a, 1e-12), 0.0, 1.0), s)
    gap = p0 + d1 * s[..., None] - (q0 + d2 * t_clip[..., None])
    return np.linalg.norm(gap, axis=-1), s


def self_occlusion(landmarks_cam: np.ndarray, joints_cam: np.ndarray) -> np.ndarray:
    """``(T, L)`` bool: the keypoint's line of sight from the camera centre meets a body capsule at least
    :data:`OCCLUSION_DEPTH` in front of it.

    Args:
        landmarks_cam: (T, L, 3) keypoints in the camera frame, metres; joints_cam: (T, 24, 3) SMPL joints.
    """
    a = joints_cam[:, [c[0] for c in CAPSULES]][:, None]  # (T, 1, K, 3)
    b = joints_cam[:, [c[1] for c in CAPSULES]][:, None]
    radius = np.array([c[2] for c in CAPSULES])
    p1 = landmarks_cam[:, :, None]  # (T, L, 1, 3)
    dist, s = _segment_distance(np.zeros_like(p1), p1, a, b)
    depth_before = (1.0 - s) * np.linalg.norm(p1, axis=-1)
    return ((dist < radius) & (depth_before > OCCLUSION_DEPTH + radius)).any(axis=-1)


@dataclass
class DetectorOutput:
    """Simulated detections of one sequence (T frames, J = 17 for COCO, 26 for Halpe).

    Attributes:
        keypoints: (T, J, 3) x, y pixels, confidence in [0, 1].
        fmt: 'coco17' or 'halpe26'.
        occluded: (T, J) self-occluded keypoints; swapped / missed / outlier / truncated: (T, J) bool each.
    """

    keypoints: np.ndarray
    fmt: str
    occluded: np.ndarray
    swapped: np.ndarray
    missed: np.ndarray
    outlier: np.ndarray
    truncated: np.ndarray


def _bursts(rng: np.random.Generator, T: int, rate: float, min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Random ``[start, end)`` bursts: starts at ``rate`` per frame, lengths uniform in [min_len, max_len]."""
    starts = np.flatnonzero(rng.random(T) < rate)
    return [(int(t0), int(min(T, t0 + rng.integers(min_len, max_len + 1)))) for t0 in starts]


def simulate_detector(rng: np.random.Generator, landmarks_2d: np.ndarray, landmarks_cam: np.ndarray,
                      joints_cam: np.ndarray, image_wh: tuple[int, int], fmt: str) -> DetectorOutput:
    """Detector-like keypoints from exact landmark projections.

    Args:
        landmarks_2d: (T, 26, 2) exact projections (pixels) of the Halpe-26 landmarks.
        landmarks_cam: (T, 26, 3) the same in the camera frame (for self-occlusion); joints_cam: (T, 24, 3).
        image_wh: image size in pixels (truncation at its border).
        fmt: 'coco17' (keeps the first 17 keypoints) or 'halpe26'.
    """
    if fmt not in ("coco17", "halpe26"):
        raise ValueError(f"fmt must be 'coco17' or 'halpe26', got {fmt!r}")
    T = len(landmarks_2d)
    ext = np.ptp(landmarks_2d, axis=1).max(axis=1).clip(min=10.0)  # (T,) person size, px
    size = ext[:, None]
    quality = rng.uniform(0.5, 1.7)
    difficulty = np.exp(0.3 * smooth_noise(rng, T, 1, sigma_s=1.0))
    sigma = np.maximum(JITTER_FRAC[None] * size, 0.8) * quality * difficulty  # (T, 26) px
    occluded = self_occlusion(landmarks_cam, joints_cam)
    sigma = np.where(occluded, sigma * rng.uniform(1.5, 3.0), sigma)
    eps = 0.6 * rng.standard_normal((T, 26, 2)) + 0.8 * smooth_noise(rng, T, 52, sigma_s=0.15).reshape(T, 26, 2)
    bias = rng.normal(0.0, 0.006, size=(26, 2)) * np.median(ext)
    xy = landmarks_2d + sigma[..., None] * eps + bias
    swapped = np.zeros((T, 26), dtype=bool)
    for group, rate in (("legs", rng.uniform(0.0, 0.006)), ("arms", rng.uniform(0.0, 0.003)),
                        ("body", rng.uniform(0.0, 0.002))):
        members = SWAP_GROUPS[group]
        for t0, t1 in _bursts(rng, T, rate, 2, 20):
            xy[t0:t1, members] = xy[t0:t1][:, FLIP26[members]]
            swapped[t0:t1, members] = True
    err = np.linalg.norm(xy - landmarks_2d, axis=-1)
    tau = 0.035 * size
    conf = rng.uniform(0.8, 1.0) * np.exp(-0.5 * (err / tau) ** 2) - np.abs(rng.normal(0.0, 0.03, size=(T, 26)))
    conf = np.where(occluded, conf * rng.uniform(0.15, 0.6, size=(T, 26)), conf)
    missed = np.zeros((T, 26), dtype=bool)
    miss_rate = rng.uniform(0.0005, 0.004)
    for j in range(26):
        for t0, t1 in _bursts(rng, T, miss_rate * (2.0 if JITTER_FRAC[j] > 0.014 else 1.0), 1, 12):
            xy[t0:t1, j] = landmarks_2d[t0:t1, j] + 0.1 * size[t0:t1] * rng.standard_normal((t1 - t0, 2))
            conf[t0:t1, j] = rng.uniform(0.0, 0.12, size=t1 - t0)
            missed[t0:t1, j] = True
    outlier = rng.random((T, 26)) < rng.uniform(0.0, 0.002)
    n_out = int(outlier.sum())
    if n_out:
        t_idx = np.nonzero(outlier)[0]
        xy[outlier] = landmarks_2d[t_idx, rng.integers(0, 26, n_out)] + 0.05 * ext[t_idx, None] * rng.standard_normal(
            (n_out, 2))
        conf[outlier] = rng.uniform(0.1, 0.5, n_out)
    w, h = image_wh
    outside = (landmarks_2d[..., 0] < 0) | (landmarks_2d[..., 0] > w) | (landmarks_2d[..., 1] < 0) | (
        landmarks_2d[..., 1] > h)
    inside = np.stack([np.clip(xy[..., 0], 0, w - 1), np.clip(xy[..., 1], 0, h - 1)], axis=-1)
    xy = np.where(outside[..., None], inside + rng.normal(0.0, 2.0, size=xy.shape), xy)
    conf = np.where(outside, rng.uniform(0.0, 0.15, size=(T, 26)), conf)
    gamma = rng.uniform(0.6, 1.6)  # per-sequence confidence calibration: detectors' scores are not comparable
    conf = np.clip(conf, 0.0, 1.0) ** gamma
    n = 17 if fmt == "coco17" else 26
    kp = np.concatenate([xy, conf[..., None]], axis=-1)[:, :n]
    return DetectorOutput(keypoints=kp, fmt=fmt, occluded=occluded[:, :n], swapped=swapped[:, :n],
                          missed=missed[:, :n], outlier=outlier[:, :n], truncated=outside[:, :n])
