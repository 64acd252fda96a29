"""Escape room (`envs.escape_room`) and its reference policies: hand cases for the wall and the door,
and the crossing rule checked against a brute-force walk along the segment."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.escape_room import EscapeRoom, EscapeRoomParams, EscapeRoomState, in_door, move, wrap_angle
from envs.reference import ReferencePolicy, evaluate_policy, get_policy
from envs.reference.escape_room import door_interval

ENV = EscapeRoom()
P = EscapeRoomParams()
HW = math.pi / 16
KEY = jax.random.key(0)
STEP = jax.jit(ENV.step_env)
MOVE = jax.jit(jax.vmap(move, in_axes=(0, 0, 0, None)))
EVALUATE = jax.jit(evaluate_policy, static_argnums=(0, 2, 4))


def unit(angle):
    return np.array([math.cos(angle), math.sin(angle)], np.float32)


def step(pos, action, door, params=P):
    state = EscapeRoomState(
        pos=jnp.asarray(pos, jnp.float32), task=jnp.asarray(door, jnp.float32), time=jnp.zeros((), jnp.int32)
    )
    obs, state, reward, terminated, _ = STEP(KEY, state, jnp.asarray(action, jnp.float32), params)
    assert not bool(terminated)
    np.testing.assert_array_equal(obs, state.pos)
    return np.asarray(state.pos), float(reward)


def test_defaults_are_the_reference_constants():
    assert (P.step_size, P.wall_radius, P.door_half_width, P.wall_margin, P.action_bound) == (
        0.1,
        1.0,
        HW,
        0.99,
        1.0,
    )
    assert (P.door_angle_min, P.door_angle_max, P.start_radius_max) == (0.0, math.pi, 1.0)
    _, params = envs.make("escape_room")
    assert (params.num_episodes, params.episode_length) == (2, 60)


def test_inside_to_outside():
    pos, reward = step((0.95, 0.0), (1.0, 0.0), door=0.0)  # through the door
    np.testing.assert_allclose(pos, [1.05, 0.0], atol=1e-6)
    assert reward == 1.0
    pos, reward = step((0.95, 0.0), (1.0, 0.0), door=math.pi / 2)  # into the wall
    np.testing.assert_allclose(pos, [0.99, 0.0], atol=1e-6)  # 0.99 s~ / ||s~||
    assert reward == 0.0
    s = np.array([0.9, 0.3], np.float32)  # a slanted push into the wall
    pos, reward = step(s, (0.7, 0.9), door=-1.0)
    s_new = s + 0.1 * np.array([0.7, 0.9], np.float32)
    np.testing.assert_allclose(pos, 0.99 * s_new / np.linalg.norm(s_new), atol=1e-6)
    assert reward == 0.0


def test_outside_to_inside():
    pos, reward = step((1.05, 0.0), (-1.0, 0.0), door=0.0)  # in through the door
    np.testing.assert_allclose(pos, [0.95, 0.0], atol=1e-6)
    assert reward == 0.0
    # Blocked from outside: the rule puts the agent at 0.99 s~ / ||s~||, i.e. inside the wall.
    pos, reward = step((1.05, 0.0), (-1.0, 0.0), door=math.pi / 2)
    np.testing.assert_allclose(pos, [0.99, 0.0], atol=1e-6)
    assert reward == 0.0
    s = np.array([0.5, 0.9], np.float32)  # ||s|| = 1.03 -> ||s~|| = 0.93
    pos, _ = step(s, (-0.2, -1.0), door=0.0)
    s_new = s + 0.1 * np.array([-0.2, -1.0], np.float32)
    np.testing.assert_allclose(pos, 0.99 * s_new / np.linalg.norm(s_new), atol=1e-6)


def test_no_crossing():
    pos, reward = step((1.5, 0.0), (1.0, 0.0), door=2.0)  # outside -> outside
    np.testing.assert_allclose(pos, [1.6, 0.0], atol=1e-6)
    assert reward == 1.0
    pos, reward = step((0.5, 0.5), (-1.0, 1.0), door=2.0)  # inside -> inside
    np.testing.assert_allclose(pos, [0.4, 0.6], atol=1e-6)
    assert reward == 0.0
    pos, reward = step((1.0, 0.0), (0.0, 0.0), door=2.0)  # on the circle counts as inside: no reward
    assert pos.tolist() == [1.0, 0.0] and reward == 0.0


@pytest.mark.parametrize(
    "door, beta, open_",
    [
        (0.05, -0.1, True),  # door arc [-0.146, 0.246] wraps below angle 0
        (0.05, -0.14, True),
        (0.05, -0.16, False),
        (0.05, 0.24, True),
        (0.05, 0.26, False),
        (3.1, -3.1, True),  # door arc [2.904, 3.296] wraps past pi: -3.1 = 3.183
        (3.1, -3.0, True),  # 3.283
        (3.1, -2.98, False),  # 3.303
        (3.1, 2.95, True),
        (0.0, 2 * math.pi - 0.1, True),
        (math.pi, -math.pi + 0.15, True),
        (math.pi, math.pi - 0.2, False),
    ],
)
def test_door_wrap_around(door, beta, open_):
    assert bool(in_door(jnp.float32(beta), jnp.float32(door), HW)) == open_
    # The same through the dynamics: a radial push out at angle beta, and a radial push in.
    pos, reward = step(0.95 * unit(beta), unit(beta), door=door)
    expected = 1.05 * unit(beta) if open_ else 0.99 * unit(beta)
    np.testing.assert_allclose(pos, expected, atol=1e-6)
    assert reward == float(open_)
    pos, reward = step(1.05 * unit(beta), -unit(beta), door=door)
    np.testing.assert_allclose(pos, (0.95 if open_ else 0.99) * unit(beta), atol=1e-6)
    assert reward == 0.0


def test_wrap_angle():
    x = jnp.array([0.0, math.pi, -math.pi, 3 * math.pi / 2, -3 * math.pi / 2, 7.0])
    expected = [0.0, -math.pi, -math.pi, -math.pi / 2, math.pi / 2, 7.0 - 2 * math.pi]
    np.testing.assert_allclose(wrap_angle(x), expected, atol=1e-6)


def test_edge_cases():
    # Exactly representable: step 0.25, segment (-0.125, 1) -> (0.125, 1) is tangent at (0, 1).
    params = P.replace(step_size=0.25)
    pos, reward = step((-0.125, 1.0), (1.0, 0.0), door=-math.pi / 2, params=params)
    assert pos.tolist() == [0.125, 1.0] and reward == 1.0  # a touch is no crossing
    # Outside -> outside through the room (two crossings at pi/2 +- 0.125): taken only when both
    # crossing points are in the door.
    start, action = (-0.125, 0.999), (1.0, 0.0)
    end = np.array([0.125, 0.999], np.float32)
    pos, reward = step(start, action, door=math.pi / 2, params=params)
    np.testing.assert_allclose(pos, end, atol=1e-6)
    assert reward == 1.0
    for door in (math.pi / 2 + 0.19, math.pi / 2 - 0.19, 0.0):  # one or no crossing in the door
        pos, reward = step(start, action, door=door, params=params)
        np.testing.assert_allclose(pos, 0.99 * end / np.linalg.norm(end), atol=1e-6)
        assert reward == 0.0
    # A move that starts on the circle and goes out crosses at its start.
    assert step((1.0, 0.0), (1.0, 0.0), door=0.0)[0].tolist() == pytest.approx([1.1, 0.0])
    assert step((1.0, 0.0), (1.0, 0.0), door=1.0)[0].tolist() == pytest.approx([0.99, 0.0])
    # Tangent move starting on the circle: goes out at its start (angle pi/2).
    pos, _ = step((0.0, 1.0), (1.0, 0.0), door=0.0)
    np.testing.assert_allclose(pos, 0.99 * np.array([0.1, 1.0]) / math.hypot(0.1, 1.0), atol=1e-6)
    # s~ exactly at the origin (a step longer than R): blocked at 0.99 * the crossing point.
    params = P.replace(step_size=2.0)
    pos, reward = step((1.5, 0.0), (-0.75, 0.0), door=math.pi / 2, params=params)
    np.testing.assert_allclose(pos, [0.99, 0.0], atol=1e-6)
    assert reward == 0.0


def test_non_finite_actions():
    cases = [((np.nan, np.nan), (0.5, 0.0)), ((np.inf, 0.0), (0.6, 0.0)), ((-1e30, np.nan), (0.4, 0.0))]
    for action, expected in cases:
        pos, _ = step((0.5, 0.0), action, door=0.0)
        np.testing.assert_allclose(pos, expected, atol=1e-6)


def _state(pos, door=0.0):
    """A state at `pos` ([2], or [B, 2] with `door` [B])."""
    time = jnp.zeros(np.shape(pos)[:-1], jnp.int32)
    return EscapeRoomState(pos=jnp.asarray(pos, jnp.float32), task=jnp.asarray(door, jnp.float32), time=time)


WRONG_ACTIONS = {
    "shape (3,)": jnp.zeros(3),
    "shape (1, 2)": jnp.zeros((1, 2)),
    "shape ()": jnp.float32(0.5),
    "dtype int32": jnp.array([1, 0], jnp.int32),
    "dtype uint8": np.array([1, 0], np.uint8),
}


@pytest.mark.parametrize("action", WRONG_ACTIONS.values(), ids=WRONG_ACTIONS.keys())
def test_wrong_action_shape_or_dtype_is_refused(action, assert_action_refused):
    """The raw env (eager, jitted, gymnax's step) and the wrapped env refuse it, naming (2,) floats."""
    got = jnp.asarray(action)
    message = (
        rf"EscapeRoom: invalid action \(shape {re.escape(str(got.shape))}, dtype {got.dtype}\); "
        r"expected a float array of shape \(2,\)"
    )
    meta, params = envs.make("escape_room", num_episodes=2, episode_length=3)
    _, meta_state = meta.reset(KEY, params)
    assert_action_refused(ENV, _state((0.5, 0.0)), P, meta, meta_state, params, action, message, STEP, KEY)


def test_right_actions_work_under_jit_and_vmap():
    # Four moves inside the room (no crossing): s' = s + 0.1 a, vmapped over states and actions.
    starts = jnp.array([[0.0, 0.0], [0.5, 0.5], [-0.3, 0.1], [0.0, -0.5]])
    actions = jnp.array([[1.0, 0.0], [-1.0, 1.0], [0.5, 0.5], [0.0, -1.0]])
    vstep = jax.jit(jax.vmap(ENV.step_env, in_axes=(None, 0, 0, None)))
    obs, states, reward, *_ = vstep(KEY, _state(starts, jnp.zeros(4)), actions, P)
    expected = [[0.1, 0.0], [0.4, 0.6], [-0.25, 0.15], [0.0, -0.6]]
    np.testing.assert_allclose(states.pos, expected, atol=1e-6)
    np.testing.assert_array_equal(obs, states.pos)
    np.testing.assert_array_equal(reward, 0.0)
    with pytest.raises(ValueError, match=r"shape \(\), dtype float32\); expected a float array of shape \(2,\)"):
        vstep(KEY, _state(starts, jnp.zeros(4)), jnp.zeros(4), P)  # vmap sees 4 scalars
    # Any floating dtype is accepted: out through the door at angle 0 from (0.95, 0).
    for action in (np.array([1.0, 0.0]), jnp.array([1.0, 0.0], jnp.float16)):
        _, state, reward, _, _ = STEP(KEY, _state((0.95, 0.0)), action, P)
        np.testing.assert_allclose(state.pos, [1.05, 0.0], atol=1e-6)
        assert float(reward) == 1.0


def brute_force_move(s, a, door, n=20001):
    """The rule by walking the segment: crossings are sign changes of ||p(t)|| - 1 on a fine grid.

    Returns (position after the move, the crossings' angular distances to the door centre, the
    minimum of ||p(t)||^2 - 1 along the segment)."""
    s = s.astype(np.float64)
    s_new = s + 0.1 * np.clip(a, -1, 1)
    t = np.linspace(0.0, 1.0, n)
    p = s[None] + t[:, None] * (s_new - s)[None]
    f = np.sum(p * p, axis=1) - 1.0
    inside = f <= 0.0
    idx = np.nonzero(inside[1:] != inside[:-1])[0]
    angles = [math.atan2(*(0.5 * (p[i] + p[i + 1]))[::-1]) for i in idx]
    gaps = [abs((b - door + math.pi) % (2 * math.pi) - math.pi) for b in angles]
    if not angles or all(g <= HW for g in gaps):
        return s_new, gaps, f.min()
    return 0.99 * s_new / np.linalg.norm(s_new), gaps, f.min()


def test_crossing_rule_against_brute_force():
    rng = np.random.default_rng(0)
    n = 400
    radius = np.concatenate([rng.uniform(0.92, 1.08, n - 100), rng.uniform(1.0001, 1.0007, 100)])
    phi = rng.uniform(-math.pi, math.pi, n)
    starts = (radius[:, None] * np.stack([np.cos(phi), np.sin(phi)], 1)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, 2))
    # The last 100: just outside, to a point just outside 0.08 rad further along the wall: the
    # chord dips inside (its lowest radius is about R (1 - 0.0008)), two crossings.
    delta = 0.08 * rng.choice([-1.0, 1.0], 100)
    ends = rng.uniform(1.0001, 1.0007, (100, 1)) * np.stack([np.cos(phi[-100:] + delta), np.sin(phi[-100:] + delta)], 1)
    actions[-100:] = (ends - starts[-100:]) / 0.1
    actions = actions.astype(np.float32)
    # Doors near the start's angle so that many crossings are open.
    doors = (phi + rng.uniform(-0.35, 0.35, n)).astype(np.float32)
    got = np.asarray(MOVE(jnp.asarray(starts), jnp.asarray(actions), jnp.asarray(doors), P))
    checked = crossings = doubles = blocked = 0
    for i in range(n):
        expected, gaps, f_min = brute_force_move(starts[i], actions[i], float(doors[i]))
        if any(abs(g - HW) < 1e-3 for g in gaps) or abs(f_min) < 1e-5:
            continue  # too close to the door's edge or to a tangent for the grid to decide
        checked += 1
        crossings += bool(gaps)
        doubles += len(gaps) == 2
        blocked += not np.allclose(expected, starts[i] + 0.1 * actions[i], atol=1e-6)
        np.testing.assert_allclose(got[i], expected, atol=2e-5, err_msg=f"case {i}")
    assert checked > 350 and crossings > 150 and doubles > 50 and blocked > 50, (checked, crossings, doubles, blocked)


def test_start_and_task_distributions():
    keys = jax.random.split(KEY, 2000)
    doors = np.asarray(jax.vmap(ENV.sample_task, in_axes=(0, None))(keys, P))
    assert doors.shape == (2000,) and ENV.task_shape(P) == ()
    assert doors.min() >= 0.0 and doors.max() <= math.pi
    assert doors.mean() == pytest.approx(math.pi / 2, abs=0.08)
    obs, states = jax.vmap(ENV.reset_to_task, in_axes=(0, None, None))(keys, jnp.float32(1.0), P)
    rho = np.linalg.norm(np.asarray(obs), axis=1)
    phi = np.arctan2(obs[:, 1], obs[:, 0])
    assert rho.max() < 1.0 and rho.mean() == pytest.approx(0.5, abs=0.03)  # rho ~ U(0, 1)
    assert abs(np.cos(phi).mean()) < 0.05 and abs(np.sin(phi).mean()) < 0.05  # phi ~ U(-pi, pi)
    assert np.all(np.asarray(states.task) == 1.0) and np.all(np.asarray(states.time) == 0)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"wall_radius": -1.0}, "wall_radius"),
        ({"door_half_width": -0.1}, "door_half_width"),
        ({"door_half_width": 4.0}, "door_half_width"),
        ({"wall_margin": 1.0}, "wall_margin"),
        ({"start_radius_max": 1.5}, "start_radius_max"),
        ({"step_size": float("inf")}, "step_size"),
        ({"door_angle_min": 2.0, "door_angle_max": 1.0}, "door_angle_max"),
    ],
)
def test_invalid_params(override, match):
    with pytest.raises(ValueError, match=f"{match}.*allowed"):
        envs.make("escape_room", **override)


# ----------------------------------------------------------------------------- reference policies

NUM_TASKS = 16


@pytest.fixture(scope="module")
def returns():
    env, params = envs.make("escape_room")
    out = {}
    for name in ("oracle", "bayes", "random"):
        policy = get_policy("escape_room", name, env, params)
        out[name] = jax.tree.map(np.asarray, EVALUATE(env, params, policy, jax.random.key(5), NUM_TASKS))
    return env, params, out


def test_oracle_beats_bayes_beats_random(returns):
    _, _, out = returns
    oracle, bayes, rand = (out[k]["return"] for k in ("oracle", "bayes", "random"))
    assert oracle.mean() > bayes.mean() > rand.mean()
    assert np.all(out["oracle"]["episode_returns"] >= 40)  # out within ~20 steps of any start
    assert np.all(out["bayes"]["episode_returns"][:, 0] >= 1)  # the sweep finds every door in episode 1


def test_bayes_matches_the_oracle_after_episode_one(returns):
    _, _, out = returns
    oracle, bayes = out["oracle"]["episode_returns"][:, 1], out["bayes"]["episode_returns"][:, 1]
    assert np.all(bayes >= oracle - 3)  # the same episode-2 start; at most a few steps longer
    assert bayes.mean() >= oracle.mean() - 1


def test_bayes_ignores_the_task(returns):
    env, params, out = returns
    bayes = get_policy("escape_room", "bayes", env, params)
    blind = ReferencePolicy(bayes.init, lambda k, s, o, t, p: bayes.act(k, s, o, jnp.full_like(t, jnp.nan), p))
    again = EVALUATE(env, params, blind, jax.random.key(5), NUM_TASKS)
    np.testing.assert_array_equal(np.asarray(again["episode_returns"]), out["bayes"]["episode_returns"])
    obs = {"obs": jnp.array([0.99, 0.0]), "reward": jnp.float32(0.0), "time": jnp.float32(0.05)}
    pstate = bayes.init(KEY, params)
    act = jax.jit(bayes.act)
    a1, s1 = act(KEY, pstate, obs, jnp.float32(0.3), params)
    a2, s2 = act(KEY, pstate, obs, jnp.float32(2.9), params)
    np.testing.assert_array_equal(a1, a2)
    jax.tree.map(np.testing.assert_array_equal, s1, s2)


def test_door_posterior_interval():
    # Sweeping counter-clockwise: blocked at 0.5, out at 0.6 -> door in [0.5 + hw, 0.6 + hw].
    low, high = door_interval(jnp.float32(0.6), jnp.float32(0.5), jnp.float32(1.0), P)
    np.testing.assert_allclose([low, high], [0.5 + HW, 0.6 + HW], atol=1e-6)
    # Clockwise: blocked at 2.0, out at 1.9 -> [1.9 - hw, 2.0 - hw].
    low, high = door_interval(jnp.float32(1.9), jnp.float32(2.0), jnp.float32(-1.0), P)
    np.testing.assert_allclose([low, high], [1.9 - HW, 2.0 - HW], atol=1e-6)
    # Out at the first push (nothing blocked yet): clipped to the door-angle range.
    low, high = door_interval(jnp.float32(0.05), jnp.float32(-HW), jnp.float32(1.0), P)
    np.testing.assert_allclose([low, high], [0.0, 0.05 + HW], atol=1e-6)
