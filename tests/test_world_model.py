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
from mamba_jax.world_model import sample_times, wm_loss, wm_value_and_grad

N, L = 2, 10
T = N * L


def collect_point_robot(key, batch: int, num_episodes: int = N, episode_length: int = L) -> dict:
    """[batch] meta-episodes of the point robot with uniform random actions, in the batch format."""
    env, params = envs.make("point_robot", num_episodes=num_episodes, episode_length=episode_length)
    steps = num_episodes * episode_length

    def one(k):
        k_reset, k_run = jax.random.split(k)
        obs0, state0 = env.reset(k_reset, params)

        def step(state, kk):
            k_act, k_env = jax.random.split(kk)
            action = jax.random.uniform(k_act, (2,), minval=-1.0, maxval=1.0)
            obs, state, _, terminated, _ = env.step_env(k_env, state, action, params)
            return state, (obs, action, terminated)

        _, (obs, action, term) = jax.lax.scan(step, state0, jax.random.split(k_run, steps))
        cat = lambda a, b: jnp.concatenate([a[None], b], 0)
        return {
            "obs": jax.tree.map(cat, obs0, obs),
            "action": cat(jnp.zeros((2,)), action),
            "is_first": jnp.arange(steps + 1) == 0,
            "is_terminal": cat(jnp.array(False), term),
        }

    return jax.jit(jax.vmap(one))(jax.random.split(key, batch))


@pytest.fixture(scope="module")
def setup():
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
    assert idx.shape == (4, 1000) and int(idx.min()) == 0 and int(idx.max()) == 5 and float(w.min()) == 1.0
    idx, w = sample_times(jax.random.PRNGKey(0), jnp.int32(5), 4, 20, -1)
    assert idx.shape == (4, 21)
    np.testing.assert_array_equal(w[0], (np.arange(21) <= 5).astype(np.float32))


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
    assert not np.allclose(a, loss_fn(state.params["wm"], changed, key, jnp.int32(T)))


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
    tx = optax.chain(optax.clip_by_global_norm(config.wm_clip), optax.adam(config.wm_lr, eps=config.wm_eps))

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
    assert kernel.shape[0] == config.deter != wm.feature_size  # the head's input is h, not [stoch, h]
    # a non-zero head (the output layer starts at zero), then two features that differ only in stoch
    leaves, tree = jax.tree.flatten(p["reward"])
    noise = [0.3 * jax.random.normal(jax.random.PRNGKey(i), x.shape) for i, x in enumerate(leaves)]
    p = {**p, "reward": jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise)])}
    bins = mj.dists.bins(config.bins, config.bin_low, config.bin_high)
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    deter = jax.random.normal(k1, (5, config.deter))
    s = config.stoch * config.classes
    feat_a = jnp.concatenate([jax.random.normal(k2, (5, s)), deter], -1)
    feat_b = jnp.concatenate([jnp.zeros((5, s)), deter], -1)
    np.testing.assert_array_equal(wm.reward_mean(p, feat_a, bins), wm.reward_mean(p, feat_b, bins))
    assert float(jnp.std(wm.reward_mean(p, feat_a, bins))) > 0  # it does read h
    # the loss trains that head: a finite loss, and a reward-head gradient
    loss, grads = jax.value_and_grad(lambda q: wm_loss(wm, q, batch, jax.random.PRNGKey(4), T, config)[0])(p)
    assert np.isfinite(float(loss)) and float(optax.tree.norm(grads["reward"])) > 0


def test_dyn_free_bits_floors_the_dynamics_loss_alone(setup):
    config, state, batch, _ = setup
    wm, p, key = state.world_model, state.params["wm"], jax.random.PRNGKey(5)
    metrics = lambda c: wm_loss(wm, p, batch, key, T, c)[1][0]  # noqa: E731
    high = config.replace(free_bits=100.0)  # above any KL of this model: every term sits on the floor
    both = metrics(high)
    np.testing.assert_allclose([both["wm/dyn"], both["wm/rep"]], [100.0, 100.0])
    apart = metrics(high.replace(dyn_free_bits=0.0))
    np.testing.assert_allclose(apart["wm/rep"], 100.0)
    np.testing.assert_allclose(apart["wm/dyn"], apart["wm/kl"], rtol=1e-5)  # unclipped: KL(sg(post) || prior)
    assert 0 < float(apart["wm/dyn"]) < 100.0


@pytest.fixture(scope="module")
def grounded():
    config = mj.get_config("debug", reward_from_deter=True, grounded_imagination=True)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    state = mj.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    return config, state


def _reward_head_fixed(p, config, probs: dict):
    """The reward head with a zero kernel and bias = log of `probs` {bin index: probability}: a fixed two-hot
    distribution whatever the input."""
    logits = jnp.full((config.bins,), -1e9).at[jnp.asarray(list(probs))].set(jnp.log(jnp.asarray(list(probs.values()))))
    out = p["reward"]["params"]["Dense_0"]
    reward = {"params": {**p["reward"]["params"], "Dense_0": {"kernel": jnp.zeros_like(out["kernel"]), "bias": logits}}}
    return {**p, "reward": reward}


def test_grounded_img_step_is_the_posterior_of_the_imagined_observation(grounded):
    """One grounded step equals RSSM.obs_step (the real posterior step) on the observation the decoder
    predicts at the prior sample, with the reward entry replaced by the reward head's (here certain) value."""
    from mamba_jax.rssm import RSSM, feature

    config, state = grounded
    wm = state.world_model
    bins = mj.dists.bins(config.bins, config.bin_low, config.bin_high)
    k = 131  # a bin above 0: value symexp(bins[131]) = 0.88
    p = _reward_head_fixed(state.params["wm"], config, {k: 1.0})
    rssm_p = p["rssm"]
    start = jax.tree.map(lambda x: jnp.broadcast_to(x, (6,) + x.shape[1:]), mj.rssm.initial_state(wm.rssm, rssm_p, (1,)))
    start = {**start, "deter": start["deter"] + 0.5 * jax.random.normal(jax.random.PRNGKey(1), start["deter"].shape)}
    action = jax.random.uniform(jax.random.PRNGKey(2), (6, 2), minval=-1, maxval=1)
    key = jax.random.PRNGKey(3)
    got = wm.grounded_img_step(p, start, action, key)
    assert wm.img_step(p, start, action, key)["logits"].shape == got["logits"].shape  # dispatches on the config
    np.testing.assert_allclose(wm.img_step(p, start, action, key)["logits"], got["logits"])
    k_prior, _, _ = jax.random.split(key, 3)
    prior = wm.rssm.apply(rssm_p, start, action, k_prior, method=RSSM.img_step)
    pred = wm.decoder.apply(p["decoder"], feature(prior))
    obs = {name: mj.dists.symexp(v) for name, v in pred.items()}
    obs["reward"] = jnp.full((6,), mj.dists.symexp(bins[k]))
    post, _ = wm.rssm.apply(rssm_p, start, action, wm.embed(p, obs), jnp.zeros((6,), bool), key, method=RSSM.obs_step)
    np.testing.assert_allclose(got["deter"], prior["deter"], rtol=1e-6)
    np.testing.assert_allclose(got["logits"], post["logits"], rtol=1e-5, atol=1e-5)
    # a different reward entry gives another posterior: the sampled reward reaches the latent
    other = wm.grounded_img_step(_reward_head_fixed(state.params["wm"], config, {127: 1.0}), start, action, key)
    assert float(jnp.abs(other["logits"] - got["logits"]).max()) > 1e-3


def test_grounded_img_step_samples_the_reward_at_the_heads_rate(grounded):
    config, state = grounded
    wm = state.world_model
    bins = mj.dists.bins(config.bins, config.bin_low, config.bin_high)
    p = _reward_head_fixed(state.params["wm"], config, {127: 0.7, 131: 0.3})  # 0 w.p. 0.7, symexp(bins[131]) = 0.88 w.p. 0.3
    seen = []
    orig_embed = wm.embed
    # read the imagined observations off the encoder's input (WorldModel is frozen: wrap the method on a copy)
    import dataclasses

    class Spy(type(wm)):
        def embed(self, params, obs):
            seen.append(obs["reward"])
            return orig_embed(params, obs)

    spy = Spy(**{f.name: getattr(wm, f.name) for f in dataclasses.fields(wm)})
    n = 4000
    start = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:]), mj.rssm.initial_state(wm.rssm, p["rssm"], (1,)))
    spy.grounded_img_step(p, start, jnp.zeros((n, 2)), jax.random.PRNGKey(4))
    reward = np.asarray(seen[0])
    high = float(mj.dists.symexp(bins[131]))
    assert 0.8 < high < 1.0 and np.all(np.isclose(reward, 0.0) | np.isclose(reward, high))
    assert abs((reward > 0).mean() - 0.3) < 0.03  # binomial sd 0.007


def test_grounded_imagination_needs_the_reward_head_on_h_and_the_reward_observation():
    with pytest.raises(ValueError, match="allowed: with reward_from_deter=True and mamba=True"):
        mj.get_config("debug", grounded_imagination=True)
    with pytest.raises(ValueError, match="allowed: with reward_from_deter=True and mamba=True"):
        mj.get_config("debug", grounded_imagination=True, reward_from_deter=True, mamba=False)
    from mamba_jax.world_model import WorldModel

    config = mj.get_config("debug", reward_from_deter=True, grounded_imagination=True)
    with pytest.raises(ValueError, match="image observations \\(\\['image'\\]\\) are not supported"):
        WorldModel.create(config, (("image", (64, 64, 3), True), ("reward", (), False)), 2)
    with pytest.raises(ValueError, match="has no 'reward' key"):
        WorldModel.create(config, (("obs", (2,), False),), 2)


def test_imag_latent_mode_steps_to_the_priors_mode():
    """Config.imag_latent_mode: WorldModel.img_step is the prior step with z_{t+1} = one-hot of the prior's
    argmax (whatever the key) and the same deterministic state and logits as the sampled prior step."""
    from mamba_jax.rssm import RSSM

    config = mj.get_config("debug", reward_from_deter=True, imag_latent_mode=True)
    env, params = envs.make(config.env, num_episodes=N, episode_length=L)
    state = mj.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    wm, p = state.world_model, state.params["wm"]
    assert wm.imag_latent_mode
    start = jax.tree.map(lambda x: jnp.broadcast_to(x, (6,) + x.shape[1:]), mj.rssm.initial_state(wm.rssm, p["rssm"], (1,)))
    start = {**start, "deter": start["deter"] + 0.5 * jax.random.normal(jax.random.PRNGKey(1), start["deter"].shape)}
    action = jax.random.uniform(jax.random.PRNGKey(2), (6, 2), minval=-1, maxval=1)
    got = wm.img_step(p, start, action, jax.random.PRNGKey(3))
    again = wm.img_step(p, start, action, jax.random.PRNGKey(4))
    sampled = wm.rssm.apply(p["rssm"], start, action, jax.random.PRNGKey(3), method=RSSM.img_step)
    np.testing.assert_allclose(got["deter"], sampled["deter"], rtol=1e-6)
    np.testing.assert_allclose(got["logits"], sampled["logits"], rtol=1e-6)
    expected = jax.nn.one_hot(jnp.argmax(sampled["logits"], -1), config.classes)
    np.testing.assert_allclose(got["stoch"], expected, atol=1e-6)  # one-hot + p - sg(p): rounding only
    np.testing.assert_array_equal(again["stoch"], got["stoch"])  # the key does not matter
    assert float(jnp.abs(sampled["stoch"] - expected).max()) > 0  # a sample differs from the mode somewhere


def test_imag_latent_mode_needs_the_reward_head_on_h_and_excludes_grounded_imagination():
    with pytest.raises(ValueError, match="allowed: with reward_from_deter=True"):
        mj.get_config("debug", imag_latent_mode=True)
    with pytest.raises(ValueError, match="allowed: at most one of them"):
        mj.get_config("debug", imag_latent_mode=True, reward_from_deter=True, grounded_imagination=True)
    with pytest.raises(ValueError, match="imag_latent_mode=1: allowed: True or False"):
        mj.get_config("debug", imag_latent_mode=1, reward_from_deter=True)
