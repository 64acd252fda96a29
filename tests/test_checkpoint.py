"""Checkpointer: exact round trip of a train-state-like pytree, max_to_keep, incomplete saves."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import replay as rb
from mamba_jax.checkpoint import Checkpointer
from mamba_jax.train import TrainState


def make_state(value: float) -> TrainState:
    example = {"obs": jax.ShapeDtypeStruct((5, 3), jnp.float32), "is_first": jax.ShapeDtypeStruct((5,), jnp.bool_)}
    replay = rb.init(4, example)
    episodes = {"obs": jnp.full((2, 5, 3), value), "is_first": jnp.zeros((2, 5), bool).at[:, 0].set(True)}
    replay = rb.add(replay, episodes)
    agent = {"params": {"w": jnp.arange(6.0).reshape(2, 3) * value, "b": jnp.ones(3, jnp.bfloat16)},
             "opt": (jnp.zeros(()), {"mu": jnp.full((2,), value)})}
    return TrainState(
        agent=agent,
        replay=replay,
        key=jax.random.PRNGKey(int(value)),
        eval_key=jax.random.PRNGKey(7),
        env_steps=jnp.int32(100 * value),
        updates=jnp.int32(3),
        iterations=jnp.int32(2),
    )


def assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    state = make_state(1.5)
    ckpt.save(150, state, {"wall_seconds": 1.25, "next_eval": 200, "run": {"seed": 3}})
    assert ckpt.latest_step() == 150
    # a fresh manager (a new process) restores into the structure of a different state
    restored, meta = Checkpointer(str(tmp_path / "ckpt")).restore(make_state(0.0))
    assert_same(restored, state)
    assert meta == {"wall_seconds": 1.25, "next_eval": 200, "run": {"seed": 3}}
    # abstract targets work too
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), make_state(0.0))
    restored, _ = ckpt.restore(abstract)
    assert_same(restored, state)
    ckpt.close()


def test_max_to_keep_and_latest(tmp_path):
    ckpt = Checkpointer(str(tmp_path), max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, make_state(float(step)), {"step": step})
    assert ckpt.all_steps() == [2, 3]
    restored, meta = ckpt.restore(make_state(0.0))
    assert meta["step"] == 3 and int(restored.env_steps) == 300
    restored, meta = ckpt.restore(make_state(0.0), step=2)
    assert meta["step"] == 2 and int(restored.env_steps) == 200
    ckpt.close()


def test_incomplete_save_is_ignored(tmp_path):
    """A save interrupted mid-way leaves only orbax's temporary directory: never the latest."""
    ckpt = Checkpointer(str(tmp_path), max_to_keep=1)
    ckpt.save(5, make_state(5.0), {"step": 5})
    ckpt.close()
    broken = tmp_path / "6.orbax-checkpoint-tmp-1234567"
    broken.mkdir()
    (broken / "partial").write_text("garbage")
    ckpt = Checkpointer(str(tmp_path), max_to_keep=1)
    assert ckpt.latest_step() == 5
    restored, meta = ckpt.restore(make_state(0.0))
    assert meta["step"] == 5 and int(restored.env_steps) == 500
    ckpt.close()


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(str(tmp_path), max_to_keep=0)
    with pytest.raises(FileNotFoundError):
        Checkpointer(str(tmp_path / "empty")).restore(make_state(0.0))
    assert not os.path.exists(tmp_path / "empty" / "0")


def test_restore_into_another_shape_names_the_arrays_before_reading(tmp_path):
    """A target with another shape, dtype or tree fails with the arrays named, from orbax's
    metadata alone (no read is started, so none is left unfinished)."""
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, make_state(1.0), {"step": 1})
    assert ckpt.saved_arrays()["agent/params/w"] == ((2, 3), "float32")
    assert ckpt.saved_arrays()["agent/params/b"] == ((3,), "bfloat16")
    ckpt.check_fits(make_state(0.0))  # the same arrays: no error

    wider = make_state(0.0).replace(agent={**make_state(0.0).agent, "params": {"w": jnp.zeros((2, 4)),
                                                                                 "b": jnp.ones(3, jnp.bfloat16)}})
    with pytest.raises(ValueError, match=r"agent/params/w: saved float32\[2, 3\], here float32\[2, 4\]"):
        ckpt.restore(wider)
    retyped = make_state(0.0).replace(updates=jnp.float32(3))
    with pytest.raises(ValueError, match=r"updates: saved int32\[\], here float32\[\]"):
        ckpt.restore(retyped)
    extra = make_state(0.0).replace(agent={**make_state(0.0).agent, "ensemble": jnp.zeros(2)})
    with pytest.raises(ValueError, match="agent/ensemble: not in the checkpoint"):
        ckpt.restore(extra)
    fewer = make_state(0.0).replace(agent={"params": make_state(0.0).agent["params"]})
    with pytest.raises(ValueError, match="agent/opt/0: only in the checkpoint"):
        ckpt.restore(fewer)
    restored, meta = ckpt.restore(make_state(0.0))  # the checkpoint is still fine
    assert_same(restored, make_state(1.0))
    assert meta == {"step": 1}
    ckpt.close()
