"""Lifting pretraining end to end on the synthetic data: learning, configs, and a 2-process gloo DDP run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motion.config import load_config
from motion.encoders import build_encoder, count_parameters
from motion.pretrain import PretrainConfig, main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "motion").glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_validate_and_build(path: Path) -> None:
    cfg = load_config(PretrainConfig, path)
    with torch.device("meta"):
        model = build_encoder(cfg.model.arch, cfg.model.encoder)
    assert count_parameters(model) > 1e6


def test_xs_learns_lifting_below_the_mean_pose_baseline(synthetic_data: dict[str, Path], tmp_path: Path) -> None:
    """SSR-STF-XS, a couple of minutes on 2 CPU cores: P1 must end well below predicting the mean training pose."""
    code = main(["--config", str(REPO / "configs/motion/xs.yaml"), "--name", "xs", "--out-dir", str(tmp_path),
                 f"data.path={synthetic_data['lifting']}", "loop.epochs=3", "loop.max_steps_per_epoch=30",
                 "optim.lr=0.001", "optim.batch_size=8"])
    assert code == 0
    metrics = json.loads((tmp_path / "xs" / "metrics.json").read_text())
    p1, baseline = metrics["test"]["p1_mm"], metrics["baseline_mean_pose_p1_mm"]
    assert p1 < 0.85 * baseline, (p1, baseline)
    assert metrics["test"]["p2_mm"] < p1
    assert (tmp_path / "xs" / "best.pt").is_file() and (tmp_path / "xs" / "log.csv").read_text().count("\n") == 4


def test_gloo_ddp_two_processes(synthetic_data: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "motion.pretrain", "--name", "ddp", "--out-dir", str(tmp_path),
           f"data.path={synthetic_data['lifting']}",
           "model.encoder={variant: XS, depth: 1}", "data.clip_len=9", "loop.epochs=1", "loop.max_steps_per_epoch=3",
           "device=cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2" in proc.stdout
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["test"]["frames"] > 0
