"""Convert the official 3DPW release to the project's mesh schema (``mesh_det_pw3d.pkl``, docs/protocols.md).

Usage::

    python -m mesh.data.prepare_3dpw --root PATH/3DPW --out data/mesh/mesh_det_pw3d.pkl [--smpl DIR] [--gendered]

Input: ``PATH/sequenceFiles/{train,validation,test}/*.pkl`` (Python 2 pickles, read with the project's restricted
unpickler) and, optionally, ``PATH/imageFiles/<sequence>/image_XXXXX.jpg`` (only for the image sizes; only the
header of one image per sequence is read). The full release (about 75k person-frames) takes about two minutes on
two CPU cores, most of it in the body model for ``joint_cam``.

Output: one pickle ``{'train': {...}, 'validation': {...}, 'test': {...}, 'meta': {...}}``; each split is a dict of
per-frame arrays, frames of a track contiguous and in temporal order:

- ``joint_2d`` (N, 17, 2) float32, pixels, H36M-17, converted from the release's ``poses2d`` (OpenPose-18) with
  ``body_models.convert_keypoints`` (pelvis = mid-hip, thorax = neck, spine = midway, head = mid-ear);
- ``confidence`` (N, 17, 1) float32, OpenPose scores (a derived joint gets the lowest score of its sources);
- ``joint_cam`` (N, 17, 3) float32, metres: H36M-17 joints of the ground-truth mesh in the camera frame, from the
  body model named in ``meta['body_model']`` (not used by the mesh code);
- ``smpl_pose`` (N, 72) float64 axis-angle, radians, global orientation in the camera frame (``R_c @ R_world``);
- ``smpl_shape`` (N, 10) float64, the first 10 betas (some releases store more);
- ``trans`` (N, 3) float64, metres, camera-frame SMPL translation (see :func:`world_to_camera`);
- ``img_hw`` (N, 2) int64 (height, width); ``cam_intrinsics`` (N, 3, 3) float64;
- ``source`` (N,) str track ids, ``gender`` (N,) 'm' / 'f', ``frame_index`` (N,) int64 (30 Hz sample index in the
  sequence), ``image_id`` (N,) int64 (the release's ``img_frame_ids``, the image number in ``image_XXXXX.jpg``).

Rules (also written to ``meta``):

- **Valid frame**: ``campose_valid`` true AND a non-empty ``poses2d`` row (not all zeros: the release zeroes frames
  with fewer than 6 detected joints). Other frames are dropped and counted per reason in the printed summary and in
  ``meta['dropped']``.
- **Track splitting**: a track is a maximal run of consecutive valid frames of one (sequence, actor). The first run
  is named ``{sequence}_{actor:03d}`` (so an unbroken track has MotionBERT's name); later runs, after a gap, get
  ``_s1``, ``_s2``, ... (``courtyard_arguing_00_000_s1``). The gap is never bridged: clips are cut per run of
  equal ``source`` (``motion.data.clips``), so a clip never jumps over dropped frames. Runs shorter than a clip are
  stretched by the clip cutter (repeated frames); the summary counts them.
- **Image size**: from the first ``.jpg`` in ``imageFiles/<sequence>/`` when present (PIL if installed, else the
  JPEG SOF marker), otherwise from ``cam_intrinsics``: ``w = 2 cx``, ``h = 2 cy``, each snapped to 1080 or 1920
  (the only sizes in the release). ``meta['img_hw_source']`` says which, per sequence. The 2D normalisation of the
  protocol uses a fixed 1920 x 1920 anyway (``meta['normalisation_res']``; docs/protocols.md, 2D normalisation).
- **Body model**: the neutral model (``--smpl`` if given, else the embedded open default) for ``joint_cam`` and for
  the root joint used by the translation conversion; ``--gendered`` uses the actor's male / female model from the
  ``--smpl`` folder instead (3DPW's fits are gendered). Which one is recorded in ``meta``.

Differences from MotionBERT's ``mesh_det_pw3d.pkl``: MotionBERT's 2D inputs came from its own detector, not the
release's ``poses2d``, and its valid-frame rule and track handling are undocumented; numbers on this file are
therefore close to, not identical with, the MotionBERT protocol (MotionBERT#150). Facts to reproduce, unverified
here (3DPW is licensed and not on this machine): 30 fps; MotionBERT's file has 22,732 train frames in 34 tracks (one
per (sequence, actor): it does not split tracks) and 35,515 test frames.
"""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch

from body_models import (
    BodyModel,
    BodyModelFileError,
    UnsafePickleError,
    convert_keypoints,
    load_body_model,
    safe_load_pickle,
)
from body_models.joint_sets import KEYPOINT_CONVERSIONS
from body_models.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle

SPLITS = ("train", "validation", "test")
FPS = 30
NORMALISATION_RES = (1920, 1920)  # fixed 3DPW normalisation of the protocol (docs/protocols.md, 2D normalisation)
IMAGE_SIDES = (1080, 1920)  # the release's images are 1080 x 1920 (portrait) or 1920 x 1080
FORMAT = "mesh_det_pw3d/prepare_3dpw/v1"
_CHUNK = 512  # frames per body-model call (bounds memory at 6890 vertices)
_ORTHO_TOL = 1e-3  # cam_poses rotations further than this from orthonormal are an error, not rounding


class Pw3dError(ValueError):
    """The 3DPW release is missing or malformed; the message names the file, the key and the problem."""


@dataclass
class Sequence:
    """One validated sequence file (A actors, N frames at 30 Hz).

    Attributes:
        name: sequence name (``sequence`` key).
        path: the ``.pkl`` it came from.
        genders: (A,) 'm' / 'f'.
        betas: A arrays (10,) float64 (first 10 of the release's betas).
        poses: A arrays (N, 72) float64, world-frame axis-angle.
        trans: A arrays (N, 3) float64, world-frame SMPL translation, metres.
        poses2d: A arrays (N, 18, 3) float64, OpenPose-18 (x, y pixels, confidence).
        campose_valid: A arrays (N,) bool.
        cam_poses: (N, 4, 4) float64 world-to-camera extrinsics.
        cam_intrinsics: (3, 3) float64.
        img_frame_ids: (N,) int64 image numbers.
    """

    name: str
    path: Path
    genders: list[str]
    betas: list[np.ndarray]
    poses: list[np.ndarray]
    trans: list[np.ndarray]
    poses2d: list[np.ndarray]
    campose_valid: list[np.ndarray]
    cam_poses: np.ndarray
    cam_intrinsics: np.ndarray
    img_frame_ids: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.cam_poses)

    @property
    def num_actors(self) -> int:
        return len(self.genders)


@dataclass
class SplitStats:
    """Counts for the summary of one split."""

    sequences: int = 0
    person_tracks: int = 0
    tracks: int = 0
    short_tracks: int = 0  # output tracks shorter than 16 frames (one clip of the protocol)
    frames_total: int = 0
    frames_kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"sequences": self.sequences, "person_tracks": self.person_tracks, "tracks": self.tracks,
                "tracks_shorter_than_16": self.short_tracks, "frames_total": self.frames_total,
                "frames_kept": self.frames_kept, "dropped": dict(self.dropped)}


# ---------------------------------------------------------------------------------------------------- reading


def _per_actor(raw: dict, key: str, path: Path, num_actors: int) -> list[Any]:
    value = raw[key]
    if not isinstance(value, (list, tuple)) and not (isinstance(value, np.ndarray) and value.ndim >= 1):
        raise Pw3dError(f"{path}: key '{key}' should be a list with one entry per actor, got {type(value).__name__}")
    if len(value) != num_actors:
        raise Pw3dError(f"{path}: key '{key}' has {len(value)} entries, 'genders' has {num_actors} actors")
    return list(value)


def _array(value: Any, path: Path, what: str, shape: tuple[int | None, ...], dtype: type = np.float64) -> np.ndarray:
    """``value`` as an array of ``shape`` (None = any size); a clear error naming file and key otherwise."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise Pw3dError(f"{path}: {what} is not a numeric array ({err})") from None
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise Pw3dError(f"{path}: {what} has shape {arr.shape}, expected {want}")
    return arr


_REQUIRED = {
    "sequence": "str", "genders": "list of 'm'/'f'", "betas": "list of (>=10,)", "poses": "list of (N, 72)",
    "trans": "list of (N, 3)", "poses2d": "list of (N, 3, 18)", "cam_poses": "(N, 4, 4)",
    "cam_intrinsics": "(3, 3)", "campose_valid": "list of (N,)",
}


def read_sequence(path: str | Path) -> Sequence:
    """Read and validate one official 3DPW sequence file (shapes, lengths, genders; NaNs are checked later, on the
    frames that are kept).

    Raises:
        Pw3dError: unreadable file, missing key, wrong shape or inconsistent lengths (message: file, key, problem).
    """
    path = Path(path)
    try:
        raw = safe_load_pickle(path)
    except (FileNotFoundError, UnsafePickleError, pickle.UnpicklingError) as err:
        raise Pw3dError(str(err)) from None
    if not isinstance(raw, dict):
        raise Pw3dError(f"{path}: expected a dict (a 3DPW sequence file), found {type(raw).__name__}")
    for key, what in _REQUIRED.items():
        if key not in raw:
            raise Pw3dError(f"{path}: missing key '{key}' (expected {what}); keys present: {sorted(map(str, raw))}")
    genders = [str(g) for g in _per_actor(raw, "genders", path, len(raw["genders"]))]
    bad = [g for g in genders if g not in ("m", "f")]
    if bad or not genders:
        raise Pw3dError(f"{path}: key 'genders' must list 'm' / 'f' per actor, got {genders}")
    a = len(genders)
    cam_poses = _array(raw["cam_poses"], path, "'cam_poses'", (None, 4, 4))
    n = len(cam_poses)
    intr = _array(raw["cam_intrinsics"], path, "'cam_intrinsics'", (3, 3))
    betas, poses, trans, poses2d, valid = [], [], [], [], []
    for i, b in enumerate(_per_actor(raw, "betas", path, a)):
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if b.size < 10:
            raise Pw3dError(f"{path}: 'betas'[actor {i}] has {b.size} values, expected at least 10")
        betas.append(b[:10].copy())  # some releases store more components: SMPL uses the first 10
    for i, p in enumerate(_per_actor(raw, "poses", path, a)):
        poses.append(_array(p, path, f"'poses'[actor {i}]", (n, 72)))
    for i, t in enumerate(_per_actor(raw, "trans", path, a)):
        trans.append(_array(t, path, f"'trans'[actor {i}]", (n, 3)))
    for i, p in enumerate(_per_actor(raw, "poses2d", path, a)):
        # Stored as rows (x, y, confidence) x 18 joints; the project uses (joints, channels).
        poses2d.append(_array(p, path, f"'poses2d'[actor {i}]", (n, 3, 18)).transpose(0, 2, 1))
    for i, v in enumerate(_per_actor(raw, "campose_valid", path, a)):
        valid.append(_array(v, path, f"'campose_valid'[actor {i}]", (n,), dtype=np.float64) != 0)
    if "img_frame_ids" in raw:
        frame_ids = _array(raw["img_frame_ids"], path, "'img_frame_ids'", (n,), dtype=np.int64)
    else:  # not used for the conversion itself; the images are numbered by the 30 Hz sample in the release
        frame_ids = np.arange(n, dtype=np.int64)
    return Sequence(name=str(raw["sequence"]), path=path, genders=genders, betas=betas, poses=poses, trans=trans,
                    poses2d=poses2d, campose_valid=valid, cam_poses=cam_poses, cam_intrinsics=intr,
                    img_frame_ids=frame_ids)


# ------------------------------------------------------------------------------------------- frame validity


def frame_validity(campose_valid: np.ndarray, poses2d: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Which frames to keep, and why the others go.

    Args:
        campose_valid: (N,) bool.
        poses2d: (N, 18, 3) OpenPose detections; an all-zero row means "no detection" in the release.
    Returns:
        keep (N,) bool, and counts of dropped frames per reason ('campose_invalid', 'no_poses2d', 'both').
    """
    has_2d = np.abs(np.nan_to_num(poses2d, nan=1.0)).reshape(len(poses2d), -1).sum(axis=1) > 0
    keep = campose_valid & has_2d
    reasons = {
        "campose_invalid": int((~campose_valid & has_2d).sum()),
        "no_poses2d": int((campose_valid & ~has_2d).sum()),
        "both": int((~campose_valid & ~has_2d).sum()),
    }
    return keep, reasons


def runs(keep: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of maximal runs of True in ``keep`` (N,) bool, end exclusive."""
    padded = np.concatenate([[False], keep.astype(bool), [False]])
    edges = np.nonzero(padded[1:] != padded[:-1])[0]
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def track_name(sequence: str, actor: int, segment: int) -> str:
    """``{sequence}_{actor:03d}`` for the first run of valid frames, ``..._s{k}`` for the k-th later run."""
    base = f"{sequence}_{actor:03d}"
    return base if segment == 0 else f"{base}_s{segment}"


# ----------------------------------------------------------------------------------------- camera frame


def world_to_camera(poses: np.ndarray, trans: np.ndarray, extrinsics: np.ndarray, root_rest: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Move SMPL parameters from the world frame into the camera frame.

    SMPL rotates the body about its root joint: a world point is ``x = R (x_b - J0) + J0 + t`` (``x_b`` the body posed
    with identity global orientation, ``J0`` the rest root joint of the betas, ``t`` = trans). The camera sees
    ``x_c = R_c x + t_c = (R_c R) (x_b - J0) + R_c (J0 + t) + t_c``, which is again SMPL's form with
    ``R' = R_c R`` and ``t' = R_c (J0 + t) + t_c - J0``: the root joint moves with the full extrinsic, the origin
    does not (``t' = R_c t + t_c`` would be wrong by ``(R_c - I) J0``).

    Args:
        poses: (N, 72) world-frame axis-angle, radians.
        trans: (N, 3) world-frame translation, metres.
        extrinsics: (N, 4, 4) world-to-camera ``[R_c | t_c]``.
        root_rest: (3,) or (N, 3) rest root joint ``J0(betas)`` of the body model, metres.
    Returns:
        camera-frame poses (N, 72) float64 (only joint 0 changes) and translation (N, 3) float64.
    """
    rot_c = torch.as_tensor(extrinsics[:, :3, :3], dtype=torch.float64)
    rot_c = roma.special_procrustes(rot_c)  # exact rotations (the release stores them to float precision)
    t_c = torch.as_tensor(extrinsics[:, :3, 3], dtype=torch.float64)
    glob = axis_angle_to_rotmat(torch.as_tensor(poses[:, :3], dtype=torch.float64))
    out = np.array(poses, dtype=np.float64, copy=True)
    out[:, :3] = rotmat_to_axis_angle(rot_c @ glob).numpy()
    j0 = torch.as_tensor(np.broadcast_to(root_rest, trans.shape).copy(), dtype=torch.float64)
    root_world = j0 + torch.as_tensor(trans, dtype=torch.float64)
    new_trans = (rot_c @ root_world.unsqueeze(-1)).squeeze(-1) + t_c - j0
    return out, new_trans.numpy()


# ------------------------------------------------------------------------------------------ image sizes


def jpeg_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of a JPEG from its SOF marker, reading only the header (no decoder needed)."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":
            raise ValueError(f"{path}: not a JPEG (no SOI marker)")
        while True:
            byte = fh.read(1)
            while byte and byte != b"\xff":  # skip to the next marker
                byte = fh.read(1)
            while byte == b"\xff":  # markers may be padded with extra 0xFF bytes
                byte = fh.read(1)
            if not byte:
                raise ValueError(f"{path}: no SOF marker before the end of the file")
            marker = byte[0]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length field
                continue
            (length,) = struct.unpack(">H", fh.read(2))
            # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC) carry: precision (1), height (2), width (2).
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                _, height, width = struct.unpack(">BHH", fh.read(5))
                return int(height), int(width)
            fh.seek(length - 2, os.SEEK_CUR)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file: PIL's lazy header read if installed, else :func:`jpeg_size`."""
    try:
        from PIL import Image
    except ImportError:
        return jpeg_size(path)
    with Image.open(path) as img:  # opening reads the header only; pixels are decoded on demand
        width, height = img.size
    return int(height), int(width)


def size_from_intrinsics(intrinsics: np.ndarray) -> tuple[int, int]:
    """(height, width) guessed from the principal point: ``2 cx``, ``2 cy``, each snapped to 1080 or 1920."""
    snap = [min(IMAGE_SIDES, key=lambda s, v=v: abs(s - v)) for v in (2 * intrinsics[1, 2], 2 * intrinsics[0, 2])]
    return snap[0], snap[1]


def sequence_image_size(root: Path, seq: Sequence) -> tuple[tuple[int, int], str]:
    """(height, width) of the sequence's images and where it came from (for ``meta['img_hw_source']``)."""
    folder = root / "imageFiles" / seq.name
    first = next(iter(sorted(folder.glob("*.jpg"))), None) if folder.is_dir() else None
    if first is not None:
        try:
            return image_size(first), f"image file {first.relative_to(root)}"
        except (OSError, ValueError, struct.error) as err:
            print(f"warning: {first}: unreadable image header ({err}); using cam_intrinsics", file=sys.stderr)
    return size_from_intrinsics(seq.cam_intrinsics), "cam_intrinsics principal point (2 cx, 2 cy snapped)"


# ------------------------------------------------------------------------------------------- conversion


def _check_finite(seq: Sequence, actor: int, keep: np.ndarray) -> None:
    """NaN/inf in a kept frame is an error naming file, key, actor and frame (dropped frames may hold anything)."""
    fields = {"poses": seq.poses[actor], "trans": seq.trans[actor], "poses2d": seq.poses2d[actor],
              "cam_poses": seq.cam_poses}
    for key, arr in fields.items():
        bad = keep & ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if bad.any():
            raise Pw3dError(f"{seq.path}: NaN/inf in '{key}' (actor {actor}) at frame {int(np.argmax(bad))}; "
                            f"{int(bad.sum())} kept frame(s) affected")
    for key, arr in (("betas", seq.betas[actor]), ("cam_intrinsics", seq.cam_intrinsics)):
        if not np.isfinite(arr).all():
            raise Pw3dError(f"{seq.path}: NaN/inf in '{key}'" + (f" (actor {actor})" if key == "betas" else ""))


def _check_extrinsics(seq: Sequence, keep: np.ndarray) -> None:
    rot = seq.cam_poses[keep, :3, :3]
    err = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2)) if len(rot) else np.zeros(0)
    if (err > _ORTHO_TOL).any():
        frame = int(np.nonzero(keep)[0][np.argmax(err)])
        raise Pw3dError(f"{seq.path}: 'cam_poses' at frame {frame} is not a rigid transform "
                        f"(|R R^T - I| = {err.max():.2g})")


class BodyModels:
    """The body model(s) used for ``joint_cam`` and the root joint: one neutral model, or one per gender."""

    def __init__(self, smpl: str | Path | None, gendered: bool) -> None:
        if gendered and smpl is None:
            raise Pw3dError("--gendered needs --smpl pointing at a folder with SMPL_MALE and SMPL_FEMALE models")
        genders = {"m": "male", "f": "female"} if gendered else {"m": "neutral", "f": "neutral"}
        cache: dict[str, BodyModel] = {}
        self.models: dict[str, BodyModel] = {}
        for g, name in genders.items():
            if name not in cache:
                # float64: the camera-frame mesh must match the transformed world mesh to well under a millimetre.
                cache[name] = load_body_model(smpl, gender=name).to(torch.float64)
            self.models[g] = cache[name]
        self.description = {name: model.source for name, model in cache.items()}

    @torch.no_grad()
    def root_rest(self, gender: str, betas: np.ndarray) -> np.ndarray:
        """Rest root joint J0 (3,) of ``betas`` (10,), metres."""
        _, joints = self.models[gender].rest_shape(torch.as_tensor(betas, dtype=torch.float64))
        return joints[0].numpy()

    @torch.no_grad()
    def joints_h36m(self, gender: str, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> np.ndarray:
        """(N, 17, 3) H36M-17 joints, metres, of SMPL parameters pose (N, 72), betas (10,), trans (N, 3)."""
        model = self.models[gender]
        b = torch.as_tensor(betas, dtype=torch.float64)[None]
        out = [model.forward_axis_angle(torch.as_tensor(pose[s:s + _CHUNK]), b,
                                        torch.as_tensor(trans[s:s + _CHUNK])).joints_h36m.numpy()
               for s in range(0, len(pose), _CHUNK)]
        return np.concatenate(out) if out else np.zeros((0, 17, 3))


_KEYS = ("joint_2d", "confidence", "joint_cam", "smpl_pose", "smpl_shape", "trans", "img_hw", "cam_intrinsics",
         "source", "gender", "frame_index", "image_id")


def _empty_split() -> dict[str, np.ndarray]:
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {
        "joint_2d": ((0, 17, 2), np.float32), "confidence": ((0, 17, 1), np.float32),
        "joint_cam": ((0, 17, 3), np.float32), "smpl_pose": ((0, 72), np.float64),
        "smpl_shape": ((0, 10), np.float64), "trans": ((0, 3), np.float64), "img_hw": ((0, 2), np.int64),
        "cam_intrinsics": ((0, 3, 3), np.float64), "source": ((0,), np.str_), "gender": ((0,), np.str_),
        "frame_index": ((0,), np.int64), "image_id": ((0,), np.int64),
    }
    return {k: np.zeros(s, dtype=d) for k, (s, d) in shapes.items()}


def convert_sequence(seq: Sequence, models: BodyModels, img_hw: tuple[int, int], stats: SplitStats,
                     conversion: str = "midpoint") -> list[dict[str, np.ndarray]]:
    """Per-track arrays (one dict per output track, keys as in the module docstring) of one sequence."""
    out = []
    for actor in range(seq.num_actors):
        keep, reasons = frame_validity(seq.campose_valid[actor], seq.poses2d[actor])
        _check_finite(seq, actor, keep)
        _check_extrinsics(seq, keep)
        stats.person_tracks += 1
        stats.frames_total += seq.num_frames
        stats.frames_kept += int(keep.sum())
        stats.dropped.update(reasons)
        gender, betas = seq.genders[actor], seq.betas[actor]
        pose_c, trans_c = world_to_camera(seq.poses[actor], seq.trans[actor], seq.cam_poses,
                                          models.root_rest(gender, betas))
        kp = convert_keypoints(seq.poses2d[actor], "openpose18", "h36m17", conversion)  # (N, 17, 3) x, y, conf
        for segment, (start, end) in enumerate(runs(keep)):
            sl, n = slice(start, end), end - start
            stats.tracks += 1
            stats.short_tracks += int(n < 16)
            out.append({
                "joint_2d": kp[sl, :, :2].astype(np.float32),
                "confidence": kp[sl, :, 2:].astype(np.float32),
                "joint_cam": models.joints_h36m(gender, pose_c[sl], betas, trans_c[sl]).astype(np.float32),
                "smpl_pose": pose_c[sl],
                "smpl_shape": np.repeat(betas[None], n, axis=0),
                "trans": trans_c[sl],
                "img_hw": np.tile(np.array(img_hw, dtype=np.int64), (n, 1)),
                "cam_intrinsics": np.repeat(seq.cam_intrinsics[None], n, axis=0),
                "source": np.array([track_name(seq.name, actor, segment)] * n),
                "gender": np.array([gender] * n),
                "frame_index": np.arange(start, end, dtype=np.int64),
                "image_id": seq.img_frame_ids[sl].astype(np.int64),
            })
    return out


def convert_split(root: Path, split: str, models: BodyModels, hw_sources: dict[str, str],
                  conversion: str = "midpoint") -> tuple[dict[str, np.ndarray], SplitStats]:
    """Convert every ``sequenceFiles/{split}/*.pkl`` (sorted by name) into one split dict of per-frame arrays."""
    folder = root / "sequenceFiles" / split
    if not folder.is_dir():
        raise Pw3dError(f"{folder}: no such folder (the official release has sequenceFiles/{{{','.join(SPLITS)}}}; "
                        "choose splits with --splits)")
    files = sorted(folder.glob("*.pkl"))
    if not files:
        raise Pw3dError(f"{folder}: no sequence files (*.pkl)")
    stats = SplitStats()
    tracks: list[dict[str, np.ndarray]] = []
    for path in files:
        seq = read_sequence(path)
        hw, hw_sources[seq.name] = sequence_image_size(root, seq)
        stats.sequences += 1
        tracks.extend(convert_sequence(seq, models, hw, stats, conversion))
    data = {k: np.concatenate([t[k] for t in tracks]) for k in _KEYS} if tracks else _empty_split()
    return data, stats


def convert(root: str | Path, smpl: str | Path | None = None, splits: tuple[str, ...] = SPLITS,
            gendered: bool = False, conversion: str = "midpoint") -> dict[str, Any]:
    """Convert the release at ``root`` to ``{split: {...}, 'meta': {...}}`` (see the module docstring);
    ``conversion``: the OpenPose-18 -> H36M-17 keypoint rule (body_models.joint_sets.KEYPOINT_CONVERSIONS), which must
    be the one of the model that will read the file."""
    root = Path(root)
    if not root.is_dir():
        raise Pw3dError(f"{root}: no such folder (expected the 3DPW release with sequenceFiles/ and imageFiles/)")
    if not (root / "sequenceFiles").is_dir():
        raise Pw3dError(f"{root}: no sequenceFiles/ folder (expected the official 3DPW layout "
                        "sequenceFiles/{train,validation,test}/*.pkl)")
    try:
        models = BodyModels(smpl, gendered)
    except BodyModelFileError as err:
        raise Pw3dError(f"body model: {err}") from None
    result: dict[str, Any] = {}
    hw_sources: dict[str, str] = {}
    stats: dict[str, SplitStats] = {}
    for split in splits:
        result[split], stats[split] = convert_split(root, split, models, hw_sources, conversion)
    result["meta"] = {
        "format": FORMAT,
        "dataset": "3DPW (official release, sequenceFiles)",
        "root": str(root.resolve()),
        "fps": FPS,
        "normalisation_res": list(NORMALISATION_RES),
        "joint_order": "h36m17",
        "two_d_source": "poses2d (OpenPose-18 of the release) -> H36M-17 by body_models.convert_keypoints; "
                        "not MotionBERT's detections",
        "keypoint_conversion": conversion,
        "body_model": models.description,
        "body_model_gender": "gendered (actor's male / female model)" if gendered else "neutral",
        "valid_frame_rule": "campose_valid and poses2d row not all zeros",
        "track_rule": "one track per maximal run of valid frames of a (sequence, actor): first run "
                      "'{sequence}_{actor:03d}', later runs '_s1', '_s2', ...",
        "img_hw_source": hw_sources,
        "stats": {s: st.as_dict() for s, st in stats.items()},
    }
    return result


def write_atomic(obj: Any, out: str | Path) -> Path:
    """Pickle ``obj`` to ``out`` through a temporary file in the same folder and ``os.replace`` (never half-written)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def summary(meta: dict[str, Any]) -> str:
    """One line per split: sequences, tracks, frames, dropped frames by reason."""
    lines = []
    for split, st in meta["stats"].items():
        d = st["dropped"]
        lines.append(
            f"{split:<10} sequences {st['sequences']:3d}  person tracks {st['person_tracks']:3d}  "
            f"tracks {st['tracks']:4d} ({st['tracks_shorter_than_16']} < 16 frames)  "
            f"frames {st['frames_kept']:6d} kept / {st['frames_total']:6d}  dropped {sum(d.values()):5d} "
            f"(campose_invalid {d.get('campose_invalid', 0)}, no_poses2d {d.get('no_poses2d', 0)}, "
            f"both {d.get('both', 0)})")
    sources = Counter("image" if v.startswith("image") else "intrinsics" for v in meta["img_hw_source"].values())
    lines.append(f"image sizes: {sources.get('image', 0)} sequence(s) from image files, "
                 f"{sources.get('intrinsics', 0)} from cam_intrinsics")
    lines.append(f"body model ({meta['body_model_gender']}): {'; '.join(meta['body_model'].values())}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.data.prepare_3dpw", description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="3DPW release folder (with sequenceFiles/, imageFiles/)")
    parser.add_argument("--out", required=True, help="output pickle, e.g. data/mesh/mesh_det_pw3d.pkl")
    parser.add_argument("--smpl", default=None,
                        help="SMPL model file or folder (default: $SMPL_MODEL_DIR, else the embedded open model)")
    parser.add_argument("--gendered", action="store_true",
                        help="use the actor's male/female model from --smpl for joint_cam and trans (default neutral)")
    parser.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated subset of {','.join(SPLITS)}")
    parser.add_argument("--conversion", default="midpoint", choices=KEYPOINT_CONVERSIONS,
                        help="OpenPose-18 -> H36M-17 keypoint rule: the one of the model you will evaluate "
                        "('fitted' for models/ssrstf_mesh.pt; 'midpoint', MotionBERT's, for its checkpoints)")
    args = parser.parse_args(argv)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        parser.error(f"--splits: unknown split(s) {unknown}; choose from {', '.join(SPLITS)}")
    try:
        data = convert(args.root, args.smpl, splits, args.gendered, args.conversion)
    except Pw3dError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = write_atomic(data, args.out)
    print(summary(data["meta"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
