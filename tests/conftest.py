"""Shared test set-up: JAX's persistent compilation cache, so repeated runs compile once, a
fast-compiling XLA:CPU backend, and fixtures for point-robot data (`collect_point_robot`: random
meta-episodes in the batch format; `point_robot_spaces`: the debug preset's env spaces).

The tests run tiny networks, so their time is almost all XLA compilation; LLVM's optimisation
level 0 (`--xla_backend_optimization_level=0`) cuts that by about a third (one update-sized test:
28 s -> 18 s on the 2-core machine). It changes float32 rounding, not semantics: results are compared
within each run, subprocesses started by the tests inherit XLA_FLAGS, and the two tests whose
tolerances were tighter than that rounding (test_point_robot's Bayes-vs-oracle returns, test_agent's
vmap-vs-separate actor loss) say so. MAMBA_JAX_TEST_XLA_OPT=1 keeps XLA's default level.
"""

import os
import pathlib

TEST_XLA_FLAG = "--xla_backend_optimization_level=0"
if os.environ.get("MAMBA_JAX_TEST_XLA_OPT") != "1" and TEST_XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAG).strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads it when it starts)

_CACHE = os.environ.get("MAMBA_JAX_CACHE", str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from flax import struct  # noqa: E402
from gymnax.environments import spaces  # noqa: E402

import envs  # noqa: E402
from envs.base import TaskEnv  # noqa: E402
from envs.meta import MetaEpisodeWrapper, MetaParams  # noqa: E402


def point_robot_meta_episodes(key, batch: int, num_episodes: int = 2, episode_length: int = 10) -> dict:
    """[batch] meta-episodes of the point robot with uniform random actions, in the batch format of
    docs/api.md: leaves [batch, S, ...] with S = num_episodes * episode_length + 1."""
    env, params = envs.make("point_robot", num_episodes=num_episodes, episode_length=episode_length)
    steps = num_episodes * episode_length

    def one(k):
        k_reset, k_run = jax.random.split(k)
        obs0, state0 = env.reset(k_reset, params)

        def step(state, kk):
            k_act, k_env = jax.random.split(kk)
            action = jax.random.uniform(k_act, (2,), minval=-1.0, maxval=1.0)
            obs, state, _, terminated, _ = env.step_env(k_env, state, action, params)
            return state, (obs, action, terminated)

        _, (obs, action, term) = jax.lax.scan(step, state0, jax.random.split(k_run, steps))
        cat = lambda a, b: jnp.concatenate([a[None], b], 0)  # noqa: E731
        return {
            "obs": jax.tree.map(cat, obs0, obs),
            "action": cat(jnp.zeros((2,)), action),
            "is_first": jnp.arange(steps + 1) == 0,
            "is_terminal": cat(jnp.array(False), term),
        }

    return jax.jit(jax.vmap(one))(jax.random.split(key, batch))


@pytest.fixture(scope="session")
def collect_point_robot():
    """`point_robot_meta_episodes`: (key, batch, num_episodes=2, episode_length=10) -> a batch."""
    return point_robot_meta_episodes


@pytest.fixture(scope="session")
def point_robot_spaces():
    """(observation space, action space) of the point robot's meta-episode env with N = 2, L = 10
    (the `debug` preset's)."""
    env, params = envs.make("point_robot", num_episodes=2, episode_length=10)
    return env.observation_space(params), env.action_space(params)


def _refused_everywhere(env, state, params, meta, meta_state, meta_params, action, message, jit_step, key):
    """Asserts that the raw env (eager step_env, a jitted step_env, gymnax's step) and the meta-episode
    wrapper (step_env, jitted step) each refuse `action` with a ValueError matching `message`."""
    calls = [
        lambda: env.step_env(key, state, action, params),
        lambda: jit_step(key, state, action, params),
        lambda: env.step(key, state, action, params),
        lambda: meta.step_env(key, meta_state, action, meta_params),
        lambda: jax.jit(meta.step)(key, meta_state, action, meta_params),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.fixture(scope="session")
def assert_action_refused():
    """(env, state, params, meta, meta_state, meta_params, action, message, jit_step, key) -> None:
    every way of stepping the env and its meta-episode wrapper refuses `action` (docs/envs.md)."""
    return _refused_everywhere


@struct.dataclass
class _BanditParams:
    max_steps_in_episode: int = 1


@struct.dataclass
class _BanditState:
    task: jax.Array  # int32: the arm that pays 1
    time: jax.Array


class _Bandit(TaskEnv):
    """Two arms; the task is the good arm (uniform per task), which pays 1, the other 0. The
    observation is a constant zero [1]: only the last reward and action tell the arms apart."""

    default_params = _BanditParams()

    def sample_task(self, key, params):
        return jax.random.randint(key, (), 0, 2)

    def task_shape(self, params):
        return ()

    def reset_to_task(self, key, task, params):
        return jnp.zeros((1,)), _BanditState(task, jnp.zeros((), jnp.int32))

    def step_env(self, key, state, action, params):
        action = self.check_action(action, params)
        reward = (action == state.task).astype(jnp.float32)
        return jnp.zeros((1,)), _BanditState(state.task, state.time + 1), reward, jnp.zeros((), bool), {}

    def is_terminated(self, state, params):
        return jnp.zeros((), bool)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Box(0.0, 0.0, (1,), jnp.float32)


def _two_armed_bandit(num_episodes: int, episode_length: int = 1):
    return MetaEpisodeWrapper(_Bandit()), MetaParams(_BanditParams(episode_length), num_episodes, episode_length)


@pytest.fixture(scope="session")
def two_armed_bandit():
    """(num_episodes, episode_length=1) -> (env, env_params): a two-armed bandit task (the good arm,
    drawn per task, pays 1, the other 0; a constant observation) in the meta-episode wrapper, a task
    that is solvable only by remembering the earlier episodes of the meta-episode."""
    return _two_armed_bandit
