"""Point robot navigation to a goal on the upper unit half-circle (`point_robot`, `point_robot_wind`).

One episode (see docs/envs.md):

* state: position s in R^2, (0, 0) at every reset; not bounded;
* action a in R^2, clipped to [-action_bound, action_bound]^2 (after the wind is added);
  s' = s + step_size * clip(a + w, -action_bound, action_bound), w ~ N(0, wind_std^2 I) per step
  (wind_std = 0 for `point_robot`, 0.3 for `point_robot_wind`);
* task: goal g = goal_circle_radius * (cos alpha, sin alpha), alpha ~ U(goal_angle_min, goal_angle_max);
* reward (sparse, on the position after the move): d = ||s' - g||; r = 1 - d if d <= goal_disk_radius else 0;
* observation: s (2,); never terminates.

Non-finite actions: NaN components count as 0 and +-inf as +-(largest float32) before the wind is
added and the result is clipped, so +inf moves by +action_bound and the state stays finite.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

from envs.base import TaskEnv, check_fields


@struct.dataclass
class PointRobotParams:
    """Constants of the point robot (the reference code's values as defaults)."""

    step_size: float = 0.1  # s' = s + step_size * clipped action
    goal_circle_radius: float = 1.0  # goals lie on the circle of this radius
    goal_angle_min: float = 0.0  # goal angle alpha ~ U(goal_angle_min, goal_angle_max)
    goal_angle_max: float = math.pi
    goal_disk_radius: float = 0.2  # reward 1 - d inside this distance of the goal, else 0
    wind_std: float = 0.0  # std of the per-step Gaussian noise added to the action before the clip
    action_bound: float = 1.0  # actions are clipped to [-action_bound, action_bound]
    max_steps_in_episode: int = 100  # L


@struct.dataclass
class PointRobotState:
    pos: jax.Array  # float32 [2]
    task: jax.Array  # float32 [2]: the goal
    time: jax.Array  # int32 []: step within the episode


def float_fields(kind: str, params: Any) -> dict[str, float]:
    """The params' fields other than max_steps_in_episode as Python floats (ValueError if not numbers)."""
    values = {}
    for field in dataclasses.fields(params):
        if field.name == "max_steps_in_episode":
            continue
        value = getattr(params, field.name)
        try:
            values[field.name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{kind}: invalid {field.name}={value!r}; allowed: a real number") from None
    return values


def sanitize_action(action: jax.Array) -> jax.Array:
    """float32 [2] action with NaN -> 0 and +-inf -> +-(largest float32)."""
    return jnp.nan_to_num(jnp.asarray(action, jnp.float32).reshape(2))


class PointRobot(TaskEnv):
    """Point robot whose task is a goal on a half-circle; `wind_std > 0` adds per-step action noise."""

    @property
    def default_params(self) -> PointRobotParams:
        return PointRobotParams()

    @property
    def name(self) -> str:
        return "PointRobot"

    @property
    def num_actions(self) -> int:
        return 2

    def task_shape(self, params: PointRobotParams) -> tuple[int, ...]:
        return (2,)

    def sample_task(self, key: jax.Array, params: PointRobotParams) -> jax.Array:
        angle = jax.random.uniform(
            key, (), jnp.float32, minval=params.goal_angle_min, maxval=params.goal_angle_max
        )
        return params.goal_circle_radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)]).astype(jnp.float32)

    def reset_to_task(
        self, key: jax.Array, task: jax.Array, params: PointRobotParams
    ) -> tuple[jax.Array, PointRobotState]:
        state = PointRobotState(
            pos=jnp.zeros(2, jnp.float32),
            task=jnp.asarray(task, jnp.float32),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def step_env(
        self, key: jax.Array, state: PointRobotState, action: jax.Array, params: PointRobotParams
    ) -> tuple[jax.Array, PointRobotState, jax.Array, jax.Array, dict]:
        action = self.check_action(action, params)
        # The draw is skipped when wind_std == 0 (a real branch unless wind_std is vmapped): the
        # same values either way, ~3x the steps/s of `point_robot` (experiments/benchmarks/envs.py).
        wind = jax.lax.cond(
            params.wind_std > 0,
            lambda k: params.wind_std * jax.random.normal(k, (2,), jnp.float32),
            lambda k: jnp.zeros((2,), jnp.float32),
            key,
        )
        pushed = jnp.nan_to_num(sanitize_action(action) + wind)
        move = jnp.clip(pushed, -params.action_bound, params.action_bound)
        pos = state.pos + params.step_size * move
        reward = self.reward(pos, state.task, params)
        state = PointRobotState(pos=pos, task=state.task, time=state.time + 1)
        return self.get_obs(state, params), state, reward, self.is_terminated(state, params), {}

    @staticmethod
    def reward(pos: jax.Array, goal: jax.Array, params: PointRobotParams) -> jax.Array:
        """1 - ||pos - goal|| within goal_disk_radius of the goal, else 0 (float32 [])."""
        d = jnp.linalg.norm(pos - goal)
        return jnp.where(d <= params.goal_disk_radius, 1.0 - d, 0.0).astype(jnp.float32)

    def get_obs(self, state: PointRobotState, params=None, key=None) -> jax.Array:
        return state.pos

    def is_terminated(self, state: PointRobotState, params) -> jax.Array:
        return jnp.zeros((), bool)

    def action_space(self, params: PointRobotParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        return spaces.Box(-params.action_bound, params.action_bound, (2,), jnp.float32)

    def observation_space(self, params: PointRobotParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)

    def check_params(self, params: PointRobotParams) -> None:
        values = float_fields("PointRobot", params)
        finite = math.isfinite
        check_fields(
            "PointRobot",
            values,
            {
                "step_size": (lambda v: finite(v) and v > 0, "a finite number > 0"),
                "goal_circle_radius": (lambda v: finite(v) and v > 0, "a finite number > 0"),
                "goal_angle_min": (finite, "a finite number (radians)"),
                "goal_angle_max": (
                    lambda v: finite(v) and v >= values["goal_angle_min"],
                    f"a finite number >= goal_angle_min={values['goal_angle_min']}",
                ),
                "goal_disk_radius": (lambda v: finite(v) and v >= 0, "a finite number >= 0"),
                "wind_std": (lambda v: finite(v) and v >= 0, "a finite number >= 0 (0 = no wind)"),
                "action_bound": (lambda v: finite(v) and v > 0, "a finite number > 0"),
            },
        )
        steps = params.max_steps_in_episode
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"PointRobot: invalid max_steps_in_episode={steps!r}; allowed: an integer >= 1")


__all__ = ["PointRobot", "PointRobotParams", "PointRobotState", "float_fields", "sanitize_action"]
