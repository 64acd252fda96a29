"""Point robot (`envs.point_robot`) and its reference policies: hand-computed dynamics and rewards."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.point_robot import PointRobot, PointRobotParams, PointRobotState
from envs.reference import ReferencePolicy, evaluate_policy, get_policy

ENV = PointRobot()
P = PointRobotParams()
KEY = jax.random.key(0)
STEP = jax.jit(ENV.step_env)
EVALUATE = jax.jit(evaluate_policy, static_argnums=(0, 2, 4))


def state_at(pos, goal=(1.0, 0.0)):
    return PointRobotState(
        pos=jnp.asarray(pos, jnp.float32), task=jnp.asarray(goal, jnp.float32), time=jnp.zeros((), jnp.int32)
    )


def step(pos, action, goal=(1.0, 0.0), params=P, key=KEY):
    obs, state, reward, terminated, info = STEP(key, state_at(pos, goal), jnp.asarray(action, jnp.float32), params)
    return np.asarray(state.pos), float(reward), bool(terminated), obs


def test_defaults_are_the_reference_constants():
    assert (P.step_size, P.goal_circle_radius, P.goal_disk_radius, P.wind_std, P.action_bound) == (
        0.1,
        1.0,
        0.2,
        0.0,
        1.0,
    )
    assert (P.goal_angle_min, P.goal_angle_max) == (0.0, math.pi)
    _, params = envs.make("point_robot")
    assert (params.num_episodes, params.episode_length, params.env_params.wind_std) == (3, 100, 0.0)
    _, params = envs.make("point_robot_wind")
    assert (params.num_episodes, params.episode_length, params.env_params.wind_std) == (3, 100, 0.3)


def test_move_and_reward_use_the_position_after_the_move():
    pos, reward, terminated, obs = step((0.3, 0.4), (0.5, -1.0))
    np.testing.assert_allclose(pos, [0.35, 0.3], atol=1e-7)
    np.testing.assert_array_equal(obs, pos)
    assert reward == 0.0 and not terminated
    # s = (0.7, 0): before the move d = 0.3 (no reward); after it d = 0.2 - 0.1 = 0.1 -> 0.9.
    pos, reward, _, _ = step((0.7, 0.0), (1.0, 0.0))
    np.testing.assert_allclose(pos, [0.8, 0.0], atol=1e-7)
    pos, reward, _, _ = step((0.8, 0.0), (1.0, 0.0))
    assert reward == pytest.approx(0.9, abs=1e-6)


def test_goal_disk_edge_exactly():
    # Exactly representable numbers: step 0.125, disk radius 0.25, goal (1, 0).
    params = P.replace(step_size=0.125, goal_disk_radius=0.25)
    pos, reward, _, _ = step((0.625, 0.0), (1.0, 0.0), params=params)  # s' = (0.75, 0): d = 0.25 exactly
    assert pos.tolist() == [0.75, 0.0] and reward == 0.75  # d <= radius pays 1 - d
    pos, reward, _, _ = step((0.5, 0.0), (1.0, 0.0), params=params)  # d = 0.375
    assert reward == 0.0


def test_goal_disk_edge_default_radius():
    goal = (math.cos(1.0), math.sin(1.0))
    for d, expected in [(0.199, 0.801), (0.19, 0.81), (0.201, 0.0), (0.25, 0.0), (0.0, 1.0)]:
        # Approach the goal radially from the inside: end the move at distance d.
        end = np.array(goal) * (1 - d)
        start = end - 0.1 * np.array([0.5, 0.5])
        _, reward, _, _ = step(start, (0.5, 0.5), goal=goal)
        assert reward == pytest.approx(expected, abs=2e-6), d


def test_clipping_and_non_finite_actions():
    cases = [
        ((5.0, -3.0), (0.1, -0.1)),
        ((1.0, -1.0), (0.1, -0.1)),
        ((0.25, 1.5), (0.025, 0.1)),
        ((np.nan, 0.5), (0.0, 0.05)),  # NaN counts as 0
        ((np.inf, -np.inf), (0.1, -0.1)),  # +-inf clip to +-1
        ((1e38, -1e38), (0.1, -0.1)),
    ]
    for action, expected in cases:
        pos, _, _, _ = step((0.0, 0.0), action)
        np.testing.assert_allclose(pos, expected, atol=1e-7, err_msg=str(action))
    assert ENV.action_space(P).low == -1.0 and ENV.action_space(P).high == 1.0


def test_wind_is_added_before_the_clip():
    params = P.replace(wind_std=0.3)
    key = jax.random.key(3)
    wind = np.asarray(0.3 * jax.random.normal(key, (2,), jnp.float32))
    for action in [(0.0, 0.0), (1.0, -1.0), (0.9, 0.2), (-3.0, 3.0)]:
        pos, _, _, _ = step((0.0, 0.0), action, params=params, key=key)
        expected = 0.1 * np.clip(np.asarray(action, np.float32) + wind, -1, 1)
        np.testing.assert_allclose(pos, expected, atol=1e-6)
    # By hand: the wind of key 3 is (-0.43388, 0.46181). At a = (1, -1) both components push back
    # inside the box: the move is 0.1 (1 - 0.43388, -1 + 0.46181); at a = (-1, 1) both push
    # outwards and the clip removes them: exactly (-0.1, 0.1).
    np.testing.assert_allclose(wind, [-0.4338771, 0.4618143], atol=1e-6)
    pos, _, _, _ = step((0.0, 0.0), (1.0, -1.0), params=params, key=key)
    np.testing.assert_allclose(pos, [0.05661229, -0.05381857], atol=1e-6)
    assert step((0.0, 0.0), (-1.0, 1.0), params=params, key=key)[0].tolist() == pytest.approx([-0.1, 0.1])
    # Without wind the same key gives the noiseless move; with wind 0.1 (0.3 - 0.43388, 0.3 + 0.46181).
    assert step((0.0, 0.0), (0.3, 0.3), key=key)[0].tolist() == pytest.approx([0.03, 0.03])
    pos, _, _, _ = step((0.0, 0.0), (0.3, 0.3), params=params, key=key)
    np.testing.assert_allclose(pos, [-0.01338771, 0.07618143], atol=1e-6)


def test_wind_statistics():
    params = P.replace(wind_std=0.3)
    keys = jax.random.split(jax.random.key(1), 4000)
    state = state_at((0.0, 0.0))
    _, states, _, _, _ = jax.vmap(ENV.step_env, in_axes=(0, None, None, None))(keys, state, jnp.zeros(2), params)
    noise = np.asarray(states.pos) / 0.1  # clip(w) with w ~ N(0, 0.09): |w| > 1 has probability 1e-3
    assert abs(noise.mean()) < 0.02
    assert noise.std() == pytest.approx(0.3, rel=0.05)
    assert np.abs(noise).max() <= 1.0 + 1e-6


def test_tasks_on_the_upper_half_circle_and_reset():
    goals = np.asarray(jax.vmap(ENV.sample_task, in_axes=(0, None))(jax.random.split(KEY, 2000), P))
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0, atol=1e-6)
    angles = np.arctan2(goals[:, 1], goals[:, 0])
    assert angles.min() >= 0.0 and angles.max() <= math.pi
    assert angles.mean() == pytest.approx(math.pi / 2, abs=0.08)  # U(0, pi): mean pi/2, sd 0.02
    obs, state = ENV.reset_to_task(KEY, jnp.array([0.0, 1.0]), P)
    assert obs.tolist() == [0.0, 0.0] and int(state.time) == 0 and state.task.tolist() == [0.0, 1.0]
    assert ENV.task_shape(P) == (2,) and ENV.observation_space(P).contains(obs)


def test_single_episode_gymnax_use_truncates_at_max_steps():
    params = P.replace(max_steps_in_episode=3)
    obs, state = ENV.reset(KEY, params)
    truncs = []
    for key in jax.random.split(KEY, 4):
        obs, state, reward, terminated, truncated, _ = ENV.step(key, state, jnp.ones(2), params)
        truncs.append(bool(truncated))
        assert not bool(terminated)
    assert truncs == [False, False, True, False]
    np.testing.assert_allclose(np.asarray(obs), [0.1, 0.1], atol=1e-7)  # one step after the auto-reset


WRONG_ACTIONS = {
    "shape (3,)": jnp.zeros(3),
    "shape (2, 2)": jnp.zeros((2, 2)),
    "shape ()": jnp.float32(0.5),
    "dtype int32": jnp.array([1, 0], jnp.int32),
    "dtype bool": jnp.array([True, False]),
    "dtype int32 (a list of ints)": [1, 0],
}


@pytest.mark.parametrize("action", WRONG_ACTIONS.values(), ids=WRONG_ACTIONS.keys())
def test_wrong_action_shape_or_dtype_is_refused(action, assert_action_refused):
    """The raw env (eager, jitted, gymnax's step) and the wrapped env refuse it, naming (2,) floats."""
    got = jnp.asarray(action)
    message = (
        rf"PointRobot: invalid action \(shape {re.escape(str(got.shape))}, dtype {got.dtype}\); "
        r"expected a float array of shape \(2,\)"
    )
    meta, params = envs.make("point_robot", num_episodes=2, episode_length=3)
    _, meta_state = meta.reset(KEY, params)
    assert_action_refused(ENV, state_at((0.0, 0.0)), P, meta, meta_state, params, action, message, STEP, KEY)


def test_right_actions_work_under_jit_and_vmap():
    # vmap sees one example's action: [4, 2] actions are 4 actions of shape (2,) ...
    actions = jnp.array([[1.0, 0.0], [0.0, -1.0], [0.5, 0.25], [-2.0, 3.0]])
    vstep = jax.jit(jax.vmap(ENV.step_env, in_axes=(None, None, 0, None)))
    _, states, *_ = vstep(KEY, state_at((0.0, 0.0)), actions, P)
    np.testing.assert_allclose(states.pos, [[0.1, 0.0], [0.0, -0.1], [0.05, 0.025], [-0.1, 0.1]], atol=1e-7)
    # ... and [4, 3] are 4 actions of shape (3,).
    with pytest.raises(ValueError, match=r"shape \(3,\), dtype float32\); expected a float array of shape \(2,\)"):
        vstep(KEY, state_at((0.0, 0.0)), jnp.zeros((4, 3)), P)
    # Any floating dtype is accepted and moves as its float32 value (these are exact in float16).
    for action in (np.array([0.5, -0.25]), jnp.array([0.5, -0.25], jnp.float16), jnp.array([0.5, -0.25], jnp.bfloat16)):
        for step_env in (ENV.step_env, STEP):
            _, state, *_ = step_env(KEY, state_at((0.0, 0.0)), action, P)
            assert np.asarray(state.pos).tolist() == pytest.approx([0.05, -0.025], abs=1e-8)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"goal_disk_radius": -0.1}, "goal_disk_radius"),
        ({"goal_circle_radius": -1.0}, "goal_circle_radius"),
        ({"goal_circle_radius": 0.0}, "goal_circle_radius"),
        ({"step_size": 0.0}, "step_size"),
        ({"wind_std": -0.3}, "wind_std"),
        ({"action_bound": float("nan")}, "action_bound"),
        ({"goal_angle_min": 1.0, "goal_angle_max": 0.5}, "goal_angle_max"),
        ({"step_size": "fast"}, "step_size"),
    ],
)
def test_invalid_params(override, match):
    with pytest.raises(ValueError, match=f"{match}.*allowed"):
        envs.make("point_robot", **override)


# ----------------------------------------------------------------------------- reference policies

NUM_TASKS = 8


# One env object and one set of policies for both variants (they differ in params only), so each
# policy's rollout compiles once.
META_ENV, _ = envs.make("point_robot")
_PARAMS = envs.make("point_robot")[1]
POLICIES = {name: get_policy("point_robot", name, META_ENV, _PARAMS) for name in ("oracle", "bayes", "random")}


@pytest.fixture(scope="module", params=["point_robot", "point_robot_wind"])
def returns(request):
    _, params = envs.make(request.param)
    out = {}
    for name, policy in POLICIES.items():
        out[name] = jax.tree.map(np.asarray, EVALUATE(META_ENV, params, policy, jax.random.key(7), NUM_TASKS))
    return request.param, META_ENV, params, out


def test_oracle_beats_bayes_beats_random(returns):
    _, _, _, out = returns
    oracle, bayes, rand = (out[k]["return"] for k in ("oracle", "bayes", "random"))
    assert oracle.mean() > bayes.mean() > rand.mean()
    assert np.all(oracle >= bayes - 1e-3)  # the oracle is never worse, task by task
    assert np.all(bayes > 200) and np.all(oracle > 250)  # both reach the goal every episode
    for out_k in out.values():
        np.testing.assert_allclose(out_k["episode_returns"].sum(1), out_k["return"], rtol=1e-5)


def test_bayes_matches_the_oracle_after_episode_one(returns):
    name, _, _, out = returns
    oracle, bayes = out["oracle"]["episode_returns"], out["bayes"]["episode_returns"]
    # Without wind the goal is inferred exactly up to float32 rounding, which depends on how XLA
    # compiles the arithmetic (at LLVM opt level 0 one task of 16 differed by 0.011 in an episode's
    # return of ~93); a wrongly inferred goal would cost whole steps of reward (up to 1 each).
    tolerance = 0.05 if name == "point_robot" else 2.0
    np.testing.assert_allclose(bayes[:, 1:], oracle[:, 1:], atol=tolerance)
    assert np.all(bayes[:, 0] < oracle[:, 0])  # exploring costs in episode 1


def test_oracle_episode_return_by_hand():
    # Straight at full speed: goal (cos a, sin a) reached in ceil(1 / (0.1 max(|cos|, |sin|))) steps;
    # rewards 1 - d on the last steps inside the 0.2 disk, then 1 per step.
    _, params = envs.make("point_robot", num_episodes=1)
    out = EVALUATE(META_ENV, params, POLICIES["oracle"], jax.random.key(7), 1)
    goal = np.asarray(out["task"][0], np.float64)
    speed = 0.1 / np.max(np.abs(goal))  # distance covered per step along the straight line
    distances = np.maximum(1.0 - speed * np.arange(1, 101), 0.0)
    expected = np.sum(np.where(distances <= 0.2, 1.0 - distances, 0.0))
    assert float(out["return"][0]) == pytest.approx(expected, abs=1e-3)


BLIND = ReferencePolicy(
    POLICIES["bayes"].init,
    lambda k, s, o, t, p: POLICIES["bayes"].act(k, s, o, jnp.full_like(t, jnp.nan), p),
)  # the Bayes policy, given a NaN task


def test_bayes_ignores_the_task(returns):
    name, env, params, out = returns
    bayes = POLICIES["bayes"]
    again = EVALUATE(env, params, BLIND, jax.random.key(7), NUM_TASKS)
    np.testing.assert_array_equal(np.asarray(again["episode_returns"]), out["bayes"]["episode_returns"])
    # And act itself: same action and memory for different tasks.
    obs = {"obs": jnp.array([0.3, 0.5]), "reward": jnp.float32(0.9), "time": jnp.float32(0.1)}
    pstate = bayes.init(KEY, params)
    act = jax.jit(bayes.act)
    a1, s1 = act(KEY, pstate, obs, jnp.array([1.0, 0.0]), params)
    a2, s2 = act(KEY, pstate, obs, jnp.array([-1.0, 0.0]), params)
    np.testing.assert_array_equal(a1, a2)
    jax.tree.map(np.testing.assert_array_equal, s1, s2)
