"""Checkpoints of the whole train state with orbax (params, optimiser states, replay, keys,
counters) plus a small JSON of host-side state (wall time, next evaluation, config).

    ckpt = Checkpointer(os.path.join(logdir, "checkpoints"), max_to_keep=2)
    ckpt.save(step, train_state, {"wall_seconds": 12.3, ...})   # step: env steps (an int)
    state, meta = ckpt.restore(abstract_state)                  # the latest complete one
    state, meta, skipped = ckpt.restore_newest_intact(abstract_state)   # past damaged ones

Atomicity: orbax writes each checkpoint into a temporary directory and renames it when it is
complete; an interrupted save leaves no step directory, so `latest_step` always names a
complete checkpoint. Old checkpoints are removed only after a newer one is complete
(`max_to_keep` >= 1 keeps at least the last good one). Saves are synchronous, so a run that
ends right after `save` leaves it on disk.

`restore` first compares the saved arrays' paths, shapes and dtypes (orbax's metadata, no array
read) with the target's and raises a ValueError naming the differences; orbax itself would fail
part-way through its asynchronous reads and leave unfinished ones behind.

Damage after a save (a file deleted, a copy or disk cut short) is found by `damage(step)`, which
reads only metadata (kilobytes, no array): a checkpoint is intact when

1. its host JSON (meta/metadata) and the state's orbax metadata (state/_METADATA) are present
   and parse, and so do the state's optional JSON files (_sharding, array_metadatas/*) present,
2. the state's OCDBT manifest and every B+tree node of its latest version decode
   (`tensorstore.ocdbt.dump`), and
3. every data file those nodes point into exists and is at least as long as the byte ranges
   read from it.

Bytes changed inside a data file pass these checks but make orbax's read fail: `restore` then
raises DamagedCheckpoint too (not the ValueError of a target that does not fit), so a caller can
fall back to an older checkpoint either way (`restore_newest_intact`; mamba_jax/runner.py on
resume). The metadata check comes first because it is cheap and quiet: a read that fails part-way
leaves orbax's unfinished asynchronous reads to print tracebacks on stderr. `set_aside`
moves a damaged checkpoint out of the managed directory (into DIRECTORY_damaged/STEP), so that
`latest_step`, `max_to_keep` and a new save at its step no longer see it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp


class DamagedCheckpoint(Exception):
    """Checkpoint `step` cannot be read back: `reason` (one line) says which file and how."""

    def __init__(self, directory: str, step: int, reason: str):
        super().__init__(f"checkpoint {step} in {directory} is damaged: {reason}")
        self.step = step
        self.reason = reason


class NoIntactCheckpoint(ValueError):
    """No checkpoint in the directory reads back; the message names each one and why (one line)."""


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
        or jax.ShapeDtypeStruct (with shardings) giving the structure, shapes and placement.
        Raises DamagedCheckpoint when the checkpoint's files are damaged (`damage`, or a failed
        read), ValueError naming the arrays when it holds other arrays than `target`."""
        step = self._step(step)
        problem = self.damage(step)
        if problem:
            raise DamagedCheckpoint(self.directory, step, problem)
        abstract = jax.tree.map(_abstract, target)
        self.check_fits(abstract, step)
        try:
            out = self._manager.restore(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
            )
        except Exception as error:  # the metadata fitted, so a failed read means damaged files
            reason = _one_line(error)
        else:
            return out["state"], dict(out["meta"])
        _collect_failed_read()
        raise DamagedCheckpoint(self.directory, step, reason)

    def saved_arrays(self, step: int | None = None) -> dict[str, tuple[tuple[int, ...], str]]:
        """{"agent/params/...": (shape, dtype name)} of the arrays saved in checkpoint `step`
        (default: the latest), from orbax's metadata (no array is read)."""
        step = self._step(step)
        try:
            metadata = self._manager.item_metadata(step)["state"]
        except Exception as error:
            raise DamagedCheckpoint(self.directory, step, f"state metadata unreadable: {_one_line(error)}") from error
        return _arrays(getattr(metadata, "tree", metadata))

    def check_fits(self, target: Any, step: int | None = None) -> None:
        """Raises ValueError when checkpoint `step` does not hold exactly the arrays of `target` (a
        pytree of arrays or ShapeDtypeStructs): the same paths, shapes and dtypes."""
        step = self._step(step)
        problems = self.fit_problems(target, step)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(f"checkpoint {step} in {self.directory} does not fit the state to restore into: "
                             + "; ".join(problems[:5]) + more)

    def fit_problems(self, target: Any, step: int | None = None) -> list[str]:
        """["agent/params/w: saved float32[2, 3], here float32[2, 4]", ...]: the arrays of `target`
        whose path, shape or dtype differ from checkpoint `step`'s (empty when it fits)."""
        saved, wanted = self.saved_arrays(step), _arrays(target)
        problems = [f"{path}: saved {_describe(saved[path])}, here {_describe(wanted[path])}"
                    for path in sorted(saved.keys() & wanted.keys()) if saved[path] != wanted[path]]
        problems += [f"{path}: not in the checkpoint" for path in sorted(wanted.keys() - saved.keys())]
        problems += [f"{path}: only in the checkpoint" for path in sorted(saved.keys() - wanted.keys())]
        return problems

    def restore_meta(self, step: int | None = None) -> dict:
        """The JSON metadata of checkpoint `step` (default: the latest), without the state."""
        step = self._step(step)
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as error:
            raise DamagedCheckpoint(self.directory, step, f"meta unreadable: {_one_line(error)}") from error
        return dict(out["meta"])

    def damage(self, step: int) -> str | None:
        """None when checkpoint `step` is intact, else one line naming the damaged file (the checks
        of the module docstring; only metadata is read)."""
        root = os.path.join(self.directory, str(step))
        per_process = os.path.join(root, "state", "array_metadatas")
        optional = ["state/_sharding"]  # JSON that orbax reads when present
        if os.path.isdir(per_process):
            optional += [f"state/array_metadatas/{name}" for name in sorted(os.listdir(per_process))]
        for name in ["meta/metadata", "state/_METADATA"] + optional:
            path = os.path.join(root, name)
            if not os.path.isfile(path):
                if name in optional:
                    continue
                return f"{name} is missing"
            try:
                with open(path) as f:
                    json.load(f)
            except (OSError, ValueError) as error:
                return f"{name} is unreadable ({_one_line(error)})"
        return _ocdbt_damage(os.path.join(root, "state"), "state/")

    def set_aside(self, step: int) -> str:
        """Moves checkpoint `step` to DIRECTORY_damaged/STEP (STEP.1, ... if taken) and returns
        that path; the manager forgets the step."""
        aside = self.directory + "_damaged"
        target = os.path.join(aside, str(step))
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(aside, f"{step}.{suffix}")
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            os.replace(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint set aside {step}")
        self._manager.reload()
        return target

    def restore_newest_intact(self, target: Any, check: Callable[[dict, int], None] | None = None):
        """(state, meta, skipped) of the newest checkpoint that is intact and reads back into
        `target`, newest first; `skipped` lists (step, reason) of the damaged newer ones.

        `check(meta, step)` (optional) sees each candidate's host JSON before its arrays are read
        and may raise (a ValueError of another config is not damage: it ends the search). Raises
        NoIntactCheckpoint when every checkpoint is damaged (or there is none)."""
        skipped = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                problem = self.damage(step)
                if problem:
                    raise DamagedCheckpoint(self.directory, step, problem)
                if check is not None:
                    check(self.restore_meta(step), step)
                state, meta = self.restore(target, step)
                return state, meta, skipped
            except DamagedCheckpoint as damaged:
                skipped.append((step, damaged.reason))
        found = "; ".join(f"{step}: {reason}" for step, reason in skipped) or "there is none"
        raise NoIntactCheckpoint(f"no intact checkpoint in {self.directory} ({found})")

    def _step(self, step: int | None) -> int:
        """`step`, or the latest complete one when None; FileNotFoundError if there is none."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return step

    def close(self) -> None:
        self._manager.close()
        _collect_failed_read()  # the manager held the reads a failed restore left behind until now


def _ocdbt_damage(directory: str, shown: str) -> str | None:
    """None when the OCDBT database in `directory` (orbax's array store) reads back: the manifest
    and every B+tree node of the latest version decode, and each data file holds the byte ranges
    that the nodes point to. Else one line naming the file (as `shown` + its relative path)."""
    import tensorstore as ts

    def file_problem(location: str) -> str | None:
        path, end = _location(location)
        full = os.path.join(directory, path)
        if not os.path.isfile(full):
            return f"{shown}{path} is missing"
        if os.path.getsize(full) < end:
            return f"{shown}{path} is truncated ({os.path.getsize(full)} of at least {end} bytes)"
        return None

    if not os.path.isfile(os.path.join(directory, "manifest.ocdbt")):
        return f"{shown}manifest.ocdbt is missing"
    base = ts.KvStore.open({"driver": "file", "path": directory.rstrip("/") + "/"}).result()
    try:
        versions = ts.ocdbt.dump(base).result().get("versions") or []
    except Exception as error:  # tensorstore raises ValueError with its status text
        return f"{shown}manifest.ocdbt is unreadable ({_one_line(error)})"
    root = versions[-1].get("root", {}).get("location") if versions else None
    nodes, values = ([root] if root else []), []  # no root: an empty tree
    while nodes:
        location = nodes.pop()
        problem = file_problem(location)
        if problem:
            return problem
        try:
            node = ts.ocdbt.dump(base, location).result()
        except Exception as error:
            return f"{shown}{_location(location)[0]} is unreadable ({_one_line(error)})"
        for entry in node.get("entries", []):
            if "location" in entry:  # a child node (interior nodes)
                nodes.append(entry["location"])
            if "indirect_value" in entry:  # a value stored in a data file (leaf nodes)
                values.append(entry["indirect_value"])
    return next(filter(None, map(file_problem, values)), None)


def _location(text: str) -> tuple[str, int]:
    """(file path relative to the database, end of the byte range) of an OCDBT location
    "<type>:<base path>:<relative path>:<offset>:<length>" (as `tensorstore.ocdbt.dump` writes)."""
    kind_and_file, offset, length = text.rsplit(":", 2)
    file_id = kind_and_file.split(":", 1)[1]
    base_path, _, relative = file_id.partition(":")
    return base_path + relative, int(offset) + int(length)


def _collect_failed_read() -> None:
    """A failed orbax read leaves the coroutines of its other array reads behind, unawaited; when the
    garbage collector meets them later, Python reports their errors as unrelated warnings. Collect them
    now, their errors (this checkpoint's damage, already reported) discarded. Called after a failed
    read and when the Checkpointer closes (its manager may hold them until then)."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _one_line(error: BaseException) -> str:
    """The first line of an error's message, at most 200 characters."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    text = lines[0]
    return text if len(text) <= 200 else text[:197] + "..."


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
