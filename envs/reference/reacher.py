"""Reference policies for Reacher-K: an oracle that knows the goals.

`oracle_policy(params)` drives the fingertip to each goal in turn with joint-space PD control
towards whichever of the goal's two inverse-kinematics solutions is fewer radians away, and
stays on the last goal. On `reacher` it reads only the state observation (fingertip xy, joint
velocities) and the task; joint angles are recovered
from the fingertip by inverse kinematics, whose elbow-up / elbow-down ambiguity is settled from
two consecutive observations (MuJoCo's Euler step moves the joints by exactly dt * qvel_new, so
only the right branch maps back onto the previous fingertip). It mirrors the env's goal
counter: after an observation whose fingertip is within `goal_radius` of the current goal, the
next goal becomes current (the env advances on the same test); the counter restarts at every
episode start, which the policy reads from `obs["time"]`.

For `reacher_pixels` the same controller reads the image instead: the fingertip is the
centroid of the fully fingertip-coloured pixels, the elbow branch is the IK solution whose
elbow lands on a link-coloured pixel, joint velocities are finite differences of the
estimated joint angles, and the goal counter advances when the observed reward plus the
control cost of the previous action is positive (exactly the env's test d < goal_radius).
"""

import math

import jax
import jax.numpy as jnp
from flax import struct

from envs import render
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


def _pd_action(q: jax.Array, qvel: jax.Array, goal: jax.Array) -> jax.Array:
    """Joint PD torque [2] towards the goal's IK solution with the shorter joint travel (both
    joints move at once, and the 0.05 N m motors against damping cap speeds at 5 rad/s)."""
    errors = jnp.stack(
        [jnp.stack([_wrap(t[0] - q[0]), t[1] - q[1]]) for t in (inverse_kinematics(goal, s) for s in (1.0, -1.0))]
    )
    error = errors[jnp.argmin(jnp.max(jnp.abs(errors), axis=1))]
    return jnp.clip(KP * error - KD * qvel, -1.0, 1.0)


def oracle_policy(params) -> ReferencePolicy:
    """The goal-knowing oracle for `reacher` / `reacher_pixels` (params: `envs.make`'s MetaParams)."""
    env_params = params.env_params
    if env_params.pixels:
        return _pixel_oracle(params)
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
        action = _pd_action(inverse_kinematics(tip, sign), qvel, task[goal_index])
        new_state = OracleState(
            goal_index=goal_index,
            sign=sign.astype(jnp.float32),
            prev_tip=tip,
            prev_valid=jnp.ones((), bool),
        )
        return action, new_state

    return ReferencePolicy(init, act)


@struct.dataclass
class PixelOracleState:
    goal_index: jax.Array  # int32: the policy's copy of the env's goal counter
    sign: jax.Array  # float32 +-1: the elbow branch
    prev_q: jax.Array  # [2] float32: the previous joint-angle estimate
    prev_action: jax.Array  # [2] float32: the previous action (its control cost is in the reward)
    prev_valid: jax.Array  # bool: prev_q belongs to the current episode


def _pixel(image_size: int, xy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(row, column) of the pixel containing world point xy [2] (envs.render's camera)."""
    pixel = 2 * render.HALF_WIDTH / image_size
    col = jnp.clip(jnp.floor((xy[0] + render.HALF_WIDTH) / pixel), 0, image_size - 1).astype(jnp.int32)
    row = jnp.clip(jnp.floor((render.HALF_WIDTH - xy[1]) / pixel), 0, image_size - 1).astype(jnp.int32)
    return row, col


def tip_from_image(image: jax.Array) -> jax.Array:
    """Fingertip xy [2]: centroid of the pixels of exactly the fingertip colour in image [H, W, 3]."""
    size = image.shape[0]
    mask = jnp.all(image == render.to_uint8(render.TIP_COLOUR), axis=-1).astype(jnp.float32)
    coords = render.pixel_centres(size, render.HALF_WIDTH)  # [H, W, 2]
    return jnp.sum(coords * mask[..., None], axis=(0, 1)) / jnp.maximum(jnp.sum(mask), 1.0)


def elbow_sign_from_image(image: jax.Array, tip: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sign, decisive): the IK branch whose elbow pixel has the link colour, if exactly one does."""
    link = render.to_uint8(render.LINK_COLOUR).astype(jnp.int32)
    background = render.to_uint8(render.BACKGROUND).astype(jnp.int32)

    def on_link(sign):
        q = inverse_kinematics(tip, sign)
        row, col = _pixel(image.shape[0], LINKS[0] * jnp.stack([jnp.cos(q[0]), jnp.sin(q[0])]))
        colour = image[row, col].astype(jnp.int32)
        return jnp.sum((colour - link) ** 2) < jnp.sum((colour - background) ** 2)

    plus, minus = on_link(1.0), on_link(-1.0)
    return jnp.where(plus, 1.0, -1.0), jnp.logical_xor(plus, minus)


def _pixel_oracle(params) -> ReferencePolicy:
    """The oracle for `reacher_pixels`: state estimated from the image (see the module docstring)."""
    env_params = params.env_params
    num_goals = env_params.num_goals
    ctrl_cost = env_params.ctrl_cost

    def init(key, params):
        del key, params
        return PixelOracleState(
            goal_index=jnp.zeros((), jnp.int32),
            sign=jnp.ones((), jnp.float32),
            prev_q=jnp.zeros(2, jnp.float32),
            prev_action=jnp.zeros(2, jnp.float32),
            prev_valid=jnp.zeros((), bool),
        )

    def act(key, pstate, obs, task, params):
        del key
        image = obs["obs"]
        total = params.num_episodes * params.episode_length
        t = jnp.round(obs["time"] * total).astype(jnp.int32)
        episode_start = t % params.episode_length == 0
        # the env advanced iff d < goal_radius, i.e. iff the distance part of the reward was > 0
        # (1e-6: the env's and our float32 control costs may differ in the last bit; a distance
        # part below 1e-6 means d within 5e-8 m of goal_radius)
        reached = obs["reward"] + ctrl_cost * jnp.sum(pstate.prev_action**2) > 1e-6
        advanced = pstate.goal_index + jnp.logical_and(reached, pstate.goal_index < num_goals - 1).astype(jnp.int32)
        goal_index = jnp.where(episode_start, 0, advanced)
        tip = tip_from_image(image)
        sign, decisive = elbow_sign_from_image(image, tip)
        sign = jnp.where(decisive, sign, pstate.sign)
        q = inverse_kinematics(tip, sign)
        valid = jnp.logical_and(pstate.prev_valid, jnp.logical_not(episode_start))
        qvel = jnp.where(valid, jnp.stack([_wrap(q[0] - pstate.prev_q[0]), q[1] - pstate.prev_q[1]]) / DT, 0.0)
        action = _pd_action(q, qvel, task[goal_index])
        new_state = PixelOracleState(
            goal_index=goal_index,
            sign=sign.astype(jnp.float32),
            prev_q=q,
            prev_action=action,
            prev_valid=jnp.ones((), bool),
        )
        return action, new_state

    return ReferencePolicy(init, act)
