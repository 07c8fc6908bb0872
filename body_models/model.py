"""``BodyModel``: SMPL-family linear blend skinning on top of ``smplx.lbs``, for any vertex count.

The shape blend, joint regression and kinematic chain are smplx's (``blend_shapes``, ``batch_rigid_transform``);
what this module adds is the batching the mesh pipeline needs: betas **broadcast** against the pose batch, so that
a clip's shape (``betas`` of shape ``(B, 1, 10)`` against poses ``(B, T, 24, 3, 3)``) is blended and its rest
joints regressed once per clip instead of once per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, blend_shapes
from torch import nn

from body_models.loading import BodyModelData, load_model_data
from body_models.rotations import pose_to_rotmats


@dataclass
class BodyModelOutput:
    """Posed body, metres, in the body model's frame (plus ``transl`` when given).

    Attributes:
        vertices: (..., V, 3).
        joints: (..., 24, 3) SMPL joints (kinematic-chain positions).
        joints_h36m: (..., 17, 3) H36M-17 joints regressed from the vertices.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    joints_h36m: torch.Tensor


class BodyModel(nn.Module):
    """SMPL-form body model: 24-joint kinematic tree, linear blend skinning, ``num_betas`` shape components.

    Buffers are not persistent, so a network holding a ``BodyModel`` does not store it in its checkpoints.
    Call ``.to(device, dtype)`` like any module; inputs are cast to the model's dtype.
    """

    def __init__(self, data: BodyModelData, num_betas: int = 10) -> None:
        super().__init__()
        if data.shapedirs.shape[-1] < num_betas:
            raise ValueError(f"{data.source}: model has {data.shapedirs.shape[-1]} shape components, {num_betas} asked")
        self.source = data.source
        self.num_betas = num_betas

        def buf(name: str, array: np.ndarray, dtype: torch.dtype = torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array), dtype=dtype), persistent=False)

        shapedirs = data.shapedirs[..., :num_betas]
        buf("v_template", data.v_template)
        buf("shapedirs", shapedirs)
        # Rest joints are linear in betas, so regress the template and each blend shape once, here.
        buf("joint_template", data.J_regressor @ data.v_template)
        buf("joint_shapedirs", np.einsum("jv,vcb->jcb", data.J_regressor, shapedirs))
        buf("lbs_weights", data.weights)
        buf("J_regressor_h36m", data.J_regressor_h36m if data.J_regressor_h36m is not None else np.zeros((17, 0)))
        buf("faces", data.faces, torch.long)
        buf("parents", data.parents, torch.long)
        self.has_posedirs = data.posedirs is not None
        if data.posedirs is not None:
            # smplx layout: (9 * 23, V * 3)
            buf("posedirs", data.posedirs.reshape(-1, data.posedirs.shape[-1]).T)
        if data.J_regressor_h36m is None:
            raise ValueError(f"{data.source}: no H36M-17 regressor (load through load_body_model for the fallback)")

    @classmethod
    def from_file(cls, path: str | Path | None = None, gender: str = "neutral",
                  h36m_regressor: str | Path | None = None, num_betas: int = 10) -> BodyModel:
        """Load from a file or folder (see ``body_models.loading.resolve_model_path``); None = env var / default."""
        return cls(load_model_data(path, gender, h36m_regressor), num_betas=num_betas)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return self.parents.shape[0]

    def rest_shape(self, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shaped rest mesh and joints: betas ``(..., num_betas)`` -> ``(..., V, 3)``, ``(..., 24, 3)``."""
        betas = betas.to(self.v_template.dtype)
        if betas.shape[-1] != self.num_betas:
            raise ValueError(f"betas must end in {self.num_betas}, got shape {tuple(betas.shape)}")
        lead = betas.shape[:-1]
        flat = betas.reshape(-1, self.num_betas)
        verts = self.v_template + blend_shapes(flat, self.shapedirs)
        joints = self.joint_template + blend_shapes(flat, self.joint_shapedirs)
        return verts.reshape(*lead, -1, 3), joints.reshape(*lead, -1, 3)

    @staticmethod
    def _shape_groups(betas_batch: torch.Size, batch: torch.Size, n: int) -> tuple[int, int] | None:
        """``(m, k)`` when the n frames form m runs of k consecutive frames sharing one shape (e.g. betas
        ``(B, 1, 10)`` against poses ``(B, T, ...)``: m = B, k = T); None when shapes are not shared that way."""
        m = int(np.prod(betas_batch)) if len(betas_batch) else 1
        if m >= n or n % m:
            return None
        idx = torch.arange(m).reshape(betas_batch).expand(batch).reshape(m, n // m)
        return (m, n // m) if bool((idx == idx[:, :1]).all()) else None

    def forward(self, rotmats: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor | None = None
                ) -> BodyModelOutput:
        """Pose and shape the body.

        Args:
            rotmats: (..., 24, 3, 3) parent-relative joint rotations (joint 0 = global orientation).
            betas: (..., num_betas), broadcast against the pose batch shape with numpy rules: ``(B, 1, 10)`` against
                ``(B, T, 24, 3, 3)`` is one shape per clip and is blended once per clip.
            transl: optional (..., 3) translation added to every output, broadcast likewise.
        Returns:
            :class:`BodyModelOutput` with leading dims ``broadcast(rotmats.shape[:-3], betas.shape[:-1])``.
        """
        dtype = self.v_template.dtype
        rotmats = rotmats.to(dtype)
        if rotmats.shape[-3:] != (self.num_joints, 3, 3):
            raise ValueError(f"rotmats must be (..., {self.num_joints}, 3, 3), got {tuple(rotmats.shape)}")
        try:
            batch = torch.broadcast_shapes(rotmats.shape[:-3], betas.shape[:-1])
        except RuntimeError:
            raise ValueError(f"betas {tuple(betas.shape)} do not broadcast against rotmats "
                             f"{tuple(rotmats.shape)} (use (B, 1, {self.num_betas}) for one shape per clip)") from None
        v_shaped, j_rest = self.rest_shape(betas)  # once per distinct betas
        n = int(np.prod(batch)) if batch else 1
        rot_flat = rotmats.expand(*batch, self.num_joints, 3, 3).reshape(n, self.num_joints, 3, 3)
        j_flat = j_rest.expand(*batch, self.num_joints, 3).reshape(n, self.num_joints, 3)
        joints, rel = batch_rigid_transform(rot_flat, j_flat, self.parents, dtype=dtype)

        top = rel[:, :, :3, :]  # (n, 24, 3, 4): the 4th row of a rigid transform is constant
        groups = self._shape_groups(betas.shape[:-1], batch, n)
        if groups is not None and not self.has_posedirs:
            # v = sum_j w_vj [R_j | t_j] (v_rest, 1) = M @ A, with M[v, (j, b)] = w_vj (v_rest, 1)_b built once per
            # shape and A[(j, b), a] = [R_j | t_j]_ab per frame: one (V, 96) x (96, 3 k) product per shape covers
            # its k frames, with no (V, 3, 4) temporaries per frame.
            m, k = groups
            v_h = torch.cat([v_shaped, torch.ones_like(v_shaped[..., :1])], dim=-1).reshape(m, -1, 4)
            blend = (self.lbs_weights[..., None] * v_h.unsqueeze(-2)).flatten(-2)  # (m, V, 24 * 4)
            per_frame = top.transpose(-1, -2).reshape(m, k, self.num_joints * 4, 3)
            out = torch.bmm(blend, per_frame.permute(0, 2, 1, 3).reshape(m, self.num_joints * 4, k * 3))
            vertices = out.reshape(m, -1, k, 3).transpose(1, 2).reshape(*batch, -1, 3)
        else:
            # Per-vertex blend of the joint transforms, then applied to each frame's rest vertices.
            skin = (self.lbs_weights @ top.reshape(n, self.num_joints, 12)).reshape(*batch, -1, 3, 4)
            if self.has_posedirs:
                eye = torch.eye(3, dtype=dtype, device=rot_flat.device)
                pose_feature = (rot_flat[:, 1:] - eye).reshape(n, -1)
                v_rest = v_shaped.expand(*batch, -1, 3) + (pose_feature @ self.posedirs).reshape(*batch, -1, 3)
            else:
                v_rest = v_shaped  # broadcasts in the product below: no per-frame copy of the shaped mesh
            vertices = (skin[..., :3] * v_rest.unsqueeze(-2)).sum(-1) + skin[..., 3]
        joints = joints.reshape(*batch, self.num_joints, 3)
        if transl is not None:
            transl = transl.to(dtype).unsqueeze(-2)
            vertices, joints = vertices + transl, joints + transl
        joints_h36m = torch.einsum("jv,...vc->...jc", self.J_regressor_h36m, vertices)
        return BodyModelOutput(vertices=vertices, joints=joints, joints_h36m=joints_h36m)

    def forward_axis_angle(self, pose: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor | None = None
                           ) -> BodyModelOutput:
        """Same as :meth:`forward` with SMPL axis-angle ``pose`` of shape (..., 72) or (..., 24, 3), radians."""
        return self(pose_to_rotmats(pose.to(self.v_template.dtype), self.num_joints), betas, transl)


def load_body_model(path: str | Path | None = None, gender: str = "neutral", h36m_regressor: str | Path | None = None,
                    num_betas: int = 10, device: torch.device | str | None = None) -> BodyModel:
    """The one factory: load a body model (explicit path > ``$SMPL_MODEL_DIR`` > embedded default) onto ``device``."""
    model = BodyModel.from_file(path, gender, h36m_regressor, num_betas)
    return model.to(device) if device is not None else model
