"""The shipped open models (models/), their release format, and the training driver's sizing arithmetic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from motion_following import motion_r2

from body_models.joint_sets import keypoint_conversion_of
from mesh.network.checkpoint import load_mesh_model
from motion.checkpoint import (
    SHIPPED_ENCODER,
    SHIPPED_MESH_MODEL,
    CheckpointError,
    export_release,
    load_backbone,
    read_checkpoint,
    resolve_model_path,
    save_backbone,
)
from motion.encoders import build_encoder

REPO = Path(__file__).resolve().parents[1]


def _driver():
    spec = importlib.util.spec_from_file_location("train_open_models", REPO / "scripts" / "train_open_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("path", "generator", "conversion"),
                         [(SHIPPED_ENCODER, "4", "fitted"), (SHIPPED_MESH_MODEL, "4", "fitted")])
def test_shipped_files_are_small_safe_and_say_how_they_were_made(path: Path, generator: str, conversion: str) -> None:
    assert path.stat().st_size < 10_000_000, path.stat().st_size
    obj = torch.load(path, map_location="cpu", weights_only=True)  # raises if anything in it could run code
    assert "train_state" not in obj
    assert any(v.dtype == torch.float16 for v in obj["state_dict"].values())
    release = obj["metadata"]["release"]
    # generator version of its last stage's data; the seed of the recipe (a stage may draw fresh sequences: its own
    # record in release['stages'] names them)
    assert release["generator_version"] == generator and release["seed"] == 0
    for key in ("command", "encoder_command", "mesh_command", "machine", "seconds", "metrics", "licence"):
        assert release[key], key
    assert obj["metadata"]["normalisation"]["kind"] == "track_box"
    assert keypoint_conversion_of(obj["metadata"]) == conversion  # what mesh.infer converts a user's file with


def test_bare_names_resolve_to_the_shipped_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("ssrstf.pt") == SHIPPED_ENCODER
    assert resolve_model_path("ssrstf_mesh.pt") == SHIPPED_MESH_MODEL
    (tmp_path / "ssrstf.pt").write_bytes(b"")  # a file of that name here wins
    assert resolve_model_path("ssrstf.pt") == Path("ssrstf.pt")
    assert resolve_model_path("elsewhere/ssrstf.pt") == Path("elsewhere/ssrstf.pt")  # paths are never redirected
    encoder, info = load_backbone(SHIPPED_ENCODER)
    assert info.arch == "ssrstf" and all(p.dtype == torch.float32 for p in encoder.parameters())


def test_release_copy_reproduces_the_outputs_and_drops_the_optimiser(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_encoder("ssrstf", {"variant": "XS", "depth": 1, "dim_rep": 64})
    save_backbone(tmp_path / "best.pt", model, "ssrstf", model.config, {"epoch": 3},
                  train_state={"optimizer": {"step": torch.tensor(1.0)}})
    export_release(tmp_path / "best.pt", tmp_path / "release.pt", {"command": "x", "time": torch.__version__})
    assert (tmp_path / "release.pt").stat().st_size < 0.6 * (tmp_path / "best.pt").stat().st_size
    obj = read_checkpoint(tmp_path / "release.pt")
    assert "train_state" not in obj and obj["metadata"]["epoch"] == 3
    assert type(obj["metadata"]["release"]["time"]) is str  # a plain str: weights_only-safe
    released, _ = load_backbone(tmp_path / "release.pt")
    x = torch.randn(2, 9, 17, 3)
    with torch.no_grad():
        ref, out = model.eval()(x), released(x)
    assert (out - ref).abs().max() < 2e-2 * ref.abs().max(), float((out - ref).abs().max())
    with pytest.raises(CheckpointError, match="no format tag"):
        torch.save({"weight": torch.zeros(3)}, tmp_path / "foreign.pt")
        export_release(tmp_path / "foreign.pt", tmp_path / "x.pt", {})


def test_shipped_mesh_model_follows_the_motion_of_unseen_tracks(synthetic_data: dict[str, Path],
                                                                tmp_path: Path) -> None:
    """The shipped mesh model on test tracks it never saw, exported as detector JSON and read back by mesh.infer
    (the default checkpoint): its per-frame joints explain most of the ground-truth motion, and its MPVE on the test
    split is far below the untrained mean pose's (about 230 mm on this data). Observed: R^2 0.861, MPVE 89.4 mm,
    PA-MPJPE 37.8 mm with the stage-3 model; 0.858, 90.8 mm, 36.6 mm after stage 4 (generator version 3 data); 0.881,
    75.0 mm, 33.9 mm after stage 5 (box_ray orientation frame); 0.894, 72.3 mm, 34.2 mm after stage 6 (generator
    version 4: lying on the floor added); 0.899, 63.9 mm, 31.8 mm after stage 8 (fitted keypoint conversion; this
    fixture's data is made with that rule)."""
    from mesh.data.mesh_data import read_mesh_split
    from mesh.evaluation.protocol import evaluate_mesh, get_protocol
    from motion.data.transforms import normalisation_of

    mesh_file = synthetic_data["mesh"]
    r2 = motion_r2(None, mesh_file, tmp_path)  # mesh.infer's default model: models/ssrstf_mesh.pt
    assert r2 > 0.7, r2

    model, ckpt = load_mesh_model(SHIPPED_MESH_MODEL)
    split = read_mesh_split(mesh_file, "test", norm=normalisation_of(ckpt["metadata"]))
    ev = evaluate_mesh(model, split, get_protocol("motionbert", clip_len=16), {"neutral": model.body}, 32, None)
    summary = ev.summary()
    print(f"observed: R^2 {r2:.3f}, MPVE {summary['mpve_mm']:.1f}, PA-MPJPE {summary['pa_mpjpe_mm']:.1f}")
    assert summary["mpve_mm"] < 125 and summary["pa_mpjpe_mm"] < 55, summary


def test_schedule_fits_the_budget_and_refuses_a_budget_too_small() -> None:
    driver = _driver()
    # 0.5 s per step, 2 s warm-up and 10 s validation per epoch, 20 s start-up; 10 minutes.
    epochs, steps = driver.fit_schedule(10, 12, (0.5, 2.0, 10.0), 20.0)
    assert epochs == 8  # validation capped at 15 % of the 580 s: 8 x 10 s
    total = 20 + epochs * (steps * 0.5 + 2 + 10)
    assert 590 <= total <= 600, total
    assert driver.fit_schedule(10, 4, (0.5, 2.0, 10.0), 20.0)[0] == 4  # never more than the profile's epochs
    with pytest.raises(SystemExit, match="give more minutes"):
        driver.fit_schedule(0.5, 12, (5.0, 2.0, 10.0), 20.0)


def test_probe_rates_use_the_steady_state(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("epoch,seconds,train_seconds,steps,step_seconds\n1,30.0,20.0,30,0.5\n")
    per_step, warmup, validation = _driver().probe_rates(log)
    assert (per_step, warmup, validation) == (0.5, 5.0, 10.0)


def test_a_work_folder_is_not_resumed_with_other_data(tmp_path: Path) -> None:
    """The training driver refuses to continue a run whose data were made by another generator version or keypoint
    rule (the data stage would be skipped and the new options silently ignored)."""
    import json

    driver = _driver()
    (tmp_path / "plan.json").write_text(json.dumps({"profile": "smoke", "arch": "ssrstf", "seed": 0,
                                                    "generator_version": "3", "keypoint_conversion": "fitted"}))
    with pytest.raises(SystemExit, match="another profile/arch/seed/data"):
        driver.main(["--profile", "smoke", "--out", str(tmp_path), "--version", "4"])
    with pytest.raises(SystemExit, match="another profile/arch/seed/data"):
        driver.main(["--profile", "smoke", "--out", str(tmp_path), "--version", "3", "--conversion", "midpoint"])
