"""Mesh head, flips, losses and metrics on hand-built inputs (no dataset, no training)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_smpl import fake_smpl_arrays, write_npz

from body_models import BodyModel, load_mean_params
from body_models.rotations import axis_angle_to_rotmat, rot6d_to_rotmat
from mesh.data.mesh_data import flip_smpl_pose
from mesh.evaluation.metrics import accel_error, center, mpjpe, mpve, pa_mpjpe, pa_mpve
from mesh.inference.predict import mirror_rotmats
from mesh.network.head import HeadConfig, SMPLHead
from mesh.network.losses import LossWeights, loss_preset, mesh_loss
from mesh.network.model import MeshRecovery, pose_body
from motion.encoders import build_encoder


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory) -> BodyModel:
    folder = tmp_path_factory.mktemp("body")
    arrays = fake_smpl_arrays(400, seed=5, posedirs=False)
    arrays["J_regressor_h36m"] = np.random.default_rng(0).dirichlet(np.ones(400), size=17)
    return BodyModel.from_file(write_npz(arrays, Path(folder) / "model.npz"))


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
def test_head_starts_at_the_mean(norm: str) -> None:
    mean = load_mean_params()
    head = SMPLHead(64, 17, mean, HeadConfig(hidden_dim=32, norm=norm)).eval()
    pose6d, betas = head(torch.randn(2, 5, 17, 64))
    assert pose6d.shape == (2, 5, 24, 6) and betas.shape == (2, 10)
    # xavier(gain 0.01) output layers: the first prediction is (close to) the mean pose and shape
    rot = rot6d_to_rotmat(pose6d)
    mean_rot = rot6d_to_rotmat(torch.as_tensor(mean.pose6d, dtype=torch.float32))
    assert (rot - mean_rot).abs().max() < 0.05 and betas.abs().max() < 0.05
    assert torch.allclose(rot[0, 0, 0], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=0.05)  # upright


def test_layer_norm_head_runs_at_batch_one_in_training() -> None:
    head = SMPLHead(8, 17, load_mean_params(), HeadConfig(hidden_dim=16, norm="layer")).train()
    head(torch.randn(1, 1, 17, 8))  # MotionBERT's BatchNorm head crashes here


def test_flip_pose_equals_mirrored_rotations() -> None:
    pose = torch.randn(3, 72, dtype=torch.float64) * 0.5
    via_axis_angle = axis_angle_to_rotmat(flip_smpl_pose(pose).reshape(3, 24, 3))
    via_matrices = mirror_rotmats(axis_angle_to_rotmat(pose.reshape(3, 24, 3)))
    torch.testing.assert_close(via_axis_angle, via_matrices)
    torch.testing.assert_close(flip_smpl_pose(flip_smpl_pose(pose)), pose)


def test_losses_zero_at_ground_truth_and_positive_otherwise(body: BodyModel) -> None:
    rot = axis_angle_to_rotmat(torch.randn(2, 4, 24, 3) * 0.3)
    betas = torch.randn(2, 10)
    gt = pose_body(body, rot, betas[:, None].expand(2, 4, 10))
    pred = pose_body(body, rot, betas)
    weights = LossWeights(edge=1.0, normal=1.0, acceleration=1.0, norm=0.0)
    _, terms = mesh_loss(pred, gt, weights, body.faces)
    assert set(terms) == {"vertex", "joints", "velocity", "acceleration", "pose", "shape", "edge", "normal"}
    # float32 rounding only (the random test mesh has sliver triangles, whose normals are noisy in float32)
    assert all(v < 1e-3 for k, v in terms.items() if k != "normal") and terms["normal"] < 0.02
    moved = pose_body(body, axis_angle_to_rotmat(torch.randn(2, 4, 24, 3) * 0.3), betas)
    total2, terms2 = mesh_loss(moved, gt, weights, body.faces)
    assert total2 > 1.0 and terms2["vertex"] > 1.0  # millimetres
    mb = loss_preset("motionbert")
    assert mb.vertex == 0 and mb.norm == 20 and mb.norm_scope == "all"
    with pytest.raises(TypeError):
        loss_preset("default", vertexx=1.0)


def _rot_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


def test_mesh_metrics_hand_computed() -> None:
    verts = torch.randn(3, 50, 3, dtype=torch.float64)
    # a constant offset gives that offset as MPVE / MPJPE
    torch.testing.assert_close(mpve(verts + torch.tensor([0.0, 0.03, 0.04], dtype=torch.float64), verts),
                               torch.full((3,), 0.05, dtype=torch.float64))
    # a rotation by angle a about y moves a point at distance r from the axis by 2 r sin(a / 2)
    ring = torch.tensor([[math.cos(t), 0.3, math.sin(t)] for t in np.linspace(0, 2 * math.pi, 40)],
                        dtype=torch.float64)
    angle = 0.5
    expected = 2 * math.sin(angle / 2)
    torch.testing.assert_close(mpve(ring @ _rot_y(angle).T, ring), torch.tensor(expected, dtype=torch.float64))
    assert pa_mpve(2.0 * ring @ _rot_y(angle).T + 1.0, ring) < 1e-10  # PA removes a similarity exactly
    joints = torch.randn(3, 17, 3, dtype=torch.float64)
    mid = joints[:, [1, 4]].mean(dim=1, keepdim=True)
    torch.testing.assert_close(center(joints, joints, "midhip"), joints - mid)
    assert pa_mpjpe(3.0 * joints, joints).abs().max() < 1e-10 and mpjpe(joints, joints).max() == 0
    # constant-velocity motion has zero acceleration error against any other constant velocity
    t = torch.arange(10, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(accel_error(joints[0] + 0.1 * t, joints[0] - 0.3 * t),
                               torch.zeros(8, dtype=torch.float64))
    jerk = joints[0] + torch.zeros(10, 1, 1, dtype=torch.float64)
    jerk[5] += torch.tensor([0.0, 0.0, 0.01], dtype=torch.float64)  # one frame displaced by 1 cm
    acc = accel_error(jerk, joints[0].expand(10, 17, 3))
    torch.testing.assert_close(acc[3:6], torch.tensor([0.01, 0.02, 0.01], dtype=torch.float64))


def test_mesh_model_shapes_and_root_relative(body: BodyModel) -> None:
    encoder = build_encoder("ssrstf", {"variant": "XS", "depth": 1})
    model = MeshRecovery(encoder, body, load_mean_params(), HeadConfig(hidden_dim=32)).eval()
    out = model(torch.randn(2, 7, 17, 3))
    assert out.vertices.shape == (2, 7, 400, 3) and out.joints_h36m.shape == (2, 7, 17, 3)
    assert out.rotmats.shape == (2, 7, 24, 3, 3) and out.betas.shape == (2, 10)
    assert out.joints_h36m[..., 0, :].abs().max() < 1e-6  # pelvis at the origin
    assert not any(k.startswith("body.") for k in model.state_dict())  # the body model is not checkpointed


def test_pa_mpve_on_a_full_mesh_matches_float64() -> None:
    """Mesh-sized point sets are aligned in float32 (only the 3x3 solve in float64): same numbers to 1e-6 m."""
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(4, 7000, 3, generator=g) * 0.4
    moved = 1.3 * verts @ _rot_y(0.7).T.float() + torch.tensor([0.2, -0.1, 3.0])
    noisy = moved + 0.02 * torch.randn(4, 7000, 3, generator=g)
    assert pa_mpve(moved, verts).max() < 1e-5  # a similarity is still undone (float32 rounding only)
    torch.testing.assert_close(pa_mpve(noisy, verts).double(), pa_mpve(noisy.double(), verts.double()),
                               rtol=0, atol=1e-6)
