"""Configs, clip cutting, normalisation and pose metrics, against hand-computed answers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset

from motion.config import ConfigError, load_config
from motion.data.clips import ClipBatches, batch_lists, clip_indices, track_bounds
from motion.data.transforms import (
    denormalize_2d,
    denormalize_image_3d,
    flip_h36m,
    normalize_2d,
    normalize_image_3d,
)
from motion.metrics import mpjpe, n_mpjpe, pa_mpjpe, similarity_align, velocity_error


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    name: str | None = None


@dataclass
class Outer:
    seed: int = 0
    flip: bool = True
    layers: list[int] = field(default_factory=lambda: [1, 2])
    optim: Inner = field(default_factory=Inner)


def test_config_yaml_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("seed: 3\noptim:\n  lr: 0.01\n")
    cfg = load_config(Outer, path, ["optim.steps=5", "layers=[4, 5]", "optim.name=adamw", "optim.lr=1"])
    assert cfg == Outer(seed=3, layers=[4, 5], optim=Inner(lr=1.0, steps=5, name="adamw"))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) in 'optim': lrr"):
        load_config(Outer, path, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown config key"):
        path.write_text("sead: 1\n")
        load_config(Outer, path)
    with pytest.raises(ConfigError, match=r"optim\.steps: expected int, got 'many'"):
        load_config(Outer, None, ["optim.steps=many"])
    with pytest.raises(ConfigError, match="flip: expected true/false"):
        load_config(Outer, None, ["flip=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Outer, None, ["seed"])


def test_clip_indices_cover_every_frame_without_crossing_tracks() -> None:
    source = np.array(["a"] * 20 + ["b"] * 5 + ["c"] * 16)
    assert track_bounds(source) == [(0, 20), (20, 25), (25, 41)]
    clips = clip_indices(source, clip_len=8, stride=8)
    # a: 0-7, 8-15, and a tail window 12-19; b: 5 frames stretched to 8; c: 25-32, 33-40
    assert clips[:3, 0].tolist() == [0, 8, 12] and clips[2, -1] == 19
    assert clips[3].tolist() == [20, 20, 21, 22, 22, 23, 24, 24]
    assert clips[4:, 0].tolist() == [25, 33] and clips[-1, -1] == 40
    assert set(clips.ravel().tolist()) == set(range(41))
    for clip in clips:
        assert len(set(source[clip])) == 1
    assert clip_indices(source, 8, 3).shape[1] == 8


class _Frames:
    """A clip dataset of per-frame arrays: the ``gather`` / ``__getitem__`` pair the trainers' datasets have."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.x, self.y = rng.normal(size=(n, 17, 3)).astype(np.float32), rng.normal(size=(n, 4))
        self.clips = clip_indices(np.repeat(np.arange(n // 10), 10), 6, 2)

    def __len__(self) -> int:
        return len(self.clips)

    def gather(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        idx = self.clips[clips]
        return {"x": self.x[idx], "y": self.y[idx]}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v[0]) for k, v in self.gather(np.array([i])).items()}


def test_clip_batches_equal_item_by_item_batches_across_datasets() -> None:
    sets = [_Frames(200, 0), _Frames(100, 1)]
    whole = ConcatDataset(sets)
    order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(0)).tolist()
    lists = batch_lists(order, 7, start_step=2)
    assert len(lists) == len(order) // 7 - 2 and lists[0] == order[14:21]
    assert len(batch_lists(order, 7, drop_last=False)) == -(-len(order) // 7)
    batches = ClipBatches(sets, lists)
    for k in (0, 3, len(lists) - 1):
        items = [whole[i] for i in lists[k]]
        for key in ("x", "y"):
            torch.testing.assert_close(batches[k][key], torch.stack([it[key] for it in items]), rtol=0, atol=0)
    assert batches[0]["x"].shape == (7, 6, 17, 3)


def test_normalisation_round_trip_and_hand_values() -> None:
    xy = np.array([[960.0, 960.0], [0.0, 0.0], [1920.0, 1080.0]])
    uv = normalize_2d(xy, 1920, 1920)
    np.testing.assert_allclose(uv, [[0, 0], [-1, -1], [1, 1080 / 960 - 1]])
    np.testing.assert_allclose(normalize_2d(xy, 1000, 1002)[0], [960 / 500 - 1, 960 / 500 - 1.002])
    np.testing.assert_allclose(denormalize_2d(uv, 1920, 1920), xy)
    xyz = np.array([[500.0, 200.0, -50.0]])
    np.testing.assert_allclose(normalize_image_3d(xyz, 1000, 1002)[0, 2], -0.1)
    np.testing.assert_allclose(denormalize_image_3d(normalize_image_3d(xyz, 1000, 1002), 1000, 1002), xyz)


def test_flip_swaps_sides_and_is_an_involution() -> None:
    x = torch.randn(2, 4, 17, 3)
    f = flip_h36m(x)
    torch.testing.assert_close(f[..., 1, 0], -x[..., 4, 0])  # right hip <- mirrored left hip
    torch.testing.assert_close(f[..., 14, 1:], x[..., 11, 1:])
    torch.testing.assert_close(flip_h36m(f), x)


def _rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_metrics_hand_computed() -> None:
    gt = torch.randn(5, 17, 3, dtype=torch.float64)
    offset = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(mpjpe(gt + offset, gt), torch.full((5,), 5.0, dtype=torch.float64))
    # a known similarity transform is undone exactly by Procrustes alignment
    moved = 2.5 * gt @ _rot_z(0.7).T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(similarity_align(moved, gt), gt)
    assert pa_mpjpe(moved, gt).abs().max() < 1e-10
    # a reflection is not a rotation: PA-MPJPE of a mirrored (asymmetric) pose stays > 0
    assert (pa_mpjpe(gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64), gt) > 1e-3).all()
    # scale-normalised MPJPE removes a pure scale only
    assert n_mpjpe(0.5 * gt, gt).abs().max() < 1e-12
    # constant velocity: zero velocity error for any constant offset
    seq = torch.arange(6, dtype=torch.float64)[:, None, None] * torch.ones(6, 17, 3, dtype=torch.float64)
    torch.testing.assert_close(velocity_error(seq + 1.0, seq), torch.zeros(5, dtype=torch.float64))
