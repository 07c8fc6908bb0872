"""Test-time refinement: nudge each frame's pose so that the body's own detector keypoints land on the detections.

The network's pose is a good start but not pixel-aligned: on real videos its limbs can sit a few percent of the
person's height off the detected keypoints. :func:`refine_track` fits, for all frames of a track at once,

    min_{delta, t, a}  sum_t,j c_tj rho(|P_tj(R_t exp(delta_t), t_t, a) - u_tj| / h_t)      (keypoints)
                    + w_pose   sum_t,k |delta_tk|^2                                             (stay near the network)
                    + w_smooth sum_t,j |X_{t-1,j} - 2 X_tj + X_{t+1,j}|^2                    (no new jitter)

- ``delta``: per-frame, per-joint rotation corrections (axis-angle, radians) applied on the network's rotations
  ``R``; the shape (betas) is kept; ``t``: the camera-frame translation (initialised by
  :func:`mesh.inference.camera.place_in_camera`);
- ``P``: the predicted detector keypoints, made **the way the detections were**: the body's surface landmarks in
  the file's joint order (:mod:`body_models.landmarks`, COCO-17 / Halpe-26, with the shoulder, hip and ankle
  points moved by the track's annotation convention ``a``), projected with the camera ``K``, then converted to
  H36M-17 with the same matrix :mod:`mesh.io.keypoints` applies to the file; for an H36M-17 file, the regressed
  H36M joints. Comparing joint centres with surface keypoints would pull the shoulders up and the hips out;
- ``a``: five offsets for the whole track (shoulders up and out, hips down and out, ankles up the shin), started at
  the middle of :data:`motion.detector_sim.CONVENTION_RANGES_M` and kept inside those ranges (the ones the training
  data spans): detectors disagree on these points by centimetres, and fitting the track's own convention keeps
  that disagreement out of the pose (``calibrate=False`` fixes it at the middle);
- ``u``, ``c``: the filled H36M-17 keypoints and their confidences (interpolated joints have confidence 0 and do not
  count); ``h_t``: the person's 2D size in that frame (the keypoints' larger box side), so the weights do not depend
  on the resolution; ``rho``: Geman-McClure with scale ``robust_scale`` (a swapped or outlying keypoint pulls
  little);
- ``X``: the 3D joints in the camera frame (metres): the smoothness term keeps the fit from following detector jitter.

Adam on all frames together; only the ~370 vertices of the landmarks are skinned (the body model's ``vertex_ids``
path; its H36M joints stay exact).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import roma
import torch

from body_models import BodyModel
from body_models.joint_sets import DEFAULT_KEYPOINT_CONVERSION, conversion_matrix
from body_models.landmarks import detector_landmarks
from mesh.inference.camera import place_in_camera
from mesh.inference.predict import TrackPrediction, repose
from motion.detector_sim import CONVENTION_RANGES_M

SOURCE_JOINT_SETS = {"coco": "coco17", "halpe": "halpe26", "h36m": "h36m17"}
# Halpe-26 indices (COCO-17 = the first 17): shoulders, hips, ankles; SMPL joints giving the body axes.
_LEFT, _RIGHT = (5, 11, 15), (6, 12, 16)
_HALPE_MID_HIP = 19


@dataclass(frozen=True)
class RefineOptions:
    """Weights of the fit (see the module docstring). The defaults were set by hand, not selected on test data: on 10
    synthetic test tracks, pose_prior / 4 or x 2.5, smooth / 5 and 250 iterations all moved MPJPE by under 1.5 %."""

    iterations: int = 120
    lr: float = 0.01
    pose_prior: float = 0.02
    smooth: float = 1.0
    robust_scale: float = 0.1
    calibrate: bool = True  # fit the track's annotation convention too (within the ranges the training data spans)
    min_keypoints: int = 6  # frames with fewer confident keypoints keep the network's pose (the prior holds them)


@dataclass
class RefineReport:
    """Mean keypoint residual (fraction of the person's 2D size, confident joints) before and after."""

    residual_before: float
    residual_after: float
    mean_correction_deg: float  # mean |delta| over frames and joints
    convention: dict[str, float]  # the track's fitted annotation convention, metres (empty for H36M-17 files)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def _conventional(landmarks: torch.Tensor, joints: torch.Tensor, convention: dict[str, torch.Tensor]) -> torch.Tensor:
    """Move the shoulder, hip and ankle landmarks ``(N, 26, 3)`` by an annotation ``convention`` (metres, the keys of
    :data:`motion.detector_sim.CONVENTION_RANGES_M`) in the body's frame, from the SMPL ``joints (N, 24, 3)``."""
    up = _unit(joints[:, 12] - joints[:, 0])
    offsets = torch.zeros_like(landmarks)
    for sign, (sho, hip, ank), (knee, ankle) in ((1.0, _LEFT, (4, 7)), (-1.0, _RIGHT, (5, 8))):
        shoulder_line = sign * _unit(joints[:, 16] - joints[:, 17])
        hip_line = sign * _unit(joints[:, 1] - joints[:, 2])
        offsets[:, sho] = convention["shoulder_up"] * up + convention["shoulder_out"] * shoulder_line
        offsets[:, hip] = -convention["hip_down"] * up + convention["hip_out"] * hip_line
        offsets[:, ank] = convention["ankle_up"] * _unit(joints[:, knee] - joints[:, ankle])
    offsets[:, _HALPE_MID_HIP] = 0.5 * (offsets[:, _LEFT[1]] + offsets[:, _RIGHT[1]])
    return landmarks + offsets


def _project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    z = points[..., 2:3].clamp_min(1e-3)
    return points[..., :2] / z * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])


def refine_track(pred: TrackPrediction, body: BodyModel, keypoints: np.ndarray, K: np.ndarray, source_format: str,
                 options: RefineOptions | None = None, conversion: str = DEFAULT_KEYPOINT_CONVERSION
                 ) -> tuple[TrackPrediction, RefineReport]:
    """The refined prediction of one track (same betas, re-posed, pelvis-centred as ``pred``) and a report.

    Args:
        pred: the network's prediction (rotations and betas are used; betas stay as they are).
        body: the body model of ``pred``.
        keypoints: ``(N, 17, 3)`` filled H36M-17 keypoints in pixels with confidence (as :func:`mesh.infer.fill_track`
            gives them).
        K: ``(3, 3)`` camera intrinsics in pixels.
        source_format: the file's joint order: ``'coco'``, ``'halpe'`` or ``'h36m'`` (or the joint set names
            ``'coco17'``, ``'halpe26'``, ``'h36m17'``).
        conversion: the keypoint conversion ``keypoints`` were made with (the model's, see
            body_models.joint_sets.KEYPOINT_CONVERSIONS): the body's own keypoints are converted the same way.
    """
    opt = options or RefineOptions()
    fmt = SOURCE_JOINT_SETS.get(source_format, source_format)
    if fmt not in SOURCE_JOINT_SETS.values():
        raise ValueError(f"source_format must be one of {sorted(SOURCE_JOINT_SETS)}, got {source_format!r}")
    dtype = body.v_template.dtype
    marks = detector_landmarks(body.v_template.double().cpu().numpy(), body.joint_template.double().cpu().numpy(),
                               body.lbs_weights.double().cpu().numpy())
    marks_support = marks.support
    marks = marks.remap(marks_support)
    kp = np.asarray(keypoints, dtype=np.float64)
    conf = np.where(np.isfinite(kp[..., :2]).all(-1), kp[..., 2], 0.0)
    xy = np.nan_to_num(kp[..., :2])

    keep = conf > 0.3
    lo = np.where(keep[..., None], xy, np.inf).min(1)
    hi = np.where(keep[..., None], xy, -np.inf).max(1)
    size = np.max(hi - lo, axis=-1)
    ok = keep.sum(1) >= opt.min_keypoints
    if not ok.any():
        raise ValueError(f"no frame has {opt.min_keypoints} keypoints with confidence above 0.3: nothing to fit")
    size = np.where(ok, size, np.median(size[ok]))
    placement = place_in_camera(pred.joints_h36m.double().numpy(), xy, conf, K)

    device = body.v_template.device
    as_t = functools.partial(torch.as_tensor, dtype=dtype, device=device)
    rot0 = pred.rotmats.to(device, dtype)
    betas = pred.betas.to(device, dtype)
    if bool((betas == betas[:1]).all()):
        betas = betas[:1]  # one shape for the track (mesh.infer's default): blended once, not per frame
    target = as_t(xy / size[:, None, None])  # in units of the person's size
    c = as_t(np.where(ok[:, None], conf, 0.0))
    counted = torch.as_tensor(keep & ok[:, None], device=device)
    support = torch.as_tensor(marks_support, device=device)
    scale = as_t(size)[:, None, None]
    Kt = as_t(K)
    to_h36m = as_t(conversion_matrix(fmt, "h36m17", conversion))
    mark_ids = torch.as_tensor(marks.vertex_ids, device=device)
    mark_w = as_t(marks.weights)
    n_src = to_h36m.shape[1]

    # The track's annotation convention: the middle of each range to start, kept inside the range by a sigmoid.
    names = list(CONVENTION_RANGES_M)
    conv_lo = as_t([CONVENTION_RANGES_M[k][0] for k in names])
    span = as_t([CONVENTION_RANGES_M[k][1] - CONVENTION_RANGES_M[k][0] for k in names])
    logits = torch.zeros(len(names), dtype=dtype, device=device, requires_grad=opt.calibrate)

    def convention() -> dict[str, torch.Tensor]:
        values = conv_lo + span * torch.sigmoid(logits)
        return dict(zip(names, values, strict=True))

    def keypoints_2d(rot: torch.Tensor, transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = body(rot, betas, transl, vertex_ids=support)  # only the landmarks' vertices are skinned
        if fmt == "h36m17":
            return _project(out.joints_h36m, Kt) / scale, out.joints_h36m
        landmarks = torch.einsum("lk,nlkc->nlc", mark_w, out.vertices[:, mark_ids])
        landmarks = _conventional(landmarks, out.joints, convention())[:, :n_src]
        return torch.einsum("hs,nsc->nhc", to_h36m, _project(landmarks, Kt)) / scale, out.joints_h36m

    def data_term(p2: torch.Tensor) -> torch.Tensor:
        e = ((p2 - target) ** 2).sum(-1)
        s2 = opt.robust_scale**2
        return (c * s2 * e / (e + s2)).sum(-1).mean()

    def mean_residual(p2: torch.Tensor) -> float:
        return float(((p2 - target) ** 2).sum(-1).sqrt()[counted].mean())

    delta = torch.zeros((*rot0.shape[:-2], 3), dtype=dtype, device=device, requires_grad=True)
    with torch.no_grad():  # the prediction is pelvis-centred; the body model's origin is not its pelvis
        origin = pred.joints_h36m[:, 0].to(device, dtype) - body(rot0, betas, vertex_ids=support).joints_h36m[:, 0]
    transl = (as_t(placement.transl) + origin).requires_grad_(True)
    with torch.no_grad():
        before = mean_residual(keypoints_2d(rot0, transl)[0])
    groups = [{"params": [delta, transl]}] + ([{"params": [logits], "lr": 5 * opt.lr}] if opt.calibrate else [])
    optimiser = torch.optim.Adam(groups, lr=opt.lr)
    with torch.enable_grad():  # callers may run under no_grad (the evaluator does)
        for _ in range(opt.iterations):
            optimiser.zero_grad(set_to_none=True)
            p2, joints = keypoints_2d(rot0 @ roma.rotvec_to_rotmat(delta), transl)
            loss = data_term(p2) + opt.pose_prior * (delta**2).sum((-1, -2)).mean()
            if len(joints) >= 3:
                accel = joints[:-2] - 2 * joints[1:-1] + joints[2:]
                loss = loss + opt.smooth * (accel**2).sum((-1, -2)).mean()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        rot = rot0 @ roma.rotvec_to_rotmat(delta)
        after = mean_residual(keypoints_2d(rot, transl)[0])
        correction = float(np.degrees(float(delta.norm(dim=-1).mean())))
        fitted = {} if fmt == "h36m17" else {k: round(float(v), 4) for k, v in convention().items()}
    return repose(body, rot.detach(), pred.betas), RefineReport(before, after, correction, fitted)

