"""prepare_3dpw: the official 3DPW release (faked, same layout, keys, shapes and Python 2 pickling) -> mesh schema.

The key check is geometric: the camera-frame mesh rebuilt from the converted (smpl_pose, smpl_shape, trans) equals
the world-frame mesh of the release's parameters moved by ``cam_poses``.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from fake_smpl import fake_smpl_arrays, write_npz

from body_models import load_body_model, safe_load_pickle
from body_models.rotations import axis_angle_to_rotmat
from mesh.data import prepare_3dpw as p3
from mesh.data.mesh_data import read_mesh_split

NV = 500  # vertices of the small SMPL-shaped model (speed)
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- Python-2-style pickling


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us choose the opcode per type
    """Protocol 2 with Python 2's string opcodes: ``str`` and ``bytes`` become (SHORT_)BINSTRING, as a Python 2
    ``str`` was (dict keys, names, and the raw data of numpy arrays). Reading needs ``encoding='latin1'``."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_binstring(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_binstring
    dispatch[bytes] = _save_binstring


def dump_py2(obj: object, path: Path) -> None:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x module path, as in the release (numpy 2 writes numpy._core)
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


# ------------------------------------------------------------------------------------- the fake release


@dataclass
class ActorSpec:
    campose_invalid: tuple[int, ...] = ()
    empty_2d: tuple[int, ...] = ()
    gender: str = "m"
    num_betas: int = 10


@dataclass
class SeqSpec:
    name: str
    frames: int
    actors: tuple[ActorSpec, ...]
    portrait: bool = True
    image: tuple[int, int] | None = None  # (h, w) of a JPEG to write in imageFiles/<name>/


SPECS: dict[str, tuple[SeqSpec, ...]] = {
    "train": (
        SeqSpec("courtyard_fake_00", 30, (ActorSpec(campose_invalid=(10, 11, 12), empty_2d=(20,)),), image=(40, 24)),
        SeqSpec("downtown_fake_01", 25, (
            ActorSpec(gender="f", num_betas=300),  # the first 10 of 300 betas must be used
            ActorSpec(campose_invalid=(5,), empty_2d=(0, 5, 24)),  # edges drop without a split; 5 is 'both'
        ), portrait=False),
    ),
    "validation": (
        SeqSpec("office_fake_00", 20, (ActorSpec(),)),
        SeqSpec("outdoors_fake_02", 22, (ActorSpec(empty_2d=(3, 4, 7), gender="f"),)),
    ),
    "test": (
        SeqSpec("flat_fake_00", 40, (ActorSpec(), ActorSpec(gender="f", campose_invalid=tuple(range(15, 40))))),
        SeqSpec("street_fake_03", 21, (ActorSpec(empty_2d=(2,)),), portrait=False),
    ),
}


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    return axis_angle_to_rotmat(torch.as_tensor(rng.normal(size=(n, 3)))).numpy()


def make_sequence(spec: SeqSpec, body: torch.nn.Module, rng: np.random.Generator) -> dict:
    """A sequence dict with the release's keys, shapes and types (lists per actor, world-frame SMPL)."""
    n = spec.frames
    cam = np.zeros((n, 4, 4))
    cam[:, :3, :3] = random_rotations(rng, n)
    cam[:, :3, 3] = rng.normal(scale=2.0, size=(n, 3))
    cam[:, 3, 3] = 1
    cx, cy = (540.0, 960.0) if spec.portrait else (960.0, 540.0)
    seq: dict = {"sequence": spec.name, "genders": [], "betas": [], "betas_clothed": [], "v_template_clothed": [],
                 "poses": [], "trans": [], "poses_60Hz": [], "trans_60Hz": [], "jointPositions": [], "poses2d": [],
                 "campose_valid": [], "cam_poses": cam, "img_frame_ids": np.arange(n),
                 "cam_intrinsics": np.array([[1960.0, 0, cx], [0, 1969.0, cy], [0, 0, 1]]),
                 "texture_obj": []}
    for a in spec.actors:
        poses = rng.normal(scale=0.3, size=(n, 72))
        poses[:, :3] = rng.normal(scale=1.5, size=(n, 3))
        trans = rng.normal(size=(n, 3)) + np.array([0.0, 0.0, 3.0])
        betas = rng.normal(size=a.num_betas)
        with torch.no_grad():
            joints = body.forward_axis_angle(torch.as_tensor(poses), torch.as_tensor(betas[:10])[None],
                                             torch.as_tensor(trans)).joints.numpy()
        p2d = np.concatenate([rng.uniform(0, 1000, size=(n, 2, 18)), rng.uniform(0.05, 1, size=(n, 1, 18))], 1)
        p2d[list(a.empty_2d)] = 0
        valid = np.ones(n, dtype=bool)
        valid[list(a.campose_invalid)] = False
        seq["genders"].append(a.gender)
        seq["betas"].append(betas)
        seq["betas_clothed"].append(betas[:10] + 0.1)
        seq["v_template_clothed"].append(np.zeros((NV, 3)))  # dummy: the real one is (6890, 3)
        seq["poses"].append(poses)
        seq["trans"].append(trans)
        seq["poses_60Hz"].append(np.repeat(poses, 2, axis=0))
        seq["trans_60Hz"].append(np.repeat(trans, 2, axis=0))
        seq["jointPositions"].append(joints.reshape(n, 72))
        seq["poses2d"].append(p2d)
        seq["campose_valid"].append(valid)
    return seq


@dataclass
class Fake:
    root: Path
    smpl: Path
    raw: dict[str, dict[str, dict]]  # split -> sequence name -> the dict written


def build_release(folder: Path, smpl: Path) -> Fake:
    from PIL import Image

    body = load_body_model(smpl).double()
    rng = np.random.default_rng(0)
    raw: dict[str, dict[str, dict]] = {}
    for split, specs in SPECS.items():
        (folder / "sequenceFiles" / split).mkdir(parents=True)
        raw[split] = {}
        for spec in specs:
            seq = make_sequence(spec, body, rng)
            dump_py2(seq, folder / "sequenceFiles" / split / f"{spec.name}.pkl")
            raw[split][spec.name] = seq
            if spec.image:
                (folder / "imageFiles" / spec.name).mkdir(parents=True)
                h, w = spec.image
                Image.new("RGB", (w, h), (90, 120, 30)).save(folder / "imageFiles" / spec.name / "image_00000.jpg")
    return Fake(folder, smpl, raw)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Fake:
    smpl_dir = tmp_path_factory.mktemp("smpl")
    arrays = fake_smpl_arrays(num_vertices=NV, seed=3)
    arrays["J_regressor_h36m"] = np.random.default_rng(4).dirichlet(np.ones(NV), size=17)
    smpl = write_npz(arrays, smpl_dir / "SMPL_NEUTRAL.npz")
    return build_release(tmp_path_factory.mktemp("3dpw"), smpl)


@pytest.fixture(scope="module")
def converted(fake: Fake) -> dict:
    return p3.convert(fake.root, smpl=fake.smpl)


def expected_tracks(spec: SeqSpec) -> list[tuple[str, list[int]]]:
    """(source, frame indices) per output track, written out independently of the converter's run logic."""
    out = []
    for i, a in enumerate(spec.actors):
        bad = set(a.campose_invalid) | set(a.empty_2d)
        segment, current = 0, []
        for f in range(spec.frames):
            if f in bad:
                if current:
                    out.append((f"{spec.name}_{i:03d}" + (f"_s{segment}" if segment else ""), current))
                    segment, current = segment + 1, []
            else:
                current.append(f)
        if current:
            out.append((f"{spec.name}_{i:03d}" + (f"_s{segment}" if segment else ""), current))
    return out


# ------------------------------------------------------------------------------------------------ tests


def test_python2_pickle_is_read(fake: Fake) -> None:
    path = fake.root / "sequenceFiles" / "train" / "courtyard_fake_00.pkl"
    assert b"numpy.core.multiarray" in path.read_bytes() and b"_codecs" not in path.read_bytes()
    seq = p3.read_sequence(path)
    assert seq.name == "courtyard_fake_00" and seq.genders == ["m"]
    np.testing.assert_array_equal(seq.poses[0], fake.raw["train"]["courtyard_fake_00"]["poses"][0])
    assert seq.poses2d[0].shape == (30, 18, 3)


def test_schema_and_dtypes(converted: dict) -> None:
    assert set(converted) == {"train", "validation", "test", "meta"}
    spec = {"joint_2d": ((17, 2), np.float32), "confidence": ((17, 1), np.float32),
            "joint_cam": ((17, 3), np.float32), "smpl_pose": ((72,), np.float64), "smpl_shape": ((10,), np.float64),
            "trans": ((3,), np.float64), "img_hw": ((2,), np.int64), "cam_intrinsics": ((3, 3), np.float64),
            "frame_index": ((), np.int64), "image_id": ((), np.int64)}
    for split in p3.SPLITS:
        data = converted[split]
        n = len(data["source"])
        assert n > 0
        for key, (shape, dtype) in spec.items():
            assert data[key].shape == (n, *shape), key
            assert data[key].dtype == dtype, key
            assert np.isfinite(data[key]).all(), key
        assert data["source"].dtype.kind == "U" and data["gender"].dtype.kind == "U"
        assert set(data["gender"]) <= {"m", "f"}
    meta = converted["meta"]
    assert meta["fps"] == 30 and meta["normalisation_res"] == [1920, 1920]
    assert meta["body_model_gender"] == "neutral" and "SMPL_NEUTRAL.npz" in meta["body_model"]["neutral"]


def test_frames_dropped_exactly_where_invalid_and_tracks_split(converted: dict, fake: Fake) -> None:
    for split, specs in SPECS.items():
        data = converted[split]
        expect = [t for spec in specs for t in expected_tracks(spec)]
        sources = [s for s, frames in expect for _ in frames]
        frames = [f for _, fr in expect for f in fr]
        assert data["source"].tolist() == sources
        assert data["frame_index"].tolist() == frames
        stats = converted["meta"]["stats"][split]
        total = sum(spec.frames * len(spec.actors) for spec in specs)
        assert stats["frames_total"] == total and stats["frames_kept"] == len(frames)
        assert sum(stats["dropped"].values()) == total - len(frames)  # no silent loss
        assert stats["tracks"] == len(expect)
    # Spot checks of the naming rule and the reasons.
    train = converted["train"]
    assert list(dict.fromkeys(train["source"])) == [
        "courtyard_fake_00_000", "courtyard_fake_00_000_s1", "courtyard_fake_00_000_s2",
        "downtown_fake_01_000", "downtown_fake_01_001", "downtown_fake_01_001_s1"]
    assert converted["meta"]["stats"]["train"]["dropped"] == {"campose_invalid": 3, "no_poses2d": 3, "both": 1}
    # Every kept row carries the data of its (sequence, actor, frame).
    seq = fake.raw["train"]["downtown_fake_01"]
    rows = np.nonzero(train["source"] == "downtown_fake_01_001_s1")[0]
    np.testing.assert_allclose(train["smpl_pose"][rows, 3:], seq["poses"][1][train["frame_index"][rows], 3:])


def test_first_ten_betas_used(converted: dict, fake: Fake) -> None:
    betas = fake.raw["train"]["downtown_fake_01"]["betas"][0]
    assert betas.shape == (300,)
    rows = converted["train"]["source"] == "downtown_fake_01_000"
    np.testing.assert_array_equal(converted["train"]["smpl_shape"][rows], np.tile(betas[:10], (rows.sum(), 1)))
    assert set(converted["train"]["gender"][rows]) == {"f"}


def test_camera_frame_mesh_equals_transformed_world_mesh(converted: dict, fake: Fake) -> None:
    body = load_body_model(fake.smpl).double()
    for split, seqs in fake.raw.items():
        data = converted[split]
        for name, seq in seqs.items():
            for actor in range(len(seq["genders"])):
                rows = np.nonzero(np.char.startswith(data["source"], f"{name}_{actor:03d}"))[0]
                f = data["frame_index"][rows]
                betas = torch.as_tensor(seq["betas"][actor][:10])[None]
                with torch.no_grad():
                    world = body.forward_axis_angle(torch.as_tensor(seq["poses"][actor][f]), betas,
                                                    torch.as_tensor(seq["trans"][actor][f]))
                    cam = body.forward_axis_angle(torch.as_tensor(data["smpl_pose"][rows]),
                                                  torch.as_tensor(data["smpl_shape"][rows]),
                                                  torch.as_tensor(data["trans"][rows]))
                ext = torch.as_tensor(seq["cam_poses"][f])
                moved = world.vertices @ ext[:, :3, :3].transpose(1, 2) + ext[:, None, :3, 3]
                assert (cam.vertices - moved).norm(dim=-1).max() < 1e-5, (split, name, actor)
                moved_h36m = world.joints_h36m @ ext[:, :3, :3].transpose(1, 2) + ext[:, None, :3, 3]
                np.testing.assert_allclose(data["joint_cam"][rows], moved_h36m.numpy(), atol=1e-5)


def test_root_joint_is_the_rotation_centre(fake: Fake) -> None:
    # The naive t' = R_c t + t_c is wrong by (R_c - I) J0: make sure the fake model makes that visible.
    seq = fake.raw["train"]["courtyard_fake_00"]
    body = load_body_model(fake.smpl).double()
    j0 = body.rest_shape(torch.as_tensor(seq["betas"][0][:10]))[1][0].numpy()
    assert np.linalg.norm(j0) > 0.01
    _, trans = p3.world_to_camera(seq["poses"][0], seq["trans"][0], seq["cam_poses"], j0)
    naive = np.einsum("nij,nj->ni", seq["cam_poses"][:, :3, :3], seq["trans"][0]) + seq["cam_poses"][:, :3, 3]
    assert np.abs(trans - naive).max() > 1e-3
    # Identity extrinsics change nothing.
    eye = np.tile(np.eye(4), (len(seq["trans"][0]), 1, 1))
    pose, trans = p3.world_to_camera(seq["poses"][0], seq["trans"][0], eye, j0)
    np.testing.assert_allclose(trans, seq["trans"][0], atol=1e-12)
    np.testing.assert_allclose(axis_angle_to_rotmat(torch.as_tensor(pose[:, :3])).numpy(),
                               axis_angle_to_rotmat(torch.as_tensor(seq["poses"][0][:, :3])).numpy(), atol=1e-10)


def test_2d_from_openpose(converted: dict, fake: Fake) -> None:
    data = converted["validation"]
    seq = fake.raw["validation"]["outdoors_fake_02"]
    rows = np.nonzero(np.char.startswith(data["source"], "outdoors_fake_02_000"))[0]
    op = seq["poses2d"][0][data["frame_index"][rows]].transpose(0, 2, 1)  # (n, 18, 3)
    r_hip, l_hip, neck = 8, 11, 1  # OpenPose-18
    np.testing.assert_allclose(data["joint_2d"][rows, 0], (op[:, r_hip, :2] + op[:, l_hip, :2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(data["confidence"][rows, 0, 0], np.minimum(op[:, r_hip, 2], op[:, l_hip, 2]),
                               rtol=1e-6)
    np.testing.assert_allclose(data["joint_2d"][rows, 8], op[:, neck, :2], rtol=1e-6)  # thorax = neck
    np.testing.assert_allclose(data["joint_2d"][rows, 1], op[:, r_hip, :2], rtol=1e-6)  # H36M 1 = right hip


def test_image_sizes(converted: dict, fake: Fake) -> None:
    train, meta = converted["train"], converted["meta"]
    from_image = np.char.startswith(train["source"], "courtyard_fake_00")
    assert (train["img_hw"][from_image] == [40, 24]).all()  # the JPEG's size, not the intrinsics'
    assert (train["img_hw"][~from_image] == [1080, 1920]).all()  # landscape principal point (960, 540)
    assert (converted["validation"]["img_hw"] == [1920, 1080]).all()  # portrait
    assert meta["img_hw_source"]["courtyard_fake_00"].startswith("image file")
    assert meta["img_hw_source"]["downtown_fake_01"].startswith("cam_intrinsics")
    jpg = fake.root / "imageFiles" / "courtyard_fake_00" / "image_00000.jpg"
    assert p3.jpeg_size(jpg) == p3.image_size(jpg) == (40, 24)


def test_cli_writes_a_file_the_mesh_loader_reads(fake: Fake, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "mesh_det_pw3d.pkl"
    proc = subprocess.run([sys.executable, "-m", "mesh.data.prepare_3dpw", "--root", str(fake.root), "--out",
                           str(out), "--smpl", str(fake.smpl)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "dropped" in proc.stdout and "wrote" in proc.stdout
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left behind
    data = safe_load_pickle(out)
    assert len(data["test"]["source"]) == sum(len(fr) for s in SPECS["test"] for _, fr in expected_tracks(s))
    split = read_mesh_split(out, "test")  # the project's loader accepts it (1920 x 1920 from meta)
    assert split.inputs.shape == (len(data["test"]["source"]), 17, 3)
    np.testing.assert_allclose(split.inputs[:, :, :2], data["test"]["joint_2d"] / 960.0 - 1, atol=1e-5)


def test_errors(fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.pkl"
    missing = tmp_path / "nope"
    assert p3.main(["--root", str(missing), "--out", str(out), "--smpl", str(fake.smpl)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such folder" in err and err.count("\n") == 1

    # A sequence file without 'poses2d'.
    bad = tmp_path / "bad"
    (bad / "sequenceFiles" / "test").mkdir(parents=True)
    seq = dict(fake.raw["test"]["street_fake_03"])
    del seq["poses2d"]
    dump_py2(seq, bad / "sequenceFiles" / "test" / "street_fake_03.pkl")
    assert p3.main(["--root", str(bad), "--out", str(out), "--smpl", str(fake.smpl), "--splits", "test"]) == 2
    err = capsys.readouterr().err
    assert "street_fake_03.pkl" in err and "'poses2d'" in err and "missing key" in err
    assert not out.exists()

    # Wrong shape, then NaN in a kept frame (NaN in a dropped frame is fine).
    seq = dict(fake.raw["test"]["street_fake_03"])
    seq["poses"] = [seq["poses"][0][:, :69]]
    dump_py2(seq, bad / "sequenceFiles" / "test" / "street_fake_03.pkl")
    with pytest.raises(p3.Pw3dError, match=r"street_fake_03\.pkl: 'poses'\[actor 0\] has shape \(21, 69\)"):
        p3.convert(bad, fake.smpl, ("test",))
    seq = dict(fake.raw["test"]["street_fake_03"])
    trans = seq["trans"][0].copy()
    trans[2] = np.nan  # frame 2 has empty poses2d: dropped, not an error
    seq["trans"] = [trans]
    dump_py2(seq, bad / "sequenceFiles" / "test" / "street_fake_03.pkl")
    assert len(p3.convert(bad, fake.smpl, ("test",))["test"]["source"]) == 20
    trans[7] = np.nan
    dump_py2(seq, bad / "sequenceFiles" / "test" / "street_fake_03.pkl")
    with pytest.raises(p3.Pw3dError, match=r"NaN/inf in 'trans' \(actor 0\) at frame 7"):
        p3.convert(bad, fake.smpl, ("test",))
    # A missing split folder.
    with pytest.raises(p3.Pw3dError, match=r"sequenceFiles/train: no such folder"):
        p3.convert(bad, fake.smpl, ("train",))
