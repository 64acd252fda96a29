"""Reference policies for the escape room (`escape_room`).

Both leave the room the same way once they know (or believe) the door is at angle `door`
(`go_out`): from inside, straight to just outside the (known open part of the) door arc when the
straight line crosses the wall well within it, otherwise towards a waypoint inside the door (from
which the way out is radial); once outside, stand still (reward 1 on every step).

* Oracle (reads the task): `go_out` towards the true door from the first step.
* Bayes reference (observations only): in the first episode it walks to the wall at the end of the
  door-angle range nearer its start (angle door_angle_min = 0 when it starts at x >= 0, else
  door_angle_max = pi) and sweeps along the wall towards the other end, every step pushing
  outwards and sideways (towards (R + 0.03 R) u(angle + 0.12); a blocked push puts it back at
  0.99 R, a little further on), so consecutive attempted crossings are closer than the door is wide.
  The dynamics are known and deterministic, so from its last position and action it computes the
  exact crossing angle of every push, and the reward says whether the push got out. Under the
  uniform prior the posterior of the door angle is then uniform on the interval `door_interval`:
  within a half-width of the successful crossing, beyond a half-width of the last blocked one
  (the earlier blocked ones rule out everything behind it), inside [door_angle_min, door_angle_max].
  It takes the interval's middle (the posterior mean) as the door and stays outside; episodes 2..N
  `go_out` through the arc that is open whichever door of the interval is the true one (the
  door's half-width less half the interval's length). If an episode ends before the door is
  found, the next one walks back to where the sweep stopped.

Episode boundaries are read from `obs["time"]` (t % L == 0 marks a fresh start).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs.escape_room import wall_crossing, wrap_angle
from envs.reference import ReferencePolicy, memoryless_policy
from envs.reference.point_robot import episode_start, step_index, toward

_SWEEP_AHEAD = 0.12  # rad: the sweep aims this far ahead along the wall ...
_SWEEP_OUT = 0.03  # ... and this far outside it (relative to R)
_WAYPOINT = 0.6  # relative radius of the waypoint inside the door
_AIM = 0.7  # go_out aims within this many door half-widths of the door's centre ...
_MARGIN = 0.85  # ... and goes straight when the crossing is within this many half-widths


def unit(angle: jax.Array) -> jax.Array:
    return jnp.stack([jnp.cos(angle), jnp.sin(angle)])


def go_out(pos: jax.Array, door: jax.Array, hw: jax.Array, params) -> jax.Array:
    """The action [2] that leaves the room through the arc [door - hw, door + hw], then stays outside.

    `params` is the inner EscapeRoomParams; `hw` the half-width of an arc known to be open (the
    door's for the oracle, less for an uncertain door). From inside it aims at the point just
    outside the wall (radius R + step / 2) at the arc angle nearest its own angle (within 0.7 hw
    of `door`) when the straight line there crosses the wall within 0.85 hw of `door`; otherwise
    at the waypoint 0.6 R u(door), from which the way out is radial. It checks again at every
    step, so it turns towards the door as soon as the straight line is clear.
    """
    radius = params.wall_radius
    outside = jnp.dot(pos, pos) > radius**2
    angle = jnp.arctan2(pos[1], pos[0])
    aim = door + jnp.clip(wrap_angle(angle - door), -_AIM * hw, _AIM * hw)
    exit_target = (radius + 0.5 * params.step_size) * unit(aim)
    crosses, _, point = wall_crossing(pos, exit_target, door, params)
    beta = jnp.arctan2(point[1], point[0])
    straight = crosses & (jnp.abs(wrap_angle(beta - door)) <= _MARGIN * hw)
    target = jnp.where(straight, exit_target, _WAYPOINT * radius * unit(door))
    action = toward(pos, target, params.step_size, params.action_bound)
    return jnp.where(outside, jnp.zeros(2, jnp.float32), action)


def oracle_policy(params) -> ReferencePolicy:
    """Straight out through the true door (`task`, the door angle) and stay outside."""

    def action(key, obs, task, params):
        del key
        p = params.env_params
        return go_out(obs["obs"], task, p.door_half_width, p)

    return memoryless_policy(action)


class EscapeBayesState(NamedTuple):
    found: jax.Array  # bool: the door has been found
    door: jax.Array  # float32 []: the door estimate (the middle of the posterior interval)
    open_width: jax.Array  # float32 []: half-width of the arc around `door` open for every door in it
    direction: jax.Array  # float32 []: sweep direction, +1 (counter-clockwise) or -1; 0 = not chosen
    sweep: jax.Array  # float32 []: wall angle where the sweep is (or starts), unwrapped
    sweeping: jax.Array  # bool: the agent is at the wall and sweeping (this episode)
    blocked: jax.Array  # float32 []: crossing angle of the last blocked push (unwrapped)
    last_pos: jax.Array  # float32 [2]: the observed position the last action was taken at
    last_action: jax.Array  # float32 [2]: the last action


def door_interval(crossing, blocked, direction, params):
    """(low, high): the door angles consistent with a sweep in `direction` whose pushes were blocked
    up to the crossing angle `blocked` and went through at `crossing`."""
    hw = params.door_half_width
    low = jnp.maximum(crossing - hw, params.door_angle_min)
    high = jnp.minimum(crossing + hw, params.door_angle_max)
    low = jnp.where(direction > 0, jnp.maximum(low, blocked + hw), low)
    high = jnp.where(direction < 0, jnp.minimum(high, blocked - hw), high)
    return low, high


def bayes_policy(params) -> ReferencePolicy:
    """Sweep along the wall in episode 1 until outside, then go straight out through the found door."""

    def init(key, params):
        del key, params
        zero = jnp.zeros((), jnp.float32)
        return EscapeBayesState(
            found=jnp.zeros((), bool),
            door=zero,
            open_width=zero,
            direction=zero,
            sweep=zero,
            sweeping=jnp.zeros((), bool),
            blocked=zero,
            last_pos=jnp.zeros(2, jnp.float32),
            last_action=jnp.zeros(2, jnp.float32),
        )

    def act(key, pstate, obs, task, params):
        del key, task  # observations only
        p = params.env_params
        radius = p.wall_radius
        pos, reward = obs["obs"], obs["reward"]
        angle = jnp.arctan2(pos[1], pos[0])
        first_step = step_index(obs, params) == 0

        # First step: sweep from the end of the door range nearer the start, towards the other end.
        forward = pos[0] >= 0
        direction = jnp.where(first_step, jnp.where(forward, 1.0, -1.0), pstate.direction)
        sweep = jnp.where(first_step, jnp.where(forward, p.door_angle_min, p.door_angle_max), pstate.sweep)
        blocked = jnp.where(first_step, sweep - direction * p.door_half_width, pstate.blocked)

        # What the last move did (the dynamics are known; the reward tells whether it got out).
        # This also holds across an episode boundary, where the observation is a fresh start.
        proposed = pstate.last_pos + p.step_size * jnp.clip(pstate.last_action, -p.action_bound, p.action_bound)
        exits = (
            ~first_step
            & (jnp.dot(pstate.last_pos, pstate.last_pos) <= radius**2)
            & (jnp.dot(proposed, proposed) > radius**2)
            & ~pstate.found
        )
        _, _, point = wall_crossing(pstate.last_pos, proposed, jnp.zeros(()), p)
        crossing = sweep + wrap_angle(jnp.arctan2(point[1], point[0]) - sweep)
        escaped = exits & (reward > 0)
        blocked = jnp.where(exits & (reward <= 0), crossing, blocked)
        low, high = door_interval(crossing, blocked, direction, p)
        consistent = low <= high  # always, up to float rounding
        estimate = jnp.where(consistent, 0.5 * (low + high), crossing)
        open_width = jnp.where(consistent, p.door_half_width - 0.5 * (high - low), 0.0)
        door = jnp.where(escaped, estimate, pstate.door)
        open_width = jnp.where(escaped, open_width, pstate.open_width)
        found = pstate.found | escaped

        # Sweeping: walk to the wall at `sweep`, then push outwards and along it.
        sweeping = pstate.sweeping & ~episode_start(obs, params)
        wall_point = p.wall_margin * radius * unit(sweep)
        sweeping = sweeping | (jnp.linalg.norm(pos - wall_point) <= 0.1 * p.step_size)
        sweep = jnp.where(sweeping, sweep + wrap_angle(angle - sweep), sweep)
        push = (radius * (1 + _SWEEP_OUT)) * unit(angle + direction * _SWEEP_AHEAD)
        target = jnp.where(sweeping, push, wall_point)
        sweep_action = toward(pos, target, p.step_size, p.action_bound)

        action = jnp.where(found, go_out(pos, door, open_width, p), sweep_action)
        new_state = EscapeBayesState(
            found=found,
            door=jnp.asarray(door, jnp.float32),
            open_width=jnp.asarray(open_width, jnp.float32),
            direction=jnp.asarray(direction, jnp.float32),
            sweep=jnp.asarray(sweep, jnp.float32),
            sweeping=sweeping,
            blocked=jnp.asarray(blocked, jnp.float32),
            last_pos=jnp.asarray(pos, jnp.float32),
            last_action=action,
        )
        return action, new_state

    return ReferencePolicy(init, act)


__all__ = ["oracle_policy", "bayes_policy", "door_interval", "go_out", "unit"]
