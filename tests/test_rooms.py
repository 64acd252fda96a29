"""Rooms-N: layout, walls, corridors, goal order and rewards, observation, against hand truth.

The independent truth is a plain-Python simulator written from the spec's ASCII picture of the
grid (`_free_cells`, `_py_step`), plus hand-computed cases.
"""

import functools
import re

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import envs
from envs.rooms import EnvState, Rooms, grid_width, is_free, normalise, unnormalise

NOOP, UP, RIGHT, DOWN, LEFT = range(5)

# The spec's pictures (rows y = 1, 0, -1); '.' free, '#' wall.
MAPS = {
    1: ["...", "...", "..."],
    2: ["...###...", ".........", "...###..."],
    3: ["...###...###...", "...............", "...###...###..."],
}


@functools.lru_cache(maxsize=None)
def _free_cells(n):
    rows = MAPS[n]
    return {(x, y) for row, y in zip(rows, (1, 0, -1)) for x, c in enumerate(row) if c == "."}


def _py_step(pos, reached, task, action, n):
    """Plain-Python reference of one step: (pos, reached, reward)."""
    free = _free_cells(n)
    a = min(max(int(action), 0), 4)
    dx, dy = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)][a]
    new = (pos[0] + dx, pos[1] + dy)
    if new not in free:
        new = pos
    goals = [tuple(int(v) for v in g) for g in task]
    if reached < n and new == goals[reached]:
        return new, reached + 1, 1.0
    if reached == n and new == goals[-1]:
        return new, reached, 1.0
    return new, reached, -0.1


ENV = Rooms()
PARAMS = {n: ENV.default_params.replace(num_rooms=n) for n in (1, 2, 3)}
STEP = jax.jit(ENV.step_env)
TASK3 = jnp.array([[0, 1], [8, -1], [12, 1]], jnp.int32)


def _state(pos, task=TASK3, reached=0):
    return EnvState(
        pos=jnp.array(pos, jnp.int32),
        goals_reached=jnp.int32(reached),
        task=jnp.asarray(task, jnp.int32),
        time=jnp.int32(0),
    )


def _step(state, action, n=3):
    _, state, reward, terminated, _ = STEP(jax.random.PRNGKey(0), state, action, PARAMS[n])
    assert not bool(terminated)
    return state, float(reward)


def _pos(state):
    return tuple(int(v) for v in state.pos)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_layout_matches_picture(n):
    assert grid_width(n) == len(MAPS[n][0])
    cells = np.array([(x, y) for x in range(-2, grid_width(n) + 2) for y in range(-3, 4)])
    free = np.asarray(is_free(jnp.asarray(cells), n))
    expected = np.array([tuple(c) in _free_cells(n) for c in cells])
    np.testing.assert_array_equal(free, expected)
    assert len(_free_cells(n)) == 9 * n + 3 * (n - 1)


@pytest.mark.parametrize(
    "pos, action, expected",
    [
        ((2, 1), RIGHT, (2, 1)),  # room wall
        ((2, -1), RIGHT, (2, -1)),
        ((2, 0), RIGHT, (3, 0)),  # into the corridor
        ((6, 1), LEFT, (6, 1)),  # wall of room 1, left side
        ((6, 0), LEFT, (5, 0)),
        ((1, 1), UP, (1, 1)),  # grid edge
        ((1, -1), DOWN, (1, -1)),
        ((0, 0), LEFT, (0, 0)),
        ((14, 0), RIGHT, (14, 0)),
        ((14, -1), DOWN, (14, -1)),
        ((1, 0), UP, (1, 1)),  # free moves
        ((1, 0), DOWN, (1, -1)),
        ((1, 0), NOOP, (1, 0)),
    ],
)
def test_walls_and_edges(pos, action, expected):
    state, _ = _step(_state(pos), action)
    assert _pos(state) == expected


@pytest.mark.parametrize("x", [3, 4, 5, 9, 10, 11])
def test_corridor_only_left_right(x):
    for action, expected in [(UP, (x, 0)), (DOWN, (x, 0)), (LEFT, (x - 1, 0)), (RIGHT, (x + 1, 0))]:
        state, _ = _step(_state((x, 0)), action)
        assert _pos(state) == expected


def test_small_layouts_n1_n2():
    # N = 1: a single room, no corridor; right from the middle-right cell is the grid edge.
    state, _ = _step(_state((2, 0), task=[[2, 1]]), RIGHT, n=1)
    assert _pos(state) == (2, 0)
    # N = 2: one corridor at x in 3..5, the last column is x = 8.
    task2 = [[0, 1], [8, -1]]
    state = _state((2, 0), task=task2)
    for expected_x in (3, 4, 5, 6, 7, 8, 8):
        state, _ = _step(state, RIGHT, n=2)
        assert _pos(state) == (expected_x, 0)


def test_goal_order():
    # Standing on goal 1 before goal 0 was reached pays the step reward and counts nothing.
    state, reward = _step(_state((8, 0), reached=0), DOWN)
    assert _pos(state) == (8, -1) and reward == pytest.approx(-0.1)
    assert int(state.goals_reached) == 0
    # The same move after goal 0 pays +1.
    state, reward = _step(_state((8, 0), reached=1), DOWN)
    assert reward == pytest.approx(1.0) and int(state.goals_reached) == 2


def test_goal_before_last_pays_once():
    state = _state((0, 0))
    state, r1 = _step(state, UP)  # onto goal 0
    state, r2 = _step(state, NOOP)  # stay on it
    state, r3 = _step(state, DOWN)  # leave
    state, r4 = _step(state, UP)  # come back
    assert [r1, r2, r3, r4] == pytest.approx([1.0, -0.1, -0.1, -0.1])
    assert int(state.goals_reached) == 1


def test_last_goal_pays_every_step():
    state = _state((12, 0), reached=2)
    rewards = []
    for action in (UP, NOOP, NOOP, DOWN, UP):
        state, r = _step(state, action)
        rewards.append(r)
    assert rewards == pytest.approx([1.0, 1.0, 1.0, -0.1, 1.0])
    assert int(state.goals_reached) == 3


def test_goals_reset_each_episode():
    # Two rooms, two episodes of 3 steps: goal 0 pays again in the second episode.
    env, params = envs.make("rooms", num_rooms=2, num_episodes=2, episode_length=3)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    task = jnp.array([[0, 1], [8, -1]], jnp.int32)
    state = state.replace(task=task, env_state=state.env_state.replace(task=task))
    step = jax.jit(env.step_env)
    rewards, episodes = [], []
    for action in (UP, DOWN, UP, UP, NOOP, NOOP):
        obs, state, reward, _, info = step(jax.random.PRNGKey(1), state, action, params)
        rewards.append(float(reward))
        episodes.append(int(info["reward_episode_index"]))
    assert episodes == [0, 0, 0, 1, 1, 1]
    assert rewards == pytest.approx([1.0, -0.1, -0.1, 1.0, -0.1, -0.1])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_matches_python_simulator(n):
    """200 random steps (vmapped over 4 tasks) equal the plain-Python simulator step by step."""
    params = PARAMS[n]
    key_task, key_act = jax.random.split(jax.random.PRNGKey(n))
    tasks = jax.vmap(ENV.sample_task, in_axes=(0, None))(jax.random.split(key_task, 4), params)
    # Random walks rarely reach goals; bias them right and keep some out-of-range actions.
    actions = jax.random.choice(key_act, jnp.array([-1, 0, 1, 2, 2, 3, 4, 6]), (200, 4))

    def rollout(task, acts):
        _, state = ENV.reset_to_task(jax.random.PRNGKey(0), task, params)

        def body(state, a):
            obs, state, reward, _, _ = ENV.step_env(jax.random.PRNGKey(0), state, a, params)
            return state, (state.pos, state.goals_reached, reward, obs)

        return jax.lax.scan(body, state, acts)[1]

    out = jax.jit(jax.vmap(rollout, in_axes=(0, 1)))(tasks, actions)
    pos, reached, rewards, obs = map(np.asarray, out)
    tasks, actions = np.asarray(tasks), np.asarray(actions)
    for b in range(4):
        p, k = (0, 0), 0
        for t in range(200):
            p, k, r = _py_step(p, k, tasks[b], actions[t, b], n)
            assert (tuple(int(v) for v in pos[b, t]), int(reached[b, t])) == (p, k)
            assert float(rewards[b, t]) == pytest.approx(r)
            assert np.allclose(obs[b, t], [2 * p[0] / (grid_width(n) - 1) - 1, p[1]])


def test_actions_of_any_int_dtype_are_clipped():
    cases = [(7, (0, 0)), (-3, (1, 0)), (2, (2, 0)), (jnp.int32(1), (1, 1)), (np.uint8(3), (1, -1))]
    cases += [(np.int8(-100), (1, 0)), (jnp.int16(4), (0, 0)), (np.int64(3), (1, -1)), (np.uint32(2**31), (0, 0))]
    for action, expected in cases:
        state, _ = _step(_state((1, 0)), action)
        assert _pos(state) == expected, action
        _, state, *_ = ENV.step_env(jax.random.PRNGKey(0), _state((1, 0)), action, PARAMS[3])  # eagerly
        assert _pos(state) == expected, action


WRONG_ACTIONS = {
    "float": (2.0, "shape (), dtype float32"),
    "float32 nan": (jnp.float32(jnp.nan), "shape (), dtype float32"),
    "bool": (True, "shape (), dtype bool"),
    "shape (1,)": (jnp.array([2]), "shape (1,), dtype int32"),
    "shape (2,)": (jnp.array([2, 1]), "shape (2,), dtype int32"),
    "one-hot": (jnp.eye(5)[2], "shape (5,), dtype float32"),
}


@pytest.mark.parametrize("action, got", WRONG_ACTIONS.values(), ids=WRONG_ACTIONS.keys())
def test_wrong_action_shape_or_dtype_is_refused(action, got, assert_action_refused):
    """The raw env (eager, jitted, gymnax's step) and the wrapped env refuse it, naming int scalars."""
    message = rf"Rooms: invalid action \({re.escape(got)}\); expected an integer scalar of shape \(\)"
    meta, params = envs.make("rooms_meta", episode_length=3)
    key = jax.random.PRNGKey(0)
    _, meta_state = meta.reset(key, params)
    assert_action_refused(ENV, _state((1, 0)), PARAMS[3], meta, meta_state, params, action, message, STEP, key)


def test_right_actions_work_under_jit_and_vmap():
    # vmap sees one example's action: [5] int actions are 5 scalars, one per state.
    vstep = jax.jit(jax.vmap(ENV.step_env, in_axes=(None, None, 0, None)))
    _, states, rewards, _, _ = vstep(jax.random.PRNGKey(0), _state((1, 0)), jnp.arange(5), PARAMS[3])
    assert [_pos(jax.tree.map(lambda x: x[i], states)) for i in range(5)] == [(1, 0), (1, 1), (2, 0), (1, -1), (0, 0)]
    np.testing.assert_allclose(rewards, -0.1)
    with pytest.raises(ValueError, match=r"shape \(\), dtype float32\); expected an integer scalar"):
        vstep(jax.random.PRNGKey(0), _state((1, 0)), jnp.arange(5.0), PARAMS[3])
    with pytest.raises(ValueError, match=r"shape \(5,\), dtype int32\); expected an integer scalar"):
        vstep(jax.random.PRNGKey(0), _state((1, 0)), jnp.zeros((3, 5), jnp.int32), PARAMS[3])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_observation_normalised_and_centred(n):
    cells = jnp.array(sorted(_free_cells(n)), jnp.int32)
    obs = np.asarray(normalise(cells, n))
    assert obs.dtype == np.float32
    assert obs.min() == -1.0 and obs.max() == 1.0
    assert obs[:, 0].min() == -1.0 and obs[:, 0].max() == 1.0
    assert sorted(set(obs[:, 1].tolist())) == [-1.0, 0.0, 1.0]
    # Centred: mirror-image cells have exactly opposite x; the middle column is 0.
    mirrored = np.asarray(normalise(jnp.stack([grid_width(n) - 1 - cells[:, 0], cells[:, 1]], -1), n))
    np.testing.assert_array_equal(mirrored[:, 0], -obs[:, 0])
    assert 0.0 in obs[:, 0].tolist()
    np.testing.assert_array_equal(np.asarray(unnormalise(jnp.asarray(obs), n)), np.asarray(cells))
    space = ENV.observation_space(PARAMS[n])
    assert bool(space.contains(jnp.asarray(obs)))


def test_reset_and_task_sampling():
    params = PARAMS[3]
    obs, state = ENV.reset_to_task(jax.random.PRNGKey(0), TASK3, params)
    np.testing.assert_allclose(np.asarray(obs), [-1.0, 0.0])
    assert _pos(state) == (0, 0) and int(state.goals_reached) == 0 and int(state.time) == 0
    keys = jax.random.split(jax.random.PRNGKey(1), 800)
    tasks = np.asarray(jax.vmap(ENV.sample_task, in_axes=(0, None))(keys, params))
    assert tasks.shape == (800, 3, 2) and tasks.dtype == np.int32
    assert ENV.task_shape(params) == (3, 2)
    for room in range(3):
        corners = [(6 * room + dx, dy) for dx in (0, 2) for dy in (-1, 1)]
        counts = {c: 0 for c in corners}
        for g in tasks[:, room]:
            counts[tuple(int(v) for v in g)] += 1  # KeyError if not a corner of this room
        # Uniform over 4 corners: 200 expected each; 5 standard deviations is ~61.
        assert all(abs(c - 200) < 61 for c in counts.values()), counts


def test_spaces_and_registry():
    env, params = envs.make("rooms_meta")
    assert (params.num_episodes, params.episode_length, params.env_params.num_rooms) == (3, 100, 3)
    env1, params1 = envs.make("rooms")
    assert (params1.num_episodes, params1.episode_length) == (1, 100)
    space = env.action_space(params)
    assert space.n == 5 and env.num_actions == 5
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    assert obs["obs"].shape == (2,) and state.task.shape == (3, 2)
    _, params5 = envs.make("rooms", num_rooms=5)
    _, state5 = env.reset(jax.random.PRNGKey(0), params5)
    assert state5.task.shape == (5, 2)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_rooms": 0}, "num_rooms"),
        ({"num_rooms": 2.0}, "num_rooms"),
        ({"step_reward": float("nan")}, "step_reward"),
        ({"goal_reward": "one"}, "goal_reward"),
        ({"max_steps": 3}, "unknown"),
    ],
)
def test_bad_params(overrides, message):
    with pytest.raises(ValueError, match=message):
        envs.make("rooms", **overrides)


def test_task_sampling_many_rooms():
    # 20 rooms use two random words (16 rooms per word): every goal is a corner of its room, and
    # rooms 0 and 16 (bit 0 of different words) are not copies of each other.
    params = ENV.default_params.replace(num_rooms=20)
    keys = jax.random.split(jax.random.PRNGKey(2), 800)
    tasks = np.asarray(jax.vmap(ENV.sample_task, in_axes=(0, None))(keys, params))
    room_left = 6 * np.arange(20)
    assert np.isin(tasks[..., 0] - room_left, [0, 2]).all() and np.isin(tasks[..., 1], [-1, 1]).all()
    corner = (tasks[..., 0] - room_left) // 2 + 2 * (tasks[..., 1] > 0)  # [800, 20] in 0..3
    for room in (0, 15, 16, 19):
        counts = np.bincount(corner[:, room], minlength=4)
        assert np.all(np.abs(counts - 200) < 61), (room, counts)
    assert np.mean(corner[:, 0] == corner[:, 16]) < 0.4  # ~0.25 if independent


def test_eager_equals_jit():
    params = PARAMS[3]
    for pos, reached, action in [((0, 0), 0, UP), ((8, 0), 1, DOWN), ((12, 1), 3, NOOP), ((4, 0), 0, UP)]:
        state = _state(pos, reached=reached)
        eager = ENV.step_env(jax.random.PRNGKey(0), state, action, params)
        jitted = STEP(jax.random.PRNGKey(0), state, action, params)
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
