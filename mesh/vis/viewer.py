"""One self-contained ``viewer.html`` per result: the animated mesh in any browser, offline.

The page carries everything inline: three.js (bundled from the npm registry at build time, MIT licence in
``mesh/vis/assets/viewer/THREE_LICENSE``; ``scripts/build_viewer.sh`` rebuilds it) and the track as the same animated,
skinned glb that :func:`mesh.io.export.write_glb` writes (base64), so it opens from disk, by e-mail or from any static
host with no network. Controls: play / pause, a frame scrubber, speed, the frame number, an orbit camera (drag, wheel),
and, when a ground-truth track is given, a toggle for it and a per-frame error readout.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

import numpy as np

from body_models import BodyModel
from mesh.io.export import MeshResult, _atomic_file, write_glb

ASSETS = Path(__file__).resolve().parent / "assets" / "viewer"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html, body {{ margin: 0; height: 100%; font: 14px system-ui, sans-serif; background: #f2f2f2; }}
#bar {{ position: fixed; left: 0; right: 0; bottom: 0; display: flex; gap: 12px; align-items: center;
        padding: 8px 12px; background: rgba(255, 255, 255, 0.92); border-top: 1px solid #ccc; }}
#scrub {{ flex: 1; }}
#title {{ position: fixed; top: 8px; left: 12px; color: #333; }}
#view {{ width: 100%; height: 100%; display: block; }}
</style></head>
<body>
<div id="title">{title}</div>
<canvas id="view"></canvas>
<div id="bar">
  <button id="play">pause</button>
  <input id="scrub" type="range" min="0" max="0" value="0" aria-label="frame">
  <span id="frame">frame 0</span>
  <label>speed <select id="speed"><option>0.25</option><option>0.5</option><option selected>1</option>
    <option>2</option><option>4</option></select></label>
  <label><input id="show-gt" type="checkbox" checked> ground truth</label>
  <span id="error"></span>
</div>
<script type="application/json" id="viewer-data">{data}</script>
<script>{bundle}</script>
<!-- three.js: MIT licence, Copyright (c) 2010-2026 three.js authors -->
</body></html>
"""


def _glb_base64(result: MeshResult, body: BodyModel) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "track.glb"
        write_glb(path, result, body)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def write_viewer(path: str | Path, result: MeshResult, body: BodyModel, gt: MeshResult | None = None,
                 errors_mm: np.ndarray | None = None, error_name: str = "MPVE", title: str = "mesh") -> Path:
    """Write ``viewer.html`` for ``result`` (and ``gt``, drawn translucent green; ``errors_mm`` (N,) per frame of
    ``result``, shown as ``error_name``), atomically."""
    frames = [int(f) for f in np.asarray(result.frame_index)]
    if errors_mm is not None and len(errors_mm) != len(frames):
        raise ValueError(f"errors_mm has {len(errors_mm)} values for {len(frames)} frames")
    data = {"title": title, "fps": float(result.fps), "frames": frames, "pred_glb": _glb_base64(result, body),
            "gt_glb": _glb_base64(gt, body) if gt is not None else None, "error_name": error_name,
            "errors_mm": None if errors_mm is None else
            [round(float(e), 2) if np.isfinite(e) else None for e in errors_mm]}  # undefined frames: null
    page = _PAGE.format(title=html.escape(title), data=json.dumps(data).replace("</", "<\\/"),
                        bundle=(ASSETS / "viewer.bundle.js").read_text())
    return _atomic_file(Path(path), lambda f: f.write(page.encode("utf-8")))
