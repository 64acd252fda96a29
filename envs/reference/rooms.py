"""Reference policies for Rooms-N (`rooms`, `rooms_meta`): the oracle and a Bayes reference.

Both move along shortest paths (`step_towards`): inside the target's room straight to it (x
first, then y); from elsewhere first back to the middle row y = 0, then along it.

* Oracle (reads the task): goes to goal 0, 1, ..., N-1 in order, then stays on the last goal.
* Bayes reference (observations only): a goal's position is unknown until found. For the next
  unfound goal it walks to the nearest corner of that goal's room it has not tried yet (ties:
  corner order (0,-1), (2,-1), (0,1), (2,1) relative to the room's left-middle cell), which visits
  a room's corners in turn; it recognises a goal from `obs["reward"]` (closer to `goal_reward`
  than to `step_reward`) and remembers found goals and tried corners across episodes. In
  episodes 2..N it thus walks straight through the remembered goals, like the oracle.

Episode boundaries are read from `obs["time"]` (t = time * T; an episode starts when t % L == 0;
Rooms never terminates); at t = 0 (a new meta-episode, also after gymnax's auto-reset) the Bayes
policy forgets what it learned. Because the wrapper returns the next episode's initial observation at a
boundary, the cell a reward was earned on is not always observed; both policies therefore track
that cell themselves by applying the (deterministic) grid dynamics to their own last action.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs.reference import ReferencePolicy
from envs.rooms import CORNERS, MOVES, PERIOD, ROOM_SIZE, is_free, unnormalise

NOOP, UP, RIGHT, DOWN, LEFT = range(5)


class RoomsPolicyState(NamedTuple):
    goals: jax.Array  # [N, 2] int32 goal cells known so far (the task for the oracle)
    known: jax.Array  # [N] bool, goal i's cell is known
    tried: jax.Array  # [N, 4] bool, corner c of room i was visited without paying
    count: jax.Array  # int32, goals reached this episode (as far as the policy knows)
    last_pos: jax.Array  # [2] int32, the cell reached by the last action


def _sign_action(d: jax.Array, positive: int, negative: int) -> jax.Array:
    return jnp.where(d > 0, positive, jnp.where(d < 0, negative, NOOP))


def _same_room(x: jax.Array, tx: jax.Array) -> jax.Array:
    """Columns x and tx both lie in one room (not in a corridor)."""
    in_rooms = ((x % PERIOD) < ROOM_SIZE) & ((tx % PERIOD) < ROOM_SIZE)
    return in_rooms & (x // PERIOD == tx // PERIOD)


def step_towards(pos: jax.Array, target: jax.Array) -> jax.Array:
    """The first action of a shortest path from cell `pos` [2] to cell `target` [2]; noop there."""
    x, y = pos[0], pos[1]
    tx, ty = target[0], target[1]
    same_room = _same_room(x, tx)
    horizontal = _sign_action(tx - x, RIGHT, LEFT)
    in_room_move = jnp.where(tx != x, horizontal, _sign_action(ty - y, UP, DOWN))
    travel_move = jnp.where(y != 0, _sign_action(-y, UP, DOWN), horizontal)
    return jnp.where(same_room, in_room_move, travel_move).astype(jnp.int32)


def path_length(pos: jax.Array, target: jax.Array) -> jax.Array:
    """Shortest-path length between cells pos [..., 2] and target [..., 2] (int32 [...])."""
    x, y, tx, ty = pos[..., 0], pos[..., 1], target[..., 0], target[..., 1]
    same_room = _same_room(x, tx)
    manhattan = jnp.abs(tx - x) + jnp.abs(ty - y)
    return jnp.where(same_room, manhattan, jnp.abs(y) + jnp.abs(tx - x) + jnp.abs(ty))


def room_corners(num_rooms: int) -> jax.Array:
    """Corner cells [N, 4, 2] int32 of every room (corner order as `envs.rooms.CORNERS`)."""
    left = jnp.arange(num_rooms, dtype=jnp.int32) * PERIOD
    offset = jnp.stack([left, jnp.zeros_like(left)], axis=-1)
    return offset[:, None, :] + jnp.asarray(CORNERS)[None, :, :]


def _update(pstate: RoomsPolicyState, obs: dict, params) -> RoomsPolicyState:
    """Takes in the reward of the last transition (earned on `last_pos`) and episode boundaries."""
    env_params = params.env_params
    n = env_params.num_rooms
    t = jnp.round(obs["time"] * params.max_steps_in_episode).astype(jnp.int32)
    reward = obs["reward"]
    hit = jnp.abs(reward - env_params.goal_reward) < jnp.abs(reward - env_params.step_reward)
    seeking = pstate.count < n
    room = jnp.minimum(pstate.count, n - 1)
    on_corner = jnp.all(room_corners(n)[room] == pstate.last_pos, axis=-1)  # [4]
    found = (t > 0) & seeking & hit
    missed = (t > 0) & seeking & ~hit
    goals = pstate.goals.at[room].set(jnp.where(found, pstate.last_pos, pstate.goals[room]))
    known = pstate.known.at[room].set(pstate.known[room] | found)
    tried = pstate.tried.at[room].set(pstate.tried[room] | (missed & on_corner))
    count = pstate.count + found.astype(jnp.int32)
    new_episode = t % params.episode_length == 0
    count = jnp.where(new_episode, 0, count)
    # t = 0: a new meta-episode (a new task, e.g. after gymnax's auto-reset): forget everything.
    known = known & (t > 0)
    tried = tried & (t > 0)
    return RoomsPolicyState(goals, known, tried, count, pstate.last_pos)


def _act(pstate: RoomsPolicyState, obs: dict, params, goals=None) -> tuple[jax.Array, RoomsPolicyState]:
    """One step: update the knowledge from `obs`, then walk. `goals` [N, 2]: the oracle's task."""
    n = params.env_params.num_rooms
    pstate = _update(pstate, obs, params)
    if goals is not None:
        pstate = pstate._replace(goals=jnp.asarray(goals, jnp.int32), known=jnp.ones_like(pstate.known))
    pos = unnormalise(obs["obs"], n)
    room = jnp.minimum(pstate.count, n - 1)
    corners = room_corners(n)[room]  # [4, 2]
    distance = jnp.where(pstate.tried[room], jnp.iinfo(jnp.int32).max, path_length(pos, corners))
    search_target = corners[jnp.argmin(distance)]
    target = jnp.where(pstate.known[room], pstate.goals[room], search_target)
    action = step_towards(pos, target)
    proposed = pos + jnp.asarray(MOVES)[action]
    last_pos = jnp.where(is_free(proposed, n), proposed, pos)
    return action, pstate._replace(last_pos=last_pos)


def _initial_state(params) -> RoomsPolicyState:
    n = params.env_params.num_rooms
    return RoomsPolicyState(
        goals=jnp.zeros((n, 2), jnp.int32),
        known=jnp.zeros((n,), bool),
        tried=jnp.zeros((n, 4), bool),
        count=jnp.zeros((), jnp.int32),
        last_pos=jnp.zeros((2,), jnp.int32),
    )


def oracle_policy(params) -> ReferencePolicy:
    """Knows the goals (reads `task`): shortest path through them in order, then stays on the last."""

    def init(key, params):
        del key
        return _initial_state(params)

    def act(key, pstate, obs, task, params):
        del key
        return _act(pstate, obs, params, goals=task)

    return ReferencePolicy(init, act)


def bayes_policy(params) -> ReferencePolicy:
    """Searches each room's corners in turn until the goal pays, remembers found goals (never reads `task`)."""

    def init(key, params):
        del key
        return _initial_state(params)

    def act(key, pstate, obs, task, params):
        del key, task
        return _act(pstate, obs, params)

    return ReferencePolicy(init, act)
