"""humanoid_dir: MJX against MuJoCo's C engine (dynamics, observation and the reward formula
computed in numpy), termination by torso height, reset noise, bad actions, params errors.

Kept tiny: one jitted (unbatched) env step shared by every test; an MJX humanoid step takes
~20-30 s to compile on CPU.
"""

import re

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs.humanoid_dir import OBS_SIZE, HumanoidDir

# MJX (float32) against C (float64) over 3 env steps (15 physics steps) with foot contacts:
# measured max |qpos error| ~1e-6, obs error ~5e-5 on entries of size ~100, reward error ~1e-6.
QPOS_TOL = 1e-4
OBS_RTOL = 1e-4
REWARD_TOL = 1e-3


@pytest.fixture(scope="module")
def env():
    return HumanoidDir()


@pytest.fixture(scope="module")
def step(env):
    return jax.jit(env.step_env)


@pytest.fixture(scope="module")
def reset(env):
    return jax.jit(env.reset_to_task)


def _c_obs(d):
    return np.concatenate([d.qpos[2:], d.qvel, d.cinert.ravel(), d.cvel.ravel(), d.qfrc_actuator, d.cfrc_ext.ravel()])


def _c_com(m, d):
    return (m.body_mass[:, None] * d.xipos).sum(0)[:2] / m.body_mass.sum()


def test_model_constants(env):
    m = env.mj_model
    assert (m.nq, m.nv, m.nu) == (24, 23, 17)
    assert m.opt.timestep == pytest.approx(0.003)
    np.testing.assert_allclose(m.actuator_ctrlrange, np.tile([-0.4, 0.4], (17, 1)))
    assert env.default_params.frame_skip == 5 and env.default_params.action_scale == 0.4


def test_mjx_matches_c_engine_with_contacts(env, step, reset):
    """3 env steps from a state lowered onto the floor (contacts from the first physics step):
    state, observation and reward against MuJoCo C and the reward formula in numpy."""
    params = env.default_params
    phi = 2.0
    _, state = reset(jax.random.key(0), jnp.float32(phi), params)
    state = state.replace(qpos=state.qpos.at[2].add(-0.105))  # feet 2 mm above the floor
    # (a vertical shift leaves the stored xy centre of mass unchanged; checked against C below)
    m = env.mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = np.array(state.qpos)
    d.qvel[:] = np.array(state.qvel)
    mujoco.mj_forward(m, d)
    com = _c_com(m, d)
    np.testing.assert_allclose(np.array(state.com), com, atol=1e-6)
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 17)).astype(np.float32)
    contacts = 0
    contact_costs = []
    for a in actions:
        obs, state, reward, terminated, info = step(jax.random.key(1), state, a, params)
        d.ctrl[:] = 0.4 * a
        for _ in range(5):
            mujoco.mj_step(m, d)
            contacts += d.ncon
        mujoco.mj_rnePostConstraint(m, d)
        new_com = _c_com(m, d)
        expected = (
            0.25 * np.dot([np.cos(phi), np.sin(phi)], new_com - com) / 0.003
            - 0.1 * np.sum(d.ctrl**2)
            - min(5e-7 * np.sum(d.cfrc_ext**2), 10.0)
            + 5.0
        )
        com = new_com
        contact_costs.append(float(info["contact_cost"]))
        np.testing.assert_allclose(np.array(state.qpos), d.qpos, atol=QPOS_TOL)
        np.testing.assert_allclose(np.array(state.qvel), d.qvel, atol=QPOS_TOL * 10)
        c_obs = _c_obs(d)
        np.testing.assert_allclose(np.array(obs), c_obs, atol=OBS_RTOL * np.abs(c_obs).max())
        assert float(reward) == pytest.approx(expected, abs=REWARD_TOL)
        assert bool(terminated) == (not 1.0 <= d.qpos[2] <= 2.0)
    assert contacts > 0
    assert max(contact_costs) > 0.01  # the contact term was exercised (and matched C)


def test_termination_by_torso_height(env, step, reset):
    params = env.default_params
    _, state = reset(jax.random.key(2), jnp.float32(0.0), params)
    zero = jnp.zeros(17)
    for height, expected in ((1.4, False), (0.9, True), (2.2, True)):
        moved = state.replace(qpos=state.qpos.at[2].set(height))
        assert bool(env.is_terminated(moved, params)) == expected
        _, _, _, terminated, _ = step(jax.random.key(0), moved, zero, params)
        assert bool(terminated) == expected
    narrow = params.replace(healthy_z_min=1.45)
    assert bool(env.is_terminated(state, narrow))


def test_reset_distribution_and_observation(env, reset):
    params = env.default_params
    keys = jax.random.split(jax.random.key(3), 32)
    outs = [reset(k, jnp.float32(1.0), params) for k in keys]
    obs = np.stack([np.array(o) for o, _ in outs])
    qpos = np.stack([np.array(st.qpos) for _, st in outs])
    qvel = np.stack([np.array(st.qvel) for _, st in outs])
    noise_q = qpos - env.mj_model.qpos0
    assert np.all(np.abs(noise_q) <= 0.01 + 1e-6) and np.all(np.abs(qvel) <= 0.01 + 1e-6)
    assert np.std(noise_q) == pytest.approx(0.02 / np.sqrt(12), rel=0.1)  # U(-0.01, 0.01)
    assert obs.shape == (32, OBS_SIZE) and obs.dtype == np.float32
    space = env.observation_space(params)
    assert space.contains(jnp.asarray(obs[0])) and np.all(np.isfinite(obs))
    np.testing.assert_array_equal(obs[:, :22], qpos[:, 2:])
    # at rest: zero actuator force and no contact force, as after gym's reset
    assert np.all(obs[:, 22 + 23 + 140 + 84 :] == 0)
    tasks = jax.vmap(env.sample_task, in_axes=(0, None))(keys, params)
    assert tasks.shape == (32,) and float(tasks.min()) >= 0 and float(tasks.max()) < 2 * np.pi


def test_reset_observation_matches_c(env, reset):
    """The jitted reset against MuJoCo C's mj_forward. (No eager no-jit comparison here: op-by-op
    dispatch of mjx's kinematics takes ~30 s on CPU; reacher and render test jit == no-jit.)"""
    params = env.default_params
    obs, state = reset(jax.random.key(5), jnp.float32(0.5), params)
    # The reset noise by hand from the key: qpos0 + U(-0.01, 0.01), qvel U(-0.01, 0.01).
    key_q, key_v = jax.random.split(jax.random.key(5))
    m = env.mj_model
    noise_q = np.array(jax.random.uniform(key_q, (m.nq,), minval=-0.01, maxval=0.01))
    np.testing.assert_allclose(np.array(state.qpos), m.qpos0 + noise_q, atol=3e-7)
    np.testing.assert_array_equal(np.array(state.qvel), jax.random.uniform(key_v, (m.nv,), minval=-0.01, maxval=0.01))
    assert float(state.task) == 0.5 and int(state.time) == 0
    d = mujoco.MjData(m)
    d.qpos[:] = np.array(state.qpos)
    d.qvel[:] = np.array(state.qvel)
    mujoco.mj_forward(m, d)
    c_obs = _c_obs(d)
    np.testing.assert_allclose(np.array(obs), c_obs, atol=OBS_RTOL * np.abs(c_obs).max())
    np.testing.assert_allclose(np.array(state.com), _c_com(m, d), atol=1e-6)


def test_bad_actions_keep_state_finite_and_deterministic(env, step, reset):
    params = env.default_params
    _, state = reset(jax.random.key(4), jnp.float32(1.0), params)
    a = np.full(17, 0.3, np.float32)
    nan = a.copy()
    nan[::2] = np.nan
    zeroed = a.copy()
    zeroed[::2] = 0.0
    out_nan = step(jax.random.key(0), state, nan, params)
    out_zero = step(jax.random.key(0), state, zeroed, params)
    jax.tree.map(np.testing.assert_array_equal, out_nan[:4], out_zero[:4])
    out_huge = step(jax.random.key(0), state, np.full(17, 1e30, np.float32), params)
    out_one = step(jax.random.key(0), state, np.ones(17, np.float32), params)
    jax.tree.map(np.testing.assert_array_equal, out_huge[:4], out_one[:4])
    # The control cost by hand: 0.1 * sum((0.4 a)^2) with a clipped to [-1, 1] and NaN -> 0.
    assert float(out_huge[4]["ctrl_cost"]) == pytest.approx(0.1 * 17 * 0.4**2, rel=1e-6)
    assert float(out_nan[4]["ctrl_cost"]) == pytest.approx(0.1 * 8 * (0.4 * 0.3) ** 2, rel=1e-6)


@pytest.mark.parametrize("action", [jnp.zeros(2), jnp.zeros((17, 1)), jnp.zeros(17, jnp.int32), jnp.zeros(17, bool)])
def test_wrong_action_shape_or_dtype_is_refused(env, step, reset, action, assert_action_refused):
    """Refused by the raw env (eager, jitted, gymnax's step) and the wrapped env, naming (17,)
    floats; the check runs before the physics is traced."""
    got = jnp.asarray(action)
    message = (
        rf"HumanoidDir: invalid action \(shape {re.escape(str(got.shape))}, dtype {got.dtype}\); "
        r"expected a float array of shape \(17,\)"
    )
    params = env.default_params
    _, state = reset(jax.random.key(4), jnp.float32(1.0), params)
    meta, meta_params = envs.MetaEpisodeWrapper(env), envs.MetaParams(params, num_episodes=2, episode_length=3)
    meta_state = envs.MetaState(state, state.task, *(jnp.zeros((), jnp.int32),) * 3, *(jnp.zeros((), bool),) * 2)
    assert_action_refused(env, state, params, meta, meta_state, meta_params, action, message, step,
                          jax.random.key(0))


def test_registry_and_params_errors():
    env, params = envs.make("humanoid_dir")
    assert (params.num_episodes, params.episode_length) == (2, 200)
    assert env.task_shape(params) == ()
    for bad in ({"frame_skip": 0}, {"action_scale": 1.0}, {"healthy_z_min": 3.0}, {"velocity_divisor": 0.0}):
        with pytest.raises(ValueError, match="allowed"):
            envs.make("humanoid_dir", **bad)
    with pytest.raises(ValueError, match="allowed"):
        HumanoidDir(integrator="implicit")
