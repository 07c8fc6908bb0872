"""Read 2D detector output into per-person tracks of H36M-17 keypoints (pixels + confidence).

:func:`read_keypoints` returns ``{track_id: Track}``; each :class:`Track` has ``frames (N,)`` (video frame numbers
where the person was detected, strictly increasing, gaps allowed), ``keypoints (N, 17, 3)`` (H36M-17 x, y in pixels,
confidence) and ``image_size`` (w, h) or None. Conversion to H36M-17 uses :func:`body_models.convert_keypoints`
with the rule the model was trained on (``conversion``, which ``mesh.infer`` reads from the checkpoint: "fitted",
weights that land on the joint centres, the shipped models' rule; or "midpoint", MotionBERT's and this function's
default: COCO-17 pelvis = mid-hip, thorax = mid-shoulder,
spine = mid(pelvis, thorax), head = mid-eye; Halpe-26 ``halpe2h36m``; see docs/protocols.md, joint sets).

Accepted inputs (``fmt`` = the joint order: ``coco`` (COCO-17), ``halpe`` (Halpe-26), ``h36m`` (H36M-17); ``auto``
picks it from the keypoint count: 17 = COCO in JSON, H36M in ``.npy``/``.npz``; 26 = Halpe):

**JSON** (``.json``; ``.jsonl`` / JSON Lines = one frame record per line). The file is a list of *records*, or a
dict holding that list under ``instance_info`` (MMPose ``demo/topdown_demo_with_mmdet.py --save-predictions``:
``{"meta_info": {...}, "instance_info": [...]}``), ``frames``, ``predictions``, ``results``, ``annotations`` (COCO
results/annotation files), ``detections`` or ``data``; or a dict ``{frame name or number: [persons]}``. A record is

- a frame dict: a frame number from ``frame_id`` / ``frame_idx`` / ``frame_index`` / ``frame`` / ``image_id`` /
  ``img_id`` / ``image_name`` / ``file_name`` (an int, or a name whose last number is the frame: ``"0.jpg"``,
  ``"frame_000123.png"``; names without a number are numbered by first appearance), else its position in the list;
  persons under ``instances`` (MMPose ``MMPoseInferencer(..., pred_out_dir=...)`` on a video writes
  ``[{"frame_id": i, "instances": [...]}]``), ``people``, ``persons``, ``detections``, ``predictions``,
  ``objects`` or ``results``; or the rtmlib-style arrays ``keypoints (P, J, 2|3)`` + ``scores (P, J)``;
  or the record **is** one person (a flat detection list: AlphaPose ``alphapose-results.json``
  ``[{"image_id": "0.jpg", "category_id": 1, "keypoints": [x, y, s] * 26, "score", "box", "idx"}]`` and COCO
  results files ``[{"image_id", "keypoints": [x, y, v] * 17, "score"}]``; records of the same frame are merged);
- a list: the persons of the frame at that position (Ultralytics: ``[json.loads(r.to_json()) for r in results]``).

A **person** is a dict with keypoints under ``keypoints`` (or ``kpts``, ``keypoints_2d``, ``joints``) as
``[[x, y], ...]``, ``[[x, y, s], ...]``, flat ``[x, y, s, ...]`` or ``[x, y, ...]``, or Ultralytics dicts
``{"x": [...], "y": [...], "visible": [...]}`` (``Results.to_json()``; if every coordinate is within [0, 1] they are
taken as ``to_json(normalize=True)`` output and scaled by the image size) or ``{"xy": [...], "conf": [...]}``;
scores under ``keypoint_scores`` (MMPose), ``keypoints_scores``, ``kpt_scores`` or ``scores`` when the keypoints
have only x, y (none at all: confidence 1); a track id under ``track_id`` (MMPose / Ultralytics tracking),
``idx`` (AlphaPose tracking; the nested lists untracked AlphaPose writes there are not track ids), ``track``,
``person_id`` or ``instance_id``. A bare ``(J, 2|3)`` list is a person too.

**NumPy**: ``.npy`` = one track ``(N, J, 2|3)``, frames 0..N-1; ``.npz`` with the keypoints under ``keypoints``
(or ``joint_2d``, ``keypoints_2d``, ``kp2d``, or a single array) ``(N, J, 2|3)``, optional ``confidence`` /
``scores`` ``(N, J)``, ``frames`` ``(N,)``, ``track_id`` ``(N,)`` (rows of several people, with ``frames``),
``image_size`` ``(2,)`` = (w, h) and ``fps``.

**Image size**: the ``image_size`` argument (``--image-size W H``) wins; else the file's ``image_size`` [w, h],
``width`` + ``height``, ``orig_shape`` (Ultralytics) / ``img_shape`` / ``ori_shape`` [h, w] (top level, in
``meta_info`` or in frame records), or a COCO ``images`` list with ``width``/``height``; else an error (unless the
caller does not need it).

**People**: persons are grouped by track id. A file without track ids but with more than one person in a frame is
an error suggesting a tracker, or ``track=True`` (``--track``) to link the people of successive frames by the
overlap of their keypoint boxes (:mod:`mesh.io.tracking`), or ``largest=True`` (``--largest``) to keep the largest
person per frame (largest box around its confident keypoints: detector boxes are xyxy in MMPose / Ultralytics but
xywh in AlphaPose / COCO; the largest person may change from frame to frame). With track ids, ``largest`` only
resolves a track id that appears twice in one frame (otherwise an error) and ``track`` changes nothing. People are
never interleaved into one track.

**Bad input** (one-line :class:`KeypointsError` naming the file and frame): empty file or no frames, invalid JSON,
133 (COCO-WholeBody) / 136 (Halpe-136) or any other unsupported keypoint count, ragged keypoint arrays, no person
in any frame. Frames without a person are allowed: they are absent from that track (``mesh.infer`` interpolates
gaps and flags them). NaN / ``null`` coordinates are kept as NaN with confidence 0 (a missing joint); NaN
confidences become 0.

CLI (demo input from the synthetic data)::

    python -m mesh.io.keypoints --from-synthetic data/synthetic/mesh_synthetic.pkl --split test \
        --sequence synth_test_0000 --out kp.json

writes one synthetic track as its simulated detector would have: MMPose-style COCO-17 or AlphaPose-style Halpe-26
JSON (see :func:`synthetic_to_json`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from body_models.joint_sets import conversion_matrix, convert_keypoints
from mesh.io.tracking import keypoint_box, link_detections

FORMATS = ("auto", "coco", "halpe", "h36m")
_JOINT_SET = {"coco": "coco17", "halpe": "halpe26", "h36m": "h36m17"}
_NUM_JOINTS = {"coco": 17, "halpe": 26, "h36m": 17}
_UNSUPPORTED = {133: "COCO-WholeBody (133 keypoints)", 136: "Halpe-136 (136 keypoints)",
                18: "OpenPose-18 (18 keypoints)", 25: "OpenPose BODY_25 (25 keypoints)"}

_LIST_KEYS = ("instance_info", "frames", "predictions", "results", "annotations", "detections", "data")
_FRAME_KEYS = ("frame_id", "frame_idx", "frame_index", "frame", "image_id", "img_id", "image_name", "file_name")
_PERSON_LIST_KEYS = ("instances", "people", "persons", "detections", "predictions", "objects", "results")
_KP_KEYS = ("keypoints", "kpts", "keypoints_2d", "joints")
_SCORE_KEYS = ("keypoint_scores", "keypoints_scores", "kpt_scores", "scores")
_TRACK_KEYS = ("track_id", "idx", "track", "person_id", "instance_id")
_NPZ_KP_KEYS = ("keypoints", "joint_2d", "keypoints_2d", "kp2d")


class KeypointsError(ValueError):
    """A keypoint file cannot be read as tracks; the message is one line naming the file (and frame)."""


@dataclass
class Track:
    """One person's detections.

    Attributes:
        frames: (N,) int64 video frame numbers where the person was detected, strictly increasing (gaps = frames
            without a detection).
        keypoints: (N, 17, 3) float32 H36M-17 (x, y) pixels and confidence; missing joints have NaN x, y and
            confidence 0.
        image_size: (width, height) in pixels, or None when unknown.
        source_format: the file's joint order ('coco', 'halpe' or 'h36m').
        fps: frames per second when the file states it, else None.
    """

    frames: np.ndarray
    keypoints: np.ndarray
    image_size: tuple[float, float] | None
    source_format: str = "h36m"
    fps: float | None = None

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class _Det:
    frame: int
    track: int | None
    kp: np.ndarray  # (J, 3) float64, source joint order
    where: str  # 'frame F' for messages
    unit_xy: bool = False  # Ultralytics {"x", "y"} layout (possibly normalised to [0, 1])


@dataclass
class _Info:
    image_sizes: set[tuple[float, float]] = field(default_factory=set)
    fps: float | None = None
    dataset: str | None = None


# ------------------------------------------------------------------------------------------------ small parsers


def _number(value: Any) -> int | None:
    """An integer frame / track number from an int, an integral float, a numeric string or a one-element list."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _frame_name_number(value: Any) -> int | None:
    """Frame number from ``0``, ``"12"``, ``"0.jpg"``, ``"video/frame_000123.png"`` (the stem's last number)."""
    n = _number(value)
    if n is not None or not isinstance(value, str):
        return n
    digits = re.findall(r"\d+", Path(value).stem)
    return int(digits[-1]) if digits else None


def _size_from(d: dict[str, Any]) -> tuple[float, float] | None:
    """(w, h) from a dict's ``image_size`` [w, h], ``width``/``height`` or ``orig_shape``/``img_shape``/``ori_shape``
    [h, w]; None if it has none."""
    def pair(v: Any) -> tuple[float, float] | None:
        try:
            a = np.asarray(v, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return None
        return (float(a[0]), float(a[1])) if a.size >= 2 and np.isfinite(a[:2]).all() and (a[:2] > 0).all() else None

    if "image_size" in d and (p := pair(d["image_size"])):
        return p
    if "width" in d and "height" in d and (p := pair([d["width"], d["height"]])):
        return p
    for key in ("orig_shape", "img_shape", "ori_shape"):
        if key in d and (p := pair(d[key])):
            return p[1], p[0]
    return None


def _as_array(value: Any, where: str, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)  # JSON null -> NaN
    except (TypeError, ValueError):
        raise KeypointsError(f"{where}: {what} is not a rectangular array of numbers") from None


def _ndim(value: Any) -> int:
    """Nesting depth of a rectangular list (-1 when ragged or not numeric)."""
    if isinstance(value, dict):
        return -1
    try:
        return np.asarray(value, dtype=np.float64).ndim
    except (TypeError, ValueError):
        return -1


def _kp_array(raw: Any, scores: Any, where: str) -> np.ndarray:
    """(J, 3) float64 from ``[[x, y], ...]``, ``[[x, y, s], ...]``, flat ``[x, y, s, ...]`` / ``[x, y, ...]``."""
    arr = _as_array(raw, where, "'keypoints'")
    while arr.ndim > 2 and arr.shape[0] == 1:  # (1, J, C) from a batched detector output
        arr = arr[0]
    sc = None if scores is None else _as_array(scores, where, "the keypoint scores").reshape(-1)
    if arr.ndim == 1:
        n = arr.size
        if sc is not None and n == 2 * sc.size:
            arr = arr.reshape(-1, 2)
        elif n % 3 == 0 and n:
            arr = arr.reshape(-1, 3)
        elif n % 2 == 0 and n:
            arr = arr.reshape(-1, 2)
        else:
            raise KeypointsError(f"{where}: flat 'keypoints' of length {n} is neither (x, y, s) nor (x, y) triples")
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise KeypointsError(f"{where}: 'keypoints' has shape {arr.shape}, expected (J, 2), (J, 3) or flat")
    if sc is not None:
        if sc.size != len(arr):
            raise KeypointsError(f"{where}: {sc.size} keypoint scores for {len(arr)} keypoints")
        return np.concatenate([arr[:, :2], sc[:, None]], axis=1)
    if arr.shape[1] == 2:  # positions only: fully confident
        return np.concatenate([arr, np.ones((len(arr), 1))], axis=1)
    return arr


def _person(p: Any, where: str) -> tuple[np.ndarray, int | None, bool]:
    """(keypoints (J, 3), track id or None, Ultralytics x/y layout) of one person record."""
    if not isinstance(p, dict):
        return _kp_array(p, None, where), None, False
    raw = next((p[k] for k in _KP_KEYS if k in p), None)
    if raw is None:
        raise KeypointsError(f"{where}: a person without keypoints (keys: {', '.join(map(str, list(p)[:8]))}; "
                             f"expected one of {', '.join(_KP_KEYS)})")
    scores = next((p[k] for k in _SCORE_KEYS if isinstance(p.get(k), list)), None)
    unit = False
    if isinstance(raw, dict):  # Ultralytics layouts
        if "x" in raw and "y" in raw:
            x, y = _as_array(raw["x"], where, "'keypoints.x'"), _as_array(raw["y"], where, "'keypoints.y'")
            if x.shape != y.shape or x.ndim != 1:
                raise KeypointsError(f"{where}: 'keypoints.x' {x.shape} and 'keypoints.y' {y.shape} differ")
            raw, scores, unit = np.stack([x, y], axis=1), raw.get("visible", scores), True
        elif "xy" in raw:
            raw, scores = raw["xy"], raw.get("conf", raw.get("visible", scores))
        elif "data" in raw:
            raw = raw["data"]
        else:
            raise KeypointsError(f"{where}: 'keypoints' dict has keys {sorted(raw)}; expected x/y[/visible], "
                                 "xy[/conf] or data")
    kp = _kp_array(raw, scores, where)
    track = None
    for key in _TRACK_KEYS:
        if key in p and p[key] is not None:
            value = p[key]
            if key == "idx" and isinstance(value, list):
                # AlphaPose without --pose_track writes idx as the list of detections merged into the pose ([0.0],
                # or [[0.0], [0.0]] after pose NMS): no track id. Its trackers write an integer.
                continue
            track = _number(value)
            if track is None:
                raise KeypointsError(f"{where}: track id '{key}' = {p[key]!r} is not an integer")
            break
    return kp, track, unit


# ------------------------------------------------------------------------------------------------------- JSON


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise KeypointsError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    if not text.strip():
        raise KeypointsError(f"{path}: empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > 1:  # JSON Lines: one frame record per line
            try:
                return [json.loads(line) for line in lines]
            except json.JSONDecodeError:
                pass
        raise KeypointsError(f"{path}: not valid JSON or JSON Lines ({err})") from None


def _records(obj: Any, path: Path, info: _Info) -> list[Any]:
    """The list of frame / detection records of a parsed JSON file (and file-level image size, fps, dataset)."""
    if isinstance(obj, dict):
        meta = obj.get("meta_info") if isinstance(obj.get("meta_info"), dict) else {}
        for d in (obj, meta):
            if (s := _size_from(d)) is not None:
                info.image_sizes.add(s)
            if info.fps is None and isinstance(d.get("fps"), (int, float)):
                info.fps = float(d["fps"])
        name = meta.get("dataset_name")
        info.dataset = str(name).lower() if name is not None else None
        if isinstance(obj.get("images"), list):  # COCO annotation file
            for im in obj["images"]:
                if isinstance(im, dict) and (s := _size_from(im)) is not None:
                    info.image_sizes.add(s)
        for key in _LIST_KEYS:
            if isinstance(obj.get(key), list):
                return obj[key]
        if obj and all(_frame_name_number(k) is not None for k in obj):  # {"0.jpg": [persons], ...}
            return [{"frame_id": k, "instances": v if isinstance(v, list) else [v]} for k, v in obj.items()]
        if any(k in obj for k in _KP_KEYS):
            return [obj]
        raise KeypointsError(f"{path}: no list of frames found (top-level keys: {', '.join(list(obj)[:8])}; "
                             f"expected a list, or one of {', '.join(_LIST_KEYS)})")
    if isinstance(obj, list):
        return obj
    raise KeypointsError(f"{path}: top level is a {type(obj).__name__}, expected a list of frames or a dict")


def _json_detections(records: list[Any], path: Path, info: _Info) -> list[_Det]:
    if not records:
        raise KeypointsError(f"{path}: no frames (empty list)")
    dets: list[_Det] = []
    names: dict[str, int] = {}  # frame names without a number: numbered by first appearance
    named: dict[str, int] = {}  # every frame name, numbered by first appearance (see _consistent_frame_numbers)
    det_names: list[str | None] = []
    for pos, rec in enumerate(records):
        name: str | None = None
        frame: int | None = pos
        persons: list[Any]
        if isinstance(rec, list):
            persons = rec
        elif isinstance(rec, dict):
            key = next((k for k in _FRAME_KEYS if k in rec), None)
            if key is not None:
                frame = _frame_name_number(rec[key])
                if isinstance(rec[key], str) and _number(rec[key]) is None:
                    name = rec[key]
                    named.setdefault(name, len(named))
                if frame is None:
                    frame = names.setdefault(str(rec[key]), len(names))
            if (s := _size_from(rec)) is not None:
                info.image_sizes.add(s)
            plist = next((rec[k] for k in _PERSON_LIST_KEYS if isinstance(rec.get(k), list)), None)
            kp = next((rec[k] for k in _KP_KEYS if k in rec), None)
            if plist is not None:
                persons = plist
            elif isinstance(kp, list) and not kp:  # rtmlib-style frame without people
                persons = []
            elif kp is not None and _ndim(kp) == 3:  # rtmlib-style arrays: keypoints (P, J, C) + scores (P, J)
                scores = next((rec[k] for k in _SCORE_KEYS if k in rec), None)
                persons = [{"keypoints": kp[i], **({"scores": list(np.ravel(scores[i]))} if scores is not None
                                                     else {})} for i in range(len(kp))]
            elif kp is not None:
                persons = [rec]  # a flat detection list (AlphaPose, COCO results)
            else:
                persons = []
        else:
            raise KeypointsError(f"{path}: record {pos} is a {type(rec).__name__}, expected a frame dict or a list")
        for p in persons:
            where = f"{path}: frame {frame}"
            kp_arr, track, unit = _person(p, where)
            dets.append(_Det(frame=int(frame), track=track, kp=kp_arr, where=where, unit_xy=unit))
            det_names.append(name)
    _consistent_frame_numbers(dets, det_names, named)
    return dets


def _consistent_frame_numbers(dets: list[_Det], det_names: list[str | None], named: dict[str, int]) -> None:
    """Number frames by their names' order of appearance when the names' last numbers are not a frame count.

    ``"frame_000123.png"`` carries its frame number, but a timestamped name (UP-Fall's
    ``"2018-07-04T12_04_17.738369.png"``) ends in the microseconds, which go back down every second: read as frame
    numbers they would scramble the order and span millions of frames. Detectors write frames in video order, so if
    the names' numbers, in order of first appearance, do not increase, each name gets its rank instead.
    """
    pairs = [(det, name) for det, name in zip(dets, det_names, strict=True) if name is not None]
    if not named or len(pairs) < len(dets):
        return
    first_number: dict[str, int] = {}
    for det, name in pairs:
        first_number.setdefault(name, det.frame)
    numbers = [first_number[n] for n in sorted(first_number, key=named.__getitem__)]
    if all(b > a for a, b in itertools.pairwise(numbers)):
        return
    for det, name in pairs:
        det.frame = named[name]
        det.where = det.where.rsplit(": frame ", 1)[0] + f": frame {det.frame} ({name})"


# ------------------------------------------------------------------------------------------------------- NumPy


def _numpy_detections(path: Path, info: _Info) -> list[_Det]:
    try:
        if path.suffix == ".npy":
            arrays = {"keypoints": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
    except Exception as err:  # bad zip / header / pickled object arrays: one line
        raise KeypointsError(f"{path}: not a readable {path.suffix} ({type(err).__name__}: {err})") from None
    key = next((k for k in _NPZ_KP_KEYS if k in arrays), None)
    if key is None:
        if len(arrays) == 1:
            key = next(iter(arrays))
        else:
            raise KeypointsError(f"{path}: no keypoints array (keys: {', '.join(arrays)}; expected one of "
                                 f"{', '.join(_NPZ_KP_KEYS)})")
    kp = np.asarray(arrays[key], dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] not in (2, 3):
        raise KeypointsError(f"{path}: '{key}' has shape {kp.shape}, expected (N, J, 2) or (N, J, 3)")
    n = len(kp)
    if n == 0:
        raise KeypointsError(f"{path}: '{key}' has no frames")
    conf_key = next((k for k in ("confidence", "scores") if k in arrays), None)
    if conf_key is not None:
        conf = np.asarray(arrays[conf_key], dtype=np.float64)
        if conf.size != n * kp.shape[1]:
            raise KeypointsError(f"{path}: '{conf_key}' has shape {conf.shape}, expected ({n}, {kp.shape[1]})")
        kp = np.concatenate([kp[..., :2], conf.reshape(n, -1, 1)], axis=-1)
    elif kp.shape[-1] == 2:
        kp = np.concatenate([kp, np.ones((*kp.shape[:2], 1))], axis=-1)
    tracks = None
    if "track_id" in arrays:
        tracks = np.asarray(arrays["track_id"]).reshape(-1)
        if len(tracks) != n or tracks.dtype.kind not in "iu":
            raise KeypointsError(f"{path}: 'track_id' must be ({n},) integers, got {tracks.shape} {tracks.dtype}")
    if "frames" in arrays:
        frames = np.asarray(arrays["frames"]).reshape(-1)
        if len(frames) != n or frames.dtype.kind not in "iu":
            raise KeypointsError(f"{path}: 'frames' must be ({n},) integers, got {frames.shape} {frames.dtype}")
    elif tracks is not None and len(np.unique(tracks)) > 1:
        raise KeypointsError(f"{path}: 'track_id' with several people needs 'frames' (the frame of each row)")
    else:
        frames = np.arange(n)
    if "image_size" in arrays:
        s = np.asarray(arrays["image_size"], dtype=np.float64).reshape(-1)
        if s.size != 2 or not (s > 0).all():
            raise KeypointsError(f"{path}: 'image_size' must be (width, height), got {arrays['image_size']!r}")
        info.image_sizes.add((float(s[0]), float(s[1])))
    if "fps" in arrays:
        info.fps = float(np.asarray(arrays["fps"]).reshape(-1)[0])
    return [_Det(frame=int(frames[i]), track=None if tracks is None else int(tracks[i]), kp=kp[i],
                 where=f"{path}: frame {int(frames[i])}") for i in range(n)]


# ------------------------------------------------------------------------------------------------------ tracks


def _joint_format(dets: list[_Det], fmt: str, path: Path, numpy_file: bool, dataset: str | None) -> str:
    counts = {len(d.kp) for d in dets}
    for d in dets:
        j = len(d.kp)
        if j in _UNSUPPORTED:
            raise KeypointsError(f"{d.where}: {_UNSUPPORTED[j]} per person is not supported; use a body model "
                                 "with COCO-17 or Halpe-26 keypoints (or H36M-17)")
        if j not in (17, 26):
            raise KeypointsError(f"{d.where}: {j} keypoints per person; supported: 17 (COCO-17 or H36M-17), "
                                 "26 (Halpe-26)")
    if len(counts) > 1:
        raise KeypointsError(f"{path}: persons with different keypoint counts {sorted(counts)}")
    j = counts.pop()
    if fmt == "auto":
        if j == 26:
            return "halpe"
        h36m_meta = dataset is not None and "h36m" in dataset
        return "h36m" if numpy_file or h36m_meta else "coco"
    if _NUM_JOINTS[fmt] != j:
        raise KeypointsError(f"{path}: --format {fmt} expects {_NUM_JOINTS[fmt]} keypoints per person, "
                             f"the file has {j}")
    return fmt


def _box_area(kp: np.ndarray) -> float:
    x0, y0, x1, y1 = keypoint_box(kp)
    return float(np.nan_to_num((x1 - x0) * (y1 - y0)))


def _to_h36m(kp: np.ndarray, fmt: str, conversion: str = "midpoint") -> np.ndarray:
    """(N, J, 3) source keypoints -> (N, 17, 3) H36M-17 (``conversion``: see
    body_models.joint_sets.KEYPOINT_CONVERSIONS); NaN coordinates propagate as NaN with confidence 0."""
    kp = np.array(kp, dtype=np.float64)
    bad = ~np.isfinite(kp[..., :2]).all(axis=-1)
    kp[..., 2] = np.where(bad | ~np.isfinite(kp[..., 2]), 0.0, kp[..., 2])
    kp[..., :2] = np.where(bad[..., None], 0.0, kp[..., :2])  # 0 * NaN would poison every weighted mean
    src = _JOINT_SET[fmt]
    out = convert_keypoints(kp, src, "h36m17", conversion)
    mat = conversion_matrix(src, "h36m17", conversion)
    out_bad = (bad.astype(np.float64) @ (mat != 0).T.astype(np.float64)) > 0
    out[..., :2] = np.where(out_bad[..., None], np.nan, out[..., :2])
    out[..., 2] = np.where(out_bad, 0.0, out[..., 2])
    return out


def read_keypoints(path: str | Path, fmt: str = "auto", image_size: tuple[float, float] | None = None,
                   largest: bool = False, require_image_size: bool = True, track: bool = False,
                   conversion: str = "midpoint") -> dict[int, Track]:
    """Read a detector file into ``{track_id: Track}`` (see the module docstring for the accepted layouts).

    Args:
        fmt: joint order of the file: 'auto', 'coco', 'halpe' or 'h36m'.
        image_size: (width, height) in pixels; overrides the file's.
        largest: without track ids, keep the largest person per frame instead of raising on several people.
        track: without track ids, link the people of successive frames into tracks
            (:func:`mesh.io.tracking.link_detections`); a file with track ids keeps its own.
        require_image_size: raise when neither ``image_size`` nor the file gives one.
        conversion: the detector -> H36M-17 rule (body_models.joint_sets.KEYPOINT_CONVERSIONS): the one the model
            was trained with (``mesh.infer`` reads it from the checkpoint); default "midpoint", MotionBERT's.

    Raises:
        KeypointsError: one line naming the file (and frame) for every unusable input.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise KeypointsError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not path.is_file():
        raise KeypointsError(f"{path}: no such file")
    info = _Info()
    numpy_file = path.suffix.lower() in (".npy", ".npz")
    if numpy_file:
        dets = _numpy_detections(path, info)
    else:
        dets = _json_detections(_records(_load_json(path), path, info), path, info)
    if not dets:
        raise KeypointsError(f"{path}: no person in any frame")
    fmt = _joint_format(dets, fmt, path, numpy_file, info.dataset)

    if image_size is not None:
        size: tuple[float, float] | None = (float(image_size[0]), float(image_size[1]))
        if not (size[0] > 0 and size[1] > 0):
            raise KeypointsError(f"image size must be positive, got {image_size}")
    elif len(info.image_sizes) > 1:
        raise KeypointsError(f"{path}: several image sizes in one file {sorted(info.image_sizes)[:4]}; "
                             "give --image-size W H")
    else:
        size = next(iter(info.image_sizes), None)

    unit = [d for d in dets if d.unit_xy]
    if unit:
        xy = np.concatenate([d.kp[:, :2] for d in unit])
        fin = xy[np.isfinite(xy)]
        if fin.size and fin.min() >= 0 and fin.max() <= 1.0:  # Ultralytics to_json(normalize=True)
            if size is None:
                raise KeypointsError(f"{path}: keypoints are normalised to [0, 1] (Ultralytics to_json(normalize="
                                     "True)); give --image-size W H to turn them into pixels")
            for d in unit:
                d.kp[:, :2] *= np.asarray(size)
    if size is None and require_image_size:
        raise KeypointsError(f"{path}: no image size in the file; give --image-size W H (the video's width and "
                             "height in pixels)")

    if track and largest:
        raise KeypointsError("--track and --largest exclude each other: track every person, or keep the largest")
    if track and all(d.track is None for d in dets):
        ids = link_detections([d.frame for d in dets], np.stack([keypoint_box(d.kp) for d in dets]))
        for d, tid in zip(dets, ids, strict=True):
            d.track = int(tid)
    has_id = [d.track is not None for d in dets]
    if any(has_id) and not all(has_id):
        d = dets[has_id.index(False)]
        raise KeypointsError(f"{d.where}: a person without a track id in a file whose other people have one")
    by_frame: dict[tuple[int, int], list[_Det]] = defaultdict(list)
    for d in dets:
        by_frame[(d.frame, 0 if d.track is None else d.track)].append(d)
    chosen: list[_Det] = []
    for (frame, tid), group in sorted(by_frame.items()):
        if len(group) > 1 and not largest:
            if any(has_id):
                raise KeypointsError(f"{path}: frame {frame}: track id {tid} appears {len(group)} times; fix the "
                                     "tracking or pass --largest to keep the largest")
            raise KeypointsError(f"{path}: frame {frame}: {len(group)} people but the file has no track ids; pass "
                                 "--track to link people across frames (or run a tracker: MMPose/Ultralytics "
                                 "tracking, AlphaPose --pose_track), or --largest to keep the largest per frame")
        chosen.append(max(group, key=lambda d: _box_area(d.kp)))

    tracks: dict[int, Track] = {}
    grouped: dict[int, list[_Det]] = defaultdict(list)
    for d in chosen:
        grouped[0 if d.track is None else d.track].append(d)
    for tid in sorted(grouped):
        group = sorted(grouped[tid], key=lambda d: d.frame)
        kp = _to_h36m(np.stack([d.kp for d in group]), fmt, conversion)
        tracks[tid] = Track(frames=np.array([d.frame for d in group], dtype=np.int64),
                            keypoints=kp.astype(np.float32), image_size=size, source_format=fmt, fps=info.fps)
    return tracks


def describe(tracks: dict[int, Track]) -> str:
    """One line per track: id, detections, frame range, missing frames."""
    lines = []
    for tid, t in tracks.items():
        span = int(t.frames[-1] - t.frames[0] + 1)
        lines.append(f"track {tid}: {len(t)} detections, frames {int(t.frames[0])}..{int(t.frames[-1])} "
                     f"({span - len(t)} missing)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- synthetic -> detector JSON


def h36m_to_coco(kp: np.ndarray) -> np.ndarray:
    """Approximate COCO-17 keypoints from H36M-17 ``(..., 17, 3)`` (x, y, confidence), for demos.

    The 12 limb joints (shoulders, elbows, wrists, hips, knees, ankles) and the nose map directly. H36M has no
    eyes or ears: they are placed on the line through the head joint parallel to the shoulders (eyes at +-10 %,
    ears at +-22 % of the shoulder width, the person's left towards the left shoulder) with the head's confidence,
    so that COCO->H36M's "head = mid-eyes" gives the head joint back. The derived H36M joints do not round-trip
    exactly: COCO->H36M's pelvis is the mid-hip and its thorax the mid-shoulder.
    """
    kp = np.asarray(kp, dtype=np.float64)
    out = np.zeros((*kp.shape[:-2], 17, 3))
    direct = {0: 9, 5: 11, 6: 14, 7: 12, 8: 15, 9: 13, 10: 16, 11: 4, 12: 1, 13: 5, 14: 2, 15: 6, 16: 3}
    for c, h in direct.items():
        out[..., c, :] = kp[..., h, :]
    head = kp[..., 10, :]
    lateral = kp[..., 11, :2] - kp[..., 14, :2]  # right -> left shoulder
    for c, frac in ((1, 0.10), (2, -0.10), (3, 0.22), (4, -0.22)):
        out[..., c, :2] = head[..., :2] + frac * lateral
        out[..., c, 2] = head[..., 2]
    return out


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def synthetic_to_json(data: str | Path, out: str | Path, split: str = "test", sequence: str | None = None,
                      track_id: int | None = 0) -> Path:
    """Write one track of a synthetic (``mesh_det_*.pkl``-schema) file as a detector would have written it.

    Files from generator version 2 on carry the simulated detector's own keypoints (``detector_keypoints``,
    ``detector_format``): a COCO-17 track is written in MMPose's layout (``demo/topdown_demo_with_mmdet.py
    --save-predictions``, plus ``image_size`` and ``fps``): ``{"meta_info": {"dataset_name": "coco",
    "num_keypoints": 17}, "image_size": [w, h], "fps": 30, "instance_info": [{"frame_id": i, "instances":
    [{"keypoints": [[x, y] * 17], "keypoint_scores": [17], "bbox": [[x1, y1, x2, y2]], "bbox_score": 1.0,
    "track_id": 0}]}]}``; a Halpe-26 track in AlphaPose's ``alphapose-results.json`` layout: ``[{"image_id":
    "0.jpg", "category_id": 1, "keypoints": [x, y, s] * 26, "score", "box": [x, y, w, h], "idx": 0}]`` (no image
    size: AlphaPose writes none). Older files (H36M-17 only) are converted with :func:`h36m_to_coco` (approximate
    eyes and ears). ``track_id`` None leaves ids out.
    """
    from body_models import safe_load_pickle

    data = Path(data)
    if not data.is_file():
        raise KeypointsError(f"{data}: no such data file (make it with: python -m motion.synthetic)")
    raw = safe_load_pickle(data)
    if not isinstance(raw, dict) or split not in raw:
        raise KeypointsError(f"{data}: no '{split}' split")
    sp = raw[split]
    source = np.asarray(sp["source"]).astype(str)
    names = list(dict.fromkeys(source.tolist()))
    sequence = sequence or names[0]
    if sequence not in names:
        raise KeypointsError(f"{data} [{split}]: no sequence {sequence!r} (first: {', '.join(names[:5])})")
    sel = source == sequence
    meta = raw.get("meta") or {}
    if "img_hw" in sp:
        h, w = (int(v) for v in np.asarray(sp["img_hw"])[sel][0])
    else:
        w, h = (int(v) for v in meta.get("normalisation_res", (1920, 1920)))
    fmt = str(np.asarray(sp["detector_format"])[sel][0]) if "detector_format" in sp else "h36m17"
    if fmt == "h36m17":
        j2d = np.asarray(sp["joint_2d"], dtype=np.float64)[sel]
        conf = (np.asarray(sp["confidence"], dtype=np.float64)[sel].reshape(len(j2d), 17, 1) if "confidence" in sp
                else np.ones((len(j2d), 17, 1)))
        kps = h36m_to_coco(np.concatenate([j2d, conf], axis=-1))
        note = "H36M-17 converted to COCO-17 approximately (eyes/ears from the head joint)"
    else:
        kps = np.asarray(sp["detector_keypoints"], dtype=np.float64)[sel][:, :{"coco17": 17, "halpe26": 26}[fmt]]
        note = f"the simulated detector's {fmt} keypoints"
    if fmt == "halpe26":
        records = []
        for i, k in enumerate(kps):
            lo, hi = k[:, :2].min(axis=0), k[:, :2].max(axis=0)
            rec: dict[str, Any] = {"image_id": f"{i}.jpg", "category_id": 1,
                                   "keypoints": np.round(k, 4).reshape(-1).tolist(),
                                   "score": float(np.round(k[:, 2].mean(), 4)),
                                   "box": np.round(np.concatenate([lo, hi - lo]), 2).tolist()}
            if track_id is not None:
                rec["idx"] = int(track_id)
            records.append(rec)
        _atomic_text(Path(out), json.dumps(records))
        return Path(out)
    frames = []
    for i, k in enumerate(kps):
        lo, hi = k[:, :2].min(axis=0), k[:, :2].max(axis=0)
        inst: dict[str, Any] = {"keypoints": np.round(k[:, :2], 3).tolist(),
                                "keypoint_scores": np.round(k[:, 2], 4).tolist(),
                                "bbox": [np.round(np.concatenate([lo, hi]), 2).tolist()], "bbox_score": 1.0}
        if track_id is not None:
            inst["track_id"] = int(track_id)
        frames.append({"frame_id": i, "instances": [inst]})
    doc = {"meta_info": {"dataset_name": "coco", "num_keypoints": 17,
                         "note": f"synthetic track {sequence} ({data.name} [{split}]): {note}"},
           "image_size": [w, h], "fps": float(meta.get("fps", 30.0)), "instance_info": frames}
    out = Path(out)
    _atomic_text(out, json.dumps(doc))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mesh.io.keypoints", description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-synthetic", metavar="PKL", help="synthetic mesh data file to take a track from")
    ap.add_argument("--split", default="test")
    ap.add_argument("--sequence", help="track name (default: the split's first)")
    ap.add_argument("--out", help="output JSON (with --from-synthetic)")
    ap.add_argument("--no-track-id", action="store_true", help="leave track ids out of the JSON")
    ap.add_argument("--inspect", metavar="FILE", help="read a detector file and print its tracks")
    ap.add_argument("--format", default="auto", choices=FORMATS)
    ap.add_argument("--image-size", type=float, nargs=2, metavar=("W", "H"))
    ap.add_argument("--largest", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.from_synthetic:
            if not args.out:
                ap.error("--from-synthetic needs --out FILE.json")
            path = synthetic_to_json(args.from_synthetic, args.out, args.split, args.sequence,
                                          None if args.no_track_id else 0)
            print(f"wrote {path}")
        elif args.inspect:
            tracks = read_keypoints(args.inspect, args.format, args.image_size, args.largest,
                                    require_image_size=False)
            size = next(iter(tracks.values())).image_size
            print(f"{args.inspect}: format {next(iter(tracks.values())).source_format}, image size {size}")
            print(describe(tracks))
        else:
            ap.error("give --from-synthetic PKL --out FILE.json, or --inspect FILE")
    except KeypointsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
