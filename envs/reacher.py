"""Reacher-K: a planar two-link arm that must touch K hidden goals in order (MuJoCo XLA).

The arm is DeepMind control suite's reacher (links 0.12 + 0.12 m, shoulder unlimited, wrist
limited to +-160 deg, torque motors with gear 0.05 and controls in [-1, 1], joint damping 0.01,
timestep 0.02 s, contacts off), shipped as `envs/assets/reacher.xml` and stepped with
`mujoco.mjx` (one physics step per env step). See docs/envs.md.

* Task: K goals, [K, 2], each uniform in the disk of radius `goal_sample_radius` (0.195 m):
  radius 0.195 * sqrt(U), angle U(0, 2 pi). They must be reached in order.
* Action: [2] torques in [-1, 1] (clipped; NaN entries are replaced by 0 before the clip,
  so a NaN action is a zero torque and the state stays finite).
* Reward, with d the distance from the fingertip (after the physics step) to the current
  goal: r = max(1 - d / goal_radius, 0) - ctrl_cost * sum(a^2) (a: the clipped action).
  After the reward, if d < goal_radius and the current goal is not the last, the next goal
  becomes current: an intermediate goal pays one step, the last one pays every step.
* Episode start: shoulder U(-pi, pi), wrist U(wrist range), velocities 0, goal index 0.
* Observation: fingertip xy and the two joint velocities, [4] float32; with
  `params.pixels` a [64, 64, 3] uint8 image of the arm (`envs.render`), goals invisible.
* Never terminates (episodes end on the time limit).

The MuJoCo model is compiled once, at construction, into an `mjx.Model` held by the env (a
constant of every jitted function); the env state keeps only qpos / qvel, and each step
rebuilds an `mjx.Data` from a template (exact: with contacts off the only constraint is the
wrist limit, which the Newton solver solves to convergence from any warm start).
"""

import contextlib
import io
import pathlib

import jax
import jax.numpy as jnp
import mujoco
from flax import struct
from gymnax.environments import spaces

from envs import render
from envs.base import TaskEnv, check_fields

with contextlib.redirect_stdout(io.StringIO()):  # mjx prints a notice when its optional warp backend is absent
    from mujoco import mjx

ASSET = pathlib.Path(__file__).resolve().parent / "assets" / "reacher.xml"


@struct.dataclass
class ReacherParams:
    goal_radius: float = 0.05  # m: a goal is reached when the fingertip is closer than this
    goal_sample_radius: float = 0.195  # m: goals are uniform in the disk of this radius
    ctrl_cost: float = 0.01  # weight of sum(a^2) in the reward
    max_steps_in_episode: int = 300
    num_goals: int = struct.field(pytree_node=False, default=3)  # K (sets the task shape)
    pixels: bool = struct.field(pytree_node=False, default=False)  # image observations


@struct.dataclass
class ReacherState:
    qpos: jax.Array  # [2] float32: shoulder, wrist angles (rad)
    qvel: jax.Array  # [2] float32: their velocities (rad/s)
    goal_index: jax.Array  # int32: the current goal, 0..K-1
    task: jax.Array  # [K, 2] float32: the goals
    time: jax.Array  # int32: step within the episode


class Reacher(TaskEnv):
    """The multi-goal reacher; `Reacher(xml_path)` may load another MJCF of the same arm."""

    def __init__(self, xml_path: str | pathlib.Path = ASSET):
        model = mujoco.MjModel.from_xml_path(str(xml_path))
        if model.nq != 2 or model.nv != 2 or model.nu != 2:
            raise ValueError(f"{xml_path}: expected a 2-joint, 2-actuator arm, got nq={model.nq}, nu={model.nu}")
        self.mj_model = model  # the C model (tests step it with mujoco.mj_step)
        self.mjx_model = mjx.put_model(model)
        self._data0 = mjx.make_data(model)
        hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
        finger = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "finger")
        wrist = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "wrist")
        self.link_lengths = (float(model.body_pos[hand][0]), float(model.body_pos[finger][0]))
        self.wrist_range = (float(model.jnt_range[wrist][0]), float(model.jnt_range[wrist][1]))

    @property
    def name(self) -> str:
        return "Reacher"

    @property
    def default_params(self) -> ReacherParams:
        return ReacherParams()

    @property
    def num_actions(self) -> int:
        return 2

    def task_shape(self, params: ReacherParams) -> tuple[int, ...]:
        return (params.num_goals, 2)

    def check_params(self, params: ReacherParams) -> None:
        check_fields(
            "reacher",
            {f: getattr(params, f) for f in ("num_goals", "goal_radius", "goal_sample_radius", "ctrl_cost", "pixels")},
            {
                "num_goals": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
                "goal_radius": (lambda v: v > 0, "> 0"),
                "goal_sample_radius": (lambda v: 0 < v <= sum(self.link_lengths), f"in (0, {sum(self.link_lengths)}]"),
                "ctrl_cost": (lambda v: v >= 0, ">= 0"),
                "pixels": (lambda v: isinstance(v, bool), "True or False"),
            },
        )

    # --- kinematics -------------------------------------------------------------------------

    def elbow_and_tip(self, qpos: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Planar forward kinematics: qpos [..., 2] -> (wrist xy [..., 2], fingertip xy [..., 2])."""
        l1, l2 = self.link_lengths
        a1 = qpos[..., 0]
        a12 = qpos[..., 0] + qpos[..., 1]
        elbow = l1 * jnp.stack([jnp.cos(a1), jnp.sin(a1)], axis=-1)
        tip = elbow + l2 * jnp.stack([jnp.cos(a12), jnp.sin(a12)], axis=-1)
        return elbow, tip

    def fingertip(self, qpos: jax.Array) -> jax.Array:
        """Fingertip xy [..., 2] of joint angles qpos [..., 2]."""
        return self.elbow_and_tip(qpos)[1]

    def physics_step(self, qpos: jax.Array, qvel: jax.Array, ctrl: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One MuJoCo step (mjx.step) with controls ctrl [2]. Returns (qpos [2], qvel [2])."""
        data = self._data0.replace(qpos=qpos, qvel=qvel, ctrl=ctrl)
        data = mjx.step(self.mjx_model, data)
        return data.qpos, data.qvel

    # --- gymnax interface -------------------------------------------------------------------

    def sample_task(self, key: jax.Array, params: ReacherParams) -> jax.Array:
        key_r, key_a = jax.random.split(key)
        radius = params.goal_sample_radius * jnp.sqrt(jax.random.uniform(key_r, (params.num_goals,)))
        angle = jax.random.uniform(key_a, (params.num_goals,), minval=0.0, maxval=2.0 * jnp.pi)
        return jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)

    def reset_to_task(self, key: jax.Array, task: jax.Array, params: ReacherParams) -> tuple[jax.Array, ReacherState]:
        key_s, key_w = jax.random.split(key)
        shoulder = jax.random.uniform(key_s, (), minval=-jnp.pi, maxval=jnp.pi)
        wrist = jax.random.uniform(key_w, (), minval=self.wrist_range[0], maxval=self.wrist_range[1])
        state = ReacherState(
            qpos=jnp.stack([shoulder, wrist]).astype(jnp.float32),
            qvel=jnp.zeros(2, jnp.float32),
            goal_index=jnp.zeros((), jnp.int32),
            task=jnp.asarray(task, jnp.float32),
            time=jnp.zeros((), jnp.int32),
        )
        return self.get_obs(state, params), state

    def step_env(
        self, key: jax.Array, state: ReacherState, action: jax.Array, params: ReacherParams
    ) -> tuple[jax.Array, ReacherState, jax.Array, jax.Array, dict]:
        del key
        action = self.check_action(action, params).astype(jnp.float32)
        action = jnp.clip(jnp.where(jnp.isnan(action), 0.0, action), -1.0, 1.0)
        qpos, qvel = self.physics_step(state.qpos, state.qvel, action)
        goal = state.task[state.goal_index]
        distance = jnp.linalg.norm(self.fingertip(qpos) - goal)
        reward = jnp.maximum(1.0 - distance / params.goal_radius, 0.0) - params.ctrl_cost * jnp.sum(action**2)
        advance = jnp.logical_and(distance < params.goal_radius, state.goal_index < params.num_goals - 1)
        state = state.replace(
            qpos=qpos,
            qvel=qvel,
            goal_index=state.goal_index + advance.astype(jnp.int32),
            time=state.time + 1,
        )
        info = {"distance": distance, "goal_index": state.goal_index}
        return self.get_obs(state, params), state, reward.astype(jnp.float32), jnp.array(False), info

    def get_obs(self, state: ReacherState, params: ReacherParams | None = None, key=None) -> jax.Array:
        params = self.default_params if params is None else params
        elbow, tip = self.elbow_and_tip(state.qpos)
        if params.pixels:
            return render.render_arm(elbow, tip)
        return jnp.concatenate([tip, state.qvel]).astype(jnp.float32)

    def is_terminated(self, state: ReacherState, params: ReacherParams) -> jax.Array:
        return jnp.array(False)

    def action_space(self, params: ReacherParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def observation_space(self, params: ReacherParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        if params.pixels:
            return spaces.Box(0, 255, (render.IMAGE_SIZE, render.IMAGE_SIZE, 3), jnp.uint8)
        reach = sum(self.link_lengths)
        low = jnp.array([-reach, -reach, -jnp.inf, -jnp.inf], jnp.float32)
        return spaces.Box(low, -low, (4,), jnp.float32)

    def state_space(self, params: ReacherParams | None = None) -> spaces.Dict:
        params = self.default_params if params is None else params
        k = params.num_goals
        r = params.goal_sample_radius
        return spaces.Dict(
            {
                "qpos": spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32),
                "qvel": spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32),
                "goal_index": spaces.Discrete(k),
                "task": spaces.Box(-r, r, (k, 2), jnp.float32),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )
