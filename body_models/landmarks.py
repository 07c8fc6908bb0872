"""Detector keypoints on the body surface: where a 2D pose detector (COCO-17 / Halpe-26) would put each keypoint.

Detectors are trained on human annotations of *visible landmarks*, not on the skeleton's joint centres: the nose tip,
the pupils, the ear openings, the top of the shoulder, the side of the hip, and, for elbows, wrists, knees and ankles,
the visual middle of the limb at the joint. :func:`detector_landmarks` finds each of them on a body model in SMPL
form (rest T-pose, y up, facing +z, subject's left at +x: the embedded open body and SMPL alike) as a small set of
mesh vertices with weights, so the landmarks follow the skin when the body is posed (linear blend skinning):

==========================  =================================================================================
keypoint                    vertices (rest pose)
==========================  =================================================================================
nose                        the 3 vertices nearest the nose tip (most forward head vertex on the midline)
eyes                        the 4 most forward vertices within 1 cm of (+-3.2 cm, nose + 4 cm) (the eyeball front)
ears                        the 4 vertices nearest the most lateral head point 2 cm below eye level, 0-6 cm
                            forward of the head joint (the ear opening)
shoulders                   half the 10 vertices nearest a point 1 cm lateral and 3 cm above the shoulder
                            joint (top of the shoulder), half the 24 vertices nearest the joint
elbows, wrists, knees,      the 24 vertices nearest the joint: a ring around the limb whose centroid is the
ankles                      visual centre of the limb at the joint
hips                        65 % the 12 vertices nearest a point 4.5 cm lateral of the hip joint (the side
                            of the hip), 35 % the 24 vertices nearest the pelvis joint: a point about 2.5 cm
                            wider and 2 cm higher than the hip joint centre, as annotated hips are
head (Halpe)                the 8 vertices nearest the top of the skull
neck (Halpe)                the 24 vertices nearest the neck joint
hip (Halpe, mid-hip)        the two hip landmarks, half each
big / small toes, heels     the foot's most forward vertex 2 cm medial / 3 cm lateral of the foot joint, and its
                            lowest-backmost vertex (4 nearest vertices each)
==========================  =================================================================================

The numbers are the project's choice (documented in ``docs/detector_synthesis.md``); what matters is that the
landmarks differ from the H36M-17 joint centres in the same way as real detections do. Detectors disagree among
themselves on the shoulders, hips and ankles, so the synthetic generator moves those per sequence
(``motion.detector_sim.annotation_convention``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from body_models.joint_sets import HALPE26, SMPL24

_J = {name: i for i, name in enumerate(SMPL24.joint_names)}


@dataclass(frozen=True)
class Landmarks:
    """Halpe-26 keypoints (COCO-17 = the first 17) as weighted vertex sets.

    Attributes:
        names: the Halpe-26 keypoint names.
        vertex_ids: (26, K) int64 vertex indices (padded by repeating an index with weight 0).
        weights: (26, K) float64, rows sum to 1.
    """

    names: tuple[str, ...]
    vertex_ids: np.ndarray
    weights: np.ndarray

    @property
    def support(self) -> np.ndarray:
        """Sorted unique vertex indices that any landmark uses."""
        return np.unique(self.vertex_ids[self.weights > 0])

    def locate(self, vertices: np.ndarray) -> np.ndarray:
        """Landmark positions ``(..., 26, 3)`` from vertices ``(..., V, 3)`` (any V covering :attr:`support`)."""
        return np.einsum("lk,...lkc->...lc", self.weights, vertices[..., self.vertex_ids, :])

    def remap(self, ids: np.ndarray) -> Landmarks:
        """The same landmarks indexed into a vertex subset ``ids`` (which must contain :attr:`support`)."""
        lookup = np.full(int(max(ids.max(), self.vertex_ids.max())) + 1, -1)
        lookup[ids] = np.arange(len(ids))
        new = lookup[self.vertex_ids]
        if (new[self.weights > 0] < 0).any():
            raise ValueError("the vertex subset does not contain every landmark vertex")
        return Landmarks(self.names, np.where(new < 0, 0, new), self.weights)


def _nearest(v: np.ndarray, pool: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    d = np.linalg.norm(v[pool] - target, axis=1)
    return pool[np.argsort(d)[:k]]


def detector_landmarks(v_template: np.ndarray, joints: np.ndarray, lbs_weights: np.ndarray) -> Landmarks:
    """Find the Halpe-26 landmarks on a rest-pose body (see the module docstring for the rule per keypoint).

    Args:
        v_template: (V, 3) rest vertices, metres (T-pose, y up, facing +z, left at +x).
        joints: (24, 3) rest SMPL joints.
        lbs_weights: (V, 24) skinning weights (to tell head, feet and hands apart).
    """
    v = np.asarray(v_template, dtype=np.float64)
    J = np.asarray(joints, dtype=np.float64)
    part = np.asarray(lbs_weights).argmax(axis=1)
    everything = np.arange(len(v))
    head = np.flatnonzero(part == _J["head"])
    if len(head) < 20:
        raise ValueError(f"only {len(head)} vertices are skinned mostly to the head: not an SMPL-form body")
    mid = head[np.abs(v[head, 0]) < 0.01]
    nose_tip = mid[np.argmax(v[mid, 2])]
    eye_y = v[nose_tip, 1] + 0.04
    sets: dict[str, np.ndarray] = {"nose": _nearest(v, head, v[nose_tip], 3)}
    mix: dict[str, list[tuple[np.ndarray, float]]] = {}  # landmarks that blend several vertex sets
    pelvis = _nearest(v, everything, J[_J["pelvis"]], 24)
    for side, sx in (("left", 1.0), ("right", -1.0)):
        near = head[(np.abs(v[head, 0] - sx * 0.032) < 0.01) & (np.abs(v[head, 1] - eye_y) < 0.01)]
        if len(near) == 0:
            raise ValueError(f"no head vertex near the {side} eye")
        sets[f"{side}_eye"] = near[np.argsort(-v[near, 2])[:4]]
        band = head[(np.abs(v[head, 1] - (eye_y - 0.02)) < 0.012)
                    & (v[head, 2] > J[_J["head"], 2]) & (v[head, 2] < J[_J["head"], 2] + 0.06)]
        ear = band[np.argmax(sx * v[band, 0])]
        sets[f"{side}_ear"] = _nearest(v, head, v[ear], 4)
        sho = J[_J[f"{side}_shoulder"]]
        top_of_shoulder = _nearest(v, everything, sho + np.array([sx * 0.01, 0.03, 0.0]), 10)
        mix[f"{side}_shoulder"] = [(top_of_shoulder, 0.5), (_nearest(v, everything, sho, 24), 0.5)]
        for kp, joint in (("elbow", "elbow"), ("wrist", "wrist"), ("knee", "knee"), ("ankle", "ankle")):
            sets[f"{side}_{kp}"] = _nearest(v, everything, J[_J[f"{side}_{joint}"]], 24)
        lateral = _nearest(v, everything, J[_J[f"{side}_hip"]] + np.array([sx * 0.045, 0.0, 0.0]), 12)
        mix[f"{side}_hip"] = [(lateral, 0.65), (pelvis, 0.35)]
        foot = np.flatnonzero(np.isin(part, [_J[f"{side}_foot"], _J[f"{side}_ankle"]]))
        fj = J[_J[f"{side}_foot"]]
        for kp, dx in (("big_toe", -0.02), ("small_toe", 0.03)):
            band = foot[np.abs(v[foot, 0] - (fj[0] + sx * dx)) < 0.012]
            sets[f"{side}_{kp}"] = _nearest(v, foot, v[band[np.argmax(v[band, 2])]], 4)
        low = foot[v[foot, 1] < v[foot, 1].min() + 0.03]
        sets[f"{side}_heel"] = _nearest(v, foot, v[low[np.argmin(v[low, 2])]], 4)
    top = head[np.argmax(v[head, 1])]
    sets["head"] = _nearest(v, head, v[top], 8)
    sets["neck"] = _nearest(v, everything, J[_J["neck"]], 24)
    mix.update({name: [(members, 1.0)] for name, members in sets.items()})
    # Halpe's mid-hip: half of each hip landmark.
    mix["hip"] = [(m, 0.5 * w) for side in ("left", "right") for m, w in mix[f"{side}_hip"]]
    k = max(sum(len(m) for m, _ in parts) for parts in mix.values())
    ids = np.zeros((len(HALPE26.joint_names), k), dtype=np.int64)
    weights = np.zeros((len(HALPE26.joint_names), k))
    for row, name in enumerate(HALPE26.joint_names):
        parts = mix[name]
        col = 0
        for members, share in parts:
            ids[row, col:col + len(members)] = members
            weights[row, col:col + len(members)] = share / len(members)
            col += len(members)
    return Landmarks(names=HALPE26.joint_names, vertex_ids=ids, weights=weights)
