"""Lifting pretraining end to end on the synthetic data: learning, configs, and a 2-process gloo DDP run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_ENCODER

from motion.config import load_config
from motion.encoders import build_encoder, count_parameters
from motion.pretrain import PretrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "motion").glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_validate_and_build(path: Path) -> None:
    cfg = load_config(PretrainConfig, path)
    with torch.device("meta"):
        model = build_encoder(cfg.model.arch, cfg.model.encoder)
    assert count_parameters(model) > 1e6


@pytest.fixture(scope="module")
def pretrained_encoder(synthetic_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block SSR-STF-XS pretrained for PRETRAIN_EPOCHS short epochs on the synthetic lifting data: its run
    folder. (The fine-tuning tests use the shipped encoder, models/ssrstf.pt.)"""
    from motion.pretrain import main as pretrain

    out = tmp_path_factory.mktemp("pretrain")
    assert pretrain(["--config", str(REPO / "configs/motion/xs.yaml"), "--name", "enc", "--out-dir", str(out),
                     f"data.path={synthetic_data['lifting']}", f"model.encoder={SMALL_ENCODER}", "data.clip_len=16",
                     f"loop.epochs={PRETRAIN_EPOCHS}", "optim.lr=0.002", "optim.batch_size=16"]) == 0
    return out / "enc"


PRETRAIN_EPOCHS = 6


def test_small_encoder_learns_lifting_below_the_mean_pose_baseline(pretrained_encoder: Path) -> None:
    """Six short epochs on 2 CPU cores: test P1 must end below always predicting the mean training pose.

    Observed on the detector-faithful data (generator version 2, track-box input): test P1 156.1 mm (P2 95.9 mm)
    against a 194.4 mm mean-pose baseline, best validation P1 166.3 mm (12 epochs gave 144.9 mm).
    """
    metrics = json.loads((pretrained_encoder / "metrics.json").read_text())
    p1, baseline = metrics["test"]["p1_mm"], metrics["baseline_mean_pose_p1_mm"]
    assert p1 < 0.85 * baseline, (p1, baseline)
    assert metrics["test"]["p2_mm"] < p1
    assert metrics["best_validation"]["val_p1_mm"] < 0.92 * baseline
    assert (pretrained_encoder / "best.pt").is_file()
    assert (pretrained_encoder / "log.csv").read_text().count("\n") == 1 + PRETRAIN_EPOCHS  # header + one per epoch


def test_gloo_ddp_two_processes(synthetic_data: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "motion.pretrain", "--name", "ddp", "--out-dir", str(tmp_path),
           f"data.path={synthetic_data['lifting']}",
           "model.encoder={variant: XS, depth: 1}", "data.clip_len=9", "loop.epochs=1", "loop.max_steps_per_epoch=3",
           "loop.micro_batches=2", "device=cpu"]  # micro-batches: DDP all-reduces after the last piece only
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["test"]["frames"] > 0


def test_micro_batches_give_the_same_lifting_training(synthetic_data: dict[str, Path], tmp_path: Path) -> None:
    """Batches of 8 clips in 3 pieces (3, 3, 2), each backpropagated before the next, train as whole batches do."""
    from motion.pretrain import main as pretrain

    def run(name: str, *extra: str) -> dict[str, float]:
        assert pretrain(["--name", name, "--out-dir", str(tmp_path), f"data.path={synthetic_data['lifting']}",
                         "model.encoder={variant: XS, depth: 1}", "data.clip_len=9", "loop.epochs=1",
                         "loop.max_steps_per_epoch=5", "optim.batch_size=8", "device=cpu", *extra]) == 0
        header, values = (tmp_path / name / "log.csv").read_text().splitlines()[:2]
        return dict(zip(header.split(","), map(float, values.split(",")), strict=True))

    whole, pieces = run("whole"), run("pieces", "loop.micro_batches=3")
    assert pieces["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-4)
    assert pieces["val_p1_mm"] == pytest.approx(whole["val_p1_mm"], rel=1e-4)


def test_pretraining_continues_from_the_encoder_of_a_mesh_model(synthetic_data: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped mesh model's encoder, exported as a backbone file, starts a lifting run (``model.init``): with
    no training step the run's best.pt holds exactly those weights; an encoder of another size, or another 2D
    normalisation than the file's, is refused in one line; a resumed run does not read the init file again."""
    from mesh.network.checkpoint import main as checkpoint_cli
    from motion.checkpoint import read_checkpoint
    from motion.pretrain import main as pretrain

    exported = tmp_path / "encoder.pt"
    assert checkpoint_cli(["--encoder-of", "ssrstf_mesh.pt", "--out", str(exported)]) == 0
    mesh = read_checkpoint(REPO / "models" / "ssrstf_mesh.pt")
    encoder = read_checkpoint(exported)
    assert encoder["metadata"]["normalisation"] == mesh["metadata"]["normalisation"]
    assert len(encoder["state_dict"]) == sum(k.startswith("backbone.") for k in mesh["state_dict"])
    for key, value in encoder["state_dict"].items():
        assert torch.equal(value, mesh["state_dict"][f"backbone.{key}"].float()), key

    common = ["--out-dir", str(tmp_path), f"data.path={synthetic_data['lifting']}", f"model.init={exported}",
              "loop.epochs=1", "loop.max_steps_per_epoch=0", "device=cpu"]
    assert pretrain(["--name", "cont", "model.encoder={variant: XS, dim_rep: 256}", *common]) == 0
    best = read_checkpoint(tmp_path / "cont" / "best.pt")["state_dict"]
    assert all(torch.equal(best[k], v) for k, v in encoder["state_dict"].items())
    assert json.loads((tmp_path / "cont" / "metrics.json").read_text())["test"]["p2_mm"] > 0
    capsys.readouterr()

    for name, wrong in (("size", "model.encoder={variant: XS, depth: 2}"), ("norm", "data.norm=image")):
        args = ["model.encoder={variant: XS, dim_rep: 256}", *common, wrong]
        assert pretrain(["--name", name, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: model.init:") and "\n" not in err, err
        assert ("config" if name == "size" else "normalisation") in err, err

    # Resuming takes the weights from last.pt: the init file is not read again (here it is gone).
    exported.unlink()
    resumed = [arg.replace("loop.epochs=1", "loop.epochs=2") for arg in common]
    assert pretrain(["--name", "cont", "--resume", "model.encoder={variant: XS, dim_rep: 256}", *resumed]) == 0
    best = read_checkpoint(tmp_path / "cont" / "best.pt")["state_dict"]
    assert all(torch.equal(best[k], v) for k, v in encoder["state_dict"].items())
