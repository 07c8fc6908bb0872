"""BodyModel: agreement with smplx.SMPL, shape-once-per-clip equivalence, batching, dtypes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from fake_smpl import fake_smpl_arrays, write_npz
from smplx.utils import Struct

from body_models import BodyModel, load_body_model
from body_models.rotations import axis_angle_to_rotmat


@pytest.fixture(scope="module")
def smpl_sized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smpl")
    write_npz(fake_smpl_arrays(6890, seed=1), folder / "SMPL_NEUTRAL.npz")
    np.save(folder / "J_regressor_h36m_correct.npy", np.random.default_rng(2).dirichlet(np.ones(6890), size=17))
    return folder


def random_pose(*batch: int, scale: float = 0.4, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return axis_angle_to_rotmat(torch.randn(*batch, 24, 3, generator=g, dtype=dtype) * scale)


def test_matches_smplx_smpl(smpl_sized: Path) -> None:
    # atol 1e-7: smplx rounds its arrays to float32 before use, we round after precomputing joint blend shapes
    ours = BodyModel.from_file(smpl_sized).double()
    arrays = dict(np.load(smpl_sized / "SMPL_NEUTRAL.npz"))
    ref = smplx.SMPL(str(smpl_sized), data_struct=Struct(**arrays), dtype=torch.float64, num_betas=10)
    rot = random_pose(5)
    betas = torch.randn(5, 10, dtype=torch.float64)
    out = ours(rot, betas)
    expect = ref(global_orient=rot[:, :1], body_pose=rot[:, 1:], betas=betas, pose2rot=False)
    torch.testing.assert_close(out.vertices, expect.vertices, atol=1e-7, rtol=0)
    torch.testing.assert_close(out.joints, expect.joints[:, :24], atol=1e-7, rtol=0)
    h36m = torch.as_tensor(np.load(smpl_sized / "J_regressor_h36m_correct.npy"))
    torch.testing.assert_close(out.joints_h36m, torch.einsum("jv,bvc->bjc", h36m, expect.vertices), atol=1e-7, rtol=0)


def test_shape_once_per_clip_equals_per_frame(smpl_sized: Path) -> None:
    body = BodyModel.from_file(smpl_sized).double()
    rot = random_pose(3, 16)
    betas = torch.randn(3, 1, 10, dtype=torch.float64)
    per_clip = body(rot, betas)
    per_frame = body(rot, betas.expand(3, 16, 10).contiguous())
    for a, b in [(per_clip.vertices, per_frame.vertices), (per_clip.joints, per_frame.joints),
                 (per_clip.joints_h36m, per_frame.joints_h36m)]:
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-6
    # and float32 stays within the 1e-6 (metres) of float64 up to float32 rounding of the inputs
    f32 = BodyModel.from_file(smpl_sized)(rot.float(), betas.float())
    assert (f32.vertices.double() - per_frame.vertices).abs().max() < 1e-5


def test_any_batch_shape_translation_and_axis_angle(smpl_sized: Path) -> None:
    body = BodyModel.from_file(smpl_sized).double()
    pose = torch.randn(2, 3, 72, dtype=torch.float64) * 0.3
    betas = torch.randn(10, dtype=torch.float64)
    transl = torch.tensor([0.1, -0.2, 3.0], dtype=torch.float64)
    out = body.forward_axis_angle(pose, betas, transl)
    assert out.vertices.shape == (2, 3, 6890, 3) and out.joints.shape == (2, 3, 24, 3)
    assert out.joints_h36m.shape == (2, 3, 17, 3)
    flat = body.forward_axis_angle(pose.reshape(6, 24, 3), betas.expand(6, 10))
    torch.testing.assert_close(out.vertices.reshape(6, 6890, 3) - transl, flat.vertices)
    single = body(random_pose(), torch.zeros(10, dtype=torch.float64))
    assert single.vertices.shape == (6890, 3)


def test_zero_pose_is_rest_shape(smpl_sized: Path) -> None:
    body = BodyModel.from_file(smpl_sized).double()
    betas = torch.randn(4, 10, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(4, 24, 3, 3)
    out = body(eye, betas)
    verts, joints = body.rest_shape(betas)
    torch.testing.assert_close(out.vertices, verts)
    torch.testing.assert_close(out.joints, joints)


def test_bad_betas_and_rotmats(smpl_sized: Path) -> None:
    body = BodyModel.from_file(smpl_sized)
    with pytest.raises(ValueError, match="do not broadcast"):
        body(random_pose(4, 16, dtype=torch.float32), torch.zeros(4, 10))
    with pytest.raises(ValueError, match="rotmats must be"):
        body(torch.zeros(4, 23, 3, 3), torch.zeros(4, 10))
    with pytest.raises(ValueError, match="betas must end in 10"):
        body(random_pose(4, dtype=torch.float32), torch.zeros(4, 11))


def test_checkpoint_does_not_store_the_body_model(smpl_sized: Path) -> None:
    assert BodyModel.from_file(smpl_sized).state_dict() == {}


def test_default_model_loads_through_the_same_code() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default carries its own H36M regressor: no fallback warning
        body = load_body_model()
    assert "embedded default" in body.source
    out = body(torch.eye(3).expand(24, 3, 3), torch.zeros(10))
    assert torch.isfinite(out.vertices).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(smpl_sized: Path) -> None:
    body = BodyModel.from_file(smpl_sized)
    rot, betas = random_pose(2, 8, dtype=torch.float32), torch.randn(2, 1, 10)
    cpu = body(rot, betas)
    gpu = body.to("cuda")(rot.cuda(), betas.cuda())
    assert (gpu.vertices.cpu() - cpu.vertices).abs().max() < 1e-4


def test_grouped_skinning_without_correctives_matches_per_frame() -> None:
    """The default model has no pose correctives, so one shape per clip takes the grouped (M @ A) path."""
    body = load_body_model().double()
    rot = random_pose(3, 16, seed=3)
    betas = torch.randn(3, 1, 10, dtype=torch.float64)
    per_clip, per_frame = body(rot, betas), body(rot, betas.expand(3, 16, 10).contiguous())
    assert (per_clip.vertices - per_frame.vertices).abs().max() < 1e-6
    assert (per_clip.joints_h36m - per_frame.joints_h36m).abs().max() < 1e-6
    # shapes shared across the *first* batch dim are not consecutive runs: the general path must agree too
    shared_over_clips = torch.randn(16, 10, dtype=torch.float64)
    a = body(rot, shared_over_clips)
    b = body(rot, shared_over_clips.expand(3, 16, 10).contiguous())
    assert (a.vertices - b.vertices).abs().max() < 1e-6
