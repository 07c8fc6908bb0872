"""``BodyModel``: SMPL-family linear blend skinning on top of ``smplx.lbs``, for any vertex count.

The shape blend, joint regression and kinematic chain are smplx's (``blend_shapes``, ``batch_rigid_transform``);
what this module adds is the batching the mesh pipeline needs: betas **broadcast** against the pose batch, so that
a clip's shape (``betas`` of shape ``(B, 1, 10)`` against poses ``(B, T, 24, 3, 3)``) is blended and its rest
joints regressed once per clip instead of once per frame; and, for training, a vertex **subset** (``vertex_ids``):
only those vertices are skinned, and the H36M-17 joints are still exact (the regressor is folded into the skinning,
see :meth:`BodyModel.forward`), so the losses see exact joints and an unbiased sample of the mesh at a fraction of
the full mesh's cost.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, blend_shapes
from torch import nn
from torch.nn import functional

from body_models.loading import BodyModelData, load_model_data
from body_models.rotations import pose_to_rotmats


@dataclass
class BodyModelOutput:
    """Posed body, metres, in the body model's frame (plus ``transl`` when given).

    Attributes:
        vertices: (..., V, 3), or (..., K, 3) for the K ``vertex_ids`` asked for (in their order).
        joints: (..., 24, 3) SMPL joints (kinematic-chain positions).
        joints_h36m: (..., 17, 3) H36M-17 joints regressed from the (full) mesh.
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
        # Kinematic levels for the subset path's chain (see _rigid_transform_levels): joints sorted by depth, so
        # each level is a contiguous slice whose parents all lie in the previous level.
        depth = np.zeros(len(data.parents), dtype=np.int64)
        for j in range(1, len(data.parents)):
            depth[j] = depth[data.parents[j]] + 1
        order = np.argsort(depth, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        self.level_bounds = [int(b) for b in np.searchsorted(depth[order], np.arange(depth.max() + 2))]
        level_start = np.asarray(self.level_bounds)[np.maximum(depth[order] - 1, 0)]
        buf("level_order", order, torch.long)
        buf("level_inverse", position, torch.long)
        # index of each (sorted) joint's parent within the previous level; 0 for the root (unused)
        parent_pos = np.where(depth[order] > 0, position[data.parents[order]] - level_start, 0)
        buf("level_parent", parent_pos, torch.long)
        # Per level, the parents as a slice of the previous level where they form one (SMPL: 7 of 8 levels; a
        # single parent broadcasts): a view instead of a gather, and no scatter in backward.
        self.level_slices: list[slice | None] = []
        for start, end in itertools.pairwise(self.level_bounds[1:]):
            p = parent_pos[start:end]
            run = np.array_equal(p, np.arange(p[0], p[0] + len(p)))
            self.level_slices.append(slice(int(p[0]), int(p[0]) + (len(p) if run else 1))
                                     if run or (p == p[0]).all() else None)
        self.has_posedirs = data.posedirs is not None
        if data.posedirs is not None:
            # smplx layout: (9 * 23, V * 3)
            buf("posedirs", data.posedirs.reshape(-1, data.posedirs.shape[-1]).T)
        if data.J_regressor_h36m is None:
            raise ValueError(f"{data.source}: no H36M-17 regressor (load through load_body_model for the fallback)")
        # Subset path (vertex_ids): H36M joints without skinning the regressor's vertices. Each joint is a fixed
        # combination of skinned vertices, and skinning is linear in (weights x homogeneous rest position), so
        # joint_j = sum_{i,b} Q[j, i, b] [R_i | t_i]_{:, b} with Q = sum_v r_jv w_vi (v_rest, 1)_b. Q is linear in
        # betas: Q = h36m_blend + h36m_blend_dirs . betas (zero betas term on the homogeneous 1), built here in
        # float64 over the regressor's support (644 of the embedded model's 13,718 vertices).
        support = np.flatnonzero(np.any(data.J_regressor_h36m != 0, axis=0))
        reg, w = data.J_regressor_h36m[:, support], data.weights[support]
        buf("h36m_support", support, torch.long)
        buf("J_regressor_h36m_support", reg)  # with posedirs the rest pose varies per frame: support is skinned
        rest_h = np.concatenate([data.v_template[support], np.ones((len(support), 1))], axis=1)
        buf("h36m_blend", np.einsum("jv,vi,vb->jib", reg, w, rest_h, optimize=True))  # (17, 24, 4)
        # (17, 24, 3, num_betas)
        buf("h36m_blend_dirs", np.einsum("jv,vi,vcb->jicb", reg, w, shapedirs[support], optimize=True))

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

    def rest_shape(self, betas: torch.Tensor, vertex_ids: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shaped rest mesh and joints: betas ``(..., num_betas)`` -> ``(..., V, 3)``, ``(..., 24, 3)``, metres.

        With ``vertex_ids`` (K,) (int64, on the model's device, in range) the mesh is ``(..., K, 3)``, those rows only.
        """
        betas = betas.to(self.v_template.dtype)
        if betas.shape[-1] != self.num_betas:
            raise ValueError(f"betas must end in {self.num_betas}, got shape {tuple(betas.shape)}")
        lead = betas.shape[:-1]
        flat = betas.reshape(-1, self.num_betas)
        if vertex_ids is None:
            template, shapedirs = self.v_template, self.shapedirs
        else:
            template, shapedirs = self.v_template[vertex_ids], self.shapedirs[vertex_ids]
        verts = template + blend_shapes(flat, shapedirs)
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

    def _subset(self, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Checked ``vertex_ids`` (K,) as int64 on the model's device."""
        if vertex_ids.dim() != 1 or vertex_ids.dtype.is_floating_point or vertex_ids.dtype == torch.bool:
            raise ValueError(f"vertex_ids must be a 1-D integer tensor, got {vertex_ids.dtype} "
                             f"{tuple(vertex_ids.shape)}")
        ids = vertex_ids.to(device=self.v_template.device, dtype=torch.long)
        if ids.numel():
            lo, hi = torch.aminmax(ids)
            if int(lo) < 0 or int(hi) >= self.num_vertices:
                raise ValueError(f"vertex_ids must lie in [0, {self.num_vertices}), got [{int(lo)}, {int(hi)}]")
        return ids

    def forward(self, rotmats: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor | None = None,
                vertex_ids: torch.Tensor | None = None) -> BodyModelOutput:
        """Pose and shape the body.

        Args:
            rotmats: (..., 24, 3, 3) parent-relative joint rotations (joint 0 = global orientation).
            betas: (..., num_betas), broadcast against the pose batch shape with numpy rules: ``(B, 1, 10)`` against
                ``(B, T, 24, 3, 3)`` is one shape per clip and is blended once per clip.
            transl: optional (..., 3) translation added to every output, broadcast likewise.
            vertex_ids: optional (K,) integer vertex indices (repeats allowed). Only these vertices are skinned
                (plus the H36M regressor's support for a model with pose blend shapes); ``vertices`` is then
                (..., K, 3) in the order of ``vertex_ids``, equal to ``full.vertices[..., vertex_ids, :]`` up to
                float rounding, and ``joints``/``joints_h36m`` are exact. None (the default) poses the full mesh.
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
        if vertex_ids is not None:
            return self._forward_subset(rotmats, betas, transl, self._subset(vertex_ids), batch)
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

    def _rigid_transform_levels(self, rotmats: torch.Tensor, joints: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``smplx.lbs.batch_rigid_transform`` batched by tree depth: one product per level instead of per joint.

        Args:
            rotmats: (n, 24, 3, 3) parent-relative rotations; joints: (n, 24, 3) rest joints, metres.
        Returns:
            posed joints (n, 24, 3) and the top 3 rows of the rest-to-posed transforms (n, 24, 3, 4), as smplx's
            (the same products; 9 levels for SMPL's 24 joints make it 2x faster forward + backward at n = 512).
        """
        parents = self.parents
        offsets = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, parents[1:]]], dim=1)
        local = torch.cat([rotmats, offsets[..., None]], dim=-1)[:, self.level_order]  # (n, 24, 3, 4), by depth
        bottom = local.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*local.shape[:2], 1, 4)
        local_h = torch.cat([local, bottom], dim=-2)  # (n, 24, 4, 4)
        world = [local[:, :1]]
        for (start, end), sliced in zip(itertools.pairwise(self.level_bounds[1:]), self.level_slices, strict=True):
            parent = world[-1][:, sliced] if sliced is not None else world[-1][:, self.level_parent[start:end]]
            world.append(parent @ local_h[:, start:end])  # a one-joint parent slice broadcasts
        chain = torch.cat(world, dim=1)[:, self.level_inverse]  # (n, 24, 3, 4) world transforms, joint order
        posed = chain[..., 3]
        rest = (chain[..., :3] @ joints[..., None]).squeeze(-1)
        return posed, torch.cat([chain[..., :3], (posed - rest)[..., None]], dim=-1)

    def _h36m_blend(self, betas: torch.Tensor) -> torch.Tensor:
        """Q of ``__init__`` for each shape: betas (..., num_betas) -> (..., 17, 24 * 4)."""
        dirs = torch.einsum("jicb,...b->...jic", self.h36m_blend_dirs, betas.to(self.v_template.dtype))
        return (self.h36m_blend + functional.pad(dirs, (0, 1))).flatten(-2)  # no betas term on the homogeneous 1

    def _forward_subset(self, rotmats: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor | None,
                        ids: torch.Tensor, batch: torch.Size) -> BodyModelOutput:
        """:meth:`forward` for the K vertices ``ids`` (checked); ``batch`` = the broadcast leading dims.

        Same skinning as the full path, on the rows ``ids`` only. Without pose blend shapes the H36M joints come
        from Q (see ``__init__``), as 17 more rows of the shape-grouped blend matrix (or one (17, 96) x (96, 3)
        product per frame); with them, the regressor's support is skinned with the subset and regressed.
        """
        dtype, nj = self.v_template.dtype, self.num_joints
        n = int(np.prod(batch)) if batch else 1
        k = ids.shape[0]
        sel = torch.cat([ids, self.h36m_support]) if self.has_posedirs else ids
        lbs_weights = self.lbs_weights[sel]
        v_shaped, j_rest = self.rest_shape(betas, sel)  # (*lead, S, 3), once per distinct betas
        rot_flat = rotmats.expand(*batch, nj, 3, 3).reshape(n, nj, 3, 3)
        j_flat = j_rest.expand(*batch, nj, 3).reshape(n, nj, 3)
        joints, top = self._rigid_transform_levels(rot_flat, j_flat)  # (n, 24, 3), (n, 24, 3, 4)
        joints = joints.reshape(*batch, nj, 3)
        groups = self._shape_groups(betas.shape[:-1], batch, n)
        if groups is not None and not self.has_posedirs:
            # The full path's (S, 96) x (96, 3f) product per shape, and the same for Q's 17 rows (a separate
            # product: appending them to the blend matrix would copy it).
            m, f = groups
            v_h = torch.cat([v_shaped, torch.ones_like(v_shaped[..., :1])], dim=-1).reshape(m, -1, 4)
            blend = (lbs_weights[..., None] * v_h.unsqueeze(-2)).flatten(-2)  # (m, S, 24 * 4)
            per_frame = top.transpose(-1, -2).reshape(m, f, nj * 4, 3).permute(0, 2, 1, 3).reshape(m, nj * 4, f * 3)
            vertices = torch.bmm(blend, per_frame).reshape(m, -1, f, 3).transpose(1, 2).reshape(*batch, -1, 3)
            joints_h36m = torch.bmm(self._h36m_blend(betas).reshape(m, -1, nj * 4), per_frame)
            joints_h36m = joints_h36m.reshape(m, -1, f, 3).transpose(1, 2).reshape(*batch, -1, 3)
        else:
            skin = (lbs_weights @ top.reshape(n, nj, 12)).reshape(*batch, -1, 3, 4)
            v_rest = v_shaped
            if self.has_posedirs:
                eye = torch.eye(3, dtype=dtype, device=rot_flat.device)
                pose_feature = (rot_flat[:, 1:] - eye).reshape(n, -1)
                posedirs = self.posedirs.reshape(-1, self.num_vertices, 3)[:, sel].reshape(self.posedirs.shape[0], -1)
                v_rest = v_shaped.expand(*batch, -1, 3) + (pose_feature @ posedirs).reshape(*batch, -1, 3)
            vertices = (skin[..., :3] * v_rest.unsqueeze(-2)).sum(-1) + skin[..., 3]
            if self.has_posedirs:
                joints_h36m = torch.einsum("jv,...vc->...jc", self.J_regressor_h36m_support, vertices[..., k:, :])
                vertices = vertices[..., :k, :]
            else:
                q = self._h36m_blend(betas).unflatten(-1, (nj, 4))  # (*lead, 17, 24, 4)
                joints_h36m = torch.einsum("...jib,...iab->...ja", q, top.reshape(*batch, nj, 3, 4))
        if transl is not None:
            transl = transl.to(dtype).unsqueeze(-2)
            # The full path regresses translated vertices: a joint moves by (its regressor row's sum) x transl.
            row_sums = self.J_regressor_h36m_support.sum(-1, keepdim=True)  # (17, 1), 1 for a normalised regressor
            vertices, joints = vertices + transl, joints + transl
            joints_h36m = joints_h36m + row_sums * transl
        return BodyModelOutput(vertices=vertices, joints=joints, joints_h36m=joints_h36m)

    def forward_axis_angle(self, pose: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor | None = None,
                           vertex_ids: torch.Tensor | None = None) -> BodyModelOutput:
        """Same as :meth:`forward` with SMPL axis-angle ``pose`` of shape (..., 72) or (..., 24, 3), radians."""
        return self(pose_to_rotmats(pose.to(self.v_template.dtype), self.num_joints), betas, transl, vertex_ids)


def load_body_model(path: str | Path | None = None, gender: str = "neutral", h36m_regressor: str | Path | None = None,
                    num_betas: int = 10, device: torch.device | str | None = None) -> BodyModel:
    """The one factory: load a body model (explicit path > ``$SMPL_MODEL_DIR`` > embedded default) onto ``device``."""
    model = BodyModel.from_file(path, gender, h36m_regressor, num_betas)
    return model.to(device) if device is not None else model
