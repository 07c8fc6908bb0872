"""mesh.io.export: result npz, obj/ply sequences, the skinned animated glb and BVH, all read back and compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from body_models import SMPL24, load_body_model
from body_models.rotations import pose_to_rotmats
from mesh.inference.predict import TrackPrediction
from mesh.io import export as ex
from mesh.network.model import pose_body

C = ex.CAM_TO_YUP


@pytest.fixture(scope="module")
def body():
    return load_body_model()


def make_prediction(body, n: int = 12, vary_betas: bool = False, seed: int = 0) -> TrackPrediction:
    """A prediction-like track: random poses (upright in the camera frame), centred like
    mesh.network.model.pose_body."""
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(n, 72, generator=g) * 0.3
    pose[:, :3] += torch.tensor([np.pi, 0.0, 0.0])
    rot = pose_to_rotmats(pose)
    betas = torch.randn(1, 10, generator=g).expand(n, 10).clone()
    if vary_betas:
        betas += 0.3 * torch.randn(n, 10, generator=g)
    out = pose_body(body, rot[None], betas[None])
    return TrackPrediction(rotmats=rot, betas=betas, vertices=out.vertices[0], joints_h36m=out.joints_h36m[0],
                           joints_smpl=out.joints_smpl[0])


@pytest.fixture(scope="module")
def result(body) -> ex.MeshResult:
    kp = np.random.default_rng(0).uniform(0, 500, size=(12, 17, 3)).astype(np.float32)
    return ex.result_from_prediction(make_prediction(body), body, frame_index=np.arange(12) * 2 + 3, fps=25.0,
                                     keypoints_2d=kp, image_size=(640, 480))


def test_npz_round_trip(tmp_path: Path, result: ex.MeshResult, body) -> None:
    path = ex.save_result(tmp_path / "r.npz", result)
    back = ex.load_result(path)
    for key in ("global_orient", "body_pose", "betas", "transl", "joints", "joints_h36m", "vertices", "frame_index",
                "faces", "keypoints_2d", "image_size"):
        np.testing.assert_array_equal(getattr(back, key), getattr(result, key), err_msg=key)
    assert back.fps == 25.0 and back.body_model == result.body_model
    assert not list(tmp_path.glob(".*"))  # no temp file left behind
    # The parameters reproduce the stored vertices: body(params) + transl.
    out = body(torch.from_numpy(back.rotmats).float(), torch.from_numpy(back.betas), torch.from_numpy(back.transl))
    np.testing.assert_allclose(out.vertices.numpy(), back.vertices, atol=1e-5)
    np.testing.assert_allclose(out.joints_h36m[:, 0].numpy(), 0.0, atol=1e-5)  # root-relative


def test_npz_errors(tmp_path: Path, result: ex.MeshResult) -> None:
    path = ex.save_result(tmp_path / "r.npz", result)
    raw = dict(np.load(path))
    with pytest.raises(ex.ResultFileError, match="no such result file"):
        ex.load_result(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ex.ResultFileError, match=r"not a readable \.npz"):
        ex.load_result(tmp_path / "junk.npz")

    def bad(name: str, **change: object) -> str:
        arrays = {k: v for k, v in raw.items() if change.get(k, 0) is not None}
        arrays.update({k: v for k, v in change.items() if v is not None})
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(ex.ResultFileError) as err:
            ex.load_result(tmp_path / name)
        msg = str(err.value)
        assert "\n" not in msg and name in msg
        return msg

    assert "missing key 'betas'" in bad("a.npz", betas=None)
    assert "'body_pose' has shape (12, 72)" in bad("b.npz", body_pose=np.zeros((12, 72), np.float32))
    assert "'joints' has 11 frames" in bad("c.npz", joints=raw["joints"][:11])
    assert "strictly increasing" in bad("d.npz", frame_index=np.zeros(12, np.int64))
    assert "body model mismatch" in bad("e.npz", faces=raw["faces"] + raw["vertices"].shape[1])
    assert "NaN/inf in 'betas' at frame 3" in bad("f.npz", betas=np.where(np.arange(12)[:, None] == 3, np.nan,
                                                                           raw["betas"]))


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_mesh_sequence_round_trip(tmp_path: Path, result: ex.MeshResult, fmt: str) -> None:
    import trimesh

    verts = result.vertices[:3]
    paths = ex.write_mesh_sequence(tmp_path / "seq", verts, result.faces, fmt, result.frame_index[:3])
    assert [p.name for p in paths] == [f"frame_{i:06d}.{fmt}" for i in result.frame_index[:3]]
    for p, v in zip(paths, verts, strict=True):
        m = trimesh.load(p, process=False)
        np.testing.assert_allclose(m.vertices, v, atol=1e-6)
        np.testing.assert_array_equal(m.faces, result.faces)
    # Rewriting replaces the folder as a whole (atomic swap): no stale frames, no temp folders.
    ex.write_mesh_sequence(tmp_path / "seq", verts[:1], result.faces, fmt)
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == [f"frame_000000.{fmt}"]
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]


@pytest.mark.parametrize("vary_betas", [False, True])
def test_glb_round_trip(tmp_path: Path, body, vary_betas: bool) -> None:
    import trimesh

    r = ex.result_from_prediction(make_prediction(body, n=10, vary_betas=vary_betas, seed=3), body,
                                  frame_index=np.array([0, 1, 2, 3, 7, 8, 9, 10, 11, 12]), fps=30.0)
    info = ex.write_glb(tmp_path / "t.glb", r, body)
    assert info["max_pose_corrective_m"] == 0.0 and info["max_weight_dropped"] < 1e-6  # exact for the default
    times, verts = ex.evaluate_glb(tmp_path / "t.glb")
    np.testing.assert_allclose(times, r.frame_index / 30.0, atol=1e-6)  # gaps kept in the timeline
    np.testing.assert_allclose(verts, r.vertices @ C.T, atol=1e-4)  # frame k = exported vertices k, y up

    gltf, _ = ex.read_glb(tmp_path / "t.glb")
    assert [n["name"] for n in gltf["nodes"][:24]] == list(SMPL24.joint_names)
    assert len(gltf["skins"][0]["joints"]) == 24
    prim = gltf["meshes"][0]["primitives"][0]
    assert {"POSITION", "NORMAL", "JOINTS_0", "WEIGHTS_0", "JOINTS_1", "WEIGHTS_1"} <= set(prim["attributes"])
    assert "min" in gltf["accessors"][prim["attributes"]["POSITION"]]
    assert ("targets" in prim) == vary_betas  # betas as morph targets (shape keys) only when they vary
    paths = {(c["target"]["node"], c["target"]["path"]) for c in gltf["animations"][0]["channels"]}
    assert {(j, "rotation") for j in range(24)} <= paths and (0, "translation") in paths
    # trimesh (an independent reader) loads the bind mesh, standing upright in glTF's y-up frame.
    base = trimesh.load(tmp_path / "t.glb", force="mesh", process=False)
    assert base.vertices.shape == (body.num_vertices, 3) and len(base.faces) == len(r.faces)
    assert base.vertices[:, 1].max() - base.vertices[:, 1].min() > 1.2
    joints_y = [n["translation"][1] for n in gltf["nodes"][:24]]
    assert joints_y[SMPL24.joint_names.index("neck")] > 0  # neck above the pelvis in the bind pose
    json.dumps(gltf)  # plain JSON


def test_bvh_round_trip(tmp_path: Path, body) -> None:
    r = ex.result_from_prediction(make_prediction(body, n=8, seed=5), body,
                                  frame_index=np.array([10, 11, 12, 15, 16, 17, 18, 19]), fps=30.0)
    ex.write_bvh(tmp_path / "t.bvh", r, body)
    names, pos, frame_time = ex.read_bvh(tmp_path / "t.bvh")
    assert frame_time == pytest.approx(1 / 30, abs=1e-6)
    assert len(pos) == 10  # gaps (13, 14) filled by holding the previous pose
    order = [names.index(n) for n in SMPL24.joint_names]
    keep = np.searchsorted(np.arange(10, 20), r.frame_index)
    np.testing.assert_allclose(pos[keep][:, order], r.joints @ C.T, atol=1e-4)
    np.testing.assert_allclose(pos[3], pos[2])  # the held frame


def test_export_all(tmp_path: Path, result: ex.MeshResult, body) -> None:
    written = ex.export_all(tmp_path, result, body, "seq1", ("npz", "glb", "bvh", "obj"))
    assert all(p.exists() for p in written.values())
    assert len(list((tmp_path / "seq1_obj").glob("*.obj"))) == len(result)
    with pytest.raises(ValueError, match="unknown export format"):
        ex.export_all(tmp_path, result, body, "x", ("fbx",))
