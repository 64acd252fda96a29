"""The meta-episode wrapper (`envs.meta`) and the registry (`envs.make`), on point_robot and escape_room."""

import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import spaces
from gymnax.wrappers.purerl import LogWrapper

import envs
from envs.base import TaskEnv
from envs.escape_room import move
from envs.meta import MetaEpisodeWrapper, MetaParams

PR, PR_P = envs.make("point_robot", num_episodes=3, episode_length=5)  # T = 15
ER, ER_P = envs.make("escape_room", num_episodes=2, episode_length=4)  # T = 8


def rollout(env, params, key, actions):
    """gymnax `step` (auto-reset) over actions [S, 2]. Returns (obs0, state0, stacked step outputs)."""
    key_reset, key_steps = jax.random.split(key)
    obs0, state0 = env.reset(key_reset, params)

    def body(state, xs):
        key, action = xs
        obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
        return state, (obs, state, reward, terminated, truncated, info)

    _, out = jax.lax.scan(body, state0, (jax.random.split(key_steps, actions.shape[0]), actions))
    return obs0, state0, out


ROLLOUT = jax.jit(rollout, static_argnums=0)


def to_np(tree):
    return jax.tree.map(np.asarray, tree)


def step_keys(key, num_steps):
    """The keys `rollout` gives its steps."""
    return jax.random.split(jax.random.split(key)[1], num_steps)


def auto_reset_key(step_key):
    """The key of the inner `sample_task` when gymnax's `step` auto-resets the wrapper: gymnax's
    step splits (step, reset), the wrapper's reset_env splits the reset key into (task, start)."""
    return jax.random.split(jax.random.split(step_key)[1])[0]


def escape_room_start(key):
    """The escape room's start drawn from `key` by hand: rho (cos phi, sin phi), phi ~ U(-pi, pi),
    rho ~ U(0, 1)."""
    key_angle, key_radius = jax.random.split(key)
    phi = float(jax.random.uniform(key_angle, (), jnp.float32, -np.pi, np.pi))
    rho = float(jax.random.uniform(key_radius, (), jnp.float32, 0.0, 1.0))
    return rho * np.array([np.cos(phi), np.sin(phi)])


@pytest.fixture(scope="module")
def pr_run():
    """Point robot, 2 T + 3 steps of action (1, 0.5)."""
    actions = jnp.tile(jnp.array([1.0, 0.5]), (2 * 15 + 3, 1))
    return to_np(ROLLOUT(PR, PR_P, jax.random.key(0), actions))


@pytest.fixture(scope="module")
def er_run():
    """Escape room, 2 T + 2 steps of small random actions."""
    actions = 0.3 * jax.random.uniform(jax.random.key(1), (2 * 8 + 2, 2), minval=-1, maxval=1)
    return np.asarray(actions), to_np(ROLLOUT(ER, ER_P, jax.random.key(2), actions))


def test_time_runs_from_0_to_1_in_steps_of_1_over_T(pr_run):
    obs0, _, (obs, _, _, _, _, info) = pr_run
    T = 15
    k = np.arange(1, 2 * T + 4)
    assert obs0["time"] == 0.0 and obs0["reward"] == 0.0
    np.testing.assert_allclose(obs["time"], (k % T) / T, atol=1e-7)  # 0 again after the auto-reset
    final_time = info["final_observation"]["time"]
    np.testing.assert_allclose(final_time[[T - 1, 2 * T - 1]], 1.0)  # the last observation: t = T
    # Without the auto-reset (step_env), the time reaches exactly 1.
    obs, state = PR.reset(jax.random.key(0), PR_P)
    for _ in range(T):
        obs, state, *_ = PR.step_env(jax.random.key(1), state, jnp.zeros(2), PR_P)
    assert float(obs["time"]) == 1.0 and bool(PR.is_truncated(state, PR_P))


def test_episode_boundaries_and_done(pr_run):
    obs0, state0, (obs, states, reward, terminated, truncated, info) = pr_run
    T, L = 15, 5
    k = np.arange(1, 2 * T + 4)
    assert not terminated.any()
    np.testing.assert_array_equal(truncated, k % T == 0)  # done after exactly N L steps
    np.testing.assert_array_equal(info["episode_index"], (k % T) // L)
    np.testing.assert_array_equal(info["episode_start"], k % L == 0)
    np.testing.assert_array_equal(info["episode_end"], k % L == 0)
    np.testing.assert_array_equal(info["reward_episode_index"], ((k - 1) % T) // L)
    # The observation at a boundary is the next episode's start (the origin), one step later the
    # robot has moved from there.
    pos = obs["obs"]
    np.testing.assert_allclose(pos[k % L == 0], 0.0)
    np.testing.assert_allclose(pos[k % L == 1], [[0.1, 0.05]] * int(np.sum(k % L == 1)), atol=1e-7)
    np.testing.assert_allclose(pos[3], [0.4, 0.2], atol=1e-6)  # k = 4: last position of episode 0
    np.testing.assert_allclose(info["final_observation"]["obs"][4], 0.0)  # k = 5: not the episode's last


def test_task_kept_across_episodes_then_redrawn(pr_run):
    obs0, state0, (obs, states, *_rest, info) = pr_run
    T = 15
    task = state0.task
    np.testing.assert_array_equal(info["task"][:T], np.tile(task, (T, 1)))  # all of meta-episode 1
    np.testing.assert_array_equal(states.task[: T - 1], np.tile(task, (T - 1, 1)))
    new_task = states.task[T - 1]  # the auto-reset drew a new task from the step's key ...
    key_task = auto_reset_key(step_keys(jax.random.key(0), 2 * T + 3)[T - 1])
    angle = jax.random.uniform(key_task, (), jnp.float32, 0, np.pi)
    np.testing.assert_allclose(new_task, [np.cos(angle), np.sin(angle)], atol=1e-6)
    np.testing.assert_array_equal(info["task"][T : 2 * T], np.tile(new_task, (T, 1)))  # ... kept for T steps
    np.testing.assert_allclose(np.linalg.norm(states.task, axis=1), 1.0, atol=1e-6)
    assert int(states.time[T - 1]) == 0 and int(states.episode_index[T - 1]) == 0


def test_per_episode_returns_recoverable():
    env, params = envs.make("point_robot", num_episodes=3, episode_length=12)
    key = jax.random.key(4)
    _, state0 = env.reset(jax.random.split(key)[0], params)
    goal = np.asarray(state0.task, np.float64)
    direction = goal / np.max(np.abs(goal))  # full speed straight at the goal (and past it)
    actions = np.tile(direction, (36, 1)).astype(np.float32)
    _, _, (obs, _, reward, _, truncated, info) = to_np(ROLLOUT(env, params, key, jnp.asarray(actions)))
    # Independent: every episode starts at the origin and takes the same 12 moves.
    positions = 0.1 * np.arange(1, 13)[:, None] * direction[None].astype(np.float32)
    d = np.linalg.norm(positions - goal, axis=1)
    per_episode = np.sum(np.where(d <= 0.2, 1.0 - d, 0.0))
    assert per_episode > 2.0  # the test is not vacuous
    for i in range(3):
        got = reward[info["reward_episode_index"] == i].sum()
        assert got == pytest.approx(per_episode, abs=1e-4), i
    assert reward.sum() == pytest.approx(3 * per_episode, abs=1e-4) and truncated[-1]
    np.testing.assert_allclose(obs["reward"], reward)  # the observation carries the reward


def test_escape_room_random_start_is_observed(er_run):
    actions, (obs0, state0, (obs, states, reward, _, _, info)) = er_run
    L, T = 4, 8
    pos = obs["obs"]
    task = state0.task
    starts = [obs0["obs"], pos[L - 1]]  # reset, and the boundary observation after L steps
    assert info["episode_start"][L - 1] and info["episode_index"][L - 1] == 1
    # The starts drawn by hand: at the reset from its key, at the boundary from the key of the
    # wrapper's step_env (gymnax's step key, split (step, reset); the wrapper splits again).
    key_reset = jax.random.split(jax.random.key(2))[0]
    np.testing.assert_allclose(starts[0], escape_room_start(jax.random.split(key_reset)[1]), atol=1e-6)
    boundary_key = jax.random.split(jax.random.split(step_keys(jax.random.key(2), 2 * T + 2)[L - 1])[0])[1]
    np.testing.assert_allclose(starts[1], escape_room_start(boundary_key), atol=1e-6)
    # The boundary observation is the true state: the next move starts from it ...
    next_pos = np.asarray(move(jnp.asarray(pos[L - 1]), jnp.asarray(actions[L]), task, ER_P.env_params))
    np.testing.assert_allclose(pos[L], next_pos, atol=1e-7)
    # ... and not the position the last move of episode 0 led to.
    last = np.asarray(move(jnp.asarray(pos[L - 2]), jnp.asarray(actions[L - 1]), task, ER_P.env_params))
    np.testing.assert_allclose(info["final_observation"]["obs"][L - 1], pos[L - 1])
    assert not np.allclose(last, pos[L - 1])
    np.testing.assert_allclose(reward[L - 1], float(np.linalg.norm(last) > 1.0))  # its reward is episode 0's
    np.testing.assert_array_equal(info["task"][:T], np.full(T, task))


def test_determinism_and_keys():
    actions = jnp.tile(jnp.array([0.3, -0.2]), (20, 1))
    a = to_np(ROLLOUT(ER, ER_P, jax.random.key(9), actions))
    b = to_np(ROLLOUT(ER, ER_P, jax.random.key(9), actions))
    c = to_np(ROLLOUT(ER, ER_P, jax.random.key(10), actions))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # The key sets the start (by hand from each key: the reset key, then the wrapper's split).
    for key, run in ((9, a), (10, c)):
        start = escape_room_start(jax.random.split(jax.random.split(jax.random.key(key))[0])[1])
        np.testing.assert_allclose(run[0]["obs"], start, atol=1e-6)


@pytest.mark.parametrize("name", ["point_robot_wind", "escape_room"])
def test_jit_equals_no_jit(name):
    env, params = envs.make(name, num_episodes=2, episode_length=3)
    actions = jax.random.uniform(jax.random.key(3), (7, 2), minval=-1.5, maxval=1.5)
    jitted = to_np(ROLLOUT(env, params, jax.random.key(5), actions))
    with jax.disable_jit():
        eager = to_np(rollout(env, params, jax.random.key(5), actions))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), jitted, eager)


def test_vmap_equals_python_loop():
    keys = jax.random.split(jax.random.key(6), 3)
    actions = jax.random.uniform(jax.random.key(7), (3, 10, 2), minval=-1, maxval=1)
    batched = to_np(jax.jit(jax.vmap(rollout, in_axes=(None, None, 0, 0)), static_argnums=0)(ER, ER_P, keys, actions))
    for i in range(3):
        single = to_np(ROLLOUT(ER, ER_P, keys[i], actions[i]))
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x[i], y, rtol=1e-6, atol=1e-6), batched, single)


@pytest.mark.parametrize("env, params", [(PR, PR_P), (ER, ER_P)], ids=["point_robot", "escape_room"])
def test_bad_action_values_act_as_their_clipped_values_and_observations_stay_in_space(env, params):
    bad = jnp.array(
        [[jnp.nan, 0.0], [jnp.inf, -jnp.inf], [1e30, -1e30], [-jnp.inf, jnp.nan], [0.5, 2.0], [-1e-30, 1e38]]
    )
    actions = jnp.tile(bad, (5, 1))
    clean = np.clip(np.nan_to_num(np.asarray(actions)), -1.0, 1.0)  # NaN -> 0, then the clip
    run = to_np(ROLLOUT(env, params, jax.random.key(8), actions))
    jax.tree.map(np.testing.assert_array_equal, run, to_np(ROLLOUT(env, params, jax.random.key(8), jnp.asarray(clean))))
    obs0, state0, (obs, states, reward, *_rest) = run
    if env is PR:  # by hand: each episode of L = 5 starts at the origin and moves 0.1 a per step
        L = 5
        expected = [np.zeros(2) if k % L == 0 else 0.1 * clean[(k - 1) // L * L : k].sum(0) for k in range(1, 31)]
        np.testing.assert_allclose(obs["obs"], expected, atol=1e-6)
        np.testing.assert_array_equal(reward, 0.0)  # never within 0.2 of a goal on the unit circle
    space = env.observation_space(params)
    assert set(space.spaces) == {"obs", "reward", "time"}
    for i in range(actions.shape[0]):
        one = jax.tree.map(lambda x: x[i], obs)
        # gymnax's Dict.contains reads entries as attributes, so give it a namespace.
        assert bool(space.contains(types.SimpleNamespace(**one)))
        for key, sub in space.spaces.items():
            assert bool(sub.contains(one[key])), (i, key)
    assert bool(space.contains(types.SimpleNamespace(**obs0)))
    assert not bool(space.spaces["time"].contains(jnp.float32(1.5)))
    action_space = env.action_space(params)
    assert action_space.shape == (2,) and bool(action_space.contains(action_space.sample(jax.random.key(0))))


def test_make_errors():
    with pytest.raises(ValueError, match="unknown env 'point_robo'.*point_robot.*escape_room"):
        envs.make("point_robo")
    for override in ({"num_episodes": 0}, {"episode_length": 0}, {"num_episodes": 1.5}, {"num_episodes": True}):
        with pytest.raises(ValueError, match="allowed: an integer >= 1"):
            envs.make("escape_room", **override)
    with pytest.raises(ValueError, match="goal_disk_radius.*allowed"):
        envs.make("point_robot", goal_disk_radius=-0.2)
    with pytest.raises(ValueError, match="wall_radius.*allowed"):
        envs.make("escape_room", wall_radius=-1.0)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['door_width'\].*door_half_width"):
        envs.make("escape_room", door_width=0.3)
    with pytest.raises(ValueError, match="unknown parameter.*wind_std"):
        envs.make("point_robot", wnid_std=0.3)
    env, params = envs.make("point_robot", num_episodes=2, episode_length=7, wind_std=0.1, goal_disk_radius=0.3)
    assert (params.num_episodes, params.episode_length, params.max_steps_in_episode) == (2, 7, 14)
    assert params.env_params.wind_std == 0.1 and params.env_params.max_steps_in_episode == 7
    assert env.task_shape(params) == (2,) and ER.task_shape(ER_P) == ()
    inner, inner_params = envs.make_inner("escape_room")
    assert inner.name == "EscapeRoom" and inner_params.max_steps_in_episode == 60


def test_gymnax_log_wrapper():
    env = LogWrapper(ER)
    T = 8

    @jax.jit
    def run(key, actions):
        obs, state = env.reset(key, ER_P)

        def body(state, xs):
            key, action = xs
            obs, state, reward, terminated, truncated, info = env.step(key, state, action, ER_P)
            return state, (reward, truncated, info["returned_episode"], info["returned_episode_returns"])

        return jax.lax.scan(body, state, (jax.random.split(key, actions.shape[0]), actions))[1]

    # Push outwards from wherever the agent is: some steps outside pay 1.
    actions = jnp.tile(jnp.array([1.0, 1.0]), (T + 3, 1))
    reward, truncated, returned, returns = to_np(run(jax.random.key(11), actions))
    np.testing.assert_array_equal(returned, np.arange(1, T + 4) % T == 0)
    np.testing.assert_array_equal(truncated, returned)
    assert returns[T - 1] == pytest.approx(reward[:T].sum())


# ----------------------------------------------------------------------------- inner terminations


@struct.dataclass
class _CountState:
    count: jax.Array
    task: jax.Array
    time: jax.Array


@struct.dataclass
class _CountParams:
    max_steps_in_episode: int = 4


class _Count(TaskEnv):
    """A toy TaskEnv: observes its step count, pays 1 per step, terminates when the action is 1."""

    default_params = _CountParams()

    def sample_task(self, key, params):
        return jax.random.uniform(key)

    def task_shape(self, params):
        return ()

    def reset_to_task(self, key, task, params):
        state = _CountState(jnp.zeros((), jnp.int32), task, jnp.zeros((), jnp.int32))
        return state.count, state

    def step_env(self, key, state, action, params):
        state = _CountState(state.count + 1, state.task, state.time + 1)
        return state.count, state, jnp.float32(1.0), action == 1, {}

    def is_terminated(self, state, params):
        return jnp.zeros((), bool)

    def action_space(self, params=None):
        return spaces.Discrete(2)


def test_inner_terminations_end_episodes_early():
    env, params = MetaEpisodeWrapper(_Count()), MetaParams(_CountParams(), num_episodes=2, episode_length=4)
    # Episode 0 falls at its 2nd step, episode 1 runs its 4 steps: the meta-episode ends after 6
    # steps on its time limit; the next one falls at the first step of its 2nd episode: terminated.
    actions = jnp.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    run = to_np(ROLLOUT(env, params, jax.random.key(0), actions))
    _, state0, (obs, states, reward, terminated, truncated, info) = run
    np.testing.assert_array_equal(obs["obs"], [1, 0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1])
    np.testing.assert_array_equal(truncated, np.arange(12) == 5)
    np.testing.assert_array_equal(terminated, np.arange(12) == 10)
    np.testing.assert_array_equal(info["inner_terminated"], np.isin(np.arange(12), [1, 10]))
    np.testing.assert_array_equal(info["episode_index"], [0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(info["reward_episode_index"], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(obs["time"][:5], np.arange(1, 6) / 8)  # t / T with T = N L = 8
    assert info["final_observation"]["time"][5] == 0.75 and obs["time"][5] == 0.0  # ended at t = 6 < T
    assert info["task"][5] == state0.task  # the same task until the end, then a new one from the key
    assert states.task[5] == jax.random.uniform(auto_reset_key(step_keys(jax.random.key(0), 12)[5]))


def test_the_wrapper_refuses_wrong_actions_even_if_the_inner_env_does_not():
    """`_Count` does not check its actions; the wrapper checks them against its Discrete(2) space."""
    env, params = MetaEpisodeWrapper(_Count()), MetaParams(_CountParams(), num_episodes=2, episode_length=4)
    _, state = env.reset(jax.random.key(0), params)
    logged = LogWrapper(env)
    _, log_state = logged.reset(jax.random.key(0), params)
    for action, got in ((1.0, "shape (), dtype float32"), (jnp.array([0, 1]), "shape (2,), dtype int32")):
        message = rf"_Count: invalid action \({re.escape(got)}\); expected an integer scalar of shape \(\)"
        for step, s in ((env.step_env, state), (env.step, state), (logged.step, log_state)):
            with pytest.raises(ValueError, match=message):
                step(jax.random.key(1), s, action, params)
    # Integer scalars of any int dtype pass (action 1 terminates the toy's episode).
    for action in (1, np.uint8(1), jnp.int16(1)):
        _, _, reward, _, info = env.step_env(jax.random.key(1), state, action, params)
        assert float(reward) == 1.0 and bool(info["inner_terminated"])
