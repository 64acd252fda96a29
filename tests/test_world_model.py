"""World-model loss: horizon masking, sub-sampling, image nets, and learning on point-robot meta-episodes.

(jit == eager is checked on the policy step in test_agent.py: an eager world-model loss costs ~13 s
of per-primitive compiles.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
import mamba_jax as mj
from mamba_jax.sequence import gather_time, sample_times
from mamba_jax.world_model import wm_loss, wm_value_and_grad

N, L = 2, 10
T = N * L


@pytest.fixture(scope="module")
def setup(collect_point_robot):
    config = mj.get_config("debug", wm_lr=1e-3)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    state = mj.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    batch = collect_point_robot(jax.random.PRNGKey(1), 8)
    wm = state.world_model
    loss_fn = jax.jit(lambda p, b, k, h: wm_loss(wm, p, b, k, h, config)[0])
    return config, state, batch, loss_fn


def test_batch_format(setup):
    _, _, batch, _ = setup
    assert batch["obs"]["obs"].shape == (8, T + 1, 2) and batch["action"].shape == (8, T + 1, 2)
    np.testing.assert_allclose(batch["obs"]["time"][0], np.arange(T + 1) / T, rtol=1e-6)
    np.testing.assert_array_equal(batch["obs"]["reward"][:, 0], 0.0)


def test_sample_times_in_horizon():
    idx, w = sample_times(jax.random.PRNGKey(0), jnp.int32(5), 4, 20, 1000)
    assert idx.shape == (4, 1000) and int(idx.min()) == 0 and int(idx.max()) == 5
    np.testing.assert_array_equal(w, np.ones((4, 1000), np.float32))
    # every value of 0..5 is drawn about equally often (1000 draws each row: 4000 / 6 = 667, sd 24)
    np.testing.assert_allclose(np.bincount(np.asarray(idx).ravel(), minlength=6), 4000 / 6, atol=100)
    idx, w = sample_times(jax.random.PRNGKey(0), jnp.int32(5), 4, 20, -1)
    np.testing.assert_array_equal(idx, np.tile(np.arange(21), (4, 1)))
    np.testing.assert_array_equal(w, np.tile((np.arange(21) <= 5).astype(np.float32), (4, 1)))


def test_gather_time_picks_entry_idx_of_each_sequence():
    tree = {"a": jnp.arange(2 * 5).reshape(2, 5), "b": jnp.arange(2 * 5 * 3).reshape(2, 5, 3)}
    idx = jnp.array([[4, 0, 4], [1, 1, 2]])
    got = gather_time(tree, idx)
    np.testing.assert_array_equal(got["a"], [[4, 0, 4], [6, 6, 7]])
    np.testing.assert_array_equal(got["b"][1, 2], [21, 22, 23])  # sequence 1, entry 2
    assert got["b"].shape == (2, 3, 3)


def test_entries_beyond_horizon_are_masked(setup):
    config, state, batch, loss_fn = setup
    key = jax.random.PRNGKey(2)
    h = jnp.int32(9)
    late = jnp.arange(T + 1) > 9
    changed = {
        "obs": {
            "obs": jnp.where(late[None, :, None], 5.0, batch["obs"]["obs"]),
            "reward": jnp.where(late, 3.0, batch["obs"]["reward"]),
            "time": batch["obs"]["time"],
        },
        "action": jnp.where(late[None, :, None], -1.0, batch["action"]),
        "is_first": batch["is_first"],
        "is_terminal": batch["is_terminal"] | late,
    }
    a = loss_fn(state.params["wm"], batch, key, h)
    b = loss_fn(state.params["wm"], changed, key, h)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # the same as the loss of the sequences cut after entry 9 (S = 10: nothing beyond the horizon; the
    # sub-sampled times are drawn from [0, h] with the same key either way)
    cut = jax.tree.map(lambda x: x[:, :10], batch)
    np.testing.assert_allclose(a, loss_fn(state.params["wm"], cut, key, h), rtol=1e-5)


def test_value_and_grad_with_the_ghost_input_is_the_plain_gradient(setup):
    """wm_value_and_grad (GRU kernel gradient after the scan) == jax.value_and_grad(wm_loss)."""
    config, state, batch, _ = setup
    wm, params = state.world_model, state.params["wm"]
    # perturbed parameters, so that every gradient (the GRU kernel's included) is far from zero
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    params = tree.unflatten([x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    key, h = jax.random.PRNGKey(3), jnp.int32(15)
    plain = jax.jit(jax.value_and_grad(lambda p: wm_loss(wm, p, batch, key, h, config), has_aux=True))
    ghost = jax.jit(lambda p: wm_value_and_grad(wm, p, batch, key, h, config))
    (loss_a, (metrics_a, post_a)), grads_a = plain(params)
    (loss_b, (metrics_b, post_b)), grads_b = ghost(params)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
    assert set(post_b) == set(post_a) and set(metrics_b) == set(metrics_a)
    for a, b in zip(jax.tree.leaves((metrics_a, post_a)), jax.tree.leaves((metrics_b, post_b))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    kernel = grads_a["rssm"]["params"]["gru"]["kernel"]
    assert float(jnp.abs(kernel).max()) > 1e-3
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(a).max()))


def test_world_model_learns_point_robot(setup):
    config, state, batch, loss_fn = setup
    wm = state.world_model
    tx = optax.chain(optax.clip_by_global_norm(config.optim.wm_clip), optax.adam(config.optim.wm_lr, eps=config.optim.wm_eps))

    @jax.jit
    def train(params, key):
        def step(carry, k):
            p, o = carry
            g = jax.grad(lambda q: wm_loss(wm, q, batch, k, jnp.int32(T), config)[0])(p)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, 300))
        return params

    eval_key = jax.random.PRNGKey(4)
    before = float(loss_fn(state.params["wm"], batch, eval_key, jnp.int32(T)))
    trained = train(state.params["wm"], jax.random.PRNGKey(5))
    after = float(loss_fn(trained, batch, eval_key, jnp.int32(T)))
    # measured: before 10.66, after 0.66 (factor 16; the free-bits KL floor alone is 0.5 + 0.1 = 0.6)
    print(f"world-model loss before {before:.3f} after {after:.3f} factor {before / after:.2f}")
    assert after < before / 5, (before, after)


def test_image_encoder_decoder_shapes():
    from mamba_jax.nets import Decoder, Encoder, decoder_loss

    spec = (("obs", (64, 64, 3), True), ("reward", (), False), ("time", (), False))
    obs = {"obs": jnp.full((2, 3, 64, 64, 3), 255, jnp.uint8), "reward": jnp.ones((2, 3)), "time": jnp.zeros((2, 3))}
    enc, dec = Encoder(spec, 1, 8, 4), Decoder(spec, 1, 8, 4)
    feat = jnp.zeros((2, 3, 10))

    @jax.jit
    def run(obs, feat):
        embed = enc.apply(enc.init(jax.random.PRNGKey(0), obs), obs)
        return embed, dec.apply(dec.init(jax.random.PRNGKey(1), feat), feat)

    embed, pred = run(obs, feat)
    assert embed.shape == (2, 3, 8 + 4 * 4 * 32)  # vector MLP + 4x4x(8 * depth) conv features
    assert pred["obs"].shape == (2, 3, 64, 64, 3) and pred["reward"].shape == (2, 3)
    total, per_key = decoder_loss(pred, obs, spec)
    # images: squared error in [-0.5, 0.5] pixel space (white = 0.5); vectors: symlog-MSE
    assert total.shape == (2, 3)
    np.testing.assert_allclose(per_key["obs"] - (pred["obs"] - 0.5).__pow__(2).sum((-3, -2, -1)), 0.0, atol=1e-3)
    np.testing.assert_allclose(per_key["reward"], (pred["reward"] - np.log(2.0)) ** 2, rtol=1e-5)


def test_reward_from_deter_reads_the_deterministic_state_only(setup):
    config, _, batch, _ = setup
    config = config.replace(reward_from_deter=True)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    state = mj.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    wm, p = state.world_model, state.params["wm"]
    assert wm.reward_from_deter
    kernel = p["reward"]["params"]["MLP_0"]["Dense_0"]["kernel"]
    assert kernel.shape[0] == config.nets.deter != wm.feature_size  # the head's input is h, not [stoch, h]
    # a non-zero head (the output layer starts at zero), then two features that differ only in stoch
    leaves, tree = jax.tree.flatten(p["reward"])
    noise = [0.3 * jax.random.normal(jax.random.PRNGKey(i), x.shape) for i, x in enumerate(leaves)]
    p = {**p, "reward": jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise)])}
    bins = mj.dists.bins(config.nets.bins, config.nets.bin_low, config.nets.bin_high)
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    deter = jax.random.normal(k1, (5, config.nets.deter))
    s = config.nets.stoch * config.nets.classes
    feat_a = jnp.concatenate([jax.random.normal(k2, (5, s)), deter], -1)
    feat_b = jnp.concatenate([jnp.zeros((5, s)), deter], -1)
    np.testing.assert_array_equal(wm.reward_mean(p, feat_a, bins), wm.reward_mean(p, feat_b, bins))
    # it is the head applied to h alone
    by_hand = mj.dists.twohot_mean(wm.reward.apply(p["reward"], deter), bins)
    np.testing.assert_allclose(wm.reward_mean(p, feat_a, bins), by_hand, rtol=1e-6)
    assert float(jnp.std(by_hand)) > 1e-3  # and h matters to it (these 5 states get different rewards)
    # the loss trains that head through its reward term alone: its gradient is reward_scale times that of
    # the "wm/reward" metric (the two-hot NLL of the replay's rewards), and it reaches the head's first layer
    def parts(q):
        loss, (metrics, _) = wm_loss(wm, q, batch, jax.random.PRNGKey(4), T, config)
        return loss, metrics["wm/reward"]

    g_loss, g_reward = jax.jit(jax.jacrev(parts))(p)
    for a, b in zip(jax.tree.leaves(g_loss["reward"]), jax.tree.leaves(g_reward["reward"])):
        np.testing.assert_allclose(a, config.world_model.reward_scale * b, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(g_loss["reward"]["params"]["MLP_0"]["Dense_0"]["kernel"]).max()) > 1e-4
