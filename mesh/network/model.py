"""``MeshRecovery``: motion encoder + SMPL head + body model, from 2D keypoint clips to posed meshes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from body_models import BodyModel, MeanParams
from body_models.rotations import rot6d_to_rotmat
from mesh.network.head import HeadConfig, SMPLHead


@dataclass
class MeshOutput:
    """Predictions for clips of B x T frames; positions in metres, **root-relative** (H36M pelvis = joint 0).

    Attributes:
        rotmats: (B, T, 24, 3, 3) SMPL joint rotations (joint 0 = global orientation, camera frame).
        betas: (B, 10), one shape per clip (ground truth may carry (B, T, 10)).
        vertices: (B, T, V, 3), or (B, T, K, 3) on the subset path (``vertex_ids``);
        joints_h36m: (B, T, 17, 3); joints_smpl: (B, T, 24, 3) (exact on both paths).
        vertex_ids: None for the full mesh, else the (K,) int64 indices of the rows of ``vertices``.
    """

    rotmats: torch.Tensor
    betas: torch.Tensor
    vertices: torch.Tensor
    joints_h36m: torch.Tensor
    joints_smpl: torch.Tensor
    vertex_ids: torch.Tensor | None = None


def pose_body(body: BodyModel, rotmats: torch.Tensor, betas: torch.Tensor,
              vertex_ids: torch.Tensor | None = None) -> MeshOutput:
    """Run the body model and centre everything on the regressed H36M pelvis.

    ``rotmats (B, T, 24, 3, 3)``; ``betas (B, 10)`` shared by a clip's frames (blended once per clip) or
    ``(B, T, 10)`` per frame (ground truth). ``vertex_ids (K,)``: skin only these vertices (training losses; see
    :meth:`BodyModel.forward`), so ``vertices`` is (B, T, K, 3); the joints stay exact. None = the full mesh.
    """
    with torch.autocast(rotmats.device.type, enabled=False):  # skinning in float32 even under AMP
        out = body(rotmats.float(), betas.float()[:, None, :] if betas.dim() == 2 else betas.float(),
                   vertex_ids=vertex_ids)
    root = out.joints_h36m[..., :1, :]
    return MeshOutput(rotmats=rotmats, betas=betas, vertices=out.vertices - root,
                      joints_h36m=out.joints_h36m - root, joints_smpl=out.joints - root,
                      vertex_ids=None if vertex_ids is None else vertex_ids.to(out.vertices.device, torch.long))


# The frame of the predicted global orientation. 'camera': the camera's own (MotionBERT; right for inputs that show
# where the person is in the image). 'box_ray': relative to the viewing ray through the person's track-box centre
# (mesh.inference.camera.ray_rotations puts it back in the camera frame), for track-box inputs, which hide where the
# box is: a person off the image centre is seen turned by the angle of that ray, and only that much is learnable.
ORIENTATIONS = ("camera", "box_ray")


def orientation_of(metadata: dict | None) -> str:
    """The orientation frame a mesh checkpoint's metadata records (files without the record: ``camera``)."""
    value = (metadata or {}).get("orientation", "camera")
    if value not in ORIENTATIONS:
        raise ValueError(f"unknown orientation frame {value!r} (known: {', '.join(ORIENTATIONS)})")
    return str(value)


class MeshRecovery(nn.Module):
    """``backbone`` (any registered encoder) + ``head`` (:class:`SMPLHead`) + ``body`` (:class:`BodyModel`).

    The body model's arrays are non-persistent buffers: checkpoints hold the network only, and record which body
    model it was trained with in their metadata. ``orientation`` is the frame of the predicted global orientation
    (:data:`ORIENTATIONS`; recorded in the checkpoint's metadata); ``keypoint_conversion`` the detector -> H36M-17
    rule its 2D input was made with (body_models.joint_sets.KEYPOINT_CONVERSIONS; recorded the same way).
    """

    orientation: str = "camera"
    keypoint_conversion: str = "midpoint"

    def __init__(self, backbone: nn.Module, body: BodyModel, mean: MeanParams,
                 head_config: HeadConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        if isinstance(getattr(backbone, "head", None), nn.Module):
            # The encoder's 3D-pose head is unused here: frozen, so DDP does not wait for gradients it never gets.
            backbone.head.requires_grad_(False)
        cfg = backbone.config
        self.head = SMPLHead(cfg.dim_rep, cfg.num_joints, mean, head_config)
        self.body = body

    def predict_smpl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, T, 17, 3)`` -> SMPL ``rotmats (B, T, 24, 3, 3)`` and ``betas (B, 10)``, without the body model."""
        feat = self.backbone.get_representation(x)
        pose6d, betas = self.head(feat)
        return rot6d_to_rotmat(pose6d.float()), betas.float()

    def forward(self, x: torch.Tensor, vertex_ids: torch.Tensor | None = None) -> MeshOutput:
        """``x (B, T, 17, 3)`` normalised (u, v, confidence) -> :class:`MeshOutput`.

        ``vertex_ids (K,)``: pose only these vertices (training; see :func:`pose_body`); None = the full mesh.
        """
        return pose_body(self.body, *self.predict_smpl(x), vertex_ids=vertex_ids)
