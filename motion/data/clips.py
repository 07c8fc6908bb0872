"""Cutting per-frame arrays into fixed-length clips that never cross a track boundary.

Unlike MotionBERT's ``split_clips`` (docs/protocols.md, clips), no frame is dropped: the tail of a track gets one extra
window aligned to its end, tracks shorter than a clip are stretched by repeating frames evenly, and the last track
is handled like any other. Evaluation averages each frame's predictions over the clips that contain it, so
overlapping tail windows and repeated frames do not bias per-frame metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def track_bounds(source: np.ndarray | list[str]) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of runs of equal ``source`` values (frames of one track are contiguous)."""
    src = np.asarray(source)
    if len(src) == 0:
        return []
    change = np.nonzero(src[1:] != src[:-1])[0] + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(src)]])
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def clip_indices(source: np.ndarray | list[str], clip_len: int, stride: int) -> np.ndarray:
    """Frame indices of every clip: ``(num_clips, clip_len)`` int64.

    Within each track, windows start every ``stride`` frames; if the last window does not reach the end of the
    track, one more window ending at the last frame is added; a track shorter than ``clip_len`` yields one clip of
    evenly repeated frames (indices non-decreasing, first and last frame included).
    """
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got {clip_len}, {stride}")
    clips = []
    for start, end in track_bounds(source):
        length = end - start
        if length < clip_len:
            clips.append(start + np.floor(np.linspace(0, length - 1e-9, clip_len)).astype(np.int64))
            continue
        starts = list(range(start, end - clip_len + 1, stride))
        if starts[-1] + clip_len < end:
            starts.append(end - clip_len)
        clips.extend(np.arange(s, s + clip_len) for s in starts)
    if not clips:
        return np.zeros((0, clip_len), dtype=np.int64)
    return np.stack(clips).astype(np.int64)


class ClipBatches(Dataset):
    """Whole training batches of one or more clip datasets, each gathered with one vectorised index per array.

    ``batches`` lists global item indices into the concatenation of ``datasets`` (as ``ConcatDataset`` numbers them);
    every dataset has ``gather(local_indices) -> {name: array (B, ...)}``. Use with ``DataLoader(batch_size=None)``:
    a batch costs one fancy index per array instead of B item reads and a collate, which kept a GPU waiting.
    """

    def __init__(self, datasets: Sequence[Any], batches: Sequence[Sequence[int]]) -> None:
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self.batches = [np.asarray(b, dtype=np.int64) for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        items = self.batches[i]
        which = np.searchsorted(self.offsets, items, side="right") - 1
        out: dict[str, np.ndarray] = {}
        for d in np.unique(which):
            pos = np.nonzero(which == d)[0]
            for key, value in self.datasets[d].gather(items[pos] - self.offsets[d]).items():
                if key not in out:
                    out[key] = np.empty((len(items), *value.shape[1:]), dtype=value.dtype)
                out[key][pos] = value
        return {key: torch.from_numpy(value) for key, value in out.items()}


def batch_lists(order: Sequence[int], batch_size: int, start_step: int = 0, drop_last: bool = True
                ) -> list[list[int]]:
    """Batches of ``order`` from batch ``start_step`` on; the incomplete tail is dropped (training) or kept."""
    n = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
    return [list(order[k * batch_size:(k + 1) * batch_size]) for k in range(start_step, n)]
