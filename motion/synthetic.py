"""Synthetic motion from the body model, written in the real datasets' on-disk schemas.

Run ``python -m motion.synthetic --out data/synthetic [--seed 0]``. It writes

- ``mesh_synthetic.pkl``: like MotionBERT's ``mesh_det_pw3d.pkl`` (``mesh_protocol.md`` §4.1-4.2), splits
  ``train`` / ``validation`` / ``test`` plus ``meta``;
- ``h36m_synthetic.pkl``: like MotionBERT's ``h36m_sh_conf_cam_source_final.pkl`` (``ssrstf.md`` §8.1), splits
  ``train`` / ``test`` (the same sequences as the mesh file's train / test splits) plus ``meta``.

Each sequence: a person (betas ~ N(0, 1) clipped to +-2.5) performing a chain of blended motion primitives
(:mod:`motion.synthetic_poses`: idle, walk, turn, reach, squat, wave) at 30 fps, grounded on the floor, filmed by a
static, panning or following camera 3-8 m away at 0.5-2 m height, projected into a 1920x1080 or 1080x1920 image
(focal 1000-1500 px), with detector-like 2D noise, confidences and dropped joints (:func:`detector_noise`).

Frames: world = y up, floor at y = 0; camera = x right, y down, z forward (metres). ``trans`` follows the body
model's convention: it is added **after** posing, so
``body.forward_axis_angle(smpl_pose, smpl_shape, trans).joints_h36m == joint_cam`` with ``smpl_pose[:, :3]`` the
global orientation in the camera frame.

Randomness: sequence i of split s draws from ``SeedSequence(seed, spawn_key=(s, i))``, so a sequence does not depend
on how many others are generated and the splits use disjoint streams.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from body_models import BodyModel, BodyModelData, load_body_model
from body_models.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle
from motion.synthetic_poses import FPS, PRIMITIVES, plan_trajectory, smooth_noise

GENERATOR_VERSION = "1"
MESH_FILE = "mesh_synthetic.pkl"
LIFTING_FILE = "h36m_synthetic.pkl"
CHUNK_FRAMES = 128  # frames per body-model call: caps the (T, V, 4, 4) skinning tensor at a few 100 MB
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
IMAGE_SIZES = ((1920, 1080), (1080, 1920))  # (w, h): landscape, portrait
NORMALISATION_RES = (1920, 1920)  # as 3DPW in mesh_protocol.md §4.6
FLIP = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)  # H36M-17 left <-> right
# Detector noise std (px) per H36M-17 joint for a person 500 px tall: extremities are harder.
BASE_SIGMA = np.array([2.0, 2.2, 3.2, 4.5, 2.2, 3.2, 4.5, 2.0, 2.0, 2.2, 2.5, 2.2, 3.5, 5.0, 2.2, 3.5, 5.0])
# Relative rate of dropped-joint bursts per joint (wrists and ankles are dropped most).
DROP_RATE = np.array([0.3, 0.5, 0.8, 1.5, 0.5, 0.8, 1.5, 0.3, 0.3, 0.5, 0.6, 0.6, 1.0, 2.0, 0.6, 1.0, 2.0])


@dataclass
class SyntheticSequence:
    """One synthetic track; T frames at :data:`FPS`.

    Attributes:
        name: track id (``source``), e.g. ``synth_train_0003``.
        camera_name: synthetic camera id (one per sequence).
        image_wh: (w, h) image size in pixels.
        intrinsics: (3, 3) pinhole matrix K (fx = fy = f, principal point near the centre).
        extrinsics: (T, 3, 4) world -> camera [R | t] per frame (the camera may pan or follow).
        betas: (10,) shape.
        pose: (T, 72) float64 axis-angle, joint 0 = global orientation in the camera frame.
        trans: (T, 3) float64 camera-frame translation, added after posing (see module docstring).
        joints_cam: (T, 17, 3) H36M-17 joints in the camera frame, metres.
        joints_2d_gt: (T, 17, 2) noise-free projection of ``joints_cam``, pixels.
        joints_2d: (T, 17, 2) detector-like noisy 2D joints, pixels.
        confidence: (T, 17) detector confidence in [0, 1].
        dropped: (T, 17) bool, joints the simulated detector lost (low confidence, wrong position).
        frame_action: (T,) str, dominant primitive per frame.
        primitives: primitives of the plan in order (repeats kept).
    """

    name: str
    camera_name: str
    image_wh: tuple[int, int]
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    betas: np.ndarray
    pose: np.ndarray
    trans: np.ndarray
    joints_cam: np.ndarray
    joints_2d_gt: np.ndarray
    joints_2d: np.ndarray
    confidence: np.ndarray
    dropped: np.ndarray
    frame_action: np.ndarray
    primitives: list[str]

    @property
    def n_frames(self) -> int:
        return self.pose.shape[0]

    @property
    def action(self) -> str:
        """Sequence label: its distinct primitives in order of first appearance, joined by '+'."""
        return "+".join(dict.fromkeys(self.primitives))


# ---------------------------------------------------------------------------------------------------------------------
# Camera


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """World -> camera rotations ``(..., 3, 3)`` for cameras at ``eye`` looking at ``target`` (both ``(..., 3)``).

    World is y up; the camera is x right, y down, z forward: rows of R are the camera axes in world coordinates.
    """
    z = target - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    rot = np.stack([x, y, z], axis=-2)
    c, s = np.cos(roll), np.sin(roll)
    roll_m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return roll_m @ rot


def _rotvec_np(v: np.ndarray) -> np.ndarray:
    """``(..., 3)`` rotation vectors (radians) -> ``(..., 3, 3)`` rotation matrices."""
    return axis_angle_to_rotmat(torch.from_numpy(np.ascontiguousarray(v))).numpy()


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection: ``(..., 3)`` camera-frame points (z > 0) -> ``(..., 2)`` pixels."""
    uvw = points @ K.T
    return uvw[..., :2] / uvw[..., 2:3]


def sample_camera(rng: np.random.Generator, root: np.ndarray, heading0: float, pelvis_height: float, n_frames: int
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str]:
    """Intrinsics, per-frame world->camera extrinsics ``(T, 3, 4)``, image (w, h) and camera mode.

    Args:
        root: (T, 3) world root (pelvis) positions, metres, y up.
        heading0: the person's initial yaw (the camera is more often in front than behind).
        pelvis_height: typical pelvis height (m): the camera aims there, not at the squatting pelvis.
    Modes: ``static`` (fixed camera aimed at the path's centre; only when the person stays within ~0.8 m),
    ``pan`` (fixed position, aim follows the smoothed root) and ``follow`` (camera translates with the smoothed
    root, as a handheld 3DPW camera does).
    """
    w, h = IMAGE_SIZES[int(rng.integers(2))]
    f = rng.uniform(1000.0, 1500.0)
    K = np.array([[f, 0.0, w / 2 + rng.normal(0, 8)], [0.0, f, h / 2 + rng.normal(0, 8)], [0.0, 0.0, 1.0]])
    # Keep a ~2.3 m tall box (raised arms) around the aim point inside ~90% of the short image side.
    d_min = max(3.0, f * 1.15 / (0.45 * min(w, h)))
    dist = rng.uniform(min(d_min, 7.5), 8.0)
    cam_h = rng.uniform(0.5, 2.0)
    az = heading0 + (rng.uniform(-np.pi / 3, np.pi / 3) if rng.random() < 0.6 else rng.uniform(-np.pi, np.pi))
    offset = np.array([np.sin(az) * dist, 0.0, np.cos(az) * dist])
    smooth = gaussian_filter1d(root, sigma=0.7 * FPS, axis=0, mode="nearest")
    centre = root.mean(axis=0)
    aim_jitter = rng.normal(0.0, [0.12, 0.08, 0.12])
    spread = np.linalg.norm((root - centre)[:, [0, 2]], axis=1).max()
    eye0 = np.array([centre[0], cam_h, centre[2]]) + offset
    mode = "static" if spread < 0.8 else str(rng.choice(["pan", "follow"]))
    if mode == "pan":
        d = np.linalg.norm((root - eye0)[:, [0, 2]], axis=1)
        if d.min() < 2.8 or d.max() > 9.0:
            mode = "follow"
    if mode == "static":
        eye = np.tile(eye0, (n_frames, 1))
        target = np.tile(centre, (n_frames, 1))
    elif mode == "pan":
        eye = np.tile(eye0, (n_frames, 1))
        target = smooth.copy()
    else:
        eye = smooth + offset
        eye[:, 1] = cam_h
        target = smooth.copy()
    target[:, 1] = pelvis_height
    target = target + aim_jitter
    rot = look_at(eye, target, roll=rng.normal(0.0, np.deg2rad(2.0)))
    if mode != "static":  # handheld: slow small wobble
        rot = _rotvec_np(np.deg2rad(0.4) * smooth_noise(rng, n_frames, 3, sigma_s=0.5)) @ rot
    t = -np.einsum("tij,tj->ti", rot, eye)
    return K, np.concatenate([rot, t[..., None]], axis=-1), (w, h), mode


# ---------------------------------------------------------------------------------------------------------------------
# Detector noise


def detector_noise(rng: np.random.Generator, gt2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detector-like 2D joints from noise-free ones.

    Args:
        gt2d: (T, 17, 2) noise-free pixels, H36M-17.
    Returns:
        joints (T, 17, 2) pixels, confidence (T, 17) in [0, 1], dropped (T, 17) bool.
    Model: heteroscedastic Gaussian noise, std = :data:`BASE_SIGMA` x sequence quality x slowly varying frame
    difficulty x (person height / 500 px)^0.7, half white, half temporally correlated (detectors jitter *and*
    drift); confidence decreases with the actual error (``exp(-err^2 / 2 tau^2)``, tau = 12 px at 500 px) plus a
    little noise. Dropped joints come in bursts of 1-10 frames (more at wrists/ankles): confidence 0-0.15 and a
    wrong position (the mirror joint, a large offset, or large jitter).
    """
    T = gt2d.shape[0]
    height = np.ptp(gt2d[..., 1], axis=1).clip(min=50.0)  # (T,) person extent in px
    size = (height / 500.0)[:, None]
    quality = rng.uniform(0.6, 1.5)
    difficulty = np.exp(0.3 * smooth_noise(rng, T, 1, sigma_s=1.0))
    sigma = BASE_SIGMA[None] * quality * difficulty * size**0.7  # (T, 17)
    eps = 0.6 * rng.standard_normal((T, 17, 2)) + 0.8 * smooth_noise(rng, T, 34, sigma_s=0.15).reshape(T, 17, 2)
    joints = gt2d + sigma[..., None] * eps
    err = np.linalg.norm(joints - gt2d, axis=-1)
    tau = 12.0 * size**0.7
    conf = 0.98 * np.exp(-0.5 * (err / tau) ** 2) - np.abs(rng.normal(0.0, 0.03, size=(T, 17)))
    dropped = np.zeros((T, 17), dtype=bool)
    rate = rng.uniform(0.001, 0.006)
    starts = rng.random((T, 17)) < rate * DROP_RATE[None]
    for t0, j in zip(*np.nonzero(starts), strict=True):
        t1 = min(T, t0 + int(rng.integers(1, 11)))
        mode = rng.choice(["mirror", "offset", "jitter"]) if FLIP[j] != j else rng.choice(["offset", "jitter"])
        scale = height[t0:t1, None]
        if mode == "mirror":  # left/right confusion, a classic detector failure
            joints[t0:t1, j] = gt2d[t0:t1, FLIP[j]] + sigma[t0:t1, j, None] * rng.standard_normal((t1 - t0, 2))
        elif mode == "offset":
            joints[t0:t1, j] = gt2d[t0:t1, j] + 0.12 * scale * rng.normal(size=2) + 3 * rng.normal(size=(t1 - t0, 2))
        else:
            joints[t0:t1, j] = gt2d[t0:t1, j] + 0.08 * scale * rng.standard_normal((t1 - t0, 2))
        conf[t0:t1, j] = rng.uniform(0.0, 0.15, size=t1 - t0)
        dropped[t0:t1, j] = True
    return joints, conf.clip(0.0, 1.0), dropped


# ---------------------------------------------------------------------------------------------------------------------
# Fast body evaluation


_REDUCED: weakref.WeakKeyDictionary[BodyModel, tuple[BodyModel, int]] = weakref.WeakKeyDictionary()
SOLE_BAND = 0.04  # m: foot vertices this close to the rest mesh's lowest point are the soles (ground contact)
FOOT_JOINTS = (7, 8, 10, 11)  # SMPL ankles and feet


def reduced_body(body: BodyModel) -> tuple[BodyModel, int]:
    """A body model restricted to the vertices the generator needs, and the number of sole vertices.

    The generator only needs the H36M-17 joints (regressed from a few hundred vertices) and the lowest sole point
    (ground contact), not the whole mesh: skinning ~10x fewer vertices makes a sequence ~10x faster. The reduced model
    is built from the same arrays through the public ``BodyModel`` constructor, so its ``joints_h36m`` equal the full
    model's (the tests check this against the full model): vertices = [soles, regressor support, 24 virtual vertices
    that carry the full model's rest joints (linear in betas), so the kinematic chain is unchanged].
    """
    if body in _REDUCED:
        return _REDUCED[body]
    v = body.v_template.double().numpy()
    weights = body.lbs_weights.double().numpy()
    foot = np.isin(weights.argmax(axis=1), FOOT_JOINTS)
    low = v[:, 1] < v[:, 1].min() + SOLE_BAND
    soles = np.nonzero(foot & low)[0] if (foot & low).any() else np.nonzero(low)[0]
    reg = body.J_regressor_h36m.double().numpy()
    support = np.setdiff1d(np.nonzero(np.abs(reg).sum(axis=0) > 0)[0], soles)
    keep = np.concatenate([soles, support])
    k, nb = body.num_joints, body.num_betas
    joint_rest = body.joint_template.double().numpy()
    joint_dirs = body.joint_shapedirs.double().numpy()
    posedirs = None
    if body.has_posedirs:  # buffer layout (9 (K-1), V 3) -> (V, 3, 9 (K-1)); virtual vertices get none
        pd = body.posedirs.double().numpy().reshape(-1, v.shape[0], 3)[:, keep].transpose(1, 2, 0)
        posedirs = np.concatenate([pd, np.zeros((k, 3, pd.shape[-1]))])
    data = BodyModelData(
        v_template=np.concatenate([v[keep], joint_rest]),
        shapedirs=np.concatenate([body.shapedirs.double().numpy()[keep], joint_dirs]),
        posedirs=posedirs,
        J_regressor=np.concatenate([np.zeros((k, len(keep))), np.eye(k)], axis=1),
        weights=np.concatenate([weights[keep], np.eye(k)]),
        parents=body.parents.numpy(), faces=np.zeros((1, 3), dtype=np.int64),
        J_regressor_h36m=np.concatenate([reg[:, keep], np.zeros((17, k))], axis=1),
        source=f"{body.source} (generator subset: {len(keep)} vertices)",
    )
    reduced = BodyModel(data, num_betas=nb).to(body.v_template.dtype)
    _REDUCED[body] = (reduced, len(soles))
    return reduced, len(soles)


# ---------------------------------------------------------------------------------------------------------------------
# Sequences


def generate_sequence(rng: np.random.Generator, body: BodyModel, name: str, n_frames: int,
                      camera_name: str | None = None) -> SyntheticSequence:
    """One sequence: plan poses, pose all frames at once (reduced model, see :func:`reduced_body`), ground, film it,
    add detector noise."""
    traj = plan_trajectory(rng, n_frames, FPS)
    betas = np.clip(rng.standard_normal(10), -2.5, 2.5)
    fast, n_soles = reduced_body(body)
    dtype = body.v_template.dtype
    rot_t = torch.from_numpy(traj.rotmats).to(dtype)
    betas_t = torch.from_numpy(betas).to(dtype)[None]
    with torch.no_grad():
        # All frames of the sequence in one call (or a few for long sequences, to bound memory).
        lowest, joints = [], []
        for chunk in torch.split(rot_t, CHUNK_FRAMES):
            out = fast(chunk, betas_t)
            lowest.append(out.vertices[..., :n_soles, 1].amin(dim=-1))
            joints.append(out.joints_h36m)
        j0 = body.rest_shape(betas_t)[1][0, 0].double().numpy()  # rest root joint: the pivot of the global rotation
    min_y = torch.cat(lowest).double().numpy()
    joints_h36m = torch.cat(joints).double().numpy()
    # Ground contact: the lowest sole vertex touches the floor (y = 0); lightly smoothed so foot switches don't jerk.
    lift = gaussian_filter1d(-min_y, sigma=1.5, mode="nearest")
    t_world = np.stack([traj.root_xz[:, 0], lift, traj.root_xz[:, 1]], axis=1)  # (T, 3), added after posing
    joints_world = joints_h36m + t_world[:, None]
    standing_pelvis = float(np.percentile(joints_h36m[:, 0, 1] - min_y, 90))  # pelvis height when upright
    K, ext, wh, _mode = sample_camera(rng, joints_world[:, 0], float(traj.heading[0]),
                                      max(standing_pelvis, 0.5), n_frames)
    R_wc, t_wc = ext[..., :3], ext[..., 3]
    joints_cam = np.einsum("tij,tkj->tki", R_wc, joints_world) + t_wc[:, None]
    # Camera-frame parameters: global orientation R_wc @ R_root; translation so that posing about j0 agrees.
    rot_cam = traj.rotmats.copy()
    rot_cam[:, 0] = R_wc @ traj.rotmats[:, 0]
    trans = np.einsum("tij,tj->ti", R_wc, t_world + j0) + t_wc - j0
    pose = rotmat_to_axis_angle(torch.from_numpy(rot_cam)).numpy().reshape(n_frames, 72)
    if (joints_cam[..., 2] < 0.5).any():
        raise RuntimeError(f"{name}: a joint came within 0.5 m of the camera plane (camera sampling bug)")
    gt2d = project(joints_cam, K)
    joints_2d, conf, dropped = detector_noise(rng, gt2d)
    return SyntheticSequence(
        name=name, camera_name=camera_name or f"cam_{name}", image_wh=wh, intrinsics=K, extrinsics=ext,
        betas=betas, pose=pose, trans=trans, joints_cam=joints_cam, joints_2d_gt=gt2d, joints_2d=joints_2d,
        confidence=conf, dropped=dropped, frame_action=traj.frame_primitive(),
        primitives=[s.primitive for s in traj.segments],
    )


def sequence_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The independent stream of sequence ``index`` of ``split``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLIT_CODES[split], index)))


def generate_sequences(n: int, seed: int, body: BodyModel, split: str = "train", frames_min: int = 60,
                       frames_max: int = 300) -> list[SyntheticSequence]:
    """``n`` sequences of ``split`` (named ``synth_{split}_{i:04d}``), lengths uniform in [frames_min, frames_max]."""
    if not 2 <= frames_min <= frames_max:
        raise ValueError(f"need 2 <= frames_min <= frames_max, got {frames_min}, {frames_max}")
    seqs = []
    for i in range(n):
        rng = sequence_rng(seed, split, i)
        n_frames = int(rng.integers(frames_min, frames_max + 1))
        name = f"synth_{split}_{i:04d}"
        seqs.append(generate_sequence(rng, body, name, n_frames, camera_name=f"synthcam_{split}_{i:04d}"))
    return seqs


# ---------------------------------------------------------------------------------------------------------------------
# Writing


def _per_frame(seqs: list[SyntheticSequence], fn: Any) -> np.ndarray:
    return np.concatenate([fn(s) for s in seqs], axis=0) if seqs else np.zeros((0,))


def _strings(seqs: list[SyntheticSequence], fn: Any) -> np.ndarray:
    return np.array([v for s in seqs for v in fn(s)], dtype=str) if seqs else np.zeros((0,), dtype=str)


def mesh_split(seqs: list[SyntheticSequence]) -> dict[str, np.ndarray]:
    """Per-frame arrays of one split in the ``mesh_det_pw3d.pkl`` schema (plus extras), N = total frames.

    Keys: joint_2d (N,17,2) f32 px; confidence (N,17,1) f32; joint_cam (N,17,3) f32 m; smpl_pose (N,72) f64;
    smpl_shape (N,10) f64; img_hw (N,2) int64 (h, w); source (N,) str; extras: trans (N,3) f64 m;
    cam_intrinsics (N,3,3) f64; cam_extrinsics (N,3,4) f64 world->camera; joint_2d_gt (N,17,2) f32 noise-free;
    action (N,) str (sequence's primitives joined by '+'); frame_action (N,) str (dominant primitive);
    camera_name (N,) str.
    """
    def rep(x: np.ndarray, s: SyntheticSequence) -> np.ndarray:
        return np.broadcast_to(x, (s.n_frames, *np.shape(x)))

    return {
        "joint_2d": _per_frame(seqs, lambda s: s.joints_2d).astype(np.float32),
        "confidence": _per_frame(seqs, lambda s: s.confidence[..., None]).astype(np.float32),
        "joint_cam": _per_frame(seqs, lambda s: s.joints_cam).astype(np.float32),
        "smpl_pose": _per_frame(seqs, lambda s: s.pose).astype(np.float64),
        "smpl_shape": _per_frame(seqs, lambda s: rep(s.betas, s)).astype(np.float64),
        "img_hw": _per_frame(seqs, lambda s: rep(np.array(s.image_wh[::-1]), s)).astype(np.int64),
        "source": _strings(seqs, lambda s: [s.name] * s.n_frames),
        "trans": _per_frame(seqs, lambda s: s.trans).astype(np.float64),
        "cam_intrinsics": _per_frame(seqs, lambda s: rep(s.intrinsics, s)).astype(np.float64),
        "cam_extrinsics": _per_frame(seqs, lambda s: s.extrinsics).astype(np.float64),
        "joint_2d_gt": _per_frame(seqs, lambda s: s.joints_2d_gt).astype(np.float32),
        "action": _strings(seqs, lambda s: [s.action] * s.n_frames),
        "frame_action": _strings(seqs, lambda s: s.frame_action),
        "camera_name": _strings(seqs, lambda s: [s.camera_name] * s.n_frames),
    }


def lifting_split(seqs: list[SyntheticSequence]) -> dict[str, np.ndarray]:
    """Per-frame arrays in the ``h36m_sh_conf_cam_source_final.pkl`` schema (``ssrstf.md`` §8.1), N = total frames.

    Keys: joint_2d (N,17,2) f32 noisy px; confidence (N,17,1) f32; joint3d_image (N,17,3) f32;
    joints_2.5d_image (N,17,3) f32 mm; 2.5d_factor (N,) f32 mm/px; camera_name, source, action (N,) str
    (``action`` = dominant primitive of the frame, so per-action metrics group like H36M's actions).

    2.5D model: ``joint3d_image = (u, v, (Z - Z_root) * f / Z_root)`` with (u, v) the noise-free projection, and
    ``2.5d_factor = 1000 * Z_root / f``. Root-relative ``joint3d_image * factor`` is then, in mm,
    ``(Z_root * (X/Z - X_root/Z_root), Z_root * (Y/Z - Y_root/Z_root), Z - Z_root)``: exact in depth, and in x, y
    exact for points on the root's depth plane; off that plane x, y are scaled by ``Z_root / Z`` (weak perspective
    about the root), an error of order ``(Z - Z_root) / Z_root`` times the point's lateral offset from the
    optical axis (a few mm to ~2 cm here, since cameras aim at the person).
    """
    def image3d(s: SyntheticSequence) -> np.ndarray:
        f = s.intrinsics[0, 0]
        z = s.joints_cam[..., 2]
        dz = (z - z[:, :1]) * f / z[:, :1]
        return np.concatenate([s.joints_2d_gt, dz[..., None]], axis=-1)

    def factor(s: SyntheticSequence) -> np.ndarray:
        return 1000.0 * s.joints_cam[:, 0, 2] / s.intrinsics[0, 0]

    img3d = _per_frame(seqs, image3d)
    fac = _per_frame(seqs, factor)
    return {
        "joint_2d": _per_frame(seqs, lambda s: s.joints_2d).astype(np.float32),
        "confidence": _per_frame(seqs, lambda s: s.confidence[..., None]).astype(np.float32),
        "joint3d_image": img3d.astype(np.float32),
        "joints_2.5d_image": (img3d * fac[:, None, None]).astype(np.float32),
        "2.5d_factor": fac.astype(np.float32),
        "camera_name": _strings(seqs, lambda s: [s.camera_name] * s.n_frames),
        "source": _strings(seqs, lambda s: [s.name] * s.n_frames),
        "action": _strings(seqs, lambda s: s.frame_action),
    }


def _meta(seed: int, body: BodyModel, splits: dict[str, list[SyntheticSequence]], kind: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "note": "synthetic data, not 3DPW / Human3.6M: generated by motion.synthetic from the body model below",
        "generator": "motion.synthetic", "version": GENERATOR_VERSION, "kind": kind, "fps": float(FPS),
        "seed": int(seed), "body_model": str(body.source), "primitives": list(PRIMITIVES),
        "image_sizes": [tuple(wh) for wh in IMAGE_SIZES],
        "camera_sizes": {s.camera_name: tuple(int(v) for v in s.image_wh) for seqs in splits.values() for s in seqs},
        "splits": {name: {"sequences": len(seqs), "frames": int(sum(s.n_frames for s in seqs)),
                          "seed_stream": f"SeedSequence({seed}, spawn_key=({SPLIT_CODES[name]}, i))"}
                   for name, seqs in splits.items()},
    }
    if kind.startswith("mesh"):
        meta["normalisation_res"] = NORMALISATION_RES  # 2D normalisation (w, h), as 3DPW (mesh_protocol.md §4.6)
        meta["conventions"] = ("metres; camera frame x right, y down, z forward; H36M-17 joint order; img_hw = (h, w);"
                               " trans added after posing; smpl_pose[:, :3] = global orientation in the camera frame")
    else:
        meta["conventions"] = ("H36M-17 joint order; joint3d_image = (u, v, (Z - Z_root) f / Z_root) in pixels; "
                               "2.5d_factor = 1000 Z_root / f (mm per pixel); joints_2.5d_image = joint3d_image * "
                               "2.5d_factor (mm); normalise with each camera's (w, h) from camera_sizes")
    return meta


def atomic_pickle(obj: Any, path: str | Path) -> Path:
    """Pickle ``obj`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh, protocol=4)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_mesh_file(path: str | Path, splits: dict[str, list[SyntheticSequence]], seed: int, body: BodyModel
                    ) -> Path:
    """Write ``{'train', 'validation', 'test', 'meta'}`` in the mesh schema (see :func:`mesh_split`)."""
    data: dict[str, Any] = {name: mesh_split(seqs) for name, seqs in splits.items()}
    data["meta"] = _meta(seed, body, splits, "mesh (mesh_det_pw3d.pkl schema)")
    return atomic_pickle(data, path)


def write_lifting_file(path: str | Path, splits: dict[str, list[SyntheticSequence]], seed: int, body: BodyModel
                       ) -> Path:
    """Write ``{'train', 'test', 'meta'}`` in the H36M lifting schema (see :func:`lifting_split`)."""
    data: dict[str, Any] = {name: lifting_split(seqs) for name, seqs in splits.items()}
    data["meta"] = _meta(seed, body, splits, "lifting (h36m_sh_conf_cam_source_final.pkl schema)")
    return atomic_pickle(data, path)


def generate_dataset(out: str | Path, seed: int = 0, body: BodyModel | None = None,
                     sequences: dict[str, int] | None = None, frames_min: int = 60, frames_max: int = 300
                     ) -> dict[str, Path]:
    """Generate all splits and write both files into ``out``; returns their paths."""
    body = body if body is not None else load_body_model()
    counts = sequences or {"train": 48, "validation": 8, "test": 12}
    splits = {name: generate_sequences(counts[name], seed, body, name, frames_min, frames_max)
              for name in ("train", "validation", "test")}
    out = Path(out)
    return {
        "mesh": write_mesh_file(out / MESH_FILE, splits, seed, body),
        "lifting": write_lifting_file(out / LIFTING_FILE, {"train": splits["train"], "test": splits["test"]},
                                      seed, body),
    }


def ensure_synthetic_data(folder: str | Path, seed: int = 0, body: BodyModel | None = None) -> dict[str, Path]:
    """Paths ``{'mesh', 'lifting'}`` of the synthetic files in ``folder``, generated (default sizes) if missing."""
    folder = Path(folder)
    paths = {"mesh": folder / MESH_FILE, "lifting": folder / LIFTING_FILE}
    if all(p.is_file() for p in paths.values()):
        return paths
    print(f"generating synthetic data in {folder} (seed {seed}) ...", file=sys.stderr)
    return generate_dataset(folder, seed, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m motion.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequences-train", type=int, default=48)
    parser.add_argument("--sequences-val", type=int, default=8)
    parser.add_argument("--sequences-test", type=int, default=12)
    parser.add_argument("--frames-min", type=int, default=60)
    parser.add_argument("--frames-max", type=int, default=300)
    parser.add_argument("--model", default=None, help="body model file/folder (default: $SMPL_MODEL_DIR or embedded)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    body = load_body_model(args.model)
    counts = {"train": args.sequences_train, "validation": args.sequences_val, "test": args.sequences_test}
    paths = generate_dataset(args.out, args.seed, body, counts, args.frames_min, args.frames_max)
    for kind, path in paths.items():
        print(f"{kind}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"{sum(counts.values())} sequences in {time.perf_counter() - start:.1f} s (body model: {body.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
