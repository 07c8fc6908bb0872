"""Pose trajectories for synthetic motion: anatomical joint channels, motion primitives, blending, joint limits.

A pose is a vector of named *anatomical channels* (radians): hip flexion, knee flexion, shoulder lowering, ... (see
:data:`CHANNELS`). A primitive writes a full channel trajectory ``(T, C)`` plus root motion: forward and sideways
speed, yaw rate and ``lift`` (metres of extra root height above ground contact: jump and running flight phases).
Primitives come in families (:data:`FAMILIES`): idle; locomotion (walk at 0.5-1.8 m/s on straight or curved paths,
run at 2-4 m/s with flight phases, turn on the spot); jump (in place or forward); sit and kneel; bend (pick
something up from the floor, squat/crouch, forward or side lunge); arms (reach, wave, arms up, stretch, clap);
combat (box, kick); free (smooth random limb trajectories spanning the joint limits); lie (falls and lying down
onto the back, front or side, moving while lying, getting up: an optional family, :data:`OPTIONAL_FAMILIES`, drawn
only when asked for).

A sequence is a chain of primitives cross-faded with a smooth partition of unity. With probability
:data:`TWO_CHAIN_PROB` it is two chains instead, planned independently: a lower-body chain (legs, pelvis, root
motion: walk, sit, lunge, ...) and an upper-body chain (arms, spine twist, neck: clap, box, arms up, ...), combined
channel-wise with :data:`UPPER_MASK` / :data:`UPPER_ADDITIVE`. The result is clamped smoothly to per-channel joint
limits and converted to SMPL's 24 parent-relative rotations (:func:`channels_to_rotmats`).

One family (:data:`HELD_OUT_FAMILY`) is kept out of the default plan as a generalisation split:
:func:`primitives_for` gives the primitive sets of the training and held-out data.

SMPL conventions used here (rest pose = T-pose, y up, facing +z, subject's left at +x; a joint's rotation acts in its
parent's rest-aligned frame). For a *left* joint: hip/shoulder flexion forward = -x, knee flexion = +x, ankle
plantar-flexion = +x, ankle eversion = +z, hip abduction = +z, shoulder lowering = -z, elbow flexion = -y, spine
flexion forward = +x. Right joints mirror left ones with ``(x, y, z) -> (x, -y, -z)``, the same mirror as the SMPL
flip. Per joint the rotation is ``R = Rx(ax) @ Ry(ay) @ Rz(az)``: for the shoulder that lowers the arm first (z),
twists it about the vertical (y), then swings it forward (x). Positive ``sh_rot`` is external (lateral) rotation.
Leg poses inside primitives are mostly written as *thigh angles* in the heading frame (forward from vertical);
``hip_flex = thigh + root_pitch``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

FPS = 30.0
GRAVITY = 9.81

FAMILIES: dict[str, tuple[str, ...]] = {
    "idle": ("idle",),
    "locomotion": ("walk", "run", "turn"),
    "jump": ("jump",),
    "sit_kneel": ("sit", "kneel"),
    "bend": ("bend_pick", "squat", "lunge"),
    "arms": ("reach", "wave", "arms_up", "stretch", "clap"),
    "combat": ("box", "kick"),
    "free": ("random_limbs",),
    "lie": ("lie",),
}
# Families drawn only when asked for (generator version 4 adds lying on the floor): leaving them out of the default
# keeps every earlier generator version's sequences exactly as they were.
OPTIONAL_FAMILIES: tuple[str, ...] = ("lie",)
# Held out of training: combat. Its poses (fast full-extension punches, a leg raised high while balancing on the other)
# are not a mixture of the other families, so it tests generalisation, yet it is rare in everyday videos, so leaving it
# out costs the training data little coverage. Holding out locomotion or sitting would instead remove the most common
# real-world motions, and 'free' is too close to everything else to be a meaningful split.
HELD_OUT_FAMILY = "combat"
PRIMITIVES: tuple[str, ...] = tuple(p for family in FAMILIES.values() for p in family)
FAMILY_OF: dict[str, str] = {p: family for family, prims in FAMILIES.items() for p in prims}

# Sampling weights (normalised over the allowed set): locomotion and arm motions common, the rest moderately frequent.
PRIMITIVE_PROBS: dict[str, float] = {
    "idle": 0.07, "walk": 0.14, "run": 0.06, "turn": 0.06, "jump": 0.04, "sit": 0.05, "kneel": 0.03,
    "bend_pick": 0.04, "squat": 0.04, "lunge": 0.03, "reach": 0.07, "wave": 0.05, "arms_up": 0.05, "stretch": 0.04,
    "clap": 0.04, "box": 0.04, "kick": 0.03, "random_limbs": 0.05, "lie": 0.07,
}
# Segment durations (s); default 1.5-4 s. Sitting or kneeling down, holding and getting up needs longer.
DURATIONS: dict[str, tuple[float, float]] = {
    "sit": (2.8, 5.0), "kneel": (2.8, 5.0), "bend_pick": (2.0, 4.0), "jump": (2.0, 4.0), "lunge": (2.0, 4.0),
    "lie": (5.0, 10.0),
}
DEFAULT_DURATION = (1.5, 4.0)

# Two-chain mode: which primitives each chain may use. In the upper chain 'idle' means "no upper-body action of its
# own": the arms follow the lower chain (arm swing while walking, guard while kicking, ...).
TWO_CHAIN_PROB = 0.4
LOWER_PRIMITIVES = ("idle", "walk", "run", "turn", "jump", "sit", "kneel", "squat", "lunge", "kick")
UPPER_PRIMITIVES = ("idle", "reach", "wave", "arms_up", "stretch", "clap", "box", "random_limbs")
CHAIN_IDLE_WEIGHT = 0.08  # idle's sampling weight inside either chain of a two-chain plan

# name: (lower limit, upper limit), radians. Anatomical sign: positive = flexion / forward / outward / lowering.
CHANNEL_LIMITS: dict[str, tuple[float, float]] = {
    "root_pitch": (-0.3, 1.4), "root_roll": (-0.35, 0.35),
    "spine_flex": (-0.35, 0.8), "spine_lat": (-0.45, 0.45), "spine_twist": (-0.55, 0.55),
    "neck_flex": (-0.5, 0.7), "neck_lat": (-0.4, 0.4), "neck_twist": (-1.0, 1.0),
    "l_hip_flex": (-0.45, 2.2), "l_hip_abd": (-0.35, 1.0), "l_hip_rot": (-0.6, 0.6),
    "r_hip_flex": (-0.45, 2.2), "r_hip_abd": (-0.35, 1.0), "r_hip_rot": (-0.6, 0.6),
    "l_knee": (0.0, 2.6), "r_knee": (0.0, 2.6),
    "l_ankle": (-0.65, 0.75), "r_ankle": (-0.65, 0.75),
    "l_ankle_ev": (-0.45, 0.35), "r_ankle_ev": (-0.45, 0.35),
    "l_collar": (-0.2, 0.45), "r_collar": (-0.2, 0.45),
    "l_sh_lower": (-0.7, 1.75), "l_sh_flex": (-0.9, 3.0), "l_sh_rot": (-1.1, 1.0),
    "r_sh_lower": (-0.7, 1.75), "r_sh_flex": (-0.9, 3.0), "r_sh_rot": (-1.1, 1.0),
    "l_elbow": (0.0, 2.45), "r_elbow": (0.0, 2.45),
    "l_wrist": (-0.7, 0.7), "r_wrist": (-0.7, 0.7),
}
CHANNELS: tuple[str, ...] = tuple(CHANNEL_LIMITS)
CH = {name: i for i, name in enumerate(CHANNELS)}
_LO = np.array([CHANNEL_LIMITS[c][0] for c in CHANNELS])
_HI = np.array([CHANNEL_LIMITS[c][1] for c in CHANNELS])

# Two-chain combination, per channel: UPPER_MASK = 1 takes the upper chain's value, 0 the lower chain's (legs, pelvis,
# root). Spine flexion and side bend belong to both (a reach leans forward, so does a bend): UPPER_ADDITIVE adds the
# upper chain's deviation from the relaxed posture to the lower chain's value.
_UPPER_NAMES = ("spine_twist", "neck_flex", "neck_lat", "neck_twist",
                *(f"{s}_{n}" for s in "lr" for n in ("collar", "sh_lower", "sh_flex", "sh_rot", "elbow", "wrist")))
UPPER_MASK = np.array([1.0 if c in _UPPER_NAMES else 0.0 for c in CHANNELS])
UPPER_ADDITIVE = np.array([1.0 if c in ("spine_flex", "spine_lat") else 0.0 for c in CHANNELS])

# Body proportions (m) for root motion that keeps a foot planted; an average adult's.
THIGH, SHIN, HIP_DROP, HIP_HALF_WIDTH = 0.38, 0.43, 0.07, 0.09
LEG = 0.85
ANKLE_HEIGHT, KNEE_RADIUS = 0.08, 0.09  # ankle, knee joint above the floor they rest on (effective: fitted on the mesh)
KNEEL_SHIN = 1.85  # knee - thigh angle of a kneeling leg: shin past horizontal, so the knee rests on the floor

# channel -> [(SMPL joint, axis 0/1/2 = x/y/z, factor)], left side; right side mirrored below.
_SPINE = ((3, 0.35), (6, 0.35), (9, 0.30))
_NECK = ((12, 0.5), (15, 0.5))
_LEFT_MAP: dict[str, list[tuple[int, int, float]]] = {
    "hip_flex": [(1, 0, -1.0)], "hip_abd": [(1, 2, 1.0)], "hip_rot": [(1, 1, 1.0)],
    "knee": [(4, 0, 1.0)], "ankle": [(7, 0, 1.0)], "ankle_ev": [(7, 2, 1.0)], "collar": [(13, 2, 1.0)],
    "sh_lower": [(16, 2, -1.0)], "sh_flex": [(16, 0, -1.0)], "sh_rot": [(16, 1, 1.0)],
    "elbow": [(18, 1, -1.0)], "wrist": [(20, 2, 1.0)],
}
_LEFT_TO_RIGHT_JOINT = {1: 2, 4: 5, 7: 8, 13: 14, 16: 17, 18: 19, 20: 21}


def _channel_map() -> dict[str, list[tuple[int, int, float]]]:
    out: dict[str, list[tuple[int, int, float]]] = {
        "spine_flex": [(j, 0, w) for j, w in _SPINE], "spine_lat": [(j, 2, w) for j, w in _SPINE],
        "spine_twist": [(j, 1, w) for j, w in _SPINE],
        "neck_flex": [(j, 0, w) for j, w in _NECK], "neck_lat": [(j, 2, w) for j, w in _NECK],
        "neck_twist": [(j, 1, w) for j, w in _NECK],
    }
    for name, targets in _LEFT_MAP.items():
        out["l_" + name] = targets
        # mirror: y and z components change sign on the right
        out["r_" + name] = [(_LEFT_TO_RIGHT_JOINT[j], ax, f if ax == 0 else -f) for j, ax, f in targets]
    return out


CHANNEL_MAP = _channel_map()


def _euler_matrix() -> np.ndarray:
    """Linear map ``(C,) channels -> (24 * 3,)`` Euler angles (root pitch and roll included)."""
    m = np.zeros((len(CHANNELS), 24 * 3))
    for name, targets in CHANNEL_MAP.items():
        for joint, axis, factor in targets:
            m[CH[name], 3 * joint + axis] += factor
    m[CH["root_pitch"], 0] = 1.0
    m[CH["root_roll"], 2] = 1.0
    return m


_EULER = _euler_matrix()
_ACTIVE = np.flatnonzero(np.abs(_EULER).sum(axis=0) > 0)


def smooth_clamp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Identity inside ``[lo + m, hi - m]``, tanh-compressed into the margin m outside; never leaves ``(lo, hi)``.

    C1-continuous, so clamping does not put kinks (acceleration spikes) into trajectories that touch a limit.
    """
    m = min(0.15, (hi - lo) / 4)
    a, b = lo + m, hi - m
    y = np.where(x > b, b + m * np.tanh((x - b) / m), x)
    return np.where(x < a, a + m * np.tanh((x - a) / m), y)


def clamp_channels(ch: np.ndarray) -> np.ndarray:
    """Apply :data:`CHANNEL_LIMITS` to ``(..., C)`` channel values (root channels included); :func:`smooth_clamp`."""
    m = np.minimum(0.15, (_HI - _LO) / 4)
    a, b = _LO + m, _HI - m
    y = np.where(ch > b, b + m * np.tanh((ch - b) / m), ch)
    return np.where(ch < a, a + m * np.tanh((ch - a) / m), y)


def _rot(axis: int, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` about coordinate axis 0/1/2 by ``angle`` (...,) radians."""
    c, s = np.cos(angle), np.sin(angle)
    r = np.zeros((*angle.shape, 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[..., axis, axis] = 1.0
    r[..., i, i], r[..., i, j], r[..., j, i], r[..., j, j] = c, -s, s, c
    return r


def _euler_entries(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """The 9 entries (row-major) of ``Rx(a) @ Ry(b) @ Rz(c)``, closed form."""
    return _euler_trig(np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c))


def _euler_trig(ca: np.ndarray, sa: np.ndarray, cb: np.ndarray, sb: np.ndarray, cc: np.ndarray, sc: np.ndarray
                ) -> tuple[np.ndarray, ...]:
    sasb, casb = sa * sb, ca * sb
    return (cb * cc, -cb * sc, sb,
            ca * sc + sasb * cc, ca * cc - sasb * sc, -sa * cb,
            sa * sc - casb * cc, sa * cc + casb * sc, ca * cb)


def euler_xyz(angles: np.ndarray) -> np.ndarray:
    """``R = Rx(a0) @ Ry(a1) @ Rz(a2)``: angles ``(..., 3)`` radians -> ``(..., 3, 3)``."""
    entries = _euler_entries(angles[..., 0], angles[..., 1], angles[..., 2])
    return np.stack(entries, axis=-1).reshape(*angles.shape[:-1], 3, 3)


def channels_to_rotmats(ch: np.ndarray, heading: np.ndarray, tilt: np.ndarray | None = None) -> np.ndarray:
    """Channels ``(T, C)`` and world heading (yaw about +y) ``(T,)`` -> SMPL rotations ``(T, 24, 3, 3)``, world frame.

    Joint 0 is the global orientation in the y-up world: ``Ry(heading) @ Rx(root_pitch) @ Rz(root_roll)``, or with a
    body ``tilt (T, 2)`` (pitch, roll; see :class:`PrimitiveOut`)
    ``Ry(heading) @ Rx(tilt_pitch) @ Rz(tilt_roll) @ Rx(root_pitch) @ Rz(root_roll)``.
    """
    # trigonometry only for the Euler angles some channel drives (about 2/3 of them): it dominates the cost
    angles = ch @ _EULER[:, _ACTIVE]
    cos, sin = np.ones((len(ch), 72)), np.zeros((len(ch), 72))
    cos[:, _ACTIVE], sin[:, _ACTIVE] = np.cos(angles), np.sin(angles)
    cos, sin = cos.reshape(-1, 24, 3), sin.reshape(-1, 24, 3)
    entries = _euler_trig(cos[..., 0], sin[..., 0], cos[..., 1], sin[..., 1], cos[..., 2], sin[..., 2])
    rot = np.stack(entries, axis=-1).reshape(len(ch), 24, 3, 3)
    if tilt is not None:
        rot[:, 0] = _rot(0, tilt[:, 0]) @ _rot(2, tilt[:, 1]) @ rot[:, 0]
    rot[:, 0] = _rot(1, heading) @ rot[:, 0]
    return rot


# ---------------------------------------------------------------------------------------------------------------------
# Helpers for trajectories


def smooth_noise(rng: np.random.Generator, n: int, dims: int, sigma_s: float, fps: float = FPS) -> np.ndarray:
    """Low-pass Gaussian noise ``(n, dims)``: a stationary process with unit std per dim and correlation time
    ~``sigma_s`` seconds (Gaussian-filtered white noise).

    Scaled by the process's std, not the sample's: a series shorter than its correlation time is then a random,
    nearly constant offset of typical size 1 (a sample std would blow it up). Short series are drawn as a sum of
    Gaussian kernels on knots ``sigma / 2`` apart (the same process, a few times cheaper than filtering each frame).
    """
    sigma = max(sigma_s * fps, 1.0)
    step = sigma / 2.0
    knots = np.arange(-3.0 * sigma, n + 3.0 * sigma, step)
    if n * len(knots) <= 60_000:
        g = np.exp(-0.5 * ((np.arange(n)[:, None] - knots[None, :]) / sigma) ** 2)
        return g @ rng.standard_normal((len(knots), dims)) / np.sqrt(np.sqrt(np.pi) * sigma / step)
    pad = int(4 * sigma)
    x = gaussian_filter1d(rng.standard_normal((n + 2 * pad, dims)), sigma, axis=0, mode="reflect")[pad:pad + n]
    return x * np.sqrt(2 * np.sqrt(np.pi) * sigma)


def smootherstep(x: np.ndarray) -> np.ndarray:
    """C2 step from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


def bump(phase: np.ndarray, power: float = 2.0) -> np.ndarray:
    """Periodic bump in [0, 1] peaking at phase 0 (mod 2 pi)."""
    return (0.5 + 0.5 * np.cos(phase)) ** power


def envelope(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """Rise-hold-fall envelope in [0, 1] over times ``t`` (seconds)."""
    up = smootherstep((t - start) / max(rise, 1e-6))
    down = smootherstep((t - start - rise - hold) / max(fall, 1e-6))
    return up * (1.0 - down)


def _wrap(x: np.ndarray) -> np.ndarray:
    """Angle to ``[-pi, pi)``."""
    return (x + np.pi) % (2 * np.pi) - np.pi


def _interp_keys(t: np.ndarray, times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Keyframes ``values (K, D)`` at increasing ``times (K,)`` -> ``(T, D)``: smootherstep between consecutive keys,
    held before the first and after the last (each key is a momentary stop: C2, no overshoot)."""
    idx = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    t0, t1 = times[idx], times[idx + 1]
    s = smootherstep((t - t0) / np.maximum(t1 - t0, 1e-6))
    return values[idx] + s[:, None] * (values[idx + 1] - values[idx])


def _apply_keys(ch: np.ndarray, t: np.ndarray, times: Sequence[float], poses: Sequence[dict[str, float]],
                style: Style, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Drive channels through keyframe poses (absolute values; a channel a pose lacks is at its relaxed value), added
    as offsets from the relaxed posture so fidgeting stays on top; ``scale`` shrinks the offsets (see :func:`_room`).
    Names that are not channels (helper tracks such as ``"toe_l"``) default to 0 and are returned instead."""
    names = sorted({k for p in poses for k in p})
    default = {k: style.base[CH[k]] if k in CH else 0.0 for k in names}
    values = np.array([[p.get(k, default[k]) for k in names] for p in poses])
    track = _interp_keys(t, np.asarray(times, dtype=np.float64), values)
    extra = {}
    for j, k in enumerate(names):
        if k in CH:
            ch[:, CH[k]] += scale * (track[:, j] - default[k])
        else:
            extra[k] = scale * track[:, j]
    return extra


def _room(span: float, natural: float) -> float:
    """Amplitude factor for a move that naturally takes ``natural`` seconds but gets ``span``: a segment too short to
    sit down and get up (very short sequences) does part of the move instead of all of it at an absurd speed."""
    return float(np.clip(span / natural, 0.0, 1.0))


def _legs(thigh: float, knee: float, pitch: float = 0.0, sides: str = "lr", **extra: float) -> dict[str, float]:
    """Keyframe entries for legs given as thigh angle from vertical (heading frame), knee flexion and pelvis pitch."""
    out = {"root_pitch": pitch}
    for s in sides:
        out[f"{s}_hip_flex"] = thigh + pitch
        out[f"{s}_knee"] = knee
    out.update(extra)
    return out


def _arm(side: str, lower: float, flex: float, rot: float, elbow: float, **extra: float) -> dict[str, float]:
    """Keyframe entries for one arm (see the module doc for the angle conventions)."""
    out = {f"{side}_sh_lower": lower, f"{side}_sh_flex": flex, f"{side}_sh_rot": rot, f"{side}_elbow": elbow}
    out.update({f"{side}_{k}": v for k, v in extra.items()})
    return out


def _pull(ch: np.ndarray, env: np.ndarray, targets: dict[str, float]) -> None:
    """Move channels toward targets by the envelope weight (in place)."""
    for name, target in targets.items():
        c = CH[name]
        ch[:, c] += env * (target - ch[:, c])


@dataclass
class Segment:
    """One primitive in a sequence's plan: frames ``[start, end)`` of a chain ('body', 'lower' or 'upper')."""

    primitive: str
    start: int
    end: int
    params: dict[str, float] = field(default_factory=dict)
    chain: str = "body"


@dataclass
class Style:
    """Per-sequence person style: rest posture and amplitudes shared by all primitives."""

    base: np.ndarray  # (C,) channel values of the relaxed standing posture
    sway_hz: float
    sway_amp: float
    fidget: float  # std (rad) of slow per-channel noise


@dataclass
class PrimitiveOut:
    """A primitive's full trajectory over its frames.

    channels (T, C); speed (T,) forward m/s; yaw_rate (T,) rad/s; lift (T,) m of extra root height above ground
    contact (flight); side_speed (T,) m/s toward the subject's left; tilt (T, 2) the whole body's pitch (forward) and
    roll (toward its right) from upright, radians, applied before the root channels: it takes a body lying on the
    floor past the root limits of a standing one.
    """

    channels: np.ndarray
    speed: np.ndarray
    yaw_rate: np.ndarray
    lift: np.ndarray
    side_speed: np.ndarray | None = None
    tilt: np.ndarray | None = None


def _out(ch: np.ndarray, speed: np.ndarray | None = None, yaw_rate: np.ndarray | None = None,
         lift: np.ndarray | None = None, side_speed: np.ndarray | None = None) -> PrimitiveOut:
    n = len(ch)
    z = np.zeros(n)
    return PrimitiveOut(ch, z if speed is None else speed, z if yaw_rate is None else yaw_rate,
                        z if lift is None else lift, side_speed)


def sample_style(rng: np.random.Generator) -> Style:
    """Relaxed standing posture with per-person variation (arms down, elbows slightly bent)."""
    base = np.zeros(len(CHANNELS))
    for side in "lr":
        base[CH[f"{side}_sh_lower"]] = rng.uniform(1.15, 1.42)
        base[CH[f"{side}_sh_flex"]] = rng.uniform(-0.05, 0.2)
        base[CH[f"{side}_sh_rot"]] = rng.uniform(-0.2, 0.2)
        base[CH[f"{side}_elbow"]] = rng.uniform(0.1, 0.45)
        base[CH[f"{side}_hip_abd"]] = rng.uniform(0.0, 0.12)
        base[CH[f"{side}_hip_rot"]] = rng.uniform(-0.1, 0.15)
        base[CH[f"{side}_knee"]] = rng.uniform(0.0, 0.1)
        base[CH[f"{side}_wrist"]] = rng.uniform(-0.2, 0.2)
    base[CH["spine_flex"]] = rng.uniform(-0.05, 0.15)
    base[CH["neck_flex"]] = rng.uniform(-0.1, 0.2)
    return Style(base=base, sway_hz=rng.uniform(0.15, 0.4), sway_amp=rng.uniform(0.01, 0.04),
                 fidget=rng.uniform(0.015, 0.05))


def _flat_feet(ch: np.ndarray, sides: str = "lr") -> None:
    """Set ankle pitch and eversion so the feet stay level on the floor, whatever the pelvis and leg rotations.

    Solves ``R_leg @ Rx(ankle) @ Rz(ev) e_y = e_y`` with ``R_leg`` the pelvis-hip-knee rotation (in place); for a leg
    in the sagittal plane that is ``ankle = hip_flex - root_pitch - knee``.
    """
    pitch, roll = ch[:, CH["root_pitch"]], ch[:, CH["root_roll"]]
    v = (np.cos(pitch) * np.sin(roll), np.cos(pitch) * np.cos(roll), -np.sin(pitch))  # world up, pelvis frame
    for side in sides:
        s = 1.0 if side == "l" else -1.0
        h = _euler_entries(-ch[:, CH[f"{side}_hip_flex"]], s * ch[:, CH[f"{side}_hip_rot"]],
                           s * ch[:, CH[f"{side}_hip_abd"]])
        u = [v[0] * h[j] + v[1] * h[3 + j] + v[2] * h[6 + j] for j in range(3)]  # ... in the thigh frame
        knee = ch[:, CH[f"{side}_knee"]]
        ck, sk = np.cos(knee), np.sin(knee)
        u1, u2 = u[1] * ck + u[2] * sk, u[2] * ck - u[1] * sk  # ... in the shin frame
        ch[:, CH[f"{side}_ankle"]] = np.arctan2(u2, u1)
        ch[:, CH[f"{side}_ankle_ev"]] = -s * np.arcsin(np.clip(u[0], -1.0, 1.0))


def _foot_forward(ch: np.ndarray, side: str) -> np.ndarray:
    """Forward offset (m) of a foot from the root in the heading frame (sagittal-plane approximation)."""
    pitch = ch[:, CH["root_pitch"]]
    thigh = ch[:, CH[f"{side}_hip_flex"]] - pitch
    return -HIP_DROP * np.sin(pitch) + THIGH * np.sin(thigh) + SHIN * np.sin(thigh - ch[:, CH[f"{side}_knee"]])


def _knee_forward(ch: np.ndarray, side: str) -> np.ndarray:
    """Forward offset (m) of a knee from the root in the heading frame."""
    pitch = ch[:, CH["root_pitch"]]
    return -HIP_DROP * np.sin(pitch) + THIGH * np.sin(ch[:, CH[f"{side}_hip_flex"]] - pitch)


def _planted_speed(offsets: Sequence[np.ndarray], weights: Sequence[np.ndarray | float], fps: float) -> np.ndarray:
    """Root speed (m/s) that keeps planted points still: ``-d(offset)/dt``, mixed over points by weight (sum 1)."""
    speed = np.zeros(len(offsets[0]))
    for off, w in zip(offsets, weights, strict=True):
        if len(off) > 1:
            speed -= w * np.gradient(off) * fps
    return speed


def _standing(t: np.ndarray, style: Style, rng: np.random.Generator, fps: float = FPS) -> np.ndarray:
    """Relaxed standing with slow weight-shift sway and fidgeting, ``(T, C)``."""
    ch = np.tile(style.base, (len(t), 1))
    phase = 2 * np.pi * style.sway_hz * t + rng.uniform(0, 2 * np.pi)
    sway = style.sway_amp * np.sin(phase)
    ch[:, CH["root_roll"]] += sway
    ch[:, CH["spine_lat"]] -= 1.5 * sway
    ch[:, CH["l_hip_abd"]] -= sway  # legs stay under the body while the pelvis rolls
    ch[:, CH["r_hip_abd"]] += sway
    ch += style.fidget * smooth_noise(rng, len(t), len(CHANNELS), sigma_s=0.6, fps=fps) * _FIDGET
    _flat_feet(ch)
    return ch


def _fidget_mask() -> np.ndarray:
    """Which channels fidget and how much (relative): upper body and head more than legs."""
    mask = np.full(len(CHANNELS), 0.3)
    for name in ("neck_flex", "neck_twist", "neck_lat", "l_sh_flex", "r_sh_flex", "l_elbow", "r_elbow", "l_wrist",
                 "r_wrist", "l_sh_rot", "r_sh_rot"):
        mask[CH[name]] = 1.5
    for name in ("root_pitch", "root_roll", "l_knee", "r_knee"):
        mask[CH[name]] = 0.2
    return mask


_FIDGET = _fidget_mask()


def _span(seg: Segment, fps: float) -> tuple[float, float]:
    """Start and end (s) of the part of a segment where its blend weight is (nearly) 1: actions go there."""
    t0, dur = seg.start / fps, (seg.end - seg.start) / fps
    m = min(0.35, 0.15 * dur)
    return t0 + m, t0 + dur - m


def _segment_time(t: np.ndarray, seg: Segment, fps: float) -> tuple[float, float]:
    return seg.start / fps, (seg.end - seg.start) / fps


def _guard(side: str, rng: np.random.Generator) -> dict[str, float]:
    """Boxing guard for one arm: elbow bent and down, fist in front of the chin."""
    return _arm(side, rng.uniform(1.45, 1.65), rng.uniform(0.85, 1.1), rng.uniform(-0.55, -0.3),
                rng.uniform(2.25, 2.4))


# ---------------------------------------------------------------------------------------------------------------------
# Primitives. Each takes (t, seg, style, rng, fps): t = absolute times (s) of the frames to evaluate (the frames where
# the segment has blend weight, a window around [seg.start, seg.end)), and returns a PrimitiveOut over those frames.


# Idle arm postures (left-side values, mirrored; checked on the body model): arms crossed in front of the chest,
# hands clasped in front of the belly, holding something (a phone) in front of the chest.
_IDLE_ARMS = {
    "crossed": {"lower": 1.45, "flex": 0.75, "rot": -1.0, "elbow": 2.1},
    "clasped": {"lower": 1.6, "flex": 0.3, "rot": -0.9, "elbow": 0.9},
    "phone": {"lower": 1.45, "flex": 0.45, "rot": -0.55, "elbow": 1.6},
}


def prim_idle(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """Standing, swaying, looking around; sometimes with arms crossed, hands clasped or holding a phone."""
    ch = _standing(t, style, rng, fps)
    ch[:, CH["neck_twist"]] += rng.uniform(0.1, 0.6) * smooth_noise(rng, len(t), 1, sigma_s=1.2, fps=fps)[:, 0]
    if rng.random() < 0.35:
        kind = list(_IDLE_ARMS)[rng.integers(len(_IDLE_ARMS))]
        seg.params["arms"] = float(list(_IDLE_ARMS).index(kind))
        t0, dur = _segment_time(t, seg, fps)
        env = envelope(t, t0, min(0.7, dur / 3), max(0.0, dur - 2 * min(0.7, dur / 3)), min(0.7, dur / 3))
        for side in "lr":
            _pull(ch, env, _arm(side, **_IDLE_ARMS[kind]))
        if kind == "phone":
            ch[:, CH["neck_flex"]] += env * 0.45
    return _out(ch)


def _gait(t: np.ndarray, style: Style, rng: np.random.Generator, stride_hz: np.ndarray | float,
          hip_amp: np.ndarray | float, knee_amp: np.ndarray | float, arm_amp: np.ndarray | float,
          fps: float = FPS) -> np.ndarray:
    """Cyclic leg/arm pattern of walking (or stepping in place for small amplitudes), ``(T, C)``."""
    ch = np.tile(style.base, (len(t), 1))
    phi = 2 * np.pi * np.cumsum(np.broadcast_to(stride_hz, t.shape)) / fps + rng.uniform(0, 2 * np.pi)
    for side, off in (("l", 0.0), ("r", np.pi)):
        p = phi + off
        # Hip: sinusoid, flexed at heel strike (p = pi/2), extended at push-off (p = -pi/2).
        ch[:, CH[f"{side}_hip_flex"]] = 0.12 + hip_amp * np.sin(p)
        # Knee: big flexion in initial swing (~23% of a cycle after peak hip extension, hip near neutral), small
        # one after heel strike.
        ch[:, CH[f"{side}_knee"]] = 0.08 + knee_amp * bump(p + 0.15, 2.5) + 0.15 * knee_amp * bump(p - 2.2, 4)
        # Ankle: push-off plantar-flexion, then dorsiflexion in swing to clear the toes.
        ch[:, CH[f"{side}_ankle"]] = 0.35 * knee_amp * bump(p + 1.3, 3) - 0.12 * bump(p - 0.6, 2)
        # Arms swing against the same-side leg.
        ch[:, CH[f"{side}_sh_flex"]] -= arm_amp * np.sin(p)
        ch[:, CH[f"{side}_elbow"]] += 0.25 + 0.5 * arm_amp * (0.5 - 0.5 * np.sin(p))
        ch[:, CH[f"{side}_hip_abd"]] = 0.03
    ch[:, CH["spine_twist"]] += 0.25 * arm_amp * np.sin(phi)
    ch[:, CH["root_roll"]] += 0.05 * hip_amp * np.sin(phi)
    ch[:, CH["spine_flex"]] += 0.05
    ch += 0.5 * style.fidget * smooth_noise(rng, len(t), len(CHANNELS), sigma_s=0.8, fps=fps) * _FIDGET
    return ch


def _path_yaw(rng: np.random.Generator, n: int, fps: float, max_curve: float) -> np.ndarray:
    """Yaw rate (rad/s) of a path: straight, a steady curve, or a wandering one."""
    kind = rng.choice(3, p=[0.35, 0.35, 0.3])
    yaw = np.full(n, rng.normal(0.0, 0.04) if kind == 0 else rng.uniform(-max_curve, max_curve))
    if kind == 2:
        yaw += 0.6 * max_curve * smooth_noise(rng, n, 1, sigma_s=1.5, fps=fps)[:, 0]
    return yaw


def prim_walk(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """Walking at 0.5-1.8 m/s on a straight, curved or wandering path; cadence, step length, knee and arm swing grow
    with speed; speed = step length x step rate, so the feet roughly keep their place on the floor."""
    n = len(t)
    v0 = rng.uniform(0.5, 1.8)
    seg.params["speed"] = v0
    v = np.clip(v0 * (1 + 0.06 * smooth_noise(rng, n, 1, sigma_s=1.5, fps=fps)[:, 0]), 0.4, 2.0)
    stride_hz = (0.53 + 0.28 * v) * rng.uniform(0.93, 1.07)  # cadence ~80 steps/min slow, ~125 brisk
    step = v / (2 * stride_hz)
    hip_amp = np.arcsin(np.clip(step / (2 * LEG * 1.2), 0.0, 0.6))  # pelvis rotation adds ~20% to a step
    knee_amp = (0.45 + 0.35 * v) * rng.uniform(0.9, 1.1)
    arm_amp = (0.08 + 0.22 * v) * rng.uniform(0.6, 1.3)
    ch = _gait(t, style, rng, stride_hz, hip_amp, knee_amp, arm_amp, fps)
    yaw = _path_yaw(rng, n, fps, max_curve=0.5)
    ch[:, CH["root_roll"]] -= np.arctan(v * yaw / GRAVITY)  # lean into the curve
    ch[:, CH["neck_twist"]] += 0.4 * yaw  # look where you go
    return _out(ch, v, yaw)


def prim_run(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
             ) -> PrimitiveOut:
    """Running at 2-4 m/s: forward lean, short stance with a bent knee, high heel recovery in swing, bent elbows
    swinging, and a flight phase between steps (``lift``: a ballistic arc of the flight time)."""
    n = len(t)
    v0 = rng.uniform(2.0, 4.0)
    seg.params["speed"] = v0
    v = np.clip(v0 * (1 + 0.05 * smooth_noise(rng, n, 1, sigma_s=1.5, fps=fps)[:, 0]), 1.8, 4.3)
    x = np.clip((v - 2.0) / 2.0, 0.0, 1.0)  # 0 = jog, 1 = fast run
    stride_hz = rng.uniform(1.3, 1.42) + 0.1 * x  # cadence ~160-185 steps/min
    phi = 2 * np.pi * np.cumsum(stride_hz) / fps + rng.uniform(0, 2 * np.pi)
    ch = np.tile(style.base, (n, 1))
    pitch = rng.uniform(0.06, 0.14) + 0.1 * x
    ch[:, CH["root_pitch"]] = pitch
    ch[:, CH["spine_flex"]] += 0.05
    ch[:, CH["neck_flex"]] -= 0.6 * pitch  # eyes ahead
    flight = 0.25 + 0.2 * x  # share of a step in the air
    hip_c, hip_a = 0.3 + 0.08 * x, (0.38 + 0.22 * x) * rng.uniform(0.9, 1.1)
    knee_swing, knee_stance = (1.3 + 0.7 * x) * rng.uniform(0.9, 1.1), rng.uniform(0.35, 0.55)
    arm_a, elbow = 0.35 + 0.25 * x, rng.uniform(1.25, 1.65)
    # Left stance is centred at p = pi (thigh passing vertical backward), swing at p = 0; right is half a cycle later.
    stance_half = (1 - flight) * np.pi / 2
    for side, off in (("l", 0.0), ("r", np.pi)):
        p = phi + off
        thigh = hip_c + hip_a * np.sin(p)
        ch[:, CH[f"{side}_hip_flex"]] = thigh + pitch
        ch[:, CH[f"{side}_knee"]] = 0.12 + knee_swing * bump(p + 0.35, 2.0) + knee_stance * bump(p - np.pi, 6)
        ch[:, CH[f"{side}_hip_abd"]] = 0.02
        ch[:, CH[f"{side}_sh_flex"]] = style.base[CH[f"{side}_sh_flex"]] + 0.15 - arm_a * np.sin(p)
        ch[:, CH[f"{side}_sh_lower"]] -= 0.1
        ch[:, CH[f"{side}_elbow"]] = elbow + 0.2 * np.sin(p)
    _flat_feet(ch)
    speed = np.zeros(n)
    in_air = np.ones(n)
    for side, off in (("l", 0.0), ("r", np.pi)):  # foot flat in stance, plantar-flexed push-off, relaxed in swing
        d = np.abs(_wrap(phi + off - np.pi))
        stance = 1.0 - smootherstep((d - stance_half + 0.3) / 0.6)
        c = CH[f"{side}_ankle"]
        ch[:, c] = stance * ch[:, c] + (1 - stance) * 0.05 + 0.4 * bump(phi + off - np.pi - stance_half, 8)
        # in stance the root mostly moves so that the foot stays put: fully, the speed would pulse by +-40% within a
        # stride (real runners: ~+-10%); 60% of it halves foot sliding for a +-25% pulse
        speed += stance * (0.6 * _planted_speed([_foot_forward(ch, side)], [1.0], fps) + 0.4 * v)
        in_air -= stance
    speed += in_air * v
    ch[:, CH["spine_twist"]] += 0.12 * np.sin(phi)
    ch[:, CH["root_roll"]] += 0.04 * np.sin(phi)
    ch += 0.4 * style.fidget * smooth_noise(rng, n, len(CHANNELS), sigma_s=0.8, fps=fps) * _FIDGET
    # flight: centred between the stances (phi = pi/2 mod pi), parabola of height g tf^2 / 8
    u = (phi % np.pi) - np.pi / 2
    half = flight * np.pi / 2
    tf = flight / (2 * stride_hz)
    lift = GRAVITY * tf ** 2 / 8 * np.clip(1 - (u / half) ** 2, 0.0, None)
    yaw = _path_yaw(rng, n, fps, max_curve=0.3)
    ch[:, CH["root_roll"]] -= np.arctan(v * yaw / GRAVITY)
    return _out(ch, speed, yaw, lift)


def prim_turn(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """Turning on the spot with small steps; the yaw rate is spread so the segment turns by ``params['angle']``."""
    ch = _gait(t, style, rng, rng.uniform(0.8, 1.1), rng.uniform(0.1, 0.2), rng.uniform(0.3, 0.5),
               rng.uniform(0.0, 0.15), fps)
    ch[:, CH["neck_twist"]] += 0.3 * np.sign(seg.params["angle"])  # look where you turn
    # yaw_rate is filled in by the planner, which knows the blend weight (see :func:`plan_trajectory`).
    return _out(ch)


def prim_jump(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """One or two jumps, in place or forward: crouch with the arms back, push off onto the toes swinging the arms up,
    flight (``lift`` = ballistic arc of 0.1-0.5 m, legs tucked for high jumps), land on the toes, absorb, stand."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    n_jumps = 1 if b - a < 3.2 else int(rng.integers(1, 3))
    slot = (b - a) / n_jumps
    lift, speed, air = np.zeros(len(t)), np.zeros(len(t)), np.zeros(len(t))
    times: list[float] = [a]
    poses: list[dict[str, float]] = [{}]
    for k in range(n_jumps):
        s0 = a + k * slot
        h = rng.uniform(0.12, 0.5)
        phases = np.array([rng.uniform(0.35, 0.55), rng.uniform(0.15, 0.22), 0.0, rng.uniform(0.22, 0.35),
                           rng.uniform(0.35, 0.6)])  # crouch, push, flight, absorb, recover
        room = slot - 0.1 - phases.sum()
        tf = min(2 * np.sqrt(2 * h / GRAVITY), max(room, 0.2))
        phases[2] = tf
        if phases.sum() > slot:  # short segment: compress everything
            phases *= slot / phases.sum()
            tf = phases[2]
        h = GRAVITY * tf ** 2 / 8
        seg.params[f"height{k}"] = float(h)
        dist = rng.uniform(0.3, 1.1) if rng.random() < 0.5 else rng.uniform(0.0, 0.1)
        dist = min(dist, 3.0 * tf)  # flight speed <= 3 m/s (a standing long jump)
        depth = rng.uniform(0.7, 1.15)
        tuck = np.clip((h - 0.15) / 0.35, 0.0, 1.0) * rng.uniform(0.5, 1.0)
        arms_up = rng.uniform(1.2, 2.7)
        ends = s0 + np.cumsum(phases)
        crouch = _legs(depth, depth + 0.35, 0.45 * depth, spine_flex=0.2, neck_flex=-0.2, toe=0.0)
        crouch.update({f"{s}_sh_flex": -0.7 for s in "lr"} | {f"{s}_elbow": 0.3 for s in "lr"})
        arms = {f"{s}_sh_flex": arms_up for s in "lr"} | {f"{s}_elbow": 0.3 for s in "lr"}
        takeoff = _legs(0.0, 0.05, 0.05, toe=0.6) | arms
        apex = _legs(0.25 + 0.7 * tuck, 0.35 + 1.1 * tuck, 0.1, toe=0.35) | arms
        touch = _legs(0.2 + 0.2 * (dist > 0.2), 0.25, 0.1, toe=0.25) | {f"{s}_sh_flex": 1.0 for s in "lr"}
        land = _legs(0.8 * depth, 0.8 * depth + 0.35, 0.35 * depth, toe=0.0, spine_flex=0.15)
        land.update({f"{s}_sh_flex": 0.8 for s in "lr"})
        times += [ends[0], ends[1], ends[1] + tf / 2, ends[2], ends[3], ends[4]]
        poses += [crouch, takeoff, apex, touch, land, {}]
        u = np.clip((t - ends[1]) / tf, 0.0, 1.0)
        lift += 4 * h * u * (1 - u)
        flight = envelope(t, ends[1] - 0.05, 0.1, tf - 0.1, 0.1)
        speed += dist / tf * flight
        air += flight
    room = _room(b - a, 1.4)
    extra = _apply_keys(ch, t, times, poses, style, room)
    lift, speed = room * lift, room * speed
    _flat_feet(ch)
    ch[:, CH["l_ankle"]] += extra["toe"]
    ch[:, CH["r_ankle"]] += extra["toe"]
    # on the ground the feet stay put while the hips go back and down
    speed += (1 - air) * _planted_speed([_foot_forward(ch, "l"), _foot_forward(ch, "r")], [0.5, 0.5], fps)
    return _out(ch, speed, lift=lift)


def prim_sit(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
             ) -> PrimitiveOut:
    """Sit down on an (invisible) chair: lean forward while the hips go back and down (thighs ~horizontal, shins
    ~vertical, feet flat; the root moves back so the feet stay put), stay seated with some upper-body activity
    (gestures, leaning back or forward, looking around), lean forward again and stand up."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    dur = b - a
    down, up = (min(rng.uniform(1.0, 1.6), 0.36 * dur) for _ in range(2))
    thigh = rng.uniform(1.35, 1.6)
    knee = thigh + rng.uniform(-0.2, 0.3)  # feet slightly forward of or tucked under the knees
    seat_pitch = rng.uniform(-0.15, 0.25)  # leaning back .. forward
    lean = rng.uniform(0.45, 0.75)
    spread = rng.uniform(0.0, 0.35)
    hands = rng.uniform(0.3, 0.8)  # forearms toward the lap
    seated = _legs(thigh, knee, seat_pitch, l_hip_abd=spread, r_hip_abd=spread, spine_flex=rng.uniform(-0.05, 0.3))
    for side in "lr":
        seated |= {f"{side}_sh_flex": hands, f"{side}_elbow": 0.6 + hands}
    mid = _legs(0.5 * thigh, 0.55 * knee, lean)
    t_seat, t_rise = a + down, b - up
    _apply_keys(ch, t, [a, a + 0.5 * down, t_seat, t_rise, t_rise + 0.5 * up, b],
                [{}, mid, seated, seated, mid, {}], style, _room(dur, 2.2))
    hold = envelope(t, t_seat, 0.4, max(0.0, t_rise - t_seat - 0.8), 0.4)
    if hold.any():  # gestures and looking around while seated
        for side in "lr":
            g = smooth_noise(rng, len(t), 3, sigma_s=rng.uniform(0.5, 1.0), fps=fps) * rng.uniform(0.1, 0.4)
            for j, name in enumerate(("sh_flex", "elbow", "sh_rot")):
                ch[:, CH[f"{side}_{name}"]] += hold * g[:, j]
        ch[:, CH["neck_twist"]] += hold * 0.4 * smooth_noise(rng, len(t), 1, sigma_s=1.0, fps=fps)[:, 0]
    _flat_feet(ch)
    speed = _planted_speed([_foot_forward(ch, "l"), _foot_forward(ch, "r")], [0.5, 0.5], fps)
    return _out(ch, speed)


def prim_kneel(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
               ) -> PrimitiveOut:
    """Kneel down on one knee (the other foot flat in front) and sometimes on both, toes tucked; upper body busy (tying
    a shoe, looking around); then get up. The root moves so the front foot, then the knee, stays planted."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    dur = b - a
    both = dur > 3.2 and rng.random() < 0.45  # the second knee needs time
    seg.params["both"] = float(both)
    f, k = ("l", "r") if rng.random() < 0.5 else ("r", "l")  # front leg, kneeling leg
    down, up = (min(rng.uniform(1.0, 1.5), (0.25 if both else 0.36) * dur) for _ in range(2))
    pitch = rng.uniform(0.0, 0.2)
    tb = rng.uniform(-0.05, 0.2)  # kneeling thigh, ~vertical
    # toes tucked: the foot points down at 'tuck' rad; steeper on both knees, where the toes and knees share the floor
    step = _legs(0.6, 0.8, 0.2, sides=f) | _legs(-0.25, 0.95, 0.2, sides=k) | {f"toe_{k}": 0.5, "tuck": 1.15}
    # front shin ~vertical (knee a little ahead of the foot), front thigh ~horizontal: raised just enough above
    # horizontal that the pelvis is low enough for the kneeling knee to reach the floor
    shin = rng.uniform(0.1, 0.4)
    c = (THIGH * np.cos(tb) + KNEE_RADIUS - ANKLE_HEIGHT - SHIN * np.cos(shin)) / THIGH
    tf = min(float(np.arccos(np.clip(c, -1.0, 1.0))), 2.0)
    kf = tf + shin
    one = _legs(tf, kf, pitch, sides=f) | _legs(tb, tb + KNEEL_SHIN, pitch, sides=k)
    seg.params.update(tf=tf, kf=kf, tb=tb)
    one |= {f"toe_{k}": 1.0, "tuck": 1.15}
    times, poses = [a, a + 0.45 * down, a + down], [{}, step, one]
    t_end_down = a + down
    if both:
        sit_back = rng.random() < 0.4  # toward the heels
        kneel2 = _legs(0.6 if sit_back else tb, (0.6 if sit_back else tb) + KNEEL_SHIN, 0.1 if sit_back else pitch)
        kneel2 |= {f"toe_{k}": 1.0, f"toe_{f}": 1.0, "tuck": 1.35}
        lift_front = _legs(tf * 0.6, tf * 0.6 + 1.0, pitch, sides=f) | {f"toe_{f}": 1.0}
        t2 = min(rng.uniform(0.8, 1.2), 0.2 * dur)
        times += [t_end_down + 0.5 * t2, t_end_down + t2]
        poses += [one | lift_front, kneel2]
        t_end_down += t2
        times += [b - up - t2, b - up - 0.5 * t2]
        poses += [kneel2, one | lift_front]
    times += [b - up, b - 0.55 * up, b]
    poses += [one, step, {}]
    extra = _apply_keys(ch, t, times, poses, style, _room(dur, 2.2))
    busy = envelope(t, t_end_down, 0.4, max(0.0, b - up - t_end_down - 0.8), 0.4)
    if busy.any():  # reach toward the floor / a shoe, or look around
        for side in "lr":
            g = smooth_noise(rng, len(t), 3, sigma_s=rng.uniform(0.5, 1.0), fps=fps) * 0.3
            _pull(ch, busy * 0.7, {f"{side}_sh_flex": 0.9 + g[0, 0], f"{side}_elbow": 0.9})
            for j, name in enumerate(("sh_flex", "elbow", "sh_rot")):
                ch[:, CH[f"{side}_{name}"]] += busy * g[:, j]
        ch[:, CH["neck_flex"]] += busy * rng.uniform(0.0, 0.5)
    _flat_feet(ch)
    for side in (f, k):  # toes tucked on the floor: the foot points down, bearing on the ball of the foot
        w = extra.get(f"toe_{side}", np.zeros(len(t)))
        c = CH[f"{side}_ankle"]
        thigh = ch[:, CH[f"{side}_hip_flex"]] - ch[:, CH["root_pitch"]]
        ch[:, c] = (1 - w) * ch[:, c] + w * (extra["tuck"] + thigh - ch[:, CH[f"{side}_knee"]])
        ch[:, CH[f"{side}_ankle_ev"]] *= 1 - w
    # planted: the front foot while it is on the floor, else the kneeling knee
    wf = 1.0 - extra.get(f"toe_{f}", np.zeros(len(t)))
    offsets = [_foot_forward(ch, f), _knee_forward(ch, k)]
    weights = [wf, 1.0 - wf]
    return _out(ch, _planted_speed(offsets, weights, fps))


def prim_bend_pick(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
                   ) -> PrimitiveOut:
    """Bend forward from the hips (pelvis pitch 0.9-1.3 rad, spine flexed) to pick something up from the floor with
    one or both hands, bending the knees as much as needed to get the hands down to the floor; stand up holding it."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    dur = b - a
    down, up = (min(rng.uniform(0.8, 1.3), 0.38 * dur) for _ in range(2))
    pitch = rng.uniform(0.9, 1.3)
    spine = rng.uniform(0.35, 0.7)
    # hand joint height (m) ~ 0.56 - 0.42 (pitch - 0.8) - 0.25 (spine - 0.3) - 0.15 knee, fitted on the body model;
    # aim at 0.12-0.3 m, as the hand mesh reaches ~5 cm below its joint
    reach = 0.56 - 0.42 * (pitch - 0.8) - 0.25 * (spine - 0.3) - rng.uniform(0.12, 0.3)
    knee = float(np.clip(reach / 0.15, 0.1, 1.8))
    seg.params.update(pitch=pitch, knee=knee)
    bent = _legs(0.5 * knee, knee, pitch, spine_flex=spine, neck_flex=rng.uniform(-0.45, 0.1))
    sides = ("l", "r") if rng.random() < 0.5 else (("l",) if rng.random() < 0.5 else ("r",))
    carry = {}
    for side in sides:
        bent |= _arm(side, rng.uniform(1.3, 1.6), pitch + 0.7 * spine + rng.uniform(-0.1, 0.3),
                     rng.uniform(-0.3, 0.2), rng.uniform(0.05, 0.35))
        carry |= _arm(side, rng.uniform(1.3, 1.55), rng.uniform(0.2, 0.7), rng.uniform(-0.6, -0.1),
                      rng.uniform(0.7, 1.5))
    grab = bent | {f"{s}_elbow": bent[f"{s}_elbow"] + 0.2 for s in sides}
    t_low = a + down
    t_up = max(t_low + 0.2, b - up)
    _apply_keys(ch, t, [a, t_low, t_up - 0.1, t_up, b], [{}, bent, grab, grab, carry], style, _room(dur, 1.8))
    _flat_feet(ch)
    speed = _planted_speed([_foot_forward(ch, "l"), _foot_forward(ch, "r")], [0.5, 0.5], fps)
    return _out(ch, speed)


def prim_squat(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
               ) -> PrimitiveOut:
    """Squatting 1-3 times, or crouching down and staying low for a while: hips and knees flex, trunk leans, arms
    come forward; feet stay flat (and put: the root moves back)."""
    ch = _standing(t, style, rng, fps)
    t0, dur = _segment_time(t, seg, fps)
    phase = np.clip((t - t0) / dur, 0.0, 1.0)
    amp = rng.uniform(0.35, 1.0)
    if rng.random() < 0.65:
        n = int(np.clip(round(dur / rng.uniform(1.8, 3.0)), 1, 3))
        depth = amp * np.sin(np.pi * n * phase) ** 2
    else:  # crouch and hold
        ramp = min(0.3, 1.0 / dur)
        depth = amp * envelope(phase, 0.0, ramp, 1 - 2 * ramp, ramp)
    arms = rng.uniform(0.0, 1.4)
    ch[:, CH["root_pitch"]] += 0.35 * depth
    ch[:, CH["spine_flex"]] += rng.uniform(0.05, 0.35) * depth
    ch[:, CH["neck_flex"]] -= 0.25 * depth
    for side in "lr":
        ch[:, CH[f"{side}_hip_flex"]] += 1.75 * depth
        ch[:, CH[f"{side}_knee"]] += 2.05 * depth
        ch[:, CH[f"{side}_hip_abd"]] += 0.15 * depth
        ch[:, CH[f"{side}_sh_flex"]] += arms * depth
        ch[:, CH[f"{side}_elbow"]] += 0.4 * arms * depth
    _flat_feet(ch)
    speed = _planted_speed([_foot_forward(ch, "l"), _foot_forward(ch, "r")], [0.5, 0.5], fps)
    return _out(ch, speed)


def prim_lunge(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
               ) -> PrimitiveOut:
    """Forward lunge (step out, front thigh ~horizontal, back knee toward the floor on the toes, push back) or side
    lunge (step sideways, sit into the stepping leg, the other straight). The root follows the planted foot."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    dur = b - a
    s, o = ("l", "r") if rng.random() < 0.5 else ("r", "l")  # stepping leg, other leg
    n_reps = 1 if dur < 3.2 else int(rng.integers(1, 3))
    slot = dur / n_reps
    forward = rng.random() < 0.65
    seg.params["forward"] = float(forward)
    times: list[float] = [a]
    poses: list[dict[str, float]] = [{}]
    for r in range(n_reps):
        s0 = a + r * slot
        out_t, back_t = (min(rng.uniform(0.6, 0.9), 0.38 * slot) for _ in range(2))
        hold = max(0.0, slot - out_t - back_t) * rng.uniform(0.2, 0.8)
        if forward:
            tf = rng.uniform(1.05, 1.45)
            tb = rng.uniform(-0.4, -0.2)
            swing = _legs(0.8, 1.2, 0.05, sides=s)
            bottom = (_legs(tf, tf + rng.uniform(-0.1, 0.25), 0.05, sides=s)
                      | _legs(tb, rng.uniform(0.9, 1.25), 0.05, sides=o) | {f"toe_{o}": 1.0})
        else:
            sit = rng.uniform(0.8, 1.2)
            pitch = rng.uniform(0.25, 0.5)
            abd_s, abd_o = rng.uniform(0.3, 0.55), rng.uniform(0.35, 0.6)
            swing = _legs(0.4, 0.9, 0.1, sides=s) | {f"{s}_hip_abd": 0.3}
            bottom = (_legs(sit, sit + rng.uniform(0.25, 0.5), pitch, sides=s)
                      | _legs(0.05, 0.05, pitch, sides=o) | {f"{s}_hip_abd": abd_s, f"{o}_hip_abd": abd_o})
        for side in "lr":  # arms forward for balance or hands on the thigh
            bottom[f"{side}_sh_flex"] = rng.uniform(0.0, 1.2)
        times += [s0 + 0.45 * out_t, s0 + out_t, s0 + out_t + hold, s0 + out_t + hold + 0.55 * back_t,
                  s0 + out_t + hold + back_t]
        poses += [swing, bottom, bottom, swing, {}]
    extra = _apply_keys(ch, t, times, poses, style, _room(slot, 1.2))
    _flat_feet(ch)
    if forward:  # back foot on the ball of the foot
        w = extra.get(f"toe_{o}", np.zeros(len(t)))
        c = CH[f"{o}_ankle"]
        thigh = ch[:, CH[f"{o}_hip_flex"]] - ch[:, CH["root_pitch"]]
        ch[:, c] = (1 - w) * ch[:, c] + w * (0.9 + thigh - ch[:, CH[f"{o}_knee"]])
    # the other foot stays planted: the stepping foot goes out and comes back
    if forward:
        return _out(ch, _planted_speed([_foot_forward(ch, o)], [1.0], fps))
    lateral = (1.0 if o == "l" else -1.0) * (HIP_HALF_WIDTH + LEG * np.sin(ch[:, CH[f"{o}_hip_abd"]]))
    return _out(ch, side_speed=_planted_speed([lateral], [1.0], fps))


def prim_reach(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
               ) -> PrimitiveOut:
    """One or both arms reach to a target (forward, up, sideways or down) and come back, leaning toward it."""
    ch = _standing(t, style, rng, fps)
    t0, dur = _segment_time(t, seg, fps)
    sides = [("l",), ("r",), ("l", "r")][rng.choice(3, p=[0.4, 0.4, 0.2])]
    n_reach = 1 if dur < 3.0 else int(rng.integers(1, 3))
    slot = dur / n_reach
    for k in range(n_reach):
        rise, fall = rng.uniform(0.5, 0.9, size=2) * min(1.0, slot / 2.6)
        hold = max(0.0, slot - rise - fall - 0.3) * rng.uniform(0.3, 0.9)
        env = envelope(t, t0 + k * slot + 0.1, rise, hold, fall)
        flex = rng.uniform(0.4, 2.7)
        # with the arm lowered, 'flex' raises it forward/up; with the arm out sideways it twists it (see module doc)
        lower = rng.uniform(-0.2, 1.2) if flex < 1.8 else rng.uniform(0.8, 1.4)
        elbow = rng.uniform(0.0, 0.5)
        lean = 0.35 * max(0.0, 1.5 - abs(flex - 0.6)) / 1.5  # low/forward targets need a lean
        for side in sides:
            _pull(ch, env, _arm(side, lower, flex, rng.uniform(-0.4, 0.4), elbow, collar=0.15 * flex / 2.7))
            if len(sides) == 1:
                s = 1.0 if side == "l" else -1.0
                ch[:, CH["spine_twist"]] += env * s * rng.uniform(0.0, 0.3)
                ch[:, CH["spine_lat"]] += env * s * rng.uniform(-0.05, 0.15)
        ch[:, CH["spine_flex"]] += env * lean
        ch[:, CH["root_pitch"]] += env * 0.3 * lean
        for side in "lr":  # bend the knees a little for low targets
            ch[:, CH[f"{side}_hip_flex"]] += env * 0.6 * lean
            ch[:, CH[f"{side}_knee"]] += env * 0.8 * lean
        ch[:, CH["neck_flex"]] += env * 0.4 * (0.8 - flex) / 2.0  # look at the target
    _flat_feet(ch)
    return _out(ch)


def prim_wave(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """One arm out to the side, forearm up (twisted up by the x rotation of the lateral arm), waving at the elbow."""
    ch = _standing(t, style, rng, fps)
    t0, dur = _segment_time(t, seg, fps)
    side = "l" if rng.random() < 0.5 else "r"
    rise = min(0.8, dur / 4)
    env = envelope(t, t0 + 0.1, rise, max(0.0, dur - 2 * rise - 0.3), rise)
    _pull(ch, env, _arm(side, rng.uniform(-0.3, 0.4), rng.uniform(1.1, 1.6), rng.uniform(-0.3, 0.2),
                        rng.uniform(1.1, 1.7)))
    wave = rng.uniform(0.25, 0.5) * np.sin(2 * np.pi * rng.uniform(1.2, 2.2) * t)
    ch[:, CH[f"{side}_elbow"]] += env * wave
    ch[:, CH[f"{side}_sh_rot"]] += env * 0.5 * wave
    _flat_feet(ch)
    return _out(ch)


def prim_arms_up(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
                 ) -> PrimitiveOut:
    """One or both arms raised above the head (straight up or in a V), held, waving overhead or pumping (cheering)."""
    ch = _standing(t, style, rng, fps)
    t0, dur = _segment_time(t, seg, fps)
    sides = ("l", "r") if rng.random() < 0.55 else (("l",) if rng.random() < 0.5 else ("r",))
    rise = min(rng.uniform(0.4, 0.8), dur / 4)
    env = envelope(t, t0 + 0.1, rise, max(0.0, dur - 2 * rise - 0.3), rise)
    mode = int(rng.integers(3))  # 0 hold, 1 wave overhead, 2 pump
    seg.params["mode"] = float(mode)
    hz = rng.uniform(1.0, 2.2)
    osc = np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
    for side in sides:
        flex = rng.uniform(2.55, 2.95)
        _pull(ch, env, _arm(side, rng.uniform(0.6, 1.7), flex, rng.uniform(-0.3, 0.3), rng.uniform(0.0, 0.4),
                            collar=rng.uniform(0.15, 0.4)))
        if mode == 1:
            ch[:, CH[f"{side}_sh_lower"]] += env * 0.3 * osc
            ch[:, CH[f"{side}_elbow"]] += env * 0.2 * (1 + osc)
        elif mode == 2:
            ch[:, CH[f"{side}_sh_flex"]] -= env * 0.3 * (1 + osc)
            ch[:, CH[f"{side}_elbow"]] += env * 0.5 * (1 + osc)
    ch[:, CH["spine_flex"]] -= env * rng.uniform(0.0, 0.15)
    ch[:, CH["neck_flex"]] -= env * rng.uniform(0.0, 0.3)
    if len(sides) == 1:
        ch[:, CH["spine_lat"]] += env * (-1.0 if sides[0] == "l" else 1.0) * rng.uniform(0.0, 0.12)
    _flat_feet(ch)
    return _out(ch)


def _stretch_pose(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Target pose of one stretching move."""
    overhead = {k: v for s in "lr" for k, v in _arm(s, rng.uniform(1.45, 1.75), rng.uniform(2.7, 2.95),
                                                      rng.uniform(-0.2, 0.3), rng.uniform(0.0, 0.2),
                                                      collar=0.35).items()}
    side = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "overhead":  # reach up, sometimes onto the toes
        return overhead | {"spine_flex": -0.1, "neck_flex": -0.25, "toe": rng.choice([0.0, 0.5])}
    if kind == "side_bend":
        return overhead | {"spine_lat": 0.4 * side, "root_roll": 0.1 * side, "l_hip_abd": -0.1 * side,
                           "r_hip_abd": 0.1 * side}
    if kind == "chest":  # arms out and back, chest open
        return {k: v for s in "lr" for k, v in _arm(s, rng.uniform(0.0, 0.3), rng.uniform(-0.7, -0.35), 0.6,
                                                      0.05).items()} | {"spine_flex": -0.2, "neck_flex": -0.3}
    if kind == "twist":
        arms = {k: v for s in "lr" for k, v in _arm(s, 1.1, 1.2, -0.4, 1.5).items()}
        return arms | {"spine_twist": 0.5 * side, "neck_twist": 0.5 * side}
    if kind == "fold":  # forward fold, hands toward the toes
        pitch = rng.uniform(0.9, 1.3)
        arms = {k: v for s in "lr" for k, v in _arm(s, 1.5, pitch + 0.6, 0.0, 0.1).items()}
        return arms | _legs(0.0, rng.uniform(0.0, 0.2), pitch, spine_flex=0.65, neck_flex=0.3)
    # triceps: one arm overhead with the elbow bent, the other hand pulls it
    a, o = ("l", "r") if side > 0 else ("r", "l")
    return _arm(a, 1.55, 2.85, 0.3, 2.2) | _arm(o, 1.65, 2.3, -0.4, 1.9) | {"neck_flex": 0.2}


def prim_stretch(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
                 ) -> PrimitiveOut:
    """One to three stretching moves: overhead reach (onto the toes), side bend with the arms up, chest opener,
    trunk twist, forward fold, triceps stretch."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    dur = b - a
    kinds = ("overhead", "side_bend", "chest", "twist", "fold", "triceps")
    n = int(np.clip(dur // 1.6, 1, 3))
    slot = dur / n
    times: list[float] = [a]
    poses: list[dict[str, float]] = [{}]
    for k in range(n):
        pose = _stretch_pose(kinds[rng.integers(len(kinds))], rng)
        move = min(rng.uniform(0.6, 1.0), 0.35 * slot)
        times += [a + k * slot + move, a + (k + 1) * slot - move, a + (k + 1) * slot]
        poses += [pose, pose, {}]
    extra = _apply_keys(ch, t, times, poses, style, _room(slot, 1.2))
    _flat_feet(ch)
    if "toe" in extra:
        ch[:, CH["l_ankle"]] += extra["toe"]
        ch[:, CH["r_ankle"]] += extra["toe"]
    speed = _planted_speed([_foot_forward(ch, "l"), _foot_forward(ch, "r")], [0.5, 0.5], fps)
    return _out(ch, speed)


def prim_clap(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """Clapping 1.5-3.5 times a second in front of the chest or above the head: forearms swing in and out by
    humeral rotation so the hands meet."""
    ch = _standing(t, style, rng, fps)
    t0, dur = _segment_time(t, seg, fps)
    rise = min(0.5, dur / 4)
    env = envelope(t, t0 + 0.1, rise, max(0.0, dur - 2 * rise - 0.3), rise)
    high = rng.random() < 0.25
    hz = rng.uniform(1.5, 3.5)
    # 0 = hands apart, 1 = hands together
    together = bump(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi), 1.5)
    for side in "lr":
        if high:  # poses checked on the body model: the wrists meet at sh_rot ~ -0.85, ~0.3 m apart at -0.25
            _pull(ch, env, _arm(side, 1.7, rng.uniform(2.3, 2.5), -0.55, rng.uniform(1.0, 1.2)))
        else:
            _pull(ch, env, _arm(side, rng.uniform(1.45, 1.6), rng.uniform(0.55, 0.9), -0.55, rng.uniform(1.35, 1.6)))
        ch[:, CH[f"{side}_sh_rot"]] -= env * (together - 0.5) * 0.6
    ch[:, CH["neck_flex"]] += env * (-0.2 if high else 0.1)
    _flat_feet(ch)
    return _out(ch)


def prim_box(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
             ) -> PrimitiveOut:
    """Boxing: staggered stance with bent, bouncing knees, guard up, a series of jabs, crosses, hooks and uppercuts
    (0.1-0.2 s out, slightly slower back) with the trunk turning into the punch."""
    ch = _standing(t, style, rng, fps)
    t0, dur = _segment_time(t, seg, fps)
    rise = min(0.5, dur / 4)
    env = envelope(t, t0, rise, max(0.0, dur - 2 * rise), rise)
    lead = "l" if rng.random() < 0.7 else "r"
    rear = "r" if lead == "l" else "l"
    knee = rng.uniform(0.2, 0.4)
    bounce = 0.08 * np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * t) * (rng.random() < 0.6)
    blade = -0.25 if lead == "l" else 0.25  # lead shoulder forward (positive twist turns the chest to the left)
    stance = {f"{lead}_hip_flex": 0.3 + knee * 0.5, f"{rear}_hip_flex": -0.1 + knee * 0.5, f"{lead}_knee": knee,
              f"{rear}_knee": knee, "spine_twist": blade, "neck_twist": -blade, "neck_flex": 0.15}
    _pull(ch, env, stance | _guard("l", rng) | _guard("r", rng))
    step = np.sin(np.pi * env)  # the lead foot lifts while it steps into (and out of) the stance
    ch[:, CH[f"{lead}_knee"]] += 0.5 * step
    ch[:, CH[f"{lead}_hip_flex"]] += 0.25 * step
    for side in "lr":
        ch[:, CH[f"{side}_knee"]] += env * bounce
        ch[:, CH[f"{side}_hip_flex"]] += env * 0.5 * bounce
    t_p = t0 + rise + rng.uniform(0.0, 0.4)
    while t_p < t0 + dur - rise - 0.3:
        kind = rng.choice(4, p=[0.35, 0.3, 0.2, 0.15])  # jab, cross, hook, uppercut
        side = lead if kind == 0 else rear if kind == 1 else ("l" if rng.random() < 0.5 else "r")
        sgn = 1.0 if side == "l" else -1.0
        out_s, back_s = rng.uniform(0.1, 0.18), rng.uniform(0.15, 0.25)
        pulse = envelope(t, t_p, out_s, rng.uniform(0.0, 0.08), back_s) * env
        if kind <= 1:
            target = _arm(side, rng.uniform(1.45, 1.7), rng.uniform(1.5, 1.75), -0.2, rng.uniform(0.05, 0.2),
                          collar=0.3)
            twist = -sgn * (0.2 if kind == 0 else 0.45)
        elif kind == 2:
            # arm raised sideways, swung forward about the vertical (sh_rot), elbow at ~90 degrees
            target = _arm(side, rng.uniform(0.2, 0.45), rng.uniform(0.1, 0.5), rng.uniform(-1.05, -0.85),
                          rng.uniform(1.4, 1.7))
            twist = -sgn * 0.45
        else:
            target = _arm(side, 1.5, rng.uniform(1.3, 1.8), -0.6, rng.uniform(1.3, 1.6))
            twist = -sgn * 0.25
            dip = 0.2 * envelope(t, t_p - 0.2, 0.15, 0.0, 0.2) * env  # knees dip before an uppercut
            for s in "lr":
                ch[:, CH[f"{s}_knee"]] += dip
                ch[:, CH[f"{s}_hip_flex"]] += 0.5 * dip
        _pull(ch, pulse, target)
        ch[:, CH["spine_twist"]] += pulse * twist
        t_p += out_s + back_s + rng.uniform(0.15, 0.8)
    _flat_feet(ch)
    return _out(ch, _planted_speed([_foot_forward(ch, rear)], [1.0], fps))  # the lead foot steps forward


def prim_kick(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """Front or side kicks with the guard up: chamber (knee up), extend, re-chamber, put down; the support leg stays
    flat on the floor, the pelvis tilts away for side kicks."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    guard = _guard("l", rng) | _guard("r", rng)
    n = max(1, int((b - a) // 1.4))
    slot = (b - a) / n
    times: list[float] = [a]
    poses: list[dict[str, float]] = [guard]
    for k in range(n):
        s0 = a + k * slot
        kick = "l" if rng.random() < 0.5 else "r"
        sup = "r" if kick == "l" else "l"
        sgn = 1.0 if kick == "l" else -1.0
        ph = np.array([rng.uniform(0.2, 0.3), rng.uniform(0.1, 0.18), rng.uniform(0.0, 0.15), rng.uniform(0.15, 0.25),
                       rng.uniform(0.25, 0.35)])
        ph *= min(1.0, (slot - 0.15) / ph.sum())
        ends = s0 + 0.1 + np.cumsum(ph)
        sup_knee = rng.uniform(0.1, 0.3)
        if rng.random() < 0.6:  # front kick, leaning back a little
            lean = -rng.uniform(0.0, 0.2)
            support = _legs(0.5 * sup_knee, sup_knee, lean, sides=sup)
            chamber = _legs(rng.uniform(1.2, 1.7), rng.uniform(2.0, 2.4), lean, sides=kick) | support
            extend = _legs(rng.uniform(1.1, 1.9), rng.uniform(0.05, 0.3), lean, sides=kick) | support
            extend[f"toe_{kick}"] = 0.5
        else:  # side kick: thigh out to the side, pelvis tilted away (support hip abducts to stay vertical)
            roll = sgn * rng.uniform(0.2, 0.35)
            support = _legs(0.5 * sup_knee, sup_knee, 0.1, sides=sup)
            tilt = {"root_roll": roll, f"{sup}_hip_abd": abs(roll), "spine_lat": 0.3 * roll}
            chamber = (_legs(1.2, 2.2, 0.1, sides=kick) | support | tilt
                       | {f"{kick}_hip_abd": 0.5, f"{kick}_hip_rot": -0.4})
            extend = (_legs(rng.uniform(0.3, 0.6), 0.1, 0.1, sides=kick) | support | tilt
                      | {f"{kick}_hip_abd": rng.uniform(0.75, 1.0), f"{kick}_hip_rot": -0.4})
        times += list(ends)
        poses += [chamber | guard, extend | guard, extend | guard, chamber | guard, guard]
    times.append(b)
    poses.append(guard)  # the guard comes down with the cross-fade into the next segment
    extra = _apply_keys(ch, t, times, poses, style, _room(slot, 0.9))
    _flat_feet(ch)
    for side in "lr":
        if f"toe_{side}" in extra:
            ch[:, CH[f"{side}_ankle"]] += extra[f"toe_{side}"]
    return _out(ch)


def prim_random_limbs(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
                      ) -> PrimitiveOut:
    """Smooth random channel trajectories spanning the joint limits, each limb on its own (time scale 0.4-1 s,
    activity 30-100%): arms, trunk and head, and either both legs mildly or one leg freely while the other stands."""
    n = len(t)
    ch = _standing(t, style, rng, fps)

    def drive(names: Sequence[str], act: float, ranges: dict[str, tuple[float, float]] | None = None) -> None:
        g = smooth_noise(rng, n, len(names), sigma_s=rng.uniform(0.4, 1.0), fps=fps)
        for j, name in enumerate(names):
            lo, hi = (ranges or {}).get(name, CHANNEL_LIMITS[name])
            target = 0.5 * (lo + hi) + 0.4 * (hi - lo) * g[:, j]
            c = CH[name]
            ch[:, c] += act * (target - ch[:, c])

    for side in "lr":
        drive([f"{side}_{k}" for k in ("collar", "sh_lower", "sh_flex", "sh_rot", "elbow", "wrist")],
              rng.uniform(0.3, 1.0))
        # an arm lowered past vertical only goes across the body in front of it
        lower, flex = CH[f"{side}_sh_lower"], CH[f"{side}_sh_flex"]
        ch[:, lower] = np.minimum(ch[:, lower], 1.45 + 0.3 * np.clip(ch[:, flex], 0.0, 1.0))
    drive(["spine_flex", "spine_lat", "spine_twist", "neck_flex", "neck_lat", "neck_twist"], rng.uniform(0.3, 0.9))
    roll0 = ch[:, CH["root_roll"]].copy()
    drive(["root_pitch", "root_roll"], rng.uniform(0.2, 0.6), {"root_pitch": (-0.2, 0.7), "root_roll": (-0.2, 0.2)})
    pitch, roll = ch[:, CH["root_pitch"]], ch[:, CH["root_roll"]] - roll0
    free = rng.choice(["l", "r", ""], p=[0.35, 0.35, 0.3])
    for side in "lr":
        ch[:, CH[f"{side}_hip_abd"]] -= (1.0 if side == "l" else -1.0) * roll  # legs stay vertical as the pelvis rolls
        if side == free:
            drive([f"{side}_hip_flex", f"{side}_hip_abd", f"{side}_hip_rot", f"{side}_knee"], rng.uniform(0.5, 1.0),
                  {f"{side}_hip_flex": (-0.4, 1.8), f"{side}_hip_abd": (-0.2, 0.9), f"{side}_knee": (0.0, 2.2)})
            ch[:, CH[f"{side}_hip_flex"]] += pitch
        else:
            drive([f"{side}_hip_flex", f"{side}_knee"], rng.uniform(0.1, 0.3) if free else rng.uniform(0.1, 0.5),
                  {f"{side}_hip_flex": (-0.1, 0.6), f"{side}_knee": (0.0, 0.7)})
            ch[:, CH[f"{side}_hip_flex"]] += pitch
    _flat_feet(ch)
    if free:
        drive([f"{free}_ankle"], rng.uniform(0.3, 0.8))
    return _out(ch)


_LIE_TILT = {"back": (-np.pi / 2, 0.0), "front": (np.pi / 2, 0.0), "right": (0.0, np.pi / 2),
             "left": (0.0, -np.pi / 2)}


def _lying_pose(kind: str, rng: np.random.Generator) -> dict[str, float]:
    """Limbs of a body lying on its back, front or side (channels; the tilt puts the body on the floor)."""
    pose: dict[str, float] = {"root_pitch": 0.0, "root_roll": 0.0, "spine_flex": rng.uniform(-0.1, 0.2)}
    legs = rng.choice(["straight", "knees_up", "one_bent"], p=[0.4, 0.3, 0.3]) if kind == "back" else (
        rng.choice(["straight", "one_bent"], p=[0.6, 0.4]) if kind == "front" else "curled")
    for side in "lr":
        if legs == "knees_up":  # on the back, feet flat on the floor
            thigh = rng.uniform(0.7, 1.2)
            pose |= {f"{side}_hip_flex": thigh, f"{side}_knee": thigh + rng.uniform(0.5, 1.0)}
        elif legs == "curled":  # on the side, knees drawn up in front
            thigh = rng.uniform(0.3, 1.4)
            pose |= {f"{side}_hip_flex": thigh, f"{side}_knee": rng.uniform(0.4, 1.8)}
        else:
            pose |= {f"{side}_hip_flex": rng.uniform(-0.1, 0.25), f"{side}_knee": rng.uniform(0.0, 0.3),
                     f"{side}_hip_abd": rng.uniform(0.0, 0.35)}
        pose[f"{side}_ankle"] = rng.uniform(0.0, 0.6)  # feet relaxed, pointing
    if legs == "one_bent":
        side = "l" if rng.random() < 0.5 else "r"
        pose |= {f"{side}_hip_flex": rng.uniform(0.5, 1.3), f"{side}_knee": rng.uniform(0.8, 1.9),
                 f"{side}_hip_abd": rng.uniform(0.0, 0.6)}
    for side in "lr":
        arm = rng.choice(["side", "overhead", "out", "chest", "under_head"])
        if kind == "front" and rng.random() < 0.6:
            arm = "pillow"  # forearms under the head
        pose |= {
            "side": _arm(side, rng.uniform(1.2, 1.55), rng.uniform(-0.2, 0.3), rng.uniform(-0.3, 0.3),
                         rng.uniform(0.0, 0.5)),
            "overhead": _arm(side, rng.uniform(0.7, 1.4), rng.uniform(2.5, 2.95), rng.uniform(-0.3, 0.3),
                             rng.uniform(0.0, 0.6)),
            "out": _arm(side, rng.uniform(-0.1, 0.5), rng.uniform(-0.2, 0.5), rng.uniform(-0.4, 0.4),
                        rng.uniform(0.0, 0.8)),
            "chest": _arm(side, rng.uniform(1.1, 1.5), rng.uniform(0.6, 1.1), rng.uniform(-0.9, -0.4),
                          rng.uniform(1.4, 2.1)),
            "under_head": _arm(side, rng.uniform(0.3, 0.8), rng.uniform(2.2, 2.8), rng.uniform(0.3, 0.9),
                               rng.uniform(1.9, 2.4)),
            "pillow": _arm(side, rng.uniform(0.5, 1.0), rng.uniform(2.0, 2.6), rng.uniform(-0.5, 0.0),
                           rng.uniform(1.6, 2.3)),
        }[arm]
    # the head: raised to look along the body, or resting; on the front it turns to one side or lifts to look ahead
    if kind == "front":
        pose |= {"neck_flex": -rng.uniform(0.0, 0.6), "neck_twist": rng.choice([-1, 1]) * rng.uniform(0.0, 0.9)}
    else:
        pose |= {"neck_flex": rng.uniform(-0.2, 0.5), "neck_twist": rng.uniform(-0.6, 0.6)}
    return pose


def prim_lie(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
             ) -> PrimitiveOut:
    """Go down to the floor, lie there, get up: a fall (0.5-1 s) forward onto the front, backward onto the back or
    sideways, or lying down slowly (1.4-2.4 s) through a crouch and sitting on the floor; then on the back, front or
    side with the limbs moving (knees drawn up, arms stretched, the head turning) for the rest of the segment but the
    getting up (through sitting, or all fours, then a crouch). The body's tilt (:class:`PrimitiveOut`) carries it past
    the root limits of standing; the root moves so that the feet stay roughly where they were."""
    ch = _standing(t, style, rng, fps)
    a, b = _span(seg, fps)
    dur = b - a
    kind = str(rng.choice(list(_LIE_TILT), p=[0.4, 0.25, 0.175, 0.175]))
    fall = rng.random() < 0.5
    down = rng.uniform(0.5, 1.0) if fall else rng.uniform(1.4, 2.4)
    up = rng.uniform(1.6, 2.6)
    squeeze = min(1.0, 0.7 * dur / (down + up))  # at least 30 % of the segment is spent lying
    down, up = down * squeeze, up * squeeze
    seg.params.update(kind=float(list(_LIE_TILT).index(kind)), fall=float(fall))
    lying = _lying_pose(kind, rng)
    tilt_end = np.array(_LIE_TILT[kind]) + rng.uniform(-0.08, 0.08, 2)
    crouch = _legs(rng.uniform(1.1, 1.5), rng.uniform(1.9, 2.4), rng.uniform(0.3, 0.6))
    all_fours = _legs(rng.uniform(1.3, 1.6), rng.uniform(1.4, 1.7)) | _arm("l", 1.45, rng.uniform(1.3, 1.6), 0.0,
                                                                          0.1) | _arm("r", 1.45, 1.5, 0.0, 0.1)
    if kind == "back":  # sitting on the floor, legs forward, leaning back on the way down
        mid, mid_tilt = _legs(rng.uniform(1.3, 1.6), rng.uniform(0.2, 1.0), -0.2), np.array([-0.25, 0.0])
    elif kind == "front":  # on all fours (thighs and arms under the body; slow) or knees buckling (fall)
        mid = all_fours if not fall else _legs(rng.uniform(0.1, 0.4), rng.uniform(0.6, 1.2), 0.2)
        mid_tilt = np.array([np.pi / 2 - 0.15, 0.0]) if not fall else np.array([0.6, 0.0])
    else:  # on one hip, knees bent
        mid, mid_tilt = _legs(rng.uniform(0.9, 1.3), rng.uniform(1.0, 1.8), 0.0), 0.45 * np.asarray(_LIE_TILT[kind])
    if fall:
        flail = _arm("l", rng.uniform(0.2, 1.0), rng.uniform(0.5, 1.8), 0.0, rng.uniform(0.0, 0.8))
        flail |= _arm("r", rng.uniform(0.2, 1.0), rng.uniform(0.5, 1.8), 0.0, rng.uniform(0.0, 0.8))
        times = [a, a + 0.5 * down, a + down]
        poses = [{}, mid | flail, lying]
        tilts = [np.zeros(2), mid_tilt, tilt_end]
    else:
        times = [a, a + 0.35 * down, a + 0.7 * down, a + down]
        poses = [{}, crouch, mid, lying]
        tilts = [np.zeros(2), np.zeros(2), mid_tilt, tilt_end]
    up_mid = mid if kind != "front" else all_fours  # up from the front through all fours
    up_tilt = mid_tilt if kind != "front" else np.array([np.pi / 2 - 0.15, 0.0])
    times += [b - up, b - 0.65 * up, b - 0.3 * up, b]
    poses += [lying, up_mid, crouch, {}]
    tilts += [tilt_end, up_tilt, np.zeros(2), np.zeros(2)]
    _apply_keys(ch, t, times, poses, style)
    tilt = _interp_keys(t, np.asarray(times), np.stack(tilts))
    hold = envelope(t, a + down, 0.5, max(0.0, dur - down - up - 1.0), 0.5)
    if hold.any():  # moving while lying: arms, legs and head wander around the lying pose
        names = [f"{s}_{k}" for s in "lr" for k in ("sh_lower", "sh_flex", "sh_rot", "elbow", "hip_flex", "knee",
                                                     "hip_abd")] + ["neck_flex", "neck_twist", "spine_twist"]
        g = smooth_noise(rng, len(t), len(names), sigma_s=rng.uniform(0.5, 1.2), fps=fps) * rng.uniform(0.1, 0.45)
        for j, name in enumerate(names):
            ch[:, CH[name]] += hold * g[:, j]
        tilt += hold[:, None] * 0.05 * smooth_noise(rng, len(t), 2, sigma_s=1.0, fps=fps)  # shifting, rolling a bit
    # upright parts keep the feet flat; lying parts keep the ankles they were given
    upright = 1.0 - smootherstep(np.abs(tilt).max(axis=1) / 0.5)
    cols = [CH[f"{s}_{k}"] for s in "lr" for k in ("ankle", "ankle_ev")]
    relaxed = ch[:, cols].copy()
    _flat_feet(ch)
    ch[:, cols] = upright[:, None] * ch[:, cols] + (1 - upright[:, None]) * relaxed
    # the feet stay roughly planted while the body pivots about them: seen from the root they swing back as it falls
    # forward and to its left as it rolls onto its right side
    reach = 0.8 * LEG
    speed = _planted_speed([-reach * np.sin(tilt[:, 0])], [1.0], fps)
    side_speed = _planted_speed([reach * np.sin(tilt[:, 1])], [1.0], fps)
    return PrimitiveOut(ch, speed, np.zeros(len(t)), np.zeros(len(t)), side_speed, tilt)


PrimitiveFn = Callable[[np.ndarray, Segment, Style, np.random.Generator, float], PrimitiveOut]
PRIMITIVE_FNS: dict[str, PrimitiveFn] = {
    "idle": prim_idle, "walk": prim_walk, "run": prim_run, "turn": prim_turn, "jump": prim_jump, "sit": prim_sit,
    "kneel": prim_kneel, "bend_pick": prim_bend_pick, "squat": prim_squat, "lunge": prim_lunge,
    "reach": prim_reach, "wave": prim_wave, "arms_up": prim_arms_up, "stretch": prim_stretch, "clap": prim_clap,
    "box": prim_box, "kick": prim_kick, "random_limbs": prim_random_limbs, "lie": prim_lie,
}


# ---------------------------------------------------------------------------------------------------------------------
# Planning


def primitives_for(split_kind: str, optional: Sequence[str] = ()) -> tuple[str, ...]:
    """Primitives a split may use: 'train' / 'validation' / 'test' = all but the held-out family and the
    :data:`OPTIONAL_FAMILIES` not named in ``optional`` (in-distribution), 'heldout' = the held-out family plus idle
    (for transitions), 'all' = every primitive."""
    unknown = set(optional) - set(OPTIONAL_FAMILIES)
    if unknown:
        raise ValueError(f"unknown optional families {sorted(unknown)}: expected some of {OPTIONAL_FAMILIES}")
    if split_kind in ("train", "validation", "test"):
        return tuple(p for p in PRIMITIVES if FAMILY_OF[p] != HELD_OUT_FAMILY
                     and (FAMILY_OF[p] not in OPTIONAL_FAMILIES or FAMILY_OF[p] in optional))
    if split_kind == "heldout":
        return ("idle", *FAMILIES[HELD_OUT_FAMILY])
    if split_kind == "all":
        return PRIMITIVES
    raise ValueError(f"unknown split kind {split_kind!r}: expected train, validation, test, heldout or all")


def _chain_candidates(allowed: Sequence[str], chain: str) -> list[str]:
    """The allowed primitives a chain may use (in :data:`PRIMITIVES` order); idle when none is left."""
    pool = {"body": PRIMITIVES, "lower": LOWER_PRIMITIVES, "upper": UPPER_PRIMITIVES}[chain]
    names = [p for p in PRIMITIVES if p in pool and p in allowed]
    return names or ["idle"]


def plan_segments(rng: np.random.Generator, n_frames: int, fps: float = FPS, primitives: Sequence[str] | None = None,
                  chain: str = "body") -> list[Segment]:
    """Chain of primitives covering ``n_frames``: durations per :data:`DURATIONS`, no primitive twice in a row (unless
    it is the only one allowed), none that needs more time than is left if another fits."""
    names = _chain_candidates(primitives_for("train") if primitives is None else primitives, chain)
    probs = np.array([CHAIN_IDLE_WEIGHT if chain != "body" and n == "idle" else PRIMITIVE_PROBS[n] for n in names])
    min_len = np.array([DURATIONS.get(n, DEFAULT_DURATION)[0] * fps for n in names])
    segs: list[Segment] = []
    start = 0
    while start < n_frames:
        left = n_frames - start
        p = probs.copy()
        if segs and len(names) > 1:
            p[names.index(segs[-1].primitive)] = 0.0
        if (p * (min_len <= left)).sum() > 0:
            p *= min_len <= left
        name = names[rng.choice(len(names), p=p / p.sum())]
        lo, hi = DURATIONS.get(name, DEFAULT_DURATION)
        length = int(rng.uniform(lo, hi) * fps)
        if left - length < int(1.2 * fps):  # no stub segment at the end
            length = left
        params = {}
        if name == "turn":
            params["angle"] = float(rng.choice([-1, 1]) * rng.uniform(np.pi / 4, np.pi))
        segs.append(Segment(name, start, start + length, params, chain))
        start += length
    return segs


def blend_weights(segs: list[Segment], n_frames: int, fade_frames: float) -> np.ndarray:
    """Smooth partition of unity ``(K, T)``: ``w_k = S_k - S_{k+1}``.

    ``S_k(t)`` = "segment k has started": a C2 step from 0 to 1 across segment k's start (``S_0 = 1``, ``S_K = 0``),
    so each weight rises and falls smoothly and the weights sum to exactly 1.
    """
    t = np.arange(n_frames, dtype=np.float64)
    steps = [np.ones(n_frames)]
    for seg in segs[1:]:
        steps.append(smootherstep((t - seg.start + fade_frames / 2) / fade_frames))
    steps.append(np.zeros(n_frames))
    cum = np.stack(steps)
    return cum[:-1] - cum[1:]


@dataclass
class _ChainResult:
    channels: np.ndarray
    speed: np.ndarray
    side_speed: np.ndarray
    yaw_rate: np.ndarray
    lift: np.ndarray
    tilt: np.ndarray | None = None


def _eval_chain(t: np.ndarray, segs: list[Segment], weights: np.ndarray, style: Style, rng: np.random.Generator,
                fps: float, follow: np.ndarray | None = None) -> _ChainResult:
    """Blend a chain's primitives, each evaluated only on the frames where its weight is non-zero. With ``follow``
    (upper chain), idle segments contribute those channels instead of their own."""
    n = len(t)
    res = _ChainResult(np.zeros((n, len(CHANNELS))), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))
    for seg, w in zip(segs, weights, strict=True):
        nz = np.flatnonzero(w > 0.0)
        if nz.size == 0:
            continue
        a, b = int(nz[0]), int(nz[-1]) + 1
        ws = w[a:b]
        if follow is not None and seg.primitive == "idle":
            res.channels[a:b] += ws[:, None] * follow[a:b]
            continue
        out = PRIMITIVE_FNS[seg.primitive](t[a:b], seg, style, rng, fps)
        res.channels[a:b] += ws[:, None] * out.channels
        res.speed[a:b] += ws * out.speed
        res.lift[a:b] += ws * out.lift
        if out.tilt is not None:
            if res.tilt is None:
                res.tilt = np.zeros((n, 2))
            res.tilt[a:b] += ws[:, None] * out.tilt
        if out.side_speed is not None:
            res.side_speed[a:b] += ws * out.side_speed
        if seg.primitive == "turn":
            # constant rate / weight integral: the blended contribution turns by exactly 'angle', smoothly.
            res.yaw_rate[a:b] += ws * seg.params["angle"] / (w.sum() / fps)
        else:
            res.yaw_rate[a:b] += ws * out.yaw_rate
    return res


@dataclass
class PoseTrajectory:
    """A planned sequence in the y-up world frame.

    Attributes:
        rotmats: (T, 24, 3, 3) SMPL parent-relative rotations; joint 0 = global orientation in the world frame.
        channels: (T, C) clamped anatomical channels (radians).
        root_xz: (T, 2) horizontal root displacement in metres (x, z); height comes later from ground contact.
        heading: (T,) yaw about +y, radians.
        weights: (K, T) blend weight of each segment (within its chain; the weights of a chain sum to 1).
        segments: the plan, ordered by start frame; ``Segment.chain`` = 'body' (single chain) or 'lower' / 'upper'.
        lift: (T,) metres of extra root height above ground contact (jump and running flight), >= 0.
        two_chain: whether lower and upper body were planned as separate chains.
        tilt: (T, 2) the body's pitch and roll from upright (lying on the floor), or None when upright throughout.
    """

    rotmats: np.ndarray
    channels: np.ndarray
    root_xz: np.ndarray
    heading: np.ndarray
    weights: np.ndarray
    segments: list[Segment]
    lift: np.ndarray
    two_chain: bool = False
    tilt: np.ndarray | None = None

    def frame_primitive(self, part: str = "body") -> np.ndarray:
        """(T,) str: the primitive with the largest blend weight at each frame.

        ``part``: 'lower' or 'upper' = that chain's (the single chain's when there is one); 'body' = the lower
        chain's, or the upper chain's where the lower chain is idle.
        """
        if part not in ("body", "lower", "upper"):
            raise ValueError(f"unknown part {part!r}")
        names = np.array([s.primitive for s in self.segments])
        chains = np.array([s.chain for s in self.segments])

        def dominant(chain: str) -> np.ndarray:
            use = (chains == chain) | (chains == "body")
            return names[np.where(use[:, None], self.weights, -1.0).argmax(axis=0)]

        if part != "body":
            return dominant(part)
        lower = dominant("lower")
        return np.where(lower == "idle", dominant("upper"), lower) if self.two_chain else lower


def plan_trajectory(rng: np.random.Generator, n_frames: int, fps: float = FPS, primitives: Sequence[str] | None = None,
                    two_chain: bool | None = None) -> PoseTrajectory:
    """Sample a style and a plan, evaluate the primitives, blend, clamp to joint limits and integrate the root.

    ``primitives``: the allowed set (None = :func:`primitives_for` ``('train')``, all but the held-out family).
    ``two_chain``: plan lower and upper body separately (None = with probability :data:`TWO_CHAIN_PROB` when both
    chains have a non-idle primitive to use).
    """
    allowed = primitives_for("train") if primitives is None else tuple(primitives)
    unknown = set(allowed) - set(PRIMITIVES)
    if unknown or not allowed:
        raise ValueError(f"unknown or no primitives: {sorted(unknown)}")
    t = np.arange(n_frames) / fps
    style = sample_style(rng)
    if two_chain is None:
        both = all(set(_chain_candidates(allowed, c)) - {"idle"} for c in ("lower", "upper"))
        two_chain = both and rng.random() < TWO_CHAIN_PROB
    if not two_chain:
        segs = plan_segments(rng, n_frames, fps, allowed, "body")
        weights = blend_weights(segs, n_frames, fade_frames=rng.uniform(0.4, 0.8) * fps)
        res = _eval_chain(t, segs, weights, style, rng, fps)
        channels = res.channels
    else:
        lower_segs = plan_segments(rng, n_frames, fps, allowed, "lower")
        upper_segs = plan_segments(rng, n_frames, fps, allowed, "upper")
        lower_w = blend_weights(lower_segs, n_frames, fade_frames=rng.uniform(0.4, 0.8) * fps)
        upper_w = blend_weights(upper_segs, n_frames, fade_frames=rng.uniform(0.4, 0.8) * fps)
        res = _eval_chain(t, lower_segs, lower_w, style, rng, fps)
        follow = np.where(UPPER_ADDITIVE > 0, style.base, res.channels)  # upper idle: the lower chain's arms
        upper = _eval_chain(t, upper_segs, upper_w, style, rng, fps, follow=follow).channels
        channels = (res.channels * (1 - UPPER_MASK) + upper * UPPER_MASK
                    + (upper - style.base) * UPPER_ADDITIVE)
        order = sorted(range(len(lower_segs) + len(upper_segs)),
                       key=lambda i: (lower_segs + upper_segs)[i].start)
        segs = [(lower_segs + upper_segs)[i] for i in order]
        weights = np.concatenate([lower_w, upper_w])[order]
    channels = clamp_channels(channels)
    heading = rng.uniform(-np.pi, np.pi) + np.cumsum(res.yaw_rate) / fps
    fwd = np.stack([np.sin(heading), np.cos(heading)], axis=1)
    left = np.stack([np.cos(heading), -np.sin(heading)], axis=1)
    step = (res.speed[:, None] * fwd + res.side_speed[:, None] * left) / fps
    root_xz = np.cumsum(step, axis=0) - step[0]
    # lying (the only primitive with a tilt) is a whole-body primitive: only single-chain plans have a tilt
    return PoseTrajectory(rotmats=channels_to_rotmats(channels, heading, res.tilt), channels=channels,
                          root_xz=root_xz, heading=heading, weights=weights, segments=segs,
                          lift=np.maximum(res.lift, 0.0), two_chain=bool(two_chain), tilt=res.tilt)
