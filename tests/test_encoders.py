"""Tests of the motion encoders (SSR-STF reconstruction and MotionBERT's DSTformer); fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from motion.encoders import (
    SSRA,
    SSRSTF,
    DSTformer,
    DSTformerConfig,
    SSRFormerBlock,
    SSRSTFBlock,
    SSRSTFConfig,
    STFormerBlock,
    build_encoder,
    config_to_dict,
    count_macs,
    count_parameters,
    encoder_config_from_dict,
)

J = 17


def _meta_ssrstf(variant: str, **overrides: object) -> SSRSTF:
    # Parameter counts need only shapes: build on the meta device (no memory, no init cost).
    with torch.device("meta"):
        return SSRSTF(SSRSTFConfig.from_variant(variant, **overrides))


def _small_ssrstf(**overrides: object) -> SSRSTF:
    kw: dict[str, object] = {"depth": 2, "dim": 32}
    kw.update(overrides)
    return SSRSTF(SSRSTFConfig.from_variant("XS", **kw))


def _small_dstformer(**overrides: object) -> DSTformer:
    kw: dict[str, object] = {"dim_feat": 32, "depth": 2}
    kw.update(overrides)
    return DSTformer(DSTformerConfig(**kw))


# ---------------------------------------------------------------------------------------------------------------
# Parameter budget (spec/ssrstf.md §5.7: exact totals)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "overrides", "expected"),
    [
        ("XS", {}, 2_405_547),
        ("S", {}, 5_176_335),
        ("B", {}, 12_556_131),
        ("L", {}, 20_359_631),
        ("B", {"ssra_selective": False}, 12_288_931),
        ("B", {"ssr_layout": "plane1"}, 9_512_963),
        ("B", {"ssr_layout": "plane2"}, 12_606_563),
    ],
)
def test_ssrstf_parameter_count_exact(variant: str, overrides: dict, expected: int) -> None:
    assert count_parameters(_meta_ssrstf(variant, **overrides)) == expected


def test_ssrstf_closed_forms_per_part() -> None:
    C = 64
    with torch.device("meta"):
        stf = STFormerBlock(C, "spatial")
        ssr_s = SSRFormerBlock(C, 1, 7)
        ssr_t23 = SSRFormerBlock(C, 23, 1)
        ssr_t11 = SSRFormerBlock(C, 11, 1)
        block = SSRSTFBlock(SSRSTFConfig.from_variant("S"))
        model = SSRSTF(SSRSTFConfig.from_variant("S", depth=1))
    assert count_parameters(stf) == 12 * C**2 + 12 * C
    assert count_parameters(ssr_s) == 11.5 * C**2 + 23 * C + 30
    assert count_parameters(ssr_t23) == 11.5 * C**2 + 29 * C + 30
    assert count_parameters(ssr_t11) == 11.5 * C**2 + 25 * C + 30
    assert block.fusion is not None and count_parameters(block.fusion) == 4 * C + 2
    assert count_parameters(block) == 47 * C**2 + 80 * C + 62
    assert count_parameters(model) - count_parameters(block) == 535 * C + 2051


@pytest.mark.parametrize(("variant", "target"), [("base", 42.5e6), ("lite", 16.0e6)])
def test_dstformer_parameter_count(variant: str, target: float) -> None:
    with torch.device("meta"):
        model = DSTformer(DSTformerConfig.from_variant(variant))
    assert abs(count_parameters(model) - target) / target < 0.01


def test_ssrstf_macs_xs_match_spec() -> None:
    # spec §7.1: XS at T=27, batch 1, torch.utils.flop_counter -> 1.11G MACs (attention included).
    cfg = SSRSTFConfig.from_variant("XS")
    macs = count_macs(SSRSTF(cfg), cfg.seq_len)
    assert abs(macs - 1.11e9) / 1.11e9 < 0.005


# ---------------------------------------------------------------------------------------------------------------
# Shapes, any T, no T-sized parameter
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 16, 27])
def test_ssrstf_xs_output_shapes(T: int) -> None:
    torch.manual_seed(0)
    model = SSRSTF(SSRSTFConfig.from_variant("XS")).eval()  # k_t = 11; T = 1 and 16 exercise zero padding
    x = torch.randn(1, T, J, 3)
    with torch.no_grad():
        pose = model(x)
        rep = model(x, return_rep=True)
    assert pose.shape == (1, T, J, 3)
    assert rep.shape == (1, T, J, 512)
    assert torch.isfinite(pose).all() and torch.isfinite(rep).all()
    assert torch.equal(rep, model.get_representation(x))
    assert rep.abs().max() <= 1.0  # after tanh


@pytest.mark.parametrize("T", [1, 16, 27])
def test_dstformer_output_shapes(T: int) -> None:
    model = _small_dstformer().eval()
    x = torch.randn(1, T, J, 3)
    with torch.no_grad():
        assert model(x).shape == (1, T, J, 3)
        assert model(x, return_rep=True).shape == (1, T, J, 512)


def test_short_clip_below_temporal_kernel() -> None:
    # T = 16 < k_t = 23 (mesh clips with the B/L temporal kernel): zero padding, finite output.
    model = _small_ssrstf(kernel_t=23).eval()
    with torch.no_grad():
        rep = model.get_representation(torch.randn(1, 16, J, 3))
    assert rep.shape == (1, 16, J, 512) and torch.isfinite(rep).all()


def test_no_parameter_depends_on_T() -> None:
    model = _small_ssrstf(kernel_t=23).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        assert model(torch.randn(2, 16, J, 3), return_rep=True).shape == (2, 16, J, 512)
        assert model(torch.randn(2, 81, J, 3), return_rep=True).shape == (2, 81, J, 512)
    # Same weights, untouched; and the variant's reference clip length does not size any weight.
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    other = _small_ssrstf(kernel_t=23, seq_len=243)
    assert {k: v.shape for k, v in other.state_dict().items()} == {k: v.shape for k, v in state.items()}


def test_temporal_embedding_option_and_max_len() -> None:
    model = _small_ssrstf(temporal_pos_embed=True, max_len=32).eval()
    assert model.state_dict()["temp_embed"].shape == (1, 32, 1, 32)
    with torch.no_grad():
        assert model(torch.randn(1, 32, J, 3)).shape == (1, 32, J, 3)
        with pytest.raises(ValueError, match="max_len"):
            model(torch.randn(1, 33, J, 3))
    assert "temp_embed" not in _small_ssrstf().state_dict()  # off by default


def test_dstformer_rejects_clips_longer_than_maxlen() -> None:
    model = _small_dstformer(maxlen=20)
    with pytest.raises(ValueError, match="maxlen"):
        model(torch.randn(1, 21, J, 3))


def test_bad_input_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(B, T, 17, 3\)"):
        _small_ssrstf()(torch.randn(1, 8, 16, 3))


# ---------------------------------------------------------------------------------------------------------------
# Semantics: local vs global temporal mixing, fusion, options
# ---------------------------------------------------------------------------------------------------------------


def _frame0_influence(block: torch.nn.Module, T: int = 40) -> tuple[float, float]:
    """Change frame 0 of the input; return the max output change at frame T-1 and at frame 1."""
    torch.manual_seed(0)
    x = torch.randn(1, T, J, 16)
    x2 = x.clone()
    x2[:, 0] += torch.randn(1, J, 16)
    with torch.no_grad():
        d = (block(x) - block(x2)).abs()
    return d[:, -1].max().item(), d[:, 1].max().item()


def test_ssra_temporal_mixer_is_local_and_attention_is_global() -> None:
    # SSR_t with k_t = 23 sees +-14 frames (local 5, dilated 7 with d=3: +-11; selective mask 7: +-3 more).
    # Layer scale 1 so that mixer effects are far above float32 rounding.
    torch.manual_seed(0)
    ssr_t = SSRFormerBlock(16, kernel_t=23, kernel_s=1, layer_scale_init=1.0).eval()
    far, near = _frame0_influence(ssr_t)
    assert far == 0.0
    assert near > 1e-3
    stf_t = STFormerBlock(16, "temporal", num_heads=4, layer_scale_init=1.0).eval()
    far, _ = _frame0_influence(stf_t)
    assert far > 1e-3


def test_spatial_sub_blocks_do_not_mix_frames() -> None:
    for block in (
        SSRFormerBlock(16, kernel_t=1, kernel_s=7, layer_scale_init=1.0),
        STFormerBlock(16, "spatial", num_heads=4, layer_scale_init=1.0),
    ):
        far, near = _frame0_influence(block.eval())
        assert far == 0.0 and near == 0.0


def test_fusion_init_gives_equal_weights() -> None:
    torch.manual_seed(0)
    cfg = SSRSTFConfig.from_variant("XS", dim=16, depth=1, layer_scale_init=1.0)
    block = SSRSTFBlock(cfg).eval()
    assert block.fusion is not None
    assert torch.equal(block.fusion.weight, torch.zeros(2, 32))
    assert torch.equal(block.fusion.bias, torch.full((2,), 0.5))
    x = torch.randn(2, 12, J, 16)
    with torch.no_grad():
        x_g = block.att_temporal(block.att_spatial(x))
        assert block.ssr_temporal is not None
        x_l = block.ssr_temporal(block.ssr_spatial(x))
        torch.testing.assert_close(block(x), 0.5 * (x_g + x_l))
    dst = _small_dstformer()
    assert dst.ts_attn is not None
    for lin in dst.ts_attn:
        assert torch.equal(lin.weight, torch.zeros_like(lin.weight))
        assert torch.equal(lin.bias, torch.full((2,), 0.5))


def test_joint_perm_permutes_the_joint_axis_only() -> None:
    torch.manual_seed(0)
    perm = [0, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 1, 2, 3, 4, 5, 6]
    plain = SSRA(16, kernel_t=1, kernel_s=7)
    permuted = SSRA(16, kernel_t=1, kernel_s=7, joint_perm=perm)
    permuted.load_state_dict(plain.state_dict())  # the permutation is not a weight
    assert set(plain.state_dict()) == set(permuted.state_dict())
    x = torch.randn(2, 5, J, 16)
    inv = torch.argsort(torch.tensor(perm))
    with torch.no_grad():
        expected = plain(x[:, :, perm])[:, :, inv]
        torch.testing.assert_close(permuted(x), expected)
        assert not torch.allclose(permuted(x), plain(x))
    with pytest.raises(ValueError, match="joint_perm"):
        SSRSTFConfig.from_variant("XS", joint_perm=[0] * 17)


@pytest.mark.parametrize(
    "overrides",
    [
        {"ssr_layout": "plane2"},
        {"ssr_layout": "plane1"},
        {"ssra_selective": False},
        {"channel_split": True},
        {"kernel_s": 3, "kernel_t": 35},
    ],
)
def test_options_run(overrides: dict) -> None:
    model = _small_ssrstf(**overrides).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 9, J, 3)).shape == (1, 9, J, 3)


@pytest.mark.parametrize("make", [_small_ssrstf, lambda: _small_ssrstf(channel_split=True), _small_dstformer])
def test_every_parameter_gets_a_gradient(make) -> None:
    # No unused parameter (DDP would need find_unused_parameters otherwise).
    model = make()
    model(torch.randn(1, 6, J, 3)).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_stc_global_stream_not_implemented() -> None:
    with pytest.raises(NotImplementedError, match="global_stream"):
        _small_ssrstf(global_stream="stc")


# ---------------------------------------------------------------------------------------------------------------
# Precision and devices
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_small_ssrstf, _small_dstformer])
def test_bf16_autocast_cpu_close_to_float32(make) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 16, J, 3)
    with torch.no_grad():
        ref = model(x, return_rep=True)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            low = model(x, return_rep=True)
    assert low.dtype == torch.bfloat16
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", [_small_ssrstf, _small_dstformer])
def test_cuda_matches_cpu(make) -> None:
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(1, 16, J, 3)
    with torch.no_grad():
        ref = model(x)
        out = model.to("cuda")(x.to("cuda"))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# MotionBERT layout and registry
# ---------------------------------------------------------------------------------------------------------------


def _motionbert_keys(depth: int = 5) -> list[str]:
    """MotionBERT DSTformer ``model_pos`` keys (mesh_protocol §5, ssrstf §6), in its module registration order."""
    block = [
        "norm1_s.weight", "norm1_s.bias", "norm1_t.weight", "norm1_t.bias",
        "attn_s.proj.weight", "attn_s.proj.bias", "attn_s.qkv.weight", "attn_s.qkv.bias",
        "attn_t.proj.weight", "attn_t.proj.bias", "attn_t.qkv.weight", "attn_t.qkv.bias",
        "norm2_s.weight", "norm2_s.bias", "norm2_t.weight", "norm2_t.bias",
        "mlp_s.fc1.weight", "mlp_s.fc1.bias", "mlp_s.fc2.weight", "mlp_s.fc2.bias",
        "mlp_t.fc1.weight", "mlp_t.fc1.bias", "mlp_t.fc2.weight", "mlp_t.fc2.bias",
    ]  # fmt: skip
    keys = ["temp_embed", "pos_embed", "joints_embed.weight", "joints_embed.bias"]
    for stream in ("blocks_st", "blocks_ts"):
        keys += [f"{stream}.{i}.{k}" for i in range(depth) for k in block]
    keys += ["norm.weight", "norm.bias", "pre_logits.fc.weight", "pre_logits.fc.bias", "head.weight", "head.bias"]
    keys += [f"ts_attn.{i}.{k}" for i in range(depth) for k in ("weight", "bias")]
    return keys


def test_dstformer_state_dict_matches_motionbert_layout() -> None:
    with torch.device("meta"):
        model = DSTformer()
    state = model.state_dict()
    assert list(state) == _motionbert_keys(5)
    C = 512
    assert state["temp_embed"].shape == (1, 243, 1, C)
    assert state["pos_embed"].shape == (1, 17, C)
    assert state["blocks_st.0.attn_s.qkv.bias"].shape == (3 * C,)
    assert state["blocks_ts.4.mlp_t.fc1.weight"].shape == (2 * C, C)  # mlp_ratio 2
    assert state["ts_attn.0.weight"].shape == (2, 2 * C)
    assert state["pre_logits.fc.weight"].shape == (512, C)
    assert state["head.weight"].shape == (3, 512)
    assert model.norm.eps == 1e-6


def test_ssrstf_state_dict_names() -> None:
    keys = set(_small_ssrstf().state_dict())
    for k in (
        "joints_embed.weight", "pos_embed", "norm.weight", "rep_logit.fc.weight", "head.weight",
        "layers.1.fusion.weight", "layers.0.att_spatial.mixer.qkv.weight", "layers.0.att_temporal.layer_scale_1",
        "layers.0.ssr_spatial.mixer.local_s.weight", "layers.0.ssr_temporal.mixer.dilated_t.weight",
        "layers.0.ssr_temporal.mixer.select_mask.weight", "layers.0.ssr_spatial.mlp.fc2.bias",
    ):  # fmt: skip
        assert k in keys, k
    assert "layers.0.att_spatial.mixer.qkv.bias" not in keys  # qkv_bias False


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="bogus_key"):
        encoder_config_from_dict("ssrstf", {"variant": "XS", "bogus_key": 1})
    with pytest.raises(ValueError, match="dim"):
        encoder_config_from_dict("dstformer", {"dim": 256})  # MotionBERT calls it dim_feat
    with pytest.raises(ValueError, match="unknown encoder arch"):
        build_encoder("resnet", {})
    with pytest.raises(TypeError, match="depth"):
        encoder_config_from_dict("ssrstf", {"depth": "12"})


def test_registry_builds_and_round_trips() -> None:
    d = {"variant": "xs", "depth": 2, "dim": 32, "ssr_layout": "plane1"}
    model = build_encoder("ssrstf", d)
    assert isinstance(model, SSRSTF) and model.config.variant == "XS" and model.config.kernel_t == 11
    again = encoder_config_from_dict("ssrstf", config_to_dict(model.config))
    assert again == model.config
    dst = build_encoder("dstformer", DSTformerConfig(dim_feat=32, depth=1))
    assert isinstance(dst, DSTformer)
    assert encoder_config_from_dict("dstformer", config_to_dict(dst.config)) == dst.config
    with pytest.raises(ValueError, match="ssr_layout"):
        SSRSTFConfig.from_variant("B", ssr_layout="diagonal")
