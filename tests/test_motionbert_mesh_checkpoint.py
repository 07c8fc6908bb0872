"""MotionBERT's released mesh checkpoints (``best_epoch.bin``) load into ``MeshRecovery`` through load_mesh_model.

The files are built synthetically in MotionBERT's layout (mesh_protocol.md §9): ``{'epoch', 'lr', 'optimizer',
'model': DataParallel state dict ('module.backbone.*' DSTformer, 'module.head.*' SMPLRegressor, including the
buffers and parameters of the smplx SMPL module the head embeds as 'module.head.smpl.*'), 'best_jpe'}``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from body_models import BodyModel, load_body_model, load_mean_params
from body_models.joint_sets import convert_keypoints
from mesh.evaluate import main as evaluate
from mesh.network.checkpoint import load_mesh_model
from mesh.network.head import HeadConfig
from mesh.network.model import MeshRecovery
from motion.checkpoint import CheckpointError
from motion.encoders import build_encoder

SMALL_DST = {"dim_feat": 32, "dim_rep": 64, "depth": 2, "maxlen": 27}  # num_heads stays 8, as in MotionBERT
HIDDEN = 32


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return load_body_model()


def _smpl_buffers(num_vertices: int) -> dict[str, torch.Tensor]:
    """What smplx's SMPL (MotionBERT's ``utils_smpl.SMPL``, batch_size 64, no transl) puts in a state dict.

    Only ``v_template``'s vertex count matters to the loader; the other tensors are kept small (it ignores them).
    """
    v = num_vertices
    return {"betas": torch.zeros(64, 10), "global_orient": torch.zeros(64, 3), "body_pose": torch.zeros(64, 69),
            "shapedirs": torch.zeros(v, 3, 10), "faces_tensor": torch.zeros(8, 3, dtype=torch.long),
            "v_template": torch.randn(v, 3), "J_regressor": torch.zeros(24, v), "posedirs": torch.zeros(207, 30),
            "parents": torch.arange(-1, 23), "lbs_weights": torch.zeros(v, 24),
            "vertex_joint_selector.extra_joints_idxs": torch.arange(21), "J_regressor_extra": torch.zeros(9, v),
            "J_regressor_h36m": torch.zeros(17, v)}


def _reference(body: BodyModel) -> MeshRecovery:
    """A MeshRecovery with a small DSTformer and a BatchNorm head, moved away from init (BN statistics included)."""
    torch.manual_seed(0)
    model = MeshRecovery(build_encoder("dstformer", SMALL_DST), body, load_mean_params(),
                         HeadConfig(hidden_dim=HIDDEN, dropout=0.1, norm="batch"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        for bn in (model.head.bn1, model.head.bn2):
            bn.running_mean.copy_(torch.randn(HIDDEN, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(HIDDEN, generator=gen) + 0.5)
            bn.num_batches_tracked.fill_(1234)
        model.head.init_pose.add_(torch.randn(1, 144, generator=gen) * 0.05)
    return model.eval()


def _motionbert_file(path: Path, model: MeshRecovery, num_vertices: int, with_3d_head: bool = True,
                     edit: dict[str, torch.Tensor | None] | None = None) -> Path:
    """Save ``model`` in MotionBERT's layout; ``edit`` adds keys (tensor) or removes them (None), names without
    the ``module.`` prefix."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if not with_3d_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("backbone.head.")}
    sd.update({f"head.smpl.{k}": v for k, v in _smpl_buffers(num_vertices).items()})
    for key, value in (edit or {}).items():
        if value is None:
            del sd[key]
        else:
            sd[key] = value
    obj = {"epoch": 3, "lr": [5e-5, 5e-4], "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0]}]},
           "model": {f"module.{k}": v for k, v in sd.items()}, "best_jpe": 80.0}
    torch.save(obj, path)
    return path


def _x() -> torch.Tensor:
    return torch.randn(2, 16, 17, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("with_3d_head", [True, False])
def test_loads_with_the_same_outputs(body: BodyModel, tmp_path: Path, with_3d_head: bool) -> None:
    ref = _reference(body)
    path = _motionbert_file(tmp_path / "best_epoch.bin", ref, body.num_vertices, with_3d_head)
    model, ckpt = load_mesh_model(path, body)
    assert not model.training
    assert model.head.config == HeadConfig(hidden_dim=HIDDEN, dropout=0.1, norm="batch")
    assert isinstance(model.head.bn1, torch.nn.BatchNorm1d)
    assert ckpt["format"] == "motionbert/mesh" and ckpt["arch"] == "dstformer"
    cfg = ckpt["encoder_config"]
    assert (cfg["dim_feat"], cfg["dim_rep"], cfg["depth"], cfg["maxlen"]) == (32, 64, 2, 27)
    meta = ckpt["metadata"]
    assert meta["source"] == "MotionBERT checkpoint (epoch 3)" and meta["epoch"] == 3 and meta["best_jpe"] == 80.0
    assert meta["num_vertices"] == body.num_vertices and meta["clip_len"] == 16
    assert bool(meta["filled_from_init"]) == (not with_3d_head)
    assert all(k.startswith("backbone.head.") for k in meta["filled_from_init"])
    with torch.no_grad():
        got, want = model(_x()), ref(_x())
    for name in ("rotmats", "betas", "vertices", "joints_h36m", "joints_smpl"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-6)


def test_body_model_of_another_vertex_count_is_refused(body: BodyModel, tmp_path: Path) -> None:
    path = _motionbert_file(tmp_path / "best_epoch.bin", _reference(body), 6890)
    with pytest.raises(CheckpointError, match=r"best_epoch\.bin: MotionBERT checkpoint trained with a 6890-vertex "
                                              r"SMPL model .*has 13718 vertices: pass the SMPL model files"):
        load_mesh_model(path, body)


@pytest.mark.parametrize(("edit", "message"), [
    ({"head.extra.weight": torch.zeros(3)}, r"1 unexpected key\(s\): head\.extra\.weight"),
    ({"backbone.extra_embed": torch.zeros(3)}, r"1 unexpected key\(s\): backbone\.extra_embed"),
    ({"head.fc2.bias": None}, r"1 missing key\(s\): head\.fc2\.bias"),
    ({"head.bn1.running_var": None}, r"1 missing key\(s\): head\.bn1\.running_var"),
    ({"backbone.norm.weight": None}, r"1 missing key\(s\): backbone\.norm\.weight"),
    ({"head.fc1.weight": torch.zeros(HIDDEN, 17 * 32)}, r"shape mismatch\(es\): head\.fc1\.weight"),
])
def test_keys_that_do_not_fit_are_named(body: BodyModel, tmp_path: Path, edit: dict, message: str) -> None:
    path = _motionbert_file(tmp_path / "best_epoch.bin", _reference(body), body.num_vertices, edit=edit)
    with pytest.raises(CheckpointError, match=rf"best_epoch\.bin: MotionBERT mesh checkpoint: .*{message}"):
        load_mesh_model(path, body)


def test_other_files_without_a_format_tag_are_refused(tmp_path: Path) -> None:
    encoder = build_encoder("dstformer", SMALL_DST)
    pretrain = tmp_path / "latest_epoch.bin"
    torch.save({"epoch": 9, "model_pos": {f"module.{k}": v for k, v in encoder.state_dict().items()}}, pretrain)
    with pytest.raises(CheckpointError, match=r"is a MotionBERT encoder backbone .*mesh\.finetune --backbone"):
        load_mesh_model(pretrain)
    other = tmp_path / "other.pt"
    torch.save({"weights": {"w": torch.zeros(2)}, "step": 1}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt: not a mesh-model checkpoint"):
        load_mesh_model(other)


def test_evaluate_cli_runs_on_a_motionbert_file(body: BodyModel, synthetic_data: dict[str, Path],
                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = _motionbert_file(tmp_path / "best_epoch.bin", _reference(body), body.num_vertices)
    raw = pickle.loads(synthetic_data["mesh"].read_bytes())
    test = raw["test"]
    n, frames = len(test["source"]), 20  # the first 20 test frames (one track): a fast run
    raw["test"] = {k: (v[:frames] if hasattr(v, "__len__") and len(v) == n else v) for k, v in test.items()}
    data = tmp_path / "tiny_mesh.pkl"
    data.write_bytes(pickle.dumps(raw))
    out = tmp_path / "eval"
    # The synthetic default's 2D use the fitted keypoint rule; a MotionBERT file (no record: midpoint) refuses them...
    assert evaluate(["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out)]) == 2
    assert "trained on 'midpoint' keypoint conversion" in capsys.readouterr().err
    # ... and runs on the same frames converted by its own rule, from the simulated detections the file keeps.
    det, fmt = raw["test"]["detector_keypoints"], raw["test"]["detector_format"]
    h36m = np.stack([convert_keypoints(det[i, :17 if f == "coco17" else 26], f, "h36m17", "midpoint")
                     for i, f in enumerate(fmt.astype(str))])
    raw["test"]["joint_2d"], raw["test"]["confidence"] = h36m[..., :2], h36m[..., 2:]
    raw["meta"]["keypoint_conversion"] = "midpoint"
    data.write_bytes(pickle.dumps(raw))
    assert evaluate(["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["frames"] > 0 and summary["mpve_mm"] > 0
    assert "MotionBERT checkpoint" in capsys.readouterr().out
