"""Export one person track's predictions: an ``.npz`` of SMPL parameters, per-frame ``.obj``/``.ply`` meshes, one
animated ``.glb`` (skinned, imports into Blender as an armature action) and an optional ``.bvh`` skeleton.

Conventions (README, Architecture): metres; parameters and joints in the **camera frame** (x right, y down, z forward),
root-relative (the H36M pelvis at the origin), exactly as :func:`mesh.inference.predict_track` returns them.

The ``.npz`` result file (:class:`MeshResult`, read back with :func:`load_result`):

=================  ===========  ==============================================================================
key                shape        meaning
=================  ===========  ==============================================================================
global_orient      (N, 3)       root rotation, axis-angle (radians), camera frame
body_pose          (N, 69)      23 parent-relative joint rotations, axis-angle
betas              (N, 10)      shape coefficients
transl             (N, 3)       ``body_model(global_orient, body_pose, betas) + transl`` = the stored vertices/joints
joints             (N, 24, 3)   SMPL joints, root-relative metres
joints_h36m        (N, 17, 3)   H36M-17 joints, root-relative metres (joint 0 = pelvis = origin)
vertices           (N, V, 3)    optional, float32
frame_index        (N,)         frame numbers in the input video (strictly increasing; gaps are missing frames)
fps                ()           frames per second of the input video
faces              (F, 3)       triangles of the body model
body_model         ()           str, which body model produced the vertices
keypoints_2d       (N, 17, 3)   optional, H36M-17 (x, y, confidence) in pixels (or any 2D units, see image_size)
image_size         (2,)         optional (width, height) of the image ``keypoints_2d`` lives in
=================  ===========  ==============================================================================

glTF representation: a **skinned mesh** (an SMPL skeleton of 24 joint nodes with per-frame rotation keys, linear
blend skinning with the body model's ``lbs_weights``), chosen over per-frame morph targets because it is ~100x
smaller and Blender imports it as an armature with an action, which users can retarget. Details:

- the rest mesh is the body at the track's mean betas in T-pose, y up (glTF convention), skinned with up to 8
  influences per vertex (``JOINTS_0/1``, ``WEIGHTS_0/1``);
- the camera frame (y down) is converted to glTF's y-up frame by a 180 degree rotation about x, baked into the
  root joint's animated rotation and translation (no extra parent node: the armature stands upright as imported);
- when betas vary over frames, the 10 shape components are morph targets whose weights are animated (``betas -
  mean betas``, shape keys in Blender) and the joint translations are animated to follow the shaped skeleton, so
  the skinned result still equals the exported vertices;
- exact (float32) for body models without pose-corrective blend shapes (the embedded default); for real SMPL the
  pose correctives are dropped (a few mm), which :func:`write_glb` reports.

:func:`evaluate_glb` re-evaluates a written file (its own glTF reader and skinning) for round-trip checks.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

import numpy as np
import roma
import torch

from body_models import SMPL24, BodyModel

# Camera frame (y down, z forward) -> glTF / BVH y-up frame (z towards the viewer): 180 degrees about x.
CAM_TO_YUP = np.diag([1.0, -1.0, -1.0])


class ResultFileError(ValueError):
    """A result file is missing, malformed or inconsistent; the message is one line naming the file and key."""


@dataclass
class MeshResult:
    """One track's exported predictions (see the module docstring for the file keys). Arrays are numpy."""

    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    joints: np.ndarray
    joints_h36m: np.ndarray
    frame_index: np.ndarray
    fps: float
    faces: np.ndarray
    body_model: str
    transl: np.ndarray | None = None
    vertices: np.ndarray | None = None
    keypoints_2d: np.ndarray | None = None
    image_size: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.global_orient)

    @property
    def rotmats(self) -> np.ndarray:
        """(N, 24, 3, 3) float64 rotation matrices of the pose."""
        pose = np.concatenate([self.global_orient, self.body_pose], axis=1).reshape(-1, 24, 3)
        return roma.rotvec_to_rotmat(torch.from_numpy(pose.astype(np.float64))).numpy()


# key -> (trailing shape, where None = any size, required)
_SCHEMA: dict[str, tuple[tuple[int | None, ...], bool]] = {
    "global_orient": ((3,), True), "body_pose": ((69,), True), "betas": ((None,), True),
    "joints": ((24, 3), True), "joints_h36m": ((17, 3), True), "frame_index": ((), True),
    "transl": ((3,), False), "vertices": ((None, 3), False), "keypoints_2d": ((17, 3), False),
}


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join(["N", *("V" if s is None else str(s) for s in shape)]) + ")"


def validate_result(r: MeshResult, where: str = "result") -> MeshResult:
    """Check shapes, frame counts, finiteness and index ranges; raise :class:`ResultFileError` on the first problem."""
    n = len(np.asarray(r.global_orient))
    for key, (shape, required) in _SCHEMA.items():
        arr = getattr(r, key)
        if arr is None:
            if required:
                raise ResultFileError(f"{where}: missing key '{key}' (expected shape {_fmt_shape(shape)})")
            continue
        arr = np.asarray(arr)
        ok = arr.ndim == len(shape) + 1 and all(s is None or s == a for s, a in zip(shape, arr.shape[1:], strict=False))
        if not ok:
            raise ResultFileError(f"{where}: '{key}' has shape {arr.shape}, expected {_fmt_shape(shape)}")
        if len(arr) != n:
            raise ResultFileError(f"{where}: '{key}' has {len(arr)} frames, 'global_orient' has {n}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int(np.argmax(~np.isfinite(arr.reshape(n, -1)).all(axis=1)))
            raise ResultFileError(f"{where}: NaN/inf in '{key}' at frame {bad}")
    if n == 0:
        raise ResultFileError(f"{where}: no frames")
    if np.asarray(r.frame_index).dtype.kind not in "iu":
        raise ResultFileError(f"{where}: 'frame_index' must be integers, got {np.asarray(r.frame_index).dtype}")
    if n > 1 and not (np.diff(r.frame_index) > 0).all():
        raise ResultFileError(f"{where}: 'frame_index' must be strictly increasing")
    if not (np.isfinite(r.fps) and r.fps > 0):
        raise ResultFileError(f"{where}: 'fps' must be a positive number, got {r.fps}")
    faces = np.asarray(r.faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise ResultFileError(f"{where}: 'faces' must be (F, 3) integers, got {faces.shape} {faces.dtype}")
    if r.vertices is not None and faces.size and (faces.min() < 0 or faces.max() >= r.vertices.shape[1]):
        raise ResultFileError(f"{where}: 'faces' index vertices 0..{faces.max()} but 'vertices' has "
                              f"{r.vertices.shape[1]} per frame (body model mismatch?)")
    if r.image_size is not None and np.asarray(r.image_size).shape != (2,):
        raise ResultFileError(f"{where}: 'image_size' must be (2,) = (width, height), got "
                              f"{np.asarray(r.image_size).shape}")
    return r


def result_from_prediction(pred: Any, body: BodyModel, frame_index: np.ndarray | None = None, fps: float = 30.0,
                           keypoints_2d: np.ndarray | None = None, image_size: tuple[int, int] | None = None,
                           include_vertices: bool = True) -> MeshResult:
    """Build a :class:`MeshResult` from a :class:`mesh.inference.predict.TrackPrediction` of N frames.

    Args:
        pred: TrackPrediction (rotmats (N, 24, 3, 3), betas (N, 10), vertices, joints_h36m, joints_smpl).
        body: the body model that produced ``pred`` (faces, and ``transl`` by re-running it).
        frame_index: (N,) video frame numbers; default ``0..N-1``.
        keypoints_2d: optional (N, 17, 3) pixels (x, y, confidence); image_size (width, height).
    """
    rot = pred.rotmats.detach().double().cpu()
    aa = roma.rotmat_to_rotvec(rot).numpy()
    betas = pred.betas.detach().float().cpu()
    with torch.no_grad():
        out = body(rot.float().to(body.v_template.device), betas.to(body.v_template.device))
    # The predictions are centred on the regressed H36M pelvis: transl makes the parameters reproduce them.
    transl = (pred.joints_h36m[:, 0].detach().cpu() - out.joints_h36m[:, 0].cpu()).numpy()
    n = len(aa)
    result = MeshResult(
        global_orient=aa[:, 0].astype(np.float32), body_pose=aa[:, 1:].reshape(n, 69).astype(np.float32),
        betas=betas.numpy().astype(np.float32), transl=transl.astype(np.float32),
        joints=pred.joints_smpl.detach().cpu().numpy().astype(np.float32),
        joints_h36m=pred.joints_h36m.detach().cpu().numpy().astype(np.float32),
        vertices=pred.vertices.detach().cpu().numpy().astype(np.float32) if include_vertices else None,
        frame_index=np.arange(n, dtype=np.int64) if frame_index is None else np.asarray(frame_index, dtype=np.int64),
        fps=float(fps), faces=body.faces.cpu().numpy().astype(np.int32), body_model=str(body.source),
        keypoints_2d=None if keypoints_2d is None else np.asarray(keypoints_2d, dtype=np.float32),
        image_size=None if image_size is None else np.asarray(image_size, dtype=np.float32))
    return validate_result(result)


def sequence_results(model: Any, body: BodyModel, split: Any, name: str, fps: float = 30.0,
                     clip_len: int = 16) -> tuple[MeshResult, MeshResult]:
    """Prediction and ground truth of track ``name`` of a :class:`mesh.data.mesh_data.MeshSplit`, as results
    (root-relative, as evaluated; whole track in windows of ``clip_len`` with stride ``clip_len // 2``, flip test)."""
    from body_models.rotations import axis_angle_to_rotmat
    from mesh.inference.predict import predict_track, to_camera_frame
    from mesh.network.model import pose_body

    sel = split.source == name
    pred = predict_track(model, split.inputs[sel], clip_len=clip_len, stride=max(1, clip_len // 2), flip_test=True)
    pred = to_camera_frame(model, pred, *split.ray_inputs(sel))
    result = result_from_prediction(pred, body, fps=fps, keypoints_2d=split.inputs[sel])
    dev = body.v_template.device
    rot = axis_angle_to_rotmat(torch.from_numpy(split.pose[sel]).reshape(-1, 24, 3))[None].float().to(dev)
    with torch.no_grad():
        out = pose_body(body, rot, torch.from_numpy(split.shape[sel])[None].float().to(dev))
    out = type(out)(**{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in vars(out).items()})
    centre = out.joints_h36m[0][:, :1]  # root-relative like the prediction
    gt = MeshResult(global_orient=split.pose[sel, :3].astype(np.float32),
                    body_pose=split.pose[sel, 3:].astype(np.float32), betas=split.shape[sel].astype(np.float32),
                    joints=(out.joints_smpl[0] - centre).numpy(), joints_h36m=(out.joints_h36m[0] - centre).numpy(),
                    frame_index=result.frame_index, fps=fps, faces=result.faces, body_model=result.body_model,
                    vertices=(out.vertices[0] - centre).numpy())
    return result, gt


# ----------------------------------------------------------------------------------------------- atomic writes


def _atomic_file(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write(fileobj)`` into a temp file beside ``path``, then rename (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _atomic_folder(folder: Path, fill: Callable[[Path], None]) -> Path:
    """Fill a temp folder beside ``folder``, then swap it in (the old folder, if any, is removed afterwards)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        fill(tmp)
        old = None
        if folder.exists():  # a directory cannot be os.replace'd onto a non-empty one: move the old aside first
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / "x")
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# --------------------------------------------------------------------------------------------------- npz files


def save_result(path: str | Path, result: MeshResult) -> Path:
    """Validate and write ``result`` to ``path`` (.npz, atomically)."""
    path = Path(path)
    validate_result(result, str(path))
    arrays: dict[str, np.ndarray] = {}
    for f in fields(MeshResult):
        value = getattr(result, f.name)
        if value is not None:
            arrays[f.name] = np.asarray(value)
    arrays["body_model"] = np.asarray(str(result.body_model))  # a 0-d unicode array: loads without pickle
    return _atomic_file(path, lambda fobj: np.savez(fobj, **arrays))


def load_result(path: str | Path) -> MeshResult:
    """Read and validate a result ``.npz`` written by :func:`save_result` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"{path}: no such result file")
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
    except Exception as err:  # zip/format errors: one line
        raise ResultFileError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from None
    for key in ("fps", "faces", "body_model"):
        if key not in raw:
            raise ResultFileError(f"{path}: missing key '{key}'")
    known = {f.name for f in fields(MeshResult)}
    kwargs = {k: v for k, v in raw.items() if k in known}
    kwargs["fps"] = float(np.asarray(raw["fps"]).reshape(-1)[0]) if np.asarray(raw["fps"]).size == 1 else float("nan")
    kwargs["body_model"] = str(raw["body_model"])
    for key, (shape, required) in _SCHEMA.items():
        if required and key not in kwargs:
            raise ResultFileError(f"{path}: missing key '{key}' (expected shape {_fmt_shape(shape)})")
    return validate_result(MeshResult(**kwargs), str(path))


@dataclass(frozen=True)
class ResultCamera:
    """The camera a ``mesh.infer`` result was placed in: intrinsics and the image size (assumed or known)."""

    matrix: np.ndarray  # (3, 3) pixels
    width: int
    height: int
    size_assumed: bool  # no video or image size was given: the image was assumed around the keypoints


def load_result_camera(path: str | Path) -> ResultCamera:
    """The camera stored in a ``mesh.infer`` result (``intrinsics``, ``image_size``); :class:`ResultFileError` when
    the file has none (results of ``mesh.evaluate`` / ``mesh.render`` are root-relative and have no camera)."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"{path}: no such result file")
    try:
        with np.load(path, allow_pickle=False) as data:
            K = np.asarray(data["intrinsics"], np.float64) if "intrinsics" in data.files else None
            size = np.asarray(data["image_size"], np.float64).reshape(-1) if "image_size" in data.files else None
    except Exception as err:  # zip/format errors: one line
        raise ResultFileError(f"{path}: not a readable .npz ({type(err).__name__}: {err})") from None
    if K is None:
        raise ResultFileError(f"{path}: has no camera ('intrinsics'): only mesh.infer results are placed in the "
                              "camera frame")
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0:
        raise ResultFileError(f"{path}: 'intrinsics' must be a finite (3, 3) camera matrix, got shape {K.shape}")
    if size is not None and size.size == 2:  # the video's size
        return ResultCamera(K, round(float(size[0])), round(float(size[1])), False)
    # assumed image: centred on the principal point (mesh.infer's guess)
    return ResultCamera(K, round(2 * float(K[0, 2])), round(2 * float(K[1, 2])), True)


# --------------------------------------------------------------------------------------------- mesh sequences


def write_mesh_sequence(folder: str | Path, vertices: np.ndarray, faces: np.ndarray, fmt: str = "obj",
                        frame_index: np.ndarray | None = None, yup: bool = False) -> list[Path]:
    """One mesh file per frame, ``frame_000123.obj`` (numbered by ``frame_index``), written into ``folder``
    atomically (a temp folder renamed into place).

    Args:
        vertices: (N, V, 3) metres, camera frame. faces: (F, 3).
        fmt: 'obj' or 'ply' (binary).
        yup: rotate to y up (180 degrees about x), for tools that expect it; default keeps the camera frame.
    """
    import trimesh

    if fmt not in ("obj", "ply"):
        raise ValueError(f"fmt must be 'obj' or 'ply', got {fmt!r}")
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (N, V, 3), got {vertices.shape}")
    if faces.size and faces.max() >= vertices.shape[1]:
        raise ValueError(f"faces index vertex {faces.max()} but there are {vertices.shape[1]} vertices")
    index = np.arange(len(vertices)) if frame_index is None else np.asarray(frame_index)
    names = [f"frame_{int(i):06d}.{fmt}" for i in index]

    def fill(tmp: Path) -> None:
        for name, v in zip(names, vertices, strict=True):
            v = v @ CAM_TO_YUP.T if yup else v
            trimesh.Trimesh(v, faces, process=False).export(tmp / name)

    folder = _atomic_folder(Path(folder), fill)
    return [folder / name for name in names]


# ---------------------------------------------------------------------------------------------- skeleton maths


def _body_arrays(body: BodyModel) -> dict[str, np.ndarray]:
    """The body model's buffers as float64 numpy (the export does its maths in float64)."""
    get = {k: getattr(body, k).detach().cpu().numpy() for k in
           ("v_template", "shapedirs", "joint_template", "joint_shapedirs", "lbs_weights", "parents", "faces")}
    return {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in get.items()}


def _result_transl(result: MeshResult, body: BodyModel) -> np.ndarray:
    """``transl`` of the result, or recomputed (centre on the regressed H36M pelvis) for files without it."""
    if result.transl is not None:
        return np.asarray(result.transl, dtype=np.float64)
    with torch.no_grad():
        dev = body.v_template.device  # the caller's body model may live on a GPU
        out = body(torch.from_numpy(result.rotmats).float().to(dev),
                   torch.from_numpy(np.asarray(result.betas)).float().to(dev))
    pelvis = out.joints_h36m[:, 0].cpu().numpy().astype(np.float64)
    return np.asarray(result.joints_h36m[:, 0], np.float64) - pelvis


def _forward_kinematics(rotmats: np.ndarray, rest_joints: np.ndarray, parents: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """World rotations ``(..., J, 3, 3)`` and joint positions ``(..., J, 3)`` from parent-relative rotations."""
    rw = np.empty_like(rotmats)
    pos = np.empty_like(rest_joints)
    for j, p in enumerate(parents):
        if p < 0:
            rw[..., j, :, :] = rotmats[..., j, :, :]
            pos[..., j, :] = rest_joints[..., j, :]
        else:
            rw[..., j, :, :] = rw[..., p, :, :] @ rotmats[..., j, :, :]
            off = rest_joints[..., j, :] - rest_joints[..., p, :]
            pos[..., j, :] = pos[..., p, :] + (rw[..., p, :, :] @ off[..., None])[..., 0]
    return rw, pos


@dataclass
class _Skeleton:
    """Per-frame local joint transforms in the y-up frame, reproducing the result's vertices with a fixed bind."""

    local_rot: np.ndarray  # (N, J, 3, 3)
    local_trans: np.ndarray  # (N, J, 3)
    rest_joints: np.ndarray  # (J, 3) bind pose (mean betas), y up
    rest_vertices: np.ndarray  # (V, 3) bind mesh (mean betas), y up
    beta_offsets: np.ndarray  # (N, B) betas - mean betas (morph weights)
    shapedirs: np.ndarray  # (V, 3, B), y up
    max_pose_corrective: float  # metres the pose correctives would move vertices (dropped), 0 without


def _skeleton(result: MeshResult, body: BodyModel) -> _Skeleton:
    arr = _body_arrays(body)
    parents = arr["parents"]
    betas = np.asarray(result.betas, dtype=np.float64)
    if betas.shape[1] != arr["shapedirs"].shape[-1]:
        raise ResultFileError(f"result has {betas.shape[1]} betas, body model {arr['shapedirs'].shape[-1]}")
    if np.asarray(result.faces).shape != arr["faces"].shape:
        raise ResultFileError(f"result faces {np.asarray(result.faces).shape} differ from the body model's "
                              f"{arr['faces'].shape} ({result.body_model!r} vs {body.source!r})")
    beta_ref = betas.mean(axis=0)
    j_ref = arr["joint_template"] + arr["joint_shapedirs"] @ beta_ref
    j_t = arr["joint_template"] + np.einsum("jcb,nb->njc", arr["joint_shapedirs"], betas)
    rot = result.rotmats
    rw, pos = _forward_kinematics(rot, j_t, parents)
    # With a fixed bind at the mean shape, shift each joint so that W_j (v - J_ref) = R_j (v - J_t) + p_j.
    pos = pos - (rw @ (j_t - j_ref)[..., None])[..., 0] + _result_transl(result, body)[:, None, :]
    c = CAM_TO_YUP
    local_rot = rot.copy()
    local_rot[:, 0] = c @ rot[:, 0]
    local_trans = np.empty_like(pos)
    local_trans[:, 0] = pos[:, 0] @ c.T
    for j, p in enumerate(parents):
        if p >= 0:  # parent-local offset; the conversion C cancels below the root
            local_trans[:, j] = (rw[:, p].transpose(0, 2, 1) @ (pos[:, j] - pos[:, p])[..., None])[..., 0]
    max_corr = 0.0
    if body.has_posedirs:
        eye = np.eye(3)
        feat = (rot[:, 1:] - eye).reshape(len(rot), -1)
        corr = feat @ body.posedirs.detach().cpu().numpy().astype(np.float64)
        max_corr = float(np.linalg.norm(corr.reshape(len(rot), -1, 3), axis=-1).max())
    return _Skeleton(local_rot=local_rot, local_trans=local_trans, rest_joints=j_ref,
                     rest_vertices=arr["v_template"] + arr["shapedirs"] @ beta_ref, beta_offsets=betas - beta_ref,
                     shapedirs=arr["shapedirs"], max_pose_corrective=max_corr)


# ------------------------------------------------------------------------------------------------------- glTF

_COMPONENT = {np.dtype(np.float32): 5126, np.dtype(np.uint32): 5125, np.dtype(np.uint16): 5123}
_TYPE = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


class _GltfBuilder:
    """Accumulates one binary buffer and the glTF JSON that describes it (bufferViews, accessors)."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.gltf: dict[str, Any] = {"asset": {"version": "2.0", "generator": "ssrstf mesh.io.export"},
                                     "buffers": [], "bufferViews": [], "accessors": []}

    def accessor(self, array: np.ndarray, width: int, target: int | None = None, minmax: bool = False) -> int:
        """Append ``array`` (rows of ``width`` components) as a tightly packed bufferView + accessor; return its id."""
        array = np.ascontiguousarray(array)
        while len(self.blob) % 4:  # 4-byte alignment for every view
            self.blob.append(0)
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.blob += array.tobytes()
        self.gltf["bufferViews"].append(view)
        flat = array.reshape(-1, width)
        acc: dict[str, Any] = {"bufferView": len(self.gltf["bufferViews"]) - 1,
                               "componentType": _COMPONENT[array.dtype], "count": len(flat), "type": _TYPE[width]}
        if minmax:  # required for POSITION and animation inputs
            acc["min"] = flat.min(axis=0).astype(np.float64).tolist()
            acc["max"] = flat.max(axis=0).astype(np.float64).tolist()
        self.gltf["accessors"].append(acc)
        return len(self.gltf["accessors"]) - 1

    def glb(self) -> bytes:
        self.gltf["buffers"] = [{"byteLength": len(self.blob)}]
        js = json.dumps(self.gltf, separators=(",", ":")).encode()
        js += b" " * (-len(js) % 4)
        blob = bytes(self.blob) + b"\0" * (-len(self.blob) % 4)
        total = 12 + 8 + len(js) + 8 + len(blob)
        return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
                + struct.pack("<I4s", len(blob), b"BIN\0") + blob)


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(vertices)
    np.add.at(vn, faces.reshape(-1), np.repeat(fn, 3, axis=0))
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.where(norm > 0, vn / np.maximum(norm, 1e-30), np.array([0.0, 1.0, 0.0]))


def _quaternions(rotmats: np.ndarray) -> np.ndarray:
    """(N, J, 3, 3) -> (N, J, 4) unit quaternions (x, y, z, w), sign-continuous over N so interpolation is short."""
    q = roma.rotmat_to_unitquat(torch.from_numpy(rotmats)).numpy()
    for k in range(1, len(q)):
        flip = (q[k] * q[k - 1]).sum(-1) < 0
        q[k, flip] *= -1
    return q


def write_glb(path: str | Path, result: MeshResult, body: BodyModel, max_influences: int = 8,
              color: tuple[float, float, float, float] = (0.65, 0.74, 0.86, 1.0)) -> dict[str, float]:
    """Write one animated, skinned ``.glb`` of the track (see the module docstring); atomic.

    Times are ``frame_index / fps`` seconds, so missing frames stay gaps (interpolated linearly).
    Returns ``{'max_weight_dropped', 'max_pose_corrective_m'}``: what the file cannot represent exactly (both 0 for
    the embedded default body model).
    """
    path = Path(path)
    validate_result(result, str(path))
    sk = _skeleton(result, body)
    arr = _body_arrays(body)
    faces = arr["faces"].astype(np.uint32)
    n, nj = sk.local_rot.shape[:2]

    # Skin weights: the top `max_influences` per vertex in sets of 4, renormalised.
    weights = arr["lbs_weights"]
    k = min(max_influences, int(np.ceil((weights > 0).sum(1).max() / 4) * 4)) or 4
    order = np.argsort(-weights, axis=1)[:, :k]
    top = np.take_along_axis(weights, order, axis=1)
    dropped = float((1.0 - top.sum(1)).max())
    top = top / top.sum(1, keepdims=True)
    order = np.where(top > 0, order, 0)

    b = _GltfBuilder()
    rest = sk.rest_vertices
    attributes = {"POSITION": b.accessor(rest.astype(np.float32), 3, _ARRAY_BUFFER, minmax=True),
                  "NORMAL": b.accessor(_vertex_normals(rest, arr["faces"]).astype(np.float32), 3, _ARRAY_BUFFER)}
    for s in range(k // 4):
        attributes[f"JOINTS_{s}"] = b.accessor(order[:, 4 * s:4 * s + 4].astype(np.uint16), 4, _ARRAY_BUFFER)
        attributes[f"WEIGHTS_{s}"] = b.accessor(top[:, 4 * s:4 * s + 4].astype(np.float32), 4, _ARRAY_BUFFER)
    primitive: dict[str, Any] = {"attributes": attributes, "indices": b.accessor(faces.reshape(-1), 1,
                                                                                 _ELEMENT_ARRAY_BUFFER), "material": 0}
    mesh: dict[str, Any] = {"name": "body", "primitives": [primitive]}
    morph = bool(np.abs(sk.beta_offsets).max() > 1e-6)
    if morph:  # shape varies over the track: one morph target per shape component (Blender: shape keys)
        nb = sk.shapedirs.shape[-1]
        primitive["targets"] = [{"POSITION": b.accessor(sk.shapedirs[..., i].astype(np.float32), 3, _ARRAY_BUFFER,
                                                        minmax=True)} for i in range(nb)]
        mesh["weights"] = [0.0] * nb
        mesh["extras"] = {"targetNames": [f"beta_{i}" for i in range(nb)]}

    parents = arr["parents"]
    names = SMPL24.joint_names if nj == SMPL24.num_joints else tuple(f"joint_{j}" for j in range(nj))
    nodes: list[dict[str, Any]] = []
    for j in range(nj):
        offset = sk.rest_joints[j] - (sk.rest_joints[parents[j]] if parents[j] >= 0 else 0.0)
        node: dict[str, Any] = {"name": names[j], "translation": offset.tolist()}
        children = [int(c) for c in np.flatnonzero(parents == j)]
        if children:
            node["children"] = children
        nodes.append(node)
    nodes.append({"name": "body", "mesh": 0, "skin": 0})
    ibm = np.zeros((nj, 4, 4))
    ibm[:] = np.eye(4)
    ibm[:, :3, 3] = -sk.rest_joints  # bind: joints at the rest joints, no rotation
    skin = {"joints": list(range(nj)), "skeleton": 0,
            "inverseBindMatrices": b.accessor(ibm.transpose(0, 2, 1).astype(np.float32), 16)}  # column-major

    frame_index = np.asarray(result.frame_index)
    times = b.accessor(((frame_index - 0) / result.fps).astype(np.float32), 1, minmax=True)
    quats = _quaternions(sk.local_rot).astype(np.float32)
    samplers: list[dict[str, Any]] = []
    channels: list[dict[str, Any]] = []

    def channel(node: int, path_: str, values: np.ndarray, width: int) -> None:
        samplers.append({"input": times, "output": b.accessor(values, width), "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path_}})

    rest_local = np.array([nodes[j]["translation"] for j in range(nj)])
    for j in range(nj):
        channel(j, "rotation", np.ascontiguousarray(quats[:, j]), 4)
        # Root: always (trajectory + y-up conversion); others only when betas vary (bone lengths follow the shape).
        if j == 0 or np.abs(sk.local_trans[:, j] - rest_local[j]).max() > 1e-7:
            channel(j, "translation", np.ascontiguousarray(sk.local_trans[:, j].astype(np.float32)), 3)
    if morph:
        channel(nj, "weights", sk.beta_offsets.astype(np.float32).reshape(-1), 1)

    b.gltf.update({
        "scene": 0, "scenes": [{"name": "track", "nodes": [0, nj]}], "nodes": nodes, "meshes": [mesh],
        "skins": [skin], "animations": [{"name": "track", "samplers": samplers, "channels": channels}],
        "materials": [{"name": "body", "pbrMetallicRoughness": {"baseColorFactor": list(color), "metallicFactor": 0.0,
                                                                "roughnessFactor": 0.7}, "doubleSided": True}],
    })
    b.gltf["asset"]["extras"] = {"body_model": str(result.body_model), "fps": float(result.fps), "frames": int(n)}
    data = b.glb()
    _atomic_file(path, lambda f: f.write(data))
    return {"max_weight_dropped": dropped, "max_pose_corrective_m": sk.max_pose_corrective}


def read_glb(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Parse a ``.glb`` into (JSON dict, binary chunk)."""
    raw = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<4sII", raw, 0)
    if magic != b"glTF" or version != 2 or total != len(raw):
        raise ValueError(f"{path}: not a glTF 2.0 binary (magic {magic!r}, version {version}, length {total})")
    js_len, js_type = struct.unpack_from("<I4s", raw, 12)
    gltf = json.loads(raw[20:20 + js_len])
    bin_len, bin_type = struct.unpack_from("<I4s", raw, 20 + js_len)
    if js_type != b"JSON" or bin_type != b"BIN\0":
        raise ValueError(f"{path}: unexpected chunk types {js_type!r}, {bin_type!r}")
    return gltf, raw[28 + js_len:28 + js_len + bin_len]


def _read_accessor(gltf: dict[str, Any], blob: bytes, i: int) -> np.ndarray:
    acc = gltf["accessors"][i]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = {v: k for k, v in _COMPONENT.items()}[acc["componentType"]]
    width = {v: k for k, v in _TYPE.items()}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    out = np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=start)
    return out.reshape(acc["count"], width) if width > 1 else out


def _quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    return roma.unitquat_to_rotmat(torch.from_numpy(np.asarray(q, np.float64))).numpy()


def evaluate_glb(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent glTF evaluation of a file from :func:`write_glb`: at each key time, morph + skin the mesh.

    Returns (times (N,), vertices (N, V, 3)) in glTF's y-up frame. Reads node TRS, the animation's keyframes
    (all samplers share one input), inverse bind matrices, JOINTS_n/WEIGHTS_n and morph targets.
    """
    gltf, blob = read_glb(path)
    anim = gltf["animations"][0]
    times = _read_accessor(gltf, blob, anim["samplers"][0]["input"]).astype(np.float64)
    n = len(times)
    nodes = gltf["nodes"]
    skin = gltf["skins"][0]
    joints = skin["joints"]
    parent = {c: i for i, nd in enumerate(nodes) for c in nd.get("children", [])}
    rot = np.tile(np.eye(3), (n, len(nodes), 1, 1))
    trans = np.zeros((n, len(nodes), 3))
    for i, nd in enumerate(nodes):
        if "rotation" in nd:
            rot[:, i] = _quat_to_rotmat(nd["rotation"])
        trans[:, i] = nd.get("translation", [0.0, 0.0, 0.0])
    mesh_node = next(i for i, nd in enumerate(nodes) if "skin" in nd)
    mesh = gltf["meshes"][nodes[mesh_node]["mesh"]]
    weights = np.tile(np.asarray(mesh.get("weights", []), np.float64), (n, 1))
    for ch in anim["channels"]:
        s = anim["samplers"][ch["sampler"]]
        values = _read_accessor(gltf, blob, s["output"]).astype(np.float64)
        node, what = ch["target"]["node"], ch["target"]["path"]
        if what == "rotation":
            rot[:, node] = _quat_to_rotmat(values / np.linalg.norm(values, axis=1, keepdims=True))
        elif what == "translation":
            trans[:, node] = values
        elif what == "weights":
            weights = values.reshape(n, -1)
    world = np.zeros((n, len(nodes), 4, 4))
    world[..., 3, 3] = 1.0

    def global_of(i: int, done: set[int]) -> None:
        if i in done:
            return
        local = np.zeros((n, 4, 4))
        local[:, :3, :3], local[:, :3, 3], local[:, 3, 3] = rot[:, i], trans[:, i], 1.0
        if i in parent:
            global_of(parent[i], done)
            world[:, i] = world[:, parent[i]] @ local
        else:
            world[:, i] = local
        done.add(i)

    done: set[int] = set()
    for j in joints:
        global_of(j, done)
    ibm = _read_accessor(gltf, blob, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    jm = world[:, joints] @ ibm  # (N, J, 4, 4)
    prim = mesh["primitives"][0]
    base = _read_accessor(gltf, blob, prim["attributes"]["POSITION"]).astype(np.float64)
    targets = [_read_accessor(gltf, blob, t["POSITION"]).astype(np.float64) for t in prim.get("targets", [])]
    pos = np.broadcast_to(base, (n, *base.shape)).copy()
    for i, t in enumerate(targets):
        pos += weights[:, i, None, None] * t
    out = np.zeros_like(pos)
    s = 0
    while f"JOINTS_{s}" in prim["attributes"]:
        jid = _read_accessor(gltf, blob, prim["attributes"][f"JOINTS_{s}"]).astype(np.int64)
        w = _read_accessor(gltf, blob, prim["attributes"][f"WEIGHTS_{s}"]).astype(np.float64)
        for c in range(4):
            m = jm[:, jid[:, c]]  # (N, V, 4, 4)
            out += w[None, :, c, None] * ((m[..., :3, :3] @ pos[..., None])[..., 0] + m[..., :3, 3])
        s += 1
    return times, out


# -------------------------------------------------------------------------------------------------------- BVH

_BVH_ORDER = "ZXY"  # channel order: R = Rz @ Rx @ Ry (intrinsic), the common mocap order


def write_bvh(path: str | Path, result: MeshResult, body: BodyModel, scale: float = 1.0,
              fill_gaps: bool = True) -> Path:
    """Write the SMPL skeleton's motion as BVH (y up, ``scale`` x metres; ZXY Euler channels in degrees).

    Offsets are the rest joints at the track's mean betas (BVH has one skeleton per file); the root carries
    position channels with the root joint's root-relative position (near zero: predictions have no trajectory).
    With ``fill_gaps`` missing frames hold the previous pose, so BVH frame k is video frame ``frame_index[0] + k``.
    """
    from scipy.spatial.transform import Rotation

    path = Path(path)
    validate_result(result, str(path))
    sk = _skeleton(result, body)
    parents = _body_arrays(body)["parents"]
    nj = len(parents)
    names = SMPL24.joint_names if nj == SMPL24.num_joints else tuple(f"joint_{j}" for j in range(nj))
    frame_index = np.asarray(result.frame_index)
    if fill_gaps:
        video = np.arange(frame_index[0], frame_index[-1] + 1)
        pick = np.searchsorted(frame_index, video, side="right") - 1
    else:
        pick = np.arange(len(frame_index))
    euler = Rotation.from_matrix(sk.local_rot[pick].reshape(-1, 3, 3)).as_euler(_BVH_ORDER, degrees=True)
    euler = euler.reshape(len(pick), nj, 3)
    root_pos = sk.local_trans[pick, 0] * scale
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        offset = (sk.rest_joints[j] - (sk.rest_joints[parents[j]] if parents[j] >= 0 else sk.rest_joints[j])) * scale
        lines.append(f"{pad}{'ROOT' if parents[j] < 0 else 'JOINT'} {names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}")
        rot_ch = " ".join(f"{a}rotation" for a in _BVH_ORDER)
        lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {rot_ch}" if parents[j] < 0
                     else f"{pad}  CHANNELS 3 {rot_ch}")
        children = np.flatnonzero(parents == j)
        for c in children:
            emit(int(c), depth + 1)
        if len(children) == 0:  # BVH needs an end site on leaves: 5 cm on along the bone
            bone = sk.rest_joints[j] - sk.rest_joints[parents[j]]
            tip = bone / max(np.linalg.norm(bone), 1e-9) * 0.05 * scale
            lines.append(f"{pad}  End Site\n{pad}  {{\n{pad}    OFFSET {tip[0]:.6f} {tip[1]:.6f} {tip[2]:.6f}\n"
                         f"{pad}  }}")
        lines.append(f"{pad}}}")

    order = _bvh_order(parents)
    emit(0, 0)
    lines += ["MOTION", f"Frames: {len(pick)}", f"Frame Time: {1.0 / result.fps:.8f}"]
    for k in range(len(pick)):
        vals = [*root_pos[k]] + [v for j in order for v in euler[k, j]]
        lines.append(" ".join(f"{v:.6f}" for v in vals))
    text = "\n".join(lines) + "\n"
    return _atomic_file(path, lambda f: f.write(text.encode()))


def _bvh_order(parents: np.ndarray) -> list[int]:
    """Depth-first joint order (the order of channels in a BVH frame line)."""
    out: list[int] = []

    def visit(j: int) -> None:
        out.append(j)
        for c in np.flatnonzero(parents == j):
            visit(int(c))

    visit(int(np.flatnonzero(parents < 0)[0]))
    return out


def read_bvh(path: str | Path) -> tuple[list[str], np.ndarray, float]:
    """Parse a BVH file and run its forward kinematics: (joint names, positions (frames, J, 3), frame time).

    A minimal reader for round-trip checks: any channel order, 3 or 6 channels per joint, end sites skipped.
    """
    from scipy.spatial.transform import Rotation

    tokens = Path(path).read_text().split()
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    stack: list[int] = []
    i = 1  # after HIERARCHY
    last = -1
    in_end = False
    while tokens[i] != "MOTION":
        t = tokens[i]
        if t in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append([])
            last = len(names) - 1
            i += 2
        elif t == "End":
            in_end = True
            i += 2
        elif t == "{":
            if not in_end:
                stack.append(last)
            i += 1
        elif t == "}":
            if in_end:
                in_end = False
            else:
                stack.pop()
            i += 1
        elif t == "OFFSET":
            if not in_end:
                offsets[last] = [float(x) for x in tokens[i + 1:i + 4]]
            i += 4
        elif t == "CHANNELS":
            c = int(tokens[i + 1])
            channels[last] = tokens[i + 2:i + 2 + c]
            i += 2 + c
        else:
            raise ValueError(f"{path}: unexpected token {t!r} in HIERARCHY")
    nframes = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    values = np.array(tokens[i + 6:], dtype=np.float64).reshape(nframes, -1)
    nj = len(names)
    rot = np.tile(np.eye(3), (nframes, nj, 1, 1))
    trans = np.tile(np.asarray(offsets), (nframes, 1, 1))
    col = 0
    for j in range(nj):
        chans = channels[j]
        pos_ch = [c for c in chans if c.endswith("position")]
        rot_ch = [c for c in chans if c.endswith("rotation")]
        block = values[:, col:col + len(chans)]
        col += len(chans)
        for c in pos_ch:
            trans[:, j, "XYZ".index(c[0])] += block[:, chans.index(c)]
        if rot_ch:
            seq = "".join(c[0] for c in rot_ch)
            angles = block[:, [chans.index(c) for c in rot_ch]]
            rot[:, j] = Rotation.from_euler(seq.upper(), angles, degrees=True).as_matrix()
    world_r = np.empty_like(rot)
    pos = np.empty_like(trans)
    for j in range(nj):
        p = parents[j]
        if p < 0:
            world_r[:, j], pos[:, j] = rot[:, j], trans[:, j]
        else:
            world_r[:, j] = world_r[:, p] @ rot[:, j]
            pos[:, j] = pos[:, p] + (world_r[:, p] @ trans[:, j][..., None])[..., 0]
    return names, pos, frame_time


def export_all(out_dir: str | Path, result: MeshResult, body: BodyModel, name: str = "track",
               formats: tuple[str, ...] = ("npz", "glb")) -> dict[str, Path]:
    """Write ``name.npz`` / ``name.glb`` / ``name.bvh`` / ``name_obj/`` / ``name_ply/`` as asked by ``formats``."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "npz":
            written[fmt] = save_result(out_dir / f"{name}.npz", result)
        elif fmt == "glb":
            write_glb(out_dir / f"{name}.glb", result, body)
            written[fmt] = out_dir / f"{name}.glb"
        elif fmt == "bvh":
            written[fmt] = write_bvh(out_dir / f"{name}.bvh", result, body)
        elif fmt in ("obj", "ply"):
            if result.vertices is None:
                raise ResultFileError(f"{name}: no vertices to write as {fmt}")
            write_mesh_sequence(out_dir / f"{name}_{fmt}", result.vertices, result.faces, fmt, result.frame_index)
            written[fmt] = out_dir / f"{name}_{fmt}"
        else:
            raise ValueError(f"unknown export format {fmt!r} (npz, glb, bvh, obj, ply)")
    return written
