"""Fit the "fitted" detector -> H36M-17 keypoint conversion and write ``body_models/fitted_conversion.py``.

Why: the midpoint conversion (MotionBERT's: pelvis = mid-hip, head = mid-eye, shoulders = detector shoulders) puts
the H36M-17 keypoints several percent of the person's height away from the joint centres the network predicts:
detectors mark the top of the shoulder and the side of the hip, and the mid-eye point is not the head joint. The
network learns to undo that on average, but the offset stays in every comparison of 3D joints with 2D keypoints.

How: on synthetic sequences of the generator (``motion.synthetic``, version 4, seed below), each H36M-17 joint is
fitted, by least squares in 2D, as a weighted mean (weights sum to 1, so the rule is unchanged by translation, scale
and rotation of the image) of a few nearby detector keypoints: **simulated detections** (jitter, conventions, swaps
and all) against the **projected ground-truth joints**, each frame scaled by the person's size. Fitting to noisy
detections rather than clean landmarks keeps weights that would amplify detector noise out. Weights are pulled
towards the midpoint rule (ridge), made left/right symmetric, rounded to 3 decimals and pruned below 0.03.
OpenPose-18 rows are fitted on the Halpe-26 sequences (every OpenPose-18 point is a Halpe-26 point).

Usage (about a minute on 2 cores; deterministic):

    python scripts/fit_keypoint_conversion.py            # writes body_models/fitted_conversion.py, prints errors
    python scripts/fit_keypoint_conversion.py --check    # only prints the errors of the current table
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from body_models import load_body_model  # noqa: E402
from body_models.joint_sets import HALPE26, conversion_matrix, get_joint_set  # noqa: E402
from motion.synthetic import generate_sequence, sequence_rng, split_primitives  # noqa: E402

SEED, VERSION, STRIDE = 11, "4", 2
TRAIN_SEQUENCES, TEST_SEQUENCES = 300, 80
RIDGE, PRUNE = 1e-4, 0.03
OUT = ROOT / "body_models" / "fitted_conversion.py"

# Sources per H36M-17 joint, by keypoint name (names a format lacks are left out).
_TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "neck", "hip")
_FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
SOURCES = {
    "pelvis": _TORSO, "right_hip": _TORSO, "left_hip": _TORSO, "spine": _TORSO,
    "left_shoulder": _TORSO, "right_shoulder": _TORSO, "thorax": _TORSO + _FACE,
    "nose": (*_FACE, "left_shoulder", "right_shoulder", "head", "neck"),
    "head": (*_FACE, "left_shoulder", "right_shoulder", "head", "neck"),
    **{f"{s}_knee": (f"{s}_hip", f"{s}_knee", f"{s}_ankle") for s in ("left", "right")},
    **{f"{s}_ankle": (f"{s}_knee", f"{s}_ankle", f"{s}_big_toe", f"{s}_small_toe", f"{s}_heel")
       for s in ("left", "right")},
    **{f"{s}_elbow": (f"{s}_shoulder", f"{s}_elbow", f"{s}_wrist") for s in ("left", "right")},
    **{f"{s}_wrist": (f"{s}_elbow", f"{s}_wrist") for s in ("left", "right")},
}
FORMATS = ("coco17", "halpe26", "openpose18")


def collect(n: int, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Simulated detections (Halpe-26 layout, COCO-17 padded) and projected H36M-17 joints, per detector format."""
    body = load_body_model()
    out: dict[str, tuple[list, list]] = {"coco17": ([], []), "halpe26": ([], [])}
    for i in range(n):
        rng = sequence_rng(SEED, split, i)
        seq = generate_sequence(rng, body, f"fit_{split}_{i}", int(rng.integers(60, 301)),
                                primitives=split_primitives(split, VERSION))
        kp = seq.detector.keypoints[::STRIDE]
        fmt = "coco17" if kp.shape[1] == 17 else "halpe26"
        out[fmt][0].append(kp)
        out[fmt][1].append(seq.joints_2d_gt[::STRIDE])
    return {f: (np.concatenate(k), np.concatenate(j)) for f, (k, j) in out.items()}


def as_format(data: dict[str, tuple[np.ndarray, np.ndarray]], fmt: str) -> tuple[np.ndarray, np.ndarray]:
    if fmt != "openpose18":
        return data[fmt]
    kp, joints = data["halpe26"]
    order = [HALPE26.joint_names.index(n) for n in get_joint_set("openpose18").joint_names]
    return kp[:, order], joints


def normalise(kp: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre = joints.mean(1, keepdims=True)
    size = (joints.max(1) - joints.min(1)).max(-1)[:, None, None]
    return (kp[..., :2] - centre) / size, kp[..., 2], (joints - centre) / size


def fit(fmt: str, kp: np.ndarray, joints: np.ndarray) -> np.ndarray:
    names = get_joint_set(fmt).joint_names
    midpoint = conversion_matrix(fmt, "h36m17")
    x, conf, y = normalise(kp, joints)
    weights = np.zeros_like(midpoint)
    for t, target in enumerate(get_joint_set("h36m17").joint_names):
        src = [names.index(n) for n in SOURCES[target] if n in names]
        while True:  # fit; prune the tiny weights and fit again on what is left
            if len(src) == 1:
                w = np.ones(1)
                break
            ok = (conf[:, src] > 0.5).all(1)
            a = x[ok][:, src].transpose(0, 2, 1).reshape(-1, len(src))
            b = y[ok][:, t].reshape(-1)
            prior = midpoint[t, src] if abs(midpoint[t, src].sum() - 1) < 1e-9 else np.eye(len(src))[0]
            null = np.linalg.svd(np.ones((1, len(src))))[2][1:].T  # directions that keep the sum at 1
            z = np.linalg.solve((a @ null).T @ (a @ null) + RIDGE * len(a) * np.eye(len(src) - 1),
                                (a @ null).T @ (b - a @ prior))
            w = prior + null @ z
            if (np.abs(w) >= PRUNE).all():
                break
            src = [s for s, v in zip(src, w, strict=True) if abs(v) >= PRUNE]
        weights[t, src] = w
    flip_src, flip_dst = get_joint_set(fmt).flip_permutation, get_joint_set("h36m17").flip_permutation
    weights = 0.5 * (weights + weights[np.ix_(flip_dst, flip_src)])
    weights = np.round(weights / weights.sum(1, keepdims=True), 3)
    weights[np.abs(weights) < PRUNE] = 0.0
    biggest = np.abs(weights).argmax(1)
    weights[np.arange(17), biggest] += 1.0 - weights.sum(1)  # exact row sums after rounding
    return weights


def errors(mat: np.ndarray, kp: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Per-joint mean 2D distance (% of the person's size) from converted detections to the true joints, over
    keypoints whose converted confidence is above 0.3."""
    x, conf, y = normalise(kp, joints)
    err = np.linalg.norm(np.einsum("ts,nsd->ntd", mat, x) - y, axis=-1)
    used = np.stack([conf[:, np.abs(mat[t]) > 0].min(1) for t in range(17)], 1)
    return 100 * np.nanmean(np.where(used > 0.3, err, np.nan), axis=0)


def write(tables: dict[str, np.ndarray]) -> None:
    lines = ['"""Fitted detector -> H36M-17 keypoint weights (``conversion_matrix(..., method="fitted")``).', "",
             "Generated by ``python scripts/fit_keypoint_conversion.py`` (see its docstring for the fit); do not edit",
             'by hand. Each row: {source keypoint index: weight}, weights sum to 1."""', "",
             "FITTED_ROWS: dict[str, list[dict[int, float]]] = {"]
    for fmt, mat in tables.items():
        lines.append(f'    "{fmt}": [')
        for row in mat:
            items = ", ".join(f"{int(s)}: {float(row[s]):.3f}" for s in np.flatnonzero(row))
            lines.append(f"        {{{items}}},")
        lines.append("    ],")
    lines.append("}")
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(OUT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only print the current table's errors on the test split")
    args = ap.parse_args()
    test = collect(TEST_SEQUENCES, "test")
    train = None if args.check else collect(TRAIN_SEQUENCES, "train")
    tables = {}
    for fmt in FORMATS:
        mat = conversion_matrix(fmt, "h36m17", method="fitted") if args.check else fit(fmt, *as_format(train, fmt))
        tables[fmt] = mat
        old, new = errors(conversion_matrix(fmt, "h36m17"), *as_format(test, fmt)), errors(mat, *as_format(test, fmt))
        print(f"{fmt:10s} test keypoint -> joint error, % of person size: midpoint {old.mean():.2f}, "
              f"fitted {new.mean():.2f}  (per joint: "
              + " ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(old, new, strict=True)) + ")")
    if not args.check:
        write(tables)
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
