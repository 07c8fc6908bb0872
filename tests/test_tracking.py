"""Linking untracked detections into people (mesh/io/tracking.py) and the reader's ``track=True``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mesh.io import keypoints as kio
from mesh.io.tracking import box_iou, keypoint_box, link_detections


def test_box_iou_hand_computed() -> None:
    a = np.array([[0.0, 0.0, 2.0, 2.0], [np.nan] * 4])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_keypoint_box_uses_confident_finite_points() -> None:
    kp = np.array([[1.0, 2.0, 0.9], [5.0, 9.0, 0.5], [100.0, 100.0, 0.0], [np.nan, 3.0, 0.9]])
    np.testing.assert_allclose(keypoint_box(kp), [1.0, 2.0, 5.0, 9.0])
    assert np.isnan(keypoint_box(kp[2:])).all()


def _box(x: float, y: float = 0.0, w: float = 100.0) -> list[float]:
    return [x, y, x + w, y + 200.0]


def test_people_keep_their_ids_whatever_the_detection_order() -> None:
    """Two people side by side, listed in a different order every frame; B is missed for 3 frames; A speeds up to
    75 px a frame, where its last box overlaps the next by only 0.14 (moving it on at its velocity keeps the person);
    C returns after a long gap."""
    frames, boxes, who = [], [], []
    for t in range(12):
        dets = [("A", _box(max(75.0 * t - 25.0, 0.0))), ("B", _box(2000.0 + 3 * t))]
        if 5 <= t < 8:
            dets = dets[:1]  # B missed
        if t % 2:
            dets = dets[::-1]
        for name, b in dets:
            frames.append(t), boxes.append(b), who.append(name)
    for t in (0, 1, 30):  # C: seen, then back after 28 frames (more than max_gap): a new person
        frames.append(t), boxes.append(_box(5000.0)), who.append("C")
    ids = link_detections(frames, np.array(boxes), max_gap=10)
    by_name = {n: sorted({int(i) for i, w in zip(ids, who, strict=True) if w == n}) for n in "ABC"}
    assert by_name["A"] == [0] and by_name["B"] == [1]  # ids in order of first appearance
    assert by_name["C"] == [2, 3]
    for t in range(12):  # never two detections of one frame in one track
        in_frame = [int(i) for i, f in zip(ids, frames, strict=True) if f == t]
        assert len(in_frame) == len(set(in_frame))


def test_reader_links_untracked_people(tmp_path: Path) -> None:
    """An untracked AlphaPose-style file (idx = merged-detection lists) with two people whose order swaps."""
    def person(t: int, dx: float) -> list[float]:
        base = np.array([[0, -160], [8, -168], [-8, -168], [16, -164], [-16, -164], [40, -120], [-40, -120],
                         [50, -60], [-50, -60], [55, 0], [-55, 0], [20, 0], [-20, 0], [22, 80], [-22, 80],
                         [24, 160], [-24, 160]], dtype=np.float64)
        xy = base + np.array([300 + dx + 4.0 * t, 360])
        return np.concatenate([xy, np.full((17, 1), 0.8)], axis=1).ravel().tolist()

    dets = []
    for t in range(8):
        pair = [(0.0, [0.0]), (500.0, [[1.0], [2.0]])]
        for dx, idx in (pair if t % 3 != 1 else pair[::-1]):  # the first frame lists the left person first
            dets.append({"image_id": f"{t}.jpg", "category_id": 1, "keypoints": person(t, dx), "score": 2.0,
                         "idx": idx})
    path = tmp_path / "alphapose-results.json"
    path.write_text(json.dumps(dets))
    with pytest.raises(kio.KeypointsError, match="--track"):
        kio.read_keypoints(path, image_size=(1280, 720))
    tracks = kio.read_keypoints(path, image_size=(1280, 720), track=True)
    assert sorted(tracks) == [0, 1]
    for tid, dx in ((0, 0.0), (1, 500.0)):
        np.testing.assert_array_equal(tracks[tid].frames, np.arange(8))
        pelvis_x = tracks[tid].keypoints[:, 0, 0]  # H36M pelvis = mid-hip
        np.testing.assert_allclose(pelvis_x, 300 + dx + 4.0 * np.arange(8), atol=1e-3)
    with pytest.raises(kio.KeypointsError, match="exclude each other"):
        kio.read_keypoints(path, image_size=(1280, 720), track=True, largest=True)


def test_reader_track_keeps_a_files_own_ids(tmp_path: Path) -> None:
    kp = np.tile([600.0, 300.0, 0.9], (17, 1))
    kp[:, :2] += np.arange(34).reshape(17, 2)
    frames = [{"frame_id": t, "instances": [{"keypoints": kp[:, :2].tolist(), "keypoint_scores": kp[:, 2].tolist(),
                                             "track_id": 7}]} for t in range(3)]
    path = tmp_path / "kp.json"
    path.write_text(json.dumps(frames))
    assert sorted(kio.read_keypoints(path, image_size=(1280, 720), track=True)) == [7]
