"""A restricted unpickler for SMPL model files and dataset pickles.

Official SMPL ``.pkl`` files, the 3DPW release and MotionBERT's preprocessed pickles contain only numpy arrays,
scipy sparse matrices, builtin containers and (SMPL) chumpy arrays. This unpickler admits exactly those: any other
global (``os.system``, ``builtins.eval``, a class with a malicious ``__reduce__``...) raises
:class:`UnsafePickleError` before it can run. chumpy objects become plain numpy arrays and sparse matrices become
dense arrays, so neither chumpy nor a particular scipy version is needed.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list (it could run arbitrary code)."""


class _Placeholder:
    """Stands in for a class we refuse to import (chumpy arrays, sparse matrices); keeps its pickled state."""

    kind = "object"

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChumpyArray(_Placeholder):
    kind = "chumpy"


class _SparseMatrix(_Placeholder):
    kind = "sparse"


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    # copyreg._reconstructor, restricted to our placeholders: the real one can instantiate anything.
    if not (isinstance(cls, type) and issubclass(cls, _Placeholder)) or base is not object:
        raise UnsafePickleError(f"refusing to reconstruct {cls!r} from {base!r}")
    return cls.__new__(cls)


# numpy 2 moved numpy.core to numpy._core; pickles written with numpy 1.x name the old path.
_NUMPY_MULTIARRAY = {"_reconstruct", "scalar"}
_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}
_SPARSE_MODULES = {"scipy.sparse", "scipy.sparse.csc", "scipy.sparse.csr", "scipy.sparse.coo",
                   "scipy.sparse._csc", "scipy.sparse._csr", "scipy.sparse._coo"}
_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "complex": complex, "slice": slice,
             "bytearray": bytearray}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits numpy arrays/dtypes, sparse matrices, chumpy and builtins."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 module names (these files are Python 2 pickles).
        module = {"copy_reg": "copyreg", "__builtin__": "builtins"}.get(module, module)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in _NUMPY_MULTIARRAY:
            return getattr(np._core.multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module.startswith("numpy") and name == "dtype":
            return np.dtype
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return np._core.numeric._frombuffer
        if module == "_codecs" and name == "encode":  # Python 3 protocol <= 2 writes bytes this way
            return codecs.encode
        if module == "copyreg" and name == "_reconstructor":
            return _reconstructor
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return _SparseMatrix
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        raise UnsafePickleError(f"refusing to load global {module}.{name}")


def _convert(obj: Any) -> Any:
    """Replace placeholders by numpy arrays, recursively through dicts, lists and tuples."""
    if isinstance(obj, _ChumpyArray):
        state = getattr(obj, "state", None)
        if not isinstance(state, dict) or "x" not in state:
            raise UnsafePickleError("a chumpy object without a stored value ('x'): not a leaf array")
        return np.asarray(_convert(state["x"]))
    if isinstance(obj, _SparseMatrix):
        state = getattr(obj, "state", None)
        try:
            from scipy.sparse import csc_matrix, csr_matrix
            fmt = state.get("format") or ("csr" if "csr" in type(obj).__name__ else "csc")
            shape = tuple(state.get("_shape") or state["shape"])
            cls = csr_matrix if fmt == "csr" else csc_matrix
            return cls((state["data"], state["indices"], state["indptr"]), shape=shape).toarray()
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise UnsafePickleError(f"a sparse matrix with unreadable state ({err})") from None
    if isinstance(obj, dict):
        return {k: _convert(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        flat = [_convert(v) for v in obj.ravel()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(obj.shape)
    return obj


def safe_load_pickle(path: str | Path) -> Any:
    """Load a pickle through :class:`RestrictedUnpickler` (latin1 for Python 2 pickles).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the file references a disallowed global (message names the file and the global).
        pickle.UnpicklingError: the file is truncated or not a pickle (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with path.open("rb") as fh:
            obj = RestrictedUnpickler(fh, encoding="latin1").load()
        return _convert(obj)
    except UnsafePickleError as err:
        raise UnsafePickleError(
            f"{path}: {err}; only numpy arrays, scipy sparse matrices, chumpy arrays and builtin containers are "
            "allowed (the file may be malicious, or is not a SMPL / dataset pickle)"
        ) from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, MemoryError) as err:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle (truncated or corrupt?): {err}") from None
