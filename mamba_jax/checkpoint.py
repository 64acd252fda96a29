"""Checkpoints of the whole train state with orbax (params, optimiser states, replay, keys,
counters) plus a small JSON of host-side state (wall time, next evaluation, config).

    ckpt = Checkpointer(os.path.join(logdir, "checkpoints"), max_to_keep=2)
    ckpt.save(step, train_state, {"wall_seconds": 12.3, ...})   # step: env steps (an int)
    state, meta = ckpt.restore(abstract_state)                  # the latest complete one

Atomicity: orbax writes each checkpoint into a temporary directory and renames it when it is
complete; an interrupted save leaves no step directory, so `latest_step` always names a
complete checkpoint. Old checkpoints are removed only after a newer one is complete
(`max_to_keep` >= 1 keeps at least the last good one). Saves are synchronous, so a run that
ends right after `save` leaves it on disk.

`restore` first compares the saved arrays' paths, shapes and dtypes (orbax's metadata, no array
read) with the target's and raises a ValueError naming the differences; orbax itself would fail
part-way through its asynchronous reads and leave unfinished ones behind.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """A thin wrapper over `orbax.checkpoint.CheckpointManager` for (train state, host metadata)."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 (the last good checkpoint is always kept), got {max_to_keep}")
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=False,
        )
        # the handlers are named so that `item_metadata` can read a checkpoint written earlier
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves `state` (a pytree of arrays, possibly sharded) and JSON-able `meta` as `step`."""
        self._manager.save(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores (state, meta) of `step` (default: the latest). `target` is a pytree of arrays
        or jax.ShapeDtypeStruct (with shardings) giving the structure, shapes and placement."""
        step = self._step(step)
        abstract = jax.tree.map(_abstract, target)
        self.check_fits(abstract, step)
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        return out["state"], dict(out["meta"])

    def saved_arrays(self, step: int | None = None) -> dict[str, tuple[tuple[int, ...], str]]:
        """{"agent/params/...": (shape, dtype name)} of the arrays saved in checkpoint `step`
        (default: the latest), from orbax's metadata (no array is read)."""
        metadata = self._manager.item_metadata(self._step(step))["state"]
        return _arrays(getattr(metadata, "tree", metadata))

    def check_fits(self, target: Any, step: int | None = None) -> None:
        """Raises ValueError when checkpoint `step` does not hold exactly the arrays of `target` (a
        pytree of arrays or ShapeDtypeStructs): the same paths, shapes and dtypes."""
        step = self._step(step)
        saved, wanted = self.saved_arrays(step), _arrays(target)
        problems = [f"{path}: saved {_describe(saved[path])}, here {_describe(wanted[path])}"
                    for path in sorted(saved.keys() & wanted.keys()) if saved[path] != wanted[path]]
        problems += [f"{path}: not in the checkpoint" for path in sorted(wanted.keys() - saved.keys())]
        problems += [f"{path}: only in the checkpoint" for path in sorted(saved.keys() - wanted.keys())]
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(f"checkpoint {step} in {self.directory} does not fit the state to restore into: "
                             + "; ".join(problems[:5]) + more)

    def restore_meta(self, step: int | None = None) -> dict:
        """The JSON metadata of checkpoint `step` (default: the latest), without the state."""
        step = self._step(step)
        out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def _step(self, step: int | None) -> int:
        """`step`, or the latest complete one when None; FileNotFoundError if there is none."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return step

    def close(self) -> None:
        self._manager.close()


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey (dataclass / namedtuple field), SequenceKey
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _arrays(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    """{"a/b/0": (shape, dtype name)} of a pytree's leaves; dicts, dataclasses and tuples alike."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): (tuple(x.shape), np.dtype(x.dtype).name) for path, x in leaves}


def _describe(entry) -> str:
    shape, dtype = entry
    return f"{dtype}{list(shape)}"


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
