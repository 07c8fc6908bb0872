"""Pose trajectories of the synthetic generator: primitives, joint limits, families and hold-out, two-chain mixing."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from motion.synthetic_poses import (
    CH,
    CHANNEL_LIMITS,
    CHANNELS,
    FAMILIES,
    FAMILY_OF,
    HELD_OUT_FAMILY,
    LOWER_PRIMITIVES,
    OPTIONAL_FAMILIES,
    PRIMITIVE_FNS,
    PRIMITIVE_PROBS,
    PRIMITIVES,
    UPPER_ADDITIVE,
    UPPER_MASK,
    UPPER_PRIMITIVES,
    _flat_feet,
    channels_to_rotmats,
    plan_segments,
    plan_trajectory,
    primitives_for,
    smooth_noise,
)

LO = np.array([CHANNEL_LIMITS[c][0] for c in CHANNELS])
HI = np.array([CHANNEL_LIMITS[c][1] for c in CHANNELS])


def _plan(name: str | tuple[str, ...], seed: int, n: int = 150, **kw: object):
    prims = (name,) if isinstance(name, str) else name
    return plan_trajectory(np.random.default_rng(seed), n, primitives=prims, **kw)


def test_families_and_split_sets() -> None:
    listed = [p for fam in FAMILIES.values() for p in fam]
    assert sorted(listed) == sorted(PRIMITIVES) and len(set(listed)) == len(listed)  # a partition
    assert set(PRIMITIVE_FNS) == set(PRIMITIVES) == set(PRIMITIVE_PROBS)
    assert set(LOWER_PRIMITIVES) <= set(PRIMITIVES) and set(UPPER_PRIMITIVES) <= set(PRIMITIVES)
    assert HELD_OUT_FAMILY in FAMILIES
    train, held = primitives_for("train"), primitives_for("heldout")
    assert set(train) == {p for p in PRIMITIVES if FAMILY_OF[p] not in (HELD_OUT_FAMILY, *OPTIONAL_FAMILIES)}
    assert set(primitives_for("train", ("lie",))) == set(train) | {"lie"}  # optional families only when named
    with pytest.raises(ValueError, match="unknown optional"):
        primitives_for("train", ("combat",))
    assert set(held) == set(FAMILIES[HELD_OUT_FAMILY]) | {"idle"}
    assert primitives_for("validation") == primitives_for("test") == train
    assert set(primitives_for("all")) == set(PRIMITIVES)
    with pytest.raises(ValueError):
        primitives_for("nope")
    with pytest.raises(ValueError):
        plan_trajectory(np.random.default_rng(0), 30, primitives=("moonwalk",))
    # the masks split the channels: upper-body channels come from the upper chain, spine flexion/side bend from both
    upper = {c for c, m in zip(CHANNELS, UPPER_MASK, strict=True) if m}
    assert {"l_sh_flex", "r_elbow", "neck_twist", "spine_twist"} <= upper
    assert not upper & {"root_pitch", "l_hip_flex", "r_knee", "l_ankle"}
    assert not (UPPER_MASK * UPPER_ADDITIVE).any()


@pytest.mark.parametrize("name", PRIMITIVES)
def test_every_primitive_is_finite_and_within_limits(name: str) -> None:
    for seed in range(2):
        traj = _plan(name, seed, n=130)
        assert np.isfinite(traj.channels).all() and np.isfinite(traj.root_xz).all()
        assert ((traj.channels >= LO) & (traj.channels <= HI)).all()
        assert np.isfinite(traj.lift).all() and (traj.lift >= 0).all()
        assert set(traj.frame_primitive()) == {name}  # only the requested primitive, and it is recorded
        rot = traj.rotmats
        np.testing.assert_allclose(rot @ rot.swapaxes(-1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-10)
        # something moves: no primitive is a frozen pose
        assert traj.channels.std(axis=0).max() > 0.02


def test_deterministic_by_seed() -> None:
    a, b = _plan(primitives_for("all"), 7, 240), _plan(primitives_for("all"), 7, 240)
    np.testing.assert_array_equal(a.channels, b.channels)
    np.testing.assert_array_equal(a.root_xz, b.root_xz)
    np.testing.assert_array_equal(a.lift, b.lift)
    assert [(s.primitive, s.start, s.end, s.chain) for s in a.segments] == \
        [(s.primitive, s.start, s.end, s.chain) for s in b.segments]
    c = _plan(primitives_for("all"), 8, 240)
    assert not np.array_equal(a.channels, c.channels)


def test_held_out_family_only_when_asked() -> None:
    held = set(FAMILIES[HELD_OUT_FAMILY])
    seen: set[str] = set()
    for seed in range(60):
        traj = plan_trajectory(np.random.default_rng(seed), 300)  # default = training set
        names = {s.primitive for s in traj.segments}
        assert not names & held
        seen |= names
    assert len(seen) >= len(primitives_for("train")) - 2  # the default plan does use the training primitives
    seen = set()
    for seed in range(20):
        traj = plan_trajectory(np.random.default_rng(seed), 300, primitives=primitives_for("heldout"))
        names = {s.primitive for s in traj.segments}
        assert names <= held | {"idle"}
        seen |= names
    assert held <= seen


def test_jump_lifts_off_and_lands() -> None:
    peaks = []
    for seed in range(4):
        traj = _plan("jump", seed, 120)
        assert (traj.lift >= 0).all()
        assert traj.lift[0] == 0 and traj.lift[-1] == 0  # starts and ends on the ground
        peaks.append(traj.lift.max())
    assert max(peaks) > 0.1 and max(peaks) <= 0.55
    run = _plan("run", 0, 120).lift
    assert 0.005 < run.max() < 0.1 and (run == 0).mean() > 0.3  # short flight phases between stances
    for name in ("walk", "sit", "idle", "random_limbs"):
        assert not _plan(name, 0, 90).lift.any()


def test_sit_flexes_hips_and_knees_with_flat_feet() -> None:
    for seed in range(3):
        traj = _plan("sit", seed, 150)
        ch = traj.channels
        seated = (ch[:, CH["l_hip_flex"]] > 1.2) & (ch[:, CH["r_hip_flex"]] > 1.2) & \
            (ch[:, CH["l_knee"]] > 1.2) & (ch[:, CH["r_knee"]] > 1.2)
        assert seated.sum() > 15  # held, not just passed through
        # feet level while seated: sagittal foot angle ~ 0
        foot = ch[:, CH["root_pitch"]] - ch[:, CH["l_hip_flex"]] + ch[:, CH["l_knee"]] + ch[:, CH["l_ankle"]]
        assert np.abs(foot[seated]).max() < 0.15
        # sitting down on a chair behind: the root goes back while the feet stay put
        fwd = traj.root_xz @ np.array([np.sin(traj.heading[0]), np.cos(traj.heading[0])])
        assert fwd[seated].mean() < -0.2


def test_lie_goes_down_lies_and_gets_up() -> None:
    """The body's up axis (the root's y axis in the world) starts and ends upright and lies near horizontal (within
    17 degrees) for over a second in between, on the back, front and sides over a few seeds."""
    kinds = set()
    for seed in range(8):
        traj = _plan("lie", seed, 240)
        up = traj.rotmats[:, 0, :, 1]  # (T, 3) world direction of the pelvis' up axis
        assert up[0, 1] > np.cos(0.35) and up[-1, 1] > np.cos(0.35)
        flat = np.abs(up[:, 1]) < np.sin(0.3)
        assert flat.sum() > 30
        fwd = np.stack([np.sin(traj.heading), np.zeros(240), np.cos(traj.heading)], axis=1)
        facing = (up[flat] * fwd[flat]).sum(1).mean()  # up axis along the heading: on the front (head forward)
        kinds.add("front" if facing > 0.7 else "back" if facing < -0.7 else "side")
        assert traj.tilt is not None and np.isfinite(traj.tilt).all()
    assert kinds == {"front", "back", "side"}
    assert _plan("walk", 0, 120).tilt is None  # upright primitives leave the orientation as before


def test_arms_up_raises_arms_above_the_head() -> None:
    flex = [_plan("arms_up", seed, 120).channels[:, [CH["l_sh_flex"], CH["r_sh_flex"]]].max() for seed in range(3)]
    assert min(flex) > 2.5


def test_bend_pick_kneel_lunge_reach_their_poses() -> None:
    assert max(_plan("bend_pick", s, 120).channels[:, CH["root_pitch"]].max() for s in range(3)) > 0.9
    knees = np.concatenate([_plan("kneel", s, 150).channels[:, [CH["l_knee"], CH["r_knee"]]] for s in range(3)])
    assert knees.max() > 1.8  # a knee folded under the body
    lunge = _plan("lunge", 1, 120)
    assert np.ptp(lunge.root_xz, axis=0).max() > 0.15  # the body travels with the step


def test_two_chain_mixes_lower_and_upper_body() -> None:
    differ = 0
    for seed in range(12):
        traj = plan_trajectory(np.random.default_rng(seed), 300, two_chain=True)
        assert traj.two_chain
        lower, upper = traj.frame_primitive("lower"), traj.frame_primitive("upper")
        assert set(lower) <= set(LOWER_PRIMITIVES) and set(upper) <= set(UPPER_PRIMITIVES)
        assert set(traj.frame_primitive()) <= set(PRIMITIVES)
        differ += (lower != upper).mean() > 0.5
        for chain in ("lower", "upper"):  # each chain's weights are a partition of unity
            w = traj.weights[[s.chain == chain for s in traj.segments]]
            np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
        starts = [s.start for s in traj.segments]
        assert starts == sorted(starts)
    assert differ >= 10
    # sitting (lower chain) with the arms up (upper chain) at the same time: neither primitive alone does both
    both = 0
    for seed in range(4):
        ch = _plan(("sit", "arms_up"), seed, 180, two_chain=True).channels
        hips = np.minimum(ch[:, CH["l_hip_flex"]], ch[:, CH["r_hip_flex"]])
        arms = np.maximum(ch[:, CH["l_sh_flex"]], ch[:, CH["r_sh_flex"]])
        both += ((hips > 1.2) & (arms > 2.5)).any()
    assert both >= 2
    single = _plan(("sit", "arms_up"), 0, 180, two_chain=False).channels
    assert not ((single[:, CH["l_hip_flex"]] > 1.2) & (single[:, CH["l_sh_flex"]] > 2.5)).any()
    # walking legs and root with clapping hands
    walk = _plan(("walk", "clap"), 3, 200, two_chain=True)
    assert np.linalg.norm(walk.root_xz[-1] - walk.root_xz[0]) > 1.0
    assert walk.channels[:, CH["l_hip_flex"]].std() > 0.1 and walk.channels[:, CH["l_sh_rot"]].min() < -0.6


def test_single_chain_default_and_two_chain_rate() -> None:
    twos = [plan_trajectory(np.random.default_rng(s), 120).two_chain for s in range(100)]
    assert 0.25 < np.mean(twos) < 0.55
    for s in range(5):  # a single chain never marks a part
        traj = plan_trajectory(np.random.default_rng(s), 120, two_chain=False)
        assert {seg.chain for seg in traj.segments} == {"body"}
        np.testing.assert_array_equal(traj.frame_primitive(), traj.frame_primitive("upper"))


def test_segments_cover_and_use_allowed_primitives() -> None:
    for seed in range(10):
        segs = plan_segments(np.random.default_rng(seed), 400, primitives=("sit", "walk"))
        assert segs[0].start == 0 and segs[-1].end == 400
        assert all(a.end == b.start for a, b in itertools.pairwise(segs))
        assert {s.primitive for s in segs} <= {"sit", "walk"}
        assert all(s.end - s.start >= 2.8 * 30 - 1 for s in segs[:-1] if s.primitive == "sit")
    short = plan_trajectory(np.random.default_rng(0), 20)  # shorter than any segment: still a valid plan
    assert short.channels.shape == (20, len(CHANNELS))


def test_flat_feet_keeps_soles_level() -> None:
    rng = np.random.default_rng(3)
    n = 40
    ch = np.zeros((n, len(CHANNELS)))
    ch[:, CH["root_pitch"]], ch[:, CH["root_roll"]] = rng.uniform(-0.2, 1.0, n), rng.uniform(-0.3, 0.3, n)
    for side in "lr":
        for name, lo, hi in (("hip_flex", -0.3, 1.8), ("hip_abd", -0.2, 0.8), ("hip_rot", -0.5, 0.5), ("knee", 0, 2)):
            ch[:, CH[f"{side}_{name}"]] = rng.uniform(lo, hi, n)
    _flat_feet(ch)
    rot = channels_to_rotmats(ch, rng.uniform(-3, 3, n))
    for chain in ((0, 1, 4, 7), (0, 2, 5, 8)):
        g = rot[:, chain[0]]
        for j in chain[1:]:
            g = g @ rot[:, j]
        np.testing.assert_allclose(g[:, 1, 1], 1.0, atol=1e-9)  # the foot's up axis is the world's


def test_smooth_noise_is_stationary_unit_noise() -> None:
    rng = np.random.default_rng(0)
    for n, sigma_s in ((300, 0.6), (5000, 0.6), (20, 2.0)):  # (20 frames << correlation time: no blow-up)
        x = smooth_noise(rng, n, 400, sigma_s)
        assert 0.8 < x.std() < 1.2
    x = smooth_noise(rng, 600, 300, 0.5)
    lag = 15  # sigma = 15 frames: autocorrelation exp(-1/4)
    assert abs((x[:-lag] * x[lag:]).mean() / (x * x).mean() - np.exp(-0.25)) < 0.05


def test_plan_is_fast() -> None:
    rng = np.random.default_rng(0)
    plan_trajectory(rng, 300)
    start = time.perf_counter()
    for _ in range(20):
        plan_trajectory(rng, 300)
    per = (time.perf_counter() - start) / 20
    assert per < 0.03, f"{per * 1e3:.1f} ms per 300-frame plan"  # ~4 ms on one core; generous for loaded machines
