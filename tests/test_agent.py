"""The agent API: update (buckets, determinism, stop-gradients, vmap over seeds), policy, baseline,
and the modules built once per static layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

import envs
import mamba_jax as mj
from mamba_jax import agent as agent_lib
from mamba_jax.behavior import actor_loss, critic_loss
from mamba_jax.world_model import wm_value_and_grad

N, L = 2, 10
T = N * L


def tree_allclose(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, **kw)


@pytest.fixture(scope="module")
def setup(collect_point_robot):
    config = mj.get_config("debug")  # H0 = 8, T = 20, ramp 1000 env steps, buckets (14, 20)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    spaces_ = (env.observation_space(params), env.action_space(params))
    state = mj.init(jax.random.PRNGKey(0), config, *spaces_)
    batch = collect_point_robot(jax.random.PRNGKey(1), config.protocol.batch_size)
    return config, spaces_, state, batch, jax.jit(mj.update)


def _loss_of_parts(config, m):
    """The world-model loss as its metrics' weighted sum (the config's scales)."""
    return (config.world_model.dec_scale * m["wm/dec"] + config.world_model.reward_scale * m["wm/reward"] + config.world_model.cont_scale * m["wm/cont"]
            + config.world_model.kl_dyn_scale * m["wm/dyn"] + config.world_model.kl_rep_scale * m["wm/rep"])


def test_buckets_and_counters(setup):
    config, _, state, batch, update = setup
    assert mj.horizon_buckets(config) == (14, 20)
    s1, m1 = update(state, batch, jax.random.PRNGKey(2))
    assert float(m1["h_wm"]) == 8 and float(m1["h_bucket"]) == 14 and int(s1.updates) == 1
    s2, m2 = update(s1.replace(env_steps=jnp.int32(600)), batch, jax.random.PRNGKey(3))
    assert float(m2["h_wm"]) == 8 + 8 and float(m2["h_bucket"]) == 20 and int(s2.updates) == 2  # ceil(8 + 7.2)
    for m, s in ((m1, s1), (m2, s2)):
        np.testing.assert_allclose(m["wm/loss"], _loss_of_parts(config, m), rtol=1e-6)
        np.testing.assert_array_equal([m["retnorm/low"], m["retnorm/high"]], [s.retnorm.low, s.retnorm.high])
        want = max(float(m["retnorm/high"]) - float(m["retnorm/low"]), config.behavior.retnorm_max_inv)
        np.testing.assert_allclose(m["retnorm/scale"], want, rtol=1e-6)


@pytest.fixture(scope="module")
def wm_step(setup):
    """The world-model part of an update at env_steps 0 (h_wm = 8, bucket 14), computed apart from
    `update`: key -> (loss, new world-model params)."""
    config, _, state, batch, _ = setup
    cut = jax.tree.map(lambda x: x[:, :15], batch)
    tx = state.modules.optimisers["wm"]

    # params are jit arguments, never closed-over constants (see docs/agent.md: an XLA CPU miscompile)
    @jax.jit
    def step(params, opt_state, batch, key):
        k_wm, _, _ = jax.random.split(key, 3)  # update's split: world model, imagination starts, actor
        (loss, _), grads = wm_value_and_grad(state.world_model, params, batch, k_wm, jnp.int32(8), config)
        upd, _ = tx.update(grads, opt_state, params)
        return loss, jax.tree.map(lambda p, u: p + u, params, upd)

    return lambda key: step(state.params["wm"], state.opt_state["wm"], cut, key)


def test_update_is_deterministic_under_a_key(setup, wm_step):
    _, _, state, batch, update = setup
    a, ma = update(state, batch, jax.random.PRNGKey(7))
    b, mb = update(state, batch, jax.random.PRNGKey(7))
    tree_allclose(a.params, b.params, rtol=0, atol=0)
    tree_allclose(ma, mb, rtol=0, atol=0)
    # and the key is the one the world-model loss is computed with (its latents are sampled)
    for seed in (7, 8):
        _, m = update(state, batch, jax.random.PRNGKey(seed))
        np.testing.assert_allclose(m["wm/loss"], wm_step(jax.random.PRNGKey(seed))[0], rtol=1e-6)


def test_actor_and_critic_steps_leave_world_model_alone(setup, wm_step):
    """The world-model params after an update are those of the world-model step alone (computed apart),
    and changing the actor and critic (hence their losses and gradients) leaves them bit-identical: no
    actor/critic gradient reaches the world model."""
    config, _, state, batch, update = setup
    key = jax.random.PRNGKey(9)
    new, m = update(state, batch, key)
    bump = lambda t: jax.tree.map(lambda x: x + 0.1 * jnp.sign(x + 0.5), t)
    p = state.params
    other = state.replace(params=p | {"actor": bump(p["actor"]), "critic": bump(p["critic"])})
    new2, m2 = update(other, batch, key)
    # the bump does change what the actor and critic steps see (else the equality below would be vacuous)
    assert not np.isclose(m["actor/loss"], m2["actor/loss"]) and not np.isclose(m["critic/loss"], m2["critic/loss"])
    tree_allclose(new.params["wm"], new2.params["wm"], rtol=0, atol=0)
    _, want = wm_step(key)
    tree_allclose(new.params["wm"], want, rtol=1e-6, atol=1e-3 * config.optim.wm_lr)


def test_critic_targets_carry_no_gradient(setup):
    """d(critic loss)/d(world-model params) = 0 although the targets are computed by imagining with them."""
    config, _, state, _, _ = setup
    wm, beh, p = state.world_model, state.behavior, state.params
    # a reward head that is not zero (its output layer starts at zero), so that imagined states matter
    leaves, tree = jax.tree.flatten(p["wm"]["reward"])
    noise = [0.3 * jax.random.normal(jax.random.PRNGKey(i), x.shape) for i, x in enumerate(leaves)]
    p = p | {"wm": p["wm"] | {"reward": jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise)])}}
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
    # while the actor loss does see the dynamics and the reward and continue heads (backprop through the
    # imagined dynamics for continuous actions), and nothing of the encoder and decoder it never runs
    g_actor = jax.jit(jax.grad(lambda w, a, c: imagined(a, c, w)[0]))(p["wm"], p["actor"], p["critic"])
    largest = {name: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_actor[name])) for name in g_actor}
    assert largest["encoder"] == 0.0 and largest["decoder"] == 0.0, largest
    assert min(largest["rssm"], largest["reward"], largest["cont"]) > 1e-7, largest


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
    np.testing.assert_array_equal(carry["action"], a)  # continuous: the clipped action itself
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
    full = batch | {"action": mj.action_to_model(actions, 5, True)}
    windows = jax.tree.map(lambda x: x[:, 3 : 3 + base.protocol.window_length], full)
    return base, obs_space, state, windows, jax.jit(mj.update)


def test_discrete_baseline_update_and_policy(setup, baseline):
    config, _, _, batch, _ = setup
    base, _, state, windows, update = baseline
    assert [k for k, _, _ in state.obs_spec] == ["obs"] and state.discrete
    new, m = update(state, windows, jax.random.PRNGKey(22))
    assert float(m["h_wm"]) == base.protocol.window_length - 1
    np.testing.assert_allclose(m["wm/loss"], _loss_of_parts(base, m), rtol=1e-6)
    # the world model learns from the windows' observations alone (no reward or time inputs)
    assert [k for k in m if k.startswith("wm/dec_")] == ["wm/dec_obs"]
    obs = {k: v[:, 0] for k, v in batch["obs"].items()} | {"is_first": jnp.ones((config.protocol.batch_size,), bool)}
    a, carry = jax.jit(mj.policy, static_argnums=4)(new, mj.initial_carry(new, config.protocol.batch_size), obs, jax.random.PRNGKey(23), False)
    assert a.dtype == jnp.int32 and a.shape == (config.protocol.batch_size,) and int(a.min()) >= 0 and int(a.max()) < 5
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
    with pytest.raises(ValueError, match=r"continuous actions must have shape \[\.\.\., 3\]; got \(4, 2\)"):
        mj.action_to_model(jnp.zeros((4, 2)), 3, False)


def test_modules_are_built_once_and_states_share_a_tree_structure(setup, monkeypatch):
    """Two `init` calls give equal static fields (one tree structure: jax.tree.map over both works) and
    the same Modules object; tracing `update` builds no module or optimiser."""
    config, spaces_, state, batch, _ = setup
    other = mj.init(jax.random.PRNGKey(1), config, *spaces_)
    assert jax.tree.structure(other) == jax.tree.structure(state)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, other, state)  # raises if the structures differ
    assert mean.config == state.config and mean.obs_spec == state.obs_spec
    assert other.modules is state.modules and state.world_model is state.modules.world_model
    assert set(state.modules.optimisers) == {"wm", "actor", "critic"} and state.modules.ensemble is None

    def forbidden(*args, **kwargs):
        raise AssertionError("a module or optimiser was built while tracing update")

    misses = agent_lib.build_modules.cache_info().misses
    monkeypatch.setattr(agent_lib, "_optimisers", forbidden)
    monkeypatch.setattr(agent_lib.WorldModel, "create", forbidden)
    monkeypatch.setattr(agent_lib.Behavior, "create", forbidden)
    jax.jit(mj.update).lower(state, batch, jax.random.PRNGKey(0))  # traces every bucket's branch
    assert agent_lib.build_modules.cache_info().misses == misses
