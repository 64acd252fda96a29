"""The meta-episode wrapper: N episodes of L steps on one task (see docs/envs.md).

`MetaEpisodeWrapper(env)` turns a `TaskEnv` into a gymnax `Environment` whose episodes are
meta-episodes:

* `reset(key, params)` draws a task and starts episode 0 of N.
* `step` advances the inner env. When an episode reaches L steps, or the inner env terminates
  (a humanoid fall), the inner env is reset on the **same task** and the observation returned
  is the **initial observation of the next episode** [deviation from the reference code, which
  returns the last observation of the finished episode].
* Observation = `{"obs": inner observation, "reward": reward of the transition that produced
  this observation (0 at reset), "time": t / T}`, with t the step within the meta-episode
  (0 at reset, T = N * L at the last observation of a meta-episode that runs to its end).
* The meta-episode ends after N episodes: `truncated` is True when it ends on the time limit,
  `terminated` when the last episode ends with an inner termination. gymnax's `step` then
  auto-resets to a new task (the final observation is in `info["final_observation"]`).

`info` carries:

* `episode_index` (int32): the episode of the returned observation,
* `episode_start` (bool): True when the returned observation is the first of an episode,
* `reward_episode_index` (int32): the episode the returned reward belongs to (it differs from
  `episode_index` on the step that crosses an episode boundary), so per-episode returns are
  `sum(reward where reward_episode_index == i)`,
* `episode_end` (bool): this transition ended an episode,
* `inner_terminated` (bool): the inner env terminated (e.g. a fall), at any episode,
* `task`: the task array.

`step_env` (and so `step`) refuses an action of the wrong shape or dtype with a ValueError naming
the expected ones (`envs.base.check_action`), as the inner env's own `step_env` does.
"""

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from envs.base import TaskEnv, check_action


@struct.dataclass
class MetaParams:
    """Params of a meta-episode: the inner env's params plus N and L (static: they set shapes)."""

    env_params: Any
    num_episodes: int = struct.field(pytree_node=False, default=1)
    episode_length: int = struct.field(pytree_node=False, default=100)

    @property
    def max_steps_in_episode(self) -> int:
        """T = N * L, the number of steps of a meta-episode (gymnax's name for it)."""
        return self.num_episodes * self.episode_length


@struct.dataclass
class MetaState:
    env_state: Any
    task: jax.Array
    time: jax.Array  # int32: t, the step within the meta-episode
    episode_index: jax.Array  # int32: the current episode, 0..N-1
    episode_step: jax.Array  # int32: the step within the current episode, 0..L-1
    terminated: jax.Array  # bool: the meta-episode ended on an inner termination
    ended: jax.Array  # bool: the meta-episode ended (its N-th episode ended)


def _observation(obs: Any, reward: jax.Array, t: jax.Array, params: MetaParams) -> dict:
    total = params.num_episodes * params.episode_length
    return {
        "obs": obs,
        "reward": jnp.asarray(reward, jnp.float32),
        "time": jnp.asarray(t, jnp.float32) / jnp.float32(total),
    }


class MetaEpisodeWrapper(environment.Environment):
    """Wraps a `TaskEnv` into meta-episodes; itself a gymnax `Environment`."""

    def __init__(self, env: TaskEnv):
        if not isinstance(env, TaskEnv):
            raise TypeError(f"MetaEpisodeWrapper needs an envs.base.TaskEnv, got {type(env).__name__}")
        self._env = env

    @property
    def inner(self) -> TaskEnv:
        return self._env

    @property
    def name(self) -> str:
        return f"Meta{self._env.name}"

    @property
    def default_params(self) -> MetaParams:
        inner = self._env.default_params
        return MetaParams(env_params=inner, num_episodes=1, episode_length=inner.max_steps_in_episode)

    @property
    def num_actions(self) -> int:
        return self._env.num_actions

    def reset_env(self, key: jax.Array, params: MetaParams) -> tuple[dict, MetaState]:
        key_task, key_reset = jax.random.split(key)
        task = self._env.sample_task(key_task, params.env_params)
        obs, env_state = self._env.reset_to_task(key_reset, task, params.env_params)
        zero = jnp.zeros((), jnp.int32)
        state = MetaState(
            env_state=env_state,
            task=task,
            time=zero,
            episode_index=zero,
            episode_step=zero,
            terminated=jnp.zeros((), bool),
            ended=jnp.zeros((), bool),
        )
        return _observation(obs, 0.0, zero, params), state

    def step_env(
        self, key: jax.Array, state: MetaState, action: Any, params: MetaParams
    ) -> tuple[dict, MetaState, jax.Array, jax.Array, dict]:
        action = check_action(action, self._env.action_space(params.env_params), self._env.name)
        key_step, key_reset = jax.random.split(key)
        obs_st, env_state_st, reward, inner_terminated, _ = self._env.step_env(
            key_step, state.env_state, action, params.env_params
        )
        episode_step = state.episode_step + 1
        episode_end = jnp.logical_or(inner_terminated, episode_step >= params.episode_length)
        last_episode = state.episode_index >= params.num_episodes - 1
        meta_end = jnp.logical_and(episode_end, last_episode)
        next_episode = jnp.logical_and(episode_end, jnp.logical_not(last_episode))

        obs_re, env_state_re = self._env.reset_to_task(key_reset, state.task, params.env_params)
        env_state = jax.tree.map(partial(jnp.where, next_episode), env_state_re, env_state_st)
        obs = jax.tree.map(partial(jnp.where, next_episode), obs_re, obs_st)
        episode_index = state.episode_index + next_episode.astype(jnp.int32)
        time = state.time + 1
        new_state = MetaState(
            env_state=env_state,
            task=state.task,
            time=time,
            episode_index=episode_index,
            episode_step=jnp.where(episode_end, 0, episode_step).astype(jnp.int32),
            terminated=jnp.logical_and(meta_end, inner_terminated),
            ended=meta_end,
        )
        reward = jnp.asarray(reward, jnp.float32)
        info = {
            "episode_index": episode_index,
            "episode_start": next_episode,
            "reward_episode_index": state.episode_index,
            "episode_end": episode_end,
            "inner_terminated": jnp.asarray(inner_terminated, bool),
            "task": state.task,
        }
        terminated = new_state.terminated
        return _observation(obs, reward, time, params), new_state, reward, terminated, info

    def is_truncated(self, state: MetaState, params: MetaParams) -> jax.Array:
        """The meta-episode ended on its time limit: its N-th episode reached L steps (after
        N * L steps, or fewer when an earlier episode ended on an inner termination)."""
        return jnp.logical_and(state.ended, jnp.logical_not(state.terminated))

    def is_terminated(self, state: MetaState, params: MetaParams) -> jax.Array:
        return state.terminated

    def step(self, key, state, action, params=None):
        """gymnax's step (auto-reset to a new task at the end of a meta-episode), with the
        wrapper's `episode_index` / `episode_start` made to describe the returned observation."""
        obs, new_state, reward, terminated, truncated, info = super().step(key, state, action, params)
        done = jnp.logical_or(terminated, truncated)
        info = dict(info)
        info["episode_index"] = jnp.where(done, 0, info["episode_index"]).astype(jnp.int32)
        info["episode_start"] = jnp.logical_or(done, info["episode_start"])
        return obs, new_state, reward, terminated, truncated, info

    def action_space(self, params: MetaParams | None = None):
        params = self.default_params if params is None else params
        return self._env.action_space(params.env_params)

    def observation_space(self, params: MetaParams | None = None) -> spaces.Dict:
        params = self.default_params if params is None else params
        return spaces.Dict(
            {
                "obs": self._env.observation_space(params.env_params),
                "reward": spaces.Box(-jnp.inf, jnp.inf, (), jnp.float32),
                "time": spaces.Box(0.0, 1.0, (), jnp.float32),
            }
        )

    def task_shape(self, params: MetaParams) -> tuple[int, ...]:
        return self._env.task_shape(params.env_params)
