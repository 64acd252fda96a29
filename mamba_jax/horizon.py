"""MAMBA's world-model horizon schedule and the static sequence lengths the update is compiled for.

    H_wm(steps) = min(ceil(H0 + steps * (T - H0) / R), T)

`wm_horizon(config, steps)` computes it exactly (integer arithmetic, jittable). The update is
compiled once per *bucket*: `horizon_buckets(config)` gives the handful of static sequence
lengths, and `bucket_index(config, h_wm)` the one an update at horizon h_wm runs (entries beyond
h_wm are masked inside it). See docs/algorithm.md ("World-model horizon").
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from mamba_jax.config import Config


def wm_horizon(config: Config, steps) -> jnp.ndarray:
    """H_wm(steps) = min(ceil(H0 + steps * (T - H0) / R), T), exactly, as an int32 array [].

    Jittable in `steps` (an int array or Python int). Exact integer arithmetic: with
    g = gcd(T - H0, R), D = (T - H0) / g and R' = R / g, and s = clip(steps, 0, R),
    steps * (T - H0) / R = (s // R') * D + (s % R') * D / R'. For the baseline
    (mamba=False) and for H0 == T it is the constant T.
    """
    T = config.meta_length
    h0, ramp = config.world_model.initial_wm_horizon, config.world_model.wm_horizon_ramp_steps
    if not config.has_ramp:
        return jnp.asarray(T, jnp.int32)
    g = math.gcd(T - h0, ramp)
    d, r = (T - h0) // g, ramp // g
    if r * d >= 2**31:  # would overflow int32: fall back to float32 (off by one at most)
        x = jnp.clip(jnp.asarray(steps, jnp.float32), 0, ramp)
        return jnp.minimum(jnp.ceil(h0 + x * ((T - h0) / ramp)), T).astype(jnp.int32)
    s = jnp.clip(jnp.asarray(steps, jnp.int32), 0, ramp)
    q, rem = s // r, s % r
    h = h0 + q * d + (rem * d + r - 1) // r
    return jnp.minimum(h, T).astype(jnp.int32)


def horizon_buckets(config: Config) -> tuple[int, ...]:
    """The static sequence lengths (in transitions) that the update is compiled for.

    MAMBA with a ramp: H0 + ceil(k * (T - H0) / K) for k = 1..K (K = num_horizon_buckets),
    so bucket k covers horizons in (previous length, its length]; its last one is T.
    MAMBA without a ramp: (T,). Baseline: (window_length - 1,).
    """
    T, h0 = config.meta_length, config.world_model.initial_wm_horizon
    if not config.mamba:
        return (config.protocol.window_length - 1,)
    if not config.has_ramp:
        return (T,)
    k = config.world_model.num_horizon_buckets
    return tuple(sorted({h0 + -(-(i * (T - h0)) // k) for i in range(1, k + 1)}))


def bucket_index(config: Config, h_wm) -> jnp.ndarray:
    """Index (int32 [], jittable) of the smallest bucket length >= h_wm."""
    lengths = jnp.asarray(horizon_buckets(config), jnp.int32)
    return jnp.sum(lengths < jnp.asarray(h_wm, jnp.int32)).astype(jnp.int32)
