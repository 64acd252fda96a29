"""Checks that the agent's learning signals point the right way (not only that they run).

* The actor, trained alone by `actor_loss` on a hand-made world model whose reward depends only
  on the state *after* an action, moves its mean action to the reward's maximum over a grid of
  actions (and to another corner when the reward's sign is flipped). This fails if the actor
  loss had the wrong sign, if no gradient went through the imagined dynamics (continuous
  actions), or if the return used the reward at s_t instead of the reward of the transition
  into s_{t+1} (the first action would then get no gradient at all).
* One `update` applies each optimiser to its own params with its own learning rate (Adam's
  first step moves a parameter by lr * g / (|g| + eps): at most lr) and the slow critic is
  exactly the EMA (1 - rate) * slow + rate * new critic.
* Free bits bias the prior of a rare latent event: trained by the clipped dyn loss alone, a
  prior's probability of an event that the posterior reports on a fraction p of the steps
  converges to about e^-1 whatever p is (the steps without the event have KL below the floor and
  give no gradient), and to p without the floor (docs/learning_checks.md, fourth round).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
import mamba_jax as mj
from mamba_jax import dists
from mamba_jax.behavior import actor_loss
from mamba_jax.rssm import RSSM, feature
from mamba_jax.world_model import kl_losses


@pytest.fixture(scope="module")
def debug_state():
    config = mj.get_config("debug")
    env, params = envs.make(config.env, num_episodes=config.protocol.num_episodes, episode_length=config.protocol.episode_length)
    state = mj.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    return config, env, params, state


def _reward_on_deter(state, direction: float):
    """World-model params whose reward head reads only deter (the stochastic part of the feature
    is zeroed in its first layer) and returns a reward monotone in (last hidden . u):
    logits_k = direction * 0.01 * (h . u) * bin_k."""
    config, p = state.config, state.params
    S = config.nets.stoch * config.nets.classes
    bins = dists.bins(config.nets.bins, config.nets.bin_low, config.nets.bin_high)
    reward = jax.tree.map(lambda x: x, p["wm"]["reward"])
    first = reward["params"]["MLP_0"]["Dense_0"]["kernel"]
    reward["params"]["MLP_0"]["Dense_0"]["kernel"] = first.at[:S].set(0.0)
    hidden = reward["params"]["Dense_0"]["kernel"].shape[0]
    u = jax.random.normal(jax.random.PRNGKey(5), (hidden,)) / np.sqrt(hidden)
    reward["params"]["Dense_0"]["kernel"] = direction * 0.01 * u[:, None] * bins[None, :]
    return p["wm"] | {"reward": reward}


def test_actor_gradient_climbs_the_imagined_reward(debug_state):
    config, env, params, state0 = debug_state
    state = mj.init(jax.random.PRNGKey(0), config.replace(imag_horizon=1), env.observation_space(params),
                    env.action_space(params))
    wm, beh = state.world_model, state.behavior
    bins = dists.bins(config.nets.bins, config.nets.bin_low, config.nets.bin_high)
    N = 32
    start = mj.initial_carry(state, N)["state"]  # identical starts: the learned initial state
    weight = jnp.ones((N,))
    tx = optax.adam(1e-2)

    def reward_after(wm_params, actions):  # r(s_1) for s_1 = img_step(s_0, a): deterministic in a here
        s0 = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], (actions.shape[0],) + x.shape[1:]), start)
        s1 = wm.rssm.apply(wm_params["rssm"], s0, actions, jax.random.PRNGKey(0), method=RSSM.img_step)
        return wm.reward_mean(wm_params, feature(s1), bins)

    def train(wm_params, actor, critic, norm):
        def step(carry, key):
            actor, opt, norm = carry
            grad = jax.grad(actor_loss, has_aux=True)
            g, (_, norm, _) = grad(actor, beh, wm, wm_params, critic, start, weight, norm, key)
            upd, opt = tx.update(g, opt, actor)
            return (optax.apply_updates(actor, upd), opt, norm), None

        keys = jax.random.split(jax.random.PRNGKey(1), 150)
        (actor, _, _), _ = jax.lax.scan(step, (actor, tx.init(actor), norm), keys)
        mode = lambda a: beh.mode(a, feature(start))[:1]
        return mode(state.params["actor"]), mode(actor)

    g = jnp.linspace(-1.0, 1.0, 41)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    run = jax.jit(lambda w, a, c, n: (train(w, a, c, n), reward_after(w, grid)))
    best = []
    for direction in (1.0, -1.0):
        wm_params = _reward_on_deter(state, direction)
        (before, after), r_grid = run(wm_params, state.params["actor"], state.params["critic"], state.retnorm)
        lo, hi = float(r_grid.min()), float(r_grid.max())
        frac = lambda a: (float(reward_after(wm_params, a)[0]) - lo) / (hi - lo)
        assert hi - lo > 1.0  # the reward does depend on the action
        assert frac(before) < 0.8, (direction, frac(before))
        assert frac(after) > 0.97, (direction, frac(after), after, grid[jnp.argmax(r_grid)])
        np.testing.assert_allclose(after[0], grid[jnp.argmax(r_grid)], atol=0.15)
        best.append(np.asarray(grid[jnp.argmax(r_grid)]))
    assert np.abs(best[0] - best[1]).max() > 0.5  # flipping the reward's sign moves the optimum


def test_update_applies_each_optimiser_and_the_slow_critic_ema(debug_state, collect_point_robot):
    config, _, _, state = debug_state
    batch = collect_point_robot(jax.random.PRNGKey(1), config.protocol.batch_size)
    new, _ = jax.jit(mj.update)(state, batch, jax.random.PRNGKey(2))
    lrs = {"wm": config.optim.wm_lr, "actor": config.optim.actor_lr, "critic": config.optim.critic_lr}
    for name, lr in lrs.items():
        step = np.concatenate([np.ravel(a - b) for a, b in
                               zip(jax.tree.leaves(new.params[name]), jax.tree.leaves(state.params[name]))])
        # Adam's first step is lr * g / (|g| + eps): at most lr, and close to lr where |g| >> eps
        # (many actor gradients are below the actor's eps = 1e-5, so only the largest step is ~lr)
        assert 0.5 * lr < np.abs(step).max() <= lr * 1.001, name
        assert np.mean(step != 0) > 0.5, name
    rate = config.behavior.slow_critic_rate
    for s_new, s_old, c_new in zip(jax.tree.leaves(new.params["slow_critic"]),
                                   jax.tree.leaves(state.params["slow_critic"]),
                                   jax.tree.leaves(new.params["critic"])):
        np.testing.assert_allclose(s_new, (1 - rate) * s_old + rate * c_new, rtol=1e-6, atol=1e-9)


def _prior_of_a_rare_event(rate: float, free_bits: float, steps: int = 1500, batch: int = 512) -> float:
    """A 4-class prior (free logits) trained by Adam on the mean clipped dyn loss against posteriors
    that are class 1 with probability `rate` and class 0 otherwise (1 % uniform mix); returns its
    final probability of class 1."""
    classes = 4
    mixed = lambda c: jnp.log(0.99 * jax.nn.one_hot(c, classes) + 0.01 / classes)  # noqa: E731
    tx = optax.adam(1e-2)

    def loss(logits, event):
        post = jnp.where(event[:, None], mixed(1), mixed(0))[:, None, :]  # [batch, S=1, C]
        return kl_losses(post, jnp.broadcast_to(logits, post.shape), free_bits)[0].mean()

    def step(carry, key):
        logits, opt = carry
        grad = jax.grad(loss)(logits, jax.random.uniform(key, (batch,)) < rate)
        updates, opt = tx.update(grad, opt)
        return (optax.apply_updates(logits, updates), opt), None

    logits = jnp.zeros((classes,))
    keys = jax.random.split(jax.random.PRNGKey(0), steps)
    (logits, _), _ = jax.jit(lambda c, k: jax.lax.scan(step, c, k))((logits, tx.init(logits)), keys)
    return float(jax.nn.softmax(logits)[1])


@pytest.mark.parametrize("rate", [0.02, 0.115])
def test_free_bits_pull_a_rare_events_prior_to_about_one_over_e(rate):
    with_floor = _prior_of_a_rare_event(rate, free_bits=1.0)
    without = _prior_of_a_rare_event(rate, free_bits=0.0)
    # With the floor the event's steps stop pulling once -log q < 1 nat, i.e. q = e^-1 (the 1 %
    # mix moves it slightly); the other steps (KL = -log(1 - q) < 1) never push back.
    assert 0.30 < with_floor < 0.42, with_floor
    assert abs(without - rate) < 0.2 * rate + 0.005, without
