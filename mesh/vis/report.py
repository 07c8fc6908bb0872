"""``report.html`` of an evaluation: the metrics table, the plots, the per-sequence table sorted by error, and 3D
viewers (prediction against ground truth, per-frame error) of the worst sequences. One folder, opened offline."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from mesh.evaluation.protocol import MeshEvaluation
from mesh.io.export import _atomic_file

_METRICS = (("mpve_mm", "MPVE"), ("mpjpe_mm", "MPJPE"), ("pa_mpjpe_mm", "PA-MPJPE"), ("pa_mpve_mm", "PA-MPVE"),
            ("mpjpe17_mm", "MPJPE-17"), ("pa_mpjpe17_mm", "PA-MPJPE-17"), ("accel_mm_per_frame2", "accel"))

_STYLE = """body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } th { background: #eee; }
iframe { width: 100%; height: 480px; border: 1px solid #ccc; } .note { color: #555; }"""


def write_report_html(path: str | Path, ev: MeshEvaluation, title: str, plot: Path | None = None,
                      viewers: dict[str, Path] | None = None) -> Path:
    """Write ``report.html`` (atomically). ``plot``: errors.png, embedded; ``viewers``: sequence -> viewer.html
    (relative links and frames, so the folder can be moved or shared as a whole)."""
    path = Path(path)
    summary = ev.summary()
    table = ev.per_sequence()
    worst = sorted(table, key=lambda s: table[s]["mpve_mm"], reverse=True)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>protocol {html.escape(ev.protocol.name)}; joints: "
             f"{html.escape(ev.joint_regressor)}; {summary['frames']} frames, {len(table)} sequences</p>",
             "<h2>Metrics</h2><table><tr>" + "".join(f"<th>{name} (mm)</th>" for _, name in _METRICS) + "</tr><tr>"
             + "".join(f"<td class='n'>{summary[key]:.1f}</td>" for key, _ in _METRICS) + "</tr></table>"]
    for note in ev.notes:
        parts.append(f"<p class='note'>note: {html.escape(note)}</p>")
    if plot is not None and plot.is_file():
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        parts.append(f"<h2>Errors</h2><img alt='per-sequence errors' src='data:image/png;base64,{data}'>")
    if viewers:
        parts.append("<h2>Worst sequences in 3D</h2><p class='note'>prediction blue, ground truth green (toggle); "
                     "drag to orbit</p>")
        for seq, viewer in viewers.items():
            rel = html.escape(Path(viewer).relative_to(path.parent).as_posix())
            parts.append(f"<h3>{html.escape(seq)}: MPVE {table[seq]['mpve_mm']:.1f} mm "
                         f"(<a href='{rel}'>open</a>)</h3><iframe src='{rel}' title='{html.escape(seq)}'></iframe>")
    parts.append("<h2>Sequences, worst first</h2><table><tr><th>sequence</th><th>frames</th>"
                 + "".join(f"<th>{name}</th>" for _, name in _METRICS[:-1]) + "</tr>")
    for seq in worst:
        row = table[seq]
        parts.append(f"<tr><td>{html.escape(seq)}</td><td class='n'>{row['frames']}</td>"
                     + "".join(f"<td class='n'>{row[key]:.1f}</td>" for key, _ in _METRICS[:-1]) + "</tr>")
    parts.append("</table></body></html>")
    page = "\n".join(parts)
    return _atomic_file(path, lambda f: f.write(page.encode("utf-8")))
