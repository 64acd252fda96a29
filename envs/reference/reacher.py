"""Reference policies for Reacher-K: an oracle that knows the goals.

`oracle_policy(params)` drives the fingertip to each goal in turn with joint-space PD control
towards whichever of the goal's two inverse-kinematics solutions is fewer radians away, and
stays on the last goal. It reads only the
state observation (fingertip xy, joint velocities) and the task; joint angles are recovered
from the fingertip by inverse kinematics, whose elbow-up / elbow-down ambiguity is settled from
two consecutive observations (MuJoCo's Euler step moves the joints by exactly dt * qvel_new, so
only the right branch maps back onto the previous fingertip). It mirrors the env's goal
counter: after an observation whose fingertip is within `goal_radius` of the current goal, the
next goal becomes current (the env advances on the same test); the counter restarts at every
episode start, which the policy reads from `obs["time"]`.

Not available for `reacher_pixels` (the fingertip and velocities are not in the image
observation); `oracle_policy` raises a ValueError there.
"""

import math

import jax
import jax.numpy as jnp
from flax import struct

from envs.reference import ReferencePolicy

LINKS = (0.12, 0.12)  # m: link lengths of envs/assets/reacher.xml
WRIST_LIMIT = math.radians(160.0)
DT = 0.02  # s: the model's timestep (one physics step per env step)
KP = jnp.array([8.0, 4.0])  # action units per rad (shoulder, wrist)
KD = jnp.array([0.8, 0.3])  # action units per rad/s
SIGN_EVIDENCE = 1e-4  # m: fingertip mismatch that decides the elbow branch


@struct.dataclass
class OracleState:
    goal_index: jax.Array  # int32: the policy's copy of the env's goal counter
    sign: jax.Array  # float32 +-1: the elbow branch (sign of the wrist angle)
    prev_tip: jax.Array  # [2] float32: the previous fingertip
    prev_valid: jax.Array  # bool: prev_tip belongs to the current episode


def inverse_kinematics(tip: jax.Array, sign: jax.Array) -> jax.Array:
    """Joint angles [2] placing the fingertip at tip [2] (closest reachable), wrist sign `sign`."""
    l1, l2 = LINKS
    r2 = jnp.sum(tip**2)
    cos2 = jnp.clip((r2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0)
    q2 = sign * jnp.minimum(jnp.arccos(cos2), WRIST_LIMIT)
    q1 = jnp.arctan2(tip[1], tip[0]) - jnp.arctan2(l2 * jnp.sin(q2), l1 + l2 * jnp.cos(q2))
    return jnp.stack([q1, q2])


def forward_kinematics(q: jax.Array) -> jax.Array:
    """Fingertip xy [2] of joint angles q [2]."""
    l1, l2 = LINKS
    return jnp.stack(
        [l1 * jnp.cos(q[0]) + l2 * jnp.cos(q[0] + q[1]), l1 * jnp.sin(q[0]) + l2 * jnp.sin(q[0] + q[1])]
    )


def _wrap(angle: jax.Array) -> jax.Array:
    return jnp.mod(angle + jnp.pi, 2 * jnp.pi) - jnp.pi


def oracle_policy(params) -> ReferencePolicy:
    """The goal-knowing oracle for `reacher` (params: the MetaParams of `envs.make`)."""
    env_params = params.env_params
    if env_params.pixels:
        raise ValueError("reacher oracle: needs the state observation; allowed: pixels=False")
    radius = env_params.goal_radius
    num_goals = env_params.num_goals

    def init(key, params):
        del key, params
        return OracleState(
            goal_index=jnp.zeros((), jnp.int32),
            sign=jnp.ones((), jnp.float32),
            prev_tip=jnp.zeros(2, jnp.float32),
            prev_valid=jnp.zeros((), bool),
        )

    def act(key, pstate, obs, task, params):
        del key
        tip, qvel = obs["obs"][:2], obs["obs"][2:4]
        total = params.num_episodes * params.episode_length
        t = jnp.round(obs["time"] * total).astype(jnp.int32)
        episode_start = t % params.episode_length == 0
        # the env's goal counter: advance after an observation within the current goal
        reached = jnp.linalg.norm(tip - task[pstate.goal_index]) < radius
        advanced = pstate.goal_index + jnp.logical_and(reached, pstate.goal_index < num_goals - 1).astype(jnp.int32)
        goal_index = jnp.where(episode_start, 0, advanced)
        # elbow branch: the one whose previous joint angles (q - dt * qvel) map onto prev_tip
        errors = jnp.stack(
            [
                jnp.linalg.norm(forward_kinematics(inverse_kinematics(tip, s) - DT * qvel) - pstate.prev_tip)
                for s in (1.0, -1.0)
            ]
        )
        valid = jnp.logical_and(pstate.prev_valid, jnp.logical_not(episode_start))
        decisive = jnp.logical_and(valid, jnp.abs(errors[0] - errors[1]) > SIGN_EVIDENCE)
        sign = jnp.where(decisive, jnp.where(errors[0] < errors[1], 1.0, -1.0), pstate.sign)
        q = inverse_kinematics(tip, sign)
        # of the goal's two IK solutions, head for the one with the shorter joint travel (both
        # joints move at once, and the 0.05 Nm motors against damping cap speeds at 5 rad/s)
        errors = jnp.stack(
            [
                jnp.stack([_wrap(target[0] - q[0]), target[1] - q[1]])
                for target in (inverse_kinematics(task[goal_index], s) for s in (1.0, -1.0))
            ]
        )
        error = errors[jnp.argmin(jnp.max(jnp.abs(errors), axis=1))]
        action = jnp.clip(KP * error - KD * qvel, -1.0, 1.0)
        new_state = OracleState(
            goal_index=goal_index,
            sign=sign.astype(jnp.float32),
            prev_tip=tip,
            prev_valid=jnp.ones((), bool),
        )
        return action, new_state

    return ReferencePolicy(init, act)
