"""Backbone checkpoints: save -> load -> identical outputs; published wrappers; one clear error for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from motion.checkpoint import CheckpointError, atomic_torch_save, load_backbone, save_backbone
from motion.encoders import build_encoder

SMALL_SSRSTF = {"variant": "XS", "depth": 2}
SMALL_DST = {"dim_feat": 32, "dim_rep": 64, "depth": 2, "maxlen": 27}


def _x(t: int = 9) -> torch.Tensor:
    return torch.randn(2, t, 17, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("arch", "cfg"), [("ssrstf", SMALL_SSRSTF), ("dstformer", SMALL_DST)])
def test_save_load_identical_outputs(tmp_path: Path, arch: str, cfg: dict) -> None:
    torch.manual_seed(0)
    model = build_encoder(arch, cfg).eval()
    for p in model.parameters():  # move away from init so a fresh model would differ
        p.data.add_(torch.randn_like(p) * 0.02)
    save_backbone(tmp_path / "enc.pt", model, arch, model.config, metadata={"epoch": 3, "data": "synthetic"})
    loaded, info = load_backbone(tmp_path / "enc.pt")
    assert info.arch == arch and info.metadata["epoch"] == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_representation(_x()), model.get_representation(_x()), rtol=0, atol=0)
        torch.testing.assert_close(loaded(_x()), model(_x()), rtol=0, atol=0)


def test_motionbert_layout_loads_into_dstformer(tmp_path: Path) -> None:
    """MotionBERT saves {'model_pos': DataParallel state dict ('module.' prefix), 'epoch', 'optimizer', ...}."""
    torch.manual_seed(1)
    model = build_encoder("dstformer", SMALL_DST).eval()
    published = {"epoch": 60, "lr": 1e-5, "min_loss": 40.0,
                 "model_pos": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(published, tmp_path / "best_epoch.bin")
    loaded, info = load_backbone(tmp_path / "best_epoch.bin")
    assert info.arch == "dstformer" and info.format == "foreign"
    assert info.config["dim_feat"] == 32 and info.config["depth"] == 2 and info.config["maxlen"] == 27
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_representation(_x()), model.get_representation(_x()))


def test_clear_errors(tmp_path: Path) -> None:
    model = build_encoder("ssrstf", SMALL_SSRSTF)
    good = tmp_path / "enc.pt"
    save_backbone(good, model, "ssrstf", model.config)
    with pytest.raises(CheckpointError, match=r"missing\.pt: checkpoint not found"):
        load_backbone(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: not a readable PyTorch checkpoint"):
        load_backbone(truncated)
    with pytest.raises(CheckpointError, match="holds a 'ssrstf' encoder, but 'dstformer' was asked for"):
        load_backbone(good, arch="dstformer")
    other = tmp_path / "mesh.pt"
    atomic_torch_save({"format": "ssrstf-toolkit/mesh", "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="is a 'ssrstf-toolkit/mesh' checkpoint, not an encoder backbone"):
        load_backbone(other)
    obj = torch.load(good, weights_only=True)
    obj["state_dict"]["joints_embed.weight"] = torch.zeros(5, 3)
    obj["state_dict"]["extra.weight"] = torch.zeros(1)
    del obj["state_dict"]["head.weight"]
    atomic_torch_save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: state dict does not fit the model: 1 shape mismatch.*"
                                              r"joints_embed\.weight \(5, 3\).*missing key\(s\): head\.weight.*"
                                              r"unexpected key\(s\): extra\.weight"):
        load_backbone(tmp_path / "bad.pt")
    torch.save({"model_pos": {"module.foo": torch.zeros(1)}}, tmp_path / "foreign.bin")
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        load_backbone(tmp_path / "foreign.bin")


def test_executable_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    torch.save({"format": "ssrstf-toolkit/backbone", "x": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused or unreadable under weights_only=True "
                                              r"\(WeightsUnpickler error: Unsupported global"):
        load_backbone(tmp_path / "evil.pt")
    assert not marker.exists()
