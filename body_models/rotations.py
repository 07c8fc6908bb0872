"""Rotation conversions (thin, documented wrappers around roma).

Conventions:
- rotation matrices act on column vectors: ``x' = R @ x``;
- axis-angle ("rotvec") is the axis scaled by the angle in radians;
- **6D uses SPIN's column layout** (docs/protocols.md, the SMPL head): the 6 numbers are the first two *columns* of R,
  interleaved row-major as ``[R00, R01, R10, R11, R20, R21]``, i.e. ``R[..., :, :2].reshape(..., 6)``. This is the
  layout of SPIN's ``smpl_mean_params.npz`` and MotionBERT's head, and differs from PyTorch3D's
  ``matrix_to_rotation_6d`` (first two rows).
"""

from __future__ import annotations

import roma
import torch


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """``(..., 6)``, SPIN's column layout -> ``(..., 3, 3)`` (Gram-Schmidt: column 1 keeps its direction)."""
    if x.shape[-1] != 6:
        raise ValueError(f"6D rotations must have a last dimension of 6, got shape {tuple(x.shape)}")
    return roma.special_gramschmidt(x.reshape(*x.shape[:-1], 3, 2))


def rotmat_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)`` in SPIN's column layout (inverse of :func:`rot6d_to_rotmat` on rotations)."""
    return rotmat[..., :, :2].reshape(*rotmat.shape[:-2], 6)


def axis_angle_to_rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` axis-angle (radians) -> ``(..., 3, 3)``."""
    return roma.rotvec_to_rotmat(rotvec)


def rotmat_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` -> ``(..., 3)`` axis-angle with angle in [0, pi] (numerically stable near 0 and pi)."""
    return roma.rotmat_to_rotvec(rotmat)


def pose_to_rotmats(pose: torch.Tensor, num_joints: int = 24) -> torch.Tensor:
    """SMPL axis-angle pose ``(..., num_joints * 3)`` or ``(..., num_joints, 3)`` -> ``(..., num_joints, 3, 3)``."""
    if pose.shape[-1] == num_joints * 3:
        pose = pose.reshape(*pose.shape[:-1], num_joints, 3)
    if pose.shape[-2:] != (num_joints, 3):
        raise ValueError(f"pose must be (..., {num_joints * 3}) or (..., {num_joints}, 3), got {tuple(pose.shape)}")
    return axis_angle_to_rotmat(pose)


def flip_axis_angle(pose: torch.Tensor) -> torch.Tensor:
    """Mirror axis-angle rotations across the camera's x = 0 plane: ``(x, y, z) -> (x, -y, -z)``.

    Joint swapping (left <-> right) is separate; see ``JointSet.flip_permutation``.
    """
    return pose * pose.new_tensor([1.0, -1.0, -1.0])
