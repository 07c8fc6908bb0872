"""Backbone registry: build an encoder by name from a config dict or dataclass; count parameters and MACs.

Every encoder exposes ``get_representation(x) -> (B, T, 17, 512)`` and ``forward(x, return_rep=False)``, so any
entry plugs into the same downstream head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from motion.encoders.dstformer import DSTformer, DSTformerConfig
from motion.encoders.ssrstf import SSRSTF, MetaFormerBlock, SSRSTFConfig

__all__ = [
    "ENCODERS",
    "EncoderEntry",
    "build_encoder",
    "config_to_dict",
    "count_macs",
    "count_parameters",
    "encoder_config_from_dict",
    "macs_per_frame",
]


@dataclass(frozen=True)
class EncoderEntry:
    """A registered backbone: its config dataclass and its ``nn.Module`` class (built as ``model_cls(config)``)."""

    config_cls: type
    model_cls: type[nn.Module]


ENCODERS: dict[str, EncoderEntry] = {
    "ssrstf": EncoderEntry(SSRSTFConfig, SSRSTF),
    "dstformer": EncoderEntry(DSTformerConfig, DSTformer),
}


def _entry(arch: str) -> EncoderEntry:
    if arch not in ENCODERS:
        raise ValueError(f"unknown encoder arch {arch!r}; expected one of {sorted(ENCODERS)}")
    return ENCODERS[arch]


def encoder_config_from_dict(arch: str, d: Mapping[str, Any]) -> Any:
    """Build the config dataclass of ``arch`` from a plain dict (e.g. a YAML section).

    Missing keys take their defaults (for ``ssrstf``, ``variant`` fills depth/dim/kernels).

    Raises:
        ValueError: for an unknown ``arch``, or for keys that are not fields of the config (all of them named).
        TypeError: for a value of the wrong type.
    """
    cls = _entry(arch).config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {arch} encoder config key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**dict(d))


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict (YAML/JSON-friendly) form of an encoder config; ``encoder_config_from_dict`` inverts it."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected an encoder config dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


def set_recompute_blocks(encoder: nn.Module, blocks: int) -> None:
    """Recompute the first ``blocks`` blocks of ``encoder`` in backward instead of storing their activations
    (training memory for about one more forward of those blocks; results unchanged). SSR-STF only."""
    if blocks < 0:
        raise ValueError(f"recompute_blocks must be >= 0, got {blocks}")
    if not hasattr(encoder, "recompute_blocks"):
        if blocks:
            raise ValueError(f"recompute_blocks: {type(encoder).__name__} cannot recompute blocks (SSR-STF only)")
        return
    encoder.recompute_blocks = blocks


def set_recompute_mlp(encoder: nn.Module, on: bool) -> None:
    """Recompute every MLP branch's hidden activations in backward instead of storing them (training memory for
    time: SSR-STF-B at batch 32 x 16 on 2 cores, 4.6 instead of 6.8 GB at 15 % more time; results unchanged).
    SSR-STF only."""
    blocks = [m for m in encoder.modules() if isinstance(m, MetaFormerBlock)]
    if not blocks:
        if on:
            raise ValueError(f"recompute_mlp: {type(encoder).__name__} cannot recompute its MLPs (SSR-STF only)")
        return
    for block in blocks:
        block.recompute_mlp = bool(on)


def build_encoder(arch: str, config: Mapping[str, Any] | Any | None = None) -> nn.Module:
    """Instantiate the encoder ``arch`` (``'ssrstf'`` or ``'dstformer'``).

    Args:
        arch: registry name.
        config: a dict (validated by :func:`encoder_config_from_dict`), the arch's config dataclass, or ``None``
            for the defaults.

    Returns:
        The module, on CPU in float32; move it with ``.to(device)``.
    """
    entry = _entry(arch)
    if config is None:
        cfg = entry.config_cls()
    elif isinstance(config, Mapping):
        cfg = encoder_config_from_dict(arch, config)
    elif isinstance(config, entry.config_cls):
        cfg = config
    else:
        raise TypeError(
            f"config for {arch!r} must be a dict or {entry.config_cls.__name__}, got {type(config).__name__}"
        )
    return entry.model_cls(cfg)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once; works on the meta device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _cpu_sdpa_flop(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    # torch's counter knows the CUDA SDPA kernels but not the CPU flash kernel: without this mapping attention
    # would count as 0 on CPU.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flop_mapping() -> dict[Any, Any]:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: _cpu_sdpa_flop}


def count_macs(model: nn.Module, T: int, num_joints: int | None = None, dim_in: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a (1, T, J, dim_in) clip (MACs = FLOPs / 2).

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; element-wise ops
    are free), as in docs/encoder.md, sizes. Runs on the model's device and dtype, in eval mode, without grad.
    """
    cfg = getattr(model, "config", None)
    J = num_joints if num_joints is not None else getattr(cfg, "num_joints", 17)
    C = dim_in if dim_in is not None else getattr(cfg, "dim_in", 3)
    p = next(model.parameters())
    x = torch.zeros(1, T, J, C, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def macs_per_frame(model: nn.Module, T: int) -> float:
    """MACs of one forward pass at batch 1 and clip length T, divided by T (see :func:`count_macs`)."""
    return count_macs(model, T) / T
