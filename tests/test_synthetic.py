"""Synthetic motion generator: determinism, on-disk schemas, geometric consistency, plausibility, speed, 2.5D."""

from __future__ import annotations

import itertools
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from body_models import H36M17, BodyModel, load_body_model, safe_load_pickle
from body_models.loading import DEFAULT_MODEL
from motion.synthetic import (
    LIFTING_FILE,
    MESH_FILE,
    generate_dataset,
    generate_sequence,
    generate_sequences,
    main,
    split_primitives,
)
from motion.synthetic_poses import (
    CH,
    CHANNEL_LIMITS,
    CHANNELS,
    blend_weights,
    channels_to_rotmats,
    clamp_channels,
    plan_segments,
    plan_trajectory,
    smooth_clamp,
)

BONES = np.array(H36M17.bones)  # (16, 2) parent, child
COUNTS = {"train": 3, "validation": 2, "test": 2, "test_heldout": 2}
SPLITS = tuple(COUNTS)


def _standin_body(folder: Path) -> BodyModel:
    """A human-proportioned stick figure in SMPL form (one vertex per joint), used only when the embedded default
    body model is missing from the checkout, so that these tests still exercise the generator."""
    joints = np.array([
        (0.0, -0.22, 0.03), (0.06, -0.31, 0.02), (-0.06, -0.31, 0.02), (0.0, -0.11, 0.0), (0.10, -0.69, 0.02),
        (-0.10, -0.69, 0.02), (0.0, 0.03, 0.03), (0.09, -1.09, -0.02), (-0.09, -1.09, -0.02), (0.0, 0.08, 0.03),
        (0.12, -1.15, 0.10), (-0.12, -1.15, 0.10), (0.0, 0.29, -0.01), (0.08, 0.20, 0.0), (-0.08, 0.20, 0.0),
        (0.0, 0.36, 0.05), (0.17, 0.23, -0.02), (-0.17, 0.23, -0.02), (0.43, 0.22, -0.04), (-0.43, 0.22, -0.04),
        (0.68, 0.23, -0.04), (-0.68, 0.23, -0.04), (0.76, 0.22, -0.05), (-0.76, 0.22, -0.05)])
    parents = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    shapedirs = np.random.default_rng(0).normal(scale=0.01, size=(24, 3, 10))
    path = folder / "standin.npz"
    np.savez(path, v_template=joints, shapedirs=shapedirs, J_regressor=np.eye(24), weights=np.eye(24),
             kintree_table=np.stack([parents, np.arange(24)]), f=np.array([[0, 1, 2]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no H36M regressor: the SMPL-joint fallback is fine here
        return load_body_model(path)


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory) -> BodyModel:
    if DEFAULT_MODEL.is_file():
        return load_body_model()
    return _standin_body(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="module")
def dataset(body: BodyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    paths = generate_dataset(out, seed=3, body=body, sequences=COUNTS, frames_min=60, frames_max=150)
    return {"mesh": safe_load_pickle(paths["mesh"]), "lifting": safe_load_pickle(paths["lifting"]), "dir": out}


def _tracks(source: np.ndarray) -> list[slice]:
    """Contiguous runs of equal ``source``."""
    change = np.nonzero(source[1:] != source[:-1])[0] + 1
    edges = [0, *change.tolist(), len(source)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def _bone_lengths(joints: np.ndarray) -> np.ndarray:
    return np.linalg.norm(joints[..., BONES[:, 1], :] - joints[..., BONES[:, 0], :], axis=-1)


# ---------------------------------------------------------------------------------------------------------------------


def test_same_seed_same_data_different_seed_different(body: BodyModel, tmp_path: Path) -> None:
    a = generate_sequences(2, 7, body, "train", 60, 80)
    b = generate_sequences(2, 7, body, "train", 60, 80)
    c = generate_sequences(2, 8, body, "train", 60, 80)
    for x, y in zip(a, b, strict=True):
        for key in ("pose", "trans", "betas", "joints_cam", "joints_2d", "confidence", "intrinsics"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key))
    assert not np.allclose(a[0].betas, c[0].betas)
    assert a[0].n_frames != c[0].n_frames or not np.allclose(a[0].pose, c[0].pose)
    # files are byte-identical for the same seed
    small = {"train": 1, "validation": 1, "test": 1, "test_heldout": 1}
    p1 = generate_dataset(tmp_path / "a", 5, body, small, 60, 70)
    p2 = generate_dataset(tmp_path / "b", 5, body, small, 60, 70)
    for kind in ("mesh", "lifting"):
        assert p1[kind].read_bytes() == p2[kind].read_bytes()
    # a sequence does not depend on how many others are drawn (one stream per sequence)
    more = generate_sequences(3, 7, body, "train", 60, 80)
    np.testing.assert_array_equal(more[1].joints_2d, a[1].joints_2d)


def test_mesh_schema(dataset: dict) -> None:
    mesh = dataset["mesh"]
    assert set(mesh) == {*SPLITS, "meta"}
    meta = mesh["meta"]
    assert meta["fps"] == 30.0 and meta["seed"] == 3 and "not 3DPW" in meta["note"]
    expect = {
        "joint_2d": ((17, 2), np.float32), "confidence": ((17, 1), np.float32), "joint_cam": ((17, 3), np.float32),
        "smpl_pose": ((72,), np.float64), "smpl_shape": ((10,), np.float64), "img_hw": ((2,), np.int64),
        "trans": ((3,), np.float64), "cam_intrinsics": ((3, 3), np.float64), "cam_extrinsics": ((3, 4), np.float64),
        "joint_2d_gt": ((17, 2), np.float32), "detector_keypoints": ((26, 3), np.float32), "occluded": ((26,), bool),
    }
    sizes = {(s, l) for s, l in meta["resolutions"]} | {(l, s) for s, l in meta["resolutions"]}
    for name in SPLITS:
        split = mesh[name]
        n = len(split["source"])
        assert n >= 60 * COUNTS[name]
        for key, (shape, dtype) in expect.items():
            assert split[key].shape == (n, *shape), key
            assert split[key].dtype == dtype, key
            assert np.isfinite(split[key]).all(), key
        for key in ("source", "action", "frame_action", "camera_name", "detector_format"):
            assert split[key].shape == (n,) and split[key].dtype.kind == "U", key
        assert len(_tracks(split["source"])) == COUNTS[name]  # frames of a track are contiguous
        assert len(set(split["source"].tolist())) == COUNTS[name]
        assert ((split["confidence"] >= 0) & (split["confidence"] <= 1)).all()
        hw = {tuple(x) for x in split["img_hw"].tolist()}
        assert hw <= sizes
        assert set(split["detector_format"].tolist()) <= {"coco17", "halpe26"}
        assert np.abs(split["smpl_shape"]).max() <= 2.5
        for tr in _tracks(split["source"]):  # one shape per sequence
            assert (split["smpl_shape"][tr] == split["smpl_shape"][tr.start]).all()
        assert set(split["frame_action"].tolist()) <= set(meta["split_primitives"][name])
    held = set(meta["split_primitives"]["test_heldout"]) - {"idle"}
    assert held and not held & set(mesh["train"]["frame_action"].tolist())  # the held-out family stays out
    assert held & set(mesh["test_heldout"]["frame_action"].tolist())


def test_lifting_schema(dataset: dict) -> None:
    lift, mesh = dataset["lifting"], dataset["mesh"]
    assert set(lift) == {"train", "test", "test_heldout", "meta"}
    sizes = lift["meta"]["camera_sizes"]
    for name in ("train", "test", "test_heldout"):
        split = lift[name]
        n = len(split["source"])
        for key, shape in (("joint_2d", (17, 2)), ("confidence", (17, 1)), ("joint3d_image", (17, 3)),
                           ("joints_2.5d_image", (17, 3))):
            assert split[key].shape == (n, *shape) and split[key].dtype == np.float32, key
        assert split["2.5d_factor"].shape == (n,) and (split["2.5d_factor"] > 0).all()
        for key in ("camera_name", "source", "action"):
            assert split[key].shape == (n,) and split[key].dtype.kind == "U", key
        assert set(split["camera_name"].tolist()) <= set(sizes)
        # same sequences and detections as the mesh file's split of the same name
        np.testing.assert_array_equal(split["source"], mesh[name]["source"])
        np.testing.assert_array_equal(split["joint_2d"], mesh[name]["joint_2d"])
        np.testing.assert_array_equal(split["joint3d_image"][..., :2], mesh[name]["joint_2d_gt"])
        for cam, hw in zip(split["camera_name"], mesh[name]["img_hw"], strict=True):
            assert tuple(sizes[cam]) == (hw[1], hw[0])


def test_splits_share_no_source(dataset: dict) -> None:
    mesh = dataset["mesh"]
    sets = [set(mesh[s]["source"].tolist()) for s in ("train", "validation", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    # different streams: no two splits hold the same shape
    betas = [mesh[s]["smpl_shape"][0] for s in ("train", "validation", "test")]
    assert not np.allclose(betas[0], betas[1]) and not np.allclose(betas[0], betas[2])


def test_body_model_and_projection_reproduce_stored_joints(dataset: dict, body: BodyModel) -> None:
    split = dataset["mesh"]["train"]
    with torch.no_grad():
        out = body.forward_axis_angle(torch.from_numpy(split["smpl_pose"]), torch.from_numpy(split["smpl_shape"]),
                                      torch.from_numpy(split["trans"]))
    assert np.abs(out.joints_h36m.numpy() - split["joint_cam"]).max() < 1e-4
    # one skeleton per sequence: the kinematic (SMPL-24) bones are exactly rigid over each track
    parents = body.parents[1:].numpy()
    smpl = out.joints.double().numpy()
    for tr in _tracks(split["source"]):
        lengths = np.linalg.norm(smpl[tr, 1:] - smpl[tr, parents], axis=-1)
        assert np.abs(lengths - lengths[0]).max() < 1e-4
    cam = split["joint_cam"].astype(np.float64)
    uvw = np.einsum("nij,nkj->nki", split["cam_intrinsics"], cam)
    uv = uvw[..., :2] / uvw[..., 2:]
    assert np.abs(uv - split["joint_2d_gt"]).max() < 1e-2  # float32 storage
    err = np.linalg.norm(split["joint_2d"] - uv, axis=-1)
    height = np.ptp(uv[..., 1], axis=1)[:, None]
    ok = split["confidence"][..., 0] > 0.3
    # detections differ from the joint centres by landmark offsets and noise: a few % of the person's height
    assert 0.005 < np.median((err / height)[ok]) < 0.06
    # confidence goes down as the error goes up; missed joints have low confidence and are far off
    assert np.corrcoef(err.ravel(), split["confidence"].ravel())[0, 1] < -0.2
    low = split["confidence"][..., 0] < 0.2
    if low.any():
        assert np.median(err[low]) > 2 * np.median(err[~low])


def test_motion_is_plausible(dataset: dict) -> None:
    split = dataset["mesh"]["train"]
    for tr in _tracks(split["source"]):
        joints = split["joint_cam"][tr].astype(np.float64)
        rel = joints - joints[:, :1]
        # smooth: accelerations are small compared with velocities (white noise gives a ratio of about 2)
        d1 = np.abs(np.diff(rel, axis=0)).mean()
        d2 = np.abs(np.diff(rel, n=2, axis=0)).mean()
        assert d2 / d1 < 0.5
        # upright: head above pelvis (camera y points down)
        assert (joints[:, 10, 1] < joints[:, 0, 1]).mean() > 0.8  # (bending to the floor puts the head low)
        # bone lengths nearly constant; regressed H36M joints move a little with skin deformation (deep squats)
        bones = _bone_lengths(joints)
        real = bones.mean(axis=0) > 0.01  # (a stand-in stick figure may put nose and head together)
        assert (bones.std(axis=0)[real] / bones.mean(axis=0)[real]).max() < 0.12
        assert np.median(bones.std(axis=0)[real] / bones.mean(axis=0)[real]) < 0.03
        # in front of the camera, at a sensible distance
        assert (joints[..., 2] >= 0.8).all() and (joints[:, 0, 2] < 17).all()
    # joint limits: SMPL knees (4, 5) flex one way only (+x), elbows (18, 19) only forward
    pose = split["smpl_pose"].reshape(-1, 24, 3)
    assert (pose[:, [4, 5], 0] >= 0).all() and np.abs(pose[:, [4, 5], 1:]).max() < 1e-6
    assert (pose[:, 18, 1] <= 1e-9).all() and (pose[:, 19, 1] >= -1e-9).all()
    assert pose[:, [4, 5], 0].max() > 0.3  # knees do bend
    # the person is (mostly) in the image
    h, w = split["img_hw"][:, 0:1], split["img_hw"][:, 1:2]
    uv = split["joint_2d_gt"]
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    assert inside.mean() > 0.9  # some sequences are cut by the image border on purpose


def test_lifting_2p5d_relation(dataset: dict) -> None:
    """Normalise, denormalise, scale by 2.5d_factor: root-relative mm joints with the 3D skeleton's bone lengths."""
    lift, mesh = dataset["lifting"]["test"], dataset["mesh"]["test"]
    sizes = dataset["lifting"]["meta"]["camera_sizes"]
    w = np.array([sizes[c][0] for c in lift["camera_name"]], dtype=np.float64)[:, None]
    h = np.array([sizes[c][1] for c in lift["camera_name"]], dtype=np.float64)[:, None]
    img = lift["joint3d_image"].astype(np.float64)
    norm = np.stack([img[..., 0] / w * 2 - 1, img[..., 1] / w * 2 - h / w, img[..., 2] / w * 2], axis=-1)
    back = np.stack([(norm[..., 0] + 1) * w / 2, (norm[..., 1] + h / w) * w / 2, norm[..., 2] * w / 2], axis=-1)
    mm = back * lift["2.5d_factor"][:, None, None]
    np.testing.assert_allclose(mm, lift["joints_2.5d_image"], rtol=1e-4, atol=1e-2)
    mm = mm - mm[:, :1]
    cam_mm = mesh["joint_cam"].astype(np.float64) * 1000
    cam_mm -= cam_mm[:, :1]
    np.testing.assert_allclose(mm[..., 2], cam_mm[..., 2], atol=0.05)  # depth is exact (float32 rounding)
    # x, y: weak perspective about the root, exactly Z_root * (X / Z - X_root / Z_root)
    abs_mm = mesh["joint_cam"].astype(np.float64) * 1000
    root_z = abs_mm[:, :1, 2:]
    weak = root_z * (abs_mm[..., :2] / abs_mm[..., 2:] - abs_mm[:, :1, :2] / root_z)
    np.testing.assert_allclose(mm[..., :2], weak, atol=0.5)
    # so bone lengths match the 3D skeleton's up to the (Z_root / Z) magnification of off-plane joints
    true_len = _bone_lengths(cam_mm)
    real = true_len > 20.0  # (a stand-in stick figure may put nose and head together)
    rel = np.abs(_bone_lengths(mm)[real] / true_len[real] - 1)
    # (cameras 2-15 m away with up to 120 degrees of field of view: near ones magnify off-plane joints more)
    assert np.median(rel) < 0.06 and np.percentile(rel, 90) < 0.15 and rel.max() < 0.6


def test_pose_channels_blend_and_limits() -> None:
    rng = np.random.default_rng(0)
    segs = plan_segments(rng, 300)
    assert segs[0].start == 0 and segs[-1].end == 300
    weights = blend_weights(segs, 300, fade_frames=15)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-12)
    assert (weights >= -1e-12).all()
    for k, seg in enumerate(segs):  # each weight peaks inside its own segment
        assert weights[k, (seg.start + seg.end) // 2] > 0.5
    traj = plan_trajectory(np.random.default_rng(1), 400)
    lo = np.array([CHANNEL_LIMITS[c][0] for c in CHANNELS])
    hi = np.array([CHANNEL_LIMITS[c][1] for c in CHANNELS])
    assert ((traj.channels >= lo) & (traj.channels <= hi)).all()
    rot = traj.rotmats
    np.testing.assert_allclose(rot @ rot.swapaxes(-1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-10)


def test_joint_limits_clamp() -> None:
    x = np.linspace(-5, 5, 2001)
    y = smooth_clamp(x, 0.0, 2.3)
    assert (y >= 0.0).all() and (y <= 2.3).all() and (np.diff(y) >= 0).all()
    inner = (x > 0.5) & (x < 1.8)
    np.testing.assert_array_equal(y[inner], x[inner])  # identity away from the limits
    assert np.abs(np.diff(y, 2)).max() < 1e-3  # no kink: C1 at the margins
    # a knee driven "backwards" still bends only forward in SMPL terms
    ch = np.zeros((5, len(CHANNELS)))
    ch[:, CH["l_knee"]] = ch[:, CH["r_knee"]] = np.linspace(-2, 1, 5)
    ch[:, CH["l_elbow"]] = ch[:, CH["r_elbow"]] = np.linspace(-2, 1, 5)
    pose = channels_to_rotmats(clamp_channels(ch), np.zeros(5))
    knee_x = np.arctan2(pose[:, [4, 5], 2, 1], pose[:, [4, 5], 1, 1])  # rotation about x
    assert (knee_x >= 0).all() and (knee_x[-1] > 0.9).all()
    elbow_y = np.arctan2(pose[:, [18, 19], 0, 2], pose[:, [18, 19], 0, 0])  # rotation about y
    assert (elbow_y[:, 0] <= 0).all() and (elbow_y[:, 1] >= 0).all() and elbow_y[-1, 1] > 0.9


def test_speed(body: BodyModel) -> None:
    start = time.perf_counter()
    seqs = generate_sequences(15, 11, body, "train", 180, 220)
    elapsed = time.perf_counter() - start
    assert sum(s.n_frames for s in seqs) >= 2700
    assert elapsed < 15.0, f"{elapsed:.1f} s for ~3000 frames"


def test_cli_writes_both_files_atomically(tmp_path: Path, body: BodyModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("motion.synthetic.load_body_model", lambda *_a, **_k: body)
    rc = main(["--out", str(tmp_path), "--seed", "1", "--sequences-train", "1", "--sequences-val", "1",
               "--sequences-test", "1", "--sequences-heldout", "1", "--frames-min", "60", "--frames-max", "61"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MESH_FILE, LIFTING_FILE])  # no temp files left
    mesh = safe_load_pickle(tmp_path / MESH_FILE)
    assert mesh["meta"]["seed"] == 1 and len(mesh["test"]["source"]) in (60, 61)


def test_version_4_adds_lying_and_keeps_it_on_the_floor(body: BodyModel) -> None:
    assert "lie" not in split_primitives("train", "3") and "lie" in split_primitives("train", "4")
    assert "lie" not in split_primitives("test_heldout", "4")  # the held-out split stays the held-out family
    with pytest.raises(ValueError, match="unknown generator version"):
        split_primitives("train", "9")
    seq = generate_sequence(np.random.default_rng(2), body, "lying", 240, primitives=("lie",))
    world = np.einsum("tji,tkj->tki", seq.extrinsics[..., :3], seq.joints_cam - seq.extrinsics[:, None, :, 3])
    up = world[:, 8] - world[:, 0]  # pelvis -> thorax
    lying = np.abs(up[:, 1]) / np.linalg.norm(up, axis=1) < np.sin(0.3)
    assert lying.sum() > 30
    # lying on the floor, not under it or above it: every joint above the floor, the pelvis low
    assert world[..., 1].min() > -0.02
    assert np.median(world[lying, 0, 1]) < 0.45


def test_cli_version_4_records_its_version(tmp_path: Path, body: BodyModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("motion.synthetic.load_body_model", lambda *_a, **_k: body)
    assert main(["--out", str(tmp_path), "--sequences-train", "1", "--sequences-val", "0", "--sequences-test", "0",
                 "--sequences-heldout", "0", "--frames-min", "60", "--frames-max", "61", "--version", "4"]) == 0
    meta = safe_load_pickle(tmp_path / MESH_FILE)["meta"]
    assert meta["version"] == "4" and "lie" in meta["split_primitives"]["train"]
