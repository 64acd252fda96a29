"""behavior.actor_loss (which reuses the actor outputs of the imagination and skips the unused
reward r_0) equals the loss written out plainly from the formulas of docs/algorithm.md, value and
gradient; and it imagines through the world model's own `img_step`."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mamba_jax as mj
from mamba_jax import behavior as B
from mamba_jax import dists
from mamba_jax.rssm import feature, imagine, initial_state, prior_step
from mamba_jax.world_model import WorldModel

sg = jax.lax.stop_gradient


@pytest.fixture(scope="module")
def debug_agent(point_robot_spaces):
    """The debug preset's agent and 12 imagination starts (the initial state with noise on deter)."""
    c = mj.get_config("debug")
    st = mj.init(jax.random.PRNGKey(0), c, *point_robot_spaces)
    start = initial_state(st.world_model.rssm, st.params["wm"]["rssm"], (12,))
    start["deter"] = start["deter"] + jax.random.normal(jax.random.PRNGKey(5), start["deter"].shape)
    return c, st, start


def test_actor_loss_equals_the_plain_formula(debug_agent):
    c, st, start = debug_agent
    beh, wm, p = st.behavior, st.world_model, st.params
    n = start["deter"].shape[0]
    bins = dists.bins(c.nets.bins, c.nets.bin_low, c.nets.bin_high)
    H = c.behavior.imag_horizon

    def plain(actor_params, key):
        def policy_fn(state, k):
            return beh.sample(actor_params, sg(feature(state)), k)

        states, actions = imagine(prior_step(wm.rssm, p["wm"]["rssm"]), start, policy_fn, key, H)
        feat = feature(states)
        rewards = wm.reward_mean(p["wm"], feat, bins)  # all of r_0..r_H
        disc = c.behavior.gamma * wm.cont_prob(p["wm"], feat)
        values = beh.value(p["critic"], feat, bins)
        rets = B.lambda_returns(rewards, disc, values, c.behavior.lam)
        _, scale = B.retnorm_update(st.retnorm, rets, c)
        adv = (rets - values[:, :H]) / scale
        _, ent = beh.log_prob_entropy(actor_params, sg(feat[:, :H]), sg(actions))  # the actor applied again
        return -jnp.mean(B.return_weights(disc)[:, :H] * (adv + c.behavior.entropy_scale * ent))

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


@dataclasses.dataclass(frozen=True)
class _ShiftedWorldModel(WorldModel):
    """A world model whose imagined step adds 0.5 to the RSSM prior step's deterministic state."""

    def img_step(self, params, state, action, key, split_gru=False):
        nxt = super().img_step(params, state, action, key, split_gru)
        return {**nxt, "deter": nxt["deter"] + 0.5}


def test_actor_loss_imagines_with_the_world_models_img_step(debug_agent):
    """The imagined trajectory is that of `wm.img_step`, whatever that step is: with a world model whose
    step shifts deter, the trajectory's features equal a plain `imagine` with that shifted step."""
    c, st, start = debug_agent
    beh, p = st.behavior, st.params
    shifted = _ShiftedWorldModel(**{f.name: getattr(st.world_model, f.name) for f in dataclasses.fields(WorldModel)})
    key = jax.random.PRNGKey(9)

    # params are jit arguments, never closed-over constants (see docs/agent.md: an XLA CPU miscompile)
    @functools.partial(jax.jit, static_argnums=0)
    def trajectory(wm, p, start):
        _, (traj, _, _) = B.actor_loss(p["actor"], beh, wm, p["wm"], p["critic"], start, jnp.ones(12), st.retnorm, key)
        return traj["feat"]

    @jax.jit
    def plain(p, start):
        policy_fn = lambda s, k: beh.sample(p["actor"], feature(s), k)  # noqa: E731
        states, _ = imagine(functools.partial(shifted.img_step, p["wm"]), start, policy_fn, key, c.behavior.imag_horizon)
        return feature(states)

    got = trajectory(shifted, p, start)
    np.testing.assert_allclose(got, plain(p, start), rtol=1e-5, atol=1e-5)
    # the first step: same start and action, so deter differs by the shift exactly
    unshifted = trajectory(st.world_model, p, start)
    np.testing.assert_allclose(got[:, 1, -c.nets.deter:] - unshifted[:, 1, -c.nets.deter:], 0.5, atol=1e-5)
