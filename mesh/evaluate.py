"""Evaluate a mesh model: ``python -m mesh.evaluate --checkpoint runs/NAME/best.pt --data FILE``.

Reports MPVE, MPJPE and PA-MPJPE (S14 or LSP-14), PA-MPVE, the 17-joint variants and the acceleration error, under
a named protocol (``--protocol motionbert|full-sequence``, docs/protocols.md) whose every switch can be changed
(``--set root=midhip flip=false regressor=spin ...``) and is written into every report. Joint regressor
(``regressor=pose2mesh|spin``): 'pose2mesh' (motionbert) is the body model's own H36M regressor (Pose2Mesh's
``J_regressor_h36m_correct`` for real SMPL); 'spin' (full-sequence) is SPIN's ``J_regressor_h36m.npy`` from
``--spin-regressor`` or next to the SMPL files, else the body model's own with a note saying so. Outputs (``--out``,
default next to the checkpoint in ``eval_<data>_<protocol>/``): ``metrics.json``, ``per_sequence.csv``,
``per_frame.npz`` and ``errors.png`` (per-sequence errors and error over time for the worst sequences). The trainer's
validation runs the same code (``mesh.evaluation.protocol.evaluate_mesh``). ``--refine`` scores the predictions after
test-time refinement (``mesh/inference/refine.py``; data with ``cam_intrinsics``): a pipeline figure, reported apart
from the network's own.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from body_models import BodyModel, BodyModelFileError, load_body_model, load_spin_regressor
from mesh.data.mesh_data import MeshDataError, MeshSplit, read_mesh_split, require_same_conversion
from mesh.evaluation.protocol import PROTOCOLS, MeshEvaluation, Protocol, evaluate_mesh, get_protocol
from mesh.inference.predict import require_camera_inputs
from mesh.inference.refine import RefineOptions
from mesh.network.checkpoint import load_mesh_model
from mesh.network.model import MeshRecovery
from motion.checkpoint import SHIPPED_MESH_MODEL, CheckpointError
from motion.data.transforms import normalisation_of
from motion.training import resolve_device


def _protocol(name: str, settings: list[str]) -> Protocol:
    overrides = {}
    names = {f.name: f.type for f in fields(Protocol)}
    for item in settings:
        key, _, raw = item.partition("=")
        if key not in names or key == "name":
            known = ", ".join(k for k in names if k != "name")
            raise ValueError(f"--set {item!r}: unknown protocol switch (known: {known})")
        overrides[key] = yaml.safe_load(raw)
    return get_protocol(name, **overrides)


def write_reports(ev: MeshEvaluation, out: Path, title: str) -> dict[str, Path]:
    """metrics.json, per_sequence.csv, per_frame.npz and errors.png in ``out`` (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "per_sequence": out / "per_sequence.csv",
             "per_frame": out / "per_frame.npz", "plot": out / "errors.png"}
    tmp = paths["metrics"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"title": title, **ev.report()}, indent=2))
    tmp.replace(paths["metrics"])
    table = ev.per_sequence()
    tmp = paths["per_sequence"].with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        cols = list(next(iter(table.values())))
        writer = csv.writer(fh)
        writer.writerow(["sequence", *cols])
        for seq, row in table.items():
            writer.writerow([seq, *[f"{row[c]:.3f}" if isinstance(row[c], float) else row[c] for c in cols]])
    tmp.replace(paths["per_sequence"])
    tmp = out / "per_frame.tmp.npz"
    np.savez(tmp, source=ev.source, **ev.per_frame)
    tmp.replace(paths["per_frame"])
    _plot(ev, table, paths["plot"], title)
    return paths


def _write_report_page(ev: MeshEvaluation, out: Path, title: str, plot: Path, model: MeshRecovery, body: BodyModel,
                       split: MeshSplit, protocol: Protocol, viewers: int) -> Path:
    """report.html with 3D viewers of the ``viewers`` worst sequences (prediction against ground truth)."""
    from mesh.io.export import sequence_results
    from mesh.vis.report import write_report_html
    from mesh.vis.viewer import write_viewer

    table = ev.per_sequence()
    worst = sorted(table, key=lambda s: table[s]["mpve_mm"], reverse=True)[:viewers]
    pages = {}
    for seq in worst:
        pred, gt = sequence_results(model, body, split, seq, fps=protocol.fps, clip_len=protocol.clip_len)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in seq)
        pages[seq] = write_viewer(out / f"viewer_{safe}.html", pred, body, gt=gt,
                                  errors_mm=ev.per_frame["mpve"][ev.source == seq], title=f"{title}: {seq}")
    return write_report_html(out / "report.html", ev, title, plot, pages)


def _plot(ev: MeshEvaluation, table: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seqs = sorted(table, key=lambda s: table[s]["mpve_mm"], reverse=True)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8))
    xs = np.arange(len(seqs))
    for offset, key in ((-0.25, "mpve_mm"), (0.0, "mpjpe_mm"), (0.25, "pa_mpjpe_mm")):
        ax1.bar(xs + offset, [table[s][key] for s in seqs], width=0.25, label=key.removesuffix("_mm").upper())
    ax1.set_xticks(xs, seqs, rotation=60, ha="right", fontsize=7)
    ax1.set_ylabel("mm")
    ax1.legend()
    ax1.set_title(f"{title}: per-sequence errors (worst first)")
    for seq in seqs[:4]:
        mask = ev.source == seq
        ax2.plot(ev.per_frame["mpve"][mask], label=f"{seq} MPVE")
    ax2.set_xlabel("frame in sequence")
    ax2.set_ylabel("MPVE (mm)")
    ax2.legend(fontsize=8)
    ax2.set_title("error over time, worst sequences")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_MESH_MODEL,
                        help="mesh model (runs/NAME/best.pt; default: the shipped models/ssrstf_mesh.pt)")
    parser.add_argument("--data", default=None, help="mesh data file (default: the synthetic data)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--res", type=int, nargs=2, default=None, metavar=("W", "H"),
                        help="image size of the 2D normalisation, for models trained with the image map only "
                        "(default: the file's meta, else H36M camera sizes; 3DPW: 1920 1920); track-box models "
                        "need none")
    parser.add_argument("--protocol", default="motionbert", choices=sorted(PROTOCOLS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="protocol switches, e.g. root=midhip")
    parser.add_argument("--smpl", default=None, help="SMPL folder (neutral; male/female for gendered ground truth)")
    parser.add_argument("--spin-regressor", type=Path, default=None, metavar="FILE",
                        help="SPIN's J_regressor_h36m.npy for regressor=spin (default: next to the SMPL files)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network")
    parser.add_argument("--refine", action="store_true",
                        help="score the predictions after test-time refinement (mesh/inference/refine.py; needs "
                        "cam_intrinsics in the data; the report's 3D viewers still show the network's own output)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--viewers", type=int, default=3,
                        help="3D viewers (viewer_*.html, in report.html) of this many worst sequences; 0 = none")
    args = parser.parse_args(argv)
    try:
        protocol = _protocol(args.protocol, args.set)
        device = resolve_device(args.device)
        neutral = load_body_model(args.smpl, device=device)
        bodies = {"neutral": neutral}
        if protocol.gt_gender == "gendered" and args.smpl is not None:
            for gender in ("male", "female"):
                try:
                    bodies[gender] = load_body_model(args.smpl, gender=gender, device=device)
                except BodyModelFileError as err:
                    print(f"warning: {err}", file=sys.stderr)
        spin_regressor, spin_source = None, ""
        if protocol.regressor == "spin":
            spin_array, spin_source = load_spin_regressor(args.spin_regressor, neutral.num_vertices, args.smpl)
            if spin_array is None:
                print(f"warning: regressor=spin but {spin_source}: using the body model's own H36M regressor "
                      "(pass --spin-regressor FILE)", file=sys.stderr)
            else:
                spin_regressor = torch.from_numpy(spin_array)
        elif args.spin_regressor is not None:
            print(f"warning: --spin-regressor ignored: protocol {protocol.name} uses regressor={protocol.regressor}",
                  file=sys.stderr)
        model, ckpt = load_mesh_model(args.checkpoint, body=neutral, map_location=device)
        data = args.data
        synthetic = data is None
        if synthetic:
            from motion.synthetic import ensure_synthetic_data

            data = str(ensure_synthetic_data(Path("data/synthetic"))["mesh"])
        norm = normalisation_of(ckpt["metadata"])
        if norm == "track_box" and args.res is not None:
            raise ValueError(f"{args.checkpoint}: the model uses the resolution-free track-box normalisation; "
                             "--res applies only to image-normalised models")
        split = read_mesh_split(data, args.split, args.res, require_gt=True, norm=norm)
        require_same_conversion(ckpt["metadata"], split, args.checkpoint)
        if args.refine and split.intrinsics is None:
            raise ValueError(f"{split.name}: no cam_intrinsics: --refine needs the camera")
        require_camera_inputs(model, split)
    except (BodyModelFileError, CheckpointError, MeshDataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    label = "synthetic data, not 3DPW" if synthetic else Path(data).name
    print(f"evaluating {args.checkpoint} on {label} [{args.split}], {len(split)} frames, protocol {protocol}")
    start = time.time()
    with tqdm(total=len(split), unit="frame", dynamic_ncols=True) as bar:
        ev = evaluate_mesh(model, split, protocol, bodies, args.batch_size,
                           torch.bfloat16 if args.bf16 else None, progress=bar.update, spin_regressor=spin_regressor,
                           refine=RefineOptions() if args.refine else None)
    if spin_regressor is not None:
        ev.joint_regressor = f"{ev.joint_regressor} ({spin_source})"
    seconds = time.time() - start
    s = ev.summary()
    # Reports go next to a run's checkpoint; never into the shipped models/ folder (runs/ instead).
    home = Path("runs") if args.checkpoint.resolve().parent == SHIPPED_MESH_MODEL.parent else args.checkpoint.parent
    out = args.out or home / f"eval_{Path(data).stem}_{args.split}_{protocol.name}{'_refined' if args.refine else ''}"
    title = f"{args.checkpoint.parent.name} on {label} [{args.split}], {protocol.name}"
    paths = write_reports(ev, out, title)
    paths["report"] = _write_report_page(ev, out, title, paths["plot"], model, neutral, split, protocol,
                                         max(0, args.viewers))
    joints = protocol.joint_set.upper()
    print(f"\n{'metric':<22}{'value':>10}")
    for key, name in (("mpve_mm", "MPVE (mm)"), ("mpjpe_mm", f"MPJPE-{joints} (mm)"),
                      ("pa_mpjpe_mm", f"PA-MPJPE-{joints} (mm)"), ("pa_mpve_mm", "PA-MPVE (mm)"),
                      ("mpjpe17_mm", "MPJPE-17 (mm)"), ("pa_mpjpe17_mm", "PA-MPJPE-17 (mm)"),
                      ("accel_mm_per_frame2", "accel (mm/frame^2)"), ("accel_m_per_s2", "accel (m/s^2)")):
        print(f"{name:<22}{s[key]:>10.2f}")
    print(f"joints: regressor={protocol.regressor}, {ev.joint_regressor}")
    for note in ev.notes:
        print(f"note: {note}")
    print(f"{s['frames']} frames in {seconds:.1f} s ({s['frames'] / seconds:.0f} frames/s); "
          f"model trained on {ckpt['metadata'].get('body_model', '?')}")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
