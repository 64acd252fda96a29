"""Rollout: S entries per meta-episode with the contract's conventions, checked on a hand-made env
whose rewards and terminations are known exactly, and on the real point robot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import spaces

import envs
from envs.base import TaskEnv
from envs.meta import MetaEpisodeWrapper, MetaParams
from mamba_jax import rollout as ro


@struct.dataclass
class CountParams:
    fall_above: float = 1e9  # the inner env terminates ("falls") on an action above this
    max_steps_in_episode: int = 5


@struct.dataclass
class CountState:
    pos: jax.Array
    task: jax.Array
    time: jax.Array


class CountEnv(TaskEnv):
    """obs = [pos, task], pos += a, reward = a + task; task ~ U(0, 1); terminates on a > fall_above."""

    @property
    def default_params(self):
        return CountParams()

    def task_shape(self, params):
        return ()

    def sample_task(self, key, params):
        return jax.random.uniform(key, ())

    def reset_to_task(self, key, task, params):
        state = CountState(pos=jnp.zeros(()), task=task, time=jnp.zeros((), jnp.int32))
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.stack([state.pos, state.task])

    def step_env(self, key, state, action, params):
        a = action[0]
        state = CountState(pos=state.pos + a, task=state.task, time=state.time + 1)
        return self.get_obs(state), state, a + state.task, a > params.fall_above, {}

    def is_terminated(self, state, params):
        return jnp.zeros((), bool)

    def action_space(self, params=None):
        return spaces.Box(-10.0, 10.0, (1,), jnp.float32)

    def observation_space(self, params=None):
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)


class DiscreteCountEnv(CountEnv):
    """CountEnv with actions 0, 1, 2 (moving the position by that much)."""

    def step_env(self, key, state, action, params):
        return super().step_env(key, state, jnp.asarray(action, jnp.float32)[None], params)

    def action_space(self, params=None):
        return spaces.Discrete(3)


N, L = 2, 5
T = N * L


def counter_policy(falls=()):
    """Action at step t is 0.1 * (t + 1), or 5 (a fall when fall_above=1) at the steps in `falls`."""

    def policy(count, obs, key):
        action = 0.1 * (count + 1.0)
        for t in falls:
            action = jnp.where(count == t, 5.0, action)
        return action[:, None], count + 1

    return policy


def run(falls=(), num_envs=3):
    env = MetaEpisodeWrapper(CountEnv())
    params = MetaParams(CountParams(fall_above=1.0), N, L)
    carry = jnp.zeros((num_envs,), jnp.int32)
    fn = jax.jit(lambda rk, k: ro.rollout(env, params, counter_policy(falls), carry, rk, k))
    reset_keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    (episodes, stats) = fn(reset_keys, jax.random.PRNGKey(1))
    tasks = jax.vmap(lambda k: env.reset(k, params)[1].task)(reset_keys)
    return episodes, stats, np.asarray(tasks)


def test_entries_and_conventions():
    episodes, stats, tasks = run()
    S = T + 1
    assert episodes["obs"]["obs"].shape == (3, S, 2)
    assert episodes["obs"]["reward"].shape == (3, S) and episodes["obs"]["time"].shape == (3, S)
    assert episodes["action"].shape == (3, S, 1) and episodes["action"].dtype == jnp.float32
    first, terminal = np.asarray(episodes["is_first"]), np.asarray(episodes["is_terminal"])
    assert first[:, 0].all() and not first[:, 1:].any()
    assert not terminal.any()  # the time limit is not a terminal state
    # action shifted: entry t holds a_{t-1} = 0.1 * t, zeros at t = 0
    t = np.arange(S, dtype=np.float32)
    np.testing.assert_allclose(episodes["action"][..., 0], np.tile(0.1 * t, (3, 1)), rtol=1e-6)
    # reward of the transition into o_t, 0 at t = 0
    expected = np.where(t > 0, 0.1 * t, 0.0)[None] + np.where(t > 0, 1.0, 0.0)[None] * tasks[:, None]
    np.testing.assert_allclose(episodes["obs"]["reward"], expected, rtol=1e-5)
    np.testing.assert_allclose(episodes["obs"]["time"], np.tile(t / T, (3, 1)), rtol=1e-6)
    # observations: pos accumulates within an episode, reset to 0 at the episode boundary (t = L)
    pos = np.concatenate([np.cumsum(0.1 * t[: L + 1]), np.cumsum(0.1 * t[L + 1 :])])
    pos[L] = 0.0
    np.testing.assert_allclose(episodes["obs"]["obs"][..., 0], np.tile(pos, (3, 1)), rtol=1e-5, atol=1e-6)
    # the returns are the sums of the stored rewards, split by episode
    np.testing.assert_allclose(stats["return"], expected.sum(1), rtol=1e-5)
    np.testing.assert_allclose(stats["episode_returns"][:, 0], expected[:, 1 : L + 1].sum(1), rtol=1e-5)
    np.testing.assert_allclose(stats["episode_returns"][:, 1], expected[:, L + 1 :].sum(1), rtol=1e-5)
    np.testing.assert_array_equal(stats["steps"], [T] * 3)


def test_policy_sees_is_first_only_at_start_and_record_false():
    """The policy's action encodes the is_first it was given: 1.5 when True, 0.5 otherwise."""
    env = MetaEpisodeWrapper(CountEnv())
    params = MetaParams(CountParams(), N, L)

    def policy(carry, obs, key):
        return (0.5 + obs["is_first"].astype(jnp.float32))[:, None], carry

    rk = jax.random.split(jax.random.PRNGKey(0), 2)
    episodes, stats = jax.jit(lambda rk, k: ro.rollout(env, params, policy, (), rk, k))(rk, jax.random.PRNGKey(0))
    expected = np.r_[0.0, 1.5, np.full(T - 1, 0.5)]
    np.testing.assert_allclose(episodes["action"][..., 0], np.tile(expected, (2, 1)))
    none, stats_norecord = jax.jit(lambda rk, k: ro.rollout(env, params, policy, (), rk, k, record=False))(
        rk, jax.random.PRNGKey(0)
    )
    assert none is None
    for name in stats:
        np.testing.assert_array_equal(stats[name], stats_norecord[name])


def test_termination_in_last_episode_ends_with_terminal_then_padding():
    """Falls at steps 2 and 5: episode 0 ends after 3 steps (t = 3; the next episode starts,
    not terminal); episode 1 falls on its 3rd step (t = 6): the meta-episode ends with a
    terminal at entry 6; entries 7..T are padding (is_first, reward 0, zero action)."""
    episodes, stats, tasks = run(falls=(2, 5))
    end = 6
    t = np.arange(T + 1, dtype=np.float32)
    actions = np.where(np.isin(t, (3, 6)), 5.0, 0.1 * t)
    live = (t > 0) & (t <= end)
    reward = np.where(live, actions + tasks[:, None], 0.0)
    np.testing.assert_allclose(episodes["obs"]["reward"], reward, rtol=1e-5)
    terminal, first = np.asarray(episodes["is_terminal"]), np.asarray(episodes["is_first"])
    np.testing.assert_array_equal(terminal, np.tile(t == end, (3, 1)))
    np.testing.assert_array_equal(first, np.tile((t == 0) | (t > end), (3, 1)))
    np.testing.assert_allclose(episodes["action"][..., 0], np.tile(np.where(t <= end, actions, 0.0), (3, 1)), rtol=1e-6)
    # padding repeats the last observation and time
    last = episodes["obs"]["obs"][:, end : end + 1]
    np.testing.assert_allclose(episodes["obs"]["obs"][:, end:], np.repeat(last, T + 1 - end, 1))
    np.testing.assert_allclose(episodes["obs"]["time"][:, end:], end / T)
    np.testing.assert_array_equal(stats["steps"], [end] * 3)
    np.testing.assert_allclose(stats["return"], reward.sum(1), rtol=1e-5)
    np.testing.assert_allclose(stats["episode_returns"][:, 0], reward[:, 1:4].sum(1), rtol=1e-5)
    np.testing.assert_allclose(stats["episode_returns"][:, 1], reward[:, 4:].sum(1), rtol=1e-5)


def test_fall_in_earlier_episode_shortens_the_meta_episode():
    """A fall at step 2 only: episode 0 ends at t = 3, episode 1 runs its L = 5 steps and the
    meta-episode ends (truncated, not terminal) at t = 8 < T; entries 9, 10 are padding."""
    episodes, stats, tasks = run(falls=(2,))
    end = 8
    t = np.arange(T + 1, dtype=np.float32)
    assert not np.asarray(episodes["is_terminal"]).any()
    np.testing.assert_array_equal(episodes["is_first"], np.tile((t == 0) | (t > end), (3, 1)))
    actions = np.where(t == 3, 5.0, 0.1 * t)
    reward = np.where((t > 0) & (t <= end), actions + tasks[:, None], 0.0)
    np.testing.assert_allclose(episodes["obs"]["reward"], reward, rtol=1e-5)
    np.testing.assert_array_equal(stats["steps"], [end] * 3)
    np.testing.assert_allclose(stats["episode_returns"][:, 1], reward[:, 4:].sum(1), rtol=1e-5)


def test_point_robot_rewards_match_env_and_replay_spec():
    """Random actions on the real point robot: the stored reward at t equals the env's own
    reward for (o_{t-1}, a_{t-1}), recomputed step by step outside the rollout."""
    env, params = envs.make("point_robot", num_episodes=2, episode_length=7)
    space = env.action_space(params)
    rk = jax.random.split(jax.random.PRNGKey(5), 4)
    episodes, stats = jax.jit(lambda rk, k: ro.rollout(env, params, ro.random_policy(space), (), rk, k))(
        rk, jax.random.PRNGKey(6)
    )
    S = 15
    assert episodes["obs"]["obs"].shape == (4, S, 2) and episodes["action"].shape == (4, S, 2)
    actions = np.asarray(episodes["action"])
    assert (np.abs(actions) <= 1).all() and np.abs(actions[:, 1:]).min(axis=(0, 1)).max() > 0
    for i in range(4):
        _, state = env.reset(rk[i], params)
        goal = np.asarray(state.task)
        for t in range(1, S):
            pos = np.asarray(episodes["obs"]["obs"][i, t])
            if t == 7:  # episode boundary: the stored obs is the reset of episode 2
                np.testing.assert_allclose(pos, 0.0)
                prev = np.asarray(episodes["obs"]["obs"][i, t - 1]) + 0.1 * actions[i, t]
            else:
                prev = pos
                moved = np.asarray(episodes["obs"]["obs"][i, t - 1]) + 0.1 * actions[i, t]
                np.testing.assert_allclose(pos, moved, atol=1e-6)
            d = np.linalg.norm(prev - goal)
            np.testing.assert_allclose(episodes["obs"]["reward"][i, t], 1 - d if d <= 0.2 else 0.0, atol=1e-6)
    np.testing.assert_allclose(stats["return"], np.asarray(episodes["obs"]["reward"]).sum(1), rtol=1e-5)
    spec = ro.episode_spec(env, params)
    assert spec["obs"]["obs"].shape == (S, 2) and spec["action"].shape == (S, 2)
    assert jax.tree.structure(spec) == jax.tree.structure(jax.tree.map(lambda x: x[0], episodes))


def test_action_to_model():
    one_hot = ro.action_to_model(jnp.array([[0, 4], [2, 2]]), 5, True)
    np.testing.assert_array_equal(one_hot, np.eye(5)[[[0, 4], [2, 2]]])
    assert one_hot.dtype == jnp.float32
    continuous = ro.action_to_model(jnp.array([[1, -2, 3]], jnp.int32), 3, False)
    np.testing.assert_array_equal(continuous, [[1.0, -2.0, 3.0]])
    assert continuous.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"continuous actions must have shape \[\.\.\., 3\]; got \(4,\)"):
        ro.action_to_model(jnp.zeros(4), 3, False)  # a batch of 4 scalars is not a batch of vectors
    assert ro.action_dim(spaces.Discrete(5)) == 5 and ro.action_dim(spaces.Box(-1, 1, (3,))) == 3


def test_discrete_rollout_stores_one_hot_actions():
    """A Discrete env: the stored actions are the one-hot of the policy's integer actions (zeros at t = 0)."""
    env = MetaEpisodeWrapper(DiscreteCountEnv())
    params = MetaParams(CountParams(), N, L)

    def policy(count, obs, key):
        return count % 3, count + 1

    carry = jnp.zeros((2,), jnp.int32)
    episodes, _ = jax.jit(lambda rk, k: ro.rollout(env, params, policy, carry, rk, k))(
        jax.random.split(jax.random.PRNGKey(0), 2), jax.random.PRNGKey(1))
    t = np.arange(1, T + 1)
    expected = np.concatenate([np.zeros((1, 3)), np.eye(3)[(t - 1) % 3]])
    np.testing.assert_array_equal(episodes["action"], np.stack([expected, expected]))
