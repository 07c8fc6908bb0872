"""The ``box_ray`` orientation frame: the global orientation relative to the ray through the person's track box.

A network fed track-box inputs cannot see where the box lies in the image; a person off the image centre looks
turned by the angle of the viewing ray. ``box_ray`` models predict the orientation relative to that ray and
:func:`mesh.inference.predict.to_camera_frame` turns it back with the camera intrinsics.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from body_models import load_body_model
from body_models.rotations import pose_to_rotmats
from mesh.data.mesh_data import MeshDataError, in_box_ray_frame, read_mesh_split
from mesh.evaluation.protocol import evaluate_mesh, get_protocol
from mesh.inference.camera import ray_rotations
from mesh.inference.predict import predict_track, repose, rotate_prediction, to_camera_frame
from mesh.network.checkpoint import load_mesh_model
from motion.checkpoint import SHIPPED_MESH_MODEL
from motion.data.clips import track_bounds


def test_ray_rotation_turns_the_optical_axis_onto_the_ray() -> None:
    K = np.array([[800.0, 0, 640], [0, 800, 360], [0, 0, 1]])
    points = np.array([[640.0, 360], [1440, 360], [640, 1160], [0, 0]])
    R = ray_rotations(points, K)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-12) and np.allclose(np.linalg.det(R), 1)
    assert np.allclose(R[0], np.eye(3))  # the principal point: no turn
    axis = R[:, :, 2]  # the optical axis, turned: it projects onto the point
    assert np.allclose(axis[:, :2] / axis[:, 2:] * 800 + [640, 360], points)
    # 800 px right of the centre at focal 800: 45 degrees about the camera's y axis, and nothing else
    assert math.degrees(math.acos((np.trace(R[1]) - 1) / 2)) == pytest.approx(45)
    assert np.allclose(R[1] @ [0, 1, 0], [0, 1, 0])
    assert np.allclose(ray_rotations(points, np.broadcast_to(K, (4, 3, 3))), R)  # one camera per point


def test_turning_a_prediction_equals_reposing_with_the_turned_root() -> None:
    body = load_body_model()
    g = torch.Generator().manual_seed(0)
    rotmats = pose_to_rotmats(0.3 * torch.randn(5, 72, generator=g))
    betas = torch.randn(5, 10, generator=g)
    turn = torch.from_numpy(ray_rotations(np.array([[100.0, 50], [900, 700], [500, 400], [0, 800], [1000, 0]]),
                                          np.array([[600.0, 0, 500], [0, 600, 400], [0, 0, 1]]))).float()
    turned = rotate_prediction(repose(body, rotmats, betas), turn)
    root = rotmats.clone()
    root[:, 0] = turn @ root[:, 0]
    direct = repose(body, root, betas)
    assert torch.allclose(turned.rotmats, direct.rotmats, atol=1e-6)
    for key in ("vertices", "joints_h36m", "joints_smpl"):
        assert torch.allclose(getattr(turned, key), getattr(direct, key), atol=1e-5), key


def test_ground_truth_in_the_ray_frame_comes_back_exactly(synthetic_data: dict[str, Path]) -> None:
    """The training target (camera orientation -> box_ray) and the inference step (box_ray -> camera) are inverse:
    the ground truth converted and turned back gives the camera-frame joints; the synthetic cameras put people up to
    tens of degrees off the optical axis, so the two frames differ."""
    split = read_mesh_split(synthetic_data["mesh"], "test", norm="track_box")
    ray = in_box_ray_frame(split)
    body = load_body_model()
    sel = split.source == split.source[0]
    camera = repose(body, pose_to_rotmats(torch.from_numpy(split.pose[sel])), torch.from_numpy(split.shape[sel]))
    in_ray = repose(body, pose_to_rotmats(torch.from_numpy(ray.pose[sel])), torch.from_numpy(ray.shape[sel]))
    model = torch.nn.Module()
    model.orientation = "box_ray"
    back = to_camera_frame(model, in_ray, split.box_centre[sel], split.intrinsics[sel])
    assert torch.allclose(back.joints_h36m, camera.joints_h36m, atol=1e-5)
    assert (in_ray.joints_h36m - camera.joints_h36m).norm(dim=-1).mean() > 0.005  # metres: the frames differ
    assert np.array_equal(ray.pose[:, 3:], split.pose[:, 3:])  # only the global orientation changes

    with pytest.raises(MeshDataError, match="cam_intrinsics"):
        in_box_ray_frame(replace(split, intrinsics=None))
    with pytest.raises(MeshDataError, match="track_box"):
        in_box_ray_frame(read_mesh_split(synthetic_data["mesh"], "test", norm="image"))


def test_the_shipped_model_is_box_ray_and_the_ray_matters(synthetic_data: dict[str, Path]) -> None:
    """The shipped mesh model records the box_ray frame; its predictions left unturned, as a camera model's would
    be, are clearly worse on the synthetic test tracks (MPJPE-17, pelvis-centred). Observed on the 6 test tracks
    here: 52.7 mm turned, 62.3 mm unturned (the full splits are in models/README.md). The evaluator applies the turn
    (tests/test_open_models.py scores it) and refuses data without the camera."""
    model, ckpt = load_mesh_model(SHIPPED_MESH_MODEL)
    assert model.orientation == "box_ray" and ckpt["metadata"]["orientation"] == "box_ray"
    split = read_mesh_split(synthetic_data["mesh"], "test", norm="track_box")
    errors: dict[str, list[float]] = {"turned": [], "unturned": []}
    for start, end in track_bounds(split.source):
        pred = predict_track(model, split.inputs[start:end], clip_len=16, stride=16)
        turned = to_camera_frame(model, pred, split.box_centre[start:end], split.intrinsics[start:end])
        gt = repose(model.body, pose_to_rotmats(torch.from_numpy(split.pose[start:end])),
                    torch.from_numpy(split.shape[start:end])).joints_h36m
        for key, p in (("turned", turned), ("unturned", pred)):
            errors[key] += (1000 * (p.joints_h36m - gt).norm(dim=-1).mean(dim=-1)).tolist()
    turned_mm, unturned_mm = np.mean(errors["turned"]), np.mean(errors["unturned"])
    print(f"observed: MPJPE-17 {turned_mm:.1f} mm turned, {unturned_mm:.1f} mm unturned")
    assert turned_mm < 0.9 * unturned_mm, (turned_mm, unturned_mm)

    with pytest.raises(ValueError, match="box_ray"):
        evaluate_mesh(model, replace(split, intrinsics=None), get_protocol("motionbert"), {"neutral": model.body})


def test_render_refuses_data_without_a_camera_in_one_line(synthetic_data: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from body_models import safe_load_pickle
    from mesh.render import main as render_main

    data = safe_load_pickle(synthetic_data["mesh"])
    del data["test"]["cam_intrinsics"]
    path = tmp_path / "no_camera.pkl"
    path.write_bytes(pickle.dumps({"meta": data["meta"], "test": data["test"]}))
    assert render_main(["--data", str(path), "--split", "test", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no cam_intrinsics" in err and "box_ray" in err, err
    assert not (tmp_path / "out").exists()


def test_finetuning_in_the_ray_frame_needs_track_box_inputs_and_a_camera(synthetic_data: dict[str, Path],
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from body_models import safe_load_pickle
    from mesh.finetune import main as finetune_main

    mesh = synthetic_data["mesh"]
    data = safe_load_pickle(mesh)
    del data["train"]["cam_intrinsics"]
    no_camera = tmp_path / "no_camera.pkl"
    no_camera.write_bytes(pickle.dumps(data))
    base = ["--out-dir", str(tmp_path), "model.encoder={variant: XS, depth: 1}", "model.orientation=box_ray",
            "loop.epochs=1", "loop.max_steps_per_epoch=1", "data.test=null"]
    for path, extra, cause in ((mesh, ["data.norm=image"], "track_box"), (no_camera, [], "cam_intrinsics")):
        files = [f"data.train=[{{path: {path}, split: train}}]", f"data.validation={{path: {path}, split: validation}}"]
        assert finetune_main([*base, *files, *extra, "--name", cause]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and cause in err[0] and "box_ray" in err[0], err
