"""Reacher-K: MJX against MuJoCo's C engine, reward and goal advance by hand, start and task
distributions, spaces, jit / vmap / determinism, bad actions, params errors, the registry."""

import math
import re

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import envs
from envs import render
from envs.reacher import Reacher, ReacherParams, ReacherState

DT = 0.02
# MJX (float32) against MuJoCo C (float64) over 50 steps with random torques hitting the wrist
# limit: measured max |error| about 1e-6 rad (rad/s); the bound leaves 100x headroom.
MJX_VS_C_TOL = 1e-4


@pytest.fixture(scope="module")
def env():
    return Reacher()


@pytest.fixture(scope="module")
def fns(env):
    """Jitted functions shared by the tests (each compiles once per module)."""
    return {
        "step": jax.jit(env.step_env),
        "reset": jax.jit(env.reset_to_task),
        "rollout": jax.jit(lambda qpos, qvel, ctrls: _physics_rollout(env, qpos, qvel, ctrls)),
    }


def _physics_rollout(env, qpos, qvel, ctrls):
    """Steps the physics with ctrls [T, 2]; returns (qpos [T, 2], qvel [T, 2]) after each step."""

    def body(carry, ctrl):
        carry = env.physics_step(carry[0], carry[1], ctrl)
        return carry, carry

    return jax.lax.scan(body, (qpos, qvel), ctrls)[1]


def _state(qpos, task, goal_index=0, qvel=(0.0, 0.0)):
    return ReacherState(
        qpos=jnp.asarray(qpos, jnp.float32),
        qvel=jnp.asarray(qvel, jnp.float32),
        goal_index=jnp.asarray(goal_index, jnp.int32),
        task=jnp.asarray(task, jnp.float32),
        time=jnp.zeros((), jnp.int32),
    )


def _c_step(env, qpos, qvel, ctrl):
    """One step of MuJoCo's C engine; returns (qpos, qvel, fingertip xy) in float64."""
    data = mujoco.MjData(env.mj_model)
    data.qpos[:] = qpos
    data.qvel[:] = qvel
    data.ctrl[:] = ctrl
    mujoco.mj_step(env.mj_model, data)
    mujoco.mj_kinematics(env.mj_model, data)
    finger = mujoco.mj_name2id(env.mj_model, mujoco.mjtObj.mjOBJ_BODY, "finger")
    return data.qpos.copy(), data.qvel.copy(), data.xpos[finger, :2].copy()


def test_model_constants(env):
    m = env.mj_model
    assert env.link_lengths == pytest.approx((0.12, 0.12))
    assert env.wrist_range == pytest.approx((-math.radians(160), math.radians(160)))
    assert m.opt.timestep == pytest.approx(DT)
    assert m.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_CONTACT
    np.testing.assert_allclose(m.dof_damping, [0.01, 0.01])
    np.testing.assert_allclose(m.actuator_gear[:, 0], [0.05, 0.05])
    np.testing.assert_allclose(m.actuator_ctrlrange, [[-1, 1], [-1, 1]])
    assert not m.jnt_limited[0] and m.jnt_limited[1]


def test_mjx_matches_c_engine(env, fns):
    rng = np.random.default_rng(0)
    ctrls = rng.uniform(-1, 1, (50, 2))
    ctrls[:25, 1] = 1.0  # drive the wrist into its +160 deg limit
    q0 = np.array([0.4, 2.6])
    qs, vs = fns["rollout"](jnp.asarray(q0, jnp.float32), jnp.zeros(2, jnp.float32), jnp.asarray(ctrls, jnp.float32))
    data = mujoco.MjData(env.mj_model)
    data.qpos[:] = q0
    c_q, c_v = [], []
    for u in ctrls:
        data.ctrl[:] = u
        mujoco.mj_step(env.mj_model, data)
        c_q.append(data.qpos.copy())
        c_v.append(data.qvel.copy())
    c_q, c_v = np.array(c_q), np.array(c_v)
    assert c_q[:, 1].max() > math.radians(159)  # the limit was reached
    np.testing.assert_allclose(np.array(qs), c_q, atol=MJX_VS_C_TOL)
    np.testing.assert_allclose(np.array(vs), c_v, atol=MJX_VS_C_TOL)


def test_fingertip_matches_c_kinematics(env):
    m = env.mj_model
    data = mujoco.MjData(m)
    finger = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "finger")
    hand = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hand")
    for q in np.random.default_rng(1).uniform(-2.7, 2.7, (5, 2)):
        data.qpos[:] = q
        mujoco.mj_kinematics(m, data)
        elbow, tip = env.elbow_and_tip(jnp.asarray(q, jnp.float32))
        np.testing.assert_allclose(np.array(tip), data.xpos[finger, :2], atol=1e-6)
        np.testing.assert_allclose(np.array(elbow), data.xpos[hand, :2], atol=1e-6)


def _expected_reward(env, qpos, ctrl, goal, radius=0.05, cost=0.01):
    _, _, tip = _c_step(env, qpos, (0.0, 0.0), ctrl)
    d = np.linalg.norm(tip - np.asarray(goal))
    return max(1.0 - d / radius, 0.0) - cost * np.sum(np.square(ctrl)), d


def test_reward_and_advance_on_intermediate_goal(env, fns):
    params = ReacherParams(num_goals=3)
    qpos = np.array([0.3, -1.1])
    tip0 = np.array(env.fingertip(jnp.asarray(qpos, jnp.float32)))
    task = np.stack([tip0, -tip0, [0.1, 0.1]])  # goal 0 under the fingertip, goal 1 far away
    ctrl = np.array([0.2, -0.3])
    expected, d = _expected_reward(env, qpos, ctrl, task[0])
    assert d < 0.01 and expected > 0.8  # a small move off the goal, still well inside it
    _, state, reward, terminated, _ = fns["step"](jax.random.key(0), _state(qpos, task), ctrl, params)
    assert float(reward) == pytest.approx(expected, abs=1e-4)
    assert int(state.goal_index) == 1 and not bool(terminated)
    # goal 1 is 2 |tip| away: zero distance reward, index stays, only the control cost remains
    _, state2, reward2, _, _ = fns["step"](jax.random.key(0), state, jnp.zeros(2), params)
    assert float(reward2) == 0.0 and int(state2.goal_index) == 1


def test_exact_goal_with_zero_torque_pays_one(env, fns):
    params = ReacherParams(num_goals=3)
    qpos = np.array([-2.0, 0.7])
    tip0 = np.array(env.fingertip(jnp.asarray(qpos, jnp.float32)))
    task = np.stack([tip0, [0.0, -0.15], [0.1, 0.0]])
    _, state, reward, _, _ = fns["step"](jax.random.key(0), _state(qpos, task), jnp.zeros(2), params)
    assert float(reward) == pytest.approx(1.0, abs=1e-5)  # zero torque from rest: the arm does not move
    assert int(state.goal_index) == 1


def test_last_goal_pays_every_step_without_advancing(env, fns):
    params = ReacherParams(num_goals=3)
    qpos = np.array([1.0, 0.5])
    tip0 = np.array(env.fingertip(jnp.asarray(qpos, jnp.float32)))
    state = _state(qpos, np.stack([[0.0, 0.15], [0.1, 0.0], tip0]), goal_index=2)
    for _ in range(3):
        _, state, reward, _, _ = fns["step"](jax.random.key(0), state, jnp.zeros(2), params)
        assert float(reward) == pytest.approx(1.0, abs=1e-5)
        assert int(state.goal_index) == 2


def test_partial_reward_and_radius_edge(env, fns):
    params = ReacherParams(num_goals=3)
    qpos = np.array([0.0, 0.0])  # fingertip at (0.24, 0)
    for offset, advanced in ((0.025, 1), (0.06, 0)):
        task = np.array([[0.24 - offset, 0.0], [0.0, 0.1], [0.1, 0.0]])
        _, state, reward, _, _ = fns["step"](jax.random.key(0), _state(qpos, task), jnp.zeros(2), params)
        assert float(reward) == pytest.approx(max(1 - offset / 0.05, 0.0), abs=1e-5)
        assert int(state.goal_index) == advanced


def test_start_distribution(env):
    params = ReacherParams(num_goals=4)
    keys = jax.random.split(jax.random.key(3), 2000)
    tasks = jax.vmap(env.sample_task, in_axes=(0, None))(keys, params)
    _, states = jax.vmap(env.reset_to_task, in_axes=(0, 0, None))(keys, tasks, params)
    q = np.array(states.qpos)
    assert np.all(np.abs(q[:, 0]) <= math.pi) and np.all(np.abs(q[:, 1]) <= math.radians(160) + 1e-6)
    # uniform: mean |angle| is half the range (std error ~ 0.02 rad)
    assert np.mean(np.abs(q[:, 0])) == pytest.approx(math.pi / 2, abs=0.1)
    assert np.mean(np.abs(q[:, 1])) == pytest.approx(math.radians(80), abs=0.1)
    assert np.all(np.array(states.qvel) == 0) and np.all(np.array(states.goal_index) == 0)
    assert tasks.shape == (2000, 4, 2)
    r = np.linalg.norm(np.array(tasks), axis=-1)
    assert r.max() <= 0.195 + 1e-6
    assert np.mean(r) == pytest.approx(2 / 3 * 0.195, abs=0.003)  # uniform disk: E r = 2R/3
    assert np.mean(r < 0.195 / 2) == pytest.approx(0.25, abs=0.02)  # area fraction of the inner disk


@pytest.mark.parametrize("pixels", [False, True])
def test_observation_in_space(env, pixels):
    params = ReacherParams(pixels=pixels)
    obs, state = env.reset_env(jax.random.key(0), params)
    space = env.observation_space(params)
    assert obs.shape == space.shape and obs.dtype == space.dtype
    assert space.contains(obs)
    if pixels:
        elbow, tip = env.elbow_and_tip(state.qpos)
        np.testing.assert_array_equal(np.array(obs), np.array(render.render_arm(elbow, tip)))
    else:
        np.testing.assert_allclose(np.array(obs[:2]), np.array(env.fingertip(state.qpos)))


def test_bad_actions_are_safe(env, fns):
    params = ReacherParams()
    task = env.sample_task(jax.random.key(1), params)
    _, state = fns["reset"](jax.random.key(2), task, params)
    out_nan = fns["step"](jax.random.key(0), state, jnp.array([jnp.nan, 0.5]), params)
    out_zero = fns["step"](jax.random.key(0), state, jnp.array([0.0, 0.5]), params)
    out_huge = fns["step"](jax.random.key(0), state, jnp.array([1e30, -jnp.inf]), params)
    out_one = fns["step"](jax.random.key(0), state, jnp.array([1.0, -1.0]), params)
    for a, b in ((out_nan, out_zero), (out_huge, out_one)):
        jax.tree.map(np.testing.assert_array_equal, a[:3], b[:3])
        assert all(np.all(np.isfinite(np.array(x))) for x in jax.tree.leaves(a[:3]))


def test_jit_matches_no_jit_and_the_c_engine(env, fns):
    """reset: jit == no-jit. step: the jitted step matches the C engine and the reward formula;
    an eager mjx.step takes ~30 s of op-by-op dispatch on CPU, so the no-jit comparison of the
    step is left to the pieces it is made of (render, reset)."""
    params = ReacherParams()
    key = jax.random.key(7)
    task = env.sample_task(key, params)
    obs_j, state_j = fns["reset"](key, task, params)
    obs_n, state_n = env.reset_to_task(key, task, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), (obs_j, state_j), (obs_n, state_n))
    action = jnp.array([0.3, -0.8])
    out = fns["step"](key, state_j, action, params)
    qpos, qvel, tip = _c_step(env, np.array(state_j.qpos, np.float64), np.zeros(2), np.array(action, np.float64))
    np.testing.assert_allclose(np.array(out[1].qpos), qpos, atol=MJX_VS_C_TOL)
    np.testing.assert_allclose(np.array(out[0]), np.concatenate([tip, qvel]), atol=MJX_VS_C_TOL)
    # The reward by hand from the C engine's fingertip and the first goal.
    d = np.linalg.norm(tip - np.array(task[0]))
    np.testing.assert_allclose(float(out[4]["distance"]), d, atol=MJX_VS_C_TOL)
    assert float(out[2]) == pytest.approx(max(1 - d / 0.05, 0.0) - 0.01 * (0.3**2 + 0.8**2), abs=1e-3)


def test_vmap_matches_loop(env, fns):
    params = ReacherParams()
    keys = jax.random.split(jax.random.key(11), 4)
    tasks = jax.vmap(env.sample_task, in_axes=(0, None))(keys, params)
    _, states = jax.vmap(env.reset_to_task, in_axes=(0, 0, None))(keys, tasks, params)
    actions = jax.random.uniform(jax.random.key(12), (4, 2), minval=-1, maxval=1)
    batched = jax.jit(jax.vmap(env.step_env, in_axes=(0, 0, 0, None)))(keys, states, actions, params)
    for i in range(4):
        state_i = jax.tree.map(lambda x: x[i], states)
        single = fns["step"](keys[i], state_i, actions[i], params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a[i], b, atol=1e-6), batched[:4], single[:4]
        )


@pytest.mark.parametrize(
    "action", [jnp.zeros(3), jnp.zeros((1, 2)), jnp.zeros(17), jnp.array([1, 0]), np.array([1, 0], np.int64)]
)
def test_wrong_action_shape_or_dtype_is_refused(env, fns, action, assert_action_refused):
    """Refused by the raw env (eager, jitted, gymnax's step) and the wrapped env, naming (2,) floats;
    the check runs before the physics is traced."""
    got = jnp.asarray(action)
    message = (
        rf"Reacher: invalid action \(shape {re.escape(str(got.shape))}, dtype {got.dtype}\); "
        r"expected a float array of shape \(2,\)"
    )
    params = ReacherParams()
    state = _state((0.0, 0.0), np.zeros((3, 2)))
    meta, meta_params = envs.MetaEpisodeWrapper(env), envs.MetaParams(params, num_episodes=2, episode_length=3)
    meta_state = envs.MetaState(state, state.task, *(jnp.zeros((), jnp.int32),) * 3, *(jnp.zeros((), bool),) * 2)
    assert_action_refused(env, state, params, meta, meta_state, meta_params, action, message, fns["step"],
                          jax.random.key(0))
    # Under vmap the check sees one example: [4, 2] int actions are 4 int actions of shape (2,).
    states = jax.tree.map(lambda x: jnp.stack([x] * 4), state)
    with pytest.raises(ValueError, match=r"shape \(2,\), dtype int32\); expected a float array"):
        jax.vmap(env.step_env, in_axes=(None, 0, 0, None))(jax.random.key(0), states, jnp.zeros((4, 2), int), params)


def test_registry_and_params_errors():
    env, params = envs.make("reacher", num_goals=2)
    assert (params.num_episodes, params.episode_length) == (3, 300)
    assert env.task_shape(params) == (2, 2)
    assert envs.make("reacher")[1].env_params.num_goals == 3
    _, pix = envs.make("reacher_pixels")
    assert pix.env_params.pixels and env.observation_space(pix).spaces["obs"].shape == (64, 64, 3)
    for bad in ({"num_goals": 0}, {"goal_radius": 0.0}, {"goal_sample_radius": 0.3}, {"ctrl_cost": -1.0}):
        with pytest.raises(ValueError, match="allowed"):
            envs.make("reacher", **bad)


def test_oracle_inverse_kinematics_round_trip():
    from envs.reference.reacher import forward_kinematics, inverse_kinematics

    for q in np.random.default_rng(2).uniform([-3, -2.7], [3, 2.7], (10, 2)):
        q = jnp.asarray(q, jnp.float32)
        back = np.array(inverse_kinematics(forward_kinematics(q), jnp.sign(q[1])))
        wrapped = np.mod(back - np.array(q) + np.pi, 2 * np.pi) - np.pi  # the shoulder angle is mod 2 pi
        np.testing.assert_allclose(wrapped, 0.0, atol=1e-4)


def test_oracle_reaches_every_goal_in_order():
    """Intermediate goals pay at most 1 each (the index advances on the first step inside), so a
    return above K - 1 + 10 means the last goal was reached and held for 10+ steps."""
    from envs.reference import evaluate_policy, get_policy

    env, params = envs.make("reacher", num_goals=3, num_episodes=2, episode_length=150)
    oracle = get_policy("reacher", "oracle", env, params)
    run = jax.jit(evaluate_policy, static_argnums=(0, 2, 4))
    out = run(env, params, oracle, jax.random.key(0), 4)
    assert np.all(np.array(out["episode_returns"]) > 3 - 1 + 10)


def test_pixel_oracle_reads_the_arm_from_the_image(env):
    """The pixel oracle's estimates on rendered images of random arms: fingertip within 5 mm
    (half a pixel is 4.7 mm) and the elbow branch right whenever the wrist is bent > 10 deg."""
    from envs.reference.reacher import elbow_sign_from_image, tip_from_image

    estimate = jax.jit(lambda image: (tip_from_image(image), *elbow_sign_from_image(image, tip_from_image(image))))
    qs = np.random.default_rng(3).uniform([-np.pi, -2.79], [np.pi, 2.79], (20, 2)).astype(np.float32)
    for q in qs:
        elbow, tip = env.elbow_and_tip(jnp.asarray(q))
        image = render.render_arm(elbow, tip)
        tip_hat, sign, decisive = estimate(image)
        assert np.linalg.norm(np.array(tip_hat) - np.array(tip)) < 0.005
        if abs(q[1]) > math.radians(10):
            assert bool(decisive) and float(sign) == np.sign(q[1])


def test_pixel_variant_through_the_meta_wrapper():
    """gymnax's auto-resetting `step` across episode and meta-episode boundaries keeps the image
    observation uint8 [64, 64, 3], in its space, and equal to a rendering of the arm."""
    env, params = envs.make("reacher_pixels", num_goals=2, num_episodes=2, episode_length=2)
    obs, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    space = env.observation_space(params).spaces["obs"]
    for t in range(5):  # episode boundary after step 2, meta-episode end (auto-reset) after step 4
        obs, state, reward, terminated, truncated, info = step(jax.random.key(t), state, jnp.array([0.5, -0.5]), params)
        assert obs["obs"].dtype == jnp.uint8 and bool(space.contains(obs["obs"]))
        elbow, tip = env.inner.elbow_and_tip(state.env_state.qpos)
        diff = np.abs(np.array(obs["obs"], np.int32) - np.array(render.render_arm(elbow, tip), np.int32))
        assert diff.max() <= 1
        assert bool(truncated) == (t == 3) and bool(info["episode_start"]) == (t in (1, 3))
