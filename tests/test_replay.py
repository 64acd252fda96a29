"""Replay: FIFO insert, capacity, sampling only filled slots, windows inside bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import replay as rb

S = 6  # entries per stored meta-episode


def episodes(ids):
    """Meta-episodes whose every entry encodes (episode id, entry index): value = 100 * id + t."""
    ids = jnp.asarray(ids, jnp.float32)
    t = jnp.arange(S, dtype=jnp.float32)
    value = 100.0 * ids[:, None] + t[None]
    return {
        "obs": {"obs": jnp.stack([value, -value], -1), "reward": value},
        "action": value[..., None],
        "is_first": jnp.broadcast_to(t == 0, value.shape),
        "is_terminal": jnp.zeros(value.shape, bool),
    }


def example():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), episodes([0]))


add = jax.jit(rb.add)
sample_episodes = jax.jit(rb.sample_episodes, static_argnums=2)
sample_windows = jax.jit(rb.sample_windows, static_argnums=(2, 3))


def stored_ids(replay):
    return (np.asarray(replay.data["obs"]["reward"][:, 0]) / 100).astype(int).tolist()


def test_init_shapes_and_empty():
    replay = rb.init(4, example())
    assert replay.capacity == 4 and replay.sequence_length == S
    assert replay.data["obs"]["obs"].shape == (4, S, 2)
    assert replay.data["is_first"].dtype == jnp.bool_
    assert int(replay.size) == 0 and int(rb.num_entries(replay)) == 0


def test_fifo_insert_and_overwrite():
    replay = rb.init(4, example())
    replay = add(replay, episodes([1, 2, 3]))
    assert int(replay.size) == 3 and int(replay.position) == 3
    assert int(rb.num_entries(replay)) == 3 * S
    replay = add(replay, episodes([4, 5, 6]))  # 4 fills slot 3; 5 and 6 overwrite the oldest (1, 2)
    assert int(replay.size) == 4 and int(replay.position) == 2
    assert stored_ids(replay) == [5, 6, 3, 4]
    replay = add(replay, episodes([7, 8, 9]))
    assert stored_ids(replay) == [9, 6, 7, 8]
    assert int(replay.position) == 1 and int(replay.size) == 4


def test_insert_more_than_capacity_is_an_error():
    replay = rb.init(2, example())
    with pytest.raises(ValueError, match="capacity 2"):
        rb.add(replay, episodes([1, 2, 3]))


def test_bad_capacity():
    with pytest.raises(ValueError, match=">= 1"):
        rb.init(0, example())


def test_sample_episodes_only_filled_and_whole():
    replay = add(rb.init(8, example()), episodes([1, 2, 3]))
    batch = sample_episodes(replay, jax.random.PRNGKey(0), 512)
    assert batch["obs"]["obs"].shape == (512, S, 2)
    ids = np.asarray(batch["obs"]["reward"][:, 0]) / 100
    assert set(ids.astype(int).tolist()) == {1, 2, 3}  # all filled slots, no empty one
    # whole meta-episodes from entry 0, every leaf from the same slot
    np.testing.assert_array_equal(batch["obs"]["reward"], 100 * ids[:, None] + np.arange(S))
    np.testing.assert_array_equal(batch["action"][..., 0], batch["obs"]["reward"])
    assert bool(batch["is_first"][:, 0].all()) and not bool(batch["is_first"][:, 1:].any())
    # roughly uniform: each of 3 slots ~ 512 / 3
    counts = np.bincount(ids.astype(int), minlength=4)[1:]
    assert counts.min() > 120


def test_sampling_is_deterministic_under_a_key():
    replay = add(rb.init(8, example()), episodes([1, 2, 3, 4, 5]))
    a = sample_episodes(replay, jax.random.PRNGKey(3), 16)
    b = sample_episodes(replay, jax.random.PRNGKey(3), 16)
    c = sample_episodes(replay, jax.random.PRNGKey(4), 16)
    np.testing.assert_array_equal(a["action"], b["action"])
    # The key sets the slots: uniform integers in [0, size) from it (slot i holds episode i + 1).
    for key, batch in ((3, a), (4, c)):
        slots = np.asarray(jax.random.randint(jax.random.PRNGKey(key), (16,), 0, 5))
        np.testing.assert_array_equal(batch["action"][:, 0, 0], 100 * (slots + 1))


def test_sample_windows_inside_bounds():
    replay = add(rb.init(8, example()), episodes([1, 2]))
    window = 3
    batch = sample_windows(replay, jax.random.PRNGKey(1), 1000, window)
    values = np.asarray(batch["obs"]["reward"])
    assert values.shape == (1000, window)
    ids = (values[:, 0] // 100).astype(int)
    starts = values[:, 0] - 100 * ids
    assert set(ids.tolist()) == {1, 2}
    # consecutive entries of one meta-episode, starting anywhere in [0, S - W]
    np.testing.assert_array_equal(values, values[:, :1] + np.arange(window))
    assert set(starts.astype(int).tolist()) == set(range(S - window + 1))
    np.testing.assert_array_equal(batch["obs"]["obs"][..., 0], values)
    # is_first marks every window start (the agent starts from its initial state)
    assert bool(batch["is_first"][:, 0].all()) and not bool(batch["is_first"][:, 1:].any())


def test_window_of_full_length_is_the_whole_episode():
    replay = add(rb.init(2, example()), episodes([1]))
    batch = sample_windows(replay, jax.random.PRNGKey(1), 4, S)
    np.testing.assert_array_equal(batch["obs"]["reward"], np.tile(100 + np.arange(S), (4, 1)))
    with pytest.raises(ValueError, match=r"\[1, 6\]"):
        rb.sample_windows(replay, jax.random.PRNGKey(1), 4, S + 1)
