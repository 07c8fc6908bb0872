"""Camera-space placement of a predicted body: intrinsics and per-frame translation from 2D keypoints.

The network predicts root-relative joints in the camera's orientation. Where the person stands follows from the 2D
keypoints and the camera intrinsics: the translation ``t`` of each frame is the one that makes the predicted joints
``X_j + t`` project onto the detected keypoints ``u_j`` under the pinhole camera ``K``:

    min_t  sum_j c_j |pi(K (X_j + t)) - u_j|^2

over the confident joints (confidence ``c_j`` above ``min_conf``). Each frame's problem is solved in its linear
(direct linear transform) form, weighted by confidence and rescaled by the current depth so that it matches pixel
errors, for a few Gauss-Newton rounds. The frames are then tied together: depth is the poorly determined direction,
so the per-frame solutions are smoothed with a second-difference penalty in the metric of each frame's normal
matrix (a frame with little depth information follows its neighbours; a well-determined one keeps its value).
Frames with fewer than ``min_joints`` confident joints get their translation from the smoothing alone.

Intrinsics: ``--focal`` (pixels) or ``--fov`` (horizontal, degrees); unknown, the focal length is the image
diagonal (about 53 degrees across the diagonal, a usual guess for phone and consumer video), the principal point the
image centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera in pixels."""

    focal: float
    cx: float
    cy: float
    width: float
    height: float
    assumed: bool  # True when the focal length is the default guess (neither --focal nor --fov given)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.focal, 0.0, self.cx], [0.0, self.focal, self.cy], [0.0, 0.0, 1.0]])

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width / (2 * self.focal)))


def intrinsics_for(width: float, height: float, focal: float | None = None, fov_deg: float | None = None
                   ) -> Intrinsics:
    """Intrinsics of a ``width`` x ``height`` image: ``focal`` in pixels, or the horizontal ``fov_deg``, or else the
    image diagonal as the focal length (``assumed=True``)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    if focal is not None and fov_deg is not None:
        raise ValueError("give the focal length or the field of view, not both")
    if fov_deg is not None:
        if not 1.0 <= fov_deg <= 179.0:
            raise ValueError(f"field of view must be between 1 and 179 degrees, got {fov_deg}")
        focal = width / (2 * math.tan(math.radians(fov_deg) / 2))
    assumed = focal is None
    if focal is None:
        focal = math.hypot(width, height)
    if focal <= 0:
        raise ValueError(f"focal length must be positive, got {focal}")
    return Intrinsics(float(focal), width / 2, height / 2, float(width), float(height), assumed)


def ray_rotations(points_px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` rotations that turn the optical axis onto the viewing ray through each of ``points_px (N, 2)``.

    The smallest such rotation (about the axis ``z x ray``). ``K`` is one ``(3, 3)`` camera or one per point
    ``(N, 3, 3)``. Used for the ``box_ray`` orientation frame (:mod:`mesh.network.model`): a network that sees the
    person through a box around them cannot know where the box lies in the image, so it predicts the body's
    orientation relative to the ray through the box centre, and this rotation puts it back in the camera frame.
    """
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    K = np.broadcast_to(np.asarray(K, dtype=np.float64), (len(pts), 3, 3))
    homog = np.concatenate([pts, np.ones((len(pts), 1))], axis=1)
    ray = np.linalg.solve(K, homog[..., None])[..., 0]
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    # Rodrigues for z -> ray: R = I + [a]x + [a]x^2 / (1 + cos), a = z x ray (|a| = sin); the ray has z > 0.
    a = np.stack([-ray[:, 1], ray[:, 0], np.zeros(len(ray))], axis=1)
    cross = np.zeros((len(ray), 3, 3))
    cross[:, 0, 2], cross[:, 1, 2] = a[:, 1], -a[:, 0]
    cross[:, 2, 0], cross[:, 2, 1] = -a[:, 1], a[:, 0]
    return np.eye(3) + cross + cross @ cross / (1.0 + ray[:, 2])[:, None, None]


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points ``(..., 3)`` (metres, z forward) to pixels ``(..., 2)``."""
    z = np.maximum(points[..., 2:3], 1e-6)
    return points[..., :2] / z * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


@dataclass
class Placement:
    """Per-frame camera-frame translations and how well they explain the keypoints."""

    transl: np.ndarray  # (N, 3) metres: add to the root-relative joints / vertices
    solved: np.ndarray  # (N,) bool: the frame had enough confident joints for its own solution
    residual_px: np.ndarray  # (N,) confidence-weighted RMS reprojection error of the confident joints (NaN if none)


def _frame_normal_equations(X: np.ndarray, u: np.ndarray, w: np.ndarray, K: np.ndarray, depth: float
                            ) -> tuple[np.ndarray, np.ndarray]:
    """``A, b`` of one frame's weighted linear problem ``A t = b`` (equations scaled by ``1 / depth`` into pixels)."""
    f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    du, dv = u[:, 0] - cx, u[:, 1] - cy
    # f (X + tx) - du (Z + tz) = 0 and f (Y + ty) - dv (Z + tz) = 0, divided by the depth: pixel units.
    rows = np.zeros((2 * len(X), 3))
    rows[0::2, 0], rows[0::2, 2] = f, -du
    rows[1::2, 1], rows[1::2, 2] = f, -dv
    rhs = np.empty(2 * len(X))
    rhs[0::2] = du * X[:, 2] - f * X[:, 0]
    rhs[1::2] = dv * X[:, 2] - f * X[:, 1]
    sw = np.repeat(w, 2) / depth**2
    return rows.T @ (rows * sw[:, None]), rows.T @ (rhs * sw)


def place_in_camera(joints: np.ndarray, keypoints: np.ndarray, confidence: np.ndarray, K: np.ndarray,
                    min_conf: float = 0.3, min_joints: int = 4, smoothness: float = 10.0, rounds: int = 3
                    ) -> Placement:
    """Camera-frame translation per frame (see the module docstring).

    Args:
        joints: ``(N, J, 3)`` predicted joints in metres, camera orientation, any origin (root-relative usually).
        keypoints: ``(N, J, 2)`` detected 2D joints in pixels, the same joint order.
        confidence: ``(N, J)``; joints at or below ``min_conf`` are ignored.
        K: ``(3, 3)`` intrinsics.
        smoothness: weight of the second-difference penalty (pixels^2 per (m / frame^2)^2, scaled by the focal
            length squared inside: the default suits 30 fps video); 0 = independent frames.
    Returns:
        :class:`Placement`.
    """
    joints, keypoints = np.asarray(joints, np.float64), np.asarray(keypoints, np.float64)
    confidence = np.asarray(confidence, np.float64).reshape(keypoints.shape[:2])
    n = len(joints)
    if joints.shape[:2] != keypoints.shape[:2] or n == 0:
        raise ValueError(f"joints {joints.shape} and keypoints {keypoints.shape} do not match")
    valid = (confidence > min_conf) & np.isfinite(keypoints).all(-1)
    solved = valid.sum(1) >= min_joints
    if not solved.any():
        raise ValueError(f"no frame has {min_joints} joints with confidence above {min_conf}: cannot place the body")
    f = K[0, 0]
    # Initial depth from the 2D size: the spread of the 3D joints over the spread of the 2D ones.
    depth = np.full(n, np.nan)
    for i in np.flatnonzero(solved):
        m = valid[i]
        s3 = np.linalg.norm(joints[i, m, :2] - joints[i, m, :2].mean(0), axis=1).mean()
        s2 = np.linalg.norm(keypoints[i, m] - keypoints[i, m].mean(0), axis=1).mean()
        depth[i] = f * s3 / max(s2, 1e-6)
    depth = np.interp(np.arange(n), np.flatnonzero(solved), depth[solved])
    transl = np.zeros((n, 3))
    transl[:, 2] = np.clip(depth, 0.5, 200.0)
    A = np.zeros((n, 3, 3))
    b = np.zeros((n, 3))
    for _ in range(rounds):
        for i in range(n):
            if solved[i]:
                m = valid[i]
                z = max(float((joints[i, m, 2] + transl[i, 2]).mean()), 0.1)
                A[i], b[i] = _frame_normal_equations(joints[i, m], keypoints[i, m], confidence[i, m], K, z)
        transl = _smooth_solve(A, b, solved, smoothness * f**2 / np.maximum(transl[:, 2], 0.1) ** 2, transl)
        if not (transl[:, 2] > 0).all():
            raise ValueError("the keypoints put the body behind the camera (do they match the image size and the "
                             "joint order?)")
    proj = project(joints + transl[:, None], K)
    err2 = ((proj - keypoints) ** 2).sum(-1)
    w = np.where(valid, confidence, 0.0)
    with np.errstate(invalid="ignore"):
        residual = np.sqrt((err2 * w).sum(1) / w.sum(1))
    return Placement(transl=transl, solved=solved, residual_px=residual)


def _smooth_solve(A: np.ndarray, b: np.ndarray, solved: np.ndarray, lam: np.ndarray, fallback: np.ndarray
                  ) -> np.ndarray:
    """``argmin sum_i (t_i^T A_i t_i - 2 b_i^T t_i) + sum_i lam_i |t_{i-1} - 2 t_i + t_{i+1}|^2`` as one sparse
    system (per-frame blocks plus the second-difference penalty)."""
    n = len(A)
    if n < 3 or not np.any(lam > 0):
        out = fallback.copy()
        for i in np.flatnonzero(solved):
            out[i] = np.linalg.solve(A[i] + 1e-9 * np.eye(3), b[i])
        return out
    H = sparse.block_diag([A[i] if solved[i] else np.zeros((3, 3)) for i in range(n)], format="csr")
    D = sparse.diags([np.ones(n - 2), -2 * np.ones(n - 2), np.ones(n - 2)], [0, 1, 2], shape=(n - 2, n))
    weights = sparse.diags(lam[1:-1])
    H = H + sparse.kron(D.T @ weights @ D, sparse.eye(3)) + sparse.eye(3 * n) * 1e-9
    rhs = np.where(solved[:, None], b, 0.0).reshape(-1)
    return np.asarray(spsolve(H.tocsc(), rhs)).reshape(n, 3)
