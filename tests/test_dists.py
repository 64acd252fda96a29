"""Distributions, config validation and the horizon schedule, against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import config as cfg
from mamba_jax import horizon
from mamba_jax import dists


def test_symlog_symexp_by_hand():
    x = jnp.array([-3.0, -1.0, 0.0, 0.5, 10.0])
    expected = np.array([-math.log(4.0), -math.log(2.0), 0.0, math.log(1.5), math.log(11.0)])
    np.testing.assert_allclose(dists.symlog(x), expected, rtol=1e-6)
    np.testing.assert_allclose(dists.symexp(jnp.array([math.log(4.0), -math.log(11.0)])), [3.0, -10.0], rtol=1e-6)
    y = jnp.linspace(-1e3, 1e3, 101)
    np.testing.assert_allclose(dists.symexp(dists.symlog(y)), y, rtol=1e-4)


def test_twohot_between_two_bins():
    b = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    w = dists.twohot_encode(jnp.array(0.25), b, transform=False)
    np.testing.assert_allclose(w, [0, 0, 0.75, 0.25, 0], atol=1e-6)
    w = dists.twohot_encode(jnp.array(-1.6), b, transform=False)
    np.testing.assert_allclose(w, [0.6, 0.4, 0, 0, 0], atol=1e-6)
    # exactly on a bin: all weight there
    np.testing.assert_allclose(dists.twohot_encode(jnp.array(1.0), b, transform=False), [0, 0, 0, 1, 0], atol=1e-6)


def test_twohot_outside_range_goes_to_end_bins():
    b = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(dists.twohot_encode(jnp.array(7.0), b, transform=False), [0, 0, 0, 0, 1])
    np.testing.assert_allclose(dists.twohot_encode(jnp.array(-7.0), b, transform=False), [1, 0, 0, 0, 0])


def test_twohot_symlog_roundtrip_and_log_prob():
    b = dists.bins(255, -20.0, 20.0)
    y = jnp.array([-50.0, -1.0, 0.0, 0.3, 123.0])
    enc = dists.twohot_encode(y, b)
    np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-6)
    # decoding the two-hot (as if it were the predicted distribution) recovers y exactly
    np.testing.assert_allclose(dists.symexp(jnp.sum(enc * b, -1)), y, rtol=1e-4)
    # zero logits: uniform over symmetric bins -> mean 0, log-prob -log K
    logits = jnp.zeros((5, 255))
    np.testing.assert_allclose(dists.twohot_mean(logits, b), 0.0, atol=1e-5)
    np.testing.assert_allclose(dists.twohot_log_prob(logits, y, b), -math.log(255), rtol=1e-6)


def test_unimix_and_straight_through():
    logits = jnp.array([[10.0, 0.0, -10.0, 0.0]])
    p = jax.nn.softmax(dists.unimix_logits(logits, 0.01), -1)
    raw = jax.nn.softmax(logits, -1)
    np.testing.assert_allclose(p, 0.99 * raw + 0.0025, rtol=1e-5)
    sample = dists.onehot_sample_st(jax.random.PRNGKey(0), logits)
    np.testing.assert_allclose(sample, [[1, 0, 0, 0]], atol=1e-6)  # forward value is one-hot
    # gradient flows as through the probabilities
    g = jax.grad(lambda l: jnp.sum(dists.onehot_sample_st(jax.random.PRNGKey(0), l) * jnp.arange(4.0)))(logits)
    g_probs = jax.grad(lambda l: jnp.sum(jax.nn.softmax(l, -1) * jnp.arange(4.0)))(logits)
    np.testing.assert_allclose(g, g_probs, rtol=1e-6)


def test_onehot_sample_is_the_draw_of_jax_random_categorical():
    logits = jax.random.normal(jax.random.PRNGKey(0), (512, 16, 16)) * 3.0
    for seed in range(5):
        key = jax.random.PRNGKey(seed)
        expected = jax.nn.one_hot(jax.random.categorical(key, logits, -1), 16)
        np.testing.assert_array_equal(jax.jit(dists.onehot_sample)(key, logits), expected)
    # frequencies follow softmax(logits)
    logits = jnp.log(jnp.array([0.1, 0.6, 0.3]))
    draws = dists.onehot_sample(jax.random.PRNGKey(1), jnp.broadcast_to(logits, (40_000, 3)))
    assert set(np.unique(np.asarray(draws.sum(-1)))) == {1.0}
    np.testing.assert_allclose(draws.mean(0), [0.1, 0.6, 0.3], atol=0.01)


def test_onehot_sample_takes_the_first_maximum_on_ties(monkeypatch):
    monkeypatch.setattr(dists.jax.random, "gumbel", lambda key, shape, dtype: jnp.zeros(shape, dtype))
    sample = dists.onehot_sample(jax.random.PRNGKey(0), jnp.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]]))
    np.testing.assert_array_equal(sample, [[0, 1, 0, 0], [1, 0, 0, 0]])  # as argmax


def test_categorical_kl_by_hand():
    p = jnp.log(jnp.array([0.5, 0.5]))
    q = jnp.log(jnp.array([0.25, 0.75]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    np.testing.assert_allclose(dists.categorical_kl(p, q), expected, rtol=1e-6)
    np.testing.assert_allclose(dists.categorical_entropy(p), math.log(2), rtol=1e-6)


def test_actor_normal_and_bernoulli():
    d = dists.actor_normal(jnp.array([0.0, 100.0]), jnp.array([-2.0, 1e3]))
    np.testing.assert_allclose(d.mean(), [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(d.distribution.stddev(), [0.9 * 0.5 + 0.1, 1.0], rtol=1e-6)
    np.testing.assert_allclose(dists.bernoulli_log_prob(jnp.array(0.0), 1.0), math.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(
        dists.bernoulli_log_prob(jnp.array(2.0), 0.0), math.log(1 - 1 / (1 + math.exp(-2))), rtol=1e-6
    )


# ------------------------------------------------------------------------------ config
def test_presets_validate_and_listed():
    for name in cfg.PRESETS:
        c = cfg.get_config(name)
        assert c.name == name
    assert cfg.get_config("reacher").meta_length == 900
    assert cfg.get_config("point_robot", mamba=False).protocol.window_length == 64


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(initial_wm_horizon=301), "initial_wm_horizon=301 exceeds"),
        (dict(initial_wm_horizon=50), "needs a ramp"),
        (dict(mamba=False, window_length=302), "window_length=302"),
        (dict(units=0), "units=0"),
        (dict(batch_size=-1), "batch_size=-1"),
        (dict(recon_subsample=0), "recon_subsample=0"),
        (dict(replay_capacity=10), "replay_capacity=10 < prefill=25"),
        (dict(gamma=1.5), "gamma=1.5"),
        (dict(env="nope"), "allowed: point_robot"),
        (dict(not_a_field=1), "unknown Config field"),
    ],
)
def test_validation_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        cfg.get_config("point_robot", **overrides)


def test_unknown_preset_lists_names():
    with pytest.raises(ValueError, match="allowed: .*point_robot_cpu.*debug"):
        cfg.get_config("pointrobot")


# ------------------------------------------------------------------------------ horizon schedule
def test_horizon_schedule_by_hand():
    c = cfg.get_config("reacher")  # H0 = 50, T = 900, R = 2.5M
    cases = {
        0: 50,
        1: 51,  # ceil(50 + 850 / 2.5e6)
        2_941: 51,  # 2941 * 850 / 2.5e6 = 0.99994 -> 51
        2_942: 52,  # 1.00028 -> 52
        1_250_000: 475,  # exactly half way: 50 + 425
        2_500_000: 900,  # ramp end
        9_000_000: 900,  # capped at T
    }
    for steps, h in cases.items():
        assert int(horizon.wm_horizon(c, steps)) == h, steps
        assert int(jax.jit(lambda s: horizon.wm_horizon(c, s))(jnp.int32(steps))) == h
    h = cfg.get_config("humanoid_dir")  # H0 = 50, T = 400, R = 7.5M
    assert int(horizon.wm_horizon(h, 3_750_000)) == 225
    assert int(horizon.wm_horizon(h, 7_499_999)) == 400
    # H0 == T: no schedule
    p = cfg.get_config("point_robot")
    assert int(horizon.wm_horizon(p, 0)) == 300 and int(horizon.wm_horizon(p, 10**6)) == 300
    assert horizon.horizon_buckets(p) == (300,)
    # baseline: no schedule, one bucket of window_length - 1 transitions
    assert horizon.horizon_buckets(cfg.get_config("reacher", mamba=False)) == (63,)


def test_horizon_buckets_cover_schedule():
    c = cfg.get_config("reacher", num_horizon_buckets=4)
    lengths = horizon.horizon_buckets(c)
    assert lengths == (263, 475, 688, 900)
    for steps in (0, 1, 600_000, 1_250_000, 1_250_001, 2_500_000):
        h = int(horizon.wm_horizon(c, steps))
        i = int(horizon.bucket_index(c, h))
        assert lengths[i] >= h and (i == 0 or lengths[i - 1] < h)
