"""Mesh fine-tuning step time and peak memory at batch 32 x 16 frames for the SSR-STF-B backbone on this CPU.

Run: ``.venv/bin/python benchmarks/train_step.py [--variant B] [--batch 32] [--frames 16] [--steps 3] [--threads 2]``

One step = forward (encoder, head, body model for prediction and ground truth), the default loss, backward, AdamW.
Peak memory is the process's maximum resident set size (``ru_maxrss``) before and after the steps.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from body_models import load_body_model, load_mean_params
from body_models.rotations import axis_angle_to_rotmat
from mesh.head import HeadConfig
from mesh.losses import loss_preset, mesh_loss
from mesh.model import MeshRecovery, pose_body
from motion.encoders import build_encoder, count_parameters


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="B")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    body = load_body_model()
    model = MeshRecovery(build_encoder("ssrstf", {"variant": args.variant}), body, load_mean_params(), HeadConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    weights = loss_preset("default")
    b, t = args.batch, args.frames
    x = torch.randn(b, t, 17, 3)
    with torch.no_grad():
        gt = pose_body(body, axis_angle_to_rotmat(torch.randn(b, t, 24, 3) * 0.2), torch.randn(b, t, 10))
    before = rss_mb()
    times = []
    for _ in range(args.steps + 1):  # the first step warms up allocators
        start = time.perf_counter()
        loss, _ = mesh_loss(model(x), gt, weights, body.faces)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    step = sorted(times[1:])[len(times[1:]) // 2]
    print(f"SSR-STF-{args.variant} mesh model ({count_parameters(model) / 1e6:.1f}M parameters, body model "
          f"{body.num_vertices} vertices), batch {b} x {t} frames, {args.threads} threads:")
    print(f"  step time {step:.2f} s (median of {args.steps}), {b * t / step:.0f} frames/s")
    print(f"  peak resident memory {rss_mb():.0f} MB (before the steps: {before:.0f} MB)")


if __name__ == "__main__":
    main()
