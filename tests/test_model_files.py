"""Reading body-model files: official pickles without chumpy, resolution order, and clear errors on bad input."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fake_smpl import fake_smpl_arrays, write_npz, write_official_pkl

from body_models import BodyModelFileError, UnsafePickleError, load_mean_params, load_model_data, safe_load_pickle
from body_models.loading import DEFAULT_MODEL, ENV_VAR, resolve_model_path


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return fake_smpl_arrays(300, seed=3)


@pytest.mark.parametrize("protocol", [0, 2])
def test_official_pickle_loads_without_chumpy(tmp_path: Path, arrays: dict[str, np.ndarray], protocol: int) -> None:
    path = write_official_pkl(arrays, tmp_path / "SMPL_NEUTRAL.pkl", protocol)
    raw = path.read_bytes()
    assert b"chumpy" in raw and b"scipy.sparse.csc" in raw and b"numpy.core.multiarray" in raw
    with pytest.warns(UserWarning, match="approximated from SMPL-24"):
        data = load_model_data(path)
    np.testing.assert_array_equal(data.shapedirs, arrays["shapedirs"])
    np.testing.assert_array_equal(data.J_regressor, arrays["J_regressor"])
    np.testing.assert_array_equal(data.v_template, arrays["v_template"])
    assert data.parents[0] == -1 and data.posedirs is not None


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": Exploit()}))
    with pytest.raises(BodyModelFileError, match=r"SMPL_NEUTRAL\.pkl: refusing to load global pathlib"):
        load_model_data(path)
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # the classic exploit
    with pytest.raises(UnsafePickleError, match="refusing"):
        safe_load_pickle(path)
    assert not marker.exists()


def test_truncated_files(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    npz = write_npz(arrays, tmp_path / "SMPL_NEUTRAL.npz")
    npz.write_bytes(npz.read_bytes()[:1000])
    with pytest.raises(BodyModelFileError, match=r"SMPL_NEUTRAL\.npz: not a readable \.npz"):
        load_model_data(npz)
    pkl = write_official_pkl(arrays, tmp_path / "SMPL_MALE.pkl")
    pkl.write_bytes(pkl.read_bytes()[:5000])
    with pytest.raises(BodyModelFileError, match=r"SMPL_MALE\.pkl: not a readable pickle"):
        load_model_data(pkl)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("shapedirs", np.zeros((300, 3)), r"key 'shapedirs' has shape \(300, 3\), expected \(300, 3, num_betas\)"),
        ("J_regressor", np.zeros((17, 300)), r"key 'J_regressor' has shape \(17, 300\), expected \(24, 300\)"),
        ("weights", None, r"missing key 'weights' \(expected shape \(300, 24\)\)"),
        ("v_template", np.full((300, 3), np.nan), "key 'v_template' contains NaN"),
        ("kintree_table", np.zeros((2, 24)), "not SMPL's 24-joint tree"),
    ],
)
def test_wrong_shapes_name_the_key(tmp_path: Path, arrays: dict[str, np.ndarray], key: str,
                                   value: np.ndarray | None, message: str) -> None:
    bad = dict(arrays)
    if value is None:
        del bad[key]
    else:
        bad[key] = value
    with pytest.raises(BodyModelFileError, match=message):
        load_model_data(write_npz(bad, tmp_path / "model.npz"))


def test_resolution_order(tmp_path: Path, arrays: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_model_path() == DEFAULT_MODEL
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    write_official_pkl(arrays, env_dir / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")
    write_npz(arrays, env_dir / "SMPL_FEMALE.npz")
    monkeypatch.setenv(ENV_VAR, str(env_dir))
    assert resolve_model_path().name == "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    assert resolve_model_path(gender="female").name == "SMPL_FEMALE.npz"
    explicit = write_npz(arrays, tmp_path / "mine.npz")
    assert resolve_model_path(explicit) == explicit  # explicit beats the environment
    with pytest.raises(BodyModelFileError, match=r"from \$SMPL_MODEL_DIR\): no SMPL_MALE\.pkl"):
        resolve_model_path(gender="male")
    with pytest.raises(BodyModelFileError, match=r"nowhere \(from argument\): no such file or folder"):
        resolve_model_path(tmp_path / "nowhere")


def test_h36m_regressor_next_to_model(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = write_npz(arrays, tmp_path / "SMPL_NEUTRAL.npz")
    reg = np.random.default_rng(0).dirichlet(np.ones(300), size=17)
    np.save(tmp_path / "J_regressor_h36m_correct.npy", reg)
    np.testing.assert_array_equal(load_model_data(tmp_path).J_regressor_h36m, reg)
    np.save(tmp_path / "J_regressor_h36m_correct.npy", reg[:, :200])
    with pytest.raises(BodyModelFileError, match=r"has shape \(17, 200\), expected \(17, 300\)"):
        load_model_data(path)


def test_mean_params(tmp_path: Path) -> None:
    fallback = load_mean_params()
    assert fallback.pose6d.shape == (24, 6) and not fallback.betas.any()
    spin = tmp_path / "smpl_mean_params.npz"
    np.savez(spin, pose=np.arange(144.0), shape=np.ones(10), cam=np.zeros(3))
    loaded = load_mean_params(spin)
    np.testing.assert_array_equal(loaded.pose6d[1], np.arange(6.0, 12.0))
    np.savez(spin, pose=np.arange(72.0), shape=np.ones(10))
    with pytest.raises(BodyModelFileError, match=r"key 'pose' has shape \(72,\), expected \(144\)"):
        load_mean_params(spin)
    with zipfile.ZipFile(tmp_path / "broken.npz", "w") as zf:
        zf.writestr("pose.npy", b"garbage")
        zf.writestr("shape.npy", b"garbage")
    with pytest.raises(BodyModelFileError, match=r"broken\.npz: key 'pose' is not a numeric array"):
        load_mean_params(tmp_path / "broken.npz")
    (tmp_path / "cut.npz").write_bytes(spin.read_bytes()[:300])
    with pytest.raises(BodyModelFileError, match=r"cut\.npz: not a readable \.npz"):
        load_mean_params(tmp_path / "cut.npz")
