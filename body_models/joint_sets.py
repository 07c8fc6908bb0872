"""Joint sets in one place: names, kinematic parents, left-right flip pairs, and conversions between sets.

Sets: SMPL-24 (the body model's skeleton), H36M-17 (the project's joint order, root 0), COCO-17 (MMPose, RTMPose,
YOLO-pose), Halpe-26 (AlphaPose), OpenPose-18 (the 3DPW release's ``poses2d``) and LSP-14 (evaluation subset).

Side naming follows MotionBERT / VideoPose3D: H36M index 1 is the *right* hip. Some code bases (SPIN's
``H36M_TO_J14``, MotionAGFormer) name the sides the other way round; metrics over a symmetric joint subset are
unaffected, but flip pairs and conversions here are consistent with the names below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch


@dataclass(frozen=True)
class JointSet:
    """A named skeleton.

    Attributes:
        name: identifier used by :func:`get_joint_set` and :func:`conversion_matrix`.
        joint_names: one name per joint, in index order.
        parents: parent index per joint (-1 for a root); for 2D detector sets this is the usual drawing tree.
        flip_pairs: (left, right) index pairs swapped by a horizontal mirror.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if len(self.parents) != len(self.joint_names):
            raise ValueError(f"joint set {self.name}: {len(self.parents)} parents for {len(self.joint_names)} joints")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """(parent, child) pairs, one per non-root joint."""
        return tuple((p, c) for c, p in enumerate(self.parents) if p >= 0)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        """Index permutation that swaps left and right joints (an involution)."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    def index(self, joint_name: str) -> int:
        return self.joint_names.index(joint_name)


SMPL24 = JointSet(
    name="smpl24",
    joint_names=(
        "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
        "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand",
        "right_hand",
    ),
    parents=(-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21),
    flip_pairs=((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)),
)

H36M17 = JointSet(
    name="h36m17",
    joint_names=(
        "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "spine",
        "thorax", "nose", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
        "right_wrist",
    ),
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    flip_pairs=((4, 1), (5, 2), (6, 3), (11, 14), (12, 15), (13, 16)),
)

COCO17 = JointSet(
    name="coco17",
    joint_names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
        "left_ankle", "right_ankle",
    ),
    # Drawing tree rooted at the nose; shoulders hang from the nose, hips from the shoulders.
    parents=(-1, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
)

HALPE26 = JointSet(
    name="halpe26",
    joint_names=(
        *COCO17.joint_names, "head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe",
        "right_small_toe", "left_heel", "right_heel",
    ),
    parents=(18, 0, 0, 1, 2, 18, 18, 5, 6, 7, 8, 19, 19, 11, 12, 13, 14, 18, 19, -1, 15, 16, 15, 16, 15, 16),
    flip_pairs=(*COCO17.flip_pairs, (20, 21), (22, 23), (24, 25)),
)

OPENPOSE18 = JointSet(
    name="openpose18",
    joint_names=(
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
        "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
        "right_eye", "left_eye", "right_ear", "left_ear",
    ),
    parents=(1, -1, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 0, 0, 14, 15),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17)),
)

LSP14 = JointSet(
    name="lsp14",
    joint_names=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
        "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
    ),
    parents=(1, 2, 12, 12, 3, 4, 7, 8, 12, 12, 9, 10, -1, 12),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
)

JOINT_SETS: dict[str, JointSet] = {s.name: s for s in (SMPL24, H36M17, COCO17, HALPE26, OPENPOSE18, LSP14)}

# Evaluation subsets of H36M-17 (docs/protocols.md, joint sets). S14 drops pelvis, spine and nose (Pose2Mesh order).
H36M_EVAL_S14: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)
# The same 14 joints in LSP order, named consistently with H36M17 above. SPIN/VIBE/WHAM write
# [6,5,4,1,2,3,16,15,14,11,12,13,8,10] with their own side naming: the same set, so metrics agree.
H36M_TO_LSP14: tuple[int, ...] = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)


def get_joint_set(name: str) -> JointSet:
    """The joint set called ``name`` (one of :data:`JOINT_SETS`); a clear error otherwise."""
    try:
        return JOINT_SETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown joint set {name!r}; known: {', '.join(JOINT_SETS)}") from None


# Each target joint is a weighted mean of source joints: {target_set: {source_set: [(target, {source: w})]}}.
# Derived joints follow MotionBERT's coco2h36m / halpe2h36m (pelvis = mid-hip, thorax = mid-shoulder or neck,
# spine = midway pelvis-thorax, head = mid-eye or head top).
def _h36m_from(
    r_hip: int, r_knee: int, r_ankle: int, l_hip: int, l_knee: int, l_ankle: int,
    l_sho: int, l_elb: int, l_wri: int, r_sho: int, r_elb: int, r_wri: int,
    nose: dict[int, float], head: dict[int, float], thorax: dict[int, float], pelvis: dict[int, float],
) -> list[dict[int, float]]:
    spine = {k: 0.5 * v for k, v in pelvis.items()}
    for k, v in thorax.items():
        spine[k] = spine.get(k, 0.0) + 0.5 * v
    return [
        pelvis, {r_hip: 1.0}, {r_knee: 1.0}, {r_ankle: 1.0}, {l_hip: 1.0}, {l_knee: 1.0}, {l_ankle: 1.0},
        spine, thorax, nose, head, {l_sho: 1.0}, {l_elb: 1.0}, {l_wri: 1.0}, {r_sho: 1.0}, {r_elb: 1.0},
        {r_wri: 1.0},
    ]


_CONVERSIONS: dict[tuple[str, str], list[dict[int, float]]] = {
    ("coco17", "h36m17"): _h36m_from(
        12, 14, 16, 11, 13, 15, 5, 7, 9, 6, 8, 10,
        nose={0: 1.0}, head={1: 0.5, 2: 0.5}, thorax={5: 0.5, 6: 0.5}, pelvis={11: 0.5, 12: 0.5},
    ),
    ("halpe26", "h36m17"): _h36m_from(
        12, 14, 16, 11, 13, 15, 5, 7, 9, 6, 8, 10,
        nose={0: 1.0}, head={17: 1.0}, thorax={18: 1.0}, pelvis={19: 1.0},
    ),
    ("openpose18", "h36m17"): _h36m_from(
        8, 9, 10, 11, 12, 13, 5, 6, 7, 2, 3, 4,
        nose={0: 1.0}, head={16: 0.5, 17: 0.5}, thorax={1: 1.0}, pelvis={8: 0.5, 11: 0.5},
    ),
    ("h36m17", "lsp14"): [{j: 1.0} for j in H36M_TO_LSP14],
    ("coco17", "halpe26"): [{j: 1.0} for j in range(17)],  # only the shared 17; others get zero confidence
}


# Keypoint conversions to H36M-17 (recorded as ``keypoint_conversion`` in data files and checkpoints; absent means
# "midpoint"): "midpoint" is MotionBERT's rule above; "fitted" makes each H36M-17 joint from a few nearby detector
# keypoints with weights fitted so that the result lands on the joint centres (body_models/fitted_conversion.py,
# scripts/fit_keypoint_conversion.py): detectors mark the top of the shoulder, the side of the hip and the eyes, not
# the joints, and the midpoint rule leaves those offsets (about 5 % of the person's height at the shoulders).
KEYPOINT_CONVERSIONS: tuple[str, ...] = ("midpoint", "fitted")
DEFAULT_KEYPOINT_CONVERSION = "fitted"  # new synthetic data and the shipped models (readers take the model's rule)
# A fitted joint's confidence is the lowest among its sources weighted at least this much (a hip is not made unsure
# by a shoulder that only tilts it).
FITTED_CONFIDENCE_WEIGHT = 0.2


def keypoint_conversion_of(metadata: dict | None) -> str:
    """The keypoint conversion a data file or checkpoint was made with (``metadata['keypoint_conversion']``;
    files without the record predate the choice and used "midpoint")."""
    method = (metadata or {}).get("keypoint_conversion", "midpoint")
    if method not in KEYPOINT_CONVERSIONS:
        raise ValueError(f"unknown keypoint conversion {method!r}; known: {', '.join(KEYPOINT_CONVERSIONS)}")
    return method


@cache
def conversion_matrix(src: str, dst: str, method: str = "midpoint") -> np.ndarray:
    """(J_dst, J_src) matrix whose rows are the weights that make each target joint from source joints.

    ``method`` chooses between the conversions of :data:`KEYPOINT_CONVERSIONS` ("fitted" exists for COCO-17,
    Halpe-26 and OpenPose-18 to H36M-17). Rows that no source joint can fill are all zero (see
    :func:`convert_keypoints` for their confidence).
    """
    src_set, dst_set = get_joint_set(src), get_joint_set(dst)
    if method not in KEYPOINT_CONVERSIONS:
        raise ValueError(f"unknown keypoint conversion {method!r}; known: {', '.join(KEYPOINT_CONVERSIONS)}")
    if src_set is dst_set:
        return np.eye(src_set.num_joints)
    table = _CONVERSIONS
    if method == "fitted":
        from body_models.fitted_conversion import FITTED_ROWS

        table = {(s, "h36m17"): rows for s, rows in FITTED_ROWS.items()}
    try:
        rows = table[(src_set.name, dst_set.name)]
    except KeyError:
        known = ", ".join(f"{a}->{b}" for a, b in table)
        which = "fitted " if method == "fitted" else ""
        raise ValueError(f"no {which}conversion from {src_set.name} to {dst_set.name}; known: {known}") from None
    mat = np.zeros((dst_set.num_joints, src_set.num_joints))
    for t, weights in enumerate(rows):
        for s, w in weights.items():
            mat[t, s] = w
    return mat


def convert_joints(joints: torch.Tensor | np.ndarray, src: str, dst: str) -> torch.Tensor | np.ndarray:
    """Convert joint positions ``(..., J_src, D)`` to ``(..., J_dst, D)`` (any D, any units)."""
    mat = conversion_matrix(src, dst)
    if isinstance(joints, torch.Tensor):
        return torch.einsum("ts,...sd->...td", torch.as_tensor(mat, dtype=joints.dtype, device=joints.device), joints)
    return np.einsum("ts,...sd->...td", mat.astype(joints.dtype, copy=False), joints)


def convert_keypoints(keypoints: np.ndarray, src: str, dst: str, method: str = "midpoint") -> np.ndarray:
    """Convert 2D detections ``(..., J_src, 3)`` = (x, y, confidence) to ``(..., J_dst, 3)``.

    Positions are the weighted means of :func:`conversion_matrix` (``method``: see :data:`KEYPOINT_CONVERSIONS`); a
    derived joint's confidence is the lowest confidence among the joints it is made from (a mid-hip is no surer than
    its least sure hip; for "fitted", among those weighted at least :data:`FITTED_CONFIDENCE_WEIGHT`), and joints the
    source cannot provide get confidence 0.
    """
    if keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must end in (x, y, confidence), got shape {keypoints.shape}")
    mat = conversion_matrix(src, dst, method)
    xy = np.einsum("ts,...sd->...td", mat, keypoints[..., :2])
    conf = keypoints[..., 2]
    out_conf = np.zeros((*conf.shape[:-1], mat.shape[0]), dtype=keypoints.dtype)
    floor = FITTED_CONFIDENCE_WEIGHT if method == "fitted" and src != dst else 0.0
    for t in range(mat.shape[0]):
        used = np.nonzero(np.abs(mat[t]) >= min(floor, np.abs(mat[t]).max()))[0] if floor else np.nonzero(mat[t])[0]
        if len(used):
            out_conf[..., t] = conf[..., used].min(axis=-1)
    return np.concatenate([xy, out_conf[..., None]], axis=-1).astype(keypoints.dtype, copy=False)
