"""The interface every inner (single-episode) environment of the suite implements.

A `TaskEnv` is an ordinary gymnax `Environment` whose task is drawn separately from the
rest of the reset, so that the meta-episode wrapper (`envs.meta`) can start episodes
2..N on the *same* task:

    task = env.sample_task(key, params)             # the task as an array (see `task_shape`)
    obs, state = env.reset_to_task(key, task, params)
    obs, state, reward, terminated, info = env.step_env(key, state, action, params)

`reset_env` (and therefore gymnax's `reset`) draws a fresh task, so a `TaskEnv` can also be
used on its own, one episode per task, with any gymnax wrapper.

Every state dataclass holds the task in a field called `task` and the step within the
episode in `time` (gymnax's convention); every params dataclass holds the episode length in
`max_steps_in_episode`.

Every `step_env` starts with `action = self.check_action(action, params)`, which refuses an
action of the wrong shape or dtype (see `check_action`); the meta-episode wrapper checks too.
"""

from typing import Any

import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces


class TaskEnv(environment.Environment):
    """A gymnax environment whose task can be sampled and kept across resets."""

    def sample_task(self, key: jax.Array, params: Any) -> jax.Array:
        """Draws one task. Returns an array of shape `self.task_shape(params)`."""
        raise NotImplementedError

    def reset_to_task(self, key: jax.Array, task: jax.Array, params: Any) -> tuple[Any, Any]:
        """Starts a new episode on the given task. Returns (obs, state)."""
        raise NotImplementedError

    def task_shape(self, params: Any) -> tuple[int, ...]:
        """Shape of the task array."""
        raise NotImplementedError

    def reset_env(self, key: jax.Array, params: Any) -> tuple[Any, Any]:
        key_task, key_reset = jax.random.split(key)
        task = self.sample_task(key_task, params)
        return self.reset_to_task(key_reset, task, params)

    def check_action(self, action: Any, params: Any) -> jax.Array:
        """`action` as a jax array, checked against `self.action_space(params)` (see `check_action`)."""
        return check_action(action, self.action_space(params), self.name)

    def check_params(self, params: Any) -> None:
        """Raises ValueError (saying what is allowed) when params are invalid. Called by `envs.make`."""
        raise NotImplementedError

    def get_obs(self, state, params=None, key=None):
        raise NotImplementedError

    def is_terminated(self, state, params) -> jax.Array:
        """Natural terminal condition; environments that never terminate return False."""
        raise NotImplementedError


def check_fields(kind: str, values: dict, allowed: dict) -> None:
    """Raises a ValueError naming the allowed values when `values` breaks a rule.

    `allowed` maps a field name to (predicate, description), e.g.
    `{"goal_radius": (lambda v: v > 0, "> 0")}`.
    """
    for name, (ok, description) in allowed.items():
        if name in values and not ok(values[name]):
            raise ValueError(f"{kind}: invalid {name}={values[name]!r}; allowed: {description}")


def check_action(action: Any, space: Any, kind: str) -> jax.Array:
    """Returns `action` as a jax array; raises a ValueError naming the expected shape and dtype
    when it does not fit `space` (a gymnax `Discrete` or `Box`; other spaces are not checked).

    * Discrete(n): an integer scalar, shape (), of any integer dtype (Python ints included);
      floats and bools are refused (the value itself is not checked: envs clip it).
    * Box: an array of exactly `space.shape`, of any floating dtype (float16 / 32 / 64, bfloat16);
      integer and bool arrays are refused.

    Only the shape and dtype are read, which are static under `jit`: the check runs once, when the
    step is traced, and costs nothing per step. Under `vmap` it sees one example's action.
    """
    try:
        array = jnp.asarray(action)
    except TypeError:
        array = None
    if isinstance(space, spaces.Discrete):
        expected = f"an integer scalar of shape () (any int dtype; Discrete({space.n}): 0..{space.n - 1})"
        ok = array is not None and array.shape == () and jnp.issubdtype(array.dtype, jnp.integer)
    elif isinstance(space, spaces.Box):
        shape = tuple(space.shape)
        expected = f"a float array of shape {shape} (any floating dtype)"
        ok = array is not None and array.shape == shape and jnp.issubdtype(array.dtype, jnp.floating)
    else:
        return action if array is None else array
    if not ok:
        got = f"{type(action).__name__} {action!r}" if array is None else f"shape {array.shape}, dtype {array.dtype}"
        raise ValueError(f"{kind}: invalid action ({got}); expected {expected}")
    return array
