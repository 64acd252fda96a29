"""On-device replay of whole meta-episodes (a small pure module; no flashbax).

The buffer holds up to C meta-episodes, each a pytree of arrays with leading [S, ...]
(S = T + 1 entries, see docs/api.md), stacked to [C, S, ...]:

    replay = init(capacity, example)                  # example: one meta-episode, leaves [S, ...]
    replay = add(replay, episodes)                    # episodes: leaves [K, S, ...], K <= C, FIFO
    batch = sample_episodes(replay, key, batch_size)  # MAMBA: whole meta-episodes [B, S, ...]
    batch = sample_windows(replay, key, batch_size, window_length)   # DreamerV3: [B, W, ...]

Every function is pure and jittable (capacity, batch size and window length are static:
they set shapes). Sampling draws only from filled slots; it must not be called on an empty
buffer (the trainer always prefills first; an empty buffer would return slot 0's zeros).
"""

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Replay:
    """A FIFO ring of meta-episodes.

    data:     pytree, leaves [C, S, ...]
    position: int32 [], the slot the next insert writes first
    size:     int32 [], number of filled slots (<= C)
    """

    data: dict
    position: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]

    @property
    def sequence_length(self) -> int:
        """S, the number of entries of one stored meta-episode."""
        return jax.tree.leaves(self.data)[0].shape[1]


def init(capacity: int, example) -> Replay:
    """An empty buffer of `capacity` meta-episodes shaped like `example` (leaves [S, ...];
    arrays or jax.ShapeDtypeStruct)."""
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"replay capacity must be an integer >= 1, got {capacity!r}")
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example)
    return Replay(data=data, position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def add(replay: Replay, episodes) -> Replay:
    """Inserts K meta-episodes (leaves [K, S, ...]) FIFO: slots position .. position+K-1 (mod C),
    overwriting the oldest ones once the buffer is full. K <= C (static)."""
    capacity = replay.capacity
    count = jax.tree.leaves(episodes)[0].shape[0]
    if count > capacity:
        raise ValueError(f"cannot insert {count} meta-episodes into a replay of capacity {capacity}")
    slots = (replay.position + jnp.arange(count, dtype=jnp.int32)) % capacity
    data = jax.tree.map(lambda buf, x: buf.at[slots].set(x.astype(buf.dtype)), replay.data, episodes)
    return Replay(
        data=data,
        position=(replay.position + count) % capacity,
        size=jnp.minimum(replay.size + count, capacity),
    )


def num_entries(replay: Replay) -> jax.Array:
    """Number of valid stored entries (filled slots x S), int32 []."""
    return replay.size * replay.sequence_length


def _sample_slots(replay: Replay, key: jax.Array, batch_size: int) -> jax.Array:
    """[B] int32 slots drawn uniformly among the filled ones."""
    return jax.random.randint(key, (batch_size,), 0, jnp.maximum(replay.size, 1))


def sample_episodes(replay: Replay, key: jax.Array, batch_size: int):
    """B whole meta-episodes drawn uniformly with replacement from the filled slots.
    Returns the data pytree with leaves [B, S, ...]."""
    slots = _sample_slots(replay, key, batch_size)
    return jax.tree.map(lambda x: x[slots], replay.data)


def sample_windows(replay: Replay, key: jax.Array, batch_size: int, window_length: int):
    """B windows of `window_length` consecutive entries (the DreamerV3 baseline).

    The meta-episode is drawn uniformly among filled slots, the start uniformly in
    [0, S - W], so every window lies inside one stored meta-episode. `is_first` is set True
    at entry 0 of every window (the agent starts each window from its learned initial
    state). Returns leaves [B, W, ...].
    """
    length = replay.sequence_length
    if not 1 <= window_length <= length:
        raise ValueError(f"window_length must be in [1, {length}] (S entries per meta-episode), got {window_length}")
    key_slot, key_start = jax.random.split(key)
    slots = _sample_slots(replay, key_slot, batch_size)
    starts = jax.random.randint(key_start, (batch_size,), 0, length - window_length + 1)

    def window(x, slot, start):
        return jax.lax.dynamic_slice_in_dim(x[slot], start, window_length, axis=0)

    batch = jax.tree.map(lambda x: jax.vmap(window, (None, 0, 0))(x, slots, starts), replay.data)
    if "is_first" in batch:
        batch["is_first"] = batch["is_first"].at[:, 0].set(True)
    return batch
