"""mesh.render: pixel tests of the GL renderer (geometry lands where the camera model says, empty frames stay
background, overlay colours, agreement with pyrender), the 2D keypoint panel, mp4 output and CLI errors.

Skipped (with the reason) when no headless OpenGL context can be created; with Mesa installed they run.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from body_models import load_body_model
from body_models.rotations import pose_to_rotmats
from mesh import render as render_cli
from mesh.inference.predict import TrackPrediction
from mesh.io import export as ex
from mesh.network.model import pose_body
from mesh.vis import compose as cp
from mesh.vis import renderer as rd

BG = (1.0, 1.0, 1.0)
RED = (1.0, 0.0, 0.0, 1.0)
GREEN = (0.0, 1.0, 0.0, 0.5)


@pytest.fixture(scope="module")
def gl() -> str:
    ok, why = rd.gl_available()
    if not ok:
        pytest.skip(f"no headless OpenGL: {why}")
    return why


@pytest.fixture(scope="module")
def body():
    return load_body_model()


def box(centre: tuple[float, float, float], size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    m = trimesh.creation.box(extents=(size, size, size))
    return (np.asarray(m.vertices) + centre).astype(np.float32), np.asarray(m.faces)


def straight_camera(width: int = 128, height: int = 128, focal: float = 100.0) -> rd.Camera:
    return rd.Camera(rotation=np.eye(3), translation=np.zeros(3), focal=focal, width=width, height=height)


def mask_of(img: np.ndarray) -> np.ndarray:
    return (img != 255).any(axis=-1)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1  # pixel edges: x0, y0, x1, y1


def t_pose(body, n: int = 1) -> np.ndarray:
    pose = torch.zeros(n, 72)
    pose[:, 0] = np.pi  # body y up -> camera frame y down: upright, facing the camera
    out = body.forward_axis_angle(pose, torch.zeros(n, 10))
    return (out.vertices - out.joints_h36m[:, :1]).numpy()


@pytest.mark.parametrize("cull", [True, False])
def test_cube_covers_projected_box(gl: str, cull: bool) -> None:
    v, f = box((0.2, -0.1, 3.0))
    cam = straight_camera()
    with rd.MeshRenderer(f, 128, 128, bg_color=BG, cull_back_faces=cull) as r:
        img = r.render(v, cam, [RED])
    uv = cam.project(v)
    expected = (uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max())  # the near face bounds the box
    np.testing.assert_allclose(bbox(mask_of(img)), expected, atol=1.0)
    # +y is image-down: the box centred at y = -0.1 sits above the image centre.
    assert (expected[1] + expected[3]) / 2 < 64


def test_empty_frames_stay_background(gl: str) -> None:
    v, f = box((0.0, 0.0, 3.0))
    cam = straight_camera()
    with rd.MeshRenderer(f, 96, 64, bg_color=(0.2, 0.4, 0.6)) as r:
        bg = np.array([51, 102, 153], np.uint8)
        assert mask_of(r.render(v, cam)).any()
        for meshes in (None, v - [0, 0, 6.0], np.full_like(v, np.nan)):  # none, behind the camera, invalid
            img = r.render(meshes, cam)
            assert img.shape == (64, 96, 3)
            assert (img == bg).all()


def test_overlay_and_panels(gl: str) -> None:
    left, f = box((-0.6, 0.0, 3.0), 0.6)
    right, _ = box((0.6, 0.0, 3.0), 0.6)
    cam = straight_camera()
    with rd.MeshRenderer(f, 128, 128, bg_color=BG) as r:
        img = r.render([left, right], cam, [RED, GREEN])
        lc, rc = cam.project(np.array([[-0.6, 0, 2.7], [0.6, 0, 2.7]])).astype(int)
        red, green = img[lc[1], lc[0]].astype(int), img[rc[1], rc[0]].astype(int)
        assert red[0] > 150 and red[1] < 60 and red[2] < 60
        # translucent green over white: green channel high, red/blue lifted by the white background
        assert green[1] > 200 and 60 < green[0] < 220 and green[0] == pytest.approx(green[2], abs=3)
        # overlapping meshes: translucent green in front of the opaque red mix both colours
        img = r.render([left, left - [0, 0, 0.5]], cam, [RED, GREEN])
        mixed = img[lc[1], lc[0]].astype(int)
        assert mixed[0] > 60 and mixed[1] > 60 and mixed[2] < 60
        # side-by-side panels share one read-back: each panel shows its own layer
        r.set_meshes([left + np.array([0.6, 0, 0], np.float32), None])
        two = r.render_panels([rd.Panel(cam, [rd.Layer(0, RED)]), rd.Panel(cam, [rd.Layer(0, (0, 0, 1, 1)),
                                                                                 rd.Layer(1, RED)])])
        assert two.shape == (128, 256, 3)
        assert two[64, 64, 0] > 150 and two[64, 64, 2] < 60
        assert two[64, 192, 2] > 150 and two[64, 192, 0] < 60


def test_t_pose_framed_upright(gl: str, body) -> None:
    v = t_pose(body)
    cam = rd.fit_cameras([v], "front", 256, 256)[0]
    with rd.MeshRenderer(body.faces.numpy(), 256, 256) as r:
        img = r.render(v[0], cam)
    x0, y0, x1, y1 = bbox(mask_of(img))
    span, height = np.ptp(v[0, :, 0]), np.ptp(v[0, :, 1])
    assert (x1 - x0) / (y1 - y0) == pytest.approx(span / height, rel=0.06)
    assert abs((x0 + x1) / 2 - 128) < 4 and abs((y0 + y1) / 2 - 128) < 8  # centred
    assert 0.6 * 256 < max(x1 - x0, y1 - y0) < 256  # fills the frame with a margin
    # Upright: the widest rows (the arms) are in the upper half, the feet at the bottom.
    widths = mask_of(img).sum(axis=1)
    assert np.argmax(widths) < 128


def test_matches_pyrender(gl: str, body) -> None:
    v = t_pose(body)[0]
    v = v @ rd.VIEW_ROTATIONS["side"].T @ np.array([[0.8, 0, 0.6], [0, 1, 0], [-0.6, 0, 0.8]])  # a turned body
    cam = rd.fit_cameras([v[None]], "front", 128, 128)[0]
    faces = body.faces.numpy()
    with rd.MeshRenderer(faces, 128, 128) as r:
        ours = mask_of(r.render(v.astype(np.float32), cam))
    naive = rd.NaivePyrenderRenderer(128, 128)
    try:
        ref = mask_of(naive.render([v], faces, cam))
    finally:
        naive.close()
    from scipy.ndimage import binary_erosion

    # Same silhouette up to edge pixels (pyrender anti-aliases its edges with 4x MSAA, we do not by default):
    # each mask, shrunk by one pixel, lies inside the other (but for <1% sub-pixel slivers), and the boxes agree.
    assert (binary_erosion(ours) & ~ref).sum() <= 0.01 * ours.sum()
    assert (binary_erosion(ref) & ~ours).sum() <= 0.01 * ref.sum()
    assert (ours & ref).sum() / (ours | ref).sum() > 0.9
    np.testing.assert_allclose(bbox(ours), bbox(ref), atol=1)


def test_culling_and_msaa_keep_the_silhouette(gl: str, body) -> None:
    v = t_pose(body)[0]
    cam = rd.fit_cameras([v[None]], "front", 128, 128)[0]
    faces = body.faces.numpy()
    images = {}
    for cull, samples in ((True, 0), (False, 0), (True, 4)):
        with rd.MeshRenderer(faces, 128, 128, cull_back_faces=cull, samples=samples) as r:
            images[cull, samples] = r.render(v, cam)
    assert rd._closed_outward(v, faces)  # the default body is closed and outward: culling is safe
    np.testing.assert_array_equal(images[True, 0], images[False, 0])
    a, b = mask_of(images[True, 0]), mask_of(images[True, 4])
    assert (a ^ b).sum() < 0.2 * a.sum()  # MSAA only changes edge pixels


def test_keypoint_panel_draws_bones_at_the_right_pixels() -> None:
    kp = np.zeros((17, 3))
    kp[:, 2] = 1.0
    kp[:, :2] = [100, 50]
    kp[1, :2] = [160, 50]  # right hip: a horizontal bone pelvis -> right hip
    kp[4, :2] = [100, 90]  # left hip: a vertical bone
    kp[5, 2] = 0.0  # low confidence: its bones are not drawn
    kp[5, :2] = [10, 10]
    frame = cp.KeypointFrame.fit(kp, 200, 100, image_size=(200, 100), margin=0.0)
    np.testing.assert_allclose(frame.to_pixels([[160.0, 50.0]]), [[160.0, 50.0]])  # identity mapping
    img = cp.draw_keypoints(kp, frame, 200, 100, line_width=3)
    assert img.shape == (100, 200, 3)
    assert tuple(img[50, 130]) == cp._KP_RIGHT  # middle of the pelvis -> right hip bone
    assert tuple(img[75, 100]) == cp._KP_LEFT  # middle of the pelvis -> left hip bone
    assert tuple(img[30, 55]) == (255, 255, 255)  # on the line towards the dropped joint: nothing
    fitted = cp.KeypointFrame.fit(kp, 200, 100)  # without image size: fit the confident keypoints
    px = fitted.to_pixels(kp[[0, 1, 4], :2])
    assert px.min() >= 0 and px[:, 0].max() <= 200 and px[:, 1].max() <= 100


def _result(body, n: int, frame_index: np.ndarray, shift: float = 0.0) -> ex.MeshResult:
    pose = torch.zeros(n, 72)
    pose[:, 0] = np.pi
    pose[:, 16 * 3 + 2] = torch.linspace(-1, 0, n) + shift
    rot = pose_to_rotmats(pose)

    out = pose_body(body, rot[None], torch.zeros(1, n, 10))
    pred = TrackPrediction(rotmats=rot, betas=torch.zeros(n, 10), vertices=out.vertices[0],
                           joints_h36m=out.joints_h36m[0], joints_smpl=out.joints_smpl[0])
    kp = np.concatenate([out.joints_h36m[0, :, :, :2].numpy() * 200 + 320, np.ones((n, 17, 1))], -1)
    return ex.result_from_prediction(pred, body, frame_index=frame_index, fps=10.0, keypoints_2d=kp,
                                     image_size=(640, 480))


def read_video(path: Path) -> tuple[dict, list[np.ndarray]]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return meta, [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def test_video_written(gl: str, body, tmp_path: Path) -> None:
    pred = _result(body, 4, np.array([0, 1, 3, 4]))
    gt = _result(body, 4, np.array([0, 1, 3, 4]), shift=0.3)
    opt = cp.VideoOptions(size=64, views=("front", "side"))
    out = cp.render_video(tmp_path / "v.mp4", pred, gt, opt)
    meta, frames = read_video(out)
    assert meta["fps"] == 10.0
    assert len(frames) == 5  # frame 2 is missing from the input: an empty frame keeps the timing
    assert frames[0].shape == (64, 64 * 5, 3)  # (GT | pred) x (front, side) + keypoints
    assert mask_of(frames[0][20:, :64]).mean() > 0.05  # something drawn in the first panel...
    assert (frames[2][20:, :256] > 240).all()  # ...and nothing in the gap (codec noise aside)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # the temp file was renamed
    # overlay: one panel per view
    ov = cp.render_video(tmp_path / "o.mp4", pred, gt, cp.VideoOptions(size=64, overlay=True, keypoints=False,
                                                                       fill_gaps=False))
    _, frames = read_video(ov)
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)


def test_cli(gl: str, body, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = _result(body, 3, np.arange(3))
    ex.save_result(tmp_path / "p.npz", pred)
    assert render_cli.main(["--result", str(tmp_path / "p.npz"), "--out", str(tmp_path / "v.mp4"), "--size", "32",
                    "--views", "front,top"]) == 0
    assert (tmp_path / "v.mp4").stat().st_size > 0

    def error(*argv: str) -> str:
        assert render_cli.main([*argv, "--out", str(tmp_path / "x.mp4")]) == 2
        msg = capsys.readouterr().err.strip()
        assert msg.startswith("error:") and "\n" not in msg
        return msg

    assert "no such result file" in error("--result", str(tmp_path / "missing.npz"))
    raw = dict(np.load(tmp_path / "p.npz"))
    np.savez(tmp_path / "nokey.npz", **{k: v for k, v in raw.items() if k != "joints"})
    assert "missing key 'joints'" in error("--result", str(tmp_path / "nokey.npz"))
    np.savez(tmp_path / "faces.npz", **{**raw, "faces": raw["faces"][:, ::-1] + 5})
    assert "body model mismatch" in error("--result", str(tmp_path / "faces.npz"))
    assert "unknown view" in error("--result", str(tmp_path / "p.npz"), "--views", "back")
    assert "give --result FILE.npz, or --data FILE" in error()
    assert "not both" in error("--result", str(tmp_path / "p.npz"), "--checkpoint", str(tmp_path / "c.pt"))
    assert "no such checkpoint" in error("--checkpoint", str(tmp_path / "c.pt"), "--data", str(tmp_path / "d.pkl"))
    with pytest.raises(rd.RenderError, match=r"mesh 0 has shape \(5, 3\)"), \
            rd.MeshRenderer(body.faces.numpy(), 32, 32) as r:
        r.render(np.zeros((5, 3), np.float32), rd.fit_cameras([np.zeros((1, 5, 3))], "front", 32, 32)[0])


def test_no_gl_error_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """When neither EGL nor OSMesa works, the one error says what to install."""
    import importlib

    # Break the platform PyOpenGL is bound to now (EGL by default; OSMesa under PYOPENGL_PLATFORM=osmesa) and allow
    # only that one: switching platform would purge PyOpenGL and re-import an unbroken module.
    current = os.environ["PYOPENGL_PLATFORM"]
    module = importlib.import_module(f"pyrender.platforms.{current}")
    platform = module.EGLPlatform if current == "egl" else module.OSMesaPlatform

    def broken(self, *a: object) -> None:
        raise OSError("libEGL.so.1: cannot open shared object file")

    monkeypatch.setattr(rd, "_USER_GL_PLATFORM", current)
    monkeypatch.setattr(platform, "init_context", broken)
    with pytest.raises(rd.RenderError, match=r"libegl1 libgl1-mesa-dri.*libosmesa6") as err:
        rd.create_gl_context()
    assert "libEGL.so.1" in str(err.value) and "\n" not in str(err.value)


_SCENE = """
import sys
import numpy as np
import torch
from body_models import load_body_model
from mesh.vis import renderer as rd

body = load_body_model()
pose = torch.zeros(1, 72)
pose[:, 0] = np.pi
pose[:, 16 * 3 + 2] = -0.8  # one arm lowered: not symmetric
out = body.forward_axis_angle(pose, torch.zeros(1, 10))
v = (out.vertices - out.joints_h36m[:, :1])[0].numpy()
turned = v @ np.array([[0.8, 0, 0.6], [0, 1, 0], [-0.6, 0, 0.8]])
cam = rd.fit_cameras([np.stack([v, turned])], "front", 128, 128)[0]
images = []
for samples in (0, 4):
    with rd.MeshRenderer(body.faces.numpy(), 128, 128, samples=samples) as r:
        images.append(r.render([v.astype(np.float32), turned.astype(np.float32)], cam,
                               [rd.PRED_COLOR, (0.2, 0.8, 0.3, 0.5)]))
        platform = type(r._platform).__name__
        gl = rd._gl()
        renderer = gl.glGetString(gl.GL_RENDERER).decode()
np.savez(sys.argv[1], images=np.stack(images), platform=platform, renderer=renderer)
"""


def _render_in_subprocess(platform: str, out: Path) -> dict:
    env = {**os.environ, "PYOPENGL_PLATFORM": platform, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    done = subprocess.run([sys.executable, "-c", _SCENE, str(out)], env=env, cwd=root, capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    with np.load(out) as npz:
        return {k: npz[k] for k in npz.files}


def test_osmesa_matches_egl(tmp_path: Path) -> None:
    """The OSMesa fallback renders the same image as EGL (same scene, each in its own process, since PyOpenGL binds
    its platform at import).

    Needs Mesa's OSMesa (``apt-get install libosmesa6``); skipped with the reason otherwise. CI machines do not have
    libosmesa6, so there this test is skipped and the OSMesa path is only checked where it is installed.
    """
    if ctypes.util.find_library("OSMesa") is None:
        pytest.skip("libOSMesa not installed (apt-get install libosmesa6): the OSMesa fallback is not tested here")
    osmesa = _render_in_subprocess("osmesa", tmp_path / "osmesa.npz")
    assert "error" not in osmesa, f"OSMesa render failed: {osmesa.get('error')}"
    assert str(osmesa["platform"]) == "OSMesaPlatform"
    egl = _render_in_subprocess("egl", tmp_path / "egl.npz")
    if "error" in egl:
        pytest.skip(f"no EGL context to compare with: {egl['error']}")
    assert str(egl["platform"]) == "EGLPlatform"
    for a, b in zip(osmesa["images"].astype(float), egl["images"].astype(float), strict=True):
        assert mask_of(a.astype(np.uint8)).mean() > 0.05  # the scene is in view
        # Same image up to rasterisation / precision differences between drivers (identical on Mesa's llvmpipe).
        assert np.abs(a - b).mean() < 2.0, (osmesa["renderer"], egl["renderer"])
        ma, mb = mask_of(a.astype(np.uint8)), mask_of(b.astype(np.uint8))
        assert (ma & mb).sum() / (ma | mb).sum() > 0.98
