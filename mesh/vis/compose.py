"""Videos composed from rendered meshes: prediction and ground truth side by side or overlaid, a 2D-keypoint panel,
meshes drawn over the input video in its camera, and the mp4 writer (atomic, imageio-ffmpeg)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from body_models import H36M17
from mesh.io.export import MeshResult
from mesh.vis.renderer import (
    GT_COLOR,
    OVERLAY_GT_ALPHA,
    PRED_COLOR,
    Camera,
    Layer,
    MeshRenderer,
    Panel,
    RenderError,
    fit_cameras,
)

# ------------------------------------------------------------------------------------------------ 2D keypoints


_KP_LEFT, _KP_RIGHT, _KP_MID = (40, 90, 220), (220, 60, 50), (90, 90, 90)


def _bone_color(child: int) -> tuple[int, int, int]:
    name = H36M17.joint_names[child]
    return _KP_LEFT if name.startswith("left") else _KP_RIGHT if name.startswith("right") else _KP_MID


@dataclass
class KeypointFrame:
    """Maps 2D keypoint coordinates to panel pixels: ``pixel = (xy - origin) * scale + offset``."""

    origin: np.ndarray
    scale: float
    offset: np.ndarray
    image_box: tuple[float, float, float, float] | None  # the input image's rectangle in panel pixels

    @classmethod
    def fit(cls, keypoints: np.ndarray, width: int, height: int, image_size: Sequence[float] | None = None,
            margin: float = 0.05, min_conf: float = 0.1, top: int = 0) -> KeypointFrame:
        """Fit the whole image (``image_size`` = (w, h)) or, without it, the sequence's confident keypoints, into
        the panel below its first ``top`` rows (kept for a label)."""
        if image_size is not None:
            lo, hi = np.zeros(2), np.asarray(image_size, dtype=np.float64)
        else:
            kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
            pts = kp[(kp[:, 2] >= min_conf) & np.isfinite(kp[:, :2]).all(1), :2]
            lo, hi = (pts.min(0), pts.max(0)) if len(pts) else (np.zeros(2), np.ones(2))
        span = np.maximum(hi - lo, 1e-6)
        avail = height - top
        scale = float(min(width * (1 - 2 * margin) / span[0], avail * (1 - 2 * margin) / span[1]))
        offset = (np.array([width, avail]) - span * scale) / 2 + [0, top]
        box = (offset[0], offset[1], offset[0] + span[0] * scale, offset[1] + span[1] * scale)
        return cls(origin=lo, scale=scale, offset=offset, image_box=box if image_size is not None else None)

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) - self.origin) * self.scale + self.offset


def draw_keypoints(keypoints: np.ndarray | None, frame: KeypointFrame, width: int, height: int,
                   bg_color: tuple[int, int, int] = (255, 255, 255), min_conf: float = 0.1,
                   line_width: int = 3, label: str | None = None, base: np.ndarray | None = None) -> np.ndarray:
    """A (height, width, 3) uint8 panel with the H36M-17 skeleton of ``keypoints`` (17, 3) = (x, y, confidence)
    (left limbs blue, right red, centre grey; joints below ``min_conf`` and their bones are skipped), drawn on
    ``bg_color`` or on a copy of the image ``base``."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), bg_color) if base is None else Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    if frame.image_box is not None:
        draw.rectangle(frame.image_box, outline=(200, 200, 200))
    if keypoints is not None:
        kp = np.asarray(keypoints, dtype=np.float64)
        px = frame.to_pixels(kp[:, :2])
        ok = (kp[:, 2] >= min_conf) & np.isfinite(px).all(1)
        for parent, child in H36M17.bones:
            if ok[parent] and ok[child]:
                draw.line([tuple(px[parent]), tuple(px[child])], fill=_bone_color(child), width=line_width)
        r = line_width
        for j in np.flatnonzero(ok):
            x, y = px[j]
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(30, 30, 30))
    if label:
        draw.text((6, 4), label, fill=(0, 0, 0))
    return np.asarray(img)


def _label(frame: np.ndarray, x: int, text: str) -> None:
    """Write ``text`` at the top-left of the panel starting at column ``x`` (in place; only a small strip)."""
    from PIL import Image, ImageDraw

    strip = Image.fromarray(frame[:16, x:x + 8 * len(text) + 12])
    ImageDraw.Draw(strip).text((6, 3), text, fill=(0, 0, 0))
    frame[:16, x:x + strip.width] = np.asarray(strip)


# ------------------------------------------------------------------------------------------------------- videos


class VideoWriter:
    """mp4 (H.264) through imageio-ffmpeg, written to a temp file and renamed into place on :meth:`close`."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, crf: int = 18) -> None:
        import imageio_ffmpeg

        if width % 2 or height % 2:
            raise RenderError(f"video size must be even for yuv420p, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.mp4", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.size = (width, height)
        self.frames = 0
        self._gen = imageio_ffmpeg.write_frames(str(self.tmp), (width, height), fps=float(fps), codec="libx264",
                                                quality=None, macro_block_size=2,
                                                output_params=["-crf", str(crf), "-preset", "veryfast"])
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.size[1], self.size[0], 3) or frame.dtype != np.uint8:
            raise RenderError(f"frame {frame.shape} {frame.dtype} does not match the video ({self.size[1]}, "
                              f"{self.size[0]}, 3) uint8")
        self._gen.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self, keep: bool = True) -> Path:
        """Finish the file; with ``keep`` rename it to ``path``, else delete it."""
        try:
            self._gen.close()
        finally:
            if keep:
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)
        return self.path


def _default_body(result: MeshResult, where: str) -> Any:
    """The default body model, checked against the result's mesh (to skin results that store no vertices)."""
    from body_models import load_body_model

    body = load_body_model()
    if body.faces.shape[0] != len(result.faces):
        raise RenderError(f"{where}: stores no vertices and its {len(result.faces)} faces do not match the default "
                          f"body model's {body.faces.shape[0]} (set SMPL_MODEL_DIR to {result.body_model!r})")
    return body


def _skin(result: MeshResult, body: Any, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Vertices of frames ``lo:hi`` from the result's parameters (root-centred when it has no ``transl``)."""
    import torch

    sel, dev = slice(lo, hi), body.v_template.device

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(x)[sel]).float().to(dev)

    with torch.no_grad():
        transl = None if result.transl is None else tensor(result.transl)
        out = body(tensor(result.rotmats), tensor(result.betas), transl)
    verts = out.vertices.cpu().numpy()
    if result.transl is None:
        verts = verts - out.joints_h36m[:, :1].cpu().numpy()
    return verts.astype(np.float32)


def _vertices_of(result: MeshResult, where: str) -> np.ndarray:
    """The result's vertices, recomputed from its parameters with the default body model if not stored."""
    if result.vertices is not None:
        return np.asarray(result.vertices, dtype=np.float32)
    return _skin(result, _default_body(result, where))


class _FrameVertices:
    """One result's vertices frame by frame: the stored ones, or skinned ``chunk`` frames at a time, so that a long
    video never holds every frame's mesh in memory."""

    def __init__(self, result: MeshResult, where: str, body: Any = None, chunk: int = 64) -> None:
        self.result, self.chunk = result, chunk
        self.body = None if result.vertices is not None else body if body is not None else _default_body(result, where)
        self.lo, self.block = -1, np.zeros((0, 0, 3), np.float32)

    def __getitem__(self, i: int) -> np.ndarray:
        if self.body is None:
            return np.asarray(self.result.vertices[i], dtype=np.float32)
        if not self.lo <= i < self.lo + len(self.block):
            self.lo = i - i % self.chunk
            self.block = _skin(self.result, self.body, self.lo, self.lo + self.chunk)
        return self.block[i - self.lo]


@dataclass
class VideoOptions:
    """What a video shows and how."""

    size: int = 512
    fps: float | None = None  # None: the result's fps
    views: tuple[str, ...] = ("front",)
    overlay: bool = False  # ground truth over the prediction in one panel (else side by side)
    keypoints: bool = True  # a 2D keypoint panel when the result has keypoints_2d
    pred_color: tuple[float, float, float, float] = PRED_COLOR
    gt_color: tuple[float, float, float, float] = GT_COLOR
    bg_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fill_gaps: bool = True  # missing input frames become empty frames, so the video keeps the input's timing
    samples: int = 0
    fov_deg: float = 30.0


def video_frames(pred: MeshResult, gt: MeshResult | None = None, options: VideoOptions | None = None,
                 renderer: MeshRenderer | None = None) -> Iterator[np.ndarray]:
    """Yield the video's frames (H, W, 3) uint8: per view, [ground truth | prediction] or an overlay, then the 2D
    keypoints panel. Frames are aligned on ``frame_index``; ground-truth frames missing from ``gt`` stay empty."""
    opt = options or VideoOptions()
    size = int(opt.size)
    pred_v = _vertices_of(pred, "prediction")
    faces = np.asarray(pred.faces)
    if faces.max() >= pred_v.shape[1]:
        raise RenderError(f"prediction: faces index vertex {faces.max()} but vertices have {pred_v.shape[1]}")
    index = np.asarray(pred.frame_index)
    timeline = np.arange(index[0], index[-1] + 1) if opt.fill_gaps else index
    slot = np.full(len(timeline), -1)
    slot[np.searchsorted(timeline, index)] = np.arange(len(index))
    n = len(timeline)
    pred_seq = np.full((n, *pred_v.shape[1:]), np.nan, np.float32)
    pred_seq[slot >= 0] = pred_v
    gt_seq = None
    if gt is not None:
        gt_v = _vertices_of(gt, "ground truth")
        if gt_v.shape[1] != pred_v.shape[1]:
            raise RenderError(f"ground truth has {gt_v.shape[1]} vertices per frame, prediction {pred_v.shape[1]}")
        gt_seq = np.full_like(pred_seq, np.nan)
        where = np.searchsorted(timeline, gt.frame_index)
        keep = (where < n) & (timeline[np.minimum(where, n - 1)] == gt.frame_index)
        gt_seq[where[keep]] = gt_v[keep]
    cams = {view: fit_cameras([pred_seq, gt_seq], view, size, size, fov_deg=opt.fov_deg) for view in opt.views}
    panels_per_view: list[tuple[str, list[Layer], str]] = []
    for view in opt.views:
        if gt_seq is None:
            panels_per_view.append((view, [Layer(0, opt.pred_color)], f"{view}: prediction"))
        elif opt.overlay:
            gt_col = (*opt.gt_color[:3], min(opt.gt_color[3], OVERLAY_GT_ALPHA))
            panels_per_view.append((view, [Layer(0, opt.pred_color), Layer(1, gt_col)],
                                    f"{view}: prediction + ground truth"))
        else:
            panels_per_view.append((view, [Layer(1, opt.gt_color)], f"{view}: ground truth"))
            panels_per_view.append((view, [Layer(0, opt.pred_color)], f"{view}: prediction"))
    kp_frame = None
    if opt.keypoints and pred.keypoints_2d is not None:
        kp_frame = KeypointFrame.fit(pred.keypoints_2d, size, size, pred.image_size, top=16)
    bg255 = tuple(round(c * 255) for c in opt.bg_color)
    own = renderer is None
    r = renderer or MeshRenderer(faces, size, size, bg_color=opt.bg_color, samples=opt.samples)
    try:
        for k in range(n):
            r.set_meshes([pred_seq[k], None if gt_seq is None else gt_seq[k]])
            img = r.render_panels([Panel(cams[view][k], layers) for view, layers, _ in panels_per_view])
            for p, (_, _, label) in enumerate(panels_per_view):
                _label(img, p * size, label)
            if kp_frame is not None:
                kp = pred.keypoints_2d[slot[k]] if slot[k] >= 0 else None
                panel = draw_keypoints(kp, kp_frame, size, size, bg255, label=f"2D keypoints  frame {timeline[k]}")
                img = np.concatenate([img, panel], axis=1)
            yield img
    finally:
        if own:
            r.close()


def camera_view(K: np.ndarray, width: int, height: int, scale: float = 1.0) -> Camera:
    """The pinhole camera of intrinsics ``K`` (the frame the camera-space meshes are in), for an image of
    ``width`` x ``height`` pixels drawn ``scale`` times smaller or larger."""
    # even sizes: mp4 (yuv420p) needs them
    return Camera(rotation=np.eye(3), translation=np.zeros(3), focal=float(K[0, 0]) * scale,
                  width=max(2, 2 * round(width * scale / 2)), height=max(2, 2 * round(height * scale / 2)),
                  cx=float(K[0, 2]) * scale, cy=float(K[1, 2]) * scale, znear=0.05, zfar=500.0)


# Person colours of the overlay: the prediction's light blue first, then distinct light hues.
PERSON_COLORS = [PRED_COLOR, (0.95, 0.66, 0.45, 1.0), (0.62, 0.85, 0.55, 1.0), (0.85, 0.58, 0.85, 1.0),
                 (0.95, 0.85, 0.45, 1.0), (0.5, 0.85, 0.85, 1.0)]


def overlay_frames(results: Sequence[MeshResult], K: np.ndarray, width: int, height: int,
                   background: Iterator[np.ndarray] | None = None, opacity: float = 0.75, scale: float = 1.0,
                   canvas: tuple[int, int, int] = (235, 235, 235), body: Any = None, keypoints: bool = False,
                   views: Sequence[str] = ()) -> Iterator[np.ndarray]:
    """Yield the meshes of ``results`` (one per person, each its own colour) drawn over the input frames,
    pixel-aligned: ``(round(H * scale), round(W * scale) * (1 + len(views)), 3)`` uint8 for every video frame from
    the first to the last frame of any result.

    Args:
        results: camera-frame meshes (``mesh.infer`` places them) of one video, ``frame_index`` = its frame numbers.
        K: the intrinsics the results were placed with; ``width``, ``height``: the video's size.
        background: the video's frames from frame 0 on (``mesh.io.video.video_frames``), read lazily; None = a plain
            ``canvas`` of the video's size (when no video is at hand).
        body: the body model that skins results without stored vertices (a few frames at a time); default: the
            default body model.
        keypoints: also draw each result's 2D input (``keypoints_2d``, H36M-17 pixels) over the frame.
        views: panels beside the overlay ('side', 'top'): the same meshes seen by a camera that follows them, on
            the plain canvas.
    """
    if not results:
        raise RenderError("overlay: no results to draw")
    faces = np.asarray(results[0].faces)
    if any(np.asarray(r.faces).shape != faces.shape for r in results):
        raise RenderError("overlay: the results use different body meshes")
    sources = [_FrameVertices(r, f"result {k}", body) for k, r in enumerate(results)]
    lookups = [{int(f): i for i, f in enumerate(np.asarray(r.frame_index))} for r in results]
    first = min(int(r.frame_index[0]) for r in results)
    last = max(int(r.frame_index[-1]) for r in results)
    cam = camera_view(K, width, height, scale)
    # Cameras of the extra views follow the joints (always in memory, unlike long vertex sequences); the margin
    # covers the surface beyond the joints.
    tracks = []
    for r in results if views else ():
        joints = np.full((last - first + 1, *np.asarray(r.joints).shape[1:]), np.nan, np.float32)
        joints[np.asarray(r.frame_index) - first] = r.joints
        tracks.append(joints)
    view_cams = {v: fit_cameras(tracks, v, cam.width, cam.height, margin=1.3, point_stride=1) for v in views}
    pixels = KeypointFrame(origin=np.zeros(2), scale=cam.width / width, offset=np.zeros(2), image_box=None)
    line = max(1, round(cam.height / 240))
    renderer = MeshRenderer(faces, cam.width, cam.height, bg_color=(0.0, 0.0, 0.0))
    try:
        frames = iter(background) if background is not None else None
        for number in range(last + 1):
            frame = next(frames, None) if frames is not None else None
            if number < first:
                continue
            if frame is None:
                base = np.empty((cam.height, cam.width, 3), np.uint8)
                base[:] = canvas
            else:
                base = frame if scale == 1.0 else _resize(frame, cam.width, cam.height)
            present = [(k, lookup[number]) for k, lookup in enumerate(lookups) if number in lookup]
            plain = np.empty((cam.height, cam.width * (1 + len(views)), 3), np.uint8)
            plain[:] = canvas
            plain[:, :cam.width] = base
            if not present:
                yield plain
                continue
            renderer.set_meshes([sources[k][i] for k, i in present])
            layers = [Layer(slot, PERSON_COLORS[k % len(PERSON_COLORS)]) for slot, (k, _) in enumerate(present)]
            panels = [Panel(cam, layers)] + [Panel(view_cams[v][number - first], layers) for v in views]
            rgba = renderer.render_panels(panels, alpha=True)
            a = rgba[..., 3:4].astype(np.float32) / 255.0
            a[:, :cam.width] *= opacity  # the overlay is translucent, the extra views opaque
            out = (plain.astype(np.float32) * (1 - a) + rgba[..., :3].astype(np.float32) * a).round().astype(np.uint8)
            if keypoints:
                for k, i in present:
                    kp = results[k].keypoints_2d
                    if kp is not None:
                        out[:, :cam.width] = draw_keypoints(kp[i], pixels, cam.width, cam.height, line_width=line,
                                                            base=np.ascontiguousarray(out[:, :cam.width]))
            for p, v in enumerate(views, start=1):
                _label(out, p * cam.width, v)
            yield out
    finally:
        renderer.close()


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize (the overlay's background, when drawn smaller than the video)."""
    rows = (np.arange(height) * frame.shape[0] / height).astype(int)
    cols = (np.arange(width) * frame.shape[1] / width).astype(int)
    return frame[rows][:, cols]


def write_overlay(out: str | Path, results: Sequence[MeshResult], K: np.ndarray, width: int, height: int,
                  background: Iterator[np.ndarray] | None = None, fps: float | None = None,
                  max_side: int = 1280, body: Any = None, keypoints: bool = False,
                  views: Sequence[str] = ()) -> Path:
    """:func:`overlay_frames` to an mp4 (atomically), the overlay drawn at most ``max_side`` pixels on its longer
    side."""
    scale = min(1.0, max_side / max(width, height))
    frames = overlay_frames(results, K, width, height, background, scale=scale, body=body, keypoints=keypoints,
                            views=views)
    return write_frames(out, frames, fps or results[0].fps)


def render_video(out: str | Path, pred: MeshResult, gt: MeshResult | None = None,
                 options: VideoOptions | None = None) -> Path:
    """Render :func:`video_frames` to ``out`` (mp4, atomically: a temp file renamed when complete)."""
    opt = options or VideoOptions()
    return write_frames(out, video_frames(pred, gt, opt), opt.fps or pred.fps)


def write_frames(out: str | Path, frames: Iterator[np.ndarray], fps: float) -> Path:
    """Write ``frames`` (H, W, 3) uint8 to the mp4 ``out`` atomically (a temp file renamed when complete)."""
    writer: VideoWriter | None = None
    ok = False
    try:
        for frame in frames:
            if writer is None:
                writer = VideoWriter(out, frame.shape[1], frame.shape[0], fps)
            writer.write(frame)
        ok = True
    finally:
        if writer is not None:
            writer.close(keep=ok)
    if writer is None:
        raise RenderError(f"{out}: no frames to write")
    return writer.path
