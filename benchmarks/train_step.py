"""Mesh fine-tuning step on this CPU: time, its split, CPU time, peak memory and the encoder's share of fp32 peak.

Run: ``.venv/bin/python benchmarks/train_step.py [--variant B] [--depth N] [--head-hidden 1024] [--batch 32]
[--frames 16] [--steps 3] [--warmup 2] [--threads 2] [--vertices 1024] [--no-compare-full] [--malloc tuned]
[--recompute N] [--recompute-mlp] [--micro-batches K]``

One step is what ``mesh.finetune`` does per batch: ground truth posed by the body model (one shape per clip), the
network's forward (encoder, head, body model), the default loss, backward and AdamW. Training poses a fresh random
subset of ``--vertices`` vertices per step (the joints stay exact; 0 = the full mesh), as
``LossWeights.train_vertices`` does; ``--compare-full`` (default) runs the same steps on the full mesh too.
``--recompute N`` stores only the input of the first N encoder blocks and recomputes their activations in backward
(``SSRSTF.recompute_blocks``: memory for time); ``--recompute-mlp`` keeps only each MLP branch's input and
recomputes LayerNorm, fc1 and GELU in backward (``set_recompute_mlp``); ``--micro-batches K`` computes the loss and
backward of K pieces of the batch one after the other before the optimiser step (``loop.micro_batches``: the same
gradient, about 1/K of the activation memory); ``--malloc tuned`` applies :func:`tune_malloc`.

Printed per configuration: median step time with min/max over ``--steps`` timed steps after ``--warmup`` steps;
user/system CPU time and minor page faults of the timed steps (``getrusage``); peak resident memory (``ru_maxrss``,
a high-water mark: the full-mesh figure is the maximum over both runs); and the time split from separate
instrumented steps (per stage the faster of two), cut at detach points so that every backward stage is timed on
its own (synchronous timers).
Last, the encoder's training pass in GFLOP/s (FLOPs counted by ``FlopCounterMode``: matmuls, convolutions and
attention, forward + backward) against this CPU's fp32 peak, measured as a 2048^3 matmul on the same threads.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from body_models import BodyModel, load_body_model, load_mean_params
from body_models.rotations import axis_angle_to_rotmat, rot6d_to_rotmat
from mesh.network.head import HeadConfig
from mesh.network.losses import LossWeights, loss_preset, mesh_loss, train_vertex_ids
from mesh.network.model import MeshRecovery, pose_body
from motion.encoders import build_encoder, count_parameters, set_recompute_blocks, set_recompute_mlp
from motion.training import adamw, micro_slices, tune_malloc


@dataclass
class Batch:
    """One synthetic training batch: input ``x (B, T, 17, 3)``, ground truth ``rotmats (B, T, 24, 3, 3)``, ``betas
    (B, 10)`` (one shape per clip, as the synthetic data and 3DPW have)."""

    x: torch.Tensor
    rotmats: torch.Tensor
    betas: torch.Tensor


def peak_rss_gb() -> float:
    """The process's peak resident set so far, GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train_step(model: MeshRecovery, opt: torch.optim.Optimizer, batch: Batch, weights: LossWeights,
               gen: torch.Generator, micro_batches: int = 1) -> float:
    """One optimisation step as ``MeshTask.loss_parts`` + the training loop run it (``loop.micro_batches`` pieces of
    the batch, each backpropagated before the next is computed); returns the loss."""
    ids = train_vertex_ids(weights, model.body.num_vertices, gen)
    opt.zero_grad(set_to_none=True)
    total = 0.0
    parts = micro_slices(len(batch.x), micro_batches)
    for part in parts:
        share = (part.stop - part.start) / len(batch.x)
        with torch.no_grad():
            gt = pose_body(model.body, batch.rotmats[part], batch.betas[part], vertex_ids=ids)
        loss, _ = mesh_loss(model(batch.x[part], vertex_ids=ids), gt, weights, model.body.faces)
        (loss if len(parts) == 1 else loss * share).backward()
        total += share * float(loss.detach())
    opt.step()
    return total


def instrumented_step(model: MeshRecovery, opt: torch.optim.Optimizer, batch: Batch, weights: LossWeights,
                      gen: torch.Generator) -> dict[str, float]:
    """The same step, timed stage by stage (seconds). The graph is cut at the encoder's output and the head's
    output, so that the backward of losses + body model, of the head and of the encoder are timed separately; the
    gradients are the same as in :func:`train_step`."""
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()  # CPU ops are synchronous: no device sync needed
        times[name] = now - clock
        clock = now

    ids = train_vertex_ids(weights, model.body.num_vertices, gen)
    feat = model.backbone.get_representation(batch.x)
    lap("encoder forward")
    feat_cut = feat.detach().requires_grad_()
    pose6d, betas = model.head(feat_cut)
    rotmats, betas = rot6d_to_rotmat(pose6d.float()), betas.float()
    lap("head forward")
    rot_cut, betas_cut = rotmats.detach().requires_grad_(), betas.detach().requires_grad_()
    with torch.no_grad():
        gt = pose_body(model.body, batch.rotmats, batch.betas, vertex_ids=ids)
    pred = pose_body(model.body, rot_cut, betas_cut, vertex_ids=ids)
    lap("body model forward (pred + gt)")
    loss, _ = mesh_loss(pred, gt, weights, model.body.faces)
    lap("losses forward")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    lap("backward: losses + body model")
    torch.autograd.backward([rotmats, betas], [rot_cut.grad, betas_cut.grad])
    lap("backward: head")
    feat.backward(feat_cut.grad)
    lap("backward: encoder")
    opt.step()
    lap("optimizer")
    return times


def encoder_train_flops(model: MeshRecovery, x: torch.Tensor) -> int:
    """FLOPs of the encoder's forward + backward at input ``x`` (matmul, convolution and attention FLOPs)."""
    counter = FlopCounterMode(display=False)
    with counter:
        feat = model.backbone.get_representation(x)
        feat.backward(torch.ones_like(feat))
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    """This CPU's fp32 matmul throughput on the current threads: best of ``reps`` ``n x n @ n x n`` products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    best = float("inf")
    for _ in range(reps + 2):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def one_piece(batch: Batch, micro_batches: int) -> Batch:
    """The first of ``micro_batches`` pieces of ``batch`` (the whole batch for 1)."""
    part = micro_slices(len(batch.x), micro_batches)[0]
    return Batch(batch.x[part], batch.rotmats[part], batch.betas[part])


def run_steps(model: MeshRecovery, opt: torch.optim.Optimizer, batch: Batch, weights: LossWeights,
              args: argparse.Namespace, label: str) -> tuple[float, dict[str, float]]:
    """Warm-up, timed steps and two instrumented steps; prints the figures; returns the median step and the split."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.warmup):  # the first steps grow the allocator's heap (page faults)
        train_step(model, opt, batch, weights, gen, args.micro_batches)
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        train_step(model, opt, batch, weights, gen, args.micro_batches)
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    rss = peak_rss_gb()
    # per stage, the faster of two instrumented steps: one step is easily disturbed by other work on the machine
    # (with micro-batches: on one piece, so the instrumented step holds no more memory than the timed ones)
    one = one_piece(batch, args.micro_batches)
    runs = [instrumented_step(model, opt, one, weights, gen) for _ in range(2)]
    split = {name: min(run[name] for run in runs) for name in runs[0]}
    median = statistics.median(times)
    frames = batch.x.shape[0] * batch.x.shape[1]
    n = args.steps
    print(f"{label}:")
    print(f"  step: median {median:.2f} s (min {min(times):.2f}, max {max(times):.2f}) over {n} steps after "
          f"{args.warmup} warm-up; {frames / median:.0f} frames/s")
    print(f"  CPU in the timed steps: user {after.ru_utime - before.ru_utime:.1f} s, system "
          f"{after.ru_stime - before.ru_stime:.1f} s; minor page faults "
          f"{(after.ru_minflt - before.ru_minflt) / n:.0f} per step")
    print(f"  peak resident memory {rss:.2f} GB")
    total = sum(split.values())
    of = f"; one of {args.micro_batches} pieces of the batch" if args.micro_batches > 1 else ""
    print(f"  split (per stage the faster of two instrumented steps{of}; sum {total:.2f} s):")
    for name, value in split.items():
        print(f"    {name:32s} {value:7.3f} s  {100 * value / total:5.1f} %")
    mesh = split["body model forward (pred + gt)"] + split["losses forward"] + split["backward: losses + body model"]
    print(f"    {'= body model + losses':32s} {mesh:7.3f} s  {100 * mesh / total:5.1f} %")
    return median, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="B", help="SSR-STF size: XS, S, B, L")
    parser.add_argument("--depth", type=int, default=None, help="override the variant's number of blocks")
    parser.add_argument("--head-hidden", type=int, default=1024, help="SMPL head hidden width")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vertices", type=int, default=1024, help="vertices posed per step (0 = full mesh)")
    parser.add_argument("--compare-full", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the same steps on the full mesh (default: on)")
    parser.add_argument("--malloc", choices=["tuned", "default"], default="default",
                        help="glibc malloc settings: 'tuned' = tune_malloc, as loop.malloc=tuned in the trainers "
                        "(default: glibc's)")
    parser.add_argument("--recompute", type=int, default=0,
                        help="encoder blocks recomputed in backward instead of stored (memory for time)")
    parser.add_argument("--micro-batches", type=int, default=1,
                        help="pieces of the batch per step, each backpropagated before the next (loop.micro_batches)")
    parser.add_argument("--recompute-mlp", action="store_true",
                        help="recompute every MLP branch's hidden activations in backward (memory for time)")
    args = parser.parse_args()
    malloc = "tuned" if args.malloc == "tuned" and tune_malloc() else "glibc defaults"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    body: BodyModel = load_body_model()
    encoder_cfg = {"variant": args.variant} | ({"depth": args.depth} if args.depth else {})
    model = MeshRecovery(build_encoder("ssrstf", encoder_cfg), body, load_mean_params(),
                         HeadConfig(hidden_dim=args.head_hidden))
    set_recompute_blocks(model.backbone, args.recompute)
    set_recompute_mlp(model.backbone, args.recompute_mlp)
    opt = adamw(model.parameters(), lr=1e-4)  # as the trainers: the fused update
    b, t = args.batch, args.frames
    batch = Batch(torch.randn(b, t, 17, 3), axis_angle_to_rotmat(torch.randn(b, t, 24, 3) * 0.2), torch.randn(b, 10))
    weights = replace(loss_preset("default"), train_vertices=args.vertices)
    cfg = model.backbone.config
    print(f"SSR-STF-{cfg.variant} (depth {cfg.depth}, width {cfg.dim}) + head {args.head_hidden}: "
          f"{count_parameters(model) / 1e6:.2f}M parameters; body model {body.num_vertices} vertices; batch {b} x {t} "
          f"frames; {args.threads} threads; malloc: {malloc}; {args.recompute} encoder blocks recomputed in backward; "
          f"MLP branches recomputed: {'yes' if args.recompute_mlp else 'no'}; {args.micro_batches} micro-batches; "
          f"resident before the steps {peak_rss_gb():.2f} GB")
    ids = train_vertex_ids(weights, body.num_vertices)
    extra = f" + {len(body.h36m_support)} (H36M regressor support, pose blend shapes)" if body.has_posedirs else ""
    label = "full mesh" if ids is None else f"vertex subset: {len(ids)}{extra} vertices posed"
    step, split = run_steps(model, opt, batch, weights, args, label)
    if args.compare_full and ids is not None:
        full, _ = run_steps(model, opt, batch, replace(weights, train_vertices=0), args,
                            f"full mesh ({body.num_vertices} vertices), same steps")
        print(f"step time, subset / full mesh: {step / full:.2f} ({full - step:+.2f} s per step)")
    flops = encoder_train_flops(model, one_piece(batch, args.micro_batches).x)  # after the runs: it holds a piece
    enc_time = split["encoder forward"] + split["backward: encoder"]
    peak = matmul_peak_gflops()
    achieved = flops / enc_time / 1e9
    print(f"encoder training pass: {flops / 1e9:.0f} GFLOP (forward + backward) in {enc_time:.2f} s = "
          f"{achieved:.0f} GFLOP/s; fp32 peak (2048^3 matmul, {args.threads} threads) {peak:.0f} GFLOP/s: "
          f"{100 * achieved / peak:.0f} % of peak")


if __name__ == "__main__":
    main()
