"""Offscreen OpenGL rendering of meshes that share one triangle list (a body model's), for videos and tests.

Replaces MotionBERT's matplotlib ``plot_trisurf`` (~1 fps; docs/protocols.md, in-the-wild inference) with OpenGL.
Backend: a headless OpenGL 3.3 core context (EGL first, OSMesa as fallback; Mesa's llvmpipe software rasteriser runs
everywhere) and a **minimal GL pipeline of our own**: one vertex buffer per mesh slot, re-filled in place every frame
(``glBufferSubData``), vertex normals computed in numpy with a precomputed sparse face->vertex matrix, a small
Lambert + Blinn-Phong shader, back-face culling for closed, outward-wound meshes (the body models), no MSAA by
default, one ``glReadPixels`` per frame for all panels. On a 2-core CPU this is several times faster than the naive
pyrender loop (a new ``pyrender.Mesh`` per frame, its PBR shader and 4x MSAA): see ``benchmarks/render.py``.
:class:`NaivePyrenderRenderer` is that reference, kept for the benchmark and for pixel tests that compare the two.

Coordinates: meshes are given in the **camera frame** (x right, y down, z forward, metres). Cameras are pinhole
cameras whose view frame follows the same convention, so image up is -y and people stand upright. The projection maps
image row 0 to the first row ``glReadPixels`` returns, so frames need no flip.
"""
from __future__ import annotations

import os

# PyOpenGL picks its platform when first imported: choose headless EGL before anything imports OpenGL.
_USER_GL_PLATFORM = os.environ.get("PYOPENGL_PLATFORM")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import ctypes  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

INSTALL_HINT = ("install Mesa's headless OpenGL: 'apt-get install libegl1 libgl1-mesa-dri' (EGL) or "
                "'apt-get install libosmesa6' (OSMesa, then PYOPENGL_PLATFORM=osmesa)")

PRED_COLOR = (0.62, 0.72, 0.88, 1.0)  # light blue (MotionBERT's (166, 188, 218))
GT_COLOR = (0.55, 0.82, 0.55, 1.0)  # green
OVERLAY_GT_ALPHA = 0.45


class RenderError(RuntimeError):
    """Rendering cannot start (no OpenGL context) or its input is wrong; the message is one line."""


# --------------------------------------------------------------------------------------------------- GL context


def _gl() -> Any:
    """The ``OpenGL.GL`` module (imported lazily: after a fallback it is re-imported for the new platform)."""
    from OpenGL import GL

    return GL


def _purge_opengl_modules() -> None:
    """Forget imported PyOpenGL / pyrender modules so that they bind to a new PYOPENGL_PLATFORM on re-import."""
    for name in [m for m in sys.modules if m == "OpenGL" or m.startswith(("OpenGL.", "pyrender"))]:
        del sys.modules[name]


# The platform that last gave a context. Tried first next time, so that after a fallback to OSMesa every later
# context does not purge and re-import PyOpenGL twice (once for a failing EGL, once back to OSMesa).
_WORKING_GL_PLATFORM: str | None = None


def create_gl_context(width: int = 64, height: int = 64) -> Any:
    """A current, headless OpenGL >= 3.3 context: EGL, else OSMesa; raise :class:`RenderError` naming what to
    install when neither works. Returns the platform object (``make_current()``, ``delete_context()``).

    ``PYOPENGL_PLATFORM=egl`` or ``=osmesa`` in the environment at import time selects that platform only. Both give a
    3.3 core profile context (pyrender's ``OSMesaPlatform`` asks OSMesa for one; Mesa's OSMesa provides it)."""
    global _WORKING_GL_PLATFORM
    errors: list[str] = []
    platforms = [_USER_GL_PLATFORM] if _USER_GL_PLATFORM in ("egl", "osmesa") else ["egl", "osmesa"]
    if _WORKING_GL_PLATFORM in platforms:
        platforms.sort(key=lambda name: name != _WORKING_GL_PLATFORM)
    for name in platforms:
        try:
            if os.environ.get("PYOPENGL_PLATFORM") != name:
                # PyOpenGL cannot switch platform in-process: drop the modules bound to the old one and re-import.
                _purge_opengl_modules()
                os.environ["PYOPENGL_PLATFORM"] = name
            if name == "egl":
                from pyrender.platforms.egl import EGLPlatform as Platform
            else:
                from pyrender.platforms.osmesa import OSMesaPlatform as Platform
            platform = Platform(width, height)
            platform.init_context()
            platform.make_current()
            version = _gl().glGetString(_gl().GL_VERSION)
            if version is None:
                raise RuntimeError("context has no GL version")
            _WORKING_GL_PLATFORM = name
            return platform
        except Exception as err:  # any failure (missing library, no device): try the next platform
            errors.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise RenderError(f"cannot create a headless OpenGL context ({'; '.join(errors)}); {INSTALL_HINT}")


def release_gl_context(platform: Any) -> None:
    """Destroy one context. For EGL only the context: ``eglTerminate`` (pyrender's ``delete_context``) would end
    the process-wide display and with it every other renderer's context."""
    if type(platform).__name__ == "EGLPlatform":
        from OpenGL import EGL

        display = getattr(platform, "_egl_display", None)
        context = getattr(platform, "_egl_context", None)
        if display is not None and context is not None:
            EGL.eglMakeCurrent(display, EGL.EGL_NO_SURFACE, EGL.EGL_NO_SURFACE, EGL.EGL_NO_CONTEXT)
            EGL.eglDestroyContext(display, context)
        # pyrender's Platform.__del__ calls delete_context(), which would still terminate the display.
        platform._egl_context = None
        platform._egl_display = None
    else:
        platform.delete_context()


def gl_available() -> tuple[bool, str]:
    """(True, renderer name) if a context can be created here, else (False, reason): for skipping tests."""
    try:
        platform = create_gl_context()
        name = _gl().glGetString(_gl().GL_RENDERER).decode()
        release_gl_context(platform)
        return True, name
    except RenderError as err:
        return False, str(err)


# ------------------------------------------------------------------------------------------------------ cameras


VIEW_ROTATIONS = {
    # world (camera frame of the data) -> view rotation; rows are the view's x (right), y (down), z (forward) axes.
    "front": np.eye(3),
    "side": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),  # from the left of the input camera
    "top": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),  # from above, input camera at the bottom
}


@dataclass
class Camera:
    """Pinhole camera. ``x_view = rotation @ x + translation`` (view frame: x right, y down, z forward), then
    ``u = focal * x / z + cx``, ``v = focal * y / z + cy`` in pixels of a ``width`` x ``height`` image."""

    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    width: int
    height: int
    cx: float | None = None
    cy: float | None = None
    znear: float = 0.05
    zfar: float = 100.0

    def principal(self) -> tuple[float, float]:
        return (self.width / 2 if self.cx is None else self.cx, self.height / 2 if self.cy is None else self.cy)

    def view_matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rotation, self.translation
        return m

    def projection_matrix(self) -> np.ndarray:
        """Clip-space matrix of the view frame; NDC y = 2 v / height - 1, so row 0 of the read-back is image row 0."""
        cx, cy = self.principal()
        n, f = self.znear, self.zfar
        return np.array([[2 * self.focal / self.width, 0.0, 2 * cx / self.width - 1, 0.0],
                         [0.0, 2 * self.focal / self.height, 2 * cy / self.height - 1, 0.0],
                         [0.0, 0.0, (f + n) / (f - n), -2 * f * n / (f - n)],
                         [0.0, 0.0, 1.0, 0.0]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 2) pixel coordinates (u, v) (pixel centres at +0.5)."""
        p = points @ self.rotation.T + self.translation
        cx, cy = self.principal()
        return np.stack([self.focal * p[..., 0] / p[..., 2] + cx, self.focal * p[..., 1] / p[..., 2] + cy], -1)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (edge-padded): a steady camera without lagging behind the motion."""
    if sigma <= 0 or len(x) < 2:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)])
    return np.stack([np.convolve(pad[:, i], k, mode="valid") for i in range(x.shape[1])], 1)


def fit_cameras(sequences: Sequence[np.ndarray | None], view: str = "front", width: int = 512, height: int = 512,
                fov_deg: float = 30.0, margin: float = 1.15, smooth_frames: float = 8.0, point_stride: int = 3
                ) -> list[Camera]:
    """One camera per frame that keeps everything in ``sequences`` framed, for one ``view`` ('front', 'side', 'top').

    Args:
        sequences: (N, V, 3) vertex sequences in the camera frame (frames aligned; None entries ignored, a frame with
            no finite vertex borrows its neighbours' framing).
        point_stride: frame the box of every k-th point (3 for dense meshes; 1 for joints).
    Returns:
        N cameras: the centre follows the bounding box's centre smoothed over ``smooth_frames`` (Gaussian sigma); the
        distance is fixed for the whole sequence (the largest extent fits with ``margin``), so the size stays steady.
    """
    if view not in VIEW_ROTATIONS:
        raise RenderError(f"unknown view {view!r} (choose from {', '.join(VIEW_ROTATIONS)})")
    rot = VIEW_ROTATIONS[view]
    seqs = [np.asarray(s, dtype=np.float32) for s in sequences if s is not None]
    if not seqs:
        raise RenderError("nothing to frame: no vertex sequence given")
    n = len(seqs[0])
    lo = np.full((n, 3), np.inf)
    hi = np.full((n, 3), -np.inf)
    for s in seqs:
        q = s[:, ::point_stride] @ rot.T.astype(np.float32)  # every 3rd vertex of a mesh: the same box, 3x cheaper
        q = np.where(np.isfinite(q), q, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames (no mesh) are expected
            lo = np.fmin(lo, np.nanmin(q, axis=1))
            hi = np.fmax(hi, np.nanmax(q, axis=1))
    ok = np.isfinite(lo).all(1) & np.isfinite(hi).all(1)
    if not ok.any():
        lo, hi, ok = np.full((n, 3), -1.0), np.full((n, 3), 1.0), np.ones(n, bool)
    idx = np.arange(n)
    for arr in (lo, hi):  # empty frames take the nearest framed frame's box
        for c in range(3):
            arr[:, c] = np.interp(idx, idx[ok], arr[ok, c])
    centre = _smooth((lo + hi) / 2, smooth_frames)
    aspect = width / height
    half = np.maximum(np.abs(hi[:, :2] - centre[:, :2]), np.abs(lo[:, :2] - centre[:, :2]))  # (N, 2)
    half_h = float(max(half[:, 0].max() / aspect, half[:, 1].max(), 1e-3)) * margin
    depth_half = float(np.max(np.maximum(hi[:, 2] - centre[:, 2], centre[:, 2] - lo[:, 2])))
    tan = np.tan(np.deg2rad(fov_deg) / 2)
    dist = half_h / tan + depth_half  # the nearest surface (centre - depth_half) still fits
    focal = height / 2 / tan
    cams = []
    for c in centre:
        t = np.array([-c[0], -c[1], dist - c[2]])
        cams.append(Camera(rotation=rot, translation=t, focal=focal, width=width, height=height,
                           znear=max(0.01, (dist - 2 * depth_half) * 0.5), zfar=dist + 4 * depth_half + 10.0))
    return cams




# -------------------------------------------------------------------------------------------------- the renderer


class VertexNormals:
    """Area-weighted vertex normals for a fixed triangle list, vectorised: face normals (structure-of-arrays cross
    products) scattered to vertices by a precomputed sparse (V, F) incidence matrix (one sparse product)."""

    def __init__(self, faces: np.ndarray, num_vertices: int) -> None:
        faces = np.asarray(faces, dtype=np.int64)
        self.f0, self.f1, self.f2 = (np.ascontiguousarray(faces[:, i]) for i in range(3))
        nf = len(faces)
        self.incidence = sp.csr_matrix((np.ones(3 * nf, np.float32), (faces.reshape(-1), np.repeat(np.arange(nf), 3))),
                                       shape=(num_vertices, nf))

    def __call__(self, vertices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(V, 3) float32 -> unit normals (V, 3), written into ``out`` (may be a strided view) when given."""
        x, y, z = np.ascontiguousarray(vertices.T, dtype=np.float32)
        ax, ay, az = x[self.f0], y[self.f0], z[self.f0]
        e1x, e1y, e1z = x[self.f1] - ax, y[self.f1] - ay, z[self.f1] - az
        e2x, e2y, e2z = x[self.f2] - ax, y[self.f2] - ay, z[self.f2] - az
        fn = np.stack([e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x], axis=1)
        vn = self.incidence @ fn
        vn *= (1.0 / (np.sqrt(np.einsum("ij,ij->i", vn, vn)) + 1e-12))[:, None]
        if out is None:
            return vn
        out[...] = vn
        return out


_VERTEX_SHADER = """
#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec3 normal;
uniform mat4 view;
uniform mat4 proj;
out vec3 v_pos;
out vec3 v_normal;
void main() {
    vec4 p = view * vec4(position, 1.0);
    v_pos = p.xyz;
    v_normal = mat3(view) * normal;
    gl_Position = proj * p;
}
"""

_FRAGMENT_SHADER = """
#version 330 core
in vec3 v_pos;
in vec3 v_normal;
uniform vec4 color;
out vec4 frag;
void main() {
    vec3 n = normalize(v_normal);
    vec3 v = normalize(-v_pos);
    if (dot(n, v) < 0.0) n = -n;  // two-sided (the view frame's y flip makes gl_FrontFacing unreliable)
    // View frame: x right, y down, z forward. Key light above-left of the camera, weaker fill from the right.
    vec3 key = normalize(vec3(-0.4, -0.7, -1.0));
    vec3 fill = normalize(vec3(0.7, -0.1, -0.6));
    float diffuse = 0.7 * max(dot(n, key), 0.0) + 0.25 * max(dot(n, fill), 0.0);
    float spec = pow(max(dot(n, normalize(key + v)), 0.0), 40.0);
    frag = vec4(color.rgb * (0.28 + diffuse) + 0.12 * spec, color.a);
}
"""


@dataclass
class Layer:
    """One mesh slot drawn in a panel, in an RGBA colour (alpha < 1: translucent, drawn after the opaque ones)."""

    mesh: int
    color: tuple[float, float, float, float] = PRED_COLOR


@dataclass
class Panel:
    """One ``width`` x ``height`` tile of the frame: a camera and the layers it shows."""

    camera: Camera
    layers: Sequence[Layer] = field(default_factory=lambda: [Layer(0)])


class MeshRenderer:
    """Renders meshes that share one triangle list (a body model's faces), reusing all GL objects across frames.

    Per frame: :meth:`set_meshes` uploads each slot's vertices (and normals) into its existing buffer, then
    :meth:`render_panels` draws any number of panels side by side into one framebuffer and reads it back once.
    :meth:`render` does both for the common one-panel case.

    Args:
        faces: (F, 3) triangle indices (shared by all slots).
        width, height: size of one panel in pixels.
        bg_color: RGB in [0, 1].
        samples: MSAA samples (0 = off: the fastest on software GL; 4 smooths edges at ~3x the cost).
        cull_back_faces: skip triangles facing away (about half: ~1.6x faster); only correct for closed,
            outward-wound meshes such as the body models. None = decide from the first mesh (winding-consistent
            and positive volume).
    """

    def __init__(self, faces: np.ndarray, width: int = 512, height: int = 512,
                 bg_color: tuple[float, float, float] = (1.0, 1.0, 1.0), samples: int = 0,
                 cull_back_faces: bool | None = None) -> None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise RenderError(f"faces must be a non-empty (F, 3) integer array, got shape {faces.shape}")
        if width < 1 or height < 1:
            raise RenderError(f"panel size must be positive, got {width}x{height}")
        self.faces = faces.astype(np.uint32)
        self.num_vertices = int(faces.max()) + 1
        self.width, self.height = int(width), int(height)
        self.bg_color = tuple(float(c) for c in bg_color)
        self.samples = int(samples)
        self.cull_back_faces = cull_back_faces
        self._normals = VertexNormals(self.faces, self.num_vertices)
        self._platform = create_gl_context(self.width, self.height)
        gl = _gl()
        self._gl = gl
        self._program = self._build_program()
        self._uniforms = {k: gl.glGetUniformLocation(self._program, k) for k in ("view", "proj", "color")}
        self._ebo = gl.glGenBuffers(1)
        gl.glBindBuffer(gl.GL_ELEMENT_ARRAY_BUFFER, self._ebo)
        gl.glBufferData(gl.GL_ELEMENT_ARRAY_BUFFER, self.faces.nbytes, self.faces, gl.GL_STATIC_DRAW)
        self._slots: list[tuple[int, int]] = []  # (vao, vbo) per mesh slot
        self._present: list[bool] = []
        self._staging = np.empty((self.num_vertices, 6), np.float32)  # interleaved position | normal
        self._fbos: list[int] = []
        self._rbs: list[int] = []
        self._fbo_size = (0, 0)
        self._pixels = np.empty((0, 0, 4), np.uint8)

    # -- GL objects ---------------------------------------------------------------------------------------------

    def _build_program(self) -> int:
        gl = self._gl

        def compile_(src: str, kind: int) -> int:
            shader = gl.glCreateShader(kind)
            gl.glShaderSource(shader, src)
            gl.glCompileShader(shader)
            if not gl.glGetShaderiv(shader, gl.GL_COMPILE_STATUS):
                raise RenderError(f"shader compile failed: {gl.glGetShaderInfoLog(shader).decode().strip()}")
            return shader

        program = gl.glCreateProgram()
        for src, kind in ((_VERTEX_SHADER, gl.GL_VERTEX_SHADER), (_FRAGMENT_SHADER, gl.GL_FRAGMENT_SHADER)):
            gl.glAttachShader(program, compile_(src, kind))
        gl.glLinkProgram(program)
        if not gl.glGetProgramiv(program, gl.GL_LINK_STATUS):
            raise RenderError(f"shader link failed: {gl.glGetProgramInfoLog(program).decode().strip()}")
        return program

    def _slot(self, i: int) -> tuple[int, int]:
        gl = self._gl
        while len(self._slots) <= i:
            vao = gl.glGenVertexArrays(1)
            gl.glBindVertexArray(vao)
            vbo = gl.glGenBuffers(1)
            gl.glBindBuffer(gl.GL_ARRAY_BUFFER, vbo)
            gl.glBufferData(gl.GL_ARRAY_BUFFER, self._staging.nbytes, None, gl.GL_DYNAMIC_DRAW)
            gl.glVertexAttribPointer(0, 3, gl.GL_FLOAT, gl.GL_FALSE, 24, ctypes.c_void_p(0))
            gl.glEnableVertexAttribArray(0)
            gl.glVertexAttribPointer(1, 3, gl.GL_FLOAT, gl.GL_FALSE, 24, ctypes.c_void_p(12))
            gl.glEnableVertexAttribArray(1)
            gl.glBindBuffer(gl.GL_ELEMENT_ARRAY_BUFFER, self._ebo)  # element binding is VAO state
            gl.glBindVertexArray(0)
            self._slots.append((vao, vbo))
            self._present.append(False)
        return self._slots[i]

    def _framebuffer(self, width: int, height: int) -> None:
        """(Re)create the framebuffers for a ``width`` x ``height`` canvas: [draw (MSAA if any), resolve]."""
        if self._fbo_size == (width, height):
            return
        gl = self._gl
        self._delete_framebuffer()
        for samples in ([self.samples, 0] if self.samples else [0]):
            fbo = gl.glGenFramebuffers(1)
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fbo)
            attachments = ((gl.GL_RGBA8, gl.GL_COLOR_ATTACHMENT0), (gl.GL_DEPTH_COMPONENT24, gl.GL_DEPTH_ATTACHMENT))
            for fmt, attach in attachments:
                rb = gl.glGenRenderbuffers(1)
                gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, rb)
                if samples:
                    gl.glRenderbufferStorageMultisample(gl.GL_RENDERBUFFER, samples, fmt, width, height)
                else:
                    gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, fmt, width, height)
                gl.glFramebufferRenderbuffer(gl.GL_FRAMEBUFFER, attach, gl.GL_RENDERBUFFER, rb)
                self._rbs.append(rb)
            if gl.glCheckFramebufferStatus(gl.GL_FRAMEBUFFER) != gl.GL_FRAMEBUFFER_COMPLETE:
                raise RenderError(f"framebuffer {width}x{height} (MSAA {samples}) is incomplete")
            self._fbos.append(fbo)
        self._fbo_size = (width, height)
        self._pixels = np.empty((height, width, 4), np.uint8)

    def _delete_framebuffer(self) -> None:
        gl = self._gl
        if self._fbos:
            gl.glDeleteFramebuffers(len(self._fbos), self._fbos)
        if self._rbs:
            gl.glDeleteRenderbuffers(len(self._rbs), self._rbs)
        self._fbos, self._rbs = [], []
        self._fbo_size = (0, 0)

    # -- per frame ----------------------------------------------------------------------------------------------

    def set_meshes(self, meshes: Sequence[np.ndarray | None]) -> None:
        """Upload this frame's meshes, one (V, 3) array (camera frame, metres) or None (absent) per slot."""
        gl = self._gl
        self._platform.make_current()
        for i, v in enumerate(meshes):
            self._slot(i)
            if v is None:
                self._present[i] = False
                continue
            v = np.asarray(v)
            if v.shape != (self.num_vertices, 3):
                raise RenderError(f"mesh {i} has shape {v.shape}, the faces need ({self.num_vertices}, 3)")
            if not np.isfinite(v).all():
                self._present[i] = False  # a frame without a valid mesh renders as background
                continue
            if self.cull_back_faces is None:
                self.cull_back_faces = _closed_outward(v, self.faces)
            self._staging[:, :3] = v
            self._normals(self._staging[:, :3], out=self._staging[:, 3:])
            gl.glBindBuffer(gl.GL_ARRAY_BUFFER, self._slots[i][1])
            gl.glBufferSubData(gl.GL_ARRAY_BUFFER, 0, self._staging.nbytes, self._staging)
            self._present[i] = True
        for i in range(len(meshes), len(self._present)):
            self._present[i] = False

    def render_panels(self, panels: Sequence[Panel], alpha: bool = False) -> np.ndarray:
        """Draw ``panels`` left to right with the meshes of the last :meth:`set_meshes`; (H, W * len, 3) uint8, or
        with ``alpha`` (H, W * len, 4) whose 4th channel is the coverage (0 where only background shows)."""
        gl = self._gl
        self._platform.make_current()
        w, h = self.width, self.height
        self._framebuffer(w * len(panels), h)
        draw_fbo = self._fbos[0]
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, draw_fbo)
        gl.glViewport(0, 0, w * len(panels), h)
        gl.glClearColor(*self.bg_color, 0.0 if alpha else 1.0)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT | gl.GL_DEPTH_BUFFER_BIT)
        gl.glUseProgram(self._program)
        gl.glEnable(gl.GL_DEPTH_TEST)
        gl.glDepthFunc(gl.GL_LESS)
        if self.cull_back_faces:
            gl.glEnable(gl.GL_CULL_FACE)
            gl.glCullFace(gl.GL_BACK)
            gl.glFrontFace(gl.GL_CW)  # the projection flips y, which flips the winding of front faces
        else:
            gl.glDisable(gl.GL_CULL_FACE)
        count = self.faces.size
        for p, panel in enumerate(panels):
            gl.glViewport(p * w, 0, w, h)
            cam = panel.camera
            gl.glUniformMatrix4fv(self._uniforms["view"], 1, gl.GL_TRUE, cam.view_matrix().astype(np.float32))
            gl.glUniformMatrix4fv(self._uniforms["proj"], 1, gl.GL_TRUE, cam.projection_matrix().astype(np.float32))
            layers = [ly for ly in panel.layers if ly.mesh < len(self._present) and self._present[ly.mesh]]
            for layer in sorted(layers, key=lambda ly: ly.color[3] < 1.0):  # opaque first
                gl.glBindVertexArray(self._slots[layer.mesh][0])
                if layer.color[3] < 1.0:
                    # Depth pre-pass, then colour where depth is equal: each pixel blends the nearest surface once.
                    gl.glColorMask(gl.GL_FALSE, gl.GL_FALSE, gl.GL_FALSE, gl.GL_FALSE)
                    gl.glDrawElements(gl.GL_TRIANGLES, count, gl.GL_UNSIGNED_INT, None)
                    gl.glColorMask(gl.GL_TRUE, gl.GL_TRUE, gl.GL_TRUE, gl.GL_TRUE)
                    gl.glEnable(gl.GL_BLEND)
                    gl.glBlendFunc(gl.GL_SRC_ALPHA, gl.GL_ONE_MINUS_SRC_ALPHA)
                    gl.glDepthFunc(gl.GL_LEQUAL)
                    gl.glDepthMask(gl.GL_FALSE)
                gl.glUniform4f(self._uniforms["color"], *layer.color)
                gl.glDrawElements(gl.GL_TRIANGLES, count, gl.GL_UNSIGNED_INT, None)
                if layer.color[3] < 1.0:
                    gl.glDisable(gl.GL_BLEND)
                    gl.glDepthFunc(gl.GL_LESS)
                    gl.glDepthMask(gl.GL_TRUE)
        gl.glBindVertexArray(0)
        if self.samples:  # resolve MSAA into the single-sample framebuffer
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, draw_fbo)
            gl.glBindFramebuffer(gl.GL_DRAW_FRAMEBUFFER, self._fbos[1])
            gl.glBlitFramebuffer(0, 0, w * len(panels), h, 0, 0, w * len(panels), h, gl.GL_COLOR_BUFFER_BIT,
                                 gl.GL_NEAREST)
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, self._fbos[1])
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
        # RGBA is Mesa's native layout: a plain copy, several times faster than reading RGB.
        gl.glReadPixels(0, 0, w * len(panels), h, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, self._pixels)
        return self._pixels.copy() if alpha else self._pixels[..., :3].copy()

    def render(self, vertices: np.ndarray | Sequence[np.ndarray | None] | None, camera: Camera,
               colors: Sequence[tuple[float, float, float, float]] | None = None) -> np.ndarray:
        """One panel: ``vertices`` (V, 3), or a list of meshes drawn together in ``colors``; (H, W, 3) uint8."""
        meshes = [vertices] if vertices is None or (isinstance(vertices, np.ndarray) and vertices.ndim == 2) \
            else list(vertices)
        colors = list(colors) if colors is not None else [PRED_COLOR, GT_COLOR][:len(meshes)] + \
            [PRED_COLOR] * max(0, len(meshes) - 2)
        self.set_meshes(meshes)
        return self.render_panels([Panel(camera, [Layer(i, c) for i, c in enumerate(colors)])])

    def close(self) -> None:
        """Release the GL objects and the context."""
        if self._platform is None:
            return
        gl = self._gl
        try:
            self._platform.make_current()
            self._delete_framebuffer()
            for vao, vbo in self._slots:
                gl.glDeleteVertexArrays(1, [vao])
                gl.glDeleteBuffers(1, [vbo])
            gl.glDeleteBuffers(1, [self._ebo])
            gl.glDeleteProgram(self._program)
            release_gl_context(self._platform)
        finally:
            self._platform = None

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _closed_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether back-face culling is safe: every edge shared by exactly two faces in opposite directions, and a
    positive signed volume (outward normals)."""
    f = faces.astype(np.int64)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    nv = int(f.max()) + 1
    directed = np.unique(edges[:, 0] * nv + edges[:, 1])
    if len(directed) != len(edges):  # an edge used twice in the same direction: inconsistent winding
        return False
    reverse = edges[:, 1] * nv + edges[:, 0]
    if not np.isin(reverse, directed).all():  # an open boundary: back faces could show through the hole
        return False
    tri = vertices[f].astype(np.float64)
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    return bool(volume > 0)


class NaivePyrenderRenderer:
    """The naive pyrender loop (a new ``pyrender.Mesh`` per frame, pyrender's PBR shading and 4x MSAA), with the
    same :class:`Camera` convention: the baseline of ``benchmarks/render.py`` and the reference of pixel tests."""

    def __init__(self, width: int = 512, height: int = 512,
                 bg_color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        release_gl_context(create_gl_context())  # the same fallback logic and error as MeshRenderer
        import pyrender

        self._pyrender = pyrender
        self.width, self.height = width, height
        self.renderer = pyrender.OffscreenRenderer(width, height)
        self.scene = pyrender.Scene(bg_color=[*bg_color, 1.0], ambient_light=[0.3, 0.3, 0.3])
        self.light = self.scene.add(pyrender.DirectionalLight(intensity=3.0), pose=np.diag([1.0, -1.0, -1.0, 1.0]))
        self.cam_node: Any = None
        self.mesh_nodes: list[Any] = []

    def render(self, vertices: Sequence[np.ndarray], faces: np.ndarray, camera: Camera,
               colors: Sequence[tuple[float, float, float, float]] = (PRED_COLOR,)) -> np.ndarray:
        import trimesh

        pr = self._pyrender
        for node in self.mesh_nodes:
            self.scene.remove_node(node)
        self.mesh_nodes = []
        for v, c in zip(vertices, colors, strict=False):
            mat = pr.MetallicRoughnessMaterial(baseColorFactor=list(c), metallicFactor=0.0, roughnessFactor=0.8,
                                               alphaMode="BLEND" if c[3] < 1 else "OPAQUE")
            mesh = pr.Mesh.from_trimesh(trimesh.Trimesh(v, faces, process=False), material=mat, smooth=True)
            self.mesh_nodes.append(self.scene.add(mesh))
        # pyrender cameras look down -z with y up: pose = inverse(view) with the y and z axes flipped.
        view_inv = np.linalg.inv(camera.view_matrix())
        pose = view_inv @ np.diag([1.0, -1.0, -1.0, 1.0])
        cx, cy = camera.principal()
        # Our image rows grow downwards with +y; pyrender's cy counts from the top as well.
        cam = pr.IntrinsicsCamera(camera.focal, camera.focal, cx, cy, znear=camera.znear, zfar=camera.zfar)
        if self.cam_node is not None:
            self.scene.remove_node(self.cam_node)
        self.cam_node = self.scene.add(cam, pose=pose)
        self.scene.set_pose(self.light, pose)
        color, _ = self.renderer.render(self.scene)
        return color

    def close(self) -> None:
        """Free pyrender's GL objects and its context (without terminating the shared EGL display)."""
        r = self.renderer
        if r is None:
            return
        r._platform.make_current()
        r._renderer.delete()
        release_gl_context(r._platform)
        r._renderer = r._platform = None
        self.renderer = None
