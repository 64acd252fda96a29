"""Time indexing of batched sequences: picking entries per sequence, and which entries to pick.

A batch holds B sequences of S entries (leaves [B, S, ...]); the losses that sub-sample time
(reconstruction, the exploration ensemble) and the imagination starts use

    idx, weight = sample_times(key, h_wm, B, S - 1, count)   # [B, K] int32, [B, K] float32
    picked = gather_time(tree, idx)                           # leaves [B, K, ...]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gather_time(tree, idx: jax.Array):
    """Leaves [B, S, ...] and idx [B, K] int -> leaves [B, K, ...]: entry idx[b, k] of sequence b."""
    rows = jnp.arange(idx.shape[0])[:, None]
    return jax.tree.map(lambda x: x[rows, idx], tree)


def sample_times(key: jax.Array, h_wm, batch: int, length: int, count: int):
    """Time indices idx [B, K] int32 and weights [B, K] float32 for sub-sampled losses / imagination starts.

    count > 0: K = count indices uniform with replacement from [0, h_wm] (h_wm an int scalar,
    possibly traced), weights 1; `key` draws them. count == -1: every entry 0..length
    (K = length + 1; `length` static), weighted 1 where t <= h_wm and 0 beyond; `key` is unused.
    """
    if count == -1:
        idx = jnp.broadcast_to(jnp.arange(length + 1), (batch, length + 1))
        return idx, (idx <= h_wm).astype(jnp.float32)
    idx = jax.random.randint(key, (batch, count), 0, h_wm + 1)
    return idx, jnp.ones((batch, count), jnp.float32)
