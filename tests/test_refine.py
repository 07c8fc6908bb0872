"""Test-time refinement (mesh.inference.refine): a perturbed pose is pulled back onto simulated detections, a good
pose is left alone, and mesh.infer --refine reports what it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import roma
import torch

from body_models import load_body_model
from body_models.rotations import pose_to_rotmats
from mesh.infer import main as infer_main
from mesh.inference.predict import TrackPrediction
from mesh.inference.refine import RefineOptions, refine_track
from mesh.network.model import pose_body
from motion.detector_sim import CONVENTION_RANGES_M
from motion.synthetic import generate_sequences, sequence_rng


@pytest.fixture(scope="module")
def body():
    return load_body_model()


@pytest.fixture(scope="module")
def tracks(body):
    """Three synthetic tracks (simulated detector noise, swaps, misses) with their true poses."""
    return generate_sequences(3, 5, body, "test", 50, 70)


def _prediction(body, rotmats: torch.Tensor, betas: np.ndarray) -> TrackPrediction:
    b = torch.as_tensor(betas, dtype=torch.float32).expand(len(rotmats), -1).contiguous()
    out = pose_body(body, rotmats[None], b[None])
    return TrackPrediction(rotmats=rotmats, betas=b, vertices=out.vertices[0], joints_h36m=out.joints_h36m[0],
                           joints_smpl=out.joints_smpl[0])


def _mpjpe_mm(body, rotmats: torch.Tensor, betas: np.ndarray, truth: np.ndarray) -> float:
    j = _prediction(body, rotmats, betas).joints_h36m.double().numpy()
    g = truth - truth[:, :1]
    return 1000 * float(np.linalg.norm(j - j[:, :1] - g, axis=-1).mean())


def test_refinement_pulls_a_perturbed_pose_back_onto_the_detections(body, tracks) -> None:
    """Hip and shoulder-girdle rotations disturbed by about 14 degrees (a smooth error over time, as a network's is)
    are corrected from the simulated detections alone: every track's 3D error against the true joints falls, by a
    quarter on average, and the keypoint residual halves. (Not all of it can come back: a rotation that moves a joint
    along the line of sight does not show in 2D.)"""
    rng = np.random.default_rng(0)
    errors = []
    for s in tracks:
        truth = pose_to_rotmats(torch.as_tensor(s.pose, dtype=torch.float32), 24)
        n = len(truth)
        slow = np.cumsum(rng.normal(0, 0.02, (n, 24, 3)), axis=0) + rng.normal(0, 0.25, (1, 24, 3))
        slow[:, [0, 3, 6, 9, 12, 15, 20, 21, 22, 23]] = 0.0  # root, spine, head and hands as they are
        start = truth @ roma.rotvec_to_rotmat(torch.as_tensor(slow, dtype=torch.float32))
        kp = np.concatenate([s.joints_2d, s.confidence[..., None]], axis=-1)
        refined, report = refine_track(_prediction(body, start, s.betas), body, kp, s.intrinsics, s.detector.fmt)
        before = _mpjpe_mm(body, start, s.betas, s.joints_cam)
        after = _mpjpe_mm(body, refined.rotmats, s.betas, s.joints_cam)
        errors.append((before, after))
        assert after < 0.9 * before, (s.name, before, after)
        assert report.residual_after < 0.55 * report.residual_before, report
        assert 1.0 < report.mean_correction_deg < 30.0
    before, after = np.mean(errors, axis=0)
    assert after < 0.8 * before, errors


def test_refinement_leaves_the_true_pose_about_where_it_is_and_finds_the_convention(body) -> None:
    """Started from the true pose, the fit moves the joints by little (the detections are noisy; the prior and the
    smoothness hold the pose), does not explain the keypoints worse, and recovers the annotation convention the
    simulated detector drew for the track (shoulders, hips, ankles) better than the middle of the ranges does
    (observed: 7-8 mm mean error against 11-14 mm). With midpoint keypoints, which keep the detector's shoulders and
    hips as they are: the fitted rule blends shoulders and hips, and through it the convention is found less well (on
    one of these tracks 11.2 mm against the middle's 14.6, short of the 0.75x asked here)."""
    middle = {k: 0.5 * (lo + hi) for k, (lo, hi) in CONVENTION_RANGES_M.items()}
    for i, s in enumerate(generate_sequences(3, 5, body, "test", 50, 70, conversion="midpoint")):
        child = sequence_rng(5, "test", i).spawn(1)[0]  # the generator's convention stream for this track
        drawn = {k: float(child.uniform(*r)) for k, r in CONVENTION_RANGES_M.items()}
        truth = pose_to_rotmats(torch.as_tensor(s.pose, dtype=torch.float32), 24)
        kp = np.concatenate([s.joints_2d, s.confidence[..., None]], axis=-1)
        refined, report = refine_track(_prediction(body, truth, s.betas), body, kp, s.intrinsics, s.detector.fmt,
                                       conversion="midpoint")
        assert _mpjpe_mm(body, refined.rotmats, s.betas, s.joints_cam) < 25.0
        assert report.residual_after <= report.residual_before
        fitted_error = np.mean([abs(report.convention[k] - drawn[k]) for k in drawn])
        middle_error = np.mean([abs(middle[k] - drawn[k]) for k in drawn])
        assert fitted_error < 0.75 * middle_error, (report.convention, drawn)


def test_refinement_rejects_what_it_cannot_fit(body, tracks) -> None:
    s = tracks[0]
    truth = pose_to_rotmats(torch.as_tensor(s.pose, dtype=torch.float32), 24)
    kp = np.concatenate([s.joints_2d, s.confidence[..., None]], axis=-1)
    pred = _prediction(body, truth, s.betas)
    with pytest.raises(ValueError, match="source_format"):
        refine_track(pred, body, kp, s.intrinsics, "openpose")
    blind = kp.copy()
    blind[..., 2] = 0.1
    with pytest.raises(ValueError, match="no frame has 6 keypoints"):
        refine_track(pred, body, blind, s.intrinsics, "coco", RefineOptions(iterations=1))


def test_infer_refine_reports_a_smaller_keypoint_residual(synthetic_data, tmp_path: Path, capsys) -> None:
    """``mesh.infer --refine`` on a synthetic track exported as a detector file: the summary records the fit, the
    keypoints are explained better after it, and the result stays a valid SMPL result."""
    from mesh.io.export import load_result
    from mesh.io.keypoints import synthetic_to_json
    from motion.checkpoint import SHIPPED_MESH_MODEL

    src = synthetic_to_json(synthetic_data["mesh"], tmp_path / "track.json", "test")
    out = tmp_path / "out"
    assert infer_main(["--keypoints", str(src), "--checkpoint", str(SHIPPED_MESH_MODEL), "--out", str(out),
                       "--no-render", "--refine"]) == 0
    assert "refined: keypoint residual" in capsys.readouterr().out
    person = json.loads((out / "summary.json").read_text())["persons"]["0"]
    report = person["refine"]
    assert report["residual_after"] < 0.8 * report["residual_before"], report
    result = load_result(out / "person_0" / "result.npz")
    assert np.isfinite(result.body_pose).all() and result.body_pose.shape[1] == 69


def test_evaluator_scores_refined_predictions_apart(synthetic_data) -> None:
    """``evaluate_mesh(refine=...)`` refines each track before scoring: on 3 synthetic test tracks the shipped model's
    joints come closer to the truth (the network alone is scored without it), and the report says so; a split
    without camera intrinsics is refused."""
    from dataclasses import replace

    from mesh.data.mesh_data import read_mesh_split
    from mesh.evaluation.protocol import evaluate_mesh, get_protocol
    from mesh.network.checkpoint import load_mesh_model
    from motion.checkpoint import SHIPPED_MESH_MODEL

    model, _ = load_mesh_model(SHIPPED_MESH_MODEL)
    split = read_mesh_split(synthetic_data["mesh"], "test", norm="track_box")
    split = split.subset(np.isin(split.source, np.unique(split.source)[:3]))  # 3 tracks, no flip test: quick
    protocol = get_protocol("motionbert", flip=False)
    bodies = {"neutral": model.body}
    plain = evaluate_mesh(model, split, protocol, bodies)
    refined = evaluate_mesh(model, split, protocol, bodies, refine=RefineOptions())
    a, b = plain.summary(), refined.summary()
    assert b["mpjpe17_mm"] < 0.95 * a["mpjpe17_mm"], (a, b)
    assert b["mpve_mm"] < 0.95 * a["mpve_mm"], (a, b)  # observed 84.2 -> 77.2 mm (MPJPE-17 57.3 -> 53.1)
    assert b["accel_mm_per_frame2"] < a["accel_mm_per_frame2"], (a, b)  # no new jitter (8.0 -> 4.2)
    assert any("refinement" in n for n in refined.notes) and not any("refinement" in n for n in plain.notes)
    with pytest.raises(ValueError, match="cam_intrinsics"):
        evaluate_mesh(model, replace(split, intrinsics=None), protocol, bodies, refine=RefineOptions())


def test_h36m_files_are_fitted_with_the_regressed_joints(body, tracks) -> None:
    """An H36M-17 file (3DPW's 2D, or a user's) has no surface keypoints to imitate: the regressed joints are fitted.
    From exact projections of the true joints, a disturbed pose comes most of the way back."""
    from mesh.inference.camera import project

    s = tracks[1]
    truth = pose_to_rotmats(torch.as_tensor(s.pose, dtype=torch.float32), 24)
    rng = np.random.default_rng(1)
    slow = np.zeros((len(truth), 24, 3))
    slow[:, [1, 2, 16, 17]] = rng.normal(0, 0.25, (1, 4, 3))  # hips and shoulders
    start = truth @ roma.rotvec_to_rotmat(torch.as_tensor(slow, dtype=torch.float32))
    kp = np.concatenate([project(s.joints_cam, s.intrinsics), np.ones((len(truth), 17, 1))], axis=-1)
    refined, report = refine_track(_prediction(body, start, s.betas), body, kp, s.intrinsics, "h36m")
    before = _mpjpe_mm(body, start, s.betas, s.joints_cam)
    after = _mpjpe_mm(body, refined.rotmats, s.betas, s.joints_cam)
    assert after < 0.65 * before, (before, after)  # observed 53.8 -> 28.8 mm
    assert report.residual_after < 0.3 * report.residual_before, report  # observed 2.7 % -> 0.6 % of the size
    assert report.convention == {}  # no surface keypoints, no annotation convention
