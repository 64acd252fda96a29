"""RSSM: shapes, the LayerNorm GRU by hand, the learned initial state, is_first resets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import dists
from mamba_jax.rssm import RSSM, clamp_action, feature, imagine, initial_state, observe, prior_step

B, T, E, A = 3, 7, 5, 2
RSSM_SMALL = RSSM(deter=12, hidden=6, stoch=3, classes=4, unimix=0.01)


@pytest.fixture(scope="module")
def setup():
    key = jax.random.PRNGKey(0)
    state = {"deter": jnp.zeros((12,)), "stoch": jnp.zeros((3, 4)), "logits": jnp.zeros((3, 4))}
    params = jax.jit(RSSM_SMALL.init)(key, state, jnp.zeros((A,)), jnp.zeros((E,)), jnp.array(True), key)
    # a non-zero learned initial state, so that resets are visible
    params = jax.tree.map(lambda x: x, params)
    params["params"]["initial_deter"] = jax.random.normal(jax.random.PRNGKey(5), (12,))
    embed = jax.random.normal(jax.random.PRNGKey(1), (B, T, E))
    action = jax.random.uniform(jax.random.PRNGKey(2), (B, T, A), minval=-1, maxval=1)
    is_first = jnp.zeros((B, T), bool).at[:, 0].set(True).at[1, 4].set(True)
    run = jax.jit(lambda p, e, a, f, k: observe(RSSM_SMALL, p, e, a, f, k))
    return params, embed, action, is_first, run


def test_shapes_and_initial_state(setup):
    params, embed, action, is_first, run = setup
    post, prior = run(params, embed, action, is_first, jax.random.PRNGKey(3))
    assert post["deter"].shape == (B, T, 12) and post["stoch"].shape == (B, T, 3, 4)
    assert prior["logits"].shape == (B, T, 3, 4) and feature(post).shape == (B, T, 12 + 12)
    np.testing.assert_allclose(post["stoch"].sum(-1), 1.0, atol=1e-6)  # one-hot
    init = initial_state(RSSM_SMALL, params, (B,))
    np.testing.assert_allclose(init["deter"][0], jnp.tanh(params["params"]["initial_deter"]), rtol=1e-6)
    np.testing.assert_allclose(init["stoch"], dists.onehot_mode(init["logits"]))
    # unimix: every class keeps at least 1% / 4 probability
    assert float(jax.nn.softmax(post["logits"], -1).min()) >= 0.01 / 4 - 1e-7


def test_gru_by_hand(setup):
    params, *_ = setup
    p = params["params"]
    state = {"deter": jax.random.normal(jax.random.PRNGKey(7), (12,)),
             "stoch": jax.nn.one_hot(jnp.array([0, 3, 1]), 4), "logits": jnp.zeros((3, 4))}
    action = jnp.array([2.0, -0.5])  # clamped to [1, -0.5] on entry
    nxt = RSSM_SMALL.apply(params, state, action, jax.random.PRNGKey(0), method=RSSM.img_step)

    def ln(x, q, eps=1e-3):
        m, v = x.mean(-1), x.var(-1)
        return (x - m) / np.sqrt(v + eps) * q["scale"] + q["bias"]

    silu = lambda x: x / (1 + np.exp(-x))
    sig = lambda x: 1 / (1 + np.exp(-x))
    x = np.concatenate([np.asarray(state["stoch"]).reshape(-1), [1.0, -0.5]])
    x = silu(ln(x @ p["img_in"]["kernel"], p["img_in_norm"]["LayerNorm_0"]))
    h = np.asarray(state["deter"])
    parts = ln(np.concatenate([x, h]) @ p["gru"]["kernel"], p["gru_norm"])
    r, c, u = np.split(parts, 3)
    r = sig(r)
    c = np.tanh(r * c)
    u = sig(u - 1.0)
    np.testing.assert_allclose(nxt["deter"], u * c + (1 - u) * h, rtol=2e-4, atol=2e-5)


def test_reset_at_is_first_restarts_from_initial_state(setup):
    params, embed, action, is_first, run = setup
    key = jax.random.PRNGKey(3)
    post, _ = run(params, embed, action, is_first, key)
    # sequence 1 restarts at t = 4: its state there equals one posterior step from the initial state
    keys = jax.random.split(key, T)
    init = initial_state(RSSM_SMALL, params, ())
    step, _ = RSSM_SMALL.apply(params, init, jnp.zeros((A,)), embed[1, 4], jnp.array(False), keys[4], method=RSSM.obs_step)
    np.testing.assert_allclose(post["deter"][1, 4], step["deter"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post["logits"][1, 4], step["logits"], rtol=1e-5, atol=1e-6)
    # ... and nothing before the reset influences anything after it
    embed2 = embed.at[1, :4].add(3.0)
    action2 = action.at[1, :4].multiply(-1.0)
    post2, _ = run(params, embed2, action2, is_first, key)
    np.testing.assert_allclose(post2["deter"][1, 4:], post["deter"][1, 4:], rtol=1e-5, atol=1e-6)
    # while a sequence without a reset steps on from its own previous state and action
    prev = jax.tree.map(lambda x: x[0, 3], post)
    step, _ = RSSM_SMALL.apply(params, prev, action[0, 4], embed[0, 4], jnp.array(False), keys[4], method=RSSM.obs_step)
    np.testing.assert_allclose(post["deter"][0, 4], step["deter"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post["logits"][0, 4], step["logits"], rtol=1e-5, atol=1e-6)


def test_imagine_shapes(setup):
    params, embed, action, is_first, run = setup
    post, _ = run(params, embed, action, is_first, jax.random.PRNGKey(3))
    start = jax.tree.map(lambda x: x[:, 2], post)
    policy = lambda s, k: jnp.tanh(s["deter"][:, :A])
    states, actions = imagine(prior_step(RSSM_SMALL, params), start, policy, jax.random.PRNGKey(4), 4)
    assert states["deter"].shape == (B, 5, 12) and actions.shape == (B, 4, A)
    np.testing.assert_allclose(states["deter"][:, 0], start["deter"])
    np.testing.assert_allclose(actions[:, 1], jnp.tanh(states["deter"][:, 1, :A]), rtol=1e-6)


def test_imagine_equals_a_python_loop_of_img_step(setup):
    """imagine runs its first step outside the scan with the GRU kernel split (x and deter parts):
    the same states, actions and policy gradient as a loop of plain img_step."""
    params, embed, action, is_first, run = setup
    post, _ = run(params, embed, action, is_first, jax.random.PRNGKey(3))
    start = jax.tree.map(lambda x: x[:, 2], post)
    w = jax.random.normal(jax.random.PRNGKey(5), (12, A))
    policy = lambda w, s, k: jnp.tanh(s["deter"] @ w) + 0.1 * jax.random.normal(k, (s["deter"].shape[0], A))

    def loop(w, key, horizon):
        state, states, actions = start, [start], []
        for k in jax.random.split(key, horizon):
            ka, ks = jax.random.split(k)
            a = policy(w, state, ka)
            state = RSSM_SMALL.apply(params, state, a, ks, method=RSSM.img_step)
            states.append(state)
            actions.append(a)
        return jax.tree.map(lambda *x: jnp.stack(x, 1), *states), jnp.stack(actions, 1)

    def ours(w, key, horizon):
        return imagine(prior_step(RSSM_SMALL, params), start, lambda s, k: policy(w, s, k), key, horizon)

    for horizon in (1, 3):
        key = jax.random.PRNGKey(10 + horizon)
        # both jitted (a Python loop unrolls under jit; run eagerly it costs ~10 s of op-by-op dispatch)
        (s_a, a_a), (s_b, a_b) = jax.jit(ours, static_argnums=2)(w, key, horizon), jax.jit(loop, static_argnums=2)(w, key, horizon)
        assert s_a["deter"].shape == (B, horizon + 1, 12)
        for x, y in zip(jax.tree.leaves((s_a, a_a)), jax.tree.leaves((s_b, a_b))):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # the policy gradient through the peeled first step and the scan (horizon 3)
    objective = lambda f: lambda w: jnp.sum(jnp.sin(f(w, key, 3)[0]["deter"][:, 1:]))
    g_a, g_b = jax.jit(jax.grad(objective(ours)))(w), jax.jit(jax.grad(objective(loop)))(w)
    np.testing.assert_allclose(g_a, g_b, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(g_b).max()) > 1e-3


def test_clamp_action_value_is_clip_and_gradient_flows_beyond_bounds():
    """Forward: clip to [-1, 1]; backward: 1 inside, 1/|a| outside (DreamerV3's sg-scaled clamp)."""
    a = jnp.array([2.0, -0.5, -4.0, 1.0])
    np.testing.assert_allclose(clamp_action(a), [1.0, -0.5, -1.0, 1.0], rtol=0, atol=0)
    grad = jax.grad(lambda x: jnp.sum(clamp_action(x)))(a)
    np.testing.assert_allclose(grad, [0.5, 1.0, 0.25, 1.0], rtol=1e-6)


def test_observe_equals_a_python_loop_of_obs_step(setup):
    """observe hoists the embedding projection, prior logits and initial state out of its scan:
    the result must equal obs_step applied step by step (posterior and prior)."""
    params, embed, action, is_first, run = setup
    key = jax.random.PRNGKey(3)
    post, prior = run(params, embed, action, is_first, key)
    keys = jax.random.split(key, T)
    state = initial_state(RSSM_SMALL, params, (B,))
    for t in range(T):
        state, pri = RSSM_SMALL.apply(params, state, action[:, t], embed[:, t], is_first[:, t], keys[t],
                                      method=RSSM.obs_step)
        for k in ("deter", "logits", "stoch"):
            np.testing.assert_allclose(post[k][:, t], state[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(prior["logits"][:, t], pri["logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(prior["deter"][:, t], pri["deter"], rtol=1e-5, atol=1e-5)
