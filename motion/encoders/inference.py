"""Inference helpers for the motion encoders: float32 or bfloat16, by autocast or by a converted copy.

Usage::

    run = prepare_for_inference(model, "bfloat16", mode="autocast")
    rep = run(x, return_rep=True)          # no grad, eval mode; output dtype bfloat16

Which precision and mode to use:

- ``"float32"``: the reference. Use it for evaluation numbers and wherever the CPU has no native bf16 support
  (:func:`bf16_is_fast` is False: no AVX512-BF16 / AMX, e.g. AVX2-only CPUs). There, PyTorch falls back to
  scalar bf16 GEMMs that run 8x (small models) to 60x (2048^2 matmul) *slower* than float32.
- ``"bfloat16"``, ``mode="autocast"`` (default for bf16): weights stay float32; matmuls, convolutions and attention
  run in bf16, while LayerNorm, softmax and reductions stay float32. Most accurate bf16 option; costs one cast of
  each weight per call (negligible at T >= 16 with several clips). Use it on CPUs with AMX / AVX512-BF16 and on
  GPUs.
- ``"bfloat16"``, ``mode="convert"``: a bf16 *copy* of the model (the original is untouched). Every op, including
  LayerNorm and the residual stream, runs in bf16: half the weight memory and no per-call casts, but larger error
  (the residual sum accumulates in bf16). Use it only when memory or tiny batches make the casts matter, after
  checking accuracy.

Expected error of bf16 against float32 on the representation (tanh outputs in [-1, 1]): about 1e-2 absolute
(bf16 has an 8-bit mantissa); the tests use ``atol = rtol = 5e-2`` (autocast) and ``1e-1`` (convert).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["InferenceMode", "InferencePrecision", "bf16_is_fast", "prepare_for_inference"]

InferencePrecision = Literal["float32", "bfloat16"]
InferenceMode = Literal["autocast", "convert"]

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 matmuls are natively accelerated on ``device``.

    CUDA: compute capability >= 8.0 (Ampere and newer). CPU: oneDNN's bf16 check (AVX512-BF16 or AMX); without
    it, bf16 GEMMs take a slow scalar fallback path and float32 is the faster choice.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(dev)[0] >= 8
    if dev.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(check()) if check is not None else False
    return False


def prepare_for_inference(
    model: nn.Module,
    dtype: InferencePrecision = "float32",
    mode: InferenceMode = "autocast",
) -> Callable[..., torch.Tensor]:
    """Return a callable that runs ``model`` for inference (eval mode, ``torch.inference_mode``) in ``dtype``.

    Args:
        model: an encoder (or any module taking float inputs). It is put in eval mode. With ``mode='convert'`` and
            bf16 a converted deep copy is used and ``model`` itself keeps its float32 weights.
        dtype: ``'float32'`` or ``'bfloat16'`` (see the module docstring for which to choose).
        mode: ``'autocast'`` (float32 weights, bf16 compute via ``torch.autocast``) or ``'convert'`` (a bf16 copy
            of the weights; inputs are cast to bf16). Ignored for float32.

    Returns:
        ``run(x, *args, **kwargs)``: calls the model on ``x`` (moved to the model's device, cast as needed) with
        no autograd, and returns its output: float32 for ``'float32'``, bfloat16 for ``'bfloat16'`` (either mode).
        The returned tensors are inference tensors (they cannot be saved for backward).

    Raises:
        ValueError: for an unknown ``dtype`` or ``mode``.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if mode not in ("autocast", "convert"):
        raise ValueError(f"mode must be 'autocast' or 'convert', got {mode!r}")
    model.eval()
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")

    if dtype == "float32" or mode == "autocast":
        target = model
        input_dtype = torch.float32
        autocast = dtype == "bfloat16"
    else:
        # A copy, so that callers keep their float32 model (for training, checkpointing, float32 evaluation).
        target = copy.deepcopy(model).to(torch.bfloat16)
        input_dtype = torch.bfloat16
        autocast = False

    @functools.wraps(target.forward)
    def run(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = x.to(device=device, dtype=input_dtype)
        with torch.inference_mode():
            if autocast:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    return target(x, *args, **kwargs)
            return target(x, *args, **kwargs)

    run.model = target  # type: ignore[attr-defined]  # the module actually run (the bf16 copy for 'convert')
    return run
