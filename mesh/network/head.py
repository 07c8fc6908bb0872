"""The SMPL regression head (MotionBERT's ``SMPLRegressor`` layout, docs/protocols.md), improvements behind flags.

Per frame, the 17 x C joint features go through ``fc1 -> norm -> ReLU -> head_pose`` to 24 6D rotations added to
the mean pose; per clip, the time-averaged features go through ``fc2 -> norm -> ReLU -> head_shape`` to 10 betas
added to the mean shape. ``head_pose``/``head_shape`` start at xavier(gain 0.01) with zero bias, so the first
prediction is the mean pose and shape. Parameter names follow MotionBERT's (``fc1``, ``bn1``, ``head_pose``,
``init_pose``...).

Flag ``norm``: ``'batch'`` is MotionBERT's BatchNorm1d (crashes at batch 1 in training; running statistics follow
the last dataset); ``'layer'`` (default) normalises per sample and has neither problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from body_models import MeanParams


@dataclass
class HeadConfig:
    hidden_dim: int = 1024
    dropout: float = 0.1
    norm: Literal["batch", "layer", "none"] = "layer"


def _norm(kind: str, dim: int) -> nn.Module:
    return {"batch": lambda: nn.BatchNorm1d(dim, momentum=0.1), "layer": lambda: nn.LayerNorm(dim),
            "none": nn.Identity}[kind]()


class SMPLHead(nn.Module):
    """Representation ``(B, T, J, C)`` -> 6D pose ``(B, T, 24, 6)`` (SPIN column layout) and betas ``(B, 10)``."""

    def __init__(self, dim_rep: int, num_joints: int, mean: MeanParams, config: HeadConfig | None = None) -> None:
        super().__init__()
        cfg = config or HeadConfig()
        self.config = cfg
        d_in = num_joints * dim_rep
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc1 = nn.Linear(d_in, cfg.hidden_dim)
        self.bn1 = _norm(cfg.norm, cfg.hidden_dim)
        self.head_pose = nn.Linear(cfg.hidden_dim, 24 * 6)
        self.fc2 = nn.Linear(d_in, cfg.hidden_dim)
        self.bn2 = _norm(cfg.norm, cfg.hidden_dim)
        self.head_shape = nn.Linear(cfg.hidden_dim, mean.betas.shape[0])
        # Output layers start near zero, so the first prediction is the mean pose and shape. (MotionBERT keeps the
        # default bias init, up to +-1/sqrt(hidden) per 6D entry; zero biases make the start exact.)
        for layer in (self.head_pose, self.head_shape):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)
        self.register_buffer("init_pose", torch.as_tensor(np.asarray(mean.pose6d, np.float32).reshape(1, 144)))
        self.register_buffer("init_shape", torch.as_tensor(np.asarray(mean.betas, np.float32).reshape(1, -1)))

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feat (B, T, J, C)`` -> ``pose6d (B, T, 24, 6)``, ``betas (B, num_betas)`` (one shape per clip)."""
        b, t = feat.shape[:2]
        per_frame = feat.reshape(b * t, -1)
        x = torch.relu(self.bn1(self.fc1(self.dropout(per_frame))))
        pose6d = self.head_pose(x) + self.init_pose
        pooled = feat.reshape(b, t, -1).mean(dim=1)  # temporal average of the features
        y = torch.relu(self.bn2(self.fc2(self.dropout(pooled))))
        betas = self.head_shape(y) + self.init_shape
        return pose6d.reshape(b, t, 24, 6), betas
