"""Lifting evaluation: P1 (MPJPE) and P2 (Procrustes-aligned MPJPE) in mm, per action, with test-time flip.

Protocol (docs/encoder.md, pretraining, as MotionBERT): predictions are root-relative in the normalised frame; they are
scaled to pixels (``w / 2``) and to mm (``2.5d_factor``) and compared with the root-relative ``joints_2.5d_image``.
Each frame's error is averaged over the clips that contain it, then over the frames of an action, then over actions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from motion.data.clips import ClipBatches, batch_lists
from motion.data.lifting import LiftingClips
from motion.data.transforms import flip_h36m
from motion.metrics import mpjpe, pa_mpjpe


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, flip_test: bool) -> torch.Tensor:
    """3D prediction ``(B, T, 17, 3)`` for inputs ``(B, T, 17, 3)``, averaged with the mirrored input's if flip_test."""
    pred = model(x)
    if flip_test:
        pred = (pred + flip_h36m(model(flip_h36m(x)))) / 2
    return pred


@torch.no_grad()
def evaluate_lifting(model: nn.Module, dataset: LiftingClips, device: torch.device | str, flip_test: bool = True,
                     batch_size: int = 32, autocast_dtype: torch.dtype | None = None,
                     progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """P1/P2 in mm over every frame of ``dataset.split``.

    Returns:
        ``{'p1_mm', 'p2_mm'}`` (mean over actions), ``'per_action': {action: {'p1_mm', 'p2_mm', 'frames'}}``, and
        ``'frames'`` evaluated.
    """
    was_training = model.training
    model.eval()
    split = dataset.split
    n = len(split)
    e1, e2, count = np.zeros(n), np.zeros(n), np.zeros(n)
    loader = DataLoader(ClipBatches([dataset], batch_lists(range(len(dataset)), batch_size, drop_last=False)),
                        batch_size=None)
    device = torch.device(device)
    for batch in loader:
        x = batch["input"].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            pred = predict(model, x, flip_test)
        pred = pred.float().cpu().double()
        idx = batch["index"].numpy()
        scale = torch.from_numpy(split.width[idx] / 2 * split.factor[idx])[..., None, None]  # (B, T, 1, 1)
        pred_mm = (pred - pred[..., :1, :]) * scale
        gt = torch.from_numpy(split.target_mm[idx])
        gt = gt - gt[..., :1, :]
        for errors, values in ((e1, mpjpe(pred_mm, gt)), (e2, pa_mpjpe(pred_mm, gt))):
            np.add.at(errors, idx.reshape(-1), values.numpy().reshape(-1))
        np.add.at(count, idx.reshape(-1), 1)
        if progress is not None:
            progress(len(x))
    model.train(was_training)
    if (count == 0).any():
        raise RuntimeError(f"{int((count == 0).sum())} frames were not covered by any clip")
    e1, e2 = e1 / count, e2 / count
    actions = split.action if (split.action != "").any() else np.full(n, "all")
    per_action = {}
    for act in sorted(set(actions.tolist())):
        mask = actions == act
        per_action[act] = {"p1_mm": float(e1[mask].mean()), "p2_mm": float(e2[mask].mean()), "frames": int(mask.sum())}
    return {
        "p1_mm": float(np.mean([v["p1_mm"] for v in per_action.values()])),
        "p2_mm": float(np.mean([v["p2_mm"] for v in per_action.values()])),
        "per_action": per_action,
        "frames": n,
    }
