"""behavior.actor_loss (which reuses the actor outputs of the imagination and skips the unused
reward r_0) equals the loss written out plainly from the spec's formulas, value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np

import mamba_jax as mj
from experiments.bench_update import spaces_for
from mamba_jax import behavior as B
from mamba_jax import dists
from mamba_jax.rssm import feature, imagine, initial_state

sg = jax.lax.stop_gradient


def test_actor_loss_equals_the_plain_formula():
    c = mj.get_config("debug")
    st = mj.init(jax.random.PRNGKey(0), c, *spaces_for(c))
    beh, wm, p = st.behavior, st.world_model, st.params
    n = 12
    start = initial_state(wm.rssm, p["wm"]["rssm"], (n,))
    start["deter"] = start["deter"] + jax.random.normal(jax.random.PRNGKey(5), start["deter"].shape)
    bins = dists.bins(c.bins, c.bin_low, c.bin_high)
    H = c.imag_horizon

    def plain(actor_params, key):
        def policy_fn(state, k):
            return beh.sample(actor_params, sg(feature(state)), k)

        states, actions = imagine(wm.rssm, p["wm"]["rssm"], start, policy_fn, key, H)
        feat = feature(states)
        rewards = wm.reward_mean(p["wm"], feat, bins)  # all of r_0..r_H
        disc = c.gamma * wm.cont_prob(p["wm"], feat)
        values = beh.value(p["critic"], feat, bins)
        rets = B.lambda_returns(rewards, disc, values, c.lam)
        _, scale = B.retnorm_update(st.retnorm, rets, c)
        adv = (rets - values[:, :H]) / scale
        _, ent = beh.log_prob_entropy(actor_params, sg(feat[:, :H]), sg(actions))  # the actor applied again
        return -jnp.mean(B.return_weights(disc)[:, :H] * (adv + c.entropy_scale * ent))

    def ours(actor_params, key):
        return B.actor_loss(actor_params, beh, wm, p["wm"], p["critic"], start, jnp.ones(n), st.retnorm, key)[0]

    key = jax.random.PRNGKey(9)
    # jitted: op by op, the two gradients took a minute on the 2-core machine
    want, g_want = jax.jit(jax.value_and_grad(plain))(p["actor"], key)
    got, g_got = jax.jit(jax.value_and_grad(ours))(p["actor"], key)
    # the loss is a small difference (returns - values, ~1e-4 here): compare it to float32 rounding
    # of the heads' outputs (~1e-7; ours evaluates them on s_0 and s_1..s_H as separate batches)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-7)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_want))
    assert scale > 0
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want)):
        np.testing.assert_allclose(a, b, atol=1e-5 * scale)
