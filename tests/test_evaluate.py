"""mesh.evaluate: report files under both protocols, flip-test consistency, and clear errors for bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_smpl import fake_smpl_arrays, write_npz
from torch import nn

from body_models import load_body_model, load_mean_params
from body_models.rotations import axis_angle_to_rotmat
from mesh.checkpoint import save_mesh_model
from mesh.evaluate import main as evaluate
from mesh.head import HeadConfig
from mesh.inference import predict_clips
from mesh.model import MeshOutput, MeshRecovery, pose_body
from motion.checkpoint import save_backbone
from motion.encoders import build_encoder


@pytest.fixture(scope="module")
def mesh_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = MeshRecovery(build_encoder("ssrstf", {"variant": "XS", "depth": 1}), load_body_model(),
                         load_mean_params(), HeadConfig(hidden_dim=32))
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_mesh_model(path, model, "ssrstf", {"run_config": {"data": {"clip_len": 16}}})
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
    summary = report["summary"]
    assert summary["frames"] > 500 and 0 < summary["pa_mpjpe_mm"] < summary["mpjpe_mm"]
    assert summary["accel_m_per_s2"] == pytest.approx(summary["accel_mm_per_frame2"] * 0.9)
    rows = (out / "per_sequence.csv").read_text().splitlines()
    assert rows[0].startswith("sequence,mpve_mm") and len(rows) == 1 + 6  # one row per test sequence
    assert np.load(out / "per_frame.npz")["mpve"].shape == (summary["frames"],)
    assert (out / "errors.png").stat().st_size > 10_000


class _FixedPose(nn.Module):
    """Predicts the same pose for every frame, whatever the input (to check the flip-test plumbing)."""

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
