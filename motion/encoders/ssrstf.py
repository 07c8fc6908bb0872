"""SSR-STF motion encoder (reconstruction of arXiv:2412.19676; see ``docs/encoder.md``).

A dual-stream encoder for 2D keypoint sequences ``(B, T, J=17, 3)``:

- **STFormer** (global): MotionAGFormer's attention sub-blocks, spatial (over joints within a frame) then temporal
  (over frames within a joint);
- **SSRFormer** (local): MetaFormer sub-blocks whose token mixer is **SSRA**, an LSKA-style separable large-kernel
  gate on the (frames x joints) plane with an LSKNet-style selective mask;
- the two streams are fused per token by ``softmax(Linear(2C, 2)([x_g || x_l]))``.

The model has no parameter whose shape depends on T (except the optional, off-by-default temporal embedding), so
one set of weights runs at any clip length, including clips shorter than the temporal kernel (zero padding).

State-dict names follow ``docs/encoder.md`` (MotionAGFormer-like):
``joints_embed``, ``pos_embed``, [``temp_embed``], ``layers.{i}.{att_spatial,att_temporal,ssr_spatial,ssr_temporal,
fusion}``, ``norm``, ``rep_logit.fc``, ``head``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional
from torch.utils.checkpoint import checkpoint

__all__ = [
    "LSKA_KERNELS",
    "SSRA",
    "SSRSTF",
    "VARIANTS",
    "Mlp",
    "RepresentationHead",
    "SSRFormerBlock",
    "SSRSTFBlock",
    "SSRSTFConfig",
    "STFormerBlock",
    "SpatioTemporalAttention",
    "fuse_logits",
    "lska_split",
    "token_chunked",
]

# Nominal kernel k -> (local kernel 2d-1, dilated kernel k_d, dilation d), from LSKA's reference code
# (docs/encoder.md, architecture): (2d-1) + (k_d-1)*d = k. k=3 is not in LSKA; here it is a single 3-tap depthwise conv
# with no dilated stage (k_d = 0 below). k=1 means "this axis has no convolution at all".
LSKA_KERNELS: dict[int, tuple[int, int, int]] = {
    1: (1, 0, 1),
    3: (3, 0, 1),
    7: (3, 3, 2),
    11: (3, 5, 2),
    23: (5, 7, 3),
    35: (5, 11, 3),
    41: (5, 13, 3),
    53: (5, 17, 3),
}

# Extent of the 2->2 selective-mask convolution along each active axis (docs/encoder.md, architecture).
MASK_KERNEL = 7

# Variant table (docs/encoder.md): depth N, width C, temporal kernel k_t, spatial kernel k_s, reference clip length T.
VARIANTS: dict[str, dict[str, int]] = {
    "XS": {"depth": 12, "dim": 64, "kernel_t": 11, "kernel_s": 7, "seq_len": 27},
    "S": {"depth": 26, "dim": 64, "kernel_t": 23, "kernel_s": 7, "seq_len": 81},
    "B": {"depth": 16, "dim": 128, "kernel_t": 23, "kernel_s": 7, "seq_len": 243},
    "L": {"depth": 26, "dim": 128, "kernel_t": 23, "kernel_s": 7, "seq_len": 243},
}

SSRLayout = Literal["st", "plane2", "plane1"]
GlobalStream = Literal["sequential", "stc"]


def lska_split(kernel: int) -> tuple[int, int, int]:
    """Split a nominal kernel size into LSKA's ``(local, dilated, dilation)`` triple.

    Args:
        kernel: nominal receptive field along one axis; one of ``LSKA_KERNELS`` (1, 3, 7, 11, 23, 35, 41, 53).

    Returns:
        ``(l, g, d)``: local depthwise kernel ``l`` (1 = none), dilated depthwise kernel ``g`` (0 = none) and its
        dilation ``d``.

    Raises:
        ValueError: for a kernel not in the table (the spec forbids the ``ceil(k/d)`` closed form).
    """
    if kernel not in LSKA_KERNELS:
        raise ValueError(f"unsupported SSRA kernel size {kernel}; supported: {sorted(LSKA_KERNELS)}")
    return LSKA_KERNELS[kernel]


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------


def _type_ok(value: Any, hint: Any) -> bool:
    """Return whether ``value`` matches a (simple) type hint: int/float/bool/str, Optional, Literal, list[int]."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is typing.Union or origin is types.UnionType:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is Literal:  # only the type here; the value check (with a ValueError) is the config's job
        return any(type(value) is type(a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, Sequence, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # YAML writes 4 for 4.0: accept ints for floats, but not bools.
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def check_config_types(cfg: Any) -> None:
    """Validate every field of a config dataclass against its type hint.

    Raises:
        TypeError: naming the first field whose value does not match its declared type.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _type_ok(value, hints[f.name]):
            raise TypeError(
                f"{type(cfg).__name__}.{f.name}: expected {hints[f.name]}, got {value!r} ({type(value).__name__})"
            )


@dataclass
class SSRSTFConfig:
    """Configuration of the SSR-STF encoder (every network flag of docs/encoder.md, open choices).

    ``depth``, ``dim``, ``kernel_t``, ``kernel_s`` and ``seq_len`` default to ``None`` and are then filled from
    ``variant`` (docs/encoder.md); any of them may be overridden. ``seq_len`` is the variant's reference clip length
    (27/81/243): it is used for training and MAC counting only, never for a weight shape.
    """

    variant: str = "B"
    depth: int | None = None
    dim: int | None = None
    kernel_t: int | None = None
    kernel_s: int | None = None
    seq_len: int | None = None
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dim_rep: int = 512
    dim_in: int = 3
    dim_out: int = 3
    num_joints: int = 17
    layer_scale_init: float = 1e-5
    qkv_bias: bool = False
    ssra_selective: bool = True
    ssr_layout: SSRLayout = "st"
    channel_split: bool = False
    joint_perm: list[int] | None = None
    temporal_pos_embed: bool = False
    max_len: int = 243
    global_stream: GlobalStream = "sequential"

    LAYOUTS: ClassVar[tuple[str, ...]] = ("st", "plane2", "plane1")
    GLOBAL_STREAMS: ClassVar[tuple[str, ...]] = ("sequential", "stc")

    def __post_init__(self) -> None:
        if not isinstance(self.variant, str) or self.variant.upper() not in VARIANTS:
            raise ValueError(f"unknown SSR-STF variant {self.variant!r}; expected one of {list(VARIANTS)}")
        self.variant = self.variant.upper()
        for key, value in VARIANTS[self.variant].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if isinstance(self.joint_perm, tuple):
            self.joint_perm = list(self.joint_perm)
        check_config_types(self)
        self._check_values()

    def _check_values(self) -> None:
        assert self.dim is not None and self.depth is not None  # filled above; for type checkers
        assert self.kernel_t is not None and self.kernel_s is not None
        for name in ("depth", "dim", "num_heads", "dim_rep", "dim_in", "dim_out", "num_joints", "max_len", "seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SSRSTFConfig.{name} must be positive, got {getattr(self, name)}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"SSRSTFConfig.mlp_ratio must be positive, got {self.mlp_ratio}")
        lska_split(self.kernel_t)  # raises ValueError for an unsupported size
        lska_split(self.kernel_s)
        if self.ssr_layout not in self.LAYOUTS:
            raise ValueError(f"SSRSTFConfig.ssr_layout must be one of {self.LAYOUTS}, got {self.ssr_layout!r}")
        if self.global_stream not in self.GLOBAL_STREAMS:
            raise ValueError(
                f"SSRSTFConfig.global_stream must be one of {self.GLOBAL_STREAMS}, got {self.global_stream!r}"
            )
        width = self.stream_dim
        if self.channel_split and self.dim % 2:
            raise ValueError(f"channel_split=True needs an even dim, got {self.dim}")
        if width % self.num_heads:
            raise ValueError(f"stream width {width} must be divisible by num_heads={self.num_heads}")
        if self.ssra_selective and width % 2:
            raise ValueError(f"ssra_selective=True needs an even stream width (C/2 selective channels), got {width}")
        if self.joint_perm is not None and sorted(self.joint_perm) != list(range(self.num_joints)):
            raise ValueError(f"joint_perm must be a permutation of range({self.num_joints}), got {self.joint_perm}")

    @property
    def stream_dim(self) -> int:
        """Channel width of each stream: C, or C/2 with ``channel_split``."""
        assert self.dim is not None
        return self.dim // 2 if self.channel_split else self.dim

    @classmethod
    def from_variant(cls, variant: str = "B", **overrides: Any) -> SSRSTFConfig:
        """Build the config of a named size (``'XS' | 'S' | 'B' | 'L'``), with any field overridden."""
        return cls(variant=variant, **overrides)


# ----------------------------------------------------------------------------------------------------------------
# Shared building blocks (also used by the DSTformer)
# ----------------------------------------------------------------------------------------------------------------


# Target size (elements) of the widest intermediate of a token-wise computation run in chunks: 256K floats = 1 MiB,
# so the hidden activations of the MLP stay in the L2 cache between fc1, GELU and fc2.
CHUNK_ELEMENTS = 1 << 18


def token_chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, width: int) -> torch.Tensor:
    """Apply a token-wise ``fn`` ((N, C) -> (N, C), rows independent) to ``x`` (..., C) in chunks of rows.

    Without autograd (inference), large inputs are split into chunks whose widest intermediate (``width`` columns,
    e.g. the MLP hidden size) is about ``CHUNK_ELEMENTS``: the hidden activations then stay in cache, and the
    allocator reuses small blocks instead of faulting in fresh pages for every multi-MiB tensor. This halved the
    MLP's time on CPU (T=243: 4131 tokens x 512 hidden = 8 MiB per intermediate). Results are identical: every
    op in ``fn`` is row-wise. With autograd enabled ``fn`` runs once on the whole input (training is unchanged).
    """
    rows = max(1, CHUNK_ELEMENTS // max(1, width))
    n = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if torch.is_grad_enabled() or n <= 2 * rows:
        return fn(x)
    flat = x.reshape(n, x.shape[-1])
    out = torch.empty_like(flat)
    for start in range(0, n, rows):
        out[start : start + rows] = fn(flat[start : start + rows])
    return out.view(x.shape)


class Mlp(nn.Module):
    """Token-wise MLP ``fc1 -> GELU -> fc2``: ``(..., C) -> (..., C)``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (..., C) -> (..., C)."""
        return self.fc2(self.act(self.fc1(x)))


class SpatioTemporalAttention(nn.Module):
    """Multi-head self-attention along one axis of a ``(B, T, J, C)`` sequence.

    ``mode='spatial'`` attends over the J joints within each frame; ``mode='temporal'`` attends over the T frames
    within each joint (MotionAGFormer / MotionBERT ``Attention``). Scale ``(C/h)^-0.5``. ``proj`` is registered
    before ``qkv`` so that state dicts list keys in the reference code bases' order.

    Attention runs through ``scaled_dot_product_attention`` on 4-D ``(batch, h, L, d)`` tensors: on CPU only 4-D
    inputs reach the fused flash kernel; 5-D ones fall back to the unfused math path (explicit ``bmm``, a
    materialised softmax and its ``isneginf``/``all``/``where`` guards), which was 6x slower at T=243.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, mode: str = "spatial") -> None:
        super().__init__()
        if mode not in ("spatial", "temporal"):
            raise ValueError(f"attention mode must be 'spatial' or 'temporal', got {mode!r}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.mode = mode
        self.proj = nn.Linear(dim, dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, J, C) -> (B, T, J, C)."""
        B, T, J, C = x.shape
        h = self.num_heads
        d = C // h
        qkv = self.qkv(x)
        if self.mode == "spatial":
            # (B*T, J, 3, h, d) -> (3, B*T, h, J, d): a view, no copy.
            q, k, v = qkv.reshape(B * T, J, 3, h, d).permute(2, 0, 3, 1, 4)
            out = functional.scaled_dot_product_attention(q, k, v)  # (B*T, h, J, d)
            out = out.transpose(1, 2).reshape(B, T, J, C)
        else:
            # (B, T, J, 3, h, d) -> (3, B*J, h, T, d): one copy (B and J are not adjacent in memory).
            q, k, v = qkv.reshape(B, T, J, 3, h, d).permute(3, 0, 2, 4, 1, 5).reshape(3, B * J, h, T, d)
            out = functional.scaled_dot_product_attention(q, k, v)  # (B*J, h, T, d)
            out = out.reshape(B, J, h, T, d).permute(0, 3, 1, 2, 4).reshape(B, T, J, C)
        return self.proj(out)


class MetaFormerBlock(nn.Module):
    """``x + ls1 * mixer(LN(x))`` then ``x + ls2 * MLP(LN(x))`` on ``(B, T, J, C)`` (MotionAGFormer ``AGFormerBlock``).

    The per-channel layer scales start at ``layer_scale_init`` (1e-5), so a fresh block is close to identity.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    # Training memory knob (not config, not state dict): keep only the MLP branch's input and recompute LayerNorm,
    # fc1 and GELU in backward. The branch's hidden activations (2 x 4C per token: fc1's output and GELU's) are the
    # largest saved tensors of the block; recomputing them costs one fc1 and GELU (about a tenth of the block's
    # training FLOPs; 15 % more step time measured on 2 CPU cores). Same results.
    recompute_mlp: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, J, C) -> (B, T, J, C)."""
        # addcmul: x + y * ls in one pass over memory instead of two.
        x = torch.addcmul(x, self.mixer(self.norm1(x)), self.layer_scale_1)
        if self.recompute_mlp and torch.is_grad_enabled():
            return torch.addcmul(x, checkpoint(self._mlp_branch, x, use_reentrant=False), self.layer_scale_2)
        return token_chunked(self._mlp_residual, x, self.mlp.fc1.out_features)

    def _mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))

    def _mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self._mlp_branch(x), self.layer_scale_2)


class STFormerBlock(MetaFormerBlock):
    """STFormer sub-block: MetaFormer block with spatial or temporal attention (``qkv`` without bias by default).

    Parameters: ``12C^2 + 12C`` at ``mlp_ratio=4`` (docs/encoder.md, architecture).
    """

    def __init__(
        self,
        dim: int,
        mode: str,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        layer_scale_init: float = 1e-5,
    ) -> None:
        super().__init__(dim, SpatioTemporalAttention(dim, num_heads, qkv_bias, mode), mlp_ratio, layer_scale_init)


# ----------------------------------------------------------------------------------------------------------------
# SSRA and SSRFormer
# ----------------------------------------------------------------------------------------------------------------


def _depthwise(dim: int, kernel: int, dilation: int, axis: str) -> nn.Module:
    """Depthwise 1-D conv along the frame (``axis='t'``, height) or joint (``'s'``, width) axis of (B, C, T, J).

    Zero "same" padding ``d(k-1)/2``, so clips shorter than the kernel still work (docs/encoder.md, input and output).
    """
    if kernel <= 1:
        return nn.Identity()
    pad = dilation * (kernel - 1) // 2
    if axis == "t":
        return nn.Conv2d(dim, dim, (kernel, 1), padding=(pad, 0), dilation=(dilation, 1), groups=dim)
    return nn.Conv2d(dim, dim, (1, kernel), padding=(0, pad), dilation=(1, dilation), groups=dim)


class SSRA(nn.Module):
    """Skeleton selective refine attention (docs/encoder.md): a token mixer ``(B, T, J, C) -> (B, T, J, C)``.

    Treats the clip as a T x J image ``X`` (B, C, T, J)::

        U = GELU(proj_in X)
        L = local_t(local_s(U))                    # depthwise, joints then frames
        G = dilated_t(dilated_s(L))                # dilated depthwise, same order
        selective:  L' = select_local L, G' = select_global G            (C -> C/2 each)
                    M  = [mean_c([L';G']); max_c([L';G'])]                (B, 2, T, J)
                    s_L, s_G = sigmoid(select_mask M)                    (2 -> 2 conv, extent 7 on active axes)
                    A  = proj_attn(s_L L' + s_G G')                      (C/2 -> C)
        otherwise:  A  = proj_attn G                                      (C -> C, plain LSKA)
        Y = proj_out(U * A) + X

    Args:
        dim: channels C.
        kernel_t: nominal kernel along frames (1 disables the axis).
        kernel_s: nominal kernel along joints (1 disables the axis).
        selective: use the LSKNet-style selective mask.
        joint_perm: optional joint order applied before the joint-axis convolutions and undone after
            (``x[:, :, joint_perm]`` is what the convolutions see). Ignored when nothing mixes along joints.
    """

    def __init__(
        self,
        dim: int,
        kernel_t: int,
        kernel_s: int,
        selective: bool = True,
        joint_perm: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        l_t, g_t, d_t = lska_split(kernel_t)
        l_s, g_s, d_s = lska_split(kernel_s)
        self.kernel_t, self.kernel_s, self.selective = kernel_t, kernel_s, selective
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.local_s = _depthwise(dim, l_s, 1, "s")
        self.local_t = _depthwise(dim, l_t, 1, "t")
        self.dilated_s = _depthwise(dim, g_s, d_s, "s")
        self.dilated_t = _depthwise(dim, g_t, d_t, "t")
        if selective:
            half = dim // 2
            self.select_local = nn.Conv2d(dim, half, 1)
            self.select_global = nn.Conv2d(dim, half, 1)
            # The mask conv spans 7 along each axis the SSRA mixes over, 1 along an inactive axis.
            m_t = MASK_KERNEL if kernel_t > 1 else 1
            m_s = MASK_KERNEL if kernel_s > 1 else 1
            self.select_mask = nn.Conv2d(2, 2, (m_t, m_s), padding=(m_t // 2, m_s // 2))
            self.proj_attn = nn.Conv2d(half, dim, 1)
        else:
            self.proj_attn = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)

        # Non-persistent buffers: they follow .to(device) but stay out of the state dict (the docs/encoder.md layout).
        self.joint_perm: torch.Tensor | None
        self.joint_perm_inv: torch.Tensor | None
        if joint_perm is not None and kernel_s > 1:
            perm = torch.as_tensor(list(joint_perm), dtype=torch.long)
            self.register_buffer("joint_perm", perm, persistent=False)
            self.register_buffer("joint_perm_inv", torch.argsort(perm), persistent=False)
        else:
            self.joint_perm = None
            self.joint_perm_inv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, J, C), the LayerNorm-ed block input -> (B, T, J, C).

        Computed channels-last: tensors stay ``(B, T, J, C)`` contiguous, the 1x1 convolutions run as ``linear``
        on the last axis, and the depthwise/mask convolutions see the ``(B, C, T, J)`` permuted *view*, which is
        ``channels_last`` memory, so oneDNN runs its NHWC depthwise kernels on it and returns channels-last
        outputs (no layout copies). Same arithmetic as the NCHW formulation of the spec (docs/encoder.md), which ran the
        depthwise convolutions through ``slow_conv2d`` and was 2 to 20x slower per convolution on CPU.
        """
        if self.joint_perm is not None:
            x = x.index_select(2, self.joint_perm)
        u = self.act(_pointwise(self.proj_in, x))
        local = _along_plane(self.local_t, _along_plane(self.local_s, u))
        glob = _along_plane(self.dilated_t, _along_plane(self.dilated_s, local))
        if self.selective:
            sel_l = _pointwise(self.select_local, local)
            sel_g = _pointwise(self.select_global, glob)
            # Channel mean/max over the stacked [L'; G'] (C channels) without materialising the concatenation.
            n = sel_l.shape[-1] + sel_g.shape[-1]
            mean = (sel_l.sum(-1, keepdim=True) + sel_g.sum(-1, keepdim=True)) / n
            amax = torch.maximum(sel_l.amax(-1, keepdim=True), sel_g.amax(-1, keepdim=True))
            masks = torch.sigmoid(_along_plane(self.select_mask, torch.cat([mean, amax], dim=-1)))
            attn = _pointwise(self.proj_attn, masks[..., 0:1] * sel_l + masks[..., 1:2] * sel_g)
        else:
            attn = _pointwise(self.proj_attn, glob)
        y = _pointwise(self.proj_out, u * attn) + x  # "refine": gate, project, inner residual (as VAN)
        if self.joint_perm_inv is not None:
            y = y.index_select(2, self.joint_perm_inv)
        return y


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 ``Conv2d`` applied to channels-last ``x`` (..., C_in) as a ``linear`` (weight viewed, not copied)."""
    return functional.linear(x, conv.weight.flatten(1), conv.bias)


def _along_plane(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 2-D convolution over the (T, J) plane of channels-last ``x`` (B, T, J, C) -> (B, T, J, C_out).

    ``x.permute(0, 3, 1, 2)`` is a ``channels_last`` view of the NCHW tensor the convolution expects; the output is
    channels-last too, so the permute back is a view as well.
    """
    if isinstance(conv, nn.Identity):
        return x
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SSRFormerBlock(MetaFormerBlock):
    """SSRFormer sub-block: MetaFormer block (LayerNorm, layer scale) with an ``SSRA(kernel_t, kernel_s)`` mixer.

    ``SSR_s = SSRFormerBlock(C, 1, k_s)``, ``SSR_t = SSRFormerBlock(C, k_t, 1)``; the plane layouts use
    ``SSRFormerBlock(C, k_t, k_s)``. Parameters (selective, mlp_ratio 4): ``11.5C^2 + 23C + 30`` for ``SSR_s``
    with k_s=7, ``11.5C^2 + 29C + 30`` for ``SSR_t`` with k_t=23 (docs/encoder.md, architecture).
    """

    def __init__(
        self,
        dim: int,
        kernel_t: int,
        kernel_s: int,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-5,
        selective: bool = True,
        joint_perm: Sequence[int] | None = None,
    ) -> None:
        super().__init__(dim, SSRA(dim, kernel_t, kernel_s, selective, joint_perm), mlp_ratio, layer_scale_init)


# ----------------------------------------------------------------------------------------------------------------
# Dual-stream block and model
# ----------------------------------------------------------------------------------------------------------------


class SSRSTFBlock(nn.Module):
    """One SSR-STF layer: STFormer (global) and SSRFormer (local) streams with per-token adaptive fusion.

    ::

        x_g = att_temporal(att_spatial(x))
        x_l = ssr_temporal(ssr_spatial(x))          # layout 'st'; 'plane2': two (k_t x k_s) blocks; 'plane1': one
        a   = softmax(fusion([x_g || x_l]))         # (B, T, J, 2); fusion = Linear(2C, 2), weight 0, bias 0.5
        out = a0 * x_g + a1 * x_l

    With ``channel_split`` (MotionAGFormer ``hierarchical``): the STFormer stream runs on the first C/2 channels,
    the SSRFormer stream on ``x[..., C/2:] + x_g``, and the outputs are concatenated; there is no fusion layer
    (MotionAGFormer builds an unused one; we do not, so no parameter is left without gradient).

    In the plane layouts the sub-blocks keep the names ``ssr_spatial`` (first) and ``ssr_temporal`` (second,
    absent for ``'plane1'``) so that every layout shares the state-dict naming of docs/encoder.md.
    """

    def __init__(self, cfg: SSRSTFConfig) -> None:
        super().__init__()
        if cfg.global_stream != "sequential":
            raise NotImplementedError(
                f"SSRSTFConfig.global_stream={cfg.global_stream!r} (STCFormer criss-cross attention) is not "
                "implemented; use global_stream='sequential'"
            )
        assert cfg.kernel_t is not None and cfg.kernel_s is not None
        dim = cfg.stream_dim
        self.channel_split = cfg.channel_split
        common = {"mlp_ratio": cfg.mlp_ratio, "layer_scale_init": cfg.layer_scale_init}
        self.att_spatial = STFormerBlock(dim, "spatial", cfg.num_heads, qkv_bias=cfg.qkv_bias, **common)
        self.att_temporal = STFormerBlock(dim, "temporal", cfg.num_heads, qkv_bias=cfg.qkv_bias, **common)
        ssr = {"selective": cfg.ssra_selective, "joint_perm": cfg.joint_perm, **common}
        self.ssr_temporal: SSRFormerBlock | None
        if cfg.ssr_layout == "st":
            self.ssr_spatial = SSRFormerBlock(dim, 1, cfg.kernel_s, **ssr)
            self.ssr_temporal = SSRFormerBlock(dim, cfg.kernel_t, 1, **ssr)
        elif cfg.ssr_layout == "plane2":
            self.ssr_spatial = SSRFormerBlock(dim, cfg.kernel_t, cfg.kernel_s, **ssr)
            self.ssr_temporal = SSRFormerBlock(dim, cfg.kernel_t, cfg.kernel_s, **ssr)
        else:  # 'plane1'
            self.ssr_spatial = SSRFormerBlock(dim, cfg.kernel_t, cfg.kernel_s, **ssr)
            self.ssr_temporal = None
        self.fusion: nn.Linear | None = None
        if not cfg.channel_split:
            self.fusion = nn.Linear(2 * dim, 2)
            # Equal split at init: zero weight gives equal logits whatever the input.
            nn.init.zeros_(self.fusion.weight)
            nn.init.constant_(self.fusion.bias, 0.5)

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ssr_spatial(x)
        return x if self.ssr_temporal is None else self.ssr_temporal(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, T, J, C) -> (B, T, J, C)."""
        if self.channel_split:
            half = x.shape[-1] // 2
            x_g = self.att_temporal(self.att_spatial(x[..., :half]))
            x_l = self._local(x[..., half:] + x_g)
            return torch.cat([x_g, x_l], dim=-1)
        x_g = self.att_temporal(self.att_spatial(x))
        x_l = self._local(x)
        assert self.fusion is not None
        alpha = fuse_logits(self.fusion, x_g, x_l).softmax(dim=-1)  # (B, T, J, 2): per token, not channel
        return torch.addcmul(alpha[..., 1:2] * x_l, alpha[..., 0:1], x_g)


def fuse_logits(fusion: nn.Linear, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``fusion(cat([a, b], -1))`` without materialising the concatenation: the weight is split by columns.

    ``a``, ``b``: (..., C); ``fusion``: ``Linear(2C, k)`` -> (..., k). Saves a copy of 2C values per token.
    """
    c = a.shape[-1]
    w = fusion.weight
    return functional.linear(a, w[:, :c], fusion.bias) + functional.linear(b, w[:, c:])


class RepresentationHead(nn.Sequential):
    """``rep_logit``: ``fc = Linear(C, dim_rep)`` then ``act = Tanh``; (..., C) -> (..., dim_rep)."""

    def __init__(self, dim: int, dim_rep: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim_rep)
        self.act = nn.Tanh()


class SSRSTF(nn.Module):
    """SSR-STF encoder with 3D-pose head.

    Input ``x``: (B, T, J, dim_in) 2D keypoints ``(u, v, conf)`` in H36M-17 order, normalised to [-1, 1]
    (docs/encoder.md, input and output). Any T >= 1 works with the same weights; the device and dtype follow the input.

    The embedding (``joints_embed`` + ``pos_embed`` [+ ``temp_embed``]) is the method :meth:`embed`, not a
    sub-module, to keep the top-level state-dict names of docs/encoder.md.

    Temporal embedding (``temporal_pos_embed=True``, off by default): a ``(1, max_len, 1, C)`` parameter sliced to
    the first T slots, as MotionBERT's ``temp_embed``. Clips longer than ``max_len`` raise ``ValueError`` (no
    interpolation: a silently stretched embedding would change what frame positions mean).
    """

    def __init__(self, config: SSRSTFConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else SSRSTFConfig()
        assert cfg.dim is not None and cfg.depth is not None
        self.config = cfg
        C = cfg.dim
        self.joints_embed = nn.Linear(cfg.dim_in, C)
        # Spatial positional embedding, zero init (MotionAGFormer).
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, C))
        self.temp_embed: nn.Parameter | None = None
        if cfg.temporal_pos_embed:
            self.temp_embed = nn.Parameter(torch.zeros(1, cfg.max_len, 1, C))
            nn.init.trunc_normal_(self.temp_embed, std=0.02)  # MotionBERT's init for temp_embed
        self.layers = nn.ModuleList([SSRSTFBlock(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(C)
        self.rep_logit = RepresentationHead(C, cfg.dim_rep)
        self.head = nn.Linear(cfg.dim_rep, cfg.dim_out)

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[2] != cfg.num_joints or x.shape[3] != cfg.dim_in:
            raise ValueError(f"expected input of shape (B, T, {cfg.num_joints}, {cfg.dim_in}), got {tuple(x.shape)}")
        if x.shape[1] < 1:
            raise ValueError("input has no frames (T = 0)")
        if self.temp_embed is not None and x.shape[1] > cfg.max_len:
            raise ValueError(
                f"clip length T={x.shape[1]} exceeds max_len={cfg.max_len} of the temporal embedding "
                "(temporal_pos_embed=True); split the sequence into windows of at most max_len frames"
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Joint embedding plus positional embeddings: (B, T, J, dim_in) -> (B, T, J, C)."""
        self._check_input(x)
        x = self.joints_embed(x) + self.pos_embed
        if self.temp_embed is not None:
            x = x + self.temp_embed[:, : x.shape[1]]
        return x

    # Training memory knob (not config, not state dict): the first ``recompute_blocks`` blocks keep only their input
    # and recompute their activations in backward (``torch.utils.checkpoint``). Same results; costs about one more
    # forward of those blocks. SSR-STF-B at batch 32 x 16 frames stores ~366 MB of activations per block.
    recompute_blocks: int = 0

    def get_representation(self, x: torch.Tensor) -> torch.Tensor:
        """Motion representation ``tanh(fc(LN(features)))``: (B, T, J, dim_in) -> (B, T, J, dim_rep=512)."""
        x = self.embed(x)
        for i, layer in enumerate(self.layers):
            if i < self.recompute_blocks and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.rep_logit(self.norm(x))

    def forward(self, x: torch.Tensor, return_rep: bool = False) -> torch.Tensor:
        """3D pose (B, T, J, dim_out=3), or the representation (B, T, J, dim_rep) when ``return_rep``.

        Args:
            x: (B, T, J, dim_in) normalised 2D keypoints with confidence.
            return_rep: return :meth:`get_representation` instead of the pose.
        """
        rep = self.get_representation(x)
        return rep if return_rep else self.head(rep)
