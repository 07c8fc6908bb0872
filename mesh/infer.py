"""In-the-wild inference: a 2D detector file -> per-person SMPL parameters, meshes, an animated glTF and a video.

    python -m mesh.infer --keypoints FILE [--checkpoint CKPT] --out DIR [--format auto|coco|halpe|h36m]
        [--video FILE | --image-size W H] [--track | --largest] [--focal PX | --fov DEG] [--fps 30]
        [--norm auto|track_box|image|fixed1920] [--shape track|window] [--smooth none|one-euro] [--refine]
        [--meshes none|obj|ply] [--no-render] [--device auto]

What it fixes relative to MotionBERT's ``infer_wild_mesh.py`` (docs/protocols.md, in-the-wild inference):

- **any detector**: COCO-17 (MMPose, RTMPose, Ultralytics YOLO-pose), Halpe-26 (AlphaPose) and H36M-17 arrays, read
  by :mod:`mesh.io.keypoints` (its docstring lists the accepted layouts) and converted to H36M-17 by the keypoint rule
  the checkpoint records (``metadata['keypoint_conversion']``: "fitted" for the shipped model, "midpoint" for files
  without the record; docs/protocols.md, joint sets);
- **several people**: one output per track id; people are never interleaved (a file with several people per frame
  and no track ids is an error unless ``--track`` (link people across frames by box overlap,
  :mod:`mesh.io.tracking`) or ``--largest`` (the largest person per frame));
- **no silent misalignment**: within a track, frames without a detection (gaps in the frame numbers) and missing
  joints (confidence <= ``--min-conf``, default 0, or NaN coordinates) are linearly interpolated in 2D over time
  (held constant before the first / after the last valid value; a joint never seen in the track sits at the
  centroid of the others), given confidence 0, and **flagged** in the result (``interpolated (N,)``,
  ``joint_missing (N, 17)``). ``frame_index`` is the video's frame numbers, gap frames included;
- **no clip-boundary pops**: the whole track is predicted with overlapping windows (``clip_len`` from the checkpoint's
  training config, stride ``clip_len // 2``) cross-faded per frame (:func:`mesh.inference.predict_track`, triangular
  weights), flip test on; ``--shape track`` (default) averages betas over the track's detected frames and re-poses
  the body, so the shape is constant instead of changing per window;
- optional **One-Euro smoothing** (``--smooth one-euro``) of the joint rotations (on the rotation-matrix entries,
  projected back onto SO(3); times from the frame numbers, so gaps count), then the body is re-posed: parameters,
  joints and vertices stay consistent;
- optional **refinement** (``--refine``, :mod:`mesh.inference.refine`): after the network, each frame's joint
  rotations are adjusted so that the body's own detector keypoints (surface landmarks in the file's joint order,
  converted like the file) project onto the detections, held near the network's pose and smooth over time;
- CPU first (``--device auto`` = CUDA when available), parameters exported, a fast renderer.

**2D normalisation** (``--norm``, default ``auto`` = what the checkpoint records): models trained by this project
from generator version 2 on use the resolution-free ``track_box`` map (a box around the person over the track; see
:mod:`motion.data.transforms`): the same function normalises training data and your file, so no image size is
needed. Checkpoints without a record (earlier ones, MotionBERT's) were trained with an image-size map: ``image`` (the
video's size (w, h): ``u = x / w * 2 - 1``, ``v = y / w * 2 - h / w``; needs ``--image-size`` or a size in the file)
or ``fixed1920`` (the fixed 1920 x 1920 map of 3DPW-style training). Forcing a track-box model onto an image map, or
the reverse, is an error.

**Camera space**: the body is placed in the camera frame (x right, y down, z forward, metres): each frame's translation
makes the predicted joints project onto the keypoints (:mod:`mesh.inference.camera`: confidence-weighted least squares,
smoothed over time, frames without enough confident joints filled by the smoothing). Intrinsics: ``--focal`` (pixels) or
``--fov`` (horizontal degrees), else the image diagonal as the focal length; the principal point is the image centre.
Files without an image size (AlphaPose) and no ``--video`` / ``--image-size`` get an assumed image from (0, 0) to just
beyond their largest keypoint coordinates (recorded: ``image_size_assumed``), which makes the sideways position a guess.
The same camera turns the body of a ``box_ray`` model (the shipped one; docs/protocols.md, orientation frame): such a
model predicts the orientation relative to the ray through the person's track box, and the ray's direction comes
from these intrinsics, so a faithful camera also gives a faithful orientation. Without an image size the principal
point is only a guess: the body is then not turned (the person is taken to be on the optical axis; ``summary.json``
records ``turned_by_ray``).

**Outputs** (per track, in ``OUT/person_<id>/``): ``viewer.html`` (the animated mesh in any browser, offline:
:mod:`mesh.vis.viewer`), ``result.npz`` (:mod:`mesh.io.export` result keys: SMPL
``global_orient``/``body_pose``/``betas``/``transl`` (camera frame: the root motion of the glb and BVH), ``joints``,
``joints_h36m``, ``frame_index``, ``fps``, ``faces``, ``keypoints_2d`` (the filled 2D input, pixels),
``image_size``; plus ``interpolated``, ``joint_missing``, ``track_id``, ``normalisation``, ``intrinsics`` (3, 3),
``intrinsics_assumed``, ``image_size_assumed``, ``reprojection_px`` (N,), ``placed`` (N,), ``refined`` (whether
``--refine`` ran; ``summary.json`` gives its keypoint residual before and after); ``vertices`` only with
``--save-vertices``; readable by
:func:`mesh.io.export.load_result`), ``mesh.glb`` (animated, skinned), ``render.mp4`` (mesh | 2D keypoints; unless
``--no-render``), optional ``meshes_obj/`` or ``meshes_ply/`` (one file per frame) and ``track.bvh`` (``--bvh``).
``OUT/overlay.mp4`` with ``--overlay``: every person's mesh (one colour each) over the ``--video`` frames,
pixel-aligned through the camera placement, or over a blank canvas of the image's size without a video
(``python -m mesh.render --result OUT/person_*/result.npz --video FILE`` draws it again later);
``OUT/summary.json`` lists every file and the settings. Everything is written into a temporary folder beside ``OUT``
and moved into place at the end: an error leaves ``OUT`` as it was (person folders of the same name and
``summary.json`` are replaced; other files in ``OUT`` are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch

from body_models.joint_sets import keypoint_conversion_of
from mesh.inference.camera import Intrinsics, intrinsics_for, place_in_camera
from mesh.inference.predict import TrackPrediction, predict_track, repose, to_camera_frame
from mesh.io.keypoints import FORMATS, KeypointsError, Track, read_keypoints
from motion.data.transforms import normalisation_of, normalize_2d, normalize_box, track_box

NORMS = ("auto", "track_box", "image", "fixed1920")
FIXED_RES = 1920.0
DEFAULT_CLIP_LEN = 16


class InferError(RuntimeError):
    """Inference cannot run on this input / with these options; the message is one line."""


# ------------------------------------------------------------------------------------------------ One-Euro filter


def one_euro_filter(x: np.ndarray, t: np.ndarray | None = None, fps: float = 30.0, min_cutoff: float = 1.0,
                    beta: float = 0.7, d_cutoff: float = 1.0) -> np.ndarray:
    """One-Euro filter (Casiez et al., CHI 2012) along axis 0 of ``x (N, ...)``, each element independently.

    A first-order low-pass whose cutoff rises with the (low-passed) speed: ``cutoff = min_cutoff + beta * |dx/dt|``,
    so a still signal is smoothed hard (jitter removed) while fast motion passes with little lag.

    Args:
        t: (N,) increasing times in seconds (default ``arange(N) / fps``); uneven steps (frame gaps) are honoured.
        min_cutoff: cutoff in Hz at zero speed (lower = smoother, more lag).
        beta: cutoff increase per unit of speed (units of x per second); 0 = a plain exponential filter.
        d_cutoff: cutoff in Hz of the speed estimate.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n == 0:
        return x.copy()
    t = np.arange(n) / float(fps) if t is None else np.asarray(t, dtype=np.float64)
    if t.shape != (n,) or (n > 1 and not (np.diff(t) > 0).all()):
        raise ValueError(f"t must be ({n},) strictly increasing seconds, got shape {t.shape}")
    if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
        raise ValueError(f"need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")

    def alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    out = np.empty_like(x)
    out[0] = x[0]
    dx_hat = np.zeros_like(x[0])
    for i in range(1, n):
        dt = t[i] - t[i - 1]
        dx = (x[i] - out[i - 1]) / dt
        dx_hat = dx_hat + alpha(d_cutoff, dt) * (dx - dx_hat)
        a = alpha(min_cutoff + beta * np.abs(dx_hat), dt)
        out[i] = out[i - 1] + a * (x[i] - out[i - 1])
    return out


# --------------------------------------------------------------------------------------------- track preparation


@dataclass
class FilledTrack:
    """A track on the video's frame grid, gaps and missing joints interpolated (see the module docstring).

    Attributes:
        frames: (N,) consecutive video frame numbers, first to last detection.
        keypoints: (N, 17, 3) float32 H36M-17 pixels + confidence (0 where interpolated), no NaN.
        interpolated: (N,) bool: no detection, or no valid joint, in that frame.
        joint_missing: (N, 17) bool: the joint was interpolated (or placed at the centroid).
    """

    frames: np.ndarray
    keypoints: np.ndarray
    interpolated: np.ndarray
    joint_missing: np.ndarray


def fill_track(track: Track, min_conf: float = 0.0, name: str = "track") -> FilledTrack:
    """Put ``track`` on the consecutive frame grid and interpolate missing frames and joints in 2D (over time)."""
    frames = np.asarray(track.frames, dtype=np.int64)
    if len(frames) == 0:
        raise InferError(f"{name}: no frames")
    if len(frames) > 1 and not (np.diff(frames) > 0).all():
        raise InferError(f"{name}: frame numbers must be strictly increasing")
    full = np.arange(frames[0], frames[-1] + 1)
    m = len(full)
    kp = np.full((m, 17, 3), np.nan)
    kp[frames - frames[0]] = np.asarray(track.keypoints, dtype=np.float64)
    conf = np.nan_to_num(kp[..., 2], nan=0.0)
    valid = np.isfinite(kp[..., :2]).all(axis=-1) & (conf > min_conf)
    if not valid.any():
        raise InferError(f"{name}: no joint with confidence > {min_conf} and finite coordinates in any frame")
    out = np.zeros((m, 17, 3))
    steps = np.arange(m, dtype=np.float64)
    for j in range(17):
        v = valid[:, j]
        if v.any():
            for c in range(2):  # np.interp holds the first / last valid value outside their range
                out[:, j, c] = np.where(v, kp[:, j, c], np.interp(steps, steps[v], kp[v, j, c]))
    never = ~valid.any(axis=0)
    if never.any():  # a joint never seen in the track: the centroid of the others, confidence 0
        out[:, never, :2] = out[:, ~never, :2].mean(axis=1, keepdims=True)
    out[..., 2] = np.where(valid, np.clip(conf, 0.0, 1.0), 0.0)  # detectors' scores can exceed 1; training clips
    return FilledTrack(frames=full, keypoints=out.astype(np.float32), interpolated=~valid.any(axis=1),
                       joint_missing=~valid)


def normalise_keypoints(keypoints: np.ndarray, image_size: tuple[float, float] | None, norm: str,
                        fps: float = 30.0) -> np.ndarray:
    """(N, 17, 3) pixels + confidence of one track -> network input (u, v, confidence); see the module docstring
    for ``norm`` (``track_box``, ``image`` or ``fixed1920``)."""
    xy = keypoints[..., :2].astype(np.float64)
    if norm == "track_box":
        centre, scale = track_box(xy, keypoints[..., 2], fps)
        uv = normalize_box(xy, centre, scale)
    else:
        if norm == "image":
            if image_size is None:
                raise InferError("--norm image needs the image size: give --image-size W H")
            w, h = image_size
        elif norm == "fixed1920":
            w = h = FIXED_RES
        else:
            raise InferError(f"--norm must be one of {', '.join(NORMS[1:])}, got {norm!r}")
        uv = normalize_2d(xy, w, h)
    return np.concatenate([uv, keypoints[..., 2:3]], axis=-1).astype(np.float32)


def resolve_norm(requested: str, ckpt_metadata: dict[str, Any], checkpoint: str | Path) -> str:
    """The normalisation to run ``checkpoint`` with: ``auto`` = the one it was trained with (``track_box`` when its
    metadata records it, else the image map of earlier and MotionBERT checkpoints); a forced mismatch is an error."""
    try:
        trained = normalisation_of(ckpt_metadata)
    except ValueError as err:
        raise InferError(f"{checkpoint}: {err}") from None
    if requested == "auto":
        return trained
    if (requested == "track_box") != (trained == "track_box"):
        raise InferError(f"{checkpoint}: trained with the {trained!r} 2D normalisation, but --norm {requested} was "
                         f"given (use --norm auto)")
    return requested


# ------------------------------------------------------------------------------------------------ prediction


@torch.no_grad()
def postprocess(pred: TrackPrediction, body: Any, frames: np.ndarray, fps: float, shape: str = "track",
                smooth: str = "none", detected: np.ndarray | None = None, min_cutoff: float = 1.0,
                beta: float = 0.7) -> TrackPrediction:
    """Shape pooling over the track and/or One-Euro smoothing of the rotations, then re-pose the body.

    ``detected``: (N,) frames whose betas enter the track mean (default all); interpolated frames are left out.
    """
    if shape not in ("track", "window") or smooth not in ("none", "one-euro"):
        raise InferError(f"--shape must be track|window and --smooth none|one-euro, got {shape!r}, {smooth!r}")
    if shape == "window" and smooth == "none":
        return pred  # the blended network output as it is
    rot, betas = pred.rotmats.double(), pred.betas.double()
    if shape == "track":
        keep = torch.ones(len(betas), dtype=torch.bool) if detected is None else torch.from_numpy(detected)
        if not keep.any():
            keep = torch.ones_like(keep)
        betas = betas[keep].mean(dim=0, keepdim=True).expand(len(betas), -1)
    if smooth == "one-euro":
        t = (np.asarray(frames, dtype=np.float64) - frames[0]) / fps
        flat = one_euro_filter(rot.reshape(len(rot), -1).numpy(), t, min_cutoff=min_cutoff, beta=beta)
        rot = roma.special_procrustes(torch.from_numpy(flat).reshape(rot.shape))
        if shape == "window":
            betas = torch.from_numpy(one_euro_filter(betas.numpy(), t, min_cutoff=min_cutoff, beta=beta))
    return repose(body, rot.float(), betas.float().contiguous())


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise InferError(f"--device {name!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InferError(f"--device {name}: CUDA is not available here (use --device cpu or auto)")
    return dev


def checkpoint_clip_len(ckpt: dict[str, Any]) -> int | None:
    """The training clip length stated in a mesh checkpoint's metadata (``run_config.data.clip_len``), or None."""
    meta = ckpt.get("metadata") or {}
    value = ((meta.get("run_config") or {}).get("data") or {}).get("clip_len", meta.get("clip_len"))
    return int(value) if isinstance(value, (int, float)) and value >= 1 else None


# ------------------------------------------------------------------------------------------------ writing


def write_result_npz(path: Path, result: Any, extras: dict[str, np.ndarray], include_vertices: bool) -> Path:
    """The :mod:`mesh.io.export` ``.npz`` (validated; ``vertices`` only if asked) plus ``extras`` (ignored by
    :func:`mesh.io.export.load_result`)."""
    from mesh.io.export import MeshResult, validate_result

    validate_result(result, str(path))
    arrays: dict[str, np.ndarray] = {}
    for f in fields(MeshResult):
        value = getattr(result, f.name)
        if value is not None and (include_vertices or f.name != "vertices"):
            arrays[f.name] = np.asarray(value)
    arrays["body_model"] = np.asarray(str(result.body_model))  # 0-d unicode: loads without pickle
    arrays.update(extras)
    with open(path, "wb") as fobj:
        np.savez(fobj, **arrays)
    return path


def _install(stage: Path, out: Path) -> None:
    """Move the staged outputs into ``out`` (a rename when ``out`` does not exist yet)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [stage, *stage.rglob("*")]:  # temp files/folders are created private (0600/0700): normal modes
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    if not out.exists():
        os.replace(stage, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        for entry in sorted(stage.iterdir()):
            dest = out / entry.name
            if dest.exists() or dest.is_symlink():
                os.replace(dest, trash / entry.name)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ the pipeline


@dataclass
class InferOptions:
    """Settings of :func:`run_inference` (the CLI flags of the same names)."""

    format: str = "auto"
    image_size: tuple[float, float] | None = None
    largest: bool = False
    track: bool = False  # without track ids: link people across frames (mesh.io.tracking)
    persons: tuple[int, ...] | None = None  # only these track ids
    min_frames: int = 1
    fps: float | None = None  # None: the file's, else 30
    norm: str = "auto"  # auto: the checkpoint's
    shape: str = "track"
    smooth: str = "none"
    smooth_min_cutoff: float = 1.0
    smooth_beta: float = 0.7
    refine: bool = False  # fit each frame's pose to the keypoints after the network (mesh.inference.refine)
    flip_test: bool = True
    clip_len: int | None = None  # None: the checkpoint's
    stride: int | None = None  # None: clip_len // 2
    batch_size: int = 32
    min_conf: float = 0.0
    meshes: str = "none"
    bvh: bool = False
    save_vertices: bool = False
    render: bool = True
    render_size: int = 512
    overlay: bool = False  # also overlay.mp4: the mesh over the video's frames (or a blank canvas of its size)
    device: str = "auto"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    video: str | None = None  # the input video: its size and frame rate (unless image_size / fps are given)
    focal: float | None = None  # camera focal length in pixels (None: from fov, else the image diagonal)
    fov: float | None = None  # horizontal field of view in degrees
    timings: dict[str, float] = field(default_factory=dict)  # filled in: seconds per stage


def camera_for(image_size: tuple[float, float] | None, keypoints: np.ndarray, focal: float | None,
               fov: float | None) -> Intrinsics:
    """Intrinsics for placing the body (the image size is assumed when ``image_size`` is None).

    Without an image size (AlphaPose files never carry one), the image is assumed to span from pixel (0, 0) to 5 %
    beyond the largest keypoint coordinates of the file (detector pixels start at the image's top-left corner), with
    its centre as the principal point; the sideways position then depends on that guess (the distance much less).
    Give ``--video`` or ``--image-size`` for a faithful camera.
    """
    if image_size is not None:
        return intrinsics_for(image_size[0], image_size[1], focal, fov)
    hi = keypoints[..., :2].reshape(-1, 2).max(0)
    w, h = np.maximum(hi * 1.05, 2.0)
    return intrinsics_for(float(w), float(h), focal, fov)


def place_result(result: Any, keypoints: np.ndarray, camera: Intrinsics) -> dict[str, np.ndarray]:
    """Move ``result`` (joints, vertices, ``transl``) into the camera frame (:mod:`mesh.inference.camera`); returns the
    extra arrays stored with it: intrinsics, per-frame reprojection error (pixels) and which frames were solved."""
    placement = place_in_camera(result.joints_h36m, keypoints[..., :2], keypoints[..., 2], camera.matrix)
    shift = placement.transl.astype(np.float32)
    result.transl = result.transl + shift
    result.joints = result.joints + shift[:, None]
    result.joints_h36m = result.joints_h36m + shift[:, None]
    if result.vertices is not None:
        result.vertices = result.vertices + shift[:, None]
    return {"intrinsics": camera.matrix.astype(np.float32), "intrinsics_assumed": np.asarray(camera.assumed),
            "reprojection_px": placement.residual_px.astype(np.float32), "placed": placement.solved}


def run_inference(keypoints: str | Path, checkpoint: str | Path, out: str | Path,
                  options: InferOptions | None = None, log: Any = print) -> dict[str, Any]:
    """Read ``keypoints``, predict every track with ``checkpoint`` and write ``out`` (see the module docstring).

    Returns the summary written to ``OUT/summary.json`` (with ``timings_s``: read, load, network, body, refine, export,
    render).
    """
    opt = options or InferOptions()
    for value, allowed, flag in ((opt.norm, NORMS, "--norm"), (opt.shape, ("track", "window"), "--shape"),
                                 (opt.smooth, ("none", "one-euro"), "--smooth"),
                                 (opt.meshes, ("none", "obj", "ply"), "--meshes"), (opt.format, FORMATS, "--format")):
        if value not in allowed:
            raise InferError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InferError(f"{out}: exists and is not a folder")
    if not Path(checkpoint).is_file():
        raise InferError(f"{checkpoint}: no such checkpoint")
    timings = dict.fromkeys(("read", "load", "network", "body", "refine", "export", "render"), 0.0)
    device = resolve_device(opt.device)
    if opt.threads:
        torch.set_num_threads(opt.threads)

    t0 = time.perf_counter()
    from mesh.network.checkpoint import load_mesh_model

    model, ckpt = load_mesh_model(checkpoint, map_location=device)
    norm = resolve_norm(opt.norm, ckpt.get("metadata", {}), checkpoint)
    try:  # the detector -> H36M-17 keypoint rule the network was trained with
        conversion = keypoint_conversion_of(ckpt.get("metadata", {}))
    except ValueError as err:
        raise InferError(f"{checkpoint}: {err}") from None
    body = model.body
    clip_len = opt.clip_len or checkpoint_clip_len(ckpt)
    if clip_len is None:
        clip_len = DEFAULT_CLIP_LEN
        log(f"note: {checkpoint} states no training clip length; using {clip_len}")
    stride = opt.stride or max(1, clip_len // 2)
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    image_size, video_fps = opt.image_size, None
    if opt.video is not None:
        from mesh.io.video import video_info

        info = video_info(opt.video)
        image_size, video_fps = image_size or (float(info.width), float(info.height)), info.fps
    tracks = read_keypoints(keypoints, opt.format, image_size, opt.largest, require_image_size=norm == "image",
                            track=opt.track, conversion=conversion)
    if opt.persons is not None:
        missing = sorted(set(opt.persons) - set(tracks))
        if missing:
            raise InferError(f"{keypoints}: no track id(s) {missing} (ids: {sorted(tracks)[:20]})")
        tracks = {k: v for k, v in tracks.items() if k in opt.persons}
    first = next(iter(tracks.values()))
    fps = float(opt.fps or video_fps or first.fps or 30.0)
    skipped = {k: len(v) for k, v in tracks.items() if len(v) < opt.min_frames}
    tracks = {k: v for k, v in tracks.items() if len(v) >= opt.min_frames}
    if not tracks:
        raise InferError(f"{keypoints}: every track is shorter than --min-frames {opt.min_frames}")
    filled = {k: fill_track(v, opt.min_conf, f"{keypoints}: track {k}") for k, v in tracks.items()}
    inputs = {k: normalise_keypoints(f.keypoints, first.image_size, norm, fps) for k, f in filled.items()}
    all_kp = np.concatenate([f.keypoints for f in filled.values()])
    if first.image_size is not None:  # keypoints far outside the image: another video's size, or another scale
        w, h = first.image_size
        seen = all_kp[all_kp[..., 2] > 0, :2]
        outside = ((seen < [-0.25 * w, -0.25 * h]) | (seen > [1.25 * w, 1.25 * h])).any(-1).mean() if len(seen) else 0
        if outside > 0.2:
            source = f"--video {opt.video}" if opt.video and not opt.image_size else "the image size"
            raise InferError(f"{keypoints}: {outside:.0%} of the keypoints lie far outside the {w:g} x {h:g} image "
                             f"({source}): do they come from this video?")
    try:
        camera = camera_for(first.image_size, all_kp, opt.focal, opt.fov)  # one video, one camera for all tracks
    except ValueError as err:
        raise InferError(f"--focal / --fov: {err}") from None
    # Without the image size the principal point is a guess, and turning by a ray from a guessed centre does more
    # harm than good: the person is then taken to be on the optical axis (the box_ray output is used as it is).
    turn_by_ray = model.orientation != "camera" and first.image_size is not None
    timings["read"] = time.perf_counter() - t0

    if opt.render:
        from mesh.vis.renderer import INSTALL_HINT, gl_available

        ok, why = gl_available()
        if not ok:  # before the expensive part: say so now
            raise InferError(f"no headless OpenGL for the video ({why}); {INSTALL_HINT}, or pass --no-render")

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    persons: dict[str, Any] = {}
    placed_results: list[Any] = []
    try:
        for tid, f in filled.items():
            t0 = time.perf_counter()
            pred = predict_track(model, inputs[tid], clip_len=clip_len, stride=stride, flip_test=opt.flip_test,
                                 batch_size=opt.batch_size)
            if turn_by_ray:  # box_ray: the orientation is relative to the ray through the person's box
                centre, _ = track_box(f.keypoints[..., :2].astype(np.float64), f.keypoints[..., 2], fps)
                pred = to_camera_frame(model, pred, centre, camera.matrix)
            timings["network"] += time.perf_counter() - t0

            t0 = time.perf_counter()
            from mesh.io.export import result_from_prediction, write_bvh, write_glb, write_mesh_sequence

            pred = postprocess(pred, body, f.frames, fps, opt.shape, opt.smooth, ~f.interpolated,
                               opt.smooth_min_cutoff, opt.smooth_beta)
            refined = None
            if opt.refine:
                from mesh.inference.refine import refine_track

                t1 = time.perf_counter()
                try:
                    pred, refined = refine_track(pred, body, f.keypoints, camera.matrix, tracks[tid].source_format,
                                                 conversion=conversion)
                except ValueError as err:
                    raise InferError(f"{keypoints}: track {tid}: --refine: {err}") from None
                timings["refine"] += time.perf_counter() - t1
                t0 += time.perf_counter() - t1  # the body stage's time without the refinement
            result = result_from_prediction(pred, body, frame_index=f.frames, fps=fps, keypoints_2d=f.keypoints,
                                            image_size=first.image_size, include_vertices=True)
            try:
                placed = place_result(result, f.keypoints, camera)
            except ValueError as err:
                raise InferError(f"{keypoints}: track {tid} ({len(f.frames)} frames): {err} (a stray detection? leave "
                                 "it out with --person or --min-frames)") from None
            placed["image_size_assumed"] = np.asarray(first.image_size is None)
            timings["body"] += time.perf_counter() - t0

            t0 = time.perf_counter()
            name = f"person_{tid}"
            folder = stage / name
            folder.mkdir()
            files = [write_result_npz(folder / "result.npz", result, {
                "interpolated": f.interpolated, "joint_missing": f.joint_missing,
                "track_id": np.asarray(tid, dtype=np.int64), "normalisation": np.asarray(norm),
                "refined": np.asarray(refined is not None), **placed},
                opt.save_vertices)]
            write_glb(folder / "mesh.glb", result, body)
            files.append(folder / "mesh.glb")
            from mesh.vis.viewer import write_viewer

            files.append(write_viewer(folder / "viewer.html", result, body, title=f"{Path(keypoints).name}: {name}"))
            if opt.bvh:
                files.append(write_bvh(folder / "track.bvh", result, body))
            if opt.meshes != "none":
                files += write_mesh_sequence(folder / f"meshes_{opt.meshes}", result.vertices, result.faces,
                                             opt.meshes, result.frame_index)
            timings["export"] += time.perf_counter() - t0

            if opt.render:
                t0 = time.perf_counter()
                from mesh.vis.compose import VideoOptions, render_video

                files.append(render_video(folder / "render.mp4", result, None,
                                          VideoOptions(size=opt.render_size, fps=fps, keypoints=True)))
                timings["render"] += time.perf_counter() - t0
            if opt.render and opt.overlay:  # kept without vertices: the overlay skins a few frames at a time
                placed_results.append(replace(result, vertices=None))
            persons[str(tid)] = {
                "folder": name, "frames": len(f.frames), "first_frame": int(f.frames[0]),
                "last_frame": int(f.frames[-1]), "detections": len(tracks[tid]),
                "interpolated_frames": int(f.interpolated.sum()), "missing_joints": int(f.joint_missing.sum()),
                "median_distance_m": round(float(np.median(result.transl[:, 2])), 3),
                "median_reprojection_px": round(float(np.nanmedian(placed["reprojection_px"])), 2),
                "refine": None if refined is None else asdict(refined),
                "files": [str(p.relative_to(stage)) for p in files]}
        overlay = []
        if placed_results:  # every person in one video, over the input frames (or a blank canvas of their size)
            t0 = time.perf_counter()
            from mesh.io.video import video_frames
            from mesh.vis.compose import write_overlay

            write_overlay(stage / "overlay.mp4", placed_results, camera.matrix, round(camera.width),
                          round(camera.height), video_frames(opt.video) if opt.video else None, fps=fps, body=body,
                          keypoints=True)
            overlay = ["overlay.mp4"]
            timings["render"] += time.perf_counter() - t0
        summary = {
            "keypoints": str(keypoints), "checkpoint": str(checkpoint), "format": first.source_format,
            "image_size": None if first.image_size is None else list(first.image_size), "fps": fps,
            "normalisation": norm, "orientation": model.orientation, "turned_by_ray": turn_by_ray,
            "clip_len": clip_len, "stride": stride,
            "flip_test": opt.flip_test, "shape": opt.shape, "smooth": opt.smooth, "device": str(device),
            "camera": {**{k: round(float(v), 3) for k, v in asdict(camera).items() if k != "assumed"},
                       "focal_assumed": camera.assumed, "image_size_assumed": first.image_size is None},
            "options": {k: v for k, v in asdict(opt).items() if k != "timings"},
            "skipped_tracks": {str(k): f"{n} frames < --min-frames {opt.min_frames}" for k, n in skipped.items()},
            "persons": persons, "timings_s": {k: round(v, 4) for k, v in timings.items()},
        }
        summary["files"] = [p for person in persons.values() for p in person["files"]] + overlay + ["summary.json"]
        (stage / "summary.json").write_text(json.dumps(summary, indent=2))
        _install(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    opt.timings.update(timings)
    for k in skipped:
        log(f"skipped track {k}: {skipped[k]} frames < --min-frames {opt.min_frames}")
    for tid, p in persons.items():
        refined = "" if p["refine"] is None else (
            f"; refined: keypoint residual {100 * p['refine']['residual_before']:.1f} % -> "
            f"{100 * p['refine']['residual_after']:.1f} % of the person's size")
        log(f"person {tid}: {p['frames']} frames ({p['first_frame']}..{p['last_frame']}), "
            f"{p['interpolated_frames']} interpolated, {p['missing_joints']} missing joints filled{refined}")
    sequences: dict[str, int] = {}
    for rel in summary["files"]:
        parent = Path(rel).parent
        if parent.name.startswith("meshes_"):  # one line per mesh folder, not per frame
            sequences[str(parent)] = sequences.get(str(parent), 0) + 1
        else:
            log(f"wrote {out / rel}")
    for folder, count in sequences.items():
        log(f"wrote {out / folder}/ ({count} mesh files)")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mesh.infer", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--keypoints", required=True, help="2D detector output (.json/.jsonl/.npy/.npz)")
    ap.add_argument("--checkpoint", default=None,
                    help="mesh-model checkpoint (mesh.finetune); default: the shipped open model models/ssrstf_mesh.pt")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--format", default="auto", choices=FORMATS, help="joint order of the file")
    ap.add_argument("--video", default=None,
                    help="the video the keypoints come from: its size and frame rate are used (flags win)")
    ap.add_argument("--image-size", type=float, nargs=2, metavar=("W", "H"),
                    help="video size in pixels (needed only by image-normalised checkpoints; else for drawing)")
    people = ap.add_mutually_exclusive_group()
    people.add_argument("--track", action="store_true",
                        help="without track ids: link the people of successive frames into tracks by the overlap of "
                        "their keypoint boxes (mesh/io/tracking.py); one output per track (see --person, --min-frames)")
    people.add_argument("--largest", action="store_true",
                        help="without track ids: keep the largest person per frame instead of failing (the largest "
                        "may be a different person from frame to frame)")
    ap.add_argument("--person", type=int, nargs="+", help="only these track ids")
    ap.add_argument("--min-frames", type=int, default=1, help="skip tracks with fewer detections")
    ap.add_argument("--fps", type=float, default=None, help="video frame rate (default: the file's, else 30)")
    ap.add_argument("--norm", default="auto", choices=NORMS,
                    help="2D normalisation: auto = the one the checkpoint was trained with (track_box needs no image "
                    "size; image = the video's size; fixed1920 = the earlier training map; see the module docstring)")
    cam = ap.add_mutually_exclusive_group()
    cam.add_argument("--focal", type=float, default=None,
                     help="focal length in pixels, for the camera-space translation (default: the image diagonal)")
    cam.add_argument("--fov", type=float, default=None, help="horizontal field of view in degrees (instead of --focal)")
    ap.add_argument("--shape", default="track", choices=("track", "window"), help="betas pooled over the track")
    ap.add_argument("--smooth", default="none", choices=("none", "one-euro"), help="temporal smoothing of rotations")
    ap.add_argument("--smooth-min-cutoff", type=float, default=1.0, help="One-Euro cutoff at rest (Hz)")
    ap.add_argument("--smooth-beta", type=float, default=0.7, help="One-Euro speed coefficient")
    ap.add_argument("--refine", action="store_true",
                    help="fit each frame's pose to the keypoints after the network (pixel-aligned limbs; a few "
                         "seconds per 1,000 frames): see mesh/inference/refine.py")
    ap.add_argument("--no-flip", action="store_true", help="no flip-test averaging (about 2x faster)")
    ap.add_argument("--clip-len", type=int, default=None, help="window length (default: the checkpoint's)")
    ap.add_argument("--stride", type=int, default=None, help="window stride (default: clip_len // 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--min-conf", type=float, default=0.0, help="joints at or below this confidence are missing")
    ap.add_argument("--meshes", default="none", choices=("none", "obj", "ply"), help="one mesh file per frame")
    ap.add_argument("--bvh", action="store_true", help="also write a BVH skeleton")
    ap.add_argument("--save-vertices", action="store_true", help="store vertices in result.npz (large)")
    ap.add_argument("--no-render", action="store_true", help="no mp4")
    ap.add_argument("--render-size", type=int, default=512, help="video panel size (even)")
    ap.add_argument("--overlay", action="store_true",
                    help="also OUT/overlay.mp4: every person's mesh over the --video frames (or a blank canvas of its "
                    "size); mesh.render --video redraws it from the results")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; 1 is often faster on a busy machine)")
    args = ap.parse_args(argv)
    opt = InferOptions(
        format=args.format, image_size=tuple(args.image_size) if args.image_size else None, largest=args.largest,
        track=args.track, persons=tuple(args.person) if args.person else None, min_frames=args.min_frames, fps=args.fps,
        norm=args.norm, shape=args.shape, smooth=args.smooth, smooth_min_cutoff=args.smooth_min_cutoff,
        smooth_beta=args.smooth_beta, refine=args.refine, flip_test=not args.no_flip, clip_len=args.clip_len,
        stride=args.stride,
        batch_size=args.batch_size, min_conf=args.min_conf, meshes=args.meshes, bvh=args.bvh,
        save_vertices=args.save_vertices, render=not args.no_render, render_size=args.render_size,
        device=args.device, threads=args.threads, focal=args.focal, fov=args.fov, video=args.video,
        overlay=args.overlay)
    if opt.render and (opt.render_size < 2 or opt.render_size % 2):
        print(f"error: --render-size must be a positive even number, got {opt.render_size}", file=sys.stderr)
        return 2
    from body_models import BodyModelFileError
    from mesh.data.mesh_data import MeshDataError
    from mesh.io.export import ResultFileError
    from mesh.io.video import VideoError
    from motion.checkpoint import SHIPPED_MESH_MODEL, CheckpointError

    one_line_errors = (InferError, KeypointsError, CheckpointError, ResultFileError, BodyModelFileError, MeshDataError,
                       VideoError)
    try:
        run_inference(args.keypoints, args.checkpoint or SHIPPED_MESH_MODEL, args.out, opt)
    except one_line_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if type(err).__name__ == "RenderError":  # mesh.vis.renderer is imported only when rendering (OpenGL)
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
