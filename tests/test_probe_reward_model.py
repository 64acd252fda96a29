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


def test_fresh_world_model_predicts_zero_reward_everywhere():
    config = mj.get_config("debug")
    env, params = envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    obs_space, action_space = env.observation_space(params), env.action_space(params)
    state = mj.init(jax.random.PRNGKey(0), config, obs_space, action_space)
    pred = probe.predicted_rewards(state, env, params, np.array([0.3, 1.5, 2.8]), jax.random.PRNGKey(1),
                                   samples=4, stay=3)
    assert pred.shape == (3,)
    np.testing.assert_allclose(np.asarray(pred), 0.0, atol=1e-5)
