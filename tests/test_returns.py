"""Lambda-returns, return weights, the return normaliser and the KL with free bits, by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from mamba_jax import config as cfg
from mamba_jax import dists
from mamba_jax.behavior import RetNorm, lambda_returns, retnorm_update, return_weights
from mamba_jax.world_model import kl_losses


def test_lambda_returns_three_steps_by_hand():
    # states s_0..s_3 (H = 3): r_t, d_t, v_t of each state
    r = jnp.array([[9.0, 1.0, 2.0, 3.0]])  # r_0 is never used
    d = jnp.array([[0.5, 0.9, 0.8, 0.5]])
    v = jnp.array([[7.0, 4.0, 5.0, 6.0]])
    lam = 0.5
    R3 = 6.0
    R2 = 3.0 + 0.5 * (0.5 * 6.0 + 0.5 * R3)  # 6.0
    R1 = 2.0 + 0.8 * (0.5 * 5.0 + 0.5 * R2)  # 6.4
    R0 = 1.0 + 0.9 * (0.5 * 4.0 + 0.5 * R1)  # 5.68
    np.testing.assert_allclose(lambda_returns(r, d, v, lam), [[R0, R1, R2]], rtol=1e-6)
    # lam = 1: discounted Monte-Carlo return bootstrapped at the end
    mc0 = 1.0 + 0.9 * (2.0 + 0.8 * (3.0 + 0.5 * 6.0))
    np.testing.assert_allclose(lambda_returns(r, d, v, 1.0)[0, 0], mc0, rtol=1e-6)
    # lam = 0: one-step TD targets
    np.testing.assert_allclose(lambda_returns(r, d, v, 0.0), [[1 + 0.9 * 4, 2 + 0.8 * 5, 3 + 0.5 * 6]], rtol=1e-6)


def test_return_weights_by_hand():
    d = jnp.array([[0.5, 0.9, 0.8, 0.5]])
    np.testing.assert_allclose(return_weights(d), [[1.0, 0.5, 0.45, 0.36]], rtol=1e-6)
    g = jax.grad(lambda x: return_weights(x).sum())(d)
    np.testing.assert_array_equal(g, 0.0)  # stop-gradient


def test_return_normaliser_ema_by_hand():
    c = cfg.get_config("debug")  # rate 0.01, percentiles 5 / 95, max_inv 1
    rets = jnp.arange(101.0).reshape(1, 101)  # percentile p of 0..100 is p
    norm, scale = retnorm_update(RetNorm.create(), rets, c)
    np.testing.assert_allclose([norm.low, norm.high], [0.05, 0.95], rtol=1e-5)
    np.testing.assert_allclose(scale, 1.0)  # 0.9 < 1: clipped to 1
    norm = RetNorm(jnp.float32(2.0), jnp.float32(30.0))
    norm2, scale = retnorm_update(norm, rets, c)
    np.testing.assert_allclose(norm2.low, 0.99 * 2 + 0.01 * 5, rtol=1e-6)
    np.testing.assert_allclose(norm2.high, 0.99 * 30 + 0.01 * 95, rtol=1e-6)
    np.testing.assert_allclose(scale, (0.99 * 30 + 0.95) - (0.99 * 2 + 0.05), rtol=1e-6)
    # masked entries do not count
    mask = jnp.ones_like(rets).at[0, 50:].set(0.0)  # keeps 0..49
    norm3, _ = retnorm_update(RetNorm.create(), rets, c, mask)
    np.testing.assert_allclose([norm3.low, norm3.high], [0.01 * 49 * 0.05, 0.01 * 49 * 0.95], rtol=1e-5)


def _logits(p):
    return jnp.log(jnp.asarray(p, jnp.float32))


def test_kl_free_bits_below_and_above():
    # one latent, two classes: KL(p || q) by hand
    post = _logits([[0.5, 0.5]])
    prior_near = _logits([[0.6, 0.4]])  # KL ~ 0.0204 < 1 free bit
    prior_far = _logits([[0.999, 0.001]])
    kl_near = 0.5 * math.log(0.5 / 0.6) + 0.5 * math.log(0.5 / 0.4)
    kl_far = 0.5 * math.log(0.5 / 0.999) + 0.5 * math.log(0.5 / 0.001)
    assert kl_near < 1.0 < kl_far
    dyn, rep, raw = kl_losses(post, prior_near, 1.0)
    np.testing.assert_allclose([dyn, rep, raw], [1.0, 1.0, kl_near], rtol=1e-5)
    dyn, rep, raw = kl_losses(post, prior_far, 1.0)
    np.testing.assert_allclose([dyn, rep, raw], [kl_far, kl_far, kl_far], rtol=1e-5)
    # summed over latents before the clip: two latents of 0.6 nats each -> 1.2 > 1
    p2 = _logits([[0.5, 0.5], [0.5, 0.5]])
    q2 = _logits([[0.9, 0.1], [0.1, 0.9]])
    kl1 = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    np.testing.assert_allclose(kl_losses(p2, q2, 1.0)[0], 2 * kl1, rtol=1e-5)


def test_kl_stop_gradients():
    post = _logits([[0.5, 0.5]])
    prior = _logits([[0.999, 0.001]])
    # dyn trains only the prior, rep only the posterior; below the free bits nothing is trained
    g_dyn_post = jax.grad(lambda p: kl_losses(p, prior, 1.0)[0])(post)
    g_dyn_prior = jax.grad(lambda q: kl_losses(post, q, 1.0)[0])(prior)
    g_rep_post = jax.grad(lambda p: kl_losses(p, prior, 1.0)[1])(post)
    g_rep_prior = jax.grad(lambda q: kl_losses(post, q, 1.0)[1])(prior)
    np.testing.assert_array_equal(g_dyn_post, 0.0)
    np.testing.assert_array_equal(g_rep_prior, 0.0)
    # by hand, p = softmax(post) = (0.5, 0.5), q = softmax(prior) = (0.999, 0.001):
    # d KL(p || q) / d prior = q - p; d KL(p || q) / d post = p * (log p - log q - KL(p || q))
    p, q = np.array([0.5, 0.5]), np.array([0.999, 0.001])
    kl = np.sum(p * np.log(p / q))
    np.testing.assert_allclose(g_dyn_prior, [q - p], rtol=1e-5)
    np.testing.assert_allclose(g_rep_post, [p * (np.log(p / q) - kl)], rtol=1e-4)
    near = _logits([[0.6, 0.4]])
    np.testing.assert_array_equal(jax.grad(lambda q: kl_losses(post, q, 1.0)[0])(near), 0.0)
    np.testing.assert_allclose(dists.categorical_kl(post, post), 0.0, atol=1e-7)
