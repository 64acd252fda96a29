"""The agent API: update (buckets, determinism, stop-gradients, vmap over seeds), policy, baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

import envs
import mamba_jax as mj
from mamba_jax.behavior import actor_loss, critic_loss
from test_world_model import collect_point_robot

N, L = 2, 10
T = N * L


def tree_allclose(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, **kw)


@pytest.fixture(scope="module")
def setup():
    config = mj.get_config("debug")  # H0 = 8, T = 20, ramp 1000 env steps, buckets (14, 20)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    spaces_ = (env.observation_space(params), env.action_space(params))
    state = mj.init(jax.random.PRNGKey(0), config, *spaces_)
    batch = collect_point_robot(jax.random.PRNGKey(1), config.batch_size)
    return config, spaces_, state, batch, jax.jit(mj.update)


def test_buckets_and_counters(setup):
    config, _, state, batch, update = setup
    assert mj.horizon_buckets(config) == (14, 20)
    s1, m1 = update(state, batch, jax.random.PRNGKey(2))
    assert float(m1["h_wm"]) == 8 and float(m1["h_bucket"]) == 14 and int(s1.updates) == 1
    s2, m2 = update(s1.replace(env_steps=jnp.int32(600)), batch, jax.random.PRNGKey(3))
    assert float(m2["h_wm"]) == 8 + 8 and float(m2["h_bucket"]) == 20 and int(s2.updates) == 2  # ceil(8 + 7.2)
    for m in (m1, m2):
        for k, v in m.items():
            assert np.isfinite(v), k
    assert float(m1["retnorm/scale"]) >= 1.0
    assert float(m1["actor/grad_norm"]) > 0 and float(m1["critic/grad_norm"]) > 0


def test_update_is_deterministic_under_a_key(setup):
    _, _, state, batch, update = setup
    a, ma = update(state, batch, jax.random.PRNGKey(7))
    b, mb = update(state, batch, jax.random.PRNGKey(7))
    c, _ = update(state, batch, jax.random.PRNGKey(8))
    tree_allclose(a.params, b.params, rtol=0, atol=0)
    tree_allclose(ma, mb, rtol=0, atol=0)
    assert not np.allclose(a.params["actor"]["params"]["Head_0"]["Dense_0"]["kernel"],
                           c.params["actor"]["params"]["Head_0"]["Dense_0"]["kernel"])


def test_actor_and_critic_steps_leave_world_model_alone(setup):
    """Changing the actor and critic (hence their losses and gradients) leaves the world-model
    params after an update bit-identical: no actor/critic gradient reaches the world model."""
    _, _, state, batch, update = setup
    key = jax.random.PRNGKey(9)
    new, m = update(state, batch, key)
    bump = lambda t: jax.tree.map(lambda x: x + 0.1 * jnp.sign(x + 0.5), t)
    p = state.params
    other = state.replace(params=p | {"actor": bump(p["actor"]), "critic": bump(p["critic"])})
    new2, m2 = update(other, batch, key)
    assert not np.isclose(m["actor/loss"], m2["actor/loss"]) and not np.isclose(m["critic/loss"], m2["critic/loss"])
    tree_allclose(new.params["wm"], new2.params["wm"], rtol=0, atol=0)
    moved = lambda k: any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(new.params[k]), jax.tree.leaves(state.params[k])))
    assert moved("wm") and moved("actor") and moved("critic") and moved("slow_critic")


def test_critic_targets_carry_no_gradient(setup):
    """d(critic loss)/d(world-model params) = 0 although the targets are computed by imagining with them."""
    config, _, state, _, _ = setup
    wm, beh, p = state.world_model, state.behavior, state.params
    start = jax.tree.map(lambda x: x + 0.0, mj.initial_carry(state, 6)["state"])
    weight = jnp.ones((6,))

    # params are jit arguments, never closed-over constants (see docs/agent.md: an XLA CPU miscompile)
    def imagined(actor, critic, wm_params):
        return actor_loss(actor, beh, wm, wm_params, critic, start, weight, state.retnorm, jax.random.PRNGKey(0))

    def loss(wm_params, actor, critic, slow):
        _, (traj, _, _) = imagined(actor, critic, wm_params)
        return critic_loss(critic, beh, slow, traj, weight)[0]

    g = jax.jit(jax.grad(loss))(p["wm"], p["actor"], p["critic"], p["slow_critic"])
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))
    # while the actor loss does see the world model (dynamics backprop for continuous actions)
    g_actor = jax.jit(jax.grad(lambda w, a, c: imagined(a, c, w)[0]))(p["wm"], p["actor"], p["critic"])
    total = sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g_actor))
    assert np.isfinite(total) and total > 0


def test_policy_resets_bounds_and_jit(setup):
    config, _, state, batch, _ = setup
    policy = jax.jit(mj.policy, static_argnums=4)
    B = 3
    obs = {k: v[:B, 0] for k, v in batch["obs"].items()} | {"is_first": jnp.ones((B,), bool)}
    carry0 = mj.initial_carry(state, B)
    key = jax.random.PRNGKey(13)
    a, carry = policy(state, carry0, obs, key, False)
    assert a.shape == (B, 2) and a.dtype == jnp.float32 and float(jnp.abs(a).max()) <= 1.0
    eager_a, eager_carry = mj.policy(state, carry0, obs, key, False)
    np.testing.assert_allclose(a, eager_a, rtol=1e-5, atol=1e-6)
    tree_allclose(carry, eager_carry, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry["action"], mj.action_to_model(state, a))
    # step on without reset, then reset: the reset result equals acting from the initial carry
    obs1 = {k: v[:B, 1] for k, v in batch["obs"].items()} | {"is_first": jnp.zeros((B,), bool)}
    _, carry = policy(state, carry, obs1, jax.random.PRNGKey(14), False)
    a_reset, _ = policy(state, carry, obs, key, False)
    np.testing.assert_allclose(a_reset, a, rtol=1e-5, atol=1e-6)
    # deterministic: the mode does not depend on the action key part
    d1, _ = policy(state, carry0, obs, key, True)
    d2, _ = policy(state, carry0, obs, key, True)
    np.testing.assert_array_equal(d1, d2)


@pytest.fixture(scope="module")
def baseline(setup):
    """DreamerV3 baseline (mamba=False) with a discrete action space: windows, no reward/time inputs."""
    config, (obs_space, _), _, batch, _ = setup
    base = config.replace(mamba=False).validate()
    state = mj.init(jax.random.PRNGKey(20), base, obs_space, spaces.Discrete(5))
    actions = jax.random.randint(jax.random.PRNGKey(21), batch["is_first"].shape, 0, 5)
    full = batch | {"action": mj.action_to_model(state, actions)}
    windows = jax.tree.map(lambda x: x[:, 3 : 3 + base.window_length], full)
    return base, obs_space, state, windows, jax.jit(mj.update)


def test_discrete_baseline_update_and_policy(setup, baseline):
    config, _, _, batch, _ = setup
    base, _, state, windows, update = baseline
    assert [k for k, _, _ in state.obs_spec] == ["obs"] and state.discrete
    new, m = update(state, windows, jax.random.PRNGKey(22))
    assert float(m["h_wm"]) == base.window_length - 1 and np.isfinite(float(m["wm/loss"]))
    assert float(m["actor/grad_norm"]) > 0
    obs = {k: v[:, 0] for k, v in batch["obs"].items()} | {"is_first": jnp.ones((config.batch_size,), bool)}
    a, carry = jax.jit(mj.policy, static_argnums=4)(new, mj.initial_carry(new, config.batch_size), obs, jax.random.PRNGKey(23), False)
    assert a.dtype == jnp.int32 and a.shape == (config.batch_size,) and int(a.min()) >= 0 and int(a.max()) < 5
    np.testing.assert_allclose(carry["action"], jax.nn.one_hot(a, 5))


def test_vmap_over_seeds_equals_separate_calls(baseline):
    base, obs_space, _, windows, update = baseline
    keys = jax.random.split(jax.random.PRNGKey(11), 2)
    singles = [mj.init(k, base, obs_space, spaces.Discrete(5)) for k in keys]
    states = jax.tree.map(lambda *x: jnp.stack(x), *singles)
    batches = jax.tree.map(lambda x: jnp.stack([x, x[::-1]]), windows)
    upd_keys = jax.random.split(jax.random.PRNGKey(12), 2)
    h = mj.wm_horizon(base, 0)  # unbatched horizon (in_axes None), see docs/api.md
    vstates, vmetrics = jax.jit(jax.vmap(mj.update, in_axes=(0, 0, 0, None)))(states, batches, upd_keys, h)
    for i in range(2):
        s, m = update(singles[i], jax.tree.map(lambda x: x[i], batches), upd_keys[i])
        tree_allclose(jax.tree.map(lambda x: x[i], vstates.params), s.params, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(vmetrics["wm/loss"][i], m["wm/loss"], rtol=1e-5)
        # the actor loss is a small difference (~2e-4 here): float32 rounding of its terms is ~1e-7
        np.testing.assert_allclose(vmetrics["actor/loss"][i], m["actor/loss"], rtol=1e-4, atol=1e-6)


def test_bad_batches_and_spaces_raise(setup):
    config, (obs_space, act_space), state, batch, _ = setup
    with pytest.raises(ValueError, match="needs whole meta-episodes of T \\+ 1 = 21"):
        mj.update(state, jax.tree.map(lambda x: x[:, :10], batch), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="lacks 'is_terminal'"):
        mj.update(state, {k: v for k, v in batch.items() if k != "is_terminal"}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="spaces.Dict"):
        mj.init(jax.random.PRNGKey(0), config, act_space, act_space)
    with pytest.raises(ValueError, match="needs action_dim"):
        mj.action_to_model(config, jnp.array([1, 2]))


@pytest.mark.parametrize("option", ["grounded_imagination", "imag_latent_mode"])
def test_update_with_another_imagined_step(setup, option):
    """Config.grounded_imagination (WorldModel.grounded_img_step) and Config.imag_latent_mode (the prior's
    mode, straight-through): the update stays finite, the actor gets a gradient, and the imagined returns
    differ from those of the prior's samples with the same params."""
    config, spaces_, _, batch, _ = setup
    state = mj.init(jax.random.PRNGKey(0), config.replace(reward_from_deter=True, **{option: True}), *spaces_)
    new, metrics = jax.jit(mj.update)(state, batch, jax.random.PRNGKey(2))
    for k, v in metrics.items():
        assert np.isfinite(v), k
    assert float(metrics["actor/grad_norm"]) > 0 and int(new.updates) == 1
    sampled = mj.init(jax.random.PRNGKey(0), config.replace(reward_from_deter=True), *spaces_)  # same params
    _, sampled_metrics = jax.jit(mj.update)(sampled, batch, jax.random.PRNGKey(2))
    assert float(metrics["imag/return_mean"]) != float(sampled_metrics["imag/return_mean"])
