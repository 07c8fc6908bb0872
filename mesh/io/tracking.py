"""Link untracked detections into people across frames.

Detectors run without a tracker (AlphaPose without ``--pose_track``, MMPose top-down without ``--track``) write the
people of each frame in no fixed order. :func:`link_detections` gives every detection a person id: frame by frame,
each person seen in the last ``max_gap`` frames is matched to at most one detection of the new frame by the optimal
assignment (``scipy.optimize.linear_sum_assignment``) on the overlap (IoU) of keypoint boxes, against the person's
last box or that box moved on at its last velocity, whichever overlaps more; a detection left unmatched, or
overlapping less than ``min_iou``, starts a new person.
Ids count from 0 in order of first appearance. This is the simple online IoU tracker of SORT without its Kalman
filter: enough for people who do not cross each other often; a file from a real tracker keeps its own ids.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def keypoint_box(kp: np.ndarray) -> np.ndarray:
    """``(4,)`` x0, y0, x1, y1 around the confident, finite keypoints of ``kp (J, 3)``; all NaN when fewer than 2."""
    ok = np.isfinite(kp[:, :2]).all(axis=1) & (np.nan_to_num(kp[:, 2]) > 0)
    if ok.sum() < 2:
        return np.full(4, np.nan)
    xy = kp[ok, :2]
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a (M, 4)`` with every box in ``b (K, 4)`` (xyxy) -> ``(M, K)``; 0 for NaN boxes."""
    a, b = np.asarray(a, dtype=np.float64)[:, None], np.asarray(b, dtype=np.float64)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area_a + area_b - inter)
    return np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class _Person:
    box: np.ndarray  # last seen box
    frame: int  # last seen frame
    velocity: np.ndarray  # box change per frame at the last match


def link_detections(frames: Sequence[int], boxes: np.ndarray, min_iou: float = 0.2,
                    max_gap: int = 10) -> np.ndarray:
    """A person id for each detection (``(D,)`` int64, from 0 in order of first appearance).

    Args:
        frames: ``(D,)`` frame number of each detection (any order).
        boxes: ``(D, 4)`` xyxy box of each detection (:func:`keypoint_box`; NaN boxes start a person of their own).
        min_iou: the least overlap of a detection with a person's predicted box to continue that person.
        max_gap: a person not seen for more than this many frames is not continued.
    """
    frames = np.asarray(frames, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(frames) != len(boxes):
        raise ValueError(f"{len(frames)} frames for {len(boxes)} boxes")
    ids = np.full(len(frames), -1, dtype=np.int64)
    people: list[_Person] = []
    for frame in np.unique(frames):
        dets = np.flatnonzero(frames == frame)
        live = [i for i, p in enumerate(people) if 0 < frame - p.frame <= max_gap]
        matched: set[int] = set()
        if live:
            last = np.stack([people[i].box for i in live])
            predicted = np.stack([people[i].box + people[i].velocity * (frame - people[i].frame) for i in live])
            # the better of the last and the predicted box: the velocity follows fast motion, the last box
            # survives a jittery detection whose box jumped one frame
            iou = np.maximum(box_iou(last, boxes[dets]), box_iou(predicted, boxes[dets]))
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] < min_iou:
                    continue
                p, d = people[live[r]], dets[c]
                p.velocity = (boxes[d] - p.box) / (frame - p.frame)
                p.box, p.frame = boxes[d], int(frame)
                ids[d] = live[r]
                matched.add(int(d))
        for d in dets:
            if int(d) not in matched:
                ids[d] = len(people)
                people.append(_Person(box=boxes[d], frame=int(frame), velocity=np.zeros(4)))
    return ids
