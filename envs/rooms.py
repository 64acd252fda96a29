"""Rooms-N: a row of N 3x3 rooms joined by corridors; one goal per room, to be visited in order.

Grid (N = 3, `R` room cell, `-` corridor cell, `S` start):

    y= 1   RRR   RRR   RRR
    y= 0   SRR---RRR---RRR
    y=-1   RRR   RRR   RRR
      x =  0     6     12 14

Room i covers x in [6i, 6i+2], y in {-1, 0, 1}; the corridor after room i covers x in
[6i+3, 6i+5] at y = 0 only. The grid is 6N-3 cells wide.

* Start of every episode: (0, 0), the middle of room 0's left column.
* Actions (Discrete(5)): 0 noop, 1 up (y+1), 2 right (x+1), 3 down (y-1), 4 left (x-1). A move
  into a wall or out of the grid leaves the agent in place (so in a corridor only left/right
  move). An action is an integer scalar of any int dtype (a float or an array raises a ValueError,
  see `envs.base.check_action`), clipped to [0, 4]: an out-of-range action acts as noop (< 0) or
  left (> 4).
* Task: goals [N, 2] int32 grid cells (x, y), goal i uniform over room i's 4 corners
  (corner c in 0..3 is x = 6i + 2 * (c % 2), y = 2 * (c // 2) - 1); 4^N tasks.
* Reward: `step_reward` (-0.1) per step, or `goal_reward` (+1) instead when the agent (after its
  move) stands on goal i and goals 0..i-1 were reached this episode; a goal before the last
  pays once per episode (it then counts as reached), the last goal pays on every step spent on it.
* Observation [2] float32: position normalised to [-1, 1] per axis, centred:
  x -> (2x - (6N - 4)) / (6N - 4) (x = 0 -> -1, the middle column -> 0, the last column x = 6N - 4
  -> 1), and y itself.
  (The reference code's normalisation is off-centre; see docs/envs.md.)
* Never terminates; episodes end on the time limit `max_steps_in_episode`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from envs.base import TaskEnv, check_fields

ROOM_SIZE = 3  # cells per room side
CORRIDOR_LENGTH = 3  # cells per corridor
PERIOD = ROOM_SIZE + CORRIDOR_LENGTH  # x distance between the left columns of two rooms

# Moves (dx, dy) of the 5 actions: noop, up, right, down, left.
MOVES = np.array([[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0]], np.int32)
# Corner c of a room, relative to its left-middle cell: (2 * (c % 2), 2 * (c // 2) - 1).
CORNERS = np.array([[0, -1], [2, -1], [0, 1], [2, 1]], np.int32)


@struct.dataclass
class EnvState(environment.EnvState):
    pos: jax.Array  # [2] int32 grid cell (x, y)
    goals_reached: jax.Array  # int32, goals reached this episode, 0..N
    task: jax.Array  # [N, 2] int32 goal cells
    time: jax.Array  # int32, step within the episode


@struct.dataclass
class EnvParams(environment.EnvParams):
    step_reward: float = -0.1
    goal_reward: float = 1.0
    max_steps_in_episode: int = 100
    num_rooms: int = struct.field(pytree_node=False, default=3)  # static: sets shapes


def grid_width(num_rooms: int) -> int:
    """Number of grid columns: N rooms of 3 plus N-1 corridors of 3."""
    return PERIOD * num_rooms - CORRIDOR_LENGTH


def is_free(pos: jax.Array, num_rooms: int) -> jax.Array:
    """Whether grid cell(s) `pos` [..., 2] (x, y) can be occupied. Returns bool [...]."""
    x, y = pos[..., 0], pos[..., 1]
    in_grid = (x >= 0) & (x < grid_width(num_rooms)) & (jnp.abs(y) <= 1)
    in_room = (x % PERIOD) < ROOM_SIZE
    return in_grid & (in_room | (y == 0))


def normalise(pos: jax.Array, num_rooms: int) -> jax.Array:
    """Grid cell(s) [..., 2] int -> observation [..., 2] float32 in [-1, 1] (centred).

    x -> (2x - (6N - 4)) / (6N - 4), read from a table computed in float64, so that the values are
    the same under jit and eagerly: exactly -1 / 0 / 1 at the first / middle / last column, and
    mirror-image cells exactly opposite."""
    last = grid_width(num_rooms) - 1  # 6N - 4
    table = ((2.0 * np.arange(last + 1) - last) / last).astype(np.float32)
    pos = jnp.asarray(pos, jnp.int32)
    x = jnp.asarray(table)[jnp.clip(pos[..., 0], 0, last)]
    return jnp.stack([x, pos[..., 1].astype(jnp.float32)], axis=-1)


def unnormalise(obs: jax.Array, num_rooms: int) -> jax.Array:
    """Inverse of `normalise`: observation(s) [..., 2] -> grid cell(s) [..., 2] int32."""
    x = (obs[..., 0] + 1.0) * ((grid_width(num_rooms) - 1) / 2.0)
    return jnp.round(jnp.stack([x, obs[..., 1]], axis=-1)).astype(jnp.int32)


class Rooms(TaskEnv):
    """Rooms-N (see the module docstring)."""

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "Rooms"

    @property
    def num_actions(self) -> int:
        return 5

    def task_shape(self, params: EnvParams) -> tuple[int, ...]:
        return (params.num_rooms, 2)

    def sample_task(self, key: jax.Array, params: EnvParams) -> jax.Array:
        """Goals [N, 2] int32: for room i, one of its 4 corners uniformly.

        Corner i is bits 2i, 2i+1 of uniform random 32-bit words (exactly uniform: 4 divides
        2^32); one word per 16 rooms, cheaper than `randint` (this runs at every auto-reset step).
        """
        n = params.num_rooms
        words = jax.random.bits(key, ((n + 15) // 16,), jnp.uint32)
        room = np.arange(n)
        shifts = jnp.asarray(2 * (room % 16), jnp.uint32)
        corner = ((words[room // 16] >> shifts) & 3).astype(jnp.int32)
        left = jnp.arange(params.num_rooms, dtype=jnp.int32) * PERIOD
        return jnp.asarray(CORNERS)[corner] + jnp.stack([left, jnp.zeros_like(left)], axis=-1)

    def reset_to_task(self, key: jax.Array, task: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        del key
        zero = jnp.zeros((), jnp.int32)
        state = EnvState(
            pos=jnp.zeros((2,), jnp.int32),
            goals_reached=zero,
            task=jnp.asarray(task, jnp.int32),
            time=zero,
        )
        return self.get_obs(state, params), state

    def step_env(
        self, key: jax.Array, state: EnvState, action: Any, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict]:
        del key
        action = jnp.clip(self.check_action(action, params), 0, 4).astype(jnp.int32)
        proposed = state.pos + jnp.asarray(MOVES)[action]
        pos = jnp.where(is_free(proposed, params.num_rooms), proposed, state.pos)

        # The goal that pays now: the next one, or the last one once all were reached.
        current = jnp.minimum(state.goals_reached, params.num_rooms - 1)
        hit = jnp.all(pos == state.task[current])
        reward = jnp.where(hit, params.goal_reward, params.step_reward).astype(jnp.float32)
        goals_reached = jnp.minimum(state.goals_reached + hit.astype(jnp.int32), params.num_rooms)

        state = EnvState(pos=pos, goals_reached=goals_reached, task=state.task, time=state.time + 1)
        return self.get_obs(state, params), state, reward, jnp.zeros((), bool), {}

    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> jax.Array:
        params = self.default_params if params is None else params
        return normalise(state.pos, params.num_rooms)

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return jnp.zeros((), bool)

    def check_params(self, params: EnvParams) -> None:
        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_real(v):
            v = np.asarray(v)
            return v.ndim == 0 and v.dtype != bool and np.issubdtype(v.dtype, np.number) and bool(np.isfinite(v))

        check_fields(
            "rooms",
            {f: getattr(params, f) for f in ("num_rooms", "max_steps_in_episode", "step_reward", "goal_reward")},
            {
                "num_rooms": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
                "max_steps_in_episode": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
                "step_reward": (is_real, "a finite number"),
                "goal_reward": (is_real, "a finite number"),
            },
        )

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(5)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def state_space(self, params: EnvParams | None = None) -> spaces.Dict:
        params = self.default_params if params is None else params
        n = params.num_rooms
        return spaces.Dict(
            {
                "pos": spaces.Box(jnp.array([0, -1]), jnp.array([grid_width(n) - 1, 1]), (2,), jnp.int32),
                "goals_reached": spaces.Discrete(n + 1),
                "task": spaces.Box(-1, grid_width(n) - 1, (n, 2), jnp.int32),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )


def render_ascii(state: EnvState, params: EnvParams) -> str:
    """A text picture of the grid: `A` agent, digits goals (in order), `.` free, `#` wall."""
    n = params.num_rooms
    pos = np.asarray(state.pos)
    goals = np.asarray(state.task)
    rows = []
    for y in (1, 0, -1):
        row = []
        for x in range(grid_width(n)):
            if (pos == (x, y)).all():
                row.append("A")
            elif any((g == (x, y)).all() for g in goals):
                row.append(str(next(i for i, g in enumerate(goals) if (g == (x, y)).all()) % 10))
            else:
                row.append("." if bool(is_free(np.array([x, y]), n)) else "#")
        rows.append("".join(row))
    return "\n".join(rows)
