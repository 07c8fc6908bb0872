"""A random but valid SMPL-form model of SMPL's exact tensor shapes, written in the official file layouts.

Real SMPL files are licensed and cannot be in the repo; these fakes exercise the same code paths: the official
Python-2-style pickle (chumpy ``shapedirs``, scipy-sparse ``J_regressor`` under old module paths) and ``.npz``.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from body_models import SMPL24


def fake_smpl_arrays(num_vertices: int = 6890, seed: int = 0, posedirs: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = num_vertices
    v_template = rng.normal(scale=[0.2, 0.5, 0.1], size=(v, 3))
    j_reg = np.zeros((24, v))
    for j in range(24):
        idx = rng.choice(v, size=12, replace=False)
        j_reg[j, idx] = rng.random(12)
    j_reg /= j_reg.sum(axis=1, keepdims=True)
    weights = np.zeros((v, 24))
    for i in range(v):
        idx = rng.choice(24, size=4, replace=False)
        weights[i, idx] = rng.random(4)
    weights /= weights.sum(axis=1, keepdims=True)
    kintree = np.stack([np.array(SMPL24.parents, dtype=np.int64), np.arange(24)])
    kintree[0, 0] = 4294967295  # as in the official files (uint32 max)
    arrays = {
        "v_template": v_template,
        "shapedirs": rng.normal(scale=0.01, size=(v, 3, 10)),
        "J_regressor": j_reg,
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, v, size=(2 * v - 4, 3), dtype=np.int64),
    }
    if posedirs:
        arrays["posedirs"] = rng.normal(scale=0.005, size=(v, 3, 207))
    return arrays


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> Path:
    np.savez(path, **arrays)
    return path


def write_official_pkl(arrays: dict[str, np.ndarray], path: Path, protocol: int = 2) -> Path:
    """Pickle like the official SMPL release: chumpy ``shapedirs``, sparse ``J_regressor``, numpy-1.x paths."""
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:  # the leaf chumpy array: its value lives in __dict__['x']
        pass

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    chumpy_ch.Ch = Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        data = dict(arrays)
        shapedirs = Ch()
        shapedirs.__dict__.update({"x": arrays["shapedirs"], "_depends_on_deps": {}})
        data["shapedirs"] = shapedirs
        data["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
        data["kintree_table"] = arrays["kintree_table"].astype(np.uint32)
        data["f"] = arrays["f"].astype(np.uint32)
        data["bs_style"] = "lbs"
        raw = pickle.dumps(data, protocol=protocol)
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod
    # Module paths as written by numpy 1.x and old scipy (the files date from 2015).
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray").replace(b"scipy.sparse._csc",
                                                                                   b"scipy.sparse.csc")
    path.write_bytes(raw)
    return path
