"""Mesh evaluation under named protocols (docs/protocols.md); the trainer's validation calls the same code.

Protocols (every switch is a field, and every report states them):

- ``motionbert``: neutral-model ground truth, the body model's H36M regressor (Pose2Mesh's
  ``J_regressor_h36m_correct`` for real SMPL) for joints, pelvis root, S14 joints, non-overlapping
  16-frame clips, flip test, per-frame mean. Unlike MotionBERT, every frame is evaluated exactly once (a track's
  tail gets one extra window; short tracks are not resampled into the average).
- ``full-sequence`` (WHAM / GVHMR style): gender-specific ground truth where genders are known, SPIN's
  ``J_regressor_h36m`` for joints (the body model's own H36M regressor, with a note, when it is not available),
  mid-hip root, LSP-14 joints, whole tracks through overlapping windows blended per frame, acceleration also in m/s².

Tracks are processed one at a time, so memory stays bounded by the longest track, not the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import torch

from body_models import BodyModel
from body_models.rotations import pose_to_rotmats
from mesh.data.mesh_data import MeshSplit
from mesh.evaluation.metrics import JOINT_SUBSETS, accel_error, center, mpjpe, mpve, pa_mpjpe, pa_mpve
from mesh.inference.predict import predict_track, require_camera_inputs, to_camera_frame
from mesh.inference.refine import RefineOptions, refine_track
from mesh.network.model import MeshRecovery, pose_body
from motion.data.clips import track_bounds


@dataclass(frozen=True)
class Protocol:
    name: str
    gt_gender: Literal["neutral", "gendered"]
    root: Literal["pelvis", "midhip"]
    joint_set: Literal["s14", "lsp14", "h36m17"]
    windows: Literal["clips", "full"]  # clips: non-overlapping windows; full: overlapping windows, cross-faded
    clip_len: int = 16
    flip: bool = True
    fps: float = 30.0
    # Joint regressor applied to predicted and GT vertices: 'pose2mesh' = the body model's own J_regressor_h36m
    # (Pose2Mesh's J_regressor_h36m_correct for real SMPL); 'spin' = SPIN's J_regressor_h36m (WHAM / GVHMR).
    regressor: Literal["pose2mesh", "spin"] = "pose2mesh"

    def __post_init__(self) -> None:
        if self.regressor not in ("pose2mesh", "spin"):
            raise ValueError(f"regressor must be 'pose2mesh' or 'spin', got {self.regressor!r}")


PROTOCOLS: dict[str, Protocol] = {
    "motionbert": Protocol("motionbert", "neutral", "pelvis", "s14", "clips"),
    "full-sequence": Protocol("full-sequence", "gendered", "midhip", "lsp14", "full", regressor="spin"),
}


def get_protocol(name: str, **overrides: object) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return replace(PROTOCOLS[name], **overrides)


@dataclass
class MeshEvaluation:
    """Per-frame errors (mm; NaN where undefined), their sources, and summaries."""

    protocol: Protocol
    per_frame: dict[str, np.ndarray]  # mpve, mpjpe, pa_mpjpe, pa_mpve, mpjpe17, pa_mpjpe17, accel (mm/frame^2)
    source: np.ndarray
    notes: list[str]
    joint_regressor: str = ""  # which regressor the joints came from, in words (written into every report)

    def summary(self) -> dict[str, float]:
        out = {f"{k}_mm": float(np.nanmean(v)) for k, v in self.per_frame.items() if k != "accel"}
        accel = float(np.nanmean(self.per_frame["accel"])) if np.isfinite(self.per_frame["accel"]).any() else 0.0
        out["accel_mm_per_frame2"] = accel
        out["accel_m_per_s2"] = accel * self.protocol.fps**2 / 1000
        out["frames"] = len(self.source)
        return out

    def per_sequence(self) -> dict[str, dict[str, float]]:
        table = {}
        for seq in dict.fromkeys(self.source.tolist()):
            mask = self.source == seq
            row = {f"{k}_mm": float(np.nanmean(v[mask])) if np.isfinite(v[mask]).any() else float("nan")
                   for k, v in self.per_frame.items()}
            row["frames"] = int(mask.sum())
            table[seq] = row
        return table

    def report(self) -> dict[str, object]:
        return {"protocol": asdict(self.protocol), "joint_regressor": self.joint_regressor, "summary": self.summary(),
                "notes": self.notes}


def _gt_body(bodies: dict[str, BodyModel], protocol: Protocol, gender: str, notes: set[str]) -> BodyModel:
    if protocol.gt_gender == "neutral" or gender not in ("m", "f"):
        if protocol.gt_gender == "gendered" and gender not in ("m", "f"):
            notes.add("some tracks have no gender: their ground truth uses the neutral model")
        return bodies["neutral"]
    key = "male" if gender == "m" else "female"
    if key not in bodies:
        notes.add(f"no {key} body model given: {key} ground truth uses the neutral model")
        return bodies["neutral"]
    return bodies[key]


@torch.no_grad()
def evaluate_mesh(model: MeshRecovery, split: MeshSplit, protocol: Protocol, gt_bodies: dict[str, BodyModel],
                  batch_size: int = 32, autocast_dtype: torch.dtype | None = None,
                  progress: Callable[[int], None] | None = None,
                  spin_regressor: torch.Tensor | np.ndarray | None = None,
                  refine: RefineOptions | None = None) -> MeshEvaluation:
    """Evaluate ``model`` on every frame of ``split`` under ``protocol``.

    Args:
        gt_bodies: ground-truth body models by gender: 'neutral' (required), optionally 'male', 'female'.
        progress: called with the number of frames done after each track.
        spin_regressor: (17, V) SPIN ``J_regressor_h36m``, used when ``protocol.regressor == 'spin'``: joints of
            both prediction and ground truth are then ``R @ vertices``. When it is None under 'spin', the body
            models' own H36M regressors are used and a note says the joints are not comparable with WHAM / GVHMR.
        refine: run test-time refinement (:mod:`mesh.inference.refine`) on each track's prediction before scoring;
            needs the split's camera intrinsics and pixel keypoints. None (the default) scores the network alone.
    """
    if "neutral" not in gt_bodies:
        raise ValueError("gt_bodies needs a 'neutral' body model")
    if gt_bodies["neutral"].num_vertices != model.body.num_vertices:
        raise ValueError(f"vertex counts differ: model body {model.body.num_vertices}, ground-truth body "
                         f"{gt_bodies['neutral'].num_vertices} (use the body model the network was trained with)")
    regressor, notes = _joint_regressor(protocol, spin_regressor, model.body.num_vertices)
    require_camera_inputs(model, split)
    if model.keypoint_conversion != split.keypoint_conversion:
        raise ValueError(f"{split.name}: 2D made with the '{split.keypoint_conversion}' keypoint conversion, the model "
                         f"was trained on '{model.keypoint_conversion}' (docs/protocols.md, joint sets)")
    if model.orientation != "camera":
        notes.add("box_ray model: predictions turned into the camera frame with the data's cam_intrinsics "
                  "(docs/protocols.md, orientation frame)")
    if refine is not None:
        if split.intrinsics is None or split.keypoints_px is None:
            raise ValueError(f"{split.name}: no cam_intrinsics: test-time refinement needs the camera")
        notes.add("test-time refinement (mesh/inference/refine.py) after the network: not the network's own error")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    joints = list(JOINT_SUBSETS[protocol.joint_set])
    stride = protocol.clip_len if protocol.windows == "clips" else max(1, protocol.clip_len // 2)
    blend = "uniform" if protocol.windows == "clips" else "triangular"
    keys = ("mpve", "mpjpe", "pa_mpjpe", "pa_mpve", "mpjpe17", "pa_mpjpe17", "accel")
    per_frame = {k: np.full(len(split), np.nan) for k in keys}
    for start, end in track_bounds(split.source):
        pred = predict_track(model, split.inputs[start:end], protocol.clip_len, stride, protocol.flip, batch_size,
                             blend, autocast_dtype)
        pred = to_camera_frame(model, pred, *split.ray_inputs(slice(start, end)))
        if refine is not None:
            pred, _ = refine_track(pred, model.body, split.keypoints_px[start:end], split.intrinsics[start],
                                   str(split.detector_format[start]), refine, split.keypoint_conversion)
        body = _gt_body(gt_bodies, protocol, str(split.gender[start]), notes).to(device)
        rot = pose_to_rotmats(torch.from_numpy(split.pose[start:end]).to(device))
        shape = split.shape[start:end]
        # 3DPW's ground-truth shape is constant per track: blend it once and skin the track as one clip (3x faster).
        betas = shape[:1] if (shape == shape[:1]).all() else shape[None]
        gt = pose_body(body, rot[None], torch.from_numpy(np.ascontiguousarray(betas)).to(device))
        gj, gv = gt.joints_h36m[0].cpu(), gt.vertices[0].cpu()
        pj, pv = pred.joints_h36m, pred.vertices
        if regressor is not None:  # SPIN's regressor on both meshes: (17, V) @ (T, V, 3) -> (T, 17, 3)
            gj = torch.einsum("jv,tvc->tjc", regressor.to(gv), gv)
            pj = torch.einsum("jv,tvc->tjc", regressor.to(pv), pv)
        gv_c, pv_c = center(gv, gj, protocol.root), center(pv, pj, protocol.root)
        gj_c, pj_c = center(gj, gj, protocol.root), center(pj, pj, protocol.root)
        values = {
            "mpve": mpve(pv_c, gv_c), "pa_mpve": pa_mpve(pv_c, gv_c),
            "mpjpe": mpjpe(pj_c[:, joints], gj_c[:, joints]), "pa_mpjpe": pa_mpjpe(pj_c[:, joints], gj_c[:, joints]),
            "mpjpe17": mpjpe(pj_c, gj_c), "pa_mpjpe17": pa_mpjpe(pj_c, gj_c),
        }
        for key, v in values.items():
            per_frame[key][start:end] = v.double().numpy() * 1000
        if end - start > 2:  # acceleration needs three consecutive frames of the track
            accel = accel_error(pj_c[:, joints], gj_c[:, joints])
            per_frame["accel"][start + 1:end - 1] = accel.double().numpy() * 1000
        if progress is not None:
            progress(end - start)
    model.train(was_training)
    used = ("SPIN J_regressor_h36m" if regressor is not None
             else "body model's own J_regressor_h36m (Pose2Mesh J_regressor_h36m_correct for real SMPL)")
    return MeshEvaluation(protocol=protocol, per_frame=per_frame, source=split.source, notes=sorted(notes),
                          joint_regressor=used)


def _joint_regressor(protocol: Protocol, spin_regressor: torch.Tensor | np.ndarray | None, num_vertices: int
                     ) -> tuple[torch.Tensor | None, set[str]]:
    """The (17, V) float32 CPU regressor to apply to vertices (None = the body models' own) and the notes."""
    if protocol.regressor != "spin":
        return None, set()
    if spin_regressor is None:
        return None, {"SPIN's J_regressor_h36m was not available (embedded body model, or no J_regressor_h36m.npy "
                      "next to the SMPL files): joints use the body model's own H36M regressor, so MPJPE, PA-MPJPE "
                      "and MPVE are not comparable with WHAM / GVHMR numbers"}
    reg = torch.as_tensor(spin_regressor).detach().to("cpu", torch.float32)
    if reg.shape != (17, num_vertices):
        raise ValueError(f"spin_regressor has shape {tuple(reg.shape)}, expected (17, {num_vertices})")
    if not torch.isfinite(reg).all():
        raise ValueError("spin_regressor contains NaN or inf")
    return reg, set()
