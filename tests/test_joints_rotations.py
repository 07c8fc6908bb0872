"""Joint sets, conversions and rotation conventions, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from body_models import COCO17, H36M17, HALPE26, JOINT_SETS, LSP14, OPENPOSE18, SMPL24, convert_joints
from body_models.joint_sets import H36M_EVAL_S14, H36M_TO_LSP14, conversion_matrix, convert_keypoints
from body_models.rotations import (
    axis_angle_to_rotmat,
    flip_axis_angle,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
)


@pytest.mark.parametrize("joint_set", list(JOINT_SETS.values()), ids=list(JOINT_SETS))
def test_joint_set_structure(joint_set) -> None:
    perm = joint_set.flip_permutation
    assert sorted(perm) == list(range(joint_set.num_joints))
    assert all(perm[perm[i]] == i for i in range(joint_set.num_joints))  # an involution
    for a, b in joint_set.flip_pairs:  # names agree with the pairing
        na, nb = joint_set.joint_names[a], joint_set.joint_names[b]
        assert na.replace("left", "X").replace("right", "X") == nb.replace("left", "X").replace("right", "X")
        assert na != nb
    roots = [j for j, p in enumerate(joint_set.parents) if p < 0]
    assert len(roots) == 1
    # every joint reaches the root (a tree, no cycles)
    for j in range(joint_set.num_joints):
        seen = set()
        while joint_set.parents[j] >= 0:
            assert j not in seen
            seen.add(j)
            j = joint_set.parents[j]


def test_h36m_matches_spec() -> None:
    assert H36M17.flip_permutation == (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)
    assert len(H36M17.bones) == 16 and (8, 11) in H36M17.bones and (9, 10) in H36M17.bones
    assert SMPL24.flip_permutation[:3] == (0, 2, 1) and SMPL24.flip_permutation[22:] == (23, 22)
    assert set(H36M_TO_LSP14) == set(H36M_EVAL_S14)
    lsp_names = [H36M17.joint_names[j] for j in H36M_TO_LSP14]
    assert lsp_names[:12] == list(LSP14.joint_names[:12])  # same sides, same limbs


def test_coco_to_h36m_hand_computed() -> None:
    coco = np.zeros((COCO17.num_joints, 3))
    coco[:, 2] = 1.0
    coco[COCO17.index("left_hip")] = [10.0, 20.0, 0.9]
    coco[COCO17.index("right_hip")] = [30.0, 20.0, 0.5]
    coco[COCO17.index("left_shoulder")] = [10.0, -20.0, 0.8]
    coco[COCO17.index("right_shoulder")] = [30.0, -20.0, 0.7]
    coco[COCO17.index("left_eye")] = [18.0, -40.0, 1.0]
    coco[COCO17.index("right_eye")] = [22.0, -44.0, 1.0]
    h36m = convert_keypoints(coco, "coco17", "h36m17")
    np.testing.assert_allclose(h36m[0], [20.0, 20.0, 0.5])  # pelvis: mid-hip, least sure hip
    np.testing.assert_allclose(h36m[8], [20.0, -20.0, 0.7])  # thorax: mid-shoulder
    np.testing.assert_allclose(h36m[7], [20.0, 0.0, 0.5])  # spine: midway pelvis-thorax
    np.testing.assert_allclose(h36m[10], [20.0, -42.0, 1.0])  # head: mid-eye
    np.testing.assert_allclose(h36m[1], coco[COCO17.index("right_hip")])
    np.testing.assert_allclose(h36m[11], coco[COCO17.index("left_shoulder")])


@pytest.mark.parametrize("src", [COCO17, HALPE26, OPENPOSE18])
def test_detector_sets_flip_consistently(src) -> None:
    """Mirroring then converting equals converting then mirroring: sides are mapped consistently."""
    rng = np.random.default_rng(0)
    kp = rng.normal(size=(5, src.num_joints, 3))
    mirrored = kp[:, list(src.flip_permutation)] * [-1, 1, 1]
    a = convert_keypoints(mirrored, src.name, "h36m17")
    b = convert_keypoints(kp, src.name, "h36m17")[:, list(H36M17.flip_permutation)] * [-1, 1, 1]
    np.testing.assert_allclose(a, b)


def test_convert_joints_torch_and_numpy_agree() -> None:
    x = np.random.default_rng(1).normal(size=(2, 17, 3))
    np.testing.assert_allclose(convert_joints(torch.as_tensor(x), "h36m17", "lsp14").numpy(),
                               convert_joints(x, "h36m17", "lsp14"))
    assert conversion_matrix("h36m17", "lsp14").sum() == 14
    with pytest.raises(ValueError, match="no conversion from lsp14 to coco17"):
        conversion_matrix("lsp14", "coco17")


def test_rot6d_uses_spin_column_layout() -> None:
    angle = 0.3
    rz = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                       [0.0, 0.0, 1.0]], dtype=torch.float64)
    six = rotmat_to_rot6d(rz)
    torch.testing.assert_close(six, torch.stack([rz[0, 0], rz[0, 1], rz[1, 0], rz[1, 1], rz[2, 0], rz[2, 1]]))
    torch.testing.assert_close(rot6d_to_rotmat(six), rz)
    # a non-orthonormal 6D vector: the first column keeps its direction
    noisy = torch.tensor([2.0, 0.1, 0.0, 1.0, 0.0, 0.3], dtype=torch.float64)
    r = rot6d_to_rotmat(noisy)
    torch.testing.assert_close(r[:, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(r @ r.T, torch.eye(3, dtype=torch.float64))
    assert torch.det(r) > 0


def test_axis_angle_round_trip_and_flip() -> None:
    rotvec = torch.randn(100, 3, dtype=torch.float64)
    rotvec = rotvec / rotvec.norm(dim=-1, keepdim=True) * torch.rand(100, 1, dtype=torch.float64) * 3.0
    torch.testing.assert_close(rotmat_to_axis_angle(axis_angle_to_rotmat(rotvec)), rotvec)
    # mirroring across x = 0: M R M with M = diag(-1, 1, 1)
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(axis_angle_to_rotmat(flip_axis_angle(rotvec)), m @ axis_angle_to_rotmat(rotvec) @ m)
