"""Synthetic motion from the body model, written in the real datasets' on-disk schemas.

Run ``python -m motion.synthetic --out data/synthetic [--seed 0] [--version 3|4]``. It writes

- ``mesh_synthetic.pkl``: like MotionBERT's ``mesh_det_pw3d.pkl`` (docs/protocols.md, data schema), splits
  ``train`` / ``validation`` / ``test`` plus ``meta``;
- ``h36m_synthetic.pkl``: like MotionBERT's ``h36m_sh_conf_cam_source_final.pkl`` (docs/encoder.md, pretraining), splits
  ``train`` / ``test`` (the same sequences as the mesh file's train / test splits) plus ``meta``.

Each sequence: a person (betas ~ N(0, 1) clipped to +-2.5) performing a chain of blended motion primitives
(:mod:`motion.synthetic_poses` lists the families; generator version 4 adds lying on the floor) at 30 fps, grounded
on the floor, filmed by a static, panning or following camera (:data:`DISTANCE_M`, :data:`CAMERA_HEIGHT_M`,
:data:`HFOV_DEG`, :data:`RESOLUTIONS`), seen by a simulated detector (:mod:`motion.detector_sim`) whose keypoints are
converted to H36M-17 as ``mesh.infer`` converts a user's file.

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

from body_models import BodyModel, BodyModelData, load_body_model, safe_load_pickle
from body_models.joint_sets import (
    DEFAULT_KEYPOINT_CONVERSION,
    KEYPOINT_CONVERSIONS,
    conversion_matrix,
    convert_keypoints,
)
from body_models.landmarks import Landmarks, detector_landmarks
from body_models.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle
from motion.detector_sim import DetectorOutput, annotation_convention, simulate_detector
from motion.synthetic_poses import FPS, HELD_OUT_FAMILY, PRIMITIVES, plan_trajectory, primitives_for, smooth_noise

GENERATOR_VERSION = "3"  # the default; 2: detector-faithful 2D (surface landmarks, COCO/Halpe, converted), broad
# motion; 3: per-sequence annotation conventions (shoulder, hip, ankle landmarks moved; motion and cameras as in 2);
# 4: 3 plus lying on the floor (falls, lying down, lying, getting up), drawn only in version 4 so that a version-3
# seed gives the same sequences as before
VERSION_FAMILIES: dict[str, tuple[str, ...]] = {"3": (), "4": ("lie",)}  # optional motion families per version
MESH_FILE = "mesh_synthetic.pkl"
LIFTING_FILE = "h36m_synthetic.pkl"
CHUNK_FRAMES = 128  # frames per body-model call: caps the (T, V, 4, 4) skinning tensor at a few 100 MB
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2, "test_heldout": 3}
# test_heldout: only the motion family held out of training (a generalisation split).
# Image sizes as (short side, long side): 480p, 720p, 1080p, 1440p, 4K; landscape or portrait.
RESOLUTIONS = ((480, 854), (720, 1280), (1080, 1920), (1440, 2560), (2160, 3840))
HFOV_DEG = (35.0, 120.0)  # horizontal field of view range
DISTANCE_M = (2.0, 15.0)  # camera-to-person distance range
CAMERA_HEIGHT_M = (0.3, 3.0)
DETECTOR_FORMATS = ("coco17", "halpe26")  # simulated detector joint orders, equally likely
NORMALISATION_RES = (1920, 1920)  # the legacy fixed 'image' map (3DPW's), kept for checkpoints trained with it


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
        joints_2d: (T, 17, 2) the simulated detector's keypoints converted to H36M-17, pixels (the network input).
        confidence: (T, 17) their confidence in [0, 1].
        detector: the simulated detections in their own joint order (:class:`motion.detector_sim.DetectorOutput`).
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
    detector: DetectorOutput
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


def sample_image(rng: np.random.Generator) -> tuple[tuple[int, int], float]:
    """Image (w, h) and focal length (px): 480p to 4K, landscape (70 %) or portrait, horizontal field of view
    35-120 degrees (the field of view across the image's width)."""
    short, long_ = RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
    w, h = (long_, short) if rng.random() < 0.7 else (short, long_)
    fov = np.deg2rad(rng.uniform(*HFOV_DEG))
    return (w, h), (w / 2) / np.tan(fov / 2)


def sample_camera(rng: np.random.Generator, root: np.ndarray, heading0: float, pelvis_height: float, n_frames: int,
                  min_distance: float = DISTANCE_M[0]) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str]:
    """Intrinsics, per-frame world->camera extrinsics ``(T, 3, 4)``, image (w, h) and camera mode.

    Args:
        root: (T, 3) world root (pelvis) positions, metres, y up.
        heading0: the person's initial yaw (the camera is more often in front than behind).
        pelvis_height: typical pelvis height (m): the camera aims near there, not at the squatting pelvis.
    The camera stands :data:`DISTANCE_M` away (chosen so the person fills 15-100 % of the image height), at
    :data:`CAMERA_HEIGHT_M`, aimed near the person with pitch from the height difference plus jitter and a roll;
    sometimes it aims off so that the body is cut by the image border. Modes: ``static`` (fixed camera aimed at the
    path's centre; only when the person stays within ~0.8 m), ``pan`` (fixed position, aim follows the smoothed
    root) and ``follow`` (camera translates with the smoothed root, as a handheld camera does).
    """
    (w, h), f = sample_image(rng)
    K = np.array([[f, 0.0, w / 2 + rng.normal(0, 0.004 * w)], [0.0, f, h / 2 + rng.normal(0, 0.004 * w)],
                  [0.0, 0.0, 1.0]])
    # Distance range that keeps a 1.8 m person between 15 % and 100 % of the image height.
    near = max(min_distance, f * 1.8 / (1.0 * h))
    far = max(min(DISTANCE_M[1], f * 1.8 / (0.15 * h)), min_distance)
    dist = rng.uniform(near, far) if far > near else near
    cam_h = rng.uniform(*CAMERA_HEIGHT_M)
    az = heading0 + (rng.uniform(-np.pi / 3, np.pi / 3) if rng.random() < 0.6 else rng.uniform(-np.pi, np.pi))
    offset = np.array([np.sin(az) * dist, 0.0, np.cos(az) * dist])
    smooth = gaussian_filter1d(root, sigma=0.7 * FPS, axis=0, mode="nearest")
    centre = root.mean(axis=0)
    aim_jitter = rng.normal(0.0, [0.12, 0.12, 0.12])
    if rng.random() < 0.15:  # aim off the person so that the image border cuts 10-40 % of the body (truncation)
        aim_jitter[1] += rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.35) * dist * h / f
    spread = np.linalg.norm((root - centre)[:, [0, 2]], axis=1).max()
    eye0 = np.array([centre[0], cam_h, centre[2]]) + offset
    mode = "static" if spread < 0.8 else str(rng.choice(["pan", "follow"]))
    if mode == "pan":
        d = np.linalg.norm((root - eye0)[:, [0, 2]], axis=1)
        if d.min() < max(1.5, 0.6 * dist) or d.max() > 1.6 * dist + 1.0:
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
    roll = rng.normal(0.0, np.deg2rad(3.0)) if rng.random() < 0.9 else rng.normal(0.0, np.deg2rad(12.0))
    rot = look_at(eye, target, roll=roll)
    if mode != "static":  # handheld: slow small wobble
        rot = _rotvec_np(np.deg2rad(0.4) * smooth_noise(rng, n_frames, 3, sigma_s=0.5)) @ rot
    t = -np.einsum("tij,tj->ti", rot, eye)
    return K, np.concatenate([rot, t[..., None]], axis=-1), (w, h), mode


# ---------------------------------------------------------------------------------------------------------------------
# Fast body evaluation


_REDUCED: weakref.WeakKeyDictionary[BodyModel, ReducedBody] = weakref.WeakKeyDictionary()
SOLE_BAND = 0.04  # m: foot vertices this close to the rest mesh's lowest point are the soles (ground contact)
FOOT_JOINTS = (7, 8, 10, 11)  # SMPL ankles and feet


@dataclass
class ReducedBody:
    """A body model restricted to the vertices the generator needs (see :func:`reduced_body`).

    Attributes:
        body: the reduced :class:`BodyModel` (its ``joints_h36m`` equal the full model's).
        n_soles: its first ``n_soles`` vertices are the soles.
        landmarks: the detector landmarks, indexed into the reduced vertices.
    """

    body: BodyModel
    n_soles: int
    landmarks: Landmarks


def reduced_body(body: BodyModel) -> ReducedBody:
    """A body model restricted to the vertices the generator needs: soles, the H36M regressor's support and the
    detector landmarks (:func:`body_models.landmarks.detector_landmarks`).

    Skinning ~15x fewer vertices than the full mesh makes a sequence that much faster. The reduced model is built from
    the same arrays through the public ``BodyModel`` constructor, so its ``joints_h36m`` equal the full model's (the
    tests check this against the full model): vertices = [soles, regressor support and landmarks, 24 virtual vertices
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
    landmarks = detector_landmarks(v, body.joint_template.double().numpy(), weights)
    support = np.setdiff1d(np.union1d(np.nonzero(np.abs(reg).sum(axis=0) > 0)[0], landmarks.support), soles)
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
    reduced = ReducedBody(BodyModel(data, num_betas=nb).to(body.v_template.dtype), len(soles),
                          landmarks.remap(keep))
    _REDUCED[body] = reduced
    return reduced


# ---------------------------------------------------------------------------------------------------------------------
# Sequences


def generate_sequence(rng: np.random.Generator, body: BodyModel, name: str, n_frames: int,
                      camera_name: str | None = None, primitives: tuple[str, ...] | None = None,
                      conversion: str = DEFAULT_KEYPOINT_CONVERSION) -> SyntheticSequence:
    """One sequence: plan poses (from ``primitives``; None = every family but the held-out one), pose all frames at
    once (reduced model, see :func:`reduced_body`), ground, film it, detect it (:mod:`motion.detector_sim`) and
    convert the detections to H36M-17 exactly as ``mesh.infer`` converts a user's file (keypoint ``conversion``:
    see :data:`body_models.joint_sets.KEYPOINT_CONVERSIONS`; it changes nothing else)."""
    traj = plan_trajectory(rng, n_frames, FPS, primitives=primitives)
    betas = np.clip(rng.standard_normal(10), -2.5, 2.5)
    reduced = reduced_body(body)
    fast = reduced.body
    dtype = body.v_template.dtype
    rot_t = torch.from_numpy(traj.rotmats).to(dtype)
    betas_t = torch.from_numpy(betas).to(dtype)[None]
    with torch.no_grad():
        # All frames of the sequence in one call (or a few for long sequences, to bound memory).
        lowest, joints, smpl, marks = [], [], [], []
        for chunk in torch.split(rot_t, CHUNK_FRAMES):
            out = fast(chunk, betas_t)
            # a body lying on the floor touches it with more than its soles: then the lowest generator vertex
            # (within a few cm of the full mesh's lowest point); the virtual joint vertices at the end are not skin
            skin = reduced.n_soles if traj.tilt is None else -body.num_joints
            contact = out.vertices[..., :skin, :]
            lowest.append(contact[..., 1].amin(dim=-1))
            joints.append(out.joints_h36m)
            smpl.append(out.joints)
            marks.append(reduced.landmarks.locate(out.vertices.double().numpy()))
        j0 = body.rest_shape(betas_t)[1][0, 0].double().numpy()  # rest root joint: the pivot of the global rotation
    min_y = torch.cat(lowest).double().numpy()
    joints_h36m = torch.cat(joints).double().numpy()
    # Ground contact: the lowest sole vertex (lying: the lowest vertex) touches the floor (y = 0); lightly smoothed so
    # foot switches don't jerk; the plan's lift (jumps, running flight) raises the body above it.
    lift = gaussian_filter1d(-min_y, sigma=1.5, mode="nearest") + traj.lift
    t_world = np.stack([traj.root_xz[:, 0], lift, traj.root_xz[:, 1]], axis=1)  # (T, 3), added after posing
    joints_world = joints_h36m + t_world[:, None]
    standing_pelvis = float(np.percentile(joints_h36m[:, 0, 1] - min_y, 90))  # pelvis height when upright
    # The detector's annotation convention, from a child stream: the motion, camera and detector-noise draws of a
    # seed stay those of generator version 2, only the landmarks move.
    smpl_body = torch.cat(smpl).double().numpy()
    landmarks_body, _ = annotation_convention(rng.spawn(1)[0], np.concatenate(marks), smpl_body)
    for attempt in range(8):  # a limb that comes too close to the camera: film again from further away
        K, ext, wh, _mode = sample_camera(rng, joints_world[:, 0], float(traj.heading[0]),
                                          max(standing_pelvis, 0.5), n_frames, DISTANCE_M[0] + attempt)
        R_wc, t_wc = ext[..., :3], ext[..., 3]

        def to_cam(points: np.ndarray, R_wc: np.ndarray = R_wc, t_wc: np.ndarray = t_wc) -> np.ndarray:
            return np.einsum("tij,tkj->tki", R_wc, points + t_world[:, None]) + t_wc[:, None]

        joints_cam, landmarks_cam = to_cam(joints_h36m), to_cam(landmarks_body)
        if (joints_cam[..., 2] >= 0.8).all() and (landmarks_cam[..., 2] >= 0.5).all():
            break
    else:
        raise RuntimeError(f"{name}: the body came within 0.5 m of the camera plane in 8 camera draws")
    # Camera-frame parameters: global orientation R_wc @ R_root; translation so that posing about j0 agrees.
    rot_cam = traj.rotmats.copy()
    rot_cam[:, 0] = R_wc @ traj.rotmats[:, 0]
    trans = np.einsum("tij,tj->ti", R_wc, t_world + j0) + t_wc - j0
    pose = rotmat_to_axis_angle(torch.from_numpy(rot_cam)).numpy().reshape(n_frames, 72)
    fmt = DETECTOR_FORMATS[int(rng.integers(len(DETECTOR_FORMATS)))]
    det = simulate_detector(rng, project(landmarks_cam, K), landmarks_cam, to_cam(smpl_body),
                            wh, fmt)
    h36m = convert_keypoints(det.keypoints, fmt, "h36m17", conversion)
    return SyntheticSequence(
        name=name, camera_name=camera_name or f"cam_{name}", image_wh=wh, intrinsics=K, extrinsics=ext,
        betas=betas, pose=pose, trans=trans, joints_cam=joints_cam, joints_2d_gt=project(joints_cam, K),
        joints_2d=h36m[..., :2], confidence=h36m[..., 2], detector=det, frame_action=traj.frame_primitive(),
        primitives=[s.primitive for s in traj.segments],
    )


def split_primitives(split: str, version: str = GENERATOR_VERSION) -> tuple[str, ...]:
    """The primitives a split draws from: the held-out family for ``test_heldout``, every other family of generator
    ``version`` otherwise."""
    if version not in VERSION_FAMILIES:
        raise ValueError(f"unknown generator version {version!r}: expected one of {sorted(VERSION_FAMILIES)}")
    return tuple(primitives_for("heldout" if split == "test_heldout" else "train", VERSION_FAMILIES[version]))


def sequence_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The independent stream of sequence ``index`` of ``split``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLIT_CODES[split], index)))


def generate_sequences(n: int, seed: int, body: BodyModel, split: str = "train", frames_min: int = 60,
                       frames_max: int = 300, first: int = 0, version: str = GENERATOR_VERSION,
                       conversion: str = DEFAULT_KEYPOINT_CONVERSION) -> list[SyntheticSequence]:
    """Sequences ``first .. first + n - 1`` of ``split`` (named ``synth_{split}_{i:04d}``), lengths uniform in
    [frames_min, frames_max], with the motion families of generator ``version``."""
    if not 2 <= frames_min <= frames_max:
        raise ValueError(f"need 2 <= frames_min <= frames_max, got {frames_min}, {frames_max}")
    seqs = []
    for i in range(first, first + n):
        rng = sequence_rng(seed, split, i)
        n_frames = int(rng.integers(frames_min, frames_max + 1))
        name = f"synth_{split}_{i:04d}"
        seqs.append(generate_sequence(rng, body, name, n_frames, camera_name=f"synthcam_{split}_{i:04d}",
                                      primitives=split_primitives(split, version), conversion=conversion))
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
    camera_name (N,) str; detector_keypoints (N,26,3) f32 the simulated detections in their own joint order (x, y px,
    confidence; COCO-17 rows use the first 17, the rest are 0); detector_format (N,) str 'coco17' / 'halpe26';
    occluded (N,26) bool self-occluded keypoints.
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
        "detector_keypoints": _per_frame(seqs, _halpe_layout).astype(np.float32),
        "detector_format": _strings(seqs, lambda s: [s.detector.fmt] * s.n_frames),
        "occluded": _per_frame(seqs, lambda s: _pad26(s.detector.occluded)),
    }


def _pad26(a: np.ndarray) -> np.ndarray:
    """(T, J) -> (T, 26), zero/False past the detector's own J (COCO-17 has no Halpe extras)."""
    out = np.zeros((a.shape[0], 26, *a.shape[2:]), dtype=a.dtype)
    out[:, :a.shape[1]] = a
    return out


def _halpe_layout(s: SyntheticSequence) -> np.ndarray:
    return _pad26(s.detector.keypoints)


def lifting_split(seqs: list[SyntheticSequence]) -> dict[str, np.ndarray]:
    """Per-frame arrays in the ``h36m_sh_conf_cam_source_final.pkl`` schema (docs/encoder.md), N = total frames.

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


def _meta(seed: int, body: BodyModel, splits: dict[str, list[SyntheticSequence]], kind: str,
          version: str = GENERATOR_VERSION, conversion: str = DEFAULT_KEYPOINT_CONVERSION) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "note": "synthetic data, not 3DPW / Human3.6M: generated by motion.synthetic from the body model below",
        "generator": "motion.synthetic", "version": version, "kind": kind, "fps": float(FPS),
        "keypoint_conversion": conversion,
        "seed": int(seed), "body_model": str(body.source), "primitives": list(PRIMITIVES),
        "held_out_family": HELD_OUT_FAMILY,
        "split_primitives": {name: list(split_primitives(name, version)) for name in splits},
        "resolutions": [tuple(r) for r in RESOLUTIONS], "hfov_deg": HFOV_DEG, "distance_m": DISTANCE_M,
        "camera_height_m": CAMERA_HEIGHT_M, "detector_formats": list(DETECTOR_FORMATS),
        "camera_sizes": {s.camera_name: tuple(int(v) for v in s.image_wh) for seqs in splits.values() for s in seqs},
        "splits": {name: {"sequences": len(seqs), "frames": int(sum(s.n_frames for s in seqs)),
                          "seed_stream": f"SeedSequence({seed}, spawn_key=({SPLIT_CODES[name]}, i))"}
                   for name, seqs in splits.items()},
    }
    if kind.startswith("mesh"):
        meta["normalisation_res"] = NORMALISATION_RES  # the legacy fixed 'image' map; new models use 'track_box'
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


def write_mesh_file(path: str | Path, splits: dict[str, list[SyntheticSequence]], seed: int, body: BodyModel,
                    version: str = GENERATOR_VERSION, conversion: str = DEFAULT_KEYPOINT_CONVERSION) -> Path:
    """Write ``{'train', 'validation', 'test', 'meta'}`` in the mesh schema (see :func:`mesh_split`)."""
    data: dict[str, Any] = {name: mesh_split(seqs) for name, seqs in splits.items()}
    data["meta"] = _meta(seed, body, splits, "mesh (mesh_det_pw3d.pkl schema)", version, conversion)
    return atomic_pickle(data, path)


def write_lifting_file(path: str | Path, splits: dict[str, list[SyntheticSequence]], seed: int, body: BodyModel,
                       version: str = GENERATOR_VERSION, conversion: str = DEFAULT_KEYPOINT_CONVERSION) -> Path:
    """Write ``{'train', 'test', 'meta'}`` in the H36M lifting schema (see :func:`lifting_split`)."""
    data: dict[str, Any] = {name: lifting_split(seqs) for name, seqs in splits.items()}
    data["meta"] = _meta(seed, body, splits, "lifting (h36m_sh_conf_cam_source_final.pkl schema)", version,
                         conversion)
    return atomic_pickle(data, path)


DEFAULT_COUNTS = {"train": 48, "validation": 8, "test": 12, "test_heldout": 8}


def _generate_job(job: tuple[int, str, int, int, int, int, str | None, str, str]) -> list[SyntheticSequence]:
    """Worker of :func:`generate_splits`: ``(seed, split, lo, hi, frames_min, frames_max, model, version,
    conversion)`` -> sequences ``lo .. hi - 1`` of ``split``."""
    seed, split, lo, hi, frames_min, frames_max, model, version, conversion = job
    torch.set_num_threads(1)
    return generate_sequences(hi - lo, seed, load_body_model(model), split, frames_min, frames_max, first=lo,
                              version=version, conversion=conversion)


def generate_splits(counts: dict[str, int], seed: int, body: BodyModel, frames_min: int = 60, frames_max: int = 300,
                    workers: int = 1, model: str | None = None, version: str = GENERATOR_VERSION,
                    conversion: str = DEFAULT_KEYPOINT_CONVERSION) -> dict[str, list[SyntheticSequence]]:
    """Every split's sequences; with ``workers`` > 1, in that many processes (each loads the body model from
    ``model``, the same file as ``body``). Sequence i of a split is the same whatever the number of workers."""
    if workers <= 1:
        return {name: generate_sequences(n, seed, body, name, frames_min, frames_max, version=version,
                                         conversion=conversion)
                for name, n in counts.items()}
    import multiprocessing

    jobs = []
    for name, n in counts.items():
        step = max(1, -(-n // (4 * workers)))
        jobs += [(seed, name, lo, min(n, lo + step), frames_min, frames_max, model, version, conversion)
                 for lo in range(0, n, step)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_generate_job, jobs)
    out: dict[str, list[SyntheticSequence]] = {name: [] for name in counts}
    for job, seqs in zip(jobs, parts, strict=True):
        out[job[1]] += seqs
    return out


def generate_dataset(out: str | Path, seed: int = 0, body: BodyModel | None = None,
                     sequences: dict[str, int] | None = None, frames_min: int = 60, frames_max: int = 300,
                     workers: int = 1, model: str | None = None, version: str = GENERATOR_VERSION,
                     conversion: str = DEFAULT_KEYPOINT_CONVERSION) -> dict[str, Path]:
    """Generate all splits (generator ``version``, keypoint ``conversion``) and write both files into ``out``;
    returns their paths.

    ``sequences`` = counts per split (default :data:`DEFAULT_COUNTS`; ``test_heldout`` holds only the held-out motion
    family). The lifting file gets the train, test and test_heldout splits.
    """
    body = body if body is not None else load_body_model(model)
    counts = {**DEFAULT_COUNTS, **(sequences or {})}
    split_primitives("train", version)  # an unknown version or conversion fails before any work
    conversion_matrix("coco17", "h36m17", conversion)
    splits = generate_splits(counts, seed, body, frames_min, frames_max, workers, model, version, conversion)
    out = Path(out)
    lifting = {name: splits[name] for name in ("train", "test", "test_heldout") if name in splits}
    return {
        "mesh": write_mesh_file(out / MESH_FILE, splits, seed, body, version, conversion),
        "lifting": write_lifting_file(out / LIFTING_FILE, lifting, seed, body, version, conversion),
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
    parser.add_argument("--sequences-heldout", type=int, default=8,
                        help="test_heldout split: only the motion family held out of training")
    parser.add_argument("--workers", type=int, default=1, help="processes (sequences are the same for any number)")
    parser.add_argument("--frames-min", type=int, default=60)
    parser.add_argument("--frames-max", type=int, default=300)
    parser.add_argument("--model", default=None, help="body model file/folder (default: $SMPL_MODEL_DIR or embedded)")
    parser.add_argument("--version", default=GENERATOR_VERSION, choices=sorted(VERSION_FAMILIES),
                        help="generator version: 4 adds lying on the floor (falls, lying, getting up) to version 3's "
                        f"motion (default {GENERATOR_VERSION}; a seed's sequences of one version never change)")
    parser.add_argument("--conversion", default=DEFAULT_KEYPOINT_CONVERSION, choices=KEYPOINT_CONVERSIONS,
                        help="detector -> H36M-17 keypoint conversion of the network's 2D input: 'fitted' lands on the "
                        "joint centres (body_models/fitted_conversion.py; the default, as for the shipped models), "
                        "'midpoint' is MotionBERT's rule; recorded in the files and in every model trained on them "
                        "(docs/protocols.md, joint sets)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    body = load_body_model(args.model)
    counts = {"train": args.sequences_train, "validation": args.sequences_val, "test": args.sequences_test,
              "test_heldout": args.sequences_heldout}
    paths = generate_dataset(args.out, args.seed, body, counts, args.frames_min, args.frames_max, args.workers,
                             args.model, args.version, args.conversion)
    for kind, path in paths.items():
        print(f"{kind}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    frames = sum(v["frames"] for v in safe_load_pickle(paths["mesh"])["meta"]["splits"].values())
    took = time.perf_counter() - start
    print(f"{sum(counts.values())} sequences, {frames} frames in {took:.1f} s ({frames / took:.0f} frames/s; "
          f"body model: {body.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
