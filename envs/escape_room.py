"""Escape room: leave a circular room through a door at an unknown angle (`escape_room`).

One episode (see docs/envs.md):

* a wall, the circle of radius `wall_radius` (R = 1) around the origin, with one door: the arc of
  half-width `door_half_width` (pi / 16) centred at angle theta ~ U(door_angle_min, door_angle_max)
  = U(0, pi), the task (shape ());
* start of every episode: s0 = rho (cos phi, sin phi), phi ~ U(-pi, pi), rho ~ U(0, start_radius_max);
* action clipped to [-action_bound, action_bound]^2 (NaN -> 0, +-inf -> +-action_bound); proposed move
  s~ = s + step_size * a. If the segment [s, s~] crosses the wall (see `wall_crossing`) outside the
  door, the move is blocked and the agent is put at wall_margin * R * s~ / ||s~|| (0.99 R: inside the
  wall), otherwise s' = s~. This holds from both sides;
* reward 1 if ||s'|| > R else 0; observation s (2,); never terminates.

"Inside" means ||x|| <= R and "outside" ||x|| > R, as the reward has it. Edge cases (all finite and
deterministic):

* inside -> outside: one crossing, the exit point; outside -> inside: one crossing, the entry point;
* outside -> outside through the room (the chord dips below R; possible near a tangent): two
  crossings; the move is taken only if both crossing points are in the door, otherwise blocked;
* a move that only touches the circle (a tangent: the quadratic has a double root) from outside
  does not cross; inside -> inside never crosses (the disk is convex); a zero move never crosses;
* a move that starts exactly on the circle (inside by the convention above) and goes out crosses at
  its start point;
* the door test is |wrap(beta - theta)| <= door_half_width with wrap to [-pi, pi) (closed arc);
* a blocked move with s~ exactly at the origin (only possible from outside with a step longer than
  R) puts the agent at wall_margin * (crossing point), the crossing point having norm R.
"""

import math

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

from envs.base import TaskEnv, check_fields
from envs.point_robot import float_fields, sanitize_action


@struct.dataclass
class EscapeRoomParams:
    """Constants of the escape room (the reference code's values as defaults)."""

    step_size: float = 0.1  # s~ = s + step_size * clipped action
    wall_radius: float = 1.0  # R
    door_half_width: float = math.pi / 16  # the door is the arc [theta - w, theta + w]
    door_angle_min: float = 0.0  # theta ~ U(door_angle_min, door_angle_max)
    door_angle_max: float = math.pi
    start_radius_max: float = 1.0  # start radius rho ~ U(0, start_radius_max)
    wall_margin: float = 0.99  # a blocked move puts the agent at wall_margin * R * s~ / ||s~||
    action_bound: float = 1.0  # actions are clipped to [-action_bound, action_bound]
    max_steps_in_episode: int = 60  # L


@struct.dataclass
class EscapeRoomState:
    pos: jax.Array  # float32 [2]
    task: jax.Array  # float32 []: the door angle theta
    time: jax.Array  # int32 []: step within the episode


def wrap_angle(x: jax.Array) -> jax.Array:
    """x wrapped to [-pi, pi)."""
    return jnp.mod(x + jnp.pi, 2 * jnp.pi) - jnp.pi


def in_door(beta: jax.Array, door: jax.Array, half_width: jax.Array) -> jax.Array:
    """Whether angle beta lies on the closed door arc [door - half_width, door + half_width] (wrapped)."""
    return jnp.abs(wrap_angle(beta - door)) <= half_width


def _roots(s: jax.Array, d: jax.Array, radius: jax.Array):
    """Roots t_lo <= t_hi of ||s + t d||^2 = radius^2 (a t^2 + 2 b t + c = 0), and the discriminant.

    Uses the cancellation-free form (roots q / a and c / q); for a = 0 (no move) returns zeros.
    """
    a = jnp.dot(d, d)
    b = jnp.dot(s, d)
    c = jnp.dot(s, s) - radius**2
    disc = b * b - a * c
    sq = jnp.sqrt(jnp.maximum(disc, 0.0))
    q = -(b + jnp.where(b >= 0, sq, -sq))
    safe_a = jnp.where(a > 0, a, 1.0)
    safe_q = jnp.where(q != 0, q, 1.0)
    r1 = jnp.where(a > 0, q / safe_a, 0.0)
    r2 = jnp.where(q != 0, c / safe_q, r1)  # q = 0 only when b = 0 and disc = 0: a double root at 0
    return jnp.minimum(r1, r2), jnp.maximum(r1, r2), disc


def wall_crossing(s: jax.Array, s_new: jax.Array, door: jax.Array, params: EscapeRoomParams):
    """Whether the move s -> s_new crosses the wall, and whether the door lets it through.

    Returns (crosses, allowed, crossing_point) with crossing_point [2] the (first) point where
    the segment meets the circle (s itself when there is no crossing). See the module docstring
    for the cases.
    """
    radius = params.wall_radius
    r2 = radius**2
    inside0 = jnp.dot(s, s) <= r2
    inside1 = jnp.dot(s_new, s_new) <= r2
    d = s_new - s
    t_lo, t_hi, disc = _roots(s, d, radius)
    exits = inside0 & ~inside1
    enters = ~inside0 & inside1
    through = ~inside0 & ~inside1 & (disc > 0) & (t_lo > 0) & (t_hi < 1)
    t_first = jnp.clip(jnp.where(exits, t_hi, t_lo), 0.0, 1.0)
    p_first = s + t_first * d
    p_second = s + jnp.clip(t_hi, 0.0, 1.0) * d
    angle = lambda p: jnp.arctan2(p[1], p[0])  # noqa: E731
    door_first = in_door(angle(p_first), door, params.door_half_width)
    door_second = in_door(angle(p_second), door, params.door_half_width)
    crosses = exits | enters | through
    allowed = jnp.where(through, door_first & door_second, door_first)
    crossing_point = jnp.where(crosses, p_first, s)
    return crosses, allowed, crossing_point


def move(s: jax.Array, action: jax.Array, door: jax.Array, params: EscapeRoomParams) -> jax.Array:
    """The position after taking `action` at `s` with the door at angle `door` (float32 [2])."""
    a = jnp.clip(sanitize_action(action), -params.action_bound, params.action_bound)
    s_new = s + params.step_size * a
    crosses, allowed, crossing_point = wall_crossing(s, s_new, door, params)
    norm = jnp.linalg.norm(s_new)
    direction = jnp.where(
        norm > 0, s_new / jnp.where(norm > 0, norm, 1.0), crossing_point / params.wall_radius
    )
    blocked_pos = params.wall_margin * params.wall_radius * direction
    return jnp.where(crosses & ~allowed, blocked_pos, s_new).astype(jnp.float32)


class EscapeRoom(TaskEnv):
    """A circular room whose task is the angle of its one door; reward 1 for every step outside."""

    @property
    def default_params(self) -> EscapeRoomParams:
        return EscapeRoomParams()

    @property
    def name(self) -> str:
        return "EscapeRoom"

    @property
    def num_actions(self) -> int:
        return 2

    def task_shape(self, params: EscapeRoomParams) -> tuple[int, ...]:
        return ()

    def sample_task(self, key: jax.Array, params: EscapeRoomParams) -> jax.Array:
        return jax.random.uniform(
            key, (), jnp.float32, minval=params.door_angle_min, maxval=params.door_angle_max
        )

    def reset_to_task(
        self, key: jax.Array, task: jax.Array, params: EscapeRoomParams
    ) -> tuple[jax.Array, EscapeRoomState]:
        key_angle, key_radius = jax.random.split(key)
        phi = jax.random.uniform(key_angle, (), jnp.float32, minval=-jnp.pi, maxval=jnp.pi)
        rho = jax.random.uniform(key_radius, (), jnp.float32, minval=0.0, maxval=params.start_radius_max)
        state = EscapeRoomState(
            pos=(rho * jnp.stack([jnp.cos(phi), jnp.sin(phi)])).astype(jnp.float32),
            task=jnp.asarray(task, jnp.float32),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def step_env(
        self, key: jax.Array, state: EscapeRoomState, action: jax.Array, params: EscapeRoomParams
    ) -> tuple[jax.Array, EscapeRoomState, jax.Array, jax.Array, dict]:
        action = self.check_action(action, params)
        pos = move(state.pos, action, state.task, params)
        reward = (jnp.dot(pos, pos) > params.wall_radius**2).astype(jnp.float32)
        state = EscapeRoomState(pos=pos, task=state.task, time=state.time + 1)
        return self.get_obs(state, params), state, reward, self.is_terminated(state, params), {}

    def get_obs(self, state: EscapeRoomState, params=None, key=None) -> jax.Array:
        return state.pos

    def is_terminated(self, state: EscapeRoomState, params) -> jax.Array:
        return jnp.zeros((), bool)

    def action_space(self, params: EscapeRoomParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        return spaces.Box(-params.action_bound, params.action_bound, (2,), jnp.float32)

    def observation_space(self, params: EscapeRoomParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)

    def check_params(self, params: EscapeRoomParams) -> None:
        values = float_fields("EscapeRoom", params)
        finite = math.isfinite
        check_fields(
            "EscapeRoom",
            values,
            {
                "step_size": (lambda v: finite(v) and v > 0, "a finite number > 0"),
                "wall_radius": (lambda v: finite(v) and v > 0, "a finite number > 0"),
                "door_half_width": (lambda v: finite(v) and 0 <= v <= math.pi, "a number in [0, pi]"),
                "door_angle_min": (finite, "a finite number (radians)"),
                "door_angle_max": (
                    lambda v: finite(v) and v >= values["door_angle_min"],
                    f"a finite number >= door_angle_min={values['door_angle_min']}",
                ),
                "start_radius_max": (
                    lambda v: finite(v) and 0 <= v <= values["wall_radius"],
                    f"a number in [0, wall_radius={values['wall_radius']}]",
                ),
                "wall_margin": (lambda v: finite(v) and 0 < v < 1, "a number in (0, 1)"),
                "action_bound": (lambda v: finite(v) and v > 0, "a finite number > 0"),
            },
        )
        steps = params.max_steps_in_episode
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"EscapeRoom: invalid max_steps_in_episode={steps!r}; allowed: an integer >= 1")


__all__ = ["EscapeRoom", "EscapeRoomParams", "EscapeRoomState", "in_door", "move", "wall_crossing", "wrap_angle"]
