"""Whole-track prediction: windows over a track, optional flip test, predictions blended back per frame.

Used by the evaluator and by in-the-wild inference, so both see the same numbers. Each frame's vertices and joints
are the weighted mean over the windows that contain it (weights: ``'uniform'``, or ``'triangular'`` = highest at a
window's centre, so overlapping windows cross-fade instead of jumping at boundaries). Rotations are averaged as
matrices and projected back onto SO(3) (a chordal mean); betas are averaged per frame.

Flip test (docs/protocols.md, flip): the mirrored input is predicted, its pose is mirrored back (``M R M`` with
left/right joints swapped), the body model is re-run, and vertices/joints are averaged with the unflipped ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import roma
import torch

from body_models import SMPL24, BodyModel
from mesh.data.mesh_data import MeshSplit
from mesh.inference.camera import ray_rotations
from mesh.network.model import MeshOutput, MeshRecovery, pose_body
from motion.data.clips import clip_indices
from motion.data.transforms import flip_h36m

_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
_SMPL_FLIP = list(SMPL24.flip_permutation)


@dataclass
class TrackPrediction:
    """Per-frame predictions for one track of N frames (metres, root-relative, float32 CPU tensors)."""

    rotmats: torch.Tensor  # (N, 24, 3, 3)
    betas: torch.Tensor  # (N, 10)
    vertices: torch.Tensor  # (N, V, 3)
    joints_h36m: torch.Tensor  # (N, 17, 3)
    joints_smpl: torch.Tensor  # (N, 24, 3)


def mirror_rotmats(rotmats: torch.Tensor) -> torch.Tensor:
    """Mirror SMPL rotations ``(..., 24, 3, 3)`` across the x = 0 plane and swap left/right joints."""
    m = _MIRROR.to(rotmats)
    return (m @ rotmats @ m)[..., _SMPL_FLIP, :, :]


@torch.no_grad()
def predict_clips(model: MeshRecovery, x: torch.Tensor, flip_test: bool) -> MeshOutput:
    """Predict clips ``x (B, T, 17, 3)``; ``flip_test``: average with the mirrored prediction (docs/protocols.md)."""
    if not flip_test:
        return model(x)
    # One network pass over both inputs (a larger batch runs faster on CPU); only the mirrored-back pose goes
    # through the body model (posing the flipped mesh itself would be wasted).
    rotmats, betas = model.predict_smpl(torch.cat([x, flip_h36m(x)]))
    b = len(x)
    out = pose_body(model.body, rotmats[:b], betas[:b])
    back = pose_body(model.body, mirror_rotmats(rotmats[b:]), betas[b:])
    return MeshOutput(
        rotmats=torch.stack([out.rotmats, back.rotmats]),  # kept apart: averaged (and projected) by the caller
        betas=(out.betas + back.betas) / 2,
        vertices=(out.vertices + back.vertices) / 2,
        joints_h36m=(out.joints_h36m + back.joints_h36m) / 2,
        joints_smpl=(out.joints_smpl + back.joints_smpl) / 2,
    )


def _window_weights(clip_len: int, blend: str) -> np.ndarray:
    if blend == "uniform":
        return np.ones(clip_len)
    if blend == "triangular":
        centre = (clip_len - 1) / 2
        return 1.0 - np.abs(np.arange(clip_len) - centre) / (centre + 1)
    raise ValueError(f"blend must be 'uniform' or 'triangular', got {blend!r}")


@torch.no_grad()
def predict_track(model: MeshRecovery, inputs: np.ndarray, clip_len: int, stride: int, flip_test: bool = True,
                  batch_size: int = 32, blend: Literal["uniform", "triangular"] = "triangular",
                  autocast_dtype: torch.dtype | None = None) -> TrackPrediction:
    """Predict every frame of one track ``inputs (N, 17, 3)`` (normalised u, v, confidence).

    Windows of ``clip_len`` start every ``stride`` frames, plus one ending at the last frame; a track shorter than
    ``clip_len`` is stretched by repeating frames, and each real frame takes the mean of its copies.
    """
    device = next(model.parameters()).device
    n = len(inputs)
    windows = clip_indices(np.zeros(n, dtype=np.int64), clip_len, stride)
    weights = _window_weights(clip_len, blend)
    acc: dict[str, torch.Tensor] = {}
    total = torch.zeros(n, dtype=torch.float32)
    x_all = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    for start in range(0, len(windows), batch_size):
        idx = windows[start:start + batch_size]
        x = x_all[torch.from_numpy(idx)].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = predict_clips(model, x, flip_test)
        rot = out.rotmats if out.rotmats.dim() == 6 else out.rotmats[None]  # (S, B, T, 24, 3, 3), S = 1 or 2
        fields = {"rotmats": rot.float().mean(dim=0), "betas": out.betas.float()[:, None].expand(-1, clip_len, -1),
                  "vertices": out.vertices.float(), "joints_h36m": out.joints_h36m.float(),
                  "joints_smpl": out.joints_smpl.float()}
        w = torch.from_numpy(np.broadcast_to(weights, idx.shape).astype(np.float32))  # (B, T)
        flat = torch.from_numpy(idx.reshape(-1))
        for key, value in fields.items():
            value = value.cpu()
            if key not in acc:  # float32 accumulators: a 1000-frame track of 14k vertices stays ~170 MB
                acc[key] = torch.zeros((n, *value.shape[2:]), dtype=torch.float32)
            weighted = value * w.reshape(*w.shape, *([1] * (value.dim() - 2)))
            acc[key].index_add_(0, flat, weighted.reshape(-1, *value.shape[2:]))
        total.index_add_(0, flat, w.reshape(-1))
    mean = {k: v / total.reshape(-1, *([1] * (v.dim() - 1))) for k, v in acc.items()}
    return TrackPrediction(rotmats=roma.special_procrustes(mean["rotmats"]), betas=mean["betas"],
                           vertices=mean["vertices"], joints_h36m=mean["joints_h36m"],
                           joints_smpl=mean["joints_smpl"])


def rotate_prediction(pred: TrackPrediction, rotations: torch.Tensor) -> TrackPrediction:
    """Turn each frame's body by ``rotations (N, 3, 3)`` about its pelvis: the global orientation becomes ``R @ R0``.

    Exact for pelvis-centred predictions (turning the root turns every vertex and joint about the root, and the
    re-centring on the pelvis then leaves ``R @ v``)."""
    r = rotations.to(pred.rotmats)
    rotmats = pred.rotmats.clone()
    rotmats[:, 0] = r @ rotmats[:, 0]
    def turn(points: torch.Tensor) -> torch.Tensor:  # (N, P, 3): R_n @ p for every point of frame n
        return torch.einsum("nij,npj->npi", r, points)

    return TrackPrediction(rotmats=rotmats, betas=pred.betas, vertices=turn(pred.vertices),
                           joints_h36m=turn(pred.joints_h36m), joints_smpl=turn(pred.joints_smpl))


def to_camera_frame(model: MeshRecovery, pred: TrackPrediction, box_centre_px: np.ndarray | None,
                    K: np.ndarray | None) -> TrackPrediction:
    """A track's prediction in the camera's orientation: unchanged for ``camera`` models; for ``box_ray`` models
    (:data:`mesh.network.model.ORIENTATIONS`) turned by the ray through the track-box centre ``box_centre_px (N, 2)``
    of camera ``K`` (``(3, 3)`` or ``(N, 3, 3)``).

    Raises:
        ValueError: a ``box_ray`` model without the box centres or the camera.
    """
    if model.orientation == "camera":
        return pred
    if box_centre_px is None or K is None:
        raise ValueError("the model predicts the orientation relative to the ray through the person's box "
                         "(box_ray): it needs the camera intrinsics and the track-box normalisation")
    return rotate_prediction(pred, torch.from_numpy(ray_rotations(box_centre_px, K)).float())


def require_camera_inputs(model: MeshRecovery, split: MeshSplit) -> None:
    """Check that ``split`` carries what :func:`to_camera_frame` needs for ``model`` (nothing for ``camera`` models).

    Raises:
        ValueError: one line naming the split and what is missing.
    """
    if model.orientation == "camera":
        return
    if split.intrinsics is None:
        missing = "no cam_intrinsics"
    elif split.box_centre is None:
        missing = "not read with the track_box normalisation"
    else:
        return
    raise ValueError(f"{split.name}: {missing}: the model predicts the orientation relative to the ray through the "
                     "person's box (box_ray) and needs the camera to turn it back")


def repose(body: BodyModel, rotmats: torch.Tensor, betas: torch.Tensor, chunk: int = 256) -> TrackPrediction:
    """Run the body model on per-frame ``rotmats (N, 24, 3, 3)`` and ``betas (N, 10)`` (pelvis-centred, CPU out)."""
    device = body.v_template.device
    parts: list[MeshOutput] = []
    for s in range(0, len(rotmats), chunk):
        out = pose_body(body, rotmats[s:s + chunk][None].to(device), betas[s:s + chunk][None].to(device))
        parts.append(out)
    cat = {k: torch.cat([getattr(p, k)[0].float().cpu() for p in parts]) for k in
           ("vertices", "joints_h36m", "joints_smpl")}
    return TrackPrediction(rotmats=rotmats.float().cpu(), betas=betas.float().cpu(), **cat)
