"""The optional exploration bonus (mamba_jax/explore.py): ensemble disagreement and its loss,
and the agent with and without it."""

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
from test_world_model import collect_point_robot

N, L = 2, 10


@pytest.fixture(scope="module")
def setup():
    config = mj.get_config("debug", expl_scale=0.5, expl_members=3)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    spaces_ = (env.observation_space(params), env.action_space(params))
    state = mj.init(jax.random.PRNGKey(0), config, *spaces_)
    batch = collect_point_robot(jax.random.PRNGKey(1), config.batch_size)
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
    assert pred.shape == (3, 5, 3, config.stoch * config.classes)
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
    post = {"deter": jax.random.normal(k1, (B, S, config.deter)),
            "logits": 3 * jax.random.normal(k2, (B, S, config.stoch, config.classes))}
    post["stoch"] = jax.nn.one_hot(jnp.argmax(post["logits"], -1), config.classes)
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


def test_zero_bonus_leaves_the_actor_loss_unchanged_and_a_positive_one_raises_returns(setup):
    config, _, state, batch = setup
    wm, beh = state.world_model, state.behavior
    p = state.params
    start = mj.initial_carry(state, 6)["state"]
    w = jnp.ones((6,))
    args = (p["actor"], beh, wm, p["wm"], p["critic"], start, w, state.retnorm, jax.random.PRNGKey(3))
    run = jax.jit(lambda fn: actor_loss(*args, bonus_fn=fn)[1], static_argnums=0)
    base, zero = run(None), run(lambda f, a: jnp.zeros(f.shape[:-1]))
    assert set(zero[2]) == set(base[2]) | {"imag/bonus_mean"}
    zero = (zero[0], zero[1], {k: zero[2][k] for k in base[2]})
    for x, y in zip(jax.tree.leaves(base), jax.tree.leaves(zero)):
        np.testing.assert_array_equal(x, y)
    plus = run(lambda f, a: jnp.ones(f.shape[:-1]))
    assert (np.asarray(plus[0]["returns"]) > np.asarray(base[0]["returns"]) + 0.5).all()
    assert float(plus[2]["imag/bonus_mean"]) == 1.0
    assert float(plus[2]["imag/reward_mean"]) == pytest.approx(float(base[2]["imag/reward_mean"]))


def test_agent_with_bonus_trains_its_ensemble(setup):
    config, spaces_, state, batch = setup
    off = mj.init(jax.random.PRNGKey(0), config.replace(expl_scale=0.0), *spaces_)
    assert "explore" not in off.params and "explore" not in off.opt_state
    for name in ("wm", "actor", "critic"):  # the option adds params; it changes none of the others
        for x, y in zip(jax.tree.leaves(off.params[name]), jax.tree.leaves(state.params[name])):
            np.testing.assert_array_equal(x, y)
    update = jax.jit(lambda s, k: mj.update(s, batch, k))
    s = state
    for i in range(3):
        s, m = update(s, jax.random.PRNGKey(10 + i))
        assert float(m["expl/loss"]) > 0
        assert all(np.isfinite(float(v)) for v in m.values())
        assert float(m["imag/bonus_mean"]) > 0
    moved = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(s.params["explore"]),
                                                     jax.tree.leaves(state.params["explore"]))]
    assert all(moved)


def test_config_rejects_a_scale_that_is_not_a_finite_number():
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="expl_scale=.*allowed: a finite number"):
            mj.get_config("debug", expl_scale=bad)
    with pytest.raises(ValueError, match="expl_members"):
        mj.get_config("debug", expl_members=0)
    with pytest.raises(ValueError, match="expl_target='rewards': allowed: latent, reward"):
        mj.get_config("debug", expl_target="rewards")


@pytest.fixture(scope="module")
def reward_setup(setup):
    """The same agent with `expl_target="reward"`: members predict r_{t+1}."""
    config, spaces_, _, batch = setup
    config = config.replace(expl_target="reward", reward_from_deter=True)
    return config, spaces_, mj.init(jax.random.PRNGKey(0), config, *spaces_), batch


def test_reward_disagreement_is_the_std_of_the_predicted_rewards(reward_setup):
    config, _, state, _ = reward_setup
    ens = Ensemble.create(config, state.world_model.feature_size, state.action_dim)
    assert ens.target == "reward"
    params = state.params["explore"]
    feat = jax.random.normal(jax.random.PRNGKey(0), (5, 3, ens.feature_size))
    act = jax.random.uniform(jax.random.PRNGKey(1), (5, 3, ens.action_dim))
    pred = np.asarray(ens.predict(params, feat, act), np.float64)  # [K, 5, 3, 1], symlog space
    assert pred.shape == (3, 5, 3, 1)
    reward = np.sign(pred) * np.expm1(np.abs(pred))  # symexp, by hand
    np.testing.assert_allclose(ens.disagreement(params, feat, act), reward.std(0)[..., 0], rtol=1e-5, atol=1e-7)
    assert (np.asarray(ens.disagreement(params, feat, act)) > 0).all()


def test_reward_ensemble_loss_is_the_squared_error_to_symlog_of_the_next_reward(reward_setup):
    config, _, state, batch = reward_setup
    ens, params, post, idx = _loss_inputs(config, state, batch)
    B, S = batch["is_first"].shape
    reward = jax.random.uniform(jax.random.PRNGKey(3), (B, S), maxval=2.0)  # r_t into entry t
    h_wm = 12
    loss, _ = ensemble_loss(ens, params, post, batch["action"], batch["is_first"], h_wm, idx, reward)
    pred = np.asarray(ens.predict(params, np.asarray(feature(post))[:, :-1], batch["action"][:, 1:]), np.float64)
    target = np.sign(reward) * np.log1p(np.abs(np.asarray(reward, np.float64)))  # symlog, by hand
    first = np.asarray(batch["is_first"])
    errs = [((pred[:, b, t, 0] - target[b, t + 1]) ** 2).mean()
            for b in range(B) for t in range(S - 1) if t + 1 <= h_wm and not first[b, t + 1]]
    np.testing.assert_allclose(float(loss), np.mean(errs), rtol=1e-5)
    with pytest.raises(ValueError, match="needs the replay's rewards"):
        ensemble_loss(ens, params, post, batch["action"], batch["is_first"], h_wm, idx)


def test_agent_with_reward_bonus_trains_its_ensemble_on_the_replay_rewards(reward_setup):
    config, _, state, batch = reward_setup
    update = jax.jit(lambda s, k: mj.update(s, batch, k))
    s, m = update(state, jax.random.PRNGKey(10))
    assert all(np.isfinite(float(v)) for v in m.values())
    assert float(m["expl/loss"]) > 0 and float(m["imag/bonus_mean"]) > 0
    assert all(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(s.params["explore"]),
                                                          jax.tree.leaves(state.params["explore"])))


def test_a_negative_scale_is_a_penalty(reward_setup):
    """expl_scale < 0: the same disagreement, subtracted from the imagined reward (pessimism where the
    members disagree); 0 turns the ensemble off."""
    config, spaces_, _, batch = reward_setup
    assert not config.replace(expl_scale=0.0).has_exploration_bonus
    penalised = mj.init(jax.random.PRNGKey(0), config.replace(expl_scale=-0.5), *spaces_)
    assert "explore" in penalised.params
    _, m = jax.jit(lambda s, k: mj.update(s, batch, k))(penalised, jax.random.PRNGKey(10))
    assert float(m["imag/bonus_mean"]) < 0 and np.isfinite(float(m["imag/return_mean"]))
