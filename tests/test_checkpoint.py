"""Checkpointer: exact round trip of a train-state-like pytree, max_to_keep, incomplete saves,
damaged checkpoints (found from metadata, or by a failed read) and the fall-back to an older one."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mamba_jax import replay as rb
from mamba_jax.checkpoint import Checkpointer, DamagedCheckpoint, NoIntactCheckpoint
from mamba_jax.trainer import TrainState


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


def make_large_state(value: float) -> TrainState:
    """make_state plus a 16 KB array: orbax keeps values over 1 KB in separate data files."""
    state = make_state(value)
    return state.replace(agent={**state.agent, "table": jnp.arange(4000.0) * value})


def data_file(directory, step) -> str:
    """The largest file of checkpoint `step`'s array store (the 16 KB table's data file)."""
    root = os.path.join(directory, str(step), "state")
    files = [os.path.join(r, f) for r, _, names in os.walk(root) for f in names]
    return max(files, key=os.path.getsize)


def cut(path, keep: int | None = None) -> None:
    """Truncates a file to `keep` bytes (default: half)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2 if keep is None else keep])


def test_damage_names_the_missing_or_truncated_file(tmp_path):
    """`damage` reads metadata only and names the file: a missing or cut host JSON, orbax
    metadata or OCDBT manifest, a data file shorter than the byte ranges the tree points to."""
    base = tmp_path / "base"
    ckpt = Checkpointer(str(base))
    ckpt.save(1, make_large_state(1.0), {"step": 1})
    ckpt.close()
    assert Checkpointer(str(base)).damage(1) is None

    def damaged(change) -> str:
        directory = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(base, directory)
        change(directory / "1")
        found = Checkpointer(str(directory))
        with pytest.raises(DamagedCheckpoint) as refused:
            found.restore(make_large_state(0.0))
        assert refused.value.step == 1 and refused.value.reason == found.damage(1)
        return found.damage(1)

    assert damaged(lambda d: os.remove(d / "meta" / "metadata")) == "meta/metadata is missing"
    assert damaged(lambda d: cut(d / "state" / "_METADATA")).startswith("state/_METADATA is unreadable (")
    assert damaged(lambda d: os.remove(d / "state" / "manifest.ocdbt")) == "state/manifest.ocdbt is missing"
    path = data_file(base, 1)
    relative = os.path.relpath(path, base / "1")
    size = os.path.getsize(path)
    assert size > 4000  # the table's data file, not a small tree node
    reason = damaged(lambda d: cut(d / relative))
    assert reason.startswith(f"{relative} is truncated ({size // 2} of at least ") and reason.endswith(" bytes)")
    needed = int(reason.split()[-2])  # the end of the last byte range read from the file
    assert size // 2 < needed <= size
    assert damaged(lambda d: os.remove(d / relative)) == f"{relative} is missing"


def test_restore_newest_intact_falls_back_and_names_what_it_skipped(tmp_path):
    """Newest first: a truncated data file (found from metadata) and zeroed bytes of the same
    length (found when the read fails) are skipped with their reasons; the newest intact one is
    restored; none intact: NoIntactCheckpoint naming each, in one line."""
    ckpt = Checkpointer(str(tmp_path), max_to_keep=3)
    for step in (1, 2, 3):
        ckpt.save(step, make_large_state(float(step)), {"step": step})
    cut(data_file(tmp_path, 3))
    zeroed = data_file(tmp_path, 2)
    with open(zeroed, "r+b") as f:
        f.write(bytes(os.path.getsize(zeroed)))
    assert ckpt.damage(2) is None  # the sizes are right: only reading the arrays finds it
    state, meta, skipped = ckpt.restore_newest_intact(make_large_state(0.0))
    assert meta == {"step": 1}
    assert_same(state, make_large_state(1.0))
    assert [step for step, _ in skipped] == [3, 2]
    assert "is truncated (" in skipped[0][1] and skipped[1][1]  # the read's own error, first line

    seen = []
    ckpt.restore_newest_intact(make_large_state(0.0), check=lambda meta, step: seen.append((meta["step"], step)))
    assert seen == [(2, 2), (1, 1)]  # 3 is skipped before its meta is checked, 2 only when its read fails
    with pytest.raises(ValueError, match="another config"):  # a refusal by `check` is not damage
        ckpt.restore_newest_intact(make_large_state(0.0), check=lambda meta, step: _raise(ValueError("another config")))

    os.remove(tmp_path / "1" / "meta" / "metadata")
    with pytest.raises(NoIntactCheckpoint) as refused:
        ckpt.restore_newest_intact(make_large_state(0.0))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"no intact checkpoint in {tmp_path} (3: state/")
    assert "; 1: meta/metadata is missing)" in message
    ckpt.close()


def _raise(error):
    raise error


def test_set_aside_frees_the_step(tmp_path):
    """A damaged checkpoint set aside leaves the managed steps and directory: the step can be
    saved again, and the older checkpoints are kept by max_to_keep."""
    directory = tmp_path / "checkpoints"
    ckpt = Checkpointer(str(directory), max_to_keep=2)
    ckpt.save(1, make_state(1.0), {"step": 1})
    ckpt.save(2, make_state(2.0), {"step": 2})
    cut(directory / "2" / "state" / "_METADATA")
    assert ckpt.set_aside(2) == str(tmp_path / "checkpoints_damaged" / "2")
    assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
    assert sorted(os.listdir(tmp_path / "checkpoints_damaged" / "2")) == sorted(os.listdir(directory / "1"))
    ckpt.save(2, make_state(2.0), {"step": 2})
    assert ckpt.all_steps() == [1, 2] and ckpt.damage(2) is None
    cut(directory / "2" / "meta" / "metadata")
    assert ckpt.set_aside(2) == str(tmp_path / "checkpoints_damaged" / "2.1")  # the first one is kept
    ckpt.close()
