"""Time to evaluate a 3DPW-test-sized set (35,515 frames) with the SSR-STF-B mesh model on this machine.

Run: ``.venv/bin/python benchmarks/evaluate.py [--frames 35515] [--variant B] [--bf16] [--threads 2]``

Inputs are random keypoints and ground-truth SMPL parameters in tracks of ~500 frames (the time does not depend on
their values); the model has random weights. The evaluation is the real one (``mesh.evaluation.protocol.evaluate_mesh``,
MotionBERT protocol: 16-frame clips, flip test, ground-truth meshes from the body model). Target: under 10 minutes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from body_models import load_body_model, load_mean_params
from mesh.data.mesh_data import MeshSplit
from mesh.evaluation.protocol import evaluate_mesh, get_protocol
from mesh.network.head import HeadConfig
from mesh.network.model import MeshRecovery
from motion.encoders import build_encoder, count_parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=35515)
    parser.add_argument("--variant", default="B")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n = args.frames
    tracks = np.repeat(np.arange(n // 500 + 1), 500)[:n]
    split = MeshSplit(inputs=rng.uniform(-1, 1, (n, 17, 3)).astype(np.float32),
                      pose=(rng.normal(size=(n, 72)) * 0.2).astype(np.float32),
                      shape=rng.normal(size=(n, 10)).astype(np.float32),
                      source=np.array([f"track_{t:03d}" for t in tracks]), gender=np.full(n, ""), name="benchmark")
    body = load_body_model()
    model = MeshRecovery(build_encoder("ssrstf", {"variant": args.variant}), body, load_mean_params(),
                         HeadConfig()).eval()
    print(f"SSR-STF-{args.variant} mesh model ({count_parameters(model) / 1e6:.1f}M parameters), body model with "
          f"{body.num_vertices} vertices, {n} frames, {args.threads} threads, "
          f"{'bf16 autocast' if args.bf16 else 'float32'}, flip test on")
    start = time.time()
    ev = evaluate_mesh(model, split, get_protocol("motionbert"), {"neutral": body}, args.batch_size,
                       torch.bfloat16 if args.bf16 else None)
    seconds = time.time() - start
    print(f"evaluated {ev.summary()['frames']} frames in {seconds:.0f} s = {seconds / 60:.1f} min "
          f"({n / seconds:.0f} frames/s); target < 10 min: {'met' if seconds < 600 else 'NOT met'}")


if __name__ == "__main__":
    main()
