"""The optional exploration bonus (mamba_jax/explore.py): ensemble disagreement and its loss,
and the agent with and without it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
import mamba_jax as mj
from mamba_jax.behavior import actor_loss
from mamba_jax.explore import Ensemble, ensemble_loss
from mamba_jax.rssm import feature, observe
from mamba_jax.sequence import gather_time, sample_times
from mamba_jax.world_model import wm_value_and_grad

N, L = 2, 10


@pytest.fixture(scope="module")
def setup(collect_point_robot):
    config = mj.get_config("debug", expl_scale=0.5, expl_members=3)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    spaces_ = (env.observation_space(params), env.action_space(params))
    state = mj.init(jax.random.PRNGKey(0), config, *spaces_)
    batch = collect_point_robot(jax.random.PRNGKey(1), config.protocol.batch_size)
    return config, spaces_, state, batch


def _posterior(state, batch):
    """The world model's posterior over the batch, leaves [B, S, ...]."""
    wm = state.world_model
    embed = wm.embed(state.params["wm"], batch["obs"])
    post, _ = observe(wm.rssm, state.params["wm"]["rssm"], embed, batch["action"], batch["is_first"],
                      jax.random.PRNGKey(2))
    return post


def _loss_inputs(config, state, batch):
    """(ensemble, its params, the batch's posterior, idx [B, S - 1] of every transition t -> t + 1)
    for checking ensemble_loss on the replay batch by hand."""
    ens = Ensemble.create(config, state.world_model.feature_size, state.action_dim)
    B, S = batch["is_first"].shape
    return ens, state.params["explore"], _posterior(state, batch), jnp.broadcast_to(jnp.arange(S - 1), (B, S - 1))


def test_disagreement_is_the_members_std(setup):
    config, _, state, _ = setup
    ens = Ensemble.create(config, state.world_model.feature_size, state.action_dim)
    params = state.params["explore"]
    feat = jax.random.normal(jax.random.PRNGKey(0), (5, 3, ens.feature_size))
    act = jax.random.uniform(jax.random.PRNGKey(1), (5, 3, ens.action_dim))
    pred = np.asarray(ens.predict(params, feat, act), np.float64)  # [K, 5, 3, S*C]
    assert pred.shape == (3, 5, 3, config.nets.stoch * config.nets.classes)
    d = np.asarray(ens.disagreement(params, feat, act))
    mean = pred.mean(0)
    np.testing.assert_allclose(d, np.sqrt(((pred - mean) ** 2).mean(0)).mean(-1), rtol=1e-5)
    assert (d > 0).all()
    same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), params)  # every member = member 0
    np.testing.assert_allclose(ens.disagreement(same, feat, act), 0.0, atol=1e-6)


def test_ensemble_loss_counts_transitions_inside_the_horizon_only(setup):
    config, _, state, batch = setup
    ens, params, post, idx = _loss_inputs(config, state, batch)
    B, S = batch["is_first"].shape
    is_first = batch["is_first"].at[:, 5].set(True)  # a sequence start at t = 5: transition 4 -> 5 is out
    h_wm = 12
    loss, metrics = ensemble_loss(ens, params, post, batch["action"], is_first, h_wm, idx)
    # by hand: mean over members and outputs of the squared error, averaged over t + 1 <= 12, t != 4
    feat = np.asarray(feature(post))
    probs = np.asarray(jax.nn.softmax(post["logits"], -1)).reshape(B, S, -1)
    pred = np.asarray(ens.predict(params, feat[:, :-1], batch["action"][:, 1:]), np.float64)  # [K, B, S-1, S*C]
    errs = [((pred[:, b, t] - probs[b, t + 1]) ** 2).mean()
            for b in range(B) for t in range(S - 1) if t + 1 <= h_wm and t != 4]
    assert len(errs) == B * (h_wm - 1)
    np.testing.assert_allclose(float(loss), np.mean(errs), rtol=1e-5)
    assert float(metrics["expl/loss"]) == float(loss)


def test_ensemble_learns_fixed_transitions(setup):
    """Adam on ensemble_loss fits every member to fixed targets: loss and disagreement on the
    training inputs fall (what makes visited transitions stop paying a bonus)."""
    config, _, state, _ = setup
    ens = Ensemble.create(config, state.world_model.feature_size, state.action_dim)
    B, S = 2, 6
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    post = {"deter": jax.random.normal(k1, (B, S, config.nets.deter)),
            "logits": 3 * jax.random.normal(k2, (B, S, config.nets.stoch, config.nets.classes))}
    post["stoch"] = jax.nn.one_hot(jnp.argmax(post["logits"], -1), config.nets.classes)
    action = jax.random.uniform(k3, (B, S, ens.action_dim), minval=-1, maxval=1)
    is_first = jnp.zeros((B, S), bool).at[:, 0].set(True)
    idx = jnp.broadcast_to(jnp.arange(S - 1), (B, S - 1))
    tx = optax.adam(3e-3)
    loss_fn = lambda p: ensemble_loss(ens, p, post, action, is_first, S - 1, idx)[0]  # noqa: E731
    feat, act = feature(post)[:, :-1], action[:, 1:]

    def step(carry, _):
        p, o = carry
        g = jax.grad(loss_fn)(p)
        u, o = tx.update(g, o)
        return (optax.apply_updates(p, u), o), None

    params = state.params["explore"]
    (trained, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=300))((params, tx.init(params)))
    assert float(loss_fn(trained)) < 0.1 * float(loss_fn(params))
    before = float(ens.disagreement(params, feat, act).mean())
    assert float(ens.disagreement(trained, feat, act).mean()) < 0.3 * before


def test_zero_bonus_leaves_the_actor_loss_unchanged_and_a_bonus_adds_to_the_returns(setup):
    """actor_loss's bonus_fn: a zero bonus changes nothing; a bonus b_t read off s_t (the state the action
    is taken in) raises the lambda-returns by dR_{H-1} = b_{H-1}, dR_t = b_t + lam * d_{t+1} * dR_{t+1}
    (same imagined trajectory, the values unchanged), by hand from the trajectory's features."""
    config, _, state, _ = setup
    wm, beh = state.world_model, state.behavior
    p = state.params
    start = mj.initial_carry(state, 6)["state"]
    w = jnp.ones((6,))

    # params are jit arguments, never closed-over constants (see docs/agent.md: an XLA CPU miscompile)
    @functools.partial(jax.jit, static_argnums=0)
    def run(fn, actor, wm_params, critic, start):
        return actor_loss(actor, beh, wm, wm_params, critic, start, w, state.retnorm, jax.random.PRNGKey(3),
                          bonus_fn=fn)[1]

    args = (p["actor"], p["wm"], p["critic"], start)
    base, zero = run(None, *args), run(lambda f, a: jnp.zeros(f.shape[:-1]), *args)
    assert set(zero[2]) == set(base[2]) | {"imag/bonus_mean"}
    zero = (zero[0], zero[1], {k: zero[2][k] for k in base[2]})
    for x, y in zip(jax.tree.leaves(base), jax.tree.leaves(zero)):
        np.testing.assert_array_equal(x, y)
    plus = run(lambda f, a: 1.0 + jnp.abs(f[..., -1]), *args)
    feat = np.asarray(base[0]["feat"], np.float64)  # [N, H + 1, F]
    np.testing.assert_array_equal(plus[0]["feat"], base[0]["feat"])
    H = config.behavior.imag_horizon
    bonus = 1.0 + np.abs(feat[:, :H, -1])
    disc = config.behavior.gamma * np.asarray(wm.cont_prob(p["wm"], base[0]["feat"]), np.float64)  # d_t [N, H + 1]
    want = np.zeros_like(bonus)
    want[:, H - 1] = bonus[:, H - 1]
    for t in range(H - 2, -1, -1):
        want[:, t] = bonus[:, t] + config.behavior.lam * disc[:, t + 1] * want[:, t + 1]
    np.testing.assert_allclose(np.asarray(plus[0]["returns"]) - np.asarray(base[0]["returns"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(plus[2]["imag/bonus_mean"]), bonus.mean(), rtol=1e-6)
    assert float(plus[2]["imag/reward_mean"]) == float(base[2]["imag/reward_mean"])


def _update_by_hand(config, state, batch, key, new_wm_params):
    """The exploration part of `update` at env_steps 0 (h_wm = 8, bucket 14), apart from it: the ensemble's
    loss and Adam step on the replay's posterior, then the actor loss with the bonus of the new ensemble
    (from the world-model params the update produced). Returns (ensemble loss, new ensemble params,
    actor-loss metrics)."""
    mods, h, length = state.modules, jnp.int32(8), 14
    ens, wm, beh, c = mods.ensemble, mods.world_model, mods.behavior, config
    cut = jax.tree.map(lambda x: x[:, : length + 1], batch)
    B = cut["is_first"].shape[0]

    def run(params, opt_state, cut, key, new_wm_params):
        k_wm, k_start, k_actor = jax.random.split(key, 3)
        (_, (_, post)), _ = wm_value_and_grad(wm, params["wm"], cut, k_wm, h, c)
        idx, _ = sample_times(jax.random.fold_in(key, 1), h - 1, B, length - 1, c.world_model.recon_subsample)
        loss, g = jax.value_and_grad(
            lambda q: ensemble_loss(ens, q, post, cut["action"], cut["is_first"], h, idx)[0])(params["explore"])
        upd, _ = mods.optimisers["explore"].update(g, opt_state["explore"], params["explore"])
        explore = optax.apply_updates(params["explore"], upd)
        idx, weight = sample_times(k_start, h, B, length, c.behavior.imag_starts_per_seq)
        start = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), gather_time(post, idx))
        bonus = lambda f, a: c.behavior.expl_scale * ens.disagreement(explore, f, a)  # noqa: E731
        _, (_, _, metrics) = actor_loss(params["actor"], beh, wm, new_wm_params, params["critic"], start,
                                        weight.reshape(-1), state.retnorm, k_actor, bonus)
        return loss, explore, metrics

    # params are jit arguments, never closed-over constants (see docs/agent.md: an XLA CPU miscompile)
    return jax.jit(run)(state.params, state.opt_state, cut, key, new_wm_params)


def test_agent_with_bonus_trains_its_ensemble_and_pays_its_disagreement(setup):
    config, spaces_, state, batch = setup
    off = mj.init(jax.random.PRNGKey(0), config.replace(expl_scale=0.0), *spaces_)
    assert "explore" not in off.params and "explore" not in off.opt_state and off.modules.ensemble is None
    for name in ("wm", "actor", "critic"):  # the option adds params; it changes none of the others
        for x, y in zip(jax.tree.leaves(off.params[name]), jax.tree.leaves(state.params[name])):
            np.testing.assert_array_equal(x, y)
    key = jax.random.PRNGKey(10)
    new, m = jax.jit(mj.update)(state, batch, key)
    loss, explore, metrics = _update_by_hand(config, state, batch, key, new.params["wm"])
    np.testing.assert_allclose(m["expl/loss"], loss, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(new.params["explore"]), jax.tree.leaves(explore)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-3 * config.optim.wm_lr)
    for name in ("imag/bonus_mean", "imag/reward_mean", "actor/loss"):
        np.testing.assert_allclose(m[name], metrics[name], rtol=1e-4, atol=1e-7, err_msg=name)
    assert float(m["imag/bonus_mean"]) > 1e-4  # the members disagree at initialisation


def test_config_rejects_a_scale_that_is_not_a_finite_number_at_least_zero():
    for bad in (float("nan"), float("inf"), -0.5, True, "1"):
        with pytest.raises(ValueError, match="expl_scale=.*allowed: a finite number >= 0"):
            mj.get_config("debug", expl_scale=bad)
    with pytest.raises(ValueError, match="expl_members"):
        mj.get_config("debug", expl_members=0)
    assert mj.get_config("debug", expl_scale=0).has_exploration_bonus is False
    assert mj.get_config("debug", expl_scale=1e-3).has_exploration_bonus is True
