"""Camera-space placement: intrinsics and per-frame translation from 2D keypoints (mesh.camera)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from mesh.camera import intrinsics_for, place_in_camera, project


def _walk(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Root-relative joints of a rigid 17-joint figure and a path walking towards the camera from 8 m to 3 m."""
    rng = np.random.default_rng(seed)
    figure = rng.normal(0, 0.25, (17, 3)) * np.array([1.0, 2.5, 0.6])
    joints = np.repeat(figure[None], n, axis=0)
    t = np.linspace(0, 1, n)
    transl = np.stack([0.5 * np.sin(3 * t), 0.2 + 0.0 * t, 8 - 5 * t], axis=1)
    return joints, transl


def test_intrinsics_from_focal_fov_or_the_default_guess() -> None:
    k = intrinsics_for(1920, 1080, fov_deg=90)
    assert k.focal == pytest.approx(960) and (k.cx, k.cy) == (960, 540) and not k.assumed
    assert k.hfov_deg == pytest.approx(90)
    guess = intrinsics_for(1920, 1080)
    assert guess.assumed and guess.focal == pytest.approx(math.hypot(1920, 1080))
    assert intrinsics_for(640, 480, focal=500).focal == 500
    with pytest.raises(ValueError, match="not both"):
        intrinsics_for(640, 480, focal=500, fov_deg=60)


def test_exact_keypoints_give_the_exact_translation() -> None:
    joints, transl = _walk()
    K = intrinsics_for(1280, 720, fov_deg=60).matrix
    kp = project(joints + transl[:, None], K)
    placed = place_in_camera(joints, kp, np.ones(kp.shape[:2]), K, smoothness=0.0)
    assert np.abs(placed.transl - transl).max() < 1e-6
    assert np.nanmax(placed.residual_px) < 1e-6 and placed.solved.all()


def test_noise_and_missing_joints_smoothing_helps_depth() -> None:
    """2 px noise, 30 % of joints missing and 5 frames with no detection at all: the smoothed solution is within
    2 % of the distance everywhere and better than independent frames."""
    joints, transl = _walk()
    K = intrinsics_for(1280, 720, fov_deg=60).matrix
    rng = np.random.default_rng(1)
    kp = project(joints + transl[:, None], K) + rng.normal(0, 2.0, (len(joints), 17, 2))
    conf = (rng.random(kp.shape[:2]) > 0.3).astype(float)
    conf[40:45] = 0.0  # the person is not detected in these frames
    independent = place_in_camera(joints, kp, conf, K, smoothness=0.0)
    smoothed = place_in_camera(joints, kp, conf, K)
    assert not smoothed.solved[40:45].any() and smoothed.solved.sum() == len(joints) - 5
    err_smooth = np.linalg.norm(smoothed.transl - transl, axis=1)
    err_indep = np.linalg.norm(independent.transl - transl, axis=1)[independent.solved]
    assert (err_smooth / transl[:, 2]).max() < 0.02, (err_smooth / transl[:, 2]).max()
    assert err_smooth[smoothed.solved].mean() < 0.7 * err_indep.mean(), (err_smooth.mean(), err_indep.mean())
    assert np.nanmedian(smoothed.residual_px) < 3.0


def test_synthetic_tracks_with_their_true_cameras(synthetic_data: dict[str, Path]) -> None:
    """The generator's cameras are known: ground-truth 3D joints (root-relative) placed from the simulated
    detector's 2D (surface landmarks converted to H36M-17, with detector noise, swaps and occlusion). Observed on
    60 test tracks: median translation error per track 1.8 % of the distance (worst track 4.1 %), median
    reprojection residual 3.5 % of the person's 2D height (worst track 8.0 %; 3-17 px from 480p to 4K)."""
    data = pickle.loads(synthetic_data["mesh"].read_bytes())["test"]
    rel_errors, residuals = [], []
    for name in dict.fromkeys(data["source"].tolist()):
        m = data["source"] == name
        joints = data["joint_cam"][m].astype(np.float64)
        root = joints[:, 0]
        placed = place_in_camera(joints - root[:, None], data["joint_2d"][m], data["confidence"][m][..., 0],
                                 data["cam_intrinsics"][m][0])
        rel_errors.append(np.median(np.linalg.norm(placed.transl - root, axis=1) / root[:, 2]))
        height = np.ptp(data["joint_2d"][m][..., 1], axis=1)
        residuals.append(np.nanmedian(placed.residual_px / height))
    assert max(rel_errors) < 0.06, rel_errors
    assert np.median(rel_errors) < 0.03, rel_errors
    assert max(residuals) < 0.12 and np.median(residuals) < 0.05, residuals  # fractions of the 2D height


def test_no_confident_frame_is_one_clear_error() -> None:
    joints, transl = _walk(10)
    K = intrinsics_for(640, 480).matrix
    kp = project(joints + transl[:, None], K)
    with pytest.raises(ValueError, match="no frame has 4 joints"):
        place_in_camera(joints, kp, np.zeros(kp.shape[:2]), K)
