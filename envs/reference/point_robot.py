"""Reference policies for the point robot (`point_robot`, `point_robot_wind`).

* Oracle (reads the task): walks straight to the goal at full speed and stays there; with wind it
  keeps correcting (every step aims at the goal from the observed position).
* Bayes reference (observations only): starts a sweep at the goal circle's first angle
  (goal_angle_min = 0: the point (1, 0)) and walks along the circle towards goal_angle_max (pi),
  one step of arc per step. The first positive reward r reveals the distance d = 1 - r between the
  observed position p and the goal, which lies on the goal circle; of the (at most) two points of
  the circle at distance d from p it takes the one ahead in the sweep direction (the other one,
  behind, was already swept), preferring a point inside the goal-angle range. It then walks to that
  estimate and stays; later rewarded steps refine the estimate (the candidate nearest the current
  estimate), which keeps it accurate under wind. Episodes 2..N go straight to the estimate.
  Without wind the estimate is exact up to float32 rounding, so episodes 2..N match the oracle.
  If the sweep passes goal_angle_max without a reward (only possible with wind) it starts again.

Episode boundaries are read from `obs["time"]`: at t = time * T with t % L == 0 the observation is
a fresh episode's start (the origin) while `obs["reward"]` belongs to the previous episode's last
position, so no estimate is made from it.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs.reference import ReferencePolicy, memoryless_policy


def toward(pos: jax.Array, target: jax.Array, step_size, action_bound) -> jax.Array:
    """The action [2] that moves from `pos` straight towards `target` at full speed.

    The direction is kept (the vector is scaled so that its largest component is `action_bound`),
    and the target is reached exactly when it is within one step (no wind).
    """
    v = (target - pos) / step_size
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(v)) / action_bound)
    return (v / scale).astype(jnp.float32)


def step_index(obs: dict, params) -> jax.Array:
    """t, the step of the meta-episode the observation belongs to (int32 []), from obs["time"]."""
    total = params.num_episodes * params.episode_length
    return jnp.round(obs["time"] * total).astype(jnp.int32)


def episode_start(obs: dict, params) -> jax.Array:
    """Whether the observation is the first of an episode (bool [])."""
    return step_index(obs, params) % params.episode_length == 0


def oracle_policy(params) -> ReferencePolicy:
    """Straight to the goal `task` [2] and stay."""

    def action(key, obs, task, params):
        del key
        p = params.env_params
        return toward(obs["obs"], task, p.step_size, p.action_bound)

    return memoryless_policy(action)


class PointBayesState(NamedTuple):
    found: jax.Array  # bool: a goal estimate exists
    goal: jax.Array  # float32 [2]: the goal estimate
    sweep: jax.Array  # float32 []: angle of the sweep's current point on the goal circle


def goal_candidates(pos: jax.Array, distance: jax.Array, radius) -> tuple[jax.Array, jax.Array]:
    """Angles (ahead, behind) = angle(pos) +- gamma of the points of the circle of `radius` at
    `distance` from `pos` (the closest point's angle, twice, when the circles do not meet)."""
    rho = jnp.linalg.norm(pos)
    safe_rho = jnp.where(rho > 0, rho, 1.0)
    cos_gamma = jnp.clip((radius**2 + rho**2 - distance**2) / (2 * radius * safe_rho), -1.0, 1.0)
    gamma = jnp.where(rho > 0, jnp.arccos(cos_gamma), 0.0)
    phi = jnp.arctan2(pos[1], pos[0])
    return phi + gamma, phi - gamma


def bayes_policy(params) -> ReferencePolicy:
    """Sweep the goal half-circle in episode 1, then go straight to the inferred goal."""

    def init(key, params):
        del key
        p = params.env_params
        return PointBayesState(
            found=jnp.zeros((), bool),
            goal=jnp.zeros(2, jnp.float32),
            sweep=jnp.asarray(p.goal_angle_min, jnp.float32),
        )

    def act(key, pstate, obs, task, params):
        del key, task  # observations only
        p = params.env_params
        radius = p.goal_circle_radius
        pos, reward = obs["obs"], obs["reward"]
        on_circle = lambda angle: radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])  # noqa: E731

        # A reward observed with its own position (not at an episode start) gives a goal estimate.
        measured = (reward > 0) & ~episode_start(obs, params)
        ahead, behind = goal_candidates(pos, 1.0 - reward, radius)
        in_range = lambda a: (a >= p.goal_angle_min) & (a <= p.goal_angle_max)  # noqa: E731
        first = jnp.where(in_range(ahead) | ~in_range(behind), ahead, behind)
        g_ahead, g_behind = on_circle(ahead), on_circle(behind)
        nearer = jnp.where(
            jnp.linalg.norm(g_ahead - pstate.goal) <= jnp.linalg.norm(g_behind - pstate.goal), ahead, behind
        )
        estimate = on_circle(jnp.where(pstate.found, nearer, first))
        goal = jnp.where(measured, estimate, pstate.goal)
        found = pstate.found | measured

        # The sweep: advance one step of arc once the current sweep point is (nearly) reached.
        reached = jnp.linalg.norm(pos - on_circle(pstate.sweep)) <= 0.6 * p.step_size
        sweep = pstate.sweep + jnp.where(reached, p.step_size / radius, 0.0)
        sweep = jnp.where(sweep > p.goal_angle_max + p.goal_disk_radius / radius, p.goal_angle_min, sweep)

        target = jnp.where(found, goal, on_circle(sweep))
        action = toward(pos, target, p.step_size, p.action_bound)
        new_state = PointBayesState(found=found, goal=goal.astype(jnp.float32), sweep=sweep.astype(jnp.float32))
        return action, new_state

    return ReferencePolicy(init, act)


__all__ = ["oracle_policy", "bayes_policy", "toward", "goal_candidates", "step_index", "episode_start"]
