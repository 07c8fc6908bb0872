"""Validation of per-frame dataset arrays, shared by the lifting and mesh readers: one-line errors naming the file,
split, key, track and frame."""

from __future__ import annotations

import numpy as np


def require_per_frame(raw: dict, key: str, shape: tuple[int, ...], where: str, error: type[Exception]) -> np.ndarray:
    """``raw[key]`` as an array of shape ``(N, *shape)``, or ``error`` saying what is missing or wrong."""
    expected = f"(N, {', '.join(map(str, shape))})"
    if key not in raw:
        raise error(f"{where}: missing key '{key}' (expected shape {expected})")
    arr = np.asarray(raw[key])
    if arr.shape[1:] != shape:
        raise error(f"{where}: '{key}' has shape {arr.shape}, expected {expected}")
    return arr


def check_finite(arr: np.ndarray, key: str, source: np.ndarray, where: str, error: type[Exception]) -> None:
    """Raise ``error`` naming the first frame (and its track and frame within the track) that holds NaN or inf."""
    bad = ~np.isfinite(arr.reshape(len(arr), -1).astype(np.float64)).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        first = int(np.argmax(source == source[i]))
        raise error(f"{where}: NaN/inf in '{key}' at frame {i} (track '{source[i]}', frame {i - first} of the "
                    f"track); {int(bad.sum())} bad frame(s) in all")
