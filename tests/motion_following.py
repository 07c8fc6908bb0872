"""How much of the ground truth's motion a mesh model's predictions follow, read through the real detector-file path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def motion_r2(checkpoint: Path | None, mesh_file: Path, out: Path, tracks: int = 3) -> float:
    """R^2 of the ground truth's motion explained by ``mesh.infer``'s per-frame H36M joints, over the first test
    tracks of ``mesh_file`` exported as detector JSON (``mesh.io.keypoints``) and read back:
    ``1 - sum |(p - mean_t p) - (g - mean_t g)|^2 / sum |g - mean_t g|^2`` with p, g pelvis-relative camera-frame
    joints. A constant pose scores 0 whatever it is; a perfect one 1. ``checkpoint`` None = mesh.infer's default."""
    from mesh.infer import main as infer
    from mesh.io.keypoints import synthetic_to_json

    data = pickle.loads(mesh_file.read_bytes())["test"]
    num = den = 0.0
    for name in list(dict.fromkeys(data["source"].tolist()))[:tracks]:
        kp = synthetic_to_json(mesh_file, out / f"{name}.json", "test", name)
        ckpt = [] if checkpoint is None else ["--checkpoint", str(checkpoint)]
        assert infer(["--keypoints", str(kp), *ckpt, "--out", str(out / f"infer_{name}"), "--no-render",
                      "--device", "cpu"]) == 0
        pred = np.load(out / f"infer_{name}" / "person_0" / "result.npz")["joints_h36m"].astype(np.float64)
        gt = data["joint_cam"][data["source"] == name].astype(np.float64)
        pred, gt = pred - pred[:, :1], gt - gt[:, :1]
        dp, dg = pred - pred.mean(axis=0), gt - gt.mean(axis=0)
        num += float(((dp - dg) ** 2).sum())
        den += float((dg**2).sum())
    return 1.0 - num / den
