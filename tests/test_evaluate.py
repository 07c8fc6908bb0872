"""mesh.evaluate: report files under both protocols, flip-test consistency, and clear errors for bad input."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_smpl import fake_smpl_arrays, write_npz
from torch import nn

from body_models import load_body_model, load_mean_params
from body_models.rotations import axis_angle_to_rotmat
from mesh.evaluate import main as evaluate
from mesh.inference.predict import predict_clips
from mesh.network.checkpoint import save_mesh_model
from mesh.network.head import HeadConfig
from mesh.network.model import MeshOutput, MeshRecovery, pose_body
from motion.checkpoint import save_backbone
from motion.encoders import build_encoder


@pytest.fixture(scope="module")
def mesh_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = MeshRecovery(build_encoder("ssrstf", {"variant": "XS", "depth": 1}), load_body_model(),
                         load_mean_params(), HeadConfig(hidden_dim=32))
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    # untrained, recorded as made for the default synthetic data's keypoint rule (the test data's)
    save_mesh_model(path, model, "ssrstf", {"run_config": {"data": {"clip_len": 16}}, "keypoint_conversion": "fitted"})
    return path


@pytest.mark.parametrize("protocol", ["motionbert", "full-sequence"])
def test_reports_under_both_protocols(mesh_checkpoint: Path, synthetic_data: dict[str, Path], tmp_path: Path,
                                      protocol: str) -> None:
    out = tmp_path / protocol
    assert evaluate(["--checkpoint", str(mesh_checkpoint), "--data", str(synthetic_data["mesh"]), "--split", "test",
                     "--protocol", protocol, "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"]["name"] == protocol
    assert report["protocol"]["root"] == ("pelvis" if protocol == "motionbert" else "midhip")
    assert report["protocol"]["regressor"] == ("pose2mesh" if protocol == "motionbert" else "spin")
    # The embedded default has no SPIN regressor: full-sequence falls back to its own, and says so.
    assert any("SPIN" in note for note in report["notes"]) == (protocol == "full-sequence")
    summary = report["summary"]
    assert summary["frames"] > 500 and 0 < summary["pa_mpjpe_mm"] < summary["mpjpe_mm"]
    assert summary["accel_m_per_s2"] == pytest.approx(summary["accel_mm_per_frame2"] * 0.9)
    rows = (out / "per_sequence.csv").read_text().splitlines()
    assert rows[0].startswith("sequence,mpve_mm") and len(rows) == 1 + 6  # one row per test sequence
    assert np.load(out / "per_frame.npz")["mpve"].shape == (summary["frames"],)
    assert (out / "errors.png").stat().st_size > 10_000
    # report.html: metrics, the embedded plot, the sequences worst first, viewers of the 3 worst
    page = (out / "report.html").read_text()
    table = {r.split(",")[0]: float(r.split(",")[1]) for r in rows[1:]}
    worst = sorted(table, key=table.get, reverse=True)
    positions = [page.rindex(f"<tr><td>{seq}</td>") for seq in worst]
    assert positions == sorted(positions) and "data:image/png;base64," in page
    assert f"{summary['mpve_mm']:.1f}" in page
    viewers = sorted(out.glob("viewer_*.html"))
    assert [v.name for v in viewers] == sorted(f"viewer_{seq}.html" for seq in worst[:3])
    assert all(f"src='{v.name}'" in page for v in viewers)
    data = json.loads(viewers[0].read_text().split('id="viewer-data">')[1].split("</script>")[0])
    assert data["gt_glb"] and data["errors_mm"] and len(data["errors_mm"]) == len(data["frames"])


class _FixedPose(nn.Module):
    """Predicts the same pose for every frame, whatever the input (to check the flip-test plumbing)."""

    orientation = "camera"  # the frame of the global orientation (mesh.network.model.ORIENTATIONS)
    keypoint_conversion = "midpoint"  # the rule of the hand-made splits below (it ignores its input anyway)

    def __init__(self, rotmats: torch.Tensor) -> None:
        super().__init__()
        self.body = load_body_model()
        self.rotmats = rotmats
        self.weight = nn.Parameter(torch.zeros(1))

    def predict_smpl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        return self.rotmats.expand(b, t, 24, 3, 3), torch.zeros(b, 10)

    def forward(self, x: torch.Tensor) -> MeshOutput:
        return pose_body(self.body, *self.predict_smpl(x))


def test_flip_test_of_a_symmetric_prediction_changes_nothing() -> None:
    x = torch.randn(2, 16, 17, 3)
    aa = torch.zeros(24, 3)
    aa[0] = torch.tensor([np.pi, 0.0, 0.0])  # upright in the camera frame: mirror-symmetric
    aa[1, 0] = aa[2, 0] = -0.4  # both hips flexed alike
    aa[16, 2], aa[17, 2] = -0.6, 0.6  # both arms lowered alike (opposite z for the mirrored side)
    symmetric = _FixedPose(axis_angle_to_rotmat(aa))
    plain, flipped = predict_clips(symmetric, x, flip_test=False), predict_clips(symmetric, x, flip_test=True)
    assert (plain.vertices - flipped.vertices).abs().max() < 1e-5
    aa[18, 1] = 1.2  # bend one elbow only: no longer symmetric, so flip averaging must change the mesh
    asymmetric = _FixedPose(axis_angle_to_rotmat(aa))
    plain, flipped = predict_clips(asymmetric, x, flip_test=False), predict_clips(asymmetric, x, flip_test=True)
    assert (plain.vertices - flipped.vertices).abs().max() > 0.05


def test_bad_input_gives_one_clear_error(mesh_checkpoint: Path, synthetic_data: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    data = ["--data", str(synthetic_data["mesh"])]
    encoder = build_encoder("ssrstf", {"variant": "XS", "depth": 1})
    save_backbone(tmp_path / "enc.pt", encoder, "ssrstf", encoder.config)
    assert evaluate(["--checkpoint", str(tmp_path / "enc.pt"), *data]) == 2
    assert "is an encoder backbone, not a mesh model" in capsys.readouterr().err
    raw = pickle.loads(synthetic_data["mesh"].read_bytes())
    for key in ("smpl_pose", "smpl_shape"):
        del raw["test"][key]
    (tmp_path / "nogt.pkl").write_bytes(pickle.dumps(raw))
    assert evaluate(["--checkpoint", str(mesh_checkpoint), "--data", str(tmp_path / "nogt.pkl")]) == 2
    assert "nogt.pkl [test]: missing key 'smpl_pose'" in capsys.readouterr().err
    arrays = fake_smpl_arrays(6890, seed=0, posedirs=False)
    arrays["J_regressor_h36m"] = arrays["J_regressor"][:17]
    smpl = tmp_path / "smpl"
    smpl.mkdir()
    write_npz(arrays, smpl / "SMPL_NEUTRAL.npz")
    assert evaluate(["--checkpoint", str(mesh_checkpoint), *data, "--smpl", str(smpl)]) == 2
    assert "trained with a 13718-vertex body model" in capsys.readouterr().err


def _one_vertex_regressor(num_vertices: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A (17, V) regressor whose joint j is exactly vertex ``idx[j]``, and those indices."""
    idx = np.random.default_rng(seed).choice(num_vertices, size=17, replace=False)
    reg = np.zeros((17, num_vertices))
    reg[np.arange(17), idx] = 1.0
    return reg, idx


def test_spin_regressor_joints_are_r_times_vertices() -> None:
    """Under regressor=spin the metrics use R @ V for both meshes; without R a note says joints are not comparable."""
    from body_models.joint_sets import H36M_TO_LSP14
    from body_models.rotations import pose_to_rotmats
    from mesh.data.mesh_data import MeshSplit
    from mesh.evaluation.protocol import evaluate_mesh, get_protocol

    torch.manual_seed(0)
    aa = torch.zeros(24, 3)
    aa[0, 0] = np.pi
    aa[18, 1] = 1.0
    model = _FixedPose(axis_angle_to_rotmat(aa))
    body = model.body
    n = 5
    gt_pose = (0.3 * torch.randn(n, 72)).numpy().astype(np.float32)
    gt_pose[:, 0] = np.pi
    split = MeshSplit(inputs=np.zeros((n, 17, 3), np.float32), pose=gt_pose, shape=np.zeros((n, 10), np.float32),
                      source=np.full(n, "track"), gender=np.full(n, ""), name="tiny")
    reg, idx = _one_vertex_regressor(body.num_vertices)
    protocol = get_protocol("full-sequence", flip=False, gt_gender="neutral")

    ev = evaluate_mesh(model, split, protocol, {"neutral": body}, spin_regressor=torch.from_numpy(reg))
    with torch.no_grad():  # by hand: joints are single vertices, mid-hip root = mean of H36M joints 1 and 4
        pv = pose_body(body, model.rotmats.expand(1, n, 24, 3, 3), torch.zeros(1, 10)).vertices[0].double().numpy()
        gv = pose_body(body, pose_to_rotmats(torch.from_numpy(gt_pose))[None], torch.zeros(1, 10)).vertices[0]
        gv = gv.double().numpy()
    pj, gj = pv[:, idx], gv[:, idx]
    proot, groot = pj[:, [1, 4]].mean(1, keepdims=True), gj[:, [1, 4]].mean(1, keepdims=True)
    lsp = list(H36M_TO_LSP14)
    mpjpe = np.linalg.norm((pj - proot)[:, lsp] - (gj - groot)[:, lsp], axis=-1).mean(-1) * 1000
    mpve = np.linalg.norm((pv - proot) - (gv - groot), axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(ev.per_frame["mpjpe"], mpjpe, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ev.per_frame["mpve"], mpve, rtol=1e-4, atol=1e-3)
    assert ev.notes == [] and ev.report()["joint_regressor"].startswith("SPIN")

    fallback = evaluate_mesh(model, split, protocol, {"neutral": body})  # no SPIN regressor: the body model's own
    own = evaluate_mesh(model, split, replace(protocol, regressor="pose2mesh"), {"neutral": body})
    np.testing.assert_allclose(fallback.per_frame["mpjpe"], own.per_frame["mpjpe"])
    assert not np.allclose(fallback.per_frame["mpjpe"], mpjpe, rtol=1e-3)  # so R really changed the joints
    assert own.notes == []
    assert len(fallback.notes) == 1
    assert "SPIN's J_regressor_h36m was not available" in fallback.notes[0]
    assert "not comparable with WHAM / GVHMR" in fallback.notes[0]


def test_spin_regressor_lookup_next_to_smpl_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from body_models.loading import load_spin_regressor

    monkeypatch.delenv("SMPL_MODEL_DIR", raising=False)
    reg, where = load_spin_regressor(None, 13718)
    assert reg is None and "embedded default" in where
    smpl = tmp_path / "smpl"
    smpl.mkdir()
    write_npz(fake_smpl_arrays(300, seed=0, posedirs=False), smpl / "SMPL_NEUTRAL.npz")
    reg, where = load_spin_regressor(None, 300, smpl)
    assert reg is None and str(smpl) in where
    np.save(smpl / "J_regressor_h36m.npy", _one_vertex_regressor(300)[0])
    monkeypatch.setenv("SMPL_MODEL_DIR", str(smpl))
    reg, where = load_spin_regressor(None, 300)
    assert reg.shape == (17, 300) and where == str(smpl / "J_regressor_h36m.npy")


def _tiny_data(path: Path, frames: int = 20) -> Path:
    """The synthetic mesh data cut to the first ``frames`` test frames (one track): a fast CLI run."""
    raw = pickle.loads(path.read_bytes())
    test = raw["test"]
    n = len(test["source"])
    raw["test"] = {k: (v[:frames] if hasattr(v, "__len__") and len(v) == n else v) for k, v in test.items()}
    out = path.parent / "tiny_mesh.pkl"
    out.write_bytes(pickle.dumps(raw))
    return out


def test_cli_regressor_switch(mesh_checkpoint: Path, synthetic_data: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    data = ["--checkpoint", str(mesh_checkpoint), "--data", str(_tiny_data(synthetic_data["mesh"]))]
    good = tmp_path / "J_regressor_h36m.npy"
    np.save(good, _one_vertex_regressor(13718)[0])
    out = tmp_path / "spin"
    assert evaluate([*data, "--protocol", "full-sequence", "--spin-regressor", str(good), "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"]["regressor"] == "spin" and str(good) in report["joint_regressor"]
    assert not any("SPIN" in note for note in report["notes"])
    assert f"regressor=spin, SPIN J_regressor_h36m ({good})" in capsys.readouterr().out

    out = tmp_path / "fallback"  # the motionbert protocol switched to spin, with no SPIN file for the embedded model
    assert evaluate([*data, "--set", "regressor=spin", "--out", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"]["regressor"] == "spin"
    assert any("not comparable with WHAM / GVHMR" in note for note in report["notes"])
    captured = capsys.readouterr()
    assert "note: SPIN's J_regressor_h36m was not available" in captured.out
    assert "embedded default body model has no SPIN regressor" in captured.err


def test_cli_malformed_spin_regressor_is_one_clear_error(mesh_checkpoint: Path, synthetic_data: dict[str, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = ["--checkpoint", str(mesh_checkpoint), "--data", str(synthetic_data["mesh"]), "--protocol", "full-sequence"]
    bad = tmp_path / "J_regressor_h36m.npy"
    np.save(bad, np.zeros((17, 6890)))
    assert evaluate([*data, "--spin-regressor", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}: H36M regressor has shape (17, 6890), expected (17, 13718) for this body model"
    nan = _one_vertex_regressor(13718)[0]
    nan[3, 5] = np.nan
    np.save(bad, nan)
    assert evaluate([*data, "--spin-regressor", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: ") and "NaN" in err and "\n" not in err
    assert evaluate([*data, "--spin-regressor", str(tmp_path / "missing.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.npy: SPIN regressor not found" in err and "\n" not in err
    assert evaluate([*data, "--set", "regressor=vibe"]) == 2
    assert "regressor must be 'pose2mesh' or 'spin', got 'vibe'" in capsys.readouterr().err
