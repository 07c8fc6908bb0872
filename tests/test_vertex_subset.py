"""Training on a vertex subset: exact subset skinning and joints, an unbiased vertex loss, gradients, guards."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_smpl import fake_smpl_arrays, write_npz
from smplx.lbs import batch_rigid_transform

from body_models import BodyModel, load_body_model, load_mean_params
from body_models.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle
from mesh.network.head import HeadConfig
from mesh.network.losses import LossWeights, loss_preset, mesh_loss, rotation_angle, train_vertex_ids
from mesh.network.model import MeshRecovery, pose_body
from motion.encoders import build_encoder, set_recompute_blocks

V = 400  # fake model size: small enough to pose the full mesh many times


def _fake_body(folder: Path, posedirs: bool, seed: int) -> BodyModel:
    arrays = fake_smpl_arrays(V, seed=seed, posedirs=posedirs)
    rng = np.random.default_rng(seed)
    # A sparse regressor (about a third of the vertices) whose rows do not sum to 1, so that a translation moves the
    # joints by less than itself: the subset path must regress exactly what the full path regresses.
    reg = rng.dirichlet(np.ones(V), size=17) * (rng.random(V) < 0.3) * 0.9
    arrays["J_regressor_h36m"] = reg
    return BodyModel.from_file(write_npz(arrays, folder / f"model_{posedirs}.npz"))


@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BodyModel]:
    folder = tmp_path_factory.mktemp("subset")
    return {"embedded": load_body_model(), "fake": _fake_body(folder, posedirs=False, seed=3),
            "fake+posedirs": _fake_body(folder, posedirs=True, seed=4)}


def _pose(b: int, t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return axis_angle_to_rotmat(torch.randn(b, t, 24, 3, generator=g) * 0.4)


@pytest.mark.parametrize("name", ["embedded", "fake", "fake+posedirs"])
@pytest.mark.parametrize("shape", ["per_clip", "per_frame", "shared"])
def test_subset_equals_full_mesh_rows_and_joints(bodies: dict[str, BodyModel], name: str, shape: str) -> None:
    body = bodies[name]
    g = torch.Generator().manual_seed(1)
    b, t = 3, 5
    rot = _pose(b, t, seed=2)
    betas = {"per_clip": torch.randn(b, 1, 10, generator=g), "per_frame": torch.randn(b, t, 10, generator=g),
             "shared": torch.randn(10, generator=g)}[shape]
    transl = torch.randn(b, 1, 3, generator=g)
    # unsorted, with a repeat and the last vertex
    ids = torch.cat([torch.randperm(body.num_vertices, generator=g)[:50], torch.tensor([7, 7, body.num_vertices - 1])])
    full = body(rot, betas, transl)
    sub = body(rot, betas, transl, vertex_ids=ids)
    assert sub.vertices.shape == (b, t, len(ids), 3)
    torch.testing.assert_close(sub.vertices, full.vertices[..., ids, :], atol=2e-6, rtol=0)
    torch.testing.assert_close(sub.joints, full.joints, atol=2e-6, rtol=0)
    torch.testing.assert_close(sub.joints_h36m, full.joints_h36m, atol=2e-6, rtol=0)


def test_subset_float64_is_exact(bodies: dict[str, BodyModel]) -> None:
    body = copy.deepcopy(bodies["fake"]).double()
    rot, betas = _pose(2, 4, seed=5).double(), torch.randn(2, 1, 10, dtype=torch.float64)
    ids = torch.arange(0, V, 7)
    full, sub = body(rot, betas), body(rot, betas, vertex_ids=ids)
    torch.testing.assert_close(sub.vertices, full.vertices[..., ids, :], atol=1e-12, rtol=0)
    # the folded regressor (buffers stored in float32, then doubled) agrees far below float32 resolution (1e-7)
    torch.testing.assert_close(sub.joints_h36m, full.joints_h36m, atol=1e-8, rtol=0)


def test_level_batched_chain_matches_smplx(bodies: dict[str, BodyModel]) -> None:
    body = bodies["embedded"]
    rot = _pose(7, 1, seed=6)[:, 0]
    joints = torch.randn(7, 24, 3)
    posed, top = body._rigid_transform_levels(rot, joints)
    expect_posed, expect_rel = batch_rigid_transform(rot, joints, body.parents)
    torch.testing.assert_close(posed, expect_posed, atol=1e-6, rtol=0)
    torch.testing.assert_close(top, expect_rel[:, :, :3], atol=1e-6, rtol=0)


def test_pose_body_subset_is_centred_like_the_full_mesh(bodies: dict[str, BodyModel]) -> None:
    body = bodies["embedded"]
    rot, betas = _pose(2, 3, seed=7), torch.randn(2, 10)
    ids = train_vertex_ids(LossWeights(train_vertices=300), body.num_vertices, torch.Generator().manual_seed(0))
    full, sub = pose_body(body, rot, betas), pose_body(body, rot, betas, vertex_ids=ids)
    assert full.vertex_ids is None and torch.equal(sub.vertex_ids, ids)
    torch.testing.assert_close(sub.vertices, full.vertices[..., ids, :], atol=2e-6, rtol=0)
    torch.testing.assert_close(sub.joints_h36m, full.joints_h36m, atol=2e-6, rtol=0)
    torch.testing.assert_close(sub.joints_smpl, full.joints_smpl, atol=2e-6, rtol=0)


def test_train_vertex_ids_draws_uniform_subsets() -> None:
    w = LossWeights(train_vertices=40)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(V)
    draws = 2000
    for _ in range(draws):
        ids = train_vertex_ids(w, V, gen)
        assert ids.shape == (40,) and ids.dtype == torch.long
        assert torch.equal(ids, ids.unique())  # sorted, no repeats (without replacement)
        counts += torch.bincount(ids, minlength=V)
    expect = draws * 40 / V  # 200 per vertex
    assert counts.min() > 0.7 * expect and counts.max() < 1.3 * expect  # each vertex about 200 +- 14 (sd)
    # same generator state, same subset: exact resume
    again = train_vertex_ids(w, V, torch.Generator().manual_seed(0))
    assert torch.equal(again, train_vertex_ids(w, V, torch.Generator().manual_seed(0)))


def test_train_vertex_ids_falls_back_to_the_full_mesh() -> None:
    assert train_vertex_ids(LossWeights(train_vertices=0), V) is None
    assert train_vertex_ids(LossWeights(train_vertices=V), V) is None
    assert train_vertex_ids(LossWeights(train_vertices=10, edge=1.0), V) is None
    assert train_vertex_ids(LossWeights(train_vertices=10, normal=1.0), V) is None
    assert train_vertex_ids(loss_preset("motionbert"), 2000).numel() == 0  # no vertex term: joints only
    with pytest.raises(ValueError):
        train_vertex_ids(LossWeights(train_vertices=-1), V)


def test_subset_vertex_loss_is_an_unbiased_estimate(bodies: dict[str, BodyModel]) -> None:
    body = bodies["fake"]
    rot_gt, rot_pred = _pose(2, 4, seed=8), _pose(2, 4, seed=9)
    betas_gt, betas_pred = torch.randn(2, 10), torch.randn(2, 10)
    k = 100
    w = LossWeights(train_vertices=k)
    full_gt, full_pred = pose_body(body, rot_gt, betas_gt), pose_body(body, rot_pred, betas_pred)
    _, full_terms = mesh_loss(full_pred, full_gt, w, body.faces)
    per_vertex = (full_pred.vertices - full_gt.vertices).abs().mean(dim=(0, 1, 3)) * 1000  # (V,) mm
    assert math.isclose(float(per_vertex.mean()), full_terms["vertex"], rel_tol=1e-5)
    gen = torch.Generator().manual_seed(0)
    draws, values = 2000, []
    for i in range(draws):
        ids = train_vertex_ids(w, V, gen)
        values.append(float(per_vertex[ids].mean()))
        if i < 20:  # through the subset path: the loss is the mean over the subset, the other terms the full ones
            _, terms = mesh_loss(pose_body(body, rot_pred, betas_pred, ids), pose_body(body, rot_gt, betas_gt, ids), w)
            assert math.isclose(terms["vertex"], values[-1], rel_tol=1e-4)
            assert math.isclose(terms["joints"], full_terms["joints"], rel_tol=1e-5)
    estimate = float(np.mean(values))
    # standard error of the average of `draws` subset means (without replacement: finite population correction)
    se = float(per_vertex.std()) / math.sqrt(k) * math.sqrt((V - k) / (V - 1)) / math.sqrt(draws)
    assert abs(estimate - full_terms["vertex"]) < 4 * se
    assert 4 * se < 0.01 * full_terms["vertex"]  # the check above is tight: 1 % of the loss
    assert abs(values[0] - full_terms["vertex"]) > 1e-3  # one subset is an estimate, not the full value


def test_gradients_through_the_subset_match_the_full_path(bodies: dict[str, BodyModel]) -> None:
    body = bodies["embedded"]
    ids = train_vertex_ids(LossWeights(train_vertices=200), body.num_vertices, torch.Generator().manual_seed(1))
    gt = pose_body(body, _pose(2, 3, seed=10), torch.randn(2, 10))
    grads = []
    for subset in (True, False):
        rot = _pose(2, 3, seed=11).requires_grad_()
        betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(12)).requires_grad_()
        pred = pose_body(body, rot, betas, ids if subset else None)
        verts = pred.vertices if subset else pred.vertices[..., ids, :]
        target = gt.vertices[..., ids, :]
        loss = (verts - target).abs().mean() + (pred.joints_h36m - gt.joints_h36m).norm(dim=-1).mean()
        loss.backward()
        grads.append((rot.grad, betas.grad))
    (rot_sub, betas_sub), (rot_full, betas_full) = grads
    assert rot_sub.abs().sum() > 0 and betas_sub.abs().sum() > 0
    torch.testing.assert_close(rot_sub, rot_full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(betas_sub, betas_full, atol=1e-5, rtol=1e-4)


def test_mesh_recovery_trains_on_a_subset(bodies: dict[str, BodyModel]) -> None:
    body = bodies["embedded"]
    torch.manual_seed(0)
    model = MeshRecovery(build_encoder("ssrstf", {"variant": "XS", "depth": 1}), body, load_mean_params(),
                         HeadConfig(hidden_dim=32))
    x = torch.randn(2, 4, 17, 3)
    w = LossWeights(train_vertices=100)
    ids = train_vertex_ids(w, body.num_vertices, torch.Generator().manual_seed(0))
    pred = model(x, vertex_ids=ids)
    assert pred.vertices.shape == (2, 4, 100, 3)
    with torch.no_grad():
        gt = pose_body(body, _pose(2, 4, seed=13), torch.randn(2, 10), vertex_ids=ids)
    loss, terms = mesh_loss(pred, gt, w, body.faces)
    loss.backward()
    assert set(terms) == {"vertex", "joints", "velocity", "pose", "shape", "norm"}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)
    assert model.head.fc1.weight.grad.abs().sum() > 0 and model.backbone.joints_embed.weight.grad.abs().sum() > 0


def test_mesh_loss_guards(bodies: dict[str, BodyModel]) -> None:
    body = bodies["fake"]
    rot, betas = _pose(1, 2, seed=14), torch.randn(1, 10)
    a = pose_body(body, rot, betas, torch.tensor([1, 2, 3]))
    b = pose_body(body, rot, betas, torch.tensor([1, 2, 4]))
    with pytest.raises(ValueError, match="same vertices"):
        mesh_loss(a, b, LossWeights())
    with pytest.raises(ValueError, match="same vertices"):
        mesh_loss(a, pose_body(body, rot, betas), LossWeights())
    with pytest.raises(ValueError, match="full mesh"):
        mesh_loss(a, a, LossWeights(edge=1.0), body.faces)
    with pytest.raises(ValueError, match="in \\[0"):
        body(rot, betas, vertex_ids=torch.tensor([V]))
    with pytest.raises(ValueError, match="integer"):
        body(rot, betas, vertex_ids=torch.tensor([1.0]))


def test_norm_term_equals_the_axis_angle_norm() -> None:
    g = torch.Generator().manual_seed(15)
    aa = torch.randn(2, 3, 24, 3, generator=g) * 1.5
    aa[0, 0, 1] = 0.0  # identity
    aa[0, 0, 2] = torch.tensor([math.pi, 0.0, 0.0])  # half turn
    rot = axis_angle_to_rotmat(aa)
    torch.testing.assert_close(rotation_angle(rot), rotmat_to_axis_angle(rot).norm(dim=-1), atol=2e-6, rtol=0)
    betas = torch.randn(2, 10, generator=g)
    out = pose_body(load_body_model(), rot, betas)
    for scope in ("body", "all"):
        w = LossWeights(vertex=0, joints=0, velocity=0, pose=0, shape=0, norm=1.0, norm_scope=scope)
        _, terms = mesh_loss(out, out, w)
        axis = rotmat_to_axis_angle(rot)[..., (1 if scope == "body" else 0):, :]
        theta = torch.cat([axis.flatten(-2), betas[:, None].expand(-1, 3, -1)], dim=-1)
        assert math.isclose(terms["norm"], float(theta.norm(dim=-1).mean()), rel_tol=1e-5)


def test_encoder_recompute_gives_the_same_gradients() -> None:
    """``SSRSTF.recompute_blocks`` (training memory knob, ``model.recompute_blocks`` in the trainers' configs) changes
    memory, not results; DSTformer has no such knob."""
    torch.manual_seed(0)
    encoder = build_encoder("ssrstf", {"variant": "XS", "depth": 2})
    x = torch.randn(2, 5, 17, 3)
    grads = []
    for blocks in (0, 2):
        set_recompute_blocks(encoder, blocks)
        assert encoder.recompute_blocks == blocks
        encoder.zero_grad(set_to_none=True)
        rep = encoder.get_representation(x)
        rep.square().mean().backward()
        grads.append({name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-7, rtol=1e-5, msg=name)
    with pytest.raises(ValueError, match="DSTformer cannot recompute blocks"):
        set_recompute_blocks(build_encoder("dstformer", {"depth": 1}), 1)


def test_empty_subset_poses_the_joints_only(bodies: dict[str, BodyModel]) -> None:
    """The ``motionbert`` preset has no vertex term: the subset is empty and only the joints are posed."""
    body = bodies["embedded"]
    rot, betas = _pose(2, 3, seed=16), torch.randn(2, 10)
    ids = train_vertex_ids(loss_preset("motionbert"), body.num_vertices)
    full, sub = pose_body(body, rot, betas), pose_body(body, rot, betas, vertex_ids=ids)
    assert sub.vertices.shape == (2, 3, 0, 3)
    torch.testing.assert_close(sub.joints_h36m, full.joints_h36m, atol=2e-6, rtol=0)
    gt = dataclasses.replace(full, vertices=full.vertices[..., ids, :], vertex_ids=ids)
    _, terms = mesh_loss(sub, gt, loss_preset("motionbert"))
    assert "vertex" not in terms and terms["joints"] < 1e-3
