"""Reference policies and the `evaluate_policy` runner.

Truth: hand-computed oracle returns on fixed tasks, a hand-written Python rollout loop, a toy
env with known rewards and terminations, and the determinism of the rooms grid (the Bayes
reference, once it knows the goals, must match the oracle exactly).
"""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

import envs
from envs.base import TaskEnv
from envs.meta import MetaEpisodeWrapper, MetaParams
from envs.reference import POLICY_MODULES, ReferencePolicy, evaluate_policy, get_policy, random_policy
from envs.reference.rooms import path_length, step_towards

EVALUATE = jax.jit(evaluate_policy, static_argnums=(0, 2, 4))
NUM_TASKS = 32
CELLS3 = [(x, y) for x in range(15) for y in (-1, 0, 1) if x % 6 < 3 or y == 0]  # the N = 3 grid


@functools.lru_cache(maxsize=None)
def _bfs(src):
    """Shortest-path lengths from cell `src` to every cell of the N = 3 grid (computed independently)."""
    free = set(CELLS3)
    dist, frontier = {src: 0}, [src]
    while frontier:
        nxt = []
        for x, y in frontier:
            for dx, dy in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                c = (x + dx, y + dy)
                if c in free and c not in dist:
                    dist[c] = dist[(x, y)] + 1
                    nxt.append(c)
        frontier = nxt
    return dist


@pytest.fixture(scope="module")
def rooms_meta():
    env, params = envs.make("rooms_meta")
    out = {}
    for name in ("random", "oracle", "bayes"):
        policy = get_policy("rooms_meta", name, env, params)
        out[name] = jax.tree.map(np.asarray, EVALUATE(env, params, policy, jax.random.PRNGKey(0), NUM_TASKS))
    return env, params, out


def _run_on_task(env, params, policy, task, key=jax.random.PRNGKey(0)):
    """Python loop over one meta-episode on a given task; returns per-episode returns (float64)."""
    obs, state = env.reset(key, params)
    task = jnp.asarray(task, state.task.dtype)
    state = state.replace(task=task, env_state=state.env_state.replace(task=task))
    pstate = policy.init(key, params)
    step = jax.jit(env.step_env)
    act = jax.jit(policy.act)
    returns = np.zeros(params.num_episodes)
    for _ in range(params.num_episodes * params.episode_length):
        action, pstate = act(key, pstate, obs, state.task, params)
        obs, state, reward, _, info = step(key, state, action, params)
        returns[int(info["reward_episode_index"])] += float(reward)
    return returns


def test_oracle_hand_computed():
    # Goals (0,-1), (6,1), (12,-1): shortest path 1 + (1 + 6 + 1) + (1 + 6 + 1) = 17 steps, goals
    # hit at steps 1, 9, 17; then 83 more steps on the last goal.
    env, params = envs.make("rooms_meta")
    oracle = get_policy("rooms_meta", "oracle", env, params)
    returns = _run_on_task(env, params, oracle, [[0, -1], [6, 1], [12, -1]])
    expected = 14 * -0.1 + 3 * 1.0 + 83 * 1.0
    np.testing.assert_allclose(returns, [expected] * 3, atol=1e-4)


def test_bayes_hand_computed():
    # One room, goal at the 4th corner searched: (0,-1) t=1, (2,-1) t=3, (2,1) t=5, (0,1) t=7.
    env, params = envs.make("rooms", num_rooms=1, num_episodes=2, episode_length=12)
    bayes = get_policy("rooms", "bayes", env, params)
    returns = _run_on_task(env, params, bayes, [[0, 1]])
    # Episode 1: 6 steps at -0.1, then 6 steps (t = 7..12) on the goal; episode 2: 1 step to the
    # remembered goal, then 11 more on it.
    np.testing.assert_allclose(returns, [6 * -0.1 + 6.0, 12.0], atol=1e-4)


def test_oracle_every_task_bfs(rooms_meta):
    """On each of the 32 tasks, every oracle episode returns what the BFS shortest path through the goals
    gives: D steps to the last goal (3 of them paying +1), then L - D steps on it."""
    _, _, out = rooms_meta
    for task, episodes in zip(out["oracle"]["task"], out["oracle"]["episode_returns"]):
        stops = [(0, 0)] + [tuple(int(v) for v in g) for g in task]
        d = sum(_bfs(a)[b] for a, b in zip(stops[:-1], stops[1:]))
        np.testing.assert_allclose(episodes, [(d - 3) * -0.1 + 3 + (100 - d)] * 3, atol=1e-4)


def test_ordering_oracle_bayes_random(rooms_meta):
    _, _, out = rooms_meta
    assert np.all(out["oracle"]["return"] >= out["bayes"]["return"] - 1e-4)
    assert out["oracle"]["return"].mean() > out["bayes"]["return"].mean() > out["random"]["return"].mean()


def test_bayes_matches_oracle_after_first_episode(rooms_meta):
    _, _, out = rooms_meta
    bayes, oracle = out["bayes"]["episode_returns"], out["oracle"]["episode_returns"]
    np.testing.assert_allclose(bayes[:, 1:], oracle[:, 1:], atol=1e-4)
    # ... and the first episode is strictly worse on some task (the search costs steps).
    assert np.any(out["bayes"]["episode_returns"][:, 0] < out["oracle"]["episode_returns"][:, 0] - 0.5)


def test_episode_returns_sum_to_total(rooms_meta):
    _, params, out = rooms_meta
    for name, result in out.items():
        assert result["return"].shape == (NUM_TASKS,)
        assert result["episode_returns"].shape == (NUM_TASKS, params.num_episodes)
        np.testing.assert_allclose(result["episode_returns"].sum(-1), result["return"], atol=1e-3, err_msg=name)


def test_bayes_ignores_task(rooms_meta):
    env, params, out = rooms_meta
    bayes = get_policy("rooms_meta", "bayes", env, params)
    blind = ReferencePolicy(bayes.init, lambda k, p, o, task, prm: bayes.act(k, p, o, jnp.zeros_like(task) - 7, prm))
    result = EVALUATE(env, params, blind, jax.random.PRNGKey(0), NUM_TASKS)
    np.testing.assert_array_equal(np.asarray(result["episode_returns"]), out["bayes"]["episode_returns"])


def test_runner_matches_python_loop():
    """The jitted, vmapped runner equals a hand-written loop with the same key splits (random policy)."""
    env, params = envs.make("rooms", num_rooms=2, num_episodes=2, episode_length=15)
    policy = get_policy("rooms", "random", env, params)
    key = jax.random.PRNGKey(3)
    result = EVALUATE(env, params, policy, key, 2)
    act, step = jax.jit(policy.act), jax.jit(env.step_env)
    for i, task_key in enumerate(jax.random.split(key, 2)):
        key_reset, key_policy, key_steps = jax.random.split(task_key, 3)
        obs, state = env.reset(key_reset, params)
        pstate = policy.init(key_policy, params)
        returns = np.zeros(2)
        for step_key in jax.random.split(key_steps, 30):
            key_act, key_env = jax.random.split(step_key)
            action, pstate = act(key_act, pstate, obs, state.task, params)
            obs, state, reward, _, info = step(key_env, state, action, params)
            returns[int(info["reward_episode_index"])] += float(reward)
        np.testing.assert_allclose(np.asarray(result["episode_returns"][i]), returns, atol=1e-5)
        np.testing.assert_allclose(float(result["return"][i]), returns.sum(), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(result["task"][i]), np.asarray(state.task))


# A toy env: reward = the step within the episode (1, 2, ...); terminates after `stop` steps or
# on an action whose first entry is > 0.5.
@struct.dataclass
class _ToyState:
    task: jax.Array
    time: jax.Array


@struct.dataclass
class _ToyParams:
    stop: int = 3
    max_steps_in_episode: int = 5


class _Toy(TaskEnv):
    @property
    def default_params(self):
        return _ToyParams()

    def sample_task(self, key, params):
        return jnp.zeros((1,), jnp.float32)

    def task_shape(self, params):
        return (1,)

    def reset_to_task(self, key, task, params):
        return jnp.zeros((1,)), _ToyState(task, jnp.int32(0))

    def step_env(self, key, state, action, params):
        state = _ToyState(state.task, state.time + 1)
        terminated = (state.time >= params.stop) | (jnp.asarray(action)[0] > 0.5)
        return jnp.zeros((1,)), state, state.time.astype(jnp.float32), terminated, {}

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def observation_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


def test_runner_masks_steps_after_termination():
    # N = 2 episodes of L = 5 that both terminate after 3 steps: rewards 1+2+3 per episode; the
    # meta-episode ends at t = 6 although the scan runs T = 10 steps.
    env = MetaEpisodeWrapper(_Toy())
    params = MetaParams(_ToyParams(), num_episodes=2, episode_length=5)
    policy = ReferencePolicy(lambda key, params: (), lambda k, p, o, task, prm: (jnp.zeros(2), p))
    result = EVALUATE(env, params, policy, jax.random.PRNGKey(0), 3)
    np.testing.assert_allclose(np.asarray(result["episode_returns"]), [[6.0, 6.0]] * 3)
    np.testing.assert_allclose(np.asarray(result["return"]), [12.0] * 3)


def test_runner_masks_steps_after_early_truncation():
    # The toy terminates when the action's first entry is > 0.5; the policy sends that on the
    # 3rd step only. Episode 1: rewards 1+2+3 (terminated); episode 2 runs its L = 5 steps
    # (1+...+5) and the meta-episode ends at t = 8 < T = 10; the last 2 scan steps are masked.
    env = MetaEpisodeWrapper(_Toy())
    params = MetaParams(_ToyParams(stop=100), num_episodes=2, episode_length=5)

    def act(key, count, obs, task, params):
        return jnp.where(count == 2, 1.0, 0.0) * jnp.ones(2), count + 1

    policy = ReferencePolicy(lambda key, params: jnp.int32(0), act)
    result = EVALUATE(env, params, policy, jax.random.PRNGKey(0), 2)
    np.testing.assert_allclose(np.asarray(result["episode_returns"]), [[6.0, 15.0]] * 2)
    np.testing.assert_allclose(np.asarray(result["return"]), [21.0] * 2)


def test_random_policy_spaces():
    env, params = envs.make("rooms")
    policy = random_policy(env, params)
    keys = jax.random.split(jax.random.PRNGKey(0), 500)
    actions = np.asarray(jax.vmap(lambda k: policy.act(k, (), None, None, params)[0])(keys))
    assert actions.dtype == np.int32 and set(actions.tolist()) == {0, 1, 2, 3, 4}
    toy = MetaEpisodeWrapper(_Toy())
    box = random_policy(toy, MetaParams(_ToyParams()))
    actions = np.asarray(jax.vmap(lambda k: box.act(k, (), None, None, None)[0])(keys))
    assert actions.shape == (500, 2) and actions.min() >= -1.0 and actions.max() <= 1.0
    assert actions.min() < -0.9 and actions.max() > 0.9


def test_get_policy_errors(monkeypatch):
    env, params = envs.make("rooms")
    with pytest.raises(ValueError, match="allowed: random, oracle, bayes"):
        get_policy("rooms", "greedy", env, params)
    with pytest.raises(ValueError, match="unknown env"):
        get_policy("maze", "random", env, params)
    monkeypatch.setitem(POLICY_MODULES, "rooms", "not_a_module")
    with pytest.raises(ValueError, match="available: random"):
        get_policy("rooms", "oracle", env, params)
    # "random" draws gymnax's Discrete(5) sample from the key it is given.
    rand = get_policy("rooms", "random", env, params)
    keys = jax.random.split(jax.random.PRNGKey(1), 20)
    drawn = [int(rand.act(k, (), None, None, params)[0]) for k in keys]
    assert drawn == [int(jax.random.randint(k, (), 0, 5)) for k in keys] and len(set(drawn)) > 1


def test_step_towards_is_shortest():
    """Following `step_towards` reaches every target in exactly `path_length` steps (N = 3 grid)."""
    env, params = envs.make_inner("rooms_meta")
    cells = CELLS3
    pairs = np.array([(s, t) for s in cells for t in cells], np.int32)  # [P, 2, 2]
    lengths = np.asarray(path_length(jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1])))

    def walk(src, dst):
        def body(pos, _):
            a = step_towards(pos, dst)
            state = env.reset_to_task(jax.random.PRNGKey(0), jnp.zeros((3, 2), jnp.int32) - 5, params)[1]
            _, state, _, _, _ = env.step_env(jax.random.PRNGKey(0), state.replace(pos=pos), a, params)
            return state.pos, jnp.any(pos != dst)

        return jax.lax.scan(body, src, None, length=30)[1].sum()  # steps taken before reaching dst

    steps = np.asarray(jax.jit(jax.vmap(walk))(jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1])))
    truth = np.array([_bfs(tuple(s))[tuple(t)] for s, t in pairs])
    np.testing.assert_array_equal(lengths, truth)
    np.testing.assert_array_equal(steps, truth)


def test_bayes_forgets_at_a_new_meta_episode():
    """Through gymnax's auto-reset (a new task), the Bayes policy starts searching afresh."""
    env, params = envs.make("rooms", num_rooms=1, num_episodes=2, episode_length=12)
    bayes = get_policy("rooms", "bayes", env, params)
    key = jax.random.PRNGKey(0)
    obs, state = env.reset(key, params)
    pstate = bayes.init(key, params)
    step, act = jax.jit(env.step), jax.jit(bayes.act)
    tasks, returns = [], {}
    for t in range(3 * 24):
        if t % 24 == 0:
            tasks.append(np.asarray(state.task))
        action, pstate = act(key, pstate, obs, None, params)
        obs, state, reward, _, _, info = step(jax.random.fold_in(key, t), state, action, params)
        returns[t // 24] = returns.get(t // 24, 0.0) + float(reward)
    # Per meta-episode: the goal is reached after k steps of corner search in episode 1 (k = 1, 3, 5, 7
    # in search order) and after its distance d from the start in episode 2; an episode where the goal
    # is reached at step k returns (k - 1) * -0.1 + (12 - k + 1).
    search_steps = {(0, -1): 1, (2, -1): 3, (2, 1): 5, (0, 1): 7}
    distance = {(0, -1): 1, (2, -1): 3, (2, 1): 3, (0, 1): 1}

    def episode(k):
        return (k - 1) * -0.1 + (12 - k + 1)

    for i, task in enumerate(tasks):
        goal = tuple(int(v) for v in task[0])
        expected = episode(search_steps[goal]) + episode(distance[goal])
        assert returns[i] == pytest.approx(expected, abs=1e-4), (i, goal)
    assert len({tuple(t[0]) for t in tasks}) > 1  # the auto-reset did draw different tasks
