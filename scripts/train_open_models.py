"""Train the open models from nothing: synthetic data -> SSR-STF encoder (2D->3D lifting) -> mesh model.

    python scripts/train_open_models.py --profile cpu --out runs/open                  # about 2 hours, 2 CPU cores
    python scripts/train_open_models.py --profile gpu --out runs/open --ship models        # one H200, ~8 minutes
    python scripts/train_open_models.py --profile gpu-long --out runs/open --ship models   # one GPU, ~30 minutes

Stages (each skipped when its results exist, resumed from its ``last.pt`` when it was cut off):

1. ``data``: ``python -m motion.synthetic`` with the profile's sequence counts (seeded: identical for any worker count),
   ``--version`` (generator version; 4 adds lying on the floor) and ``--conversion`` (keypoint rule) passed through.
2. ``encoder``: ``python -m motion.pretrain --config configs/motion/open_xs.yaml`` -> ``OUT/encoder/best.pt``.
3. ``mesh``: ``python -m mesh.finetune --backbone OUT/encoder/best.pt --config configs/mesh/open.yaml``.
4. ``heldout``: ``python -m mesh.evaluate`` on the ``test_heldout`` split (the motion family kept out of training).
5. ``ship`` (with ``--ship DIR``): release copies (no optimiser state, float16 weight matrices) ``DIR/ssrstf.pt``
   and ``DIR/ssrstf_mesh.pt``, each recording the recipe, commands, times, machine and metrics.

Sizing: a profile fixes the data, the batch sizes and the number of epochs; the epoch length (steps) is either given
(``--encoder-steps`` / ``--mesh-steps``) or fitted to a time budget in minutes (``--encoder-min`` / ``--mesh-min``)
from a short timed probe of the same command on this machine. The chosen numbers are written to ``OUT/plan.json``
before training and printed as the exact commands, so a run is reproduced by passing the steps back. Training is
deterministic by seed on the CPU (GPU kernels may differ in the last bits).

``--arch dstformer`` trains MotionBERT's DSTformer (Lite size, ``configs/motion/open_dstformer.yaml``) with the same
recipe, data and minutes, for the README's comparison. Everything is printed to the console and ``OUT/train.log``;
``OUT/summary.json`` holds the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENCODER_CONFIGS = {"ssrstf": "configs/motion/open_xs.yaml", "dstformer": "configs/motion/open_dstformer.yaml"}
MESH_CONFIG = "configs/mesh/open.yaml"
PROGRESS_BAR = re.compile(r"\d+%\|")


@dataclass
class Profile:
    """Data sizes, batch sizes, epochs and default minutes of one machine class."""

    sequences: dict[str, int]  # train / validation / test / test_heldout sequences
    encoder_batch: int
    mesh_batch: int
    encoder_epochs: int  # at most this many (fewer when validation would take over 15 % of the budget)
    mesh_epochs: int
    encoder_min: float  # budgets (minutes of the stage, validation included)
    mesh_min: float
    probe_steps: int  # steps of the timing probe
    encoder_lr: float
    mesh_lr_backbone: float
    mesh_lr_head: float
    val_every: int  # lifting: every k-th training track is held out for validation
    encoder_steps: int | None = None  # steps per epoch; None = fitted to the budget by a timed probe
    mesh_steps: int | None = None


PROFILES: dict[str, Profile] = {
    # 2 CPU cores: about 2 hours in all (data 3 min, encoder 60, mesh 50, evaluations a few).
    "cpu": Profile({"train": 1200, "validation": 16, "test": 60, "test_heldout": 40}, encoder_batch=32, mesh_batch=16,
                   encoder_epochs=12, mesh_epochs=12, encoder_min=60, mesh_min=50, probe_steps=8,
                   encoder_lr=1e-3, mesh_lr_backbone=3e-4, mesh_lr_head=1e-3, val_every=40),
    # One GPU: epoch lengths fitted to the minutes by a timed probe. "gpu" is about 9 minutes in all on an H200
    # (data 1 min, encoder 3.2, mesh 3.2, probes and evaluations); "gpu-long" the same recipe for about 30 minutes.
    "gpu": Profile({"train": 1500, "validation": 20, "test": 60, "test_heldout": 40}, encoder_batch=128,
                   mesh_batch=64, encoder_epochs=8, mesh_epochs=8, encoder_min=3.2, mesh_min=3.2,
                   probe_steps=40, encoder_lr=1e-3, mesh_lr_backbone=3e-4, mesh_lr_head=1e-3, val_every=40),
    "gpu-long": Profile({"train": 3000, "validation": 20, "test": 60, "test_heldout": 40}, encoder_batch=128,
                        mesh_batch=64, encoder_epochs=20, mesh_epochs=20, encoder_min=12, mesh_min=14,
                        probe_steps=40, encoder_lr=1e-3, mesh_lr_backbone=3e-4, mesh_lr_head=1e-3, val_every=40),
    # A minute-long check of the whole chain (tests, CI smoke runs): models of no use.
    "smoke": Profile({"train": 6, "validation": 2, "test": 2, "test_heldout": 2}, encoder_batch=4, mesh_batch=4,
                     encoder_epochs=2, mesh_epochs=2, encoder_min=0.3, mesh_min=0.3, probe_steps=2,
                     encoder_lr=1e-3, mesh_lr_backbone=3e-4, mesh_lr_head=1e-3, val_every=3,
                     encoder_steps=None, mesh_steps=None),
}


class Runner:
    """Runs the stage commands, echoing their output to the console and ``OUT/train.log``."""

    def __init__(self, out: Path) -> None:
        self.log = out / "train.log"

    def __call__(self, args: list[str]) -> float:
        cmd = [sys.executable, *args]
        shown = " ".join(args)
        start = time.time()
        with self.log.open("a") as log:
            log.write(f"\n$ python {shown}\n")
            log.flush()
            print(f"\n$ python {shown}", flush=True)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=env)
            assert proc.stdout is not None
            for line in proc.stdout:
                if PROGRESS_BAR.search(line) or not line.strip():
                    continue  # progress bars (tqdm) and their blank lines: noise in a log
                sys.stdout.write(line)
                log.write(line)
            code = proc.wait()
        if code != 0:
            raise SystemExit(f"train_open_models: stage command failed (exit {code}): python {shown}; see {self.log}")
        return time.time() - start


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "torch": str(torch.__version__), "torch_threads": torch.get_num_threads(),
                            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def probe_rates(log_csv: Path) -> tuple[float, float, float]:
    """(seconds per steady training step, warm-up seconds per epoch, validation seconds per epoch) from a one-epoch
    probe's ``log.csv``."""
    with log_csv.open() as fh:
        row = next(csv.DictReader(fh))
    steps, train = float(row["steps"]), float(row["train_seconds"])
    per_step = float(row["step_seconds"]) if row.get("step_seconds") not in (None, "", "nan") else train / steps
    warmup = max(train - per_step * steps, 0.0)
    return per_step, warmup, max(float(row["seconds"]) - train, 0.0)


def fit_schedule(budget_min: float, max_epochs: int, rates: tuple[float, float, float], startup: float
                 ) -> tuple[int, int]:
    """(epochs, steps per epoch) that fit ``budget_min``: validation (once per epoch) takes at most 15 % of it."""
    per_step, warmup, per_val = rates
    budget = 60 * budget_min - startup
    epochs = max(1, min(max_epochs, int(0.15 * budget / max(per_val, 1e-6))))
    steps = int((budget - epochs * (per_val + warmup)) / (epochs * per_step))
    if steps < 10:
        raise SystemExit(f"train_open_models: a {budget_min} min budget leaves {steps} steps per epoch on this "
                         f"machine ({per_step:.2f} s per step, {per_val:.1f} s per validation): give more minutes")
    return epochs, steps


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from body_models.joint_sets import DEFAULT_KEYPOINT_CONVERSION, KEYPOINT_CONVERSIONS
    from motion.synthetic import GENERATOR_VERSION, VERSION_FAMILIES

    ap = argparse.ArgumentParser(prog="python scripts/train_open_models.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/open"), help="work folder (resumable)")
    ap.add_argument("--arch", choices=sorted(ENCODER_CONFIGS), default="ssrstf")
    ap.add_argument("--seed", type=int, default=0, help="data and training seed")
    ap.add_argument("--version", default=GENERATOR_VERSION, choices=sorted(VERSION_FAMILIES),
                    help="synthetic generator version passed to motion.synthetic (default: %(default)s; 4 adds lying "
                         "on the floor)")
    ap.add_argument("--conversion", choices=KEYPOINT_CONVERSIONS, default=DEFAULT_KEYPOINT_CONVERSION,
                    help="keypoint conversion of the synthetic 2D input (default: %(default)s)")
    ap.add_argument("--encoder-min", type=float, default=None, help="encoder budget, minutes (default: profile)")
    ap.add_argument("--mesh-min", type=float, default=None, help="mesh budget, minutes (default: profile)")
    ap.add_argument("--encoder-steps", type=int, default=None,
                    help="steps per encoder epoch (skips the probe; default: the profile's, else fitted)")
    ap.add_argument("--mesh-steps", type=int, default=None, help="steps per mesh epoch (as --encoder-steps)")
    ap.add_argument("--data-workers", type=int, default=os.cpu_count() or 1, help="processes for data generation")
    ap.add_argument("--time-limit-factor", type=float, default=1.25,
                    help="safety stop of each stage at this multiple of its budget (loop.time_limit_min)")
    ap.add_argument("--ship", type=Path, default=None, help="write the release files here (e.g. models)")
    args = ap.parse_args(argv)
    prof = PROFILES[args.profile]
    out = args.out if args.out.is_absolute() else ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    run = Runner(out)
    plan_path = out / "plan.json"
    plan: dict[str, Any] = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    version, conversion = args.version, args.conversion
    identity = {"profile": args.profile, "arch": args.arch, "seed": args.seed, "generator_version": version,
                "keypoint_conversion": conversion}
    # a key missing from an older plan (written before the data options existed) is not held against it
    if plan and any(plan.get(k, v) != v for k, v in identity.items()):
        raise SystemExit(f"train_open_models: {out} holds a run of another profile/arch/seed/data ({plan_path}); "
                         "use another --out")
    plan.update(**identity, profile_values=asdict(prof),
                machine=machine(), argv=sys.argv[1:] if argv is None else argv)
    times: dict[str, float] = plan.setdefault("seconds", {})

    def save_plan() -> None:
        tmp = plan_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan, indent=2))
        tmp.replace(plan_path)

    # 1. data
    data = out / "data"
    lifting, mesh_file = data / "h36m_synthetic.pkl", data / "mesh_synthetic.pkl"
    if not (lifting.is_file() and mesh_file.is_file()):
        s = prof.sequences
        times["data"] = run(["-m", "motion.synthetic", "--out", str(data), "--seed", str(args.seed),
                             "--sequences-train", str(s["train"]), "--sequences-val", str(s["validation"]),
                             "--sequences-test", str(s["test"]), "--sequences-heldout", str(s["test_heldout"]),
                             "--version", version, "--conversion", conversion,
                             "--workers", str(args.data_workers)])
        save_plan()

    def train_stage(stage: str, module: str, common: list[str], budget_min: float, max_epochs: int,
                    fixed_steps: int | None, lr_decay_key: str, probe_extra: list[str]) -> None:
        """Probe (unless the steps are fixed), then train ``OUT/stage`` (resuming a cut-off run)."""
        folder = out / stage
        if (folder / "metrics.json").is_file():
            return
        if f"{stage}_steps" not in plan:
            epochs, steps = max_epochs, fixed_steps
            if steps is None:
                t = run(["-m", module, *common, "--name", f"probe_{stage}", "loop.epochs=1",
                         f"loop.max_steps_per_epoch={prof.probe_steps}", *probe_extra])
                rates = probe_rates(out / f"probe_{stage}" / "log.csv")
                startup = max(t - rates[0] * prof.probe_steps - rates[1] - rates[2], 0.0)
                epochs, steps = fit_schedule(budget_min, max_epochs, rates, startup)
                plan[f"{stage}_probe"] = {"seconds_per_step": rates[0], "warmup_seconds": rates[1],
                                          "validation_seconds": rates[2], "startup_seconds": startup,
                                          "budget_min": budget_min}
            plan[f"{stage}_epochs"], plan[f"{stage}_steps"] = epochs, steps
        epochs, steps = plan[f"{stage}_epochs"], plan[f"{stage}_steps"]
        schedule = [f"{lr_decay_key}={0.1 ** (1 / epochs):.4f}",  # the lr falls 10x over the run
                    f"loop.epochs={epochs}", f"loop.max_steps_per_epoch={steps}"]
        plan[f"{stage}_command"] = ["python", "-m", module, *common, "--name", stage, *schedule]
        save_plan()
        resume = ["--resume"] if (folder / "last.pt").is_file() else []
        times[stage] = run(["-m", module, *common, "--name", stage, *resume, *schedule,
                            f"loop.time_limit_min={budget_min * args.time_limit_factor:.2f}"])
        save_plan()

    # 2. encoder
    encoder = out / "encoder"
    train_stage("encoder", "motion.pretrain",
                ["--config", ENCODER_CONFIGS[args.arch], "--out-dir", str(out), f"seed={args.seed}",
                 f"data.path={lifting}", f"data.val_every={prof.val_every}", f"optim.batch_size={prof.encoder_batch}",
                 f"optim.lr={prof.encoder_lr}"],
                args.encoder_min if args.encoder_min is not None else prof.encoder_min, prof.encoder_epochs,
                args.encoder_steps or prof.encoder_steps, "optim.lr_decay", [])

    # 3. mesh model
    mesh = out / "mesh"
    train_stage("mesh", "mesh.finetune",
                ["--backbone", str(encoder / "best.pt"), "--config", MESH_CONFIG, "--out-dir", str(out),
                 f"seed={args.seed}", f"data.synthetic_dir={data}", f"optim.batch_size={prof.mesh_batch}",
                 f"optim.lr_backbone={prof.mesh_lr_backbone}", f"optim.lr_head={prof.mesh_lr_head}"],
                args.mesh_min if args.mesh_min is not None else prof.mesh_min, prof.mesh_epochs,
                args.mesh_steps or prof.mesh_steps, "optim.lr_decay", ["data.test=null"])

    # 4. held-out motion family
    heldout = out / "eval_test_heldout"
    if not (heldout / "metrics.json").is_file():
        times["heldout"] = run(["-m", "mesh.evaluate", "--checkpoint", str(mesh / "best.pt"), "--data",
                                str(mesh_file), "--split", "test_heldout", "--protocol", "motionbert",
                                "--out", str(heldout)])
        save_plan()

    summary = summarise(out, plan)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n" + json.dumps(summary["metrics"], indent=2))
    if args.ship is not None:
        ship(args.ship if args.ship.is_absolute() else ROOT / args.ship, out, summary)
    return 0


def summarise(out: Path, plan: dict[str, Any]) -> dict[str, Any]:
    enc = json.loads((out / "encoder" / "metrics.json").read_text())
    mesh = json.loads((out / "mesh" / "metrics.json").read_text())
    held = json.loads((out / "eval_test_heldout" / "metrics.json").read_text())["summary"]
    test = mesh["test"]["summary"]
    metrics = {
        "lifting_test_p1_mm": enc["test"]["p1_mm"], "lifting_test_p2_mm": enc["test"]["p2_mm"],
        "mesh_test_mpve_mm": test["mpve_mm"], "mesh_test_mpjpe_mm": test["mpjpe_mm"],
        "mesh_test_pa_mpjpe_mm": test["pa_mpjpe_mm"], "heldout_mpve_mm": held["mpve_mm"],
        "heldout_mpjpe_mm": held["mpjpe_mm"], "heldout_pa_mpjpe_mm": held["pa_mpjpe_mm"],
        "heldout_over_test_mpve": held["mpve_mm"] / test["mpve_mm"],
        "heldout_over_test_pa_mpjpe": held["pa_mpjpe_mm"] / test["pa_mpjpe_mm"],
    }
    return {"metrics": metrics, "seconds": plan.get("seconds", {}), "plan": plan}


def ship(folder: Path, out: Path, summary: dict[str, Any]) -> None:
    """Release copies of the encoder and the mesh model, each recording how it was made."""
    from motion.checkpoint import export_release

    plan = summary["plan"]
    release = {"generator_version": plan["generator_version"], "keypoint_conversion": plan["keypoint_conversion"],
               "seed": plan["seed"], "profile": plan["profile"],
               "sequences": plan["profile_values"]["sequences"], "machine": plan["machine"],
               "seconds": summary["seconds"], "metrics": summary["metrics"],
               "command": "python scripts/train_open_models.py " + " ".join(plan["argv"]),
               "encoder_command": " ".join(plan["encoder_command"]), "mesh_command": " ".join(plan["mesh_command"]),
               "licence": "weights: Apache-2.0 (this project); body model: the open body's CC0 assets"}
    folder.mkdir(parents=True, exist_ok=True)
    export_release(out / "encoder" / "best.pt", folder / "ssrstf.pt", release)
    export_release(out / "mesh" / "best.pt", folder / "ssrstf_mesh.pt", release)
    for name in ("ssrstf.pt", "ssrstf_mesh.pt"):
        print(f"shipped {folder / name}: {(folder / name).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
