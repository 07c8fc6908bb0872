"""Pose trajectories for synthetic motion: anatomical joint channels, motion primitives, blending, joint limits.

A pose is a vector of named *anatomical channels* (radians): hip flexion, knee flexion, shoulder lowering, ... (see
:data:`CHANNELS`). Primitives (walk, turn, reach, squat, wave, idle) each write a full channel trajectory
``(T, C)`` plus a root forward speed and yaw rate; a sequence is a chain of primitives cross-faded with a smooth
partition of unity, then clamped smoothly to per-channel joint limits and converted to SMPL's 24 parent-relative
rotations (:func:`channels_to_rotmats`).

SMPL conventions used here (rest pose = T-pose, y up, facing +z, subject's left at +x; a joint's rotation acts in its
parent's rest-aligned frame). For a *left* joint: hip/shoulder flexion forward = -x, knee flexion = +x, ankle
plantar-flexion = +x, hip abduction = +z, shoulder lowering = -z, elbow flexion = -y, spine flexion forward = +x.
Right joints mirror left ones with ``(x, y, z) -> (x, -y, -z)``, the same mirror as the SMPL flip.
Per joint the rotation is ``R = Rx(ax) @ Ry(ay) @ Rz(az)``: for the shoulder that lowers the arm first (z), twists it
about the vertical (y), then swings it forward (x).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

FPS = 30.0
PRIMITIVES = ("idle", "walk", "turn", "reach", "squat", "wave")
# Sampling weights of the primitives when a sequence is planned.
PRIMITIVE_PROBS = {"idle": 0.12, "walk": 0.30, "turn": 0.15, "reach": 0.17, "squat": 0.14, "wave": 0.12}

# name: (lower limit, upper limit), radians. Anatomical sign: positive = flexion / forward / outward / lowering.
CHANNEL_LIMITS: dict[str, tuple[float, float]] = {
    "root_pitch": (-0.3, 0.6), "root_roll": (-0.2, 0.2),
    "spine_flex": (-0.35, 0.8), "spine_lat": (-0.4, 0.4), "spine_twist": (-0.5, 0.5),
    "neck_flex": (-0.5, 0.7), "neck_lat": (-0.4, 0.4), "neck_twist": (-1.0, 1.0),
    "l_hip_flex": (-0.45, 2.0), "l_hip_abd": (-0.3, 0.7), "l_hip_rot": (-0.5, 0.5),
    "r_hip_flex": (-0.45, 2.0), "r_hip_abd": (-0.3, 0.7), "r_hip_rot": (-0.5, 0.5),
    "l_knee": (0.0, 2.3), "r_knee": (0.0, 2.3),
    "l_ankle": (-0.65, 0.7), "r_ankle": (-0.65, 0.7),
    "l_collar": (-0.2, 0.4), "r_collar": (-0.2, 0.4),
    "l_sh_lower": (-0.7, 1.5), "l_sh_flex": (-0.9, 2.9), "l_sh_rot": (-0.9, 0.9),
    "r_sh_lower": (-0.7, 1.5), "r_sh_flex": (-0.9, 2.9), "r_sh_rot": (-0.9, 0.9),
    "l_elbow": (0.0, 2.4), "r_elbow": (0.0, 2.4),
    "l_wrist": (-0.6, 0.6), "r_wrist": (-0.6, 0.6),
}
CHANNELS: tuple[str, ...] = tuple(CHANNEL_LIMITS)
CH = {name: i for i, name in enumerate(CHANNELS)}

# channel -> [(SMPL joint, axis 0/1/2 = x/y/z, factor)], left side; right side mirrored below.
_SPINE = ((3, 0.35), (6, 0.35), (9, 0.30))
_NECK = ((12, 0.5), (15, 0.5))
_LEFT_MAP: dict[str, list[tuple[int, int, float]]] = {
    "hip_flex": [(1, 0, -1.0)], "hip_abd": [(1, 2, 1.0)], "hip_rot": [(1, 1, 1.0)],
    "knee": [(4, 0, 1.0)], "ankle": [(7, 0, 1.0)], "collar": [(13, 2, 1.0)],
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


def smooth_clamp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Identity inside ``[lo + m, hi - m]``, tanh-compressed into the margin m outside; never leaves ``(lo, hi)``.

    C1-continuous, so clamping does not put kinks (acceleration spikes) into trajectories that touch a limit.
    """
    m = min(0.15, (hi - lo) / 4)
    a, b = lo + m, hi - m
    y = np.where(x > b, b + m * np.tanh((x - b) / m), x)
    return np.where(x < a, a + m * np.tanh((x - a) / m), y)


def clamp_channels(ch: np.ndarray) -> np.ndarray:
    """Apply :data:`CHANNEL_LIMITS` to ``(..., C)`` channel values (root channels included)."""
    out = np.empty_like(ch)
    for i, name in enumerate(CHANNELS):
        lo, hi = CHANNEL_LIMITS[name]
        out[..., i] = smooth_clamp(ch[..., i], lo, hi)
    return out


def _rot(axis: int, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` about coordinate axis 0/1/2 by ``angle`` (...,) radians."""
    c, s = np.cos(angle), np.sin(angle)
    r = np.zeros((*angle.shape, 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[..., axis, axis] = 1.0
    r[..., i, i], r[..., i, j], r[..., j, i], r[..., j, j] = c, -s, s, c
    return r


def euler_xyz(angles: np.ndarray) -> np.ndarray:
    """``R = Rx(a0) @ Ry(a1) @ Rz(a2)``: angles ``(..., 3)`` radians -> ``(..., 3, 3)``."""
    return _rot(0, angles[..., 0]) @ _rot(1, angles[..., 1]) @ _rot(2, angles[..., 2])


def channels_to_rotmats(ch: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """Channels ``(T, C)`` and world heading (yaw about +y) ``(T,)`` -> SMPL rotations ``(T, 24, 3, 3)``, world frame.

    Joint 0 is the global orientation in the y-up world: ``Ry(heading) @ Rx(root_pitch) @ Rz(root_roll)``.
    """
    euler = np.zeros((ch.shape[0], 24, 3))
    for name, targets in CHANNEL_MAP.items():
        for joint, axis, factor in targets:
            euler[:, joint, axis] += factor * ch[:, CH[name]]
    euler[:, 0, 0] = ch[:, CH["root_pitch"]]
    euler[:, 0, 2] = ch[:, CH["root_roll"]]
    rot = euler_xyz(euler)
    rot[:, 0] = _rot(1, heading) @ rot[:, 0]
    return rot


# ---------------------------------------------------------------------------------------------------------------------
# Helpers for trajectories


def smooth_noise(rng: np.random.Generator, n: int, dims: int, sigma_s: float, fps: float = FPS) -> np.ndarray:
    """Low-pass Gaussian noise ``(n, dims)`` with unit std per dim and correlation time ~``sigma_s`` seconds."""
    sigma = max(sigma_s * fps, 1.0)
    pad = int(4 * sigma)
    x = gaussian_filter1d(rng.standard_normal((n + 2 * pad, dims)), sigma, axis=0, mode="reflect")[pad:pad + n]
    return x / (x.std(axis=0, keepdims=True) + 1e-9)


def smootherstep(x: np.ndarray) -> np.ndarray:
    """C2 step from 0 (x <= 0) to 1 (x >= 1)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


def bump(phase: np.ndarray, power: float = 2.0) -> np.ndarray:
    """Periodic bump in [0, 1] peaking at phase 0 (mod 2 pi)."""
    return (0.5 + 0.5 * np.cos(phase)) ** power


def envelope(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """Rise-hold-fall envelope in [0, 1] over times ``t`` (seconds)."""
    up = smootherstep((t - start) / rise)
    down = smootherstep((t - start - rise - hold) / fall)
    return up * (1.0 - down)


@dataclass
class Segment:
    """One primitive in a sequence's plan: frames ``[start, end)``."""

    primitive: str
    start: int
    end: int
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class Style:
    """Per-sequence person style: rest posture and amplitudes shared by all primitives."""

    base: np.ndarray  # (C,) channel values of the relaxed standing posture
    sway_hz: float
    sway_amp: float
    fidget: float  # std (rad) of slow per-channel noise


@dataclass
class PrimitiveOut:
    """A primitive's full trajectory: channels ``(T, C)``, forward speed ``(T,)`` m/s, yaw rate ``(T,)`` rad/s."""

    channels: np.ndarray
    speed: np.ndarray
    yaw_rate: np.ndarray


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


def _flat_feet(ch: np.ndarray) -> None:
    """Set ankles so the feet stay level: total x-rotation root_pitch - hip_flex + knee + ankle = 0 (in place)."""
    for side in "lr":
        ch[:, CH[f"{side}_ankle"]] = (ch[:, CH[f"{side}_hip_flex"]] - ch[:, CH["root_pitch"]]
                                      - ch[:, CH[f"{side}_knee"]])


def _standing(t: np.ndarray, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Relaxed standing with slow weight-shift sway and fidgeting, ``(T, C)``."""
    ch = np.tile(style.base, (len(t), 1))
    phase = 2 * np.pi * style.sway_hz * t + rng.uniform(0, 2 * np.pi)
    sway = style.sway_amp * np.sin(phase)
    ch[:, CH["root_roll"]] += sway
    ch[:, CH["spine_lat"]] -= 1.5 * sway
    ch[:, CH["l_hip_abd"]] -= sway  # legs stay under the body while the pelvis rolls
    ch[:, CH["r_hip_abd"]] += sway
    ch += style.fidget * smooth_noise(rng, len(t), len(CHANNELS), sigma_s=0.6) * _fidget_mask()
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


def prim_idle(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator) -> PrimitiveOut:
    """Standing, swaying, looking around."""
    ch = _standing(t, style, rng)
    ch[:, CH["neck_twist"]] += rng.uniform(0.1, 0.6) * smooth_noise(rng, len(t), 1, sigma_s=1.2)[:, 0]
    zeros = np.zeros(len(t))
    return PrimitiveOut(ch, zeros, zeros.copy())


def _gait(t: np.ndarray, style: Style, rng: np.random.Generator, stride_hz: float, hip_amp: float,
          knee_amp: float, arm_amp: float) -> np.ndarray:
    """Cyclic leg/arm pattern of walking (or stepping in place for small amplitudes), ``(T, C)``."""
    ch = np.tile(style.base, (len(t), 1))
    phi = 2 * np.pi * stride_hz * t + rng.uniform(0, 2 * np.pi)
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
    ch += 0.5 * style.fidget * smooth_noise(rng, len(t), len(CHANNELS), sigma_s=0.8) * _fidget_mask()
    return ch


def prim_walk(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator) -> PrimitiveOut:
    """Walking forward: phase-locked hips, knees, ankles, arms; speed = step length x step rate; gentle curve."""
    stride_hz = rng.uniform(0.8, 1.0)
    hip_amp = rng.uniform(0.22, 0.38)
    ch = _gait(t, style, rng, stride_hz, hip_amp, rng.uniform(0.6, 0.95), rng.uniform(0.12, 0.45))
    leg = 0.85  # metres, a typical leg length; the step of a swing of +-hip_amp
    speed = np.full(len(t), 4 * leg * np.sin(hip_amp) * stride_hz)
    yaw = np.full(len(t), rng.uniform(-0.3, 0.3))
    return PrimitiveOut(ch, speed, yaw)


def prim_turn(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator) -> PrimitiveOut:
    """Turning on the spot with small steps; the yaw rate is spread so the segment turns by ``params['angle']``."""
    ch = _gait(t, style, rng, rng.uniform(0.8, 1.1), rng.uniform(0.1, 0.2), rng.uniform(0.3, 0.5),
               rng.uniform(0.0, 0.15))
    ch[:, CH["neck_twist"]] += 0.3 * np.sign(seg.params["angle"])  # look where you turn
    zeros = np.zeros(len(t))
    # yaw_rate is filled in by the planner, which knows the blend weight (see :func:`plan_trajectory`).
    return PrimitiveOut(ch, zeros, zeros.copy())


def _segment_time(t: np.ndarray, seg: Segment, fps: float) -> tuple[float, float]:
    return seg.start / fps, (seg.end - seg.start) / fps


def prim_reach(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
               ) -> PrimitiveOut:
    """One or both arms reach to a target (forward, up, sideways or down) and come back, leaning toward it."""
    ch = _standing(t, style, rng)
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
            for name, target in (("sh_flex", flex), ("sh_lower", lower), ("elbow", elbow),
                                 ("sh_rot", rng.uniform(-0.4, 0.4)), ("collar", 0.15 * flex / 2.7)):
                c = CH[f"{side}_{name}"]
                ch[:, c] += env * (target - ch[:, c])
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
    zeros = np.zeros(len(t))
    return PrimitiveOut(ch, zeros, zeros.copy())


def prim_squat(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
               ) -> PrimitiveOut:
    """Crouching/squatting 1-3 times: hips and knees flex, trunk leans, arms come forward; feet stay flat."""
    ch = _standing(t, style, rng)
    t0, dur = _segment_time(t, seg, fps)
    n = int(np.clip(round(dur / rng.uniform(1.8, 3.0)), 1, 3))
    phase = np.clip((t - t0) / dur, 0.0, 1.0)
    depth = rng.uniform(0.35, 1.0) * np.sin(np.pi * n * phase) ** 2
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
    zeros = np.zeros(len(t))
    return PrimitiveOut(ch, zeros, zeros.copy())


def prim_wave(t: np.ndarray, seg: Segment, style: Style, rng: np.random.Generator, fps: float = FPS
              ) -> PrimitiveOut:
    """One arm out to the side, forearm up (twisted up by the x rotation of the lateral arm), waving at the elbow."""
    ch = _standing(t, style, rng)
    t0, dur = _segment_time(t, seg, fps)
    side = "l" if rng.random() < 0.5 else "r"
    rise = min(0.8, dur / 4)
    env = envelope(t, t0 + 0.1, rise, max(0.0, dur - 2 * rise - 0.3), rise)
    targets = {"sh_lower": rng.uniform(-0.3, 0.4), "sh_flex": rng.uniform(1.1, 1.6), "elbow": rng.uniform(1.1, 1.7),
               "sh_rot": rng.uniform(-0.3, 0.2)}
    for name, target in targets.items():
        c = CH[f"{side}_{name}"]
        ch[:, c] += env * (target - ch[:, c])
    wave = rng.uniform(0.25, 0.5) * np.sin(2 * np.pi * rng.uniform(1.2, 2.2) * t)
    ch[:, CH[f"{side}_elbow"]] += env * wave
    ch[:, CH[f"{side}_sh_rot"]] += env * 0.5 * wave
    _flat_feet(ch)
    zeros = np.zeros(len(t))
    return PrimitiveOut(ch, zeros, zeros.copy())


PrimitiveFn = Callable[[np.ndarray, Segment, Style, np.random.Generator], PrimitiveOut]
PRIMITIVE_FNS: dict[str, PrimitiveFn] = {
    "idle": prim_idle, "walk": prim_walk, "turn": prim_turn, "reach": prim_reach, "squat": prim_squat,
    "wave": prim_wave,
}


def plan_segments(rng: np.random.Generator, n_frames: int, fps: float = FPS) -> list[Segment]:
    """Chain of primitives covering ``n_frames``: 1.5-4 s each, no primitive twice in a row."""
    names = list(PRIMITIVE_PROBS)
    probs = np.array([PRIMITIVE_PROBS[n] for n in names])
    segs: list[Segment] = []
    start = 0
    while start < n_frames:
        length = int(rng.uniform(1.5, 4.0) * fps)
        if n_frames - (start + length) < int(1.2 * fps):  # no stub segment at the end
            length = n_frames - start
        p = probs.copy()
        if segs:
            p[names.index(segs[-1].primitive)] = 0.0
        name = names[rng.choice(len(names), p=p / p.sum())]
        params = {}
        if name == "turn":
            params["angle"] = float(rng.choice([-1, 1]) * rng.uniform(np.pi / 4, np.pi))
        segs.append(Segment(name, start, start + length, params))
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
class PoseTrajectory:
    """A planned sequence in the y-up world frame.

    Attributes:
        rotmats: (T, 24, 3, 3) SMPL parent-relative rotations; joint 0 = global orientation in the world frame.
        channels: (T, C) clamped anatomical channels (radians).
        root_xz: (T, 2) horizontal root displacement in metres (x, z); height comes later from ground contact.
        heading: (T,) yaw about +y, radians.
        weights: (K, T) blend weight of each segment.
        segments: the plan.
    """

    rotmats: np.ndarray
    channels: np.ndarray
    root_xz: np.ndarray
    heading: np.ndarray
    weights: np.ndarray
    segments: list[Segment]

    def frame_primitive(self) -> np.ndarray:
        """(T,) str: the primitive with the largest blend weight at each frame."""
        names = np.array([s.primitive for s in self.segments])
        return names[self.weights.argmax(axis=0)]


def plan_trajectory(rng: np.random.Generator, n_frames: int, fps: float = FPS) -> PoseTrajectory:
    """Sample a style and a plan, evaluate every primitive, blend, clamp to joint limits and integrate the root."""
    t = np.arange(n_frames) / fps
    style = sample_style(rng)
    segs = plan_segments(rng, n_frames, fps)
    weights = blend_weights(segs, n_frames, fade_frames=rng.uniform(0.4, 0.8) * fps)
    channels = np.zeros((n_frames, len(CHANNELS)))
    speed = np.zeros(n_frames)
    yaw_rate = np.zeros(n_frames)
    for seg, w in zip(segs, weights, strict=True):
        out = PRIMITIVE_FNS[seg.primitive](t, seg, style, rng)
        channels += w[:, None] * out.channels
        speed += w * out.speed
        if seg.primitive == "turn":
            # constant rate / weight integral: the blended contribution turns by exactly 'angle', smoothly.
            yaw_rate += w * seg.params["angle"] / (w.sum() / fps)
        else:
            yaw_rate += w * out.yaw_rate
    channels = clamp_channels(channels)
    heading = rng.uniform(-np.pi, np.pi) + np.cumsum(yaw_rate) / fps
    step = speed[:, None] * np.stack([np.sin(heading), np.cos(heading)], axis=1) / fps
    root_xz = np.cumsum(step, axis=0) - step[0]
    return PoseTrajectory(rotmats=channels_to_rotmats(channels, heading), channels=channels, root_xz=root_xz,
                          heading=heading, weights=weights, segments=segs)
