"""Inference paths of the encoders: the bf16 helper, and the CPU-fast layouts against the reference arithmetic.

The reference functions below are the straightforward NCHW / 5-D formulations of ``spec/ssrstf.md`` §5.4.3 and
§4 (the implementation before the CPU optimisations); the optimised modules must match them within 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from motion.encoders import SSRA, SSRSTF, DSTformer, DSTformerConfig, SpatioTemporalAttention, SSRSTFConfig
from motion.encoders.dstformer import DSTBlock
from motion.encoders.inference import bf16_is_fast, prepare_for_inference
from motion.encoders.ssrstf import MetaFormerBlock, SSRSTFBlock

J = 17


def _small_ssrstf(**overrides: object) -> SSRSTF:
    return SSRSTF(SSRSTFConfig.from_variant("XS", depth=2, dim=32, num_heads=4, **overrides))


def _small_dstformer() -> DSTformer:
    return DSTformer(DSTformerConfig(dim_feat=32, depth=2, num_heads=4, maxlen=81))


def _randomise(model: nn.Module, scale: float = 0.2, seed: int = 0) -> nn.Module:
    """Random weights everywhere (layer scales and fusion included), so that every path contributes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# Reference (pre-optimisation) arithmetic
# ---------------------------------------------------------------------------------------------------------------


def _reference_ssra(self: SSRA, x: torch.Tensor) -> torch.Tensor:
    if self.joint_perm is not None:
        x = x.index_select(2, self.joint_perm)
    x = x.permute(0, 3, 1, 2).contiguous()  # (B, C, T, J), NCHW
    u = self.act(self.proj_in(x))
    local = self.local_t(self.local_s(u))
    glob = self.dilated_t(self.dilated_s(local))
    if self.selective:
        sel = torch.cat([self.select_local(local), self.select_global(glob)], dim=1)
        half = sel.shape[1] // 2
        masks = torch.sigmoid(self.select_mask(torch.cat([sel.mean(1, keepdim=True), sel.amax(1, keepdim=True)], 1)))
        attn = self.proj_attn(masks[:, 0:1] * sel[:, :half] + masks[:, 1:2] * sel[:, half:])
    else:
        attn = self.proj_attn(glob)
    y = (self.proj_out(u * attn) + x).permute(0, 2, 3, 1)
    if self.joint_perm_inv is not None:
        y = y.index_select(2, self.joint_perm_inv)
    return y


def _reference_attention(self: SpatioTemporalAttention, x: torch.Tensor) -> torch.Tensor:
    B, T, J_, C = x.shape
    h = self.num_heads
    qkv = self.qkv(x).reshape(B, T, J_, 3, h, C // h)
    perm = (3, 0, 1, 4, 2, 5) if self.mode == "spatial" else (3, 0, 2, 4, 1, 5)
    q, k, v = qkv.permute(perm)
    attn = ((q * (C // h) ** -0.5) @ k.transpose(-1, -2)).softmax(-1)
    out = (attn @ v).permute((0, 1, 3, 2, 4) if self.mode == "spatial" else (0, 3, 1, 2, 4))
    return self.proj(out.reshape(B, T, J_, C))


def _reference_metaformer(self: MetaFormerBlock, x: torch.Tensor) -> torch.Tensor:
    x = x + self.layer_scale_1 * self.mixer(self.norm1(x))
    return x + self.layer_scale_2 * self.mlp(self.norm2(x))


def _reference_ssrstf_block(self: SSRSTFBlock, x: torch.Tensor) -> torch.Tensor:
    if self.channel_split:
        half = x.shape[-1] // 2
        x_g = self.att_temporal(self.att_spatial(x[..., :half]))
        return torch.cat([x_g, self._local(x[..., half:] + x_g)], dim=-1)
    x_g = self.att_temporal(self.att_spatial(x))
    x_l = self._local(x)
    alpha = self.fusion(torch.cat([x_g, x_l], dim=-1)).softmax(dim=-1)
    return alpha[..., 0:1] * x_g + alpha[..., 1:2] * x_l


def _reference_dst_spatial(self: DSTBlock, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn_s(self.norm1_s(x))
    return x + self.mlp_s(self.norm2_s(x))


def _reference_dst_temporal(self: DSTBlock, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn_t(self.norm1_t(x))
    return x + self.mlp_t(self.norm2_t(x))


def _reference_dst_rep(self: DSTformer, x: torch.Tensor) -> torch.Tensor:
    x = self.joints_embed(x) + self.pos_embed + self.temp_embed[:, : x.shape[1]]
    for idx, (blk_st, blk_ts) in enumerate(zip(self.blocks_st, self.blocks_ts, strict=True)):
        x_st, x_ts = blk_st(x), blk_ts(x)
        alpha = self.ts_attn[idx](torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)
        x = x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]
    return self.pre_logits(self.norm(x))


def _reference_output(model: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setattr(SSRA, "forward", _reference_ssra)
        m.setattr(SpatioTemporalAttention, "forward", _reference_attention)
        m.setattr(MetaFormerBlock, "forward", _reference_metaformer)
        m.setattr(SSRSTFBlock, "forward", _reference_ssrstf_block)
        m.setattr(DSTBlock, "_spatial", _reference_dst_spatial)
        m.setattr(DSTBlock, "_temporal", _reference_dst_temporal)
        m.setattr(DSTformer, "get_representation", _reference_dst_rep)
        with torch.no_grad():
            return model(x, return_rep=True)


CONFIGS = [
    {},
    {"ssr_layout": "plane2", "joint_perm": list(range(16, -1, -1))},
    {"ssr_layout": "plane1", "ssra_selective": False},
    {"channel_split": True, "kernel_t": 23},
]


@pytest.mark.parametrize("overrides", CONFIGS)
@pytest.mark.parametrize(("B", "T"), [(2, 16), (1, 81), (3, 5)])
def test_ssrstf_matches_reference_arithmetic(overrides: dict, B: int, T: int, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _randomise(_small_ssrstf(**overrides))
    x = torch.randn(B, T, J, 3, generator=torch.Generator().manual_seed(1))
    ref = _reference_output(model, x, monkeypatch)
    with torch.no_grad():
        out = model(x, return_rep=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_ssrstf_b_matches_reference_with_chunked_mlp(monkeypatch: pytest.MonkeyPatch) -> None:
    # B's real width and a clip long enough (T=81: 1377 tokens > 2 chunks of 512) for the chunked MLP path.
    model = _randomise(SSRSTF(SSRSTFConfig.from_variant("B", depth=1)), scale=0.05)
    x = torch.randn(1, 81, J, 3, generator=torch.Generator().manual_seed(2))
    ref = _reference_output(model, x, monkeypatch)
    with torch.no_grad():
        out = model(x, return_rep=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("B", "T"), [(2, 16), (1, 81)])
def test_dstformer_matches_reference_arithmetic(B: int, T: int, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _randomise(DSTformer(DSTformerConfig(dim_feat=64, depth=2, num_heads=4, maxlen=81)), scale=0.1)
    x = torch.randn(B, T, J, 3, generator=torch.Generator().manual_seed(3))
    ref = _reference_output(model, x, monkeypatch)
    with torch.no_grad():
        out = model(x, return_rep=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_chunked_inference_equals_autograd_path() -> None:
    # token_chunked only splits without autograd: the training path (one call) must give the same numbers.
    model = _randomise(SSRSTF(SSRSTFConfig.from_variant("B", depth=1)), scale=0.05)
    x = torch.randn(1, 81, J, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        chunked = model(x, return_rep=True)
    whole = model(x, return_rep=True).detach()
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# prepare_for_inference
# ---------------------------------------------------------------------------------------------------------------

# bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%); through a few layers the representation (tanh, in
# [-1, 1]) drifts by ~1e-2. Autocast keeps norms and softmax in float32; convert does not, hence its looser bound.
BF16_TOL = {"autocast": 5e-2, "convert": 1e-1}


@pytest.mark.parametrize("make", [_small_ssrstf, _small_dstformer])
@pytest.mark.parametrize("mode", ["autocast", "convert"])
def test_bf16_close_to_float32(make, mode: str) -> None:
    torch.manual_seed(0)
    model = make()
    x = torch.randn(2, 16, J, 3)
    ref = prepare_for_inference(model, "float32")(x, return_rep=True)
    low = prepare_for_inference(model, "bfloat16", mode=mode)(x, return_rep=True)
    assert ref.dtype == torch.float32
    assert low.dtype == torch.bfloat16
    assert low.shape == ref.shape
    assert torch.isfinite(low).all()
    tol = BF16_TOL[mode]
    torch.testing.assert_close(low.float(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mode", ["autocast", "convert"])
def test_prepared_call_has_no_grad_and_leaves_model_float32(dtype: str, mode: str) -> None:
    model = _small_ssrstf().train()
    run = prepare_for_inference(model, dtype, mode=mode)  # type: ignore[arg-type]
    out = run(torch.randn(1, 8, J, 3))
    assert not out.requires_grad
    assert out.grad_fn is None
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.dtype == (torch.bfloat16 if (dtype, mode) == ("bfloat16", "convert") else torch.float32)
               for p in run.model.parameters())
    assert out.shape == (1, 8, J, 3)


def test_prepared_call_casts_inputs_and_passes_kwargs() -> None:
    model = _small_dstformer()
    run = prepare_for_inference(model, "float32")
    x = torch.randn(1, 8, J, 3, dtype=torch.float64)
    assert run(x).dtype == torch.float32
    assert run(x, return_rep=True).shape == (1, 8, J, 512)


def test_bad_arguments_are_rejected() -> None:
    model = _small_ssrstf()
    with pytest.raises(ValueError, match="dtype"):
        prepare_for_inference(model, "float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        prepare_for_inference(model, "bfloat16", mode="jit")  # type: ignore[arg-type]


def test_bf16_is_fast_returns_bool() -> None:
    assert isinstance(bf16_is_fast("cpu"), bool)
    assert isinstance(bf16_is_fast("meta"), bool)
