"""Mesh-recovery data in one schema: MotionBERT's ``mesh_det_*.pkl``, converted 3DPW, and the synthetic data.

A file is ``{'train': {...}, 'test': {...}[, 'validation': {...}][, 'meta': {...}]}`` of per-frame arrays with frames
of a track contiguous (docs/protocols.md): ``joint_2d`` (N, 17, 2) pixels, ``confidence`` (N, 17[, 1]) (absent: 1),
``smpl_pose`` (N, 72) axis-angle with the global orientation in the camera frame, ``smpl_shape`` (N, 10), ``source``
(N,) track ids; optional ``gender`` (N,) ('m'/'f', for the gendered protocol).

2D inputs are normalised with the model's normalisation (``norm``): ``track_box`` (a per-track box around the person,
resolution-free) or ``image`` (MotionBERT's fixed resolution per dataset: 3DPW 1920 x 1920, COCO 640 x 640, H36M per
camera; the synthetic and converted files state theirs in ``meta['normalisation_res']``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from body_models import SMPL24, safe_load_pickle
from body_models.joint_sets import keypoint_conversion_of
from body_models.rotations import axis_angle_to_rotmat, flip_axis_angle, rotmat_to_axis_angle
from mesh.inference.camera import ray_rotations
from motion.data.checks import check_finite, require_per_frame
from motion.data.clips import clip_indices
from motion.data.lifting import H36M_CAMERA_SIZES
from motion.data.transforms import NORMALISATIONS, normalize_2d, normalize_box, track_box_per_frame

_SMPL_FLIP = list(SMPL24.flip_permutation)


class MeshDataError(ValueError):
    """A mesh data file is missing, malformed, or has NaN/inf: the message names the file, key, track and frame."""


@dataclass
class MeshSplit:
    """One split, per frame (N frames).

    Attributes:
        inputs: (N, 17, 3) float32 normalised (u, v, confidence).
        pose: (N, 72) float32 SMPL axis-angle (camera-frame global orientation).
        shape: (N, 10) float32 betas.
        source: (N,) track ids; gender: (N,) 'm' / 'f' / '' (unknown).
        name: 'file [split]' for messages.
        keypoints_px: (N, 17, 3) the 2D input before normalisation (pixels, confidence), or None.
        intrinsics: (N, 3, 3) camera matrices (``cam_intrinsics``), or None when the file has none.
        detector_format: (N,) the detector's own joint order (``coco17``, ``halpe26``; ``h36m17`` when the file does
            not say): what test-time refinement converts the body's keypoints through.
        box_centre: (N, 2) pixels, the track-box centre of the ``track_box`` normalisation (None under ``image``):
            where the ray of the ``box_ray`` orientation frame passes.
        keypoint_conversion: how the file's 2D were converted to H36M-17 (``meta['keypoint_conversion']``;
            "midpoint" when the file does not say; see body_models.joint_sets.KEYPOINT_CONVERSIONS).
        action: (N,) str, what the person does in each frame (the file's ``frame_action``, else ``action``; the
            synthetic files: the motion primitive), or None when the file has neither.
    """

    inputs: np.ndarray
    pose: np.ndarray
    shape: np.ndarray
    source: np.ndarray
    gender: np.ndarray
    name: str
    keypoints_px: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    detector_format: np.ndarray | None = None
    box_centre: np.ndarray | None = None
    keypoint_conversion: str = "midpoint"
    action: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.source)

    def ray_inputs(self, frames: slice | np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(box_centre, intrinsics)`` of ``frames``, each None when the split lacks it: what
        :func:`mesh.inference.predict.to_camera_frame` needs to turn a ``box_ray`` prediction."""
        return (None if self.box_centre is None else self.box_centre[frames],
                None if self.intrinsics is None else self.intrinsics[frames])

    def subset(self, keep: np.ndarray) -> MeshSplit:
        """The frames where ``keep`` is true (whole tracks, if ``keep`` selects by track)."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        return MeshSplit(inputs=self.inputs[keep], pose=self.pose[keep], shape=self.shape[keep],
                         source=self.source[keep], gender=self.gender[keep], name=self.name,
                         keypoints_px=pick(self.keypoints_px), intrinsics=pick(self.intrinsics),
                         detector_format=pick(self.detector_format), box_centre=pick(self.box_centre),
                         keypoint_conversion=self.keypoint_conversion, action=pick(self.action))

    def tracks_with_actions(self, actions: list[str]) -> MeshSplit:
        """The whole tracks that have at least one frame doing one of ``actions`` (so clips keep what comes before
        and after it, e.g. the fall before lying on the floor)."""
        if self.action is None:
            raise MeshDataError(f"{self.name}: no 'frame_action' or 'action' key, so tracks cannot be chosen by action")
        chosen = np.unique(self.source[np.isin(self.action, actions)])
        if len(chosen) == 0:
            found = sorted(set(self.action.tolist()))
            raise MeshDataError(f"{self.name}: no frame has action {actions} (found {found[:12]})")
        return self.subset(np.isin(self.source, chosen))


def _resolution(raw: dict, meta: dict, res: tuple[int, int] | None, n: int, where: str) -> tuple[np.ndarray, ...]:
    if res is not None:
        return np.full(n, float(res[0])), np.full(n, float(res[1]))
    if meta.get("normalisation_res") is not None:
        w, h = meta["normalisation_res"]
        return np.full(n, float(w)), np.full(n, float(h))
    if "camera_name" in raw:  # H36M: per-camera image size
        cams = np.asarray(raw["camera_name"]).astype(str)
        unknown = sorted(set(cams) - set(H36M_CAMERA_SIZES))
        if unknown:
            raise MeshDataError(f"{where}: no image size for camera(s) {unknown[:5]}; give res: [w, h]")
        return (np.array([H36M_CAMERA_SIZES[c][0] for c in cams], dtype=np.float64),
                np.array([H36M_CAMERA_SIZES[c][1] for c in cams], dtype=np.float64))
    raise MeshDataError(f"{where}: no normalisation resolution: give res: [w, h] (3DPW [1920, 1920], COCO [640, 640])")


def read_mesh_split(path: str | Path, split: str, res: tuple[int, int] | list[int] | None = None,
                    require_gt: bool = True, norm: str = "image") -> MeshSplit:
    """Read and validate one split of a mesh data file (restricted unpickler).

    Args:
        res: (w, h) of the fixed ``image`` normalisation; None = ``meta['normalisation_res']``, else H36M camera
            sizes.
        require_gt: whether ``smpl_pose``/``smpl_shape`` must be present (False for inference-only data).
        norm: 2D normalisation: ``'image'`` (fixed resolution, see ``res``) or ``'track_box'`` (per-track box,
            no resolution needed; see motion.data.transforms).
    """
    if norm not in NORMALISATIONS:
        raise MeshDataError(f"norm must be one of {NORMALISATIONS}, got {norm!r}")
    path = Path(path)
    try:
        data = safe_load_pickle(path)
    except Exception as err:
        raise MeshDataError(str(err)) from None
    if not isinstance(data, dict) or split not in data:
        found = sorted(k for k in data if k != "meta") if isinstance(data, dict) else type(data).__name__
        raise MeshDataError(f"{path}: no '{split}' split (found {found})")
    where, raw = f"{path} [{split}]", data[split]
    try:
        conversion = keypoint_conversion_of(data.get("meta"))
    except ValueError as err:
        raise MeshDataError(f"{path}: meta: {err}") from None
    j2d = require_per_frame(raw, "joint_2d", (17, 2), where, MeshDataError)
    n = len(j2d)
    if "source" not in raw:
        raise MeshDataError(f"{where}: missing key 'source' (expected (N,) track ids)")
    source = np.asarray(raw["source"]).astype(str)
    conf = np.asarray(raw["confidence"], dtype=np.float64) if "confidence" in raw else np.ones((n, 17))
    conf = conf.reshape(n, 17) if conf.size == n * 17 else conf
    if conf.shape != (n, 17):
        raise MeshDataError(f"{where}: 'confidence' has shape {conf.shape}, expected (N, 17) or (N, 17, 1)")
    if require_gt or "smpl_pose" in raw:
        pose = require_per_frame(raw, "smpl_pose", (72,), where, MeshDataError)
        shape = require_per_frame(raw, "smpl_shape", (10,), where, MeshDataError)
    else:
        pose, shape = np.zeros((n, 72)), np.zeros((n, 10))
    gender = np.asarray(raw["gender"]).astype(str) if "gender" in raw else np.full(n, "")
    for key, arr in (("source", source), ("smpl_pose", pose), ("smpl_shape", shape), ("gender", gender)):
        if len(arr) != n:
            raise MeshDataError(f"{where}: '{key}' has {len(arr)} frames, 'joint_2d' has {n}")
    for key, arr in (("joint_2d", j2d), ("confidence", conf), ("smpl_pose", pose), ("smpl_shape", shape)):
        check_finite(arr, key, source, where, MeshDataError)
    conf = np.clip(conf, 0, 1)
    centre = None
    if norm == "track_box":
        centre, scale = track_box_per_frame(j2d, conf, source, float((data.get("meta") or {}).get("fps", 30.0)))
        uv = normalize_box(j2d, centre, scale)
    else:
        w, h = _resolution(raw, data.get("meta") or {}, tuple(res) if res is not None else None, n, where)
        uv = normalize_2d(j2d, w[:, None], h[:, None])
    inputs = np.concatenate([uv, conf[..., None]], axis=-1)
    intrinsics = None
    if "cam_intrinsics" in raw:
        intrinsics = require_per_frame(raw, "cam_intrinsics", (3, 3), where, MeshDataError).astype(np.float64)
        check_finite(intrinsics, "cam_intrinsics", source, where, MeshDataError)
    fmt = np.asarray(raw["detector_format"]).astype(str) if "detector_format" in raw else np.full(n, "h36m17")
    if len(fmt) != n:
        raise MeshDataError(f"{where}: 'detector_format' has {len(fmt)} frames, 'joint_2d' has {n}")
    action_key = next((k for k in ("frame_action", "action") if k in raw), None)
    action = None if action_key is None else np.asarray(raw[action_key]).astype(str)
    if action is not None and len(action) != n:
        raise MeshDataError(f"{where}: '{action_key}' has {len(action)} frames, 'joint_2d' has {n}")
    return MeshSplit(inputs=inputs.astype(np.float32), pose=pose.astype(np.float32),
                     shape=shape.astype(np.float32), source=source, gender=gender, name=where,
                     keypoints_px=np.concatenate([j2d, conf[..., None]], axis=-1).astype(np.float32),
                     intrinsics=intrinsics, detector_format=fmt, box_centre=centre, keypoint_conversion=conversion,
                     action=action)


def require_same_conversion(model_metadata: dict, split: MeshSplit, checkpoint: str | Path) -> None:
    """Raise :class:`MeshDataError` when ``split``'s 2D were converted to H36M-17 by another keypoint rule than the
    model was trained with (its input would then be shifted by a few percent of the person's size at the shoulders,
    hips and head)."""
    try:
        trained = keypoint_conversion_of(model_metadata)
    except ValueError as err:
        raise MeshDataError(f"{checkpoint}: {err}") from None
    if trained != split.keypoint_conversion:
        raise MeshDataError(
            f"{checkpoint} was trained on '{trained}' keypoint conversion but {split.name} holds "
            f"'{split.keypoint_conversion}' 2D: make the data with --conversion {trained} (python -m motion.synthetic "
            "or python -m mesh.data.prepare_3dpw)")


def in_box_ray_frame(split: MeshSplit) -> MeshSplit:
    """``split`` with its ground-truth global orientation relative to the ray through each frame's track-box centre
    (the ``box_ray`` frame of :data:`mesh.network.model.ORIENTATIONS`): ``R_ray^T @ R_camera``, the training target
    of a ``box_ray`` model.

    Raises:
        MeshDataError: the split has no ``cam_intrinsics`` or was not read with the ``track_box`` normalisation.
    """
    if split.intrinsics is None or split.box_centre is None:
        missing = "cam_intrinsics" if split.intrinsics is None else "the track_box normalisation"
        raise MeshDataError(f"{split.name}: the box_ray orientation frame needs {missing}")
    ray = torch.from_numpy(ray_rotations(split.box_centre, split.intrinsics))
    orient = axis_angle_to_rotmat(torch.from_numpy(split.pose[:, :3]).double())
    pose = split.pose.copy()
    pose[:, :3] = rotmat_to_axis_angle(ray.transpose(1, 2) @ orient).float().numpy()
    return replace(split, pose=pose)


def flip_smpl_pose(pose: torch.Tensor) -> torch.Tensor:
    """Mirror SMPL axis-angle poses ``(..., 72)`` across the camera's x = 0 plane: (x, -y, -z) per joint, then
    swap the left/right joints (docs/protocols.md, flip)."""
    aa = flip_axis_angle(pose.reshape(*pose.shape[:-1], 24, 3))
    return aa[..., _SMPL_FLIP, :].reshape(pose.shape)


class MeshClips(Dataset):
    """Clips of a :class:`MeshSplit`: ``{'input': (T, 17, 3), 'pose': (T, 72), 'shape': (T, 10), 'index': (T,)}``.

    Clips never cross a track; every frame is covered (see ``motion.data.clips.clip_indices``).
    """

    def __init__(self, split: MeshSplit, clip_len: int, stride: int) -> None:
        self.split = split
        self.clips = clip_indices(split.source, clip_len, stride)

    def __len__(self) -> int:
        return len(self.clips)

    def gather(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """The clips ``clips`` (indices) as arrays with a leading batch axis, in one index per array."""
        idx = self.clips[clips]
        s = self.split
        return {"input": s.inputs[idx], "pose": s.pose[idx], "shape": s.shape[idx], "index": idx}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v[0]) for k, v in self.gather(np.array([i])).items()}
