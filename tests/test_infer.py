"""mesh.io.keypoints and mesh.infer: detector-file readers (MMPose, RTMPose-style arrays, Ultralytics, AlphaPose,
COCO results, H36M arrays), people by track id, gap / missing-joint filling with flags, window-boundary smoothness,
the One-Euro filter, bad input and atomic output folders. A tiny random mesh model keeps it fast."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from body_models import load_body_model, load_mean_params
from body_models.joint_sets import convert_keypoints
from mesh import infer as inf
from mesh.inference.predict import predict_track
from mesh.io import keypoints as kio
from mesh.io.export import load_result
from mesh.network.checkpoint import save_mesh_model
from mesh.network.head import HeadConfig
from mesh.network.model import MeshRecovery
from motion.encoders import build_encoder

W, H = 1280, 720


# ---------------------------------------------------------------------------------------------------- helpers


def coco_person(frame: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """(17, 3) COCO-17 keypoints of a standing person, moving slowly with ``frame``; distinct per joint."""
    base = np.array([[0, -160], [8, -168], [-8, -168], [16, -164], [-16, -164], [40, -120], [-40, -120],
                     [50, -60], [-50, -60], [55, 0], [-55, 0], [20, 0], [-20, 0], [22, 80], [-22, 80],
                     [24, 160], [-24, 160]], dtype=np.float64)
    xy = base * scale + [600 + shift + 2.0 * frame, 360 + 5 * np.sin(frame / 10)]
    conf = 0.5 + 0.02 * np.arange(17)
    return np.concatenate([xy, conf[:, None]], axis=1)


def halpe_person(frame: int) -> np.ndarray:
    coco = coco_person(frame)
    extra = np.array([[600 + 2 * frame, 190, 0.9], [600 + 2 * frame, 240, 0.8], [600 + 2 * frame, 362, 0.7],
                      *[[600 + 2 * frame + d, 520, 0.6] for d in (20, -20, 25, -25, 18, -18)]])
    return np.concatenate([coco, extra])


def mmpose_instance(kp: np.ndarray, track: int | None = None) -> dict:
    inst = {"keypoints": kp[:, :2].tolist(), "keypoint_scores": kp[:, 2].tolist(),
            "bbox": [[*kp[:, :2].min(0).tolist(), *kp[:, :2].max(0).tolist()]], "bbox_score": 0.9}
    if track is not None:
        inst["track_id"] = track
    return inst


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny mesh model saved as a checkpoint with clip_len 16. The head's output layers start near zero
    (the mean pose); they are scaled up so that poses visibly depend on the input (about 0.5 mm per frame below)."""
    torch.manual_seed(0)
    model = MeshRecovery(build_encoder("ssrstf", {"variant": "XS", "depth": 1}), load_body_model(),
                         load_mean_params(), HeadConfig(hidden_dim=32))
    with torch.no_grad():
        for name in ("head_pose", "head_shape"):
            layer = getattr(model.head, name, None)
            if layer is not None:
                layer.weight *= 30
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_mesh_model(path, model, "ssrstf", {"run_config": {"data": {"clip_len": 16}}})
    return path


# ------------------------------------------------------------------------------------------------- readers


def test_mmpose_video_layout_and_coco_to_h36m(tmp_path: Path) -> None:
    frames = [{"frame_id": i, "instances": [mmpose_instance(coco_person(i))]} for i in range(5)]
    tracks = kio.read_keypoints(write_json(tmp_path / "kp.json", frames), image_size=(W, H))
    assert list(tracks) == [0]
    t = tracks[0]
    assert t.source_format == "coco" and t.image_size == (W, H)
    np.testing.assert_array_equal(t.frames, np.arange(5))
    coco = coco_person(2)
    kp = t.keypoints[2]
    np.testing.assert_allclose(kp[0, :2], (coco[11, :2] + coco[12, :2]) / 2, atol=1e-3)  # pelvis = mid-hip
    np.testing.assert_allclose(kp[8, :2], (coco[5, :2] + coco[6, :2]) / 2, atol=1e-3)  # thorax = mid-shoulder
    np.testing.assert_allclose(kp[10, :2], (coco[1, :2] + coco[2, :2]) / 2, atol=1e-3)  # head = mid-eyes
    np.testing.assert_allclose(kp[1, :2], coco[12, :2], atol=1e-3)  # H36M 1 = right hip = COCO 12
    np.testing.assert_allclose(kp[13, :2], coco[9, :2], atol=1e-3)  # left wrist
    assert kp[0, 2] == pytest.approx(min(coco[11, 2], coco[12, 2]), abs=1e-6)  # derived: the lowest confidence


def test_mmpose_demo_layout_with_track_ids_and_image_size(tmp_path: Path) -> None:
    frames = [{"frame_id": i + 1, "instances": [mmpose_instance(coco_person(i), 3),
                                                mmpose_instance(coco_person(i, shift=300), 7)]} for i in range(6)]
    doc = {"meta_info": {"dataset_name": "coco", "num_keypoints": 17}, "image_size": [W, H], "fps": 25,
           "instance_info": frames}
    tracks = kio.read_keypoints(write_json(tmp_path / "kp.json", doc))
    assert sorted(tracks) == [3, 7]
    assert tracks[3].image_size == (W, H) and tracks[3].fps == 25
    np.testing.assert_array_equal(tracks[7].frames, np.arange(1, 7))
    assert tracks[7].keypoints[0, 0, 0] - tracks[3].keypoints[0, 0, 0] == pytest.approx(300, abs=1e-3)


def test_flat_coco_results_and_jsonl(tmp_path: Path) -> None:
    dets = [{"image_id": f"frame_{i:04d}.jpg", "category_id": 1, "keypoints": coco_person(i).ravel().tolist(),
             "score": 0.9} for i in (0, 1, 4)]
    t = kio.read_keypoints(write_json(tmp_path / "res.json", dets), image_size=(W, H))[0]
    np.testing.assert_array_equal(t.frames, [0, 1, 4])  # numbers taken from the names; the gap stays a gap
    lines = "\n".join(json.dumps({"frame": i, "people": [mmpose_instance(coco_person(i))]}) for i in range(3))
    (tmp_path / "kp.jsonl").write_text(lines)
    assert len(kio.read_keypoints(tmp_path / "kp.jsonl", image_size=(W, H))[0]) == 3


def test_alphapose_halpe26(tmp_path: Path) -> None:
    dets = []
    for i in range(4):
        for idx, dx in ((1, 0.0), (2, 400.0)):
            kp = halpe_person(i)
            kp[:, 0] += dx
            dets.append({"image_id": f"{i}.jpg", "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 2.5,
                         "box": [500.0 + dx, 180.0, 200.0, 360.0], "idx": idx})
    tracks = kio.read_keypoints(write_json(tmp_path / "alphapose-results.json", dets), image_size=(W, H))
    assert sorted(tracks) == [1, 2] and tracks[1].source_format == "halpe"
    kp, halpe = tracks[1].keypoints[3], halpe_person(3)
    np.testing.assert_allclose(kp[0, :2], halpe[19, :2], atol=1e-3)  # pelvis = Halpe hip
    np.testing.assert_allclose(kp[8, :2], halpe[18, :2], atol=1e-3)  # thorax = neck
    np.testing.assert_allclose(kp[10, :2], halpe[17, :2], atol=1e-3)  # head = head
    np.testing.assert_allclose(kp[7, :2], (halpe[18, :2] + halpe[19, :2]) / 2, atol=1e-3)  # spine


def test_alphapose_untracked_nested_idx(tmp_path: Path) -> None:
    """AlphaPose without --pose_track writes ``idx`` as the list of merged detections, flat ([0.0]) or nested after
    pose NMS ([[0.0], [0.0]]), both in one file (as in real output): neither is a track id."""
    idx = ([0.0], [[0.0], [0.0]], [1.0], [[1.0], [3.0]])
    dets = [{"image_id": f"{i}.jpg", "category_id": 1, "keypoints": coco_person(i).ravel().tolist(), "score": 2.0,
             "box": [500.0, 180.0, 200.0, 360.0], "idx": idx[i % 4]} for i in range(6)]
    tracks = kio.read_keypoints(write_json(tmp_path / "alphapose-results.json", dets), image_size=(W, H),
                                largest=True)
    assert len(tracks) == 1 and len(next(iter(tracks.values()))) == 6

@pytest.mark.parametrize(("count", "name"), [(136, "Halpe-136"), (133, "COCO-WholeBody")])
def test_wholebody_keypoints_rejected(tmp_path: Path, count: int, name: str) -> None:
    dets = [{"image_id": "0.jpg", "category_id": 1, "keypoints": [1.0, 2.0, 0.9] * count, "score": 1.0}]
    with pytest.raises(kio.KeypointsError, match=rf"frame 0: {name} \({count} keypoints\)"):
        kio.read_keypoints(write_json(tmp_path / "kp.json", dets), image_size=(W, H))


def test_ultralytics_layouts(tmp_path: Path) -> None:
    def person(i: int, norm: bool, tid: int) -> dict:
        kp = coco_person(i)
        x, y = (kp[:, 0] / W, kp[:, 1] / H) if norm else (kp[:, 0], kp[:, 1])
        return {"name": "person", "class": 0, "confidence": 0.9, "track_id": tid,
                "box": {"x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0},
                "keypoints": {"x": x.tolist(), "y": y.tolist(), "visible": kp[:, 2].tolist()}}

    pix = [[person(i, False, 5)] for i in range(4)]  # [json.loads(r.to_json()) for r in results]
    t = kio.read_keypoints(write_json(tmp_path / "yolo.json", pix), image_size=(W, H))[5]
    np.testing.assert_allclose(t.keypoints[1, 1, :2], coco_person(1)[12, :2], atol=1e-3)
    norm = [{"frame": i, "orig_shape": [H, W], "results": [person(i, True, 5)]} for i in range(4)]
    t2 = kio.read_keypoints(write_json(tmp_path / "yolo_norm.json", norm))[5]  # size from orig_shape (h, w)
    assert t2.image_size == (W, H)
    np.testing.assert_allclose(t2.keypoints[..., :2], t.keypoints[..., :2], atol=1e-3)  # scaled back to pixels
    xyconf = [[{"keypoints": {"xy": coco_person(i)[:, :2].tolist(), "conf": coco_person(i)[:, 2].tolist()}}]
              for i in range(2)]
    assert len(kio.read_keypoints(write_json(tmp_path / "xy.json", xyconf), image_size=(W, H))[0]) == 2


def test_rtmlib_style_arrays(tmp_path: Path) -> None:
    frames = [{"frame_id": i, "keypoints": [coco_person(i)[:, :2].tolist()], "scores": [coco_person(i)[:, 2].tolist()]}
              for i in range(3)]
    t = kio.read_keypoints(write_json(tmp_path / "rtm.json", frames), image_size=(W, H))[0]
    assert t.keypoints.shape == (3, 17, 3)
    assert t.keypoints[0, 9, 2] == pytest.approx(coco_person(0)[0, 2])  # nose confidence


def test_numpy_inputs(tmp_path: Path) -> None:
    kp = np.random.default_rng(0).uniform(0, 500, (10, 17, 2)).astype(np.float32)
    np.save(tmp_path / "kp.npy", kp)
    t = kio.read_keypoints(tmp_path / "kp.npy", image_size=(W, H))[0]
    assert t.source_format == "h36m"
    np.testing.assert_allclose(t.keypoints[..., :2], kp)  # H36M-17 as is
    assert (t.keypoints[..., 2] == 1).all()
    rows = np.concatenate([kp, kp + 50])
    np.savez(tmp_path / "kp.npz", keypoints=rows, frames=np.r_[np.arange(10), np.arange(3, 13)],
             track_id=np.r_[np.zeros(10, int), np.ones(10, int)], image_size=np.array([W, H]))
    tracks = kio.read_keypoints(tmp_path / "kp.npz")
    assert sorted(tracks) == [0, 1] and tracks[1].image_size == (W, H)
    np.testing.assert_array_equal(tracks[1].frames, np.arange(3, 13))


def test_several_people_without_track_ids(tmp_path: Path) -> None:
    frames = [{"frame_id": i, "instances": [mmpose_instance(coco_person(i, scale=0.5)),
                                            mmpose_instance(coco_person(i, shift=300))]} for i in range(3)]
    path = write_json(tmp_path / "kp.json", frames)
    with pytest.raises(kio.KeypointsError, match=r"frame 0: 2 people but the file has no track ids.*--largest"):
        kio.read_keypoints(path, image_size=(W, H))
    t = kio.read_keypoints(path, image_size=(W, H), largest=True)[0]  # the larger person, never a mix
    np.testing.assert_allclose(t.keypoints[:, 1, :2], [coco_person(i, shift=300)[12, :2] for i in range(3)],
                               atol=1e-3)


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(kio.KeypointsError, match="empty file"):
        kio.read_keypoints(tmp_path / "empty.json", image_size=(W, H))
    with pytest.raises(kio.KeypointsError, match=r"no frames \(empty list\)"):
        kio.read_keypoints(write_json(tmp_path / "list.json", []), image_size=(W, H))
    nobody = [{"frame_id": i, "instances": []} for i in range(4)]
    with pytest.raises(kio.KeypointsError, match="no person in any frame"):
        kio.read_keypoints(write_json(tmp_path / "nobody.json", nobody), image_size=(W, H))
    (tmp_path / "broken.json").write_text('{"frame_id": 0, ')
    with pytest.raises(kio.KeypointsError, match="not valid JSON"):
        kio.read_keypoints(tmp_path / "broken.json", image_size=(W, H))
    ok = [{"frame_id": 0, "instances": [mmpose_instance(coco_person(0))]}]
    with pytest.raises(kio.KeypointsError, match="--image-size W H"):
        kio.read_keypoints(write_json(tmp_path / "nosize.json", ok))
    ragged = [{"frame_id": 0, "instances": [{"keypoints": [[1, 2], [3]]}]}]
    with pytest.raises(kio.KeypointsError, match="frame 0: 'keypoints' is not a rectangular array"):
        kio.read_keypoints(write_json(tmp_path / "ragged.json", ragged), image_size=(W, H))


def test_nan_coordinates_become_missing_joints(tmp_path: Path) -> None:
    kp = coco_person(0)
    inst = mmpose_instance(kp)
    inst["keypoints"][11] = [None, None]  # left hip unknown (JSON null)
    inst["keypoints"][0] = [float("nan"), float("nan")]  # nose NaN
    t = kio.read_keypoints(write_json(tmp_path / "nan.json", [{"frame_id": 0, "instances": [inst]}]),
                           image_size=(W, H))[0]
    k = t.keypoints[0]
    for j in (0, 4, 7, 9):  # pelvis (mid-hip), left hip, spine (uses the pelvis), nose
        assert np.isnan(k[j, :2]).all() and k[j, 2] == 0
    assert np.isfinite(k[[1, 2, 3, 8, 10, 11], :2]).all()  # the rest untouched


def test_fill_track_interpolates_and_flags() -> None:
    frames = np.array([10, 11, 14, 15])
    kp = np.stack([np.tile([[float(f), 2.0 * f, 0.9]], (17, 1)) for f in frames]).astype(np.float32)
    kp[1, 5] = [np.nan, np.nan, 0.0]  # a NaN joint
    kp[3, 6, 2] = 0.0  # a zero-confidence joint
    filled = inf.fill_track(kio.Track(frames=frames, keypoints=kp, image_size=(W, H)))
    np.testing.assert_array_equal(filled.frames, np.arange(10, 16))  # the video's frame numbers, gap included
    np.testing.assert_array_equal(filled.interpolated, [False, False, True, True, False, False])
    np.testing.assert_allclose(filled.keypoints[:, 0, 0], np.arange(10, 16))  # linear across the gap
    np.testing.assert_allclose(filled.keypoints[2:4, :, 2], 0.0)  # interpolated: confidence 0
    assert filled.joint_missing[1, 5] and filled.joint_missing[5, 6] and filled.joint_missing[2].all()
    assert filled.joint_missing.sum() == 2 * 17 + 2
    assert filled.keypoints[1, 5, 0] == pytest.approx(11.0) and filled.keypoints[5, 6, 0] == pytest.approx(14.0)
    assert np.isfinite(filled.keypoints).all()


def test_from_synthetic_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 12
    j2d = rng.uniform(300, 900, (n, 17, 2)).astype(np.float32)
    data = {"test": {"joint_2d": j2d, "confidence": np.full((n, 17, 1), 0.8, np.float32),
                     "source": np.array(["seq_a"] * n), "img_hw": np.tile([[1080, 1920]], (n, 1))},
            "meta": {"fps": 30.0, "normalisation_res": (1920, 1920)}}
    pkl = tmp_path / "syn.pkl"
    pkl.write_bytes(pickle.dumps(data))
    out = tmp_path / "kp.json"
    assert kio.main(["--from-synthetic", str(pkl), "--split", "test", "--sequence", "seq_a", "--out", str(out)]) == 0
    t = kio.read_keypoints(out)[0]  # MMPose layout, image size from the file
    assert t.image_size == (1920, 1080) and t.source_format == "coco"
    limbs = [1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16]  # direct joints, nose, head (= mid-eyes)
    np.testing.assert_allclose(t.keypoints[:, limbs, :2], j2d[:, limbs], atol=2e-3)


# ------------------------------------------------------------------------------------------------ One-Euro


def test_one_euro_reduces_jitter_and_follows_a_ramp() -> None:
    rng = np.random.default_rng(0)
    noisy = 1.0 + 0.05 * rng.standard_normal((300, 3))
    smooth = inf.one_euro_filter(noisy, fps=30.0, min_cutoff=1.0, beta=0.7)
    assert smooth.shape == noisy.shape
    assert smooth[30:].std() < noisy[30:].std() / 2.5  # jitter removed
    assert abs(smooth[30:].mean() - 1.0) < 0.01  # no bias
    t = np.arange(300) / 30.0
    ramp = 0.5 * t  # 0.5 units per second, 5 s
    out = inf.one_euro_filter(ramp[:, None], fps=30.0)[:, 0]
    assert np.abs(out - ramp)[15:].max() < 0.05 * (ramp[-1] - ramp[0])  # follows with a small lag
    gaps = np.r_[np.arange(100), np.arange(130, 200)] / 30.0  # uneven times: still finite, still follows
    g = inf.one_euro_filter(0.5 * gaps, gaps)
    assert np.isfinite(g).all() and abs(g[-1] - 0.5 * gaps[-1]) < 0.1
    with pytest.raises(ValueError, match="strictly increasing"):
        inf.one_euro_filter(np.zeros(3), np.array([0.0, 0.0, 1.0]))


# ------------------------------------------------------------------------------------------- model + pipeline


def boundary_jumps(model: MeshRecovery, inputs: np.ndarray, stride: int, blend: str) -> tuple[float, float]:
    pred = predict_track(model, inputs, clip_len=16, stride=stride, flip_test=False, blend=blend)
    j = pred.joints_h36m.numpy()
    jump = np.linalg.norm(np.diff(j, axis=0), axis=-1).mean(axis=-1)  # jump[i]: frame i -> i + 1
    starts = np.arange(stride, len(j) - 16 + 1, stride)  # window starts: jumps into them are boundary jumps
    return float(jump[starts - 1].max()), float(np.median(jump))


def test_window_boundaries_are_smooth(tiny_ckpt: Path) -> None:
    from mesh.network.checkpoint import load_mesh_model

    model, _ = load_mesh_model(tiny_ckpt)
    n = 16 * 8
    t = np.arange(n)[:, None]
    kp = np.stack([convert_keypoints(coco_person(0), "coco17", "h36m17")] * n)
    kp[..., 0] += 60 * np.sin(2 * np.pi * t / 90)  # a smooth sway
    kp[..., 1] += 30 * np.cos(2 * np.pi * t / 70)
    inputs = inf.normalise_keypoints(kp.astype(np.float32), (W, H), "image")
    worst, median = boundary_jumps(model, inputs, stride=8, blend="triangular")
    assert worst <= 2 * median, (worst, median)
    assert median > 1e-4  # the model's output does follow the input (0.1 mm per frame)
    # the check has teeth: MotionBERT-style non-overlapping chunks jump more at their boundaries
    worst_chunks, _ = boundary_jumps(model, inputs, stride=16, blend="uniform")
    assert worst_chunks > 1.3 * worst, (worst_chunks, worst)


def two_people_file(tmp_path: Path) -> Path:
    frames = []
    for i in range(40):
        insts = [mmpose_instance(coco_person(i, shift=300), 7)]
        if not 12 <= i < 16:  # person 3 is not detected in frames 12..15
            kp = coco_person(i)
            inst = mmpose_instance(kp, 3)
            if i == 20:
                inst["keypoints"][9] = [float("nan"), float("nan")]  # left wrist NaN
            insts.append(inst)
        frames.append({"frame_id": 100 + i, "instances": insts})
    return write_json(tmp_path / "two.json", {"meta_info": {"dataset_name": "coco"}, "image_size": [W, H],
                                              "instance_info": frames})


def test_infer_two_people_gap_flags(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    rc = inf.main(["--keypoints", str(two_people_file(tmp_path)), "--checkpoint", str(tiny_ckpt), "--out", str(out),
                   "--no-render", "--no-flip", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["persons"]) == ["3", "7"]
    for rel in summary["files"]:
        assert (out / rel).is_file() and f"wrote {out / rel}" in printed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    r3 = load_result(out / "person_3" / "result.npz")
    np.testing.assert_array_equal(r3.frame_index, np.arange(100, 140))  # video frame numbers, gap included
    raw = np.load(out / "person_3" / "result.npz")
    np.testing.assert_array_equal(np.flatnonzero(raw["interpolated"]), [12, 13, 14, 15])
    assert raw["joint_missing"][20, 13] and raw["joint_missing"].sum() == 4 * 17 + 1  # H36M 13 = left wrist
    assert (r3.keypoints_2d[12:16, :, 2] == 0).all()
    mid = (r3.keypoints_2d[11, :, :2] + r3.keypoints_2d[16, :, :2]) / 2
    np.testing.assert_allclose(r3.keypoints_2d[13:15, :, :2].mean(0), mid, atol=1e-3)  # linear in the gap
    np.testing.assert_allclose(r3.betas, np.broadcast_to(r3.betas[:1], r3.betas.shape))  # shape pooled per track
    assert (out / "person_3" / "mesh.glb").is_file() and (out / "person_7" / "mesh.glb").is_file()
    r7 = load_result(out / "person_7" / "result.npz")
    assert not np.load(out / "person_7" / "result.npz")["interpolated"].any() and len(r7) == 40
    assert not np.allclose(r3.joints_h36m, r7.joints_h36m)  # separate people, separate predictions


def test_infer_track_links_untracked_people(tiny_ckpt: Path, tmp_path: Path) -> None:
    """The same two people without track ids: ``--track`` links them (ids by first appearance), gap included."""
    doc = json.loads(two_people_file(tmp_path).read_text())
    for frame in doc["instance_info"]:
        for inst in frame["instances"]:
            del inst["track_id"]
    path = write_json(tmp_path / "untracked.json", doc)
    out = tmp_path / "out"
    assert inf.main(["--keypoints", str(path), "--checkpoint", str(tiny_ckpt), "--out", str(out), "--no-render",
                     "--no-flip", "--device", "cpu"]) == 2  # several people, no ids: refused
    assert inf.main(["--keypoints", str(path), "--checkpoint", str(tiny_ckpt), "--out", str(out), "--no-render",
                     "--no-flip", "--device", "cpu", "--track"]) == 0
    assert sorted(json.loads((out / "summary.json").read_text())["persons"]) == ["0", "1"]
    first, second = (np.load(out / f"person_{k}" / "result.npz") for k in (0, 1))
    np.testing.assert_allclose(first["keypoints_2d"][:, 1, :2],
                               [coco_person(i, shift=300)[12, :2] for i in range(40)], atol=1e-3)  # R hip
    np.testing.assert_array_equal(np.flatnonzero(second["interpolated"]), [12, 13, 14, 15])  # one person over the gap


def test_infer_smoothing_meshes_and_render(tiny_ckpt: Path, tmp_path: Path) -> None:
    from mesh.vis.renderer import gl_available

    frames = [{"frame_id": i, "instances": [mmpose_instance(coco_person(i))]} for i in range(6)]
    path = write_json(tmp_path / "kp.json", frames)
    render = gl_available()[0]
    args = ["--keypoints", str(path), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o"),
            "--image-size", str(W), str(H), "--smooth", "one-euro", "--meshes", "obj", "--render-size", "64",
            "--no-flip", "--norm", "fixed1920", "--overlay"]
    assert inf.main(args + ([] if render else ["--no-render"])) == 0
    person = tmp_path / "o" / "person_0"
    assert len(list((person / "meshes_obj").glob("frame_*.obj"))) == 6
    assert (person / "render.mp4").is_file() == render
    assert (tmp_path / "o" / "overlay.mp4").is_file() == render  # every person, over a blank canvas of W x H
    if render:
        from mesh.io.video import video_info

        info = video_info(tmp_path / "o" / "overlay.mp4")
        assert (info.width, info.height) == (W, H)
    assert str(np.load(person / "result.npz")["normalisation"]) == "fixed1920"


def test_errors_leave_output_untouched(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (tmp_path / "empty.json").write_text("")
    base = ["--checkpoint", str(tiny_ckpt), "--out", str(out), "--no-render", "--no-flip"]
    assert inf.main(["--keypoints", str(tmp_path / "empty.json"), *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "empty file" in err and err.count("\n") == 1
    wb = [{"image_id": "0.jpg", "keypoints": [1.0, 2.0, 0.5] * 133}]
    assert inf.main(["--keypoints", str(write_json(tmp_path / "wb.json", wb)), "--image-size", "64", "64",
                     *base]) == 2
    assert "133 keypoints" in capsys.readouterr().err

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("mesh.io.export.write_glb", boom)  # fail after the first person's npz was written
    with pytest.raises(OSError, match="disk full"):
        inf.main(["--keypoints", str(two_people_file(tmp_path)), *base])
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the staging folder is gone


def test_timestamped_frame_names_keep_video_order(tmp_path: Path) -> None:
    """UP-Fall-style names end in microseconds, which fall back every second: frames are ranked by appearance, not
    read as frame numbers (which would scramble the order and span hundreds of thousands of frames)."""
    stamps = ["12_04_17.738369", "12_04_17.790509", "12_04_18.012345", "12_04_18.061000", "12_04_18.110000"]
    dets = [{"image_id": f"2018-07-04T{t}.png", "category_id": 1, "keypoints": coco_person(i).ravel().tolist(),
             "score": 2.0, "box": [500.0, 180.0, 200.0, 360.0], "idx": [0.0]} for i, t in enumerate(stamps)]
    track = next(iter(kio.read_keypoints(write_json(tmp_path / "upfall.json", dets), image_size=(W, H)).values()))
    assert len(track) == 5 and list(track.frames) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(track.keypoints[2, 0, :2], (coco_person(2)[11, :2] + coco_person(2)[12, :2]) / 2,
                               atol=1e-3)  # pelvis of the third frame = mid-hip of the third detection
    numbered = [dict(d, image_id=f"frame_{i + 10:06d}.png") for i, d in enumerate(dets)]  # real frame numbers are kept
    assert list(next(iter(kio.read_keypoints(write_json(tmp_path / "n.json", numbered),
                                             image_size=(W, H)).values())).frames) == [10, 11, 12, 13, 14]
