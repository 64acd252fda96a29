"""experiments.probe_reward_model: the true expected reward by hand, and a fresh world model's
prediction (its reward head is zero-initialised, so it predicts exactly 0 everywhere)."""

import math

import jax
import numpy as np
import pytest

import envs
import mamba_jax as mj
from experiments import probe_reward_model as probe


def expected_by_hand(half_window_fraction: float) -> float:
    """Standing on the unit circle, goals alpha ~ U(0, pi): d = 2 sin(|delta| / 2) <= 0.2 iff
    |delta| <= w = 2 asin(0.1), so E[r] = (1 / pi) * int_{-w}^{w} (1 - 2 sin(|delta| / 2)) d delta
    = (2 / pi) (w + 4 (cos(w / 2) - 1)) in the middle of the arc, half of it at an end."""
    w = 2.0 * math.asin(0.1)
    return half_window_fraction * (2.0 / math.pi) * (w + 4.0 * (math.cos(w / 2.0) - 1.0))


def test_true_expected_reward_by_hand():
    _, params = envs.make("point_robot")
    inner = params.env_params
    assert probe.true_expected_reward(inner, math.pi / 2) == pytest.approx(expected_by_hand(1.0), rel=1e-4)  # quadrature of a step function
    assert probe.true_expected_reward(inner, 0.0) == pytest.approx(expected_by_hand(0.5), rel=1e-4)
    assert probe.true_expected_reward(inner, -math.pi / 2) == 0.0  # the lower half-circle never holds a goal
    assert expected_by_hand(1.0) == pytest.approx(0.11477, abs=1e-5)


def test_true_goal_probability_by_hand():
    """The point is in the goal disk iff |alpha - theta| <= w = 2 asin(0.1): probability 2 w / pi in
    the middle of the arc, half of it at an end; the reward in the goal, E[r] / P, is about 0.9."""
    _, params = envs.make("point_robot")
    inner = params.env_params
    w = 2.0 * math.asin(0.1)
    assert probe.true_goal_probability(inner, math.pi / 2) == pytest.approx(2 * w / math.pi, rel=1e-4)
    assert probe.true_goal_probability(inner, 0.0) == pytest.approx(w / math.pi, rel=1e-4)
    assert probe.true_goal_probability(inner, math.pi / 2) == pytest.approx(0.12754, abs=1e-5)
    in_goal = probe.true_expected_reward(inner, math.pi / 2) / probe.true_goal_probability(inner, math.pi / 2)
    assert in_goal == pytest.approx(0.9, abs=0.01)


def test_split_rollouts_by_hand():
    per_rollout = np.array([[[0.9, 0.0, 0.1, 0.8], [0.0, 0.0, 0.0, 0.0], [0.5, 0.6, 0.7, 0.8]]])  # [1, 3 angles, 4]
    fraction, hi, lo = probe.split_rollouts(per_rollout, 0.45)
    np.testing.assert_allclose(fraction, [[0.5, 0.0, 1.0]])
    np.testing.assert_allclose(hi, [[0.85, 0.0, 0.65]])
    np.testing.assert_allclose(lo, [[0.05, 0.0, 0.0]])


def test_fresh_world_model_predicts_zero_reward_everywhere():
    config = mj.get_config("debug")
    env, params = envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    obs_space, action_space = env.observation_space(params), env.action_space(params)
    state = mj.init(jax.random.PRNGKey(0), config, obs_space, action_space)
    pred = probe.predicted_rewards(state, env, params, np.array([0.3, 1.5, 2.8]), jax.random.PRNGKey(1),
                                   samples=4, stay=3)
    assert pred.shape == (3,)
    np.testing.assert_allclose(np.asarray(pred), 0.0, atol=1e-5)


def test_goto_controller_lands_on_the_target():
    actions, positions, arrival = probe.goto_actions(np.zeros(2), np.array([0.0, 1.0]), 12, 0.1)
    assert arrival == 9  # ten steps of 0.1 straight up
    np.testing.assert_allclose(actions[:10], np.tile([0.0, 1.0], (10, 1)), atol=1e-6)
    np.testing.assert_allclose(actions[10:], 0.0, atol=1e-6)  # then it stands
    np.testing.assert_allclose(positions[-1], [0.0, 1.0], atol=1e-9)
    actions, _, arrival = probe.goto_actions(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 12, 0.1)
    assert arrival == 9  # both axes at full speed: (-1, +1) ten times
    np.testing.assert_allclose(actions[:10], np.tile([-1.0, 1.0], (10, 1)), atol=1e-6)
    with pytest.raises(ValueError, match="do not reach"):
        probe.goto_actions(np.zeros(2), np.array([0.0, 1.0]), 5, 0.1)


def test_expected_reward_after_a_visit_by_hand():
    """Having stood at the top of the circle (angle pi/2) with no reward rules out the goals with
    |alpha - pi/2| <= w = 2 asin(0.1): 0 there, and elsewhere the prior's value times pi / (pi - 2 w)."""
    _, params = envs.make("point_robot")
    inner = params.env_params
    top = probe.circle_point(inner, math.pi / 2)[None]
    w = 2.0 * math.asin(0.1)
    assert probe.true_expected_reward_after_visit(inner, math.pi / 2, top) == 0.0
    assert probe.true_expected_reward_after_visit(inner, 0.5, top) == pytest.approx(
        expected_by_hand(1.0) * math.pi / (math.pi - 2 * w), rel=1e-3)
    assert probe.true_expected_reward_after_visit(inner, 0.0, top) == pytest.approx(
        expected_by_hand(0.5) * math.pi / (math.pi - 2 * w), rel=1e-3)
    far = np.array([[0.0, -5.0]])  # a visit that rules nothing out changes nothing
    assert probe.true_expected_reward_after_visit(inner, 1.0, far) == pytest.approx(
        probe.true_expected_reward(inner, 1.0), rel=1e-6)


def test_visit_plan_and_a_fresh_model_after_a_visit():
    config = mj.get_config("debug", episode_length=20)  # the visit (14 steps) must fit in episode 1
    env, params = envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    inner = params.env_params
    thetas = np.array([0.3, math.pi / 2, 2.8])
    plan = probe.visit_plan(inner, math.pi / 2, 4, thetas, 3)
    assert plan["visit_actions"].shape == (14, 2)  # 10 steps up to the circle, 4 standing
    np.testing.assert_allclose(plan["visit_positions"][-1], [0.0, 1.0], atol=1e-6)
    assert plan["onward_mask"].sum(1).tolist() == [3.0, 3.0, 3.0]
    assert plan["onward_mask"][1, 0] == 1.0  # B = A: it is already there
    with pytest.raises(ValueError, match="allowed: an angle in"):
        probe.visit_plan(inner, 4.0, 4, thetas, 3)
    with pytest.raises(ValueError, match="must end inside the first episode"):
        probe.check_visit_fits(probe.visit_plan(inner, math.pi / 2, 10, thetas, 3), params)  # 20 steps
    far = probe.far_goal_angle(inner, plan["visit_positions"])
    assert far in (0.0, pytest.approx(math.pi))
    state = mj.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    pred, observed = probe.predicted_rewards_after_visit(state, env, params, plan, far, jax.random.PRNGKey(1),
                                                         samples=4)
    assert pred.shape == (3,) and observed.shape == (4,)
    np.testing.assert_allclose(np.asarray(observed), 0.0)  # the goal is far from the visit: no reward seen
    np.testing.assert_allclose(np.asarray(pred), 0.0, atol=1e-5)  # zero-initialised reward head


def test_rollout_step_rewards_are_the_per_step_parts_of_the_rollout_means():
    config = mj.get_config("debug")
    env, params = envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    state = mj.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    # a non-zero reward head (its output layer starts at zero), so the per-step values differ
    leaves, tree = jax.tree.flatten(state.params["wm"]["reward"])
    leaves = [x + 0.3 * jax.random.normal(jax.random.PRNGKey(i), x.shape) for i, x in enumerate(leaves)]
    state = state.replace(params={**state.params, "wm": {**state.params["wm"], "reward": jax.tree.unflatten(tree, leaves)}})
    thetas, key = np.array([0.3, 1.5, 2.8]), jax.random.PRNGKey(1)
    by_step = np.asarray(probe.rollout_step_rewards(state, env, params, thetas, key, samples=4, stay=3))
    assert by_step.shape == (3, 3, 4) and np.std(by_step) > 0
    means = np.asarray(probe.rollout_rewards(state, env, params, thetas, key, samples=4, stay=3))
    np.testing.assert_allclose(by_step.mean(1), means, rtol=1e-6, atol=1e-7)
    assert probe._shown_steps(25) == [0, 4, 9, 14, 19, 24] and probe._shown_steps(2) == [0, 1]
