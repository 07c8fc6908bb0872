"""MotionBERT's DSTformer backbone, state-dict compatible with its released checkpoints.

Re-implementation of ``lib/model/DSTformer.py`` (Walter0807/MotionBERT) as instantiated by the mesh configs
(``docs/protocols.md``, ``docs/encoder.md``): same module names, parameter shapes, state-dict key order,
initialisation and arithmetic, with attention computed by ``scaled_dot_product_attention`` and tensors kept as
``(B, T, J, C)`` instead of MotionBERT's ``(B*T, J, C)`` (the same computation, reshaped).

Only the configuration the released checkpoints use is supported: ``stage_st`` / ``stage_ts`` blocks, no
dropout, no drop-path, per-token fusion ``ts_attn`` (or a plain average with ``att_fuse=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from motion.encoders.ssrstf import Mlp, SpatioTemporalAttention, check_config_types, fuse_logits, token_chunked

__all__ = ["DSTBlock", "DSTformer", "DSTformerConfig"]


@dataclass
class DSTformerConfig:
    """DSTformer hyper-parameters; defaults are MotionBERT's mesh configuration (about 42.5M parameters).

    ``from_variant('lite')`` gives MotionBERT-Lite (``dim_feat`` 256, ``mlp_ratio`` 4; about 16.0M parameters).
    ``norm_eps`` is 1e-6 as in MotionBERT's ``load_backbone`` (``partial(nn.LayerNorm, eps=1e-6)``).
    """

    dim_in: int = 3
    dim_out: int = 3
    dim_feat: int = 512
    dim_rep: int = 512
    depth: int = 5
    num_heads: int = 8
    mlp_ratio: float = 2.0
    num_joints: int = 17
    maxlen: int = 243
    qkv_bias: bool = True
    att_fuse: bool = True
    norm_eps: float = 1e-6

    VARIANT_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {
        "base": {},
        "lite": {"dim_feat": 256, "mlp_ratio": 4.0},
    }

    def __post_init__(self) -> None:
        check_config_types(self)
        for name in ("dim_in", "dim_out", "dim_feat", "dim_rep", "depth", "num_heads", "num_joints", "maxlen"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DSTformerConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim_feat % self.num_heads:
            raise ValueError(f"dim_feat {self.dim_feat} must be divisible by num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"DSTformerConfig.mlp_ratio must be positive, got {self.mlp_ratio}")

    @classmethod
    def from_variant(cls, variant: Literal["base", "lite"] = "base", **overrides: Any) -> DSTformerConfig:
        """MotionBERT (``'base'``, the mesh configuration) or MotionBERT-Lite (``'lite'``), with overrides."""
        if variant not in cls.VARIANT_OVERRIDES:
            raise ValueError(f"unknown DSTformer variant {variant!r}; expected one of {list(cls.VARIANT_OVERRIDES)}")
        return cls(**{**cls.VARIANT_OVERRIDES[variant], **overrides})


class DSTBlock(nn.Module):
    """MotionBERT ``Block``: spatial and temporal pre-norm attention + MLP in ``'stage_st'`` or ``'stage_ts'`` order.

    Module registration order matches MotionBERT (``norm1_s, norm1_t, attn_s, attn_t, norm2_s, norm2_t, mlp_s,
    mlp_t``) so that ``state_dict()`` lists keys in the checkpoint's order.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        st_mode: str = "stage_st",
    ) -> None:
        super().__init__()
        if st_mode not in ("stage_st", "stage_ts"):
            raise ValueError(f"st_mode must be 'stage_st' or 'stage_ts', got {st_mode!r}")
        self.st_mode = st_mode
        self.norm1_s = nn.LayerNorm(dim, eps=norm_eps)
        self.norm1_t = nn.LayerNorm(dim, eps=norm_eps)
        self.attn_s = SpatioTemporalAttention(dim, num_heads, qkv_bias, mode="spatial")
        self.attn_t = SpatioTemporalAttention(dim, num_heads, qkv_bias, mode="temporal")
        self.norm2_s = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2_t = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        self.mlp_s = Mlp(dim, hidden)
        self.mlp_t = Mlp(dim, hidden)

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_s(self.norm1_s(x))
        return token_chunked(self._mlp_s_residual, x, self.mlp_s.fc1.out_features)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_t(self.norm1_t(x))
        return token_chunked(self._mlp_t_residual, x, self.mlp_t.fc1.out_features)

    # Token-wise tails, run in row chunks at inference (cache-resident hidden activations; see token_chunked).
    def _mlp_s_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp_s(self.norm2_s(x))

    def _mlp_t_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp_t(self.norm2_t(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, J, C) -> (B, T, J, C)."""
        if self.st_mode == "stage_st":
            return self._temporal(self._spatial(x))
        return self._spatial(self._temporal(x))


class DSTformer(nn.Module):
    """MotionBERT's dual-stream spatio-temporal Transformer.

    Input ``x``: (B, T, J, dim_in) with ``1 <= T <= maxlen`` (the temporal embedding is sliced to the first T of
    its ``maxlen`` slots; longer clips raise ``ValueError``). The device and dtype follow the input.

    State-dict keys (depth d): ``temp_embed (1, maxlen, 1, C)``, ``pos_embed (1, J, C)``, ``joints_embed``,
    ``blocks_st.{i}``, ``blocks_ts.{i}``, ``norm``, ``pre_logits.fc``, ``head``, ``ts_attn.{i}`` (the latter
    only with ``att_fuse``), exactly as MotionBERT's ``model_pos``.
    """

    def __init__(self, config: DSTformerConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else DSTformerConfig()
        self.config = cfg
        C = cfg.dim_feat
        self.joints_embed = nn.Linear(cfg.dim_in, C)
        block = {
            "num_heads": cfg.num_heads,
            "mlp_ratio": cfg.mlp_ratio,
            "qkv_bias": cfg.qkv_bias,
            "norm_eps": cfg.norm_eps,
        }
        self.blocks_st = nn.ModuleList([DSTBlock(C, st_mode="stage_st", **block) for _ in range(cfg.depth)])
        self.blocks_ts = nn.ModuleList([DSTBlock(C, st_mode="stage_ts", **block) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(C, eps=cfg.norm_eps)
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module("fc", nn.Linear(C, cfg.dim_rep))
        self.pre_logits.add_module("act", nn.Tanh())
        self.head = nn.Linear(cfg.dim_rep, cfg.dim_out)
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.maxlen, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, C))
        # MotionBERT's init: trunc-normal(0.02) embeddings and Linear weights, zero biases, unit LayerNorms.
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)
        self.ts_attn: nn.ModuleList | None = None
        if cfg.att_fuse:
            self.ts_attn = nn.ModuleList([nn.Linear(2 * C, 2) for _ in range(cfg.depth)])
            for lin in self.ts_attn:
                # Equal split at init (weight 0, bias 0.5), as MotionBERT.
                nn.init.zeros_(lin.weight)
                nn.init.constant_(lin.bias, 0.5)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[2] != cfg.num_joints or x.shape[3] != cfg.dim_in:
            raise ValueError(f"expected input of shape (B, T, {cfg.num_joints}, {cfg.dim_in}), got {tuple(x.shape)}")
        if not 1 <= x.shape[1] <= cfg.maxlen:
            raise ValueError(
                f"clip length T={x.shape[1]} must be in [1, maxlen={cfg.maxlen}] (DSTformer's temporal embedding "
                f"has {cfg.maxlen} slots); split the sequence into windows of at most {cfg.maxlen} frames"
            )

    def get_representation(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logits ``tanh(fc(LN(features)))``: (B, T, J, dim_in) -> (B, T, J, dim_rep=512)."""
        self._check_input(x)
        T = x.shape[1]
        x = self.joints_embed(x) + self.pos_embed + self.temp_embed[:, :T]
        for idx, (blk_st, blk_ts) in enumerate(zip(self.blocks_st, self.blocks_ts, strict=True)):
            x_st = blk_st(x)
            x_ts = blk_ts(x)
            if self.ts_attn is not None:
                alpha = fuse_logits(self.ts_attn[idx], x_st, x_ts).softmax(dim=-1)  # (B, T, J, 2) per token
                x = torch.addcmul(x_ts * alpha[..., 1:2], x_st, alpha[..., 0:1])
            else:
                x = (x_st + x_ts) * 0.5
        return self.pre_logits(self.norm(x))

    def forward(self, x: torch.Tensor, return_rep: bool = False) -> torch.Tensor:
        """3D pose (B, T, J, dim_out=3), or the representation (B, T, J, dim_rep) when ``return_rep``.

        Args:
            x: (B, T, J, dim_in) normalised 2D keypoints with confidence, ``T <= maxlen``.
            return_rep: return :meth:`get_representation` instead of the pose.
        """
        rep = self.get_representation(x)
        return rep if return_rep else self.head(rep)
