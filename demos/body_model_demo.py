"""Show the body model in three poses and two shapes (front view), saved as a PNG.

Run: ``.venv/bin/python demos/body_model_demo.py [--smpl PATH] [--out runs/quickstart/body_model.png]``

Uses whatever body model resolves (explicit path > $SMPL_MODEL_DIR > the embedded open default). Drawing is a
flat-shaded orthographic projection with matplotlib (painter's algorithm): enough to see the body; videos and
proper rendering are ``mesh.render``'s job.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import PolyCollection

from body_models import SMPL24, load_body_model


def demo_poses() -> dict[str, torch.Tensor]:
    """Three (24, 3) axis-angle poses: T-pose, a walking step, a crouch with a raised arm."""
    s = SMPL24.index
    poses = {name: torch.zeros(24, 3) for name in ("T-pose (zero)", "walking step", "crouch, reach")}
    walk = poses["walking step"]
    walk[s("left_hip"), 0], walk[s("right_hip"), 0] = -0.5, 0.35
    walk[s("left_knee"), 0], walk[s("right_knee"), 0] = 0.4, 0.6
    walk[s("left_shoulder"), 2], walk[s("right_shoulder"), 2] = -1.2, 1.2  # arms down
    walk[s("left_shoulder"), 1], walk[s("right_shoulder"), 1] = 0.3, 0.3
    walk[s("left_elbow"), 1], walk[s("right_elbow"), 1] = -0.3, 0.3
    crouch = poses["crouch, reach"]
    crouch[s("left_hip"), 0] = crouch[s("right_hip"), 0] = -1.6
    crouch[s("left_knee"), 0] = crouch[s("right_knee"), 0] = 2.0
    crouch[s("left_ankle"), 0] = crouch[s("right_ankle"), 0] = -0.4
    crouch[s("pelvis"), 0] = 0.3
    crouch[s("right_shoulder"), 2] = -0.6 + math.pi / 2 - 0.4  # raised arm
    crouch[s("left_shoulder"), 2] = -1.2
    return poses


def draw_mesh(ax: plt.Axes, vertices: np.ndarray, faces: np.ndarray, color: tuple[float, float, float]) -> None:
    """Flat-shaded front view (camera on +z looking at the body's front), back-to-front painter's order."""
    tri = vertices[faces]  # (F, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    shade = np.clip(np.abs(normals @ light), 0.15, 1.0)
    order = np.argsort(tri[:, :, 2].mean(axis=1))
    colors = np.clip(np.outer(shade[order], color), 0, 1)
    ax.add_collection(PolyCollection(tri[order][:, :, :2], facecolors=colors, edgecolors="none"))
    ax.set_xlim(vertices[:, 0].min() - 0.1, vertices[:, 0].max() + 0.1)
    ax.set_ylim(vertices[:, 1].min() - 0.1, vertices[:, 1].max() + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smpl", default=None, help="model file or folder (default: $SMPL_MODEL_DIR, open default)")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart/body_model.png"))
    args = parser.parse_args(argv)
    body = load_body_model(args.smpl)
    poses = demo_poses()
    shapes = {"betas = 0": torch.zeros(10), "betas[0:2] = (+2, -2)": torch.tensor([2.0, -2.0] + [0.0] * 8)}
    fig, axes = plt.subplots(len(shapes), len(poses), figsize=(4 * len(poses), 4.5 * len(shapes)))
    faces = body.faces.numpy()
    with torch.no_grad():
        for row, (shape_name, betas) in enumerate(shapes.items()):
            out = body.forward_axis_angle(torch.stack(list(poses.values())), betas)
            for col, pose_name in enumerate(poses):
                ax = axes[row, col]
                draw_mesh(ax, out.vertices[col].numpy(), faces, (0.55, 0.7, 0.95) if row == 0 else (0.95, 0.7, 0.5))
                ax.set_title(f"{pose_name}\n{shape_name}", fontsize=10)
    fig.suptitle(f"body model: {body.source}", fontsize=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=80)
    tmp.replace(args.out)  # atomic: never a half-written image
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
