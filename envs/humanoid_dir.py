"""Humanoid direction: run as fast as possible in a hidden direction phi (MuJoCo XLA).

The standard humanoid of gym's Humanoid-v2..v4 (`envs/assets/humanoid.xml`: 17 motors with
ctrlrange [-0.4, 0.4], timestep 0.003 s), stepped with `mujoco.mjx`, `frame_skip` = 5 physics
steps per env step. See docs/envs.md and the header of the XML for the changes made
for mjx (Newton solver; Euler integrator unless `HumanoidDir(integrator="rk4")`).

* Task: phi ~ U(0, 2 pi), shape ().
* Action: [17] in [-1, 1] (clipped; NaN entries become 0), scaled by `action_scale` = 0.4:
  ctrl = 0.4 * a, which spans exactly the model's ctrlrange [-0.4, 0.4]; the motor torque is
  gear * ctrl (gears 25..300 in the XML).
* Reward, exactly as the reference (VariBAD / MAMBA `HumanoidDirEnv`):
      0.25 * <(cos phi, sin phi), com_after - com_before> / 0.003      (forward term)
    - 0.1 * sum(ctrl^2)                                                 (control cost)
    - min(5e-7 * sum(cfrc_ext^2), 10)                                   (contact cost)
    + 5                                                                 (alive bonus)
  The displacement is divided by the *model timestep* 0.003 s (`model.opt.timestep` in the
  reference), not by the env step dt = 5 * 0.003 = 0.015 s, so the forward term is 1.25 x the
  velocity in m/s along phi; we keep the reference's constant (`velocity_divisor`).
  com is the mass-weighted mean of the bodies' centres of mass (`xipos`), read, like the
  reference, from the data of the last physics step (MuJoCo computes kinematics before
  integrating, so it is the com at the start of that step); com_before is the value stored
  at the previous env step (at reset: the com of the initial state). cfrc_ext is computed by
  `mjx.rne_postconstraint` after the last physics step (as gym's Humanoid-v4 calls
  `mj_rnePostConstraint`).
* Terminates when the torso height qpos[2] leaves [1, 2] (after the step).
* Observation (376, as gym's Humanoid-v4 / the reference): qpos[2:] (22), qvel (23),
  cinert (14 x 10), cvel (14 x 6), qfrc_actuator (23), cfrc_ext (14 x 6), all bodies
  including the world body, from the data after the step. The reset observation is that of
  gym's reset (`mj_forward` on fresh data): kinematics of the initial state, with
  qfrc_actuator = 0 (zero control) and cfrc_ext = 0 (MuJoCo fills it only on request).
* Episode start: qpos = qpos0 + U(-0.01, 0.01), qvel = U(-0.01, 0.01) (gym's reset noise).

The env state keeps qpos, qvel and qacc_warmstart (the solver's warm start, so consecutive
env steps match MuJoCo's C `mj_step` loop), plus the stored com; each step rebuilds an
`mjx.Data` from a template made once at construction, with the `mjx.Model`.
"""

import contextlib
import io
import pathlib

import jax
import jax.numpy as jnp
import mujoco
from flax import struct
from gymnax.environments import spaces

from envs.base import TaskEnv, check_fields

with contextlib.redirect_stdout(io.StringIO()):  # mjx prints a notice when its optional warp backend is absent
    from mujoco import mjx

ASSET = pathlib.Path(__file__).resolve().parent / "assets" / "humanoid.xml"
OBS_SIZE = 376

_INTEGRATORS = {"euler": mujoco.mjtIntegrator.mjINT_EULER, "rk4": mujoco.mjtIntegrator.mjINT_RK4}


@struct.dataclass
class HumanoidDirParams:
    forward_weight: float = 0.25
    velocity_divisor: float = 0.003  # s: the displacement is divided by this (the model timestep)
    ctrl_cost: float = 0.1
    contact_cost: float = 5e-7
    contact_cost_max: float = 10.0
    alive_bonus: float = 5.0
    healthy_z_min: float = 1.0  # m: the episode ends when the torso height leaves [min, max]
    healthy_z_max: float = 2.0
    action_scale: float = 0.4  # ctrl = action_scale * clip(action, -1, 1)
    reset_noise: float = 1e-2  # half width of the uniform noise on the initial qpos and qvel
    max_steps_in_episode: int = 200
    frame_skip: int = struct.field(pytree_node=False, default=5)  # physics steps per env step


@struct.dataclass
class HumanoidDirState:
    qpos: jax.Array  # [24] float32
    qvel: jax.Array  # [23] float32
    qacc_warmstart: jax.Array  # [23] float32: the constraint solver's warm start
    com: jax.Array  # [2] float32: xy of the centre of mass used as com_before by the next step
    task: jax.Array  # () float32: the direction phi
    time: jax.Array  # int32: step within the episode


class HumanoidDir(TaskEnv):
    """The humanoid direction task. `integrator`: "euler" (default) or "rk4" (gym's, slower)."""

    def __init__(self, xml_path: str | pathlib.Path = ASSET, integrator: str = "euler"):
        if integrator not in _INTEGRATORS:
            raise ValueError(f"HumanoidDir: invalid integrator={integrator!r}; allowed: {', '.join(_INTEGRATORS)}")
        model = mujoco.MjModel.from_xml_path(str(xml_path))
        model.opt.integrator = _INTEGRATORS[integrator]
        if model.nu != 17 or model.nq != 24:
            raise ValueError(f"{xml_path}: expected the 17-actuator humanoid, got nq={model.nq}, nu={model.nu}")
        self.mj_model = model  # the C model (tests step it with mujoco.mj_step)
        self.mjx_model = mjx.put_model(model)
        self._data0 = mjx.make_data(model)
        self._body_mass = jnp.asarray(model.body_mass, jnp.float32)

    @property
    def name(self) -> str:
        return "HumanoidDir"

    @property
    def default_params(self) -> HumanoidDirParams:
        return HumanoidDirParams()

    @property
    def num_actions(self) -> int:
        return 17

    def task_shape(self, params: HumanoidDirParams) -> tuple[int, ...]:
        return ()

    def check_params(self, params: HumanoidDirParams) -> None:
        names = ("frame_skip", "velocity_divisor", "action_scale", "reset_noise", "healthy_z_min", "healthy_z_max")
        check_fields(
            "humanoid_dir",
            {f: getattr(params, f) for f in names},
            {
                "frame_skip": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
                "velocity_divisor": (lambda v: v > 0, "> 0"),
                "action_scale": (lambda v: 0 < v <= 0.4, "in (0, 0.4] (the model's ctrlrange)"),
                "reset_noise": (lambda v: v >= 0, ">= 0"),
                "healthy_z_min": (lambda v: v < params.healthy_z_max, "< healthy_z_max"),
                "healthy_z_max": (lambda v: v > params.healthy_z_min, "> healthy_z_min"),
            },
        )

    # --- physics ---------------------------------------------------------------------------

    def _data(self, qpos, qvel, qacc_warmstart, ctrl):
        return self._data0.replace(qpos=qpos, qvel=qvel, qacc_warmstart=qacc_warmstart, ctrl=ctrl)

    def _com(self, data) -> jax.Array:
        """xy of the mass-weighted mean of the bodies' xipos (gym's `mass_center`). Returns [2]."""
        com = jnp.sum(self._body_mass[:, None] * data.xipos, axis=0) / jnp.sum(self._body_mass)
        return com[:2]

    def _kinematics(self, qpos, qvel):
        """mjx.Data with positions, com-based inertias and velocities of (qpos, qvel) computed."""
        m = self.mj_model
        data = self._data(qpos, qvel, jnp.zeros(m.nv, jnp.float32), jnp.zeros(m.nu, jnp.float32))
        data = mjx.com_pos(self.mjx_model, mjx.kinematics(self.mjx_model, data))
        return mjx.com_vel(self.mjx_model, data)

    @staticmethod
    def _field(data, name: str) -> jax.Array:
        """A field of mjx.Data that newer mjx versions keep in `data._impl` (cinert, cfrc_ext)."""
        impl = getattr(data, "_impl", None)
        return getattr(impl, name) if impl is not None and hasattr(impl, name) else getattr(data, name)

    def _observation(self, qpos, data, at_rest: bool = False) -> jax.Array:
        """[376]: qpos[2:], qvel, cinert, cvel, qfrc_actuator, cfrc_ext (the last two 0 if at_rest).

        qpos is passed apart: mjx's kinematics writes back a normalised root quaternion, while
        the reference observes the raw qpos of its reset."""
        forces = [data.qfrc_actuator, self._field(data, "cfrc_ext").ravel()]
        if at_rest:
            forces = [jnp.zeros_like(x) for x in forces]
        cinert, cvel = self._field(data, "cinert").ravel(), self._field(data, "cvel").ravel()
        return jnp.concatenate([qpos[2:], data.qvel, cinert, cvel, *forces]).astype(jnp.float32)

    def physics_step(self, state: HumanoidDirState, ctrl: jax.Array, frame_skip: int):
        """`frame_skip` mjx steps with constant ctrl [17], then rne_postconstraint. Returns mjx.Data."""
        data = self._data(state.qpos, state.qvel, state.qacc_warmstart, ctrl)
        data = jax.lax.fori_loop(0, frame_skip, lambda _, d: mjx.step(self.mjx_model, d), data)
        return mjx.rne_postconstraint(self.mjx_model, data)

    # --- gymnax interface ------------------------------------------------------------------

    def sample_task(self, key: jax.Array, params: HumanoidDirParams) -> jax.Array:
        return jax.random.uniform(key, (), minval=0.0, maxval=2.0 * jnp.pi)

    def reset_to_task(self, key, task, params: HumanoidDirParams):
        key_q, key_v = jax.random.split(key)
        c = params.reset_noise
        m = self.mj_model
        qpos = jnp.asarray(m.qpos0, jnp.float32) + jax.random.uniform(key_q, (m.nq,), minval=-c, maxval=c)
        qvel = jax.random.uniform(key_v, (m.nv,), minval=-c, maxval=c)
        zeros = jnp.zeros(m.nv, jnp.float32)
        data = self._kinematics(qpos, qvel)
        state = HumanoidDirState(
            qpos=qpos,
            qvel=qvel,
            qacc_warmstart=zeros,
            com=self._com(data),
            task=jnp.asarray(task, jnp.float32),
            time=jnp.zeros((), jnp.int32),
        )
        return self._observation(qpos, data, at_rest=True), state

    def step_env(self, key, state: HumanoidDirState, action, params: HumanoidDirParams):
        del key
        action = self.check_action(action, params).astype(jnp.float32)
        action = jnp.clip(jnp.where(jnp.isnan(action), 0.0, action), -1.0, 1.0)
        ctrl = params.action_scale * action
        data = self.physics_step(state, ctrl, params.frame_skip)
        com = self._com(data)
        direction = jnp.stack([jnp.cos(state.task), jnp.sin(state.task)])
        forward = params.forward_weight * jnp.dot(direction, com - state.com) / params.velocity_divisor
        ctrl_cost = params.ctrl_cost * jnp.sum(ctrl**2)
        contact_force = jnp.sum(self._field(data, "cfrc_ext") ** 2)
        contact_cost = jnp.minimum(params.contact_cost * contact_force, params.contact_cost_max)
        reward = forward - ctrl_cost - contact_cost + params.alive_bonus
        new_state = HumanoidDirState(
            qpos=data.qpos,
            qvel=data.qvel,
            qacc_warmstart=data.qacc_warmstart,
            com=com,
            task=state.task,
            time=state.time + 1,
        )
        terminated = self.is_terminated(new_state, params)
        info = {"forward_reward": forward, "ctrl_cost": ctrl_cost, "contact_cost": contact_cost}
        return self._observation(data.qpos, data), new_state, reward.astype(jnp.float32), terminated, info

    def get_obs(self, state: HumanoidDirState, params=None, key=None) -> jax.Array:
        """The observation of a state as at a reset: positions, velocities, cinert and cvel from the
        kinematics of (qpos, qvel); qfrc_actuator and cfrc_ext 0 (a step returns its own observation)."""
        return self._observation(state.qpos, self._kinematics(state.qpos, state.qvel), at_rest=True)

    def is_terminated(self, state: HumanoidDirState, params: HumanoidDirParams) -> jax.Array:
        z = state.qpos[2]
        return jnp.logical_or(z < params.healthy_z_min, z > params.healthy_z_max)

    def action_space(self, params=None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (17,), jnp.float32)

    def observation_space(self, params=None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (OBS_SIZE,), jnp.float32)
