"""The weak-perspective reprojection residual (does a prediction follow its 2D input?) against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mesh.evaluation.reprojection import main, reprojection_residual, track_reprojection


def _square_cross() -> np.ndarray:
    """Eight joints, centred, spread in x and y (the z column is ignored)."""
    xy = np.array([[-1, -2], [1, -2], [-1, 2], [1, 2], [-2, 0], [2, 0], [0, -1], [0, 1]], dtype=np.float64)
    return np.concatenate([xy, np.full((8, 1), 5.0)], axis=1)


def test_residual_is_zero_for_a_scaled_shifted_copy_and_known_for_a_perpendicular_error() -> None:
    joints = _square_cross()
    conf = np.ones(8)
    assert reprojection_residual(joints, 37.0 * joints[:, :2] + [300.0, 200.0], conf) == pytest.approx(0.0, abs=1e-9)
    # An error perpendicular to every joint's offset from the centre sums to zero and is orthogonal to the scale
    # direction, so the fit still finds scale 37 and the shift exactly: residual = mean |error| / height.
    xc = joints[:, :2]
    error = 0.1 * np.stack([-xc[:, 1], xc[:, 0]], axis=1)
    kp = 37.0 * xc + error + [300.0, 200.0]
    expected = 100 * np.linalg.norm(error, axis=1).mean() / np.ptp(kp[:, 1])
    assert reprojection_residual(joints, kp, conf) == pytest.approx(expected, rel=1e-12)
    # Keypoints with confidence 0.3 or less are left out (a wild one changes nothing); fewer than 6 left: no value.
    bad = kp.copy()
    bad[0] += 500.0
    assert reprojection_residual(joints, bad, np.r_[0.3, np.ones(7)]) == pytest.approx(
        reprojection_residual(joints[1:], kp[1:], np.ones(7)), rel=1e-12)
    assert np.isnan(reprojection_residual(joints, kp, np.r_[np.ones(5), np.zeros(3)]))


def test_a_prediction_that_ignores_its_input_scores_one_and_an_exact_one_zero() -> None:
    rng = np.random.default_rng(0)
    base = _square_cross()
    motion = base[None] + 0.5 * rng.standard_normal((20, 8, 3))  # a moving 3D track
    kp = 50.0 * motion[..., :2] + 400.0
    conf = np.ones((20, 8))
    exact = track_reprojection(motion, kp, conf)
    assert exact.per_frame == pytest.approx(0.0, abs=1e-9) and exact.track_mean > 5.0 and exact.ratio < 1e-9
    constant = track_reprojection(np.broadcast_to(motion.mean(0), motion.shape), kp, conf)
    assert constant.ratio == pytest.approx(1.0)


def test_cli_reads_results_and_names_a_wrong_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    joints = _square_cross()[None] + np.linspace(0, 1, 4)[:, None, None] * np.eye(8, 3)[None]  # a joint moves
    kp = np.concatenate([30.0 * joints[..., :2] + 100.0, np.ones((4, 8, 1))], axis=-1)
    np.savez(tmp_path / "result.npz", joints_h36m=joints, keypoints_2d=kp)
    assert main([str(tmp_path / "result.npz")]) == 0
    assert "4 frames, residual 0.00 % of height per frame" in capsys.readouterr().out
    np.savez(tmp_path / "other.npz", vertices=joints)
    assert main([str(tmp_path / "other.npz")]) == 2
    assert "other.npz: not a mesh.infer result (no joints_h36m, keypoints_2d)" in capsys.readouterr().err
