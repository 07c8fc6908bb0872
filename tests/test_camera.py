"""Camera-space placement: intrinsics and per-frame translation from 2D keypoints (mesh.inference.camera)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from mesh.inference.camera import intrinsics_for, place_in_camera, project
from motion.checkpoint import SHIPPED_MESH_MODEL as REPO_MODEL


def _walk(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Root-relative joints of a rigid 17-joint figure and a path walking towards the camera from 8 m to 3 m."""
    rng = np.random.default_rng(seed)
    figure = rng.normal(0, 0.25, (17, 3)) * np.array([1.0, 2.5, 0.6])
    joints = np.repeat(figure[None], n, axis=0)
    t = np.linspace(0, 1, n)
    transl = np.stack([0.5 * np.sin(3 * t), 0.2 + 0.0 * t, 8 - 5 * t], axis=1)
    return joints, transl


def test_intrinsics_from_focal_fov_or_the_default_guess() -> None:
    k = intrinsics_for(1920, 1080, fov_deg=90)
    assert k.focal == pytest.approx(960) and (k.cx, k.cy) == (960, 540) and not k.assumed
    assert k.hfov_deg == pytest.approx(90)
    guess = intrinsics_for(1920, 1080)
    assert guess.assumed and guess.focal == pytest.approx(math.hypot(1920, 1080))
    assert intrinsics_for(640, 480, focal=500).focal == 500
    with pytest.raises(ValueError, match="not both"):
        intrinsics_for(640, 480, focal=500, fov_deg=60)


def test_exact_keypoints_give_the_exact_translation() -> None:
    joints, transl = _walk()
    K = intrinsics_for(1280, 720, fov_deg=60).matrix
    kp = project(joints + transl[:, None], K)
    placed = place_in_camera(joints, kp, np.ones(kp.shape[:2]), K, smoothness=0.0)
    assert np.abs(placed.transl - transl).max() < 1e-6
    assert np.nanmax(placed.residual_px) < 1e-6 and placed.solved.all()


def test_noise_and_missing_joints_smoothing_helps_depth() -> None:
    """2 px noise, 30 % of joints missing and 5 frames with no detection at all: the smoothed solution is within
    2 % of the distance everywhere and better than independent frames."""
    joints, transl = _walk()
    K = intrinsics_for(1280, 720, fov_deg=60).matrix
    rng = np.random.default_rng(1)
    kp = project(joints + transl[:, None], K) + rng.normal(0, 2.0, (len(joints), 17, 2))
    conf = (rng.random(kp.shape[:2]) > 0.3).astype(float)
    conf[40:45] = 0.0  # the person is not detected in these frames
    independent = place_in_camera(joints, kp, conf, K, smoothness=0.0)
    smoothed = place_in_camera(joints, kp, conf, K)
    assert not smoothed.solved[40:45].any() and smoothed.solved.sum() == len(joints) - 5
    err_smooth = np.linalg.norm(smoothed.transl - transl, axis=1)
    err_indep = np.linalg.norm(independent.transl - transl, axis=1)[independent.solved]
    assert (err_smooth / transl[:, 2]).max() < 0.02, (err_smooth / transl[:, 2]).max()
    assert err_smooth[smoothed.solved].mean() < 0.7 * err_indep.mean(), (err_smooth.mean(), err_indep.mean())
    assert np.nanmedian(smoothed.residual_px) < 3.0


def test_synthetic_tracks_with_their_true_cameras(synthetic_data: dict[str, Path]) -> None:
    """The generator's cameras are known: ground-truth 3D joints (root-relative) placed from the simulated
    detector's 2D (surface landmarks converted to H36M-17, with detector noise, swaps and occlusion). Observed on
    60 test tracks: median translation error per track 1.8 % of the distance (worst track 4.1 %), median
    reprojection residual 3.5 % of the person's 2D height (worst track 8.0 %; 3-17 px from 480p to 4K)."""
    data = pickle.loads(synthetic_data["mesh"].read_bytes())["test"]
    rel_errors, residuals = [], []
    for name in dict.fromkeys(data["source"].tolist()):
        m = data["source"] == name
        joints = data["joint_cam"][m].astype(np.float64)
        root = joints[:, 0]
        placed = place_in_camera(joints - root[:, None], data["joint_2d"][m], data["confidence"][m][..., 0],
                                 data["cam_intrinsics"][m][0])
        rel_errors.append(np.median(np.linalg.norm(placed.transl - root, axis=1) / root[:, 2]))
        height = np.ptp(data["joint_2d"][m][..., 1], axis=1)
        residuals.append(np.nanmedian(placed.residual_px / height))
    assert max(rel_errors) < 0.06, rel_errors
    assert np.median(rel_errors) < 0.03, rel_errors
    assert max(residuals) < 0.12 and np.median(residuals) < 0.05, residuals  # fractions of the 2D height


def test_no_confident_frame_is_one_clear_error() -> None:
    joints, transl = _walk(10)
    K = intrinsics_for(640, 480).matrix
    kp = project(joints + transl[:, None], K)
    with pytest.raises(ValueError, match="no frame has 4 joints"):
        place_in_camera(joints, kp, np.zeros(kp.shape[:2]), K)


def test_mesh_infer_places_the_shipped_model_in_the_true_camera(synthetic_data: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """Synthetic test tracks exported as detector JSON and run through mesh.infer with the generator's focal length:
    the predicted pelvis lands, in the median track, within 6 % of the distance of the true one (every track within
    15 %: the distance follows the predicted body size, which 2D alone leaves ambiguous), and the predicted joints
    reproject onto the keypoints within 6 % of the person's 2D height. Observed with models/ssrstf_mesh.pt on the
    first 16 test tracks of generator version 3: median 3.5 %, mean 5.0 %, worst 13.4 % (3 of 16 above 10 %)."""
    from mesh.infer import InferOptions, run_inference
    from mesh.io.keypoints import synthetic_to_json

    data = pickle.loads(synthetic_data["mesh"].read_bytes())["test"]
    distance = []
    for name in list(dict.fromkeys(data["source"].tolist()))[:5]:
        m = data["source"] == name
        K = data["cam_intrinsics"][m][0]
        h, w = (float(v) for v in data["img_hw"][m][0])
        kp = synthetic_to_json(synthetic_data["mesh"], tmp_path / f"{name}.json", "test", name)
        summary = run_inference(kp, REPO_MODEL, tmp_path / name, InferOptions(
            render=False, device="cpu", focal=float(K[0, 0]), image_size=(w, h)), log=lambda *_: None)
        assert summary["camera"]["focal"] == pytest.approx(K[0, 0], abs=1e-3)
        result = np.load(tmp_path / name / "person_0" / "result.npz")
        root = data["joint_cam"][m][:, 0]
        rel = np.linalg.norm(result["joints_h36m"][:, 0] - root, axis=1) / root[:, 2]
        reproj = np.nanmedian(result["reprojection_px"])
        print(f"observed {name}: distance {np.median(rel):.3f}, reprojection {reproj:.1f} px")
        distance.append(np.median(rel))
        height = np.median(np.ptp(data["joint_2d"][m][..., 1], axis=1))
        assert np.nanmedian(result["reprojection_px"]) < 0.06 * height, (name, np.nanmedian(result["reprojection_px"]))
        # transl is the root motion: parameters + transl reproduce the stored (camera-frame) joints
        assert np.allclose(result["transl"][:, 2], result["joints_h36m"][:, 0, 2], atol=0.1)
        # (the principal point is the image centre: the generator's is off it by up to 2 px)
        assert result["intrinsics"][0, 0] == pytest.approx(K[0, 0], rel=1e-6) and not result["image_size_assumed"]
    assert np.median(distance) < 0.06 and max(distance) < 0.15, distance


def test_video_gives_size_and_rate_and_a_mismatch_is_one_clear_error(synthetic_data: dict[str, Path],
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    import imageio_ffmpeg

    from mesh.infer import main as infer
    from mesh.io.keypoints import synthetic_to_json
    from mesh.io.video import video_frames, video_info

    data = pickle.loads(synthetic_data["mesh"].read_bytes())["test"]
    name = data["source"][0]
    h, w = (int(v) for v in data["img_hw"][data["source"] == name][0])
    kp = synthetic_to_json(synthetic_data["mesh"], tmp_path / "kp.json", "test", name)

    def write_video(path: Path, width: int, height: int, fps: float) -> Path:
        writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=1)
        writer.send(None)
        for i in range(4):
            writer.send(np.full((height, width, 3), 40 * i, np.uint8))
        writer.close()
        return path

    video = write_video(tmp_path / "clip.mp4", w, h, 25.0)
    info = video_info(video)
    assert (info.width, info.height, info.fps) == (w, h, 25.0)
    frames = list(video_frames(video))
    assert len(frames) == 4 and frames[2].shape == (h, w, 3) and abs(int(frames[2].mean()) - 80) <= 2
    assert infer(["--keypoints", str(kp), "--video", str(video), "--out", str(tmp_path / "out"), "--no-render",
                  "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["image_size"] == [w, h] and summary["fps"] == 25.0
    assert summary["camera"]["focal_assumed"] and summary["camera"]["focal"] == pytest.approx(math.hypot(w, h))
    capsys.readouterr()
    small = write_video(tmp_path / "small.mp4", 64, 48, 30.0)
    assert infer(["--keypoints", str(kp), "--video", str(small), "--out", str(tmp_path / "bad"), "--no-render"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {kp}:") and "outside the 64 x 48 image" in err and len(err.splitlines()) == 1
    (tmp_path / "broken.mp4").write_text("not a video")
    assert infer(["--keypoints", str(kp), "--video", str(tmp_path / "broken.mp4"), "--out", str(tmp_path / "x")]) == 2
    assert "broken.mp4: not a readable video" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "x").exists()


def _silhouettes(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, width: int, height: int,
                 scale: float) -> np.ndarray:
    from mesh.vis.compose import camera_view
    from mesh.vis.renderer import Layer, MeshRenderer, Panel

    cam = camera_view(K, width, height, scale)
    masks = []
    with MeshRenderer(faces, cam.width, cam.height, bg_color=(0, 0, 0)) as renderer:
        for v in vertices:
            renderer.set_meshes([v])
            masks.append(renderer.render_panels([Panel(cam, [Layer(0)])], alpha=True)[..., 3] > 127)
    return np.stack(masks)


@pytest.fixture(scope="module")
def placed_track(synthetic_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first synthetic test track (86 frames, 1280 x 720) through mesh.infer with the shipped model and the
    generator's focal length (vertices saved), plus a video of its size whose frame i is grey level 2 i."""
    import imageio_ffmpeg

    from mesh.infer import InferOptions, run_inference
    from mesh.io.keypoints import synthetic_to_json

    tmp = tmp_path_factory.mktemp("placed")
    data = pickle.loads(synthetic_data["mesh"].read_bytes())["test"]
    name = data["source"][0]
    m = data["source"] == name
    h, w = (int(v) for v in data["img_hw"][m][0])
    kp = synthetic_to_json(synthetic_data["mesh"], tmp / "kp.json", "test", name)
    run_inference(kp, REPO_MODEL, tmp / "out", InferOptions(render=False, device="cpu",
                                                            focal=float(data["cam_intrinsics"][m][0][0, 0]),
                                                            save_vertices=True), log=lambda *_: None)
    writer = imageio_ffmpeg.write_frames(str(tmp / "clip.mp4"), (w, h), fps=30.0, macro_block_size=1)
    writer.send(None)
    for i in range(int(m.sum())):
        writer.send(np.full((h, w, 3), 2 * i, np.uint8))
    writer.close()
    return {"result": tmp / "out" / "person_0" / "result.npz", "video": tmp / "clip.mp4", "keypoints": kp}


def test_overlay_is_pixel_aligned_with_the_true_camera(synthetic_data: dict[str, Path], placed_track: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """The ground-truth mesh of a synthetic track drawn through the overlay's camera covers exactly its projected
    vertices (bounding boxes within 1.5 px at a quarter of 720 x 1280); the shipped model's mesh, placed by
    mesh.infer with the true focal length, overlaps it (silhouette IoU on every 10th frame: observed median 0.79,
    lowest 0.77)."""
    import torch

    from body_models import load_body_model
    from body_models.rotations import pose_to_rotmats
    from mesh.io.export import load_result
    from mesh.network.model import pose_body
    from mesh.vis.compose import overlay_frames
    from mesh.vis.renderer import gl_available

    ok, why = gl_available()
    if not ok:
        pytest.skip(why)
    data = pickle.loads(synthetic_data["mesh"].read_bytes())["test"]
    name = data["source"][0]
    m = data["source"] == name
    K = data["cam_intrinsics"][m][0]
    h, w = (int(v) for v in data["img_hw"][m][0])
    body = load_body_model()
    with torch.no_grad():
        gt = pose_body(body, pose_to_rotmats(torch.from_numpy(data["smpl_pose"][m]).float()[None]),
                       torch.from_numpy(data["smpl_shape"][m]).float()[None])
    verts = (gt.vertices[0] - gt.joints_h36m[0][:, :1]).numpy() + data["joint_cam"][m][:, None, 0]
    frames = np.arange(0, m.sum(), 10)
    scale = 0.25
    masks_gt = _silhouettes(verts[frames], body.faces.numpy(), K, w, h, scale)
    proj = project(verts[frames], K) * scale
    for mask, p in zip(masks_gt, proj, strict=True):
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - p[:, 0].min()) < 1.5 and abs(xs.max() + 1 - p[:, 0].max()) < 1.5
        assert abs(ys.min() - p[:, 1].min()) < 1.5 and abs(ys.max() + 1 - p[:, 1].max()) < 1.5
    pred = load_result(placed_track["result"])
    masks_pred = _silhouettes(pred.vertices[frames], body.faces.numpy(), K, w, h, scale)
    iou = (masks_gt & masks_pred).sum((1, 2)) / (masks_gt | masks_pred).sum((1, 2))
    print(f"observed: silhouette IoU median {np.median(iou):.3f}, lowest {iou.min():.3f}")
    assert np.median(iou) > 0.6 and iou.min() > 0.5, iou
    # The overlay video frames: the mesh blended over a plain canvas exactly where the silhouette is.
    drawn = list(overlay_frames([pred], K, w, h, None, scale=scale))
    assert pred.frame_index[0] == 0 and len(drawn) == m.sum() and drawn[0].shape == (*masks_pred[0].shape, 3)
    changed = (drawn[frames[1]] != 235).any(-1)
    assert (changed == masks_pred[1]).mean() > 0.99


def test_render_draws_infer_results_over_the_video(placed_track: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """``mesh.render --result ... --video`` redraws a mesh.infer result over the video's own frames in the camera it
    was placed in: the background pixels are the video's, the mesh covers exactly its silhouette; two persons get two
    colours; a side view and the 2D keypoints can be added; a video of another size, a result without a camera and
    results of two cameras are one-line errors."""
    from dataclasses import replace

    from body_models import load_body_model
    from mesh.io.export import load_result, load_result_camera, save_result
    from mesh.io.video import video_frames
    from mesh.render import main
    from mesh.vis.compose import PERSON_COLORS, overlay_frames
    from mesh.vis.renderer import gl_available

    ok, why = gl_available()
    if not ok:
        pytest.skip(why)
    res, video = placed_track["result"], placed_track["video"]
    cam = load_result_camera(res)
    assert (cam.width, cam.height, cam.size_assumed) == (1280, 720, False)
    pred = load_result(res)
    out = tmp_path / "overlay.mp4"
    assert main(["--result", str(res), "--video", str(video), "--out", str(out), "--max-side", "320"]) == 0
    drawn = list(video_frames(out))
    assert len(drawn) == len(pred) and drawn[0].shape == (180, 320, 3)
    numbers = [10, 60]
    masks = _silhouettes(pred.vertices[numbers], pred.faces, cam.matrix, 1280, 720, 0.25)
    for number, mask in zip(numbers, masks, strict=True):
        background = np.abs(drawn[number].astype(int) - 2 * number).max(-1) <= 6  # the video's pixel (codec error)
        assert 0.005 < mask.mean() < 0.5
        assert (background == ~mask).mean() > 0.97, (background == ~mask).mean()
    # Two persons (the second one 0.6 m to the right): both drawn, each in its own colour.
    other = replace(pred, vertices=pred.vertices + np.array([0.6, 0, 0], np.float32))
    frame = next(iter(overlay_frames([pred, other], cam.matrix, 1280, 720, None, scale=0.25)))
    one = next(iter(overlay_frames([pred], cam.matrix, 1280, 720, None, scale=0.25)))
    tint = [np.asarray(c[:3]) * 255 for c in PERSON_COLORS[:2]]
    person = [np.linalg.norm(frame.astype(float) - (0.25 * 235 + 0.75 * t), axis=-1) < 60 for t in tint]
    assert person[0].sum() > 200 and person[1].sum() > 200 and not (person[0] & person[1]).any()
    assert (frame != one).any(-1).sum() > 200
    # A side view beside the overlay (the same mesh, on the canvas), and the 2D input drawn over the frame.
    both = next(iter(overlay_frames([pred], cam.matrix, 1280, 720, None, scale=0.25, keypoints=True,
                                    views=("side",))))
    assert both.shape == (180, 640, 3)
    assert 200 < (both[:, 320:] != 235).any(-1).sum() < 0.5 * 320 * 180
    x, y = np.round(pred.keypoints_2d[0, 0, :2] * 0.25).astype(int)  # the pelvis keypoint: a dark joint dot
    assert both[y, x].max() < 60 and one[y, x].max() > 100, (both[y, x], one[y, x])
    # Errors: one line each, no output file.
    capsys.readouterr()
    small = tmp_path / "small.mp4"
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(small), (64, 48), fps=30.0, macro_block_size=1)
    writer.send(None)
    writer.send(np.zeros((48, 64, 3), np.uint8))
    writer.close()
    plain = save_result(tmp_path / "plain.npz", pred)  # save_result writes no camera
    moved = tmp_path / "moved.npz"
    with np.load(res) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["intrinsics"] = arrays["intrinsics"] * np.array([[2, 1, 1], [1, 2, 1], [1, 1, 1]], np.float32)
    np.savez(moved, **arrays)
    for args, text in (([str(res), "--video", str(small)], "64 x 48 pixels, but"),
                       ([str(plain), "--canvas"], "has no camera"),
                       ([str(res), str(moved), "--canvas"], "placed in another camera")):
        assert main(["--result", *args, "--out", str(tmp_path / "bad.mp4")]) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad.mp4").exists()
    assert load_body_model().faces.shape[0] == len(pred.faces)
