"""The host runner: `run` trains the seeds of a config end to end around the pure trainer.

    from mamba_jax import get_config
    from mamba_jax.runner import run
    out = run(get_config("debug"), "/tmp/debug", num_seeds=2, steps=400)
    out["state"]   # the final TrainState (mamba_jax/trainer.py), seeds stacked on axis 0
    out["last"]    # the last metrics row (the last line of LOGDIR/metrics.jsonl)
    out["test"]    # the final test summary (LOGDIR/final_test.json)

`run` is a sequence of named steps, each a function of this module:

    run_arguments     checks the arguments; the default chunk length
    _functions        compiles the RunFunctions (trainer.compile_run) or checks the ones given
    start_run         a new run, a resume (`_resume`: the newest intact checkpoint, same settings)
                      or another run's checkpoint (`init_from_run`)
    begin             the resumed state, or a new run's init (prefill) and its `first_row`: the
                      evaluation at the prefill's env steps
    _chunk_row        one chunk's metrics row (training summaries; `evaluation` when due)
    save_checkpoint   a checkpoint every `checkpoint_every` chunks and at the end
    write_final_test  final_eval_tasks fresh tasks (`final_test_returns`)

The public steps read a config through its `RunSettings` (`run_settings`), so that the RL² runner
(mamba_jax/rl2_runner.py) runs its own training loop through the same steps.

Failures a user meets raise ValueError with a one-line message that a launcher can print: a
logdir that already holds a run (without resume=True), a resume under other settings (the
changed Config fields with their old and new values, then the arrays whose shapes differ),
no intact checkpoint left. A damaged newest checkpoint is skipped with a one-line warning
(`_resume`; what "intact" means: mamba_jax/checkpoint.py). See docs/training.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from mamba_jax import checkpoint as ckpt_lib
from mamba_jax import evaluate as ev
from mamba_jax.config import Config, flatten
from mamba_jax.trainer import RunFunctions, TrainState, compile_run

# Settings a resume may change: the trajectory of a seed does not depend on them (each iteration
# splits the state's key), only the evaluation points / float reassociation do.
RESUME_MAY_CHANGE = ("chunk_iterations", "mesh")


class RunSettings(NamedTuple):
    """What the steps below read from an algorithm's config, so that MAMBA's runner (`run_settings`
    of a Config) and RL²'s (rl2_runner.run_settings of an RL2Config) share them."""

    name: str  # the preset's name (progress lines)
    env: str  # the envs.make name (the reference returns)
    num_episodes: int  # N (per-episode returns in the progress lines)
    steps_per_iteration: int  # env steps one iteration collects (sets the default chunk length)
    env_steps: int  # the default step budget
    eval_tasks: int  # fixed evaluation tasks (also the final test's block size)
    eval_every: int  # the default evaluation interval, in env steps
    final_eval_tasks: int  # fresh tasks of the final test


def run_settings(config: Config) -> RunSettings:
    """The RunSettings of a MAMBA / DreamerV3 Config."""
    p, e = config.protocol, config.eval
    return RunSettings(name=config.name, env=config.env, num_episodes=p.num_episodes,
                       steps_per_iteration=p.num_envs * config.meta_length, env_steps=p.env_steps,
                       eval_tasks=e.eval_tasks, eval_every=e.eval_every, final_eval_tasks=e.final_eval_tasks)


class _Start(NamedTuple):
    """Where the loop of `run` begins (state None: a new run, not yet initialised)."""

    state: TrainState | None
    env_steps: int
    wall_seconds: float
    next_eval: int
    chunks: int


def run(
    config,
    logdir: str,
    seed: int = 0,
    num_seeds: int = 1,
    steps: int | None = None,
    chunk_iterations: int | None = None,
    eval_every: int | None = None,
    checkpoint_every: int = 1,
    max_to_keep: int = 2,
    resume: bool = False,
    init_from: str | None = None,
    final_test: bool = True,
    reference: bool = True,
    agent=None,
    devices=None,
    functions: RunFunctions | None = None,
    print_fn: Callable[[str], None] | None = None,
) -> dict:
    """Trains `num_seeds` seeds of `config` until `steps` real env steps (default
    config.protocol.env_steps), in chunks of `chunk_iterations` iterations, evaluating every `eval_every`
    env steps (default config.eval.eval_every; evaluations happen between chunks, so at the first
    chunk boundary at or after each multiple) and at the end, checkpointing every
    `checkpoint_every` chunks and at the end; then the final test on config.eval.final_eval_tasks
    fresh tasks (LOGDIR/final_test.json).

    The default chunk length is ceil(eval_every / (num_envs * T)) iterations, so every chunk
    ends with an evaluation. The run stops at the first chunk boundary at or after
    `steps` (it may overshoot by less than one chunk).

    resume=True continues from the newest intact checkpoint in LOGDIR/checkpoints (same config,
    seed and num_seeds required) and reproduces the uninterrupted run's metrics exactly (with the
    same chunk_iterations and devices); without a checkpoint it starts a new run. Damaged newer
    checkpoints are set aside (`_resume`).

    init_from=OTHER_LOGDIR starts a new run (LOGDIR without checkpoints) from the newest intact
    checkpoint of another run: its whole train state (parameters, optimiser states, replay, keys,
    counters) and its metrics rows up to that checkpoint, continued under `config`, which may
    differ from the other run's in fields that keep the train state's shapes (a loss scale, a
    learning rate, free bits, ...; not the network sizes or the replay). Seed and num_seeds must
    match. LOGDIR/init_from.json records the source, its step and the changed fields. With the
    same config the continuation equals the other run resumed. Ignored when resume=True finds a
    checkpoint in LOGDIR (an interrupted continuation resumes like any run).

    Seed i of the run starts from fold_in(PRNGKey(seed), i), so a run's seed i does not
    depend on num_seeds. `functions` (from `trainer.compile_run`, same config / num_seeds /
    chunk_iterations) reuses already compiled functions across runs (tests).

    Returns {"state": the final TrainState (seed-stacked), "last": the last metrics row,
    "test": the final test summary or None, "functions": the RunFunctions used}.
    """
    import envs
    from mamba_jax.logging import Logger

    settings = run_settings(config)
    budget, eval_every, chunk_iterations = run_arguments(settings, num_seeds, steps, eval_every, checkpoint_every,
                                                      chunk_iterations)
    env, env_params = envs.make(config.env, num_episodes=config.protocol.num_episodes, episode_length=config.protocol.episode_length)
    fns = _functions(config, env, env_params, num_seeds, chunk_iterations, agent, devices, functions)
    main_process = jax.process_index() == 0
    say = (print_fn or (lambda s: print(s, flush=True))) if main_process else (lambda s: None)
    run_info = _run_info(config, seed, num_seeds, chunk_iterations, fns)
    checkpointer = ckpt_lib.Checkpointer(os.path.join(logdir, "checkpoints"), max_to_keep=max_to_keep)
    keys = jax.device_put(seed_keys(seed, num_seeds), fns.sharding)
    start = start_run(logdir, fns, keys, checkpointer, run_info, resume, init_from, main_process, say)

    logger = Logger(logdir, budget, start_steps=start.env_steps, print_fn=say) if main_process else None
    log = logger.log if main_process else (lambda row: None)
    if main_process:
        logger.write_json("run.json", {**run_info, "host": host_info()})
    ref = run_reference(settings, env, env_params, logger) if reference else None
    say(
        f"{config.name}: {num_seeds} seed(s) on mesh {dict(fns.mesh.shape)}, {run_info['steps_per_iteration']} env "
        f"steps and {fns.trainer.updates_per_iteration} updates per iteration, {chunk_iterations} iteration(s) per chunk"
    )
    started = time.time() - start.wall_seconds

    state, next_eval = begin(fns, keys, start, settings, ref, started, eval_every, log)
    chunks = start.chunks
    env_steps = int(np.min(to_host(state.env_steps)))
    iterations = int(to_host(state.iterations)[0])
    row = None
    while env_steps < budget:
        state, summary = fns.train_chunk(state, np.int32(iterations))
        chunks += 1
        row = _chunk_row(fns, to_host(summary), started)
        env_steps, iterations = row["env_steps"], row["iterations"]
        if env_steps >= next_eval or env_steps >= budget:
            row.update(evaluation(fns, state, settings, ref))
            next_eval = next_eval_step(env_steps, eval_every)
        row["wall_seconds"] = time.time() - started
        log(row)
        if chunks % checkpoint_every == 0 or env_steps >= budget:
            save_checkpoint(checkpointer, state, row, next_eval, chunks, run_info)

    test = None
    if final_test and env_steps >= budget:
        test = write_final_test(fns, state, settings, ref, env_steps, logger, say)
    if main_process:
        logger.close()
    checkpointer.close()
    return {"state": state, "last": row, "test": test, "functions": fns}


# ----------------------------------------------------------------------------- the steps of run
def run_arguments(settings: RunSettings, num_seeds, steps, eval_every, checkpoint_every,
                  chunk_iterations) -> tuple[int, int, int]:
    """(step budget, eval_every, chunk_iterations) with the defaults filled in; ValueError naming
    a bad argument."""
    budget = int(settings.env_steps if steps is None else steps)
    eval_every = int(settings.eval_every if eval_every is None else eval_every)
    for name, value in (("num_seeds", num_seeds), ("steps", budget), ("eval_every", eval_every),
                        ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: allowed: an integer >= 1")
    if chunk_iterations is None:
        chunk_iterations = max(1, -(-eval_every // settings.steps_per_iteration))  # ceil: every chunk evaluates
    return budget, eval_every, chunk_iterations


def _functions(config, env, env_params, num_seeds, chunk_iterations, agent, devices, functions) -> RunFunctions:
    """`functions` when they were compiled for this config, num_seeds and chunk_iterations, else
    a fresh `compile_run`."""
    if functions is None:
        return compile_run(config, env, env_params, num_seeds, chunk_iterations, agent=agent, devices=devices)
    given = (functions.config, functions.num_seeds, functions.trainer.chunk_iterations)
    if given != (config, num_seeds, chunk_iterations):
        raise ValueError("`functions` were compiled for a different config, num_seeds or chunk_iterations")
    return functions


def _run_info(config, seed, num_seeds, chunk_iterations, fns: RunFunctions) -> dict:
    """The settings of the run (LOGDIR/run.json and every checkpoint's meta; compared on resume)."""
    return {
        "config": config.to_dict(),
        "seed": seed,
        "num_seeds": num_seeds,
        "chunk_iterations": chunk_iterations,
        "updates_per_iteration": fns.trainer.updates_per_iteration,
        "steps_per_iteration": run_settings(config).steps_per_iteration,
        "mesh": dict(fns.mesh.shape),
    }


def start_run(logdir, fns, keys, checkpointer, run_info, resume, init_from, main_process, say) -> _Start:
    """A resume of LOGDIR (resume=True and a checkpoint there), a start from another run's
    checkpoint (init_from), or a new run. Refuses a LOGDIR with checkpoints without resume."""
    if checkpointer.latest_step() is not None and not resume:
        raise ValueError(
            f"{logdir} already holds checkpoints; pass resume=True (--resume) to continue it, or use a new logdir"
        )
    if resume and checkpointer.latest_step() is not None:
        state, meta = _resume(logdir, fns, keys, checkpointer, run_info, say)
        say(f"resumed {logdir} at {int(meta['env_steps'])} env steps")
    elif init_from is not None:
        state, meta, changed = init_from_run(init_from, fns, keys, run_info, say)
        start_steps = int(meta["env_steps"])
        if main_process:
            _start_metrics_from(init_from, logdir, start_steps)
            with open(os.path.join(logdir, "init_from.json"), "w") as f:
                json.dump({"logdir": os.path.abspath(init_from), "env_steps": start_steps,
                           "changed": [name for name, _, _ in changed]}, f, indent=1)
        say(f"started from {init_from} at {start_steps} env steps"
            + (f" with a different {_describe_changes(changed)}" if changed else " (same settings)"))
    else:
        return _Start(None, 0, 0.0, 0, 0)
    return _Start(state, int(meta["env_steps"]), meta["wall_seconds"], meta["next_eval"], meta["chunks"])


def _resume(logdir, fns, keys, checkpointer, run_info, say) -> tuple[TrainState, dict]:
    """(state, meta) of the newest intact checkpoint in LOGDIR/checkpoints, which must have been
    written with this run's settings (`check_resume`; raises ValueError naming what changed).

    Intact: Checkpointer.damage finds no missing, truncated or unreadable file (a check of
    metadata only; a read that still fails counts as damage too). Damaged newer checkpoints are
    moved to LOGDIR/checkpoints_damaged/STEP (so that this run can save at their steps again)
    and named, with the reason, in one warning line; the metrics rows written after the restored
    checkpoint are dropped, as on any resume (logging.Logger). None intact: ValueError."""
    abstract = abstract_state(fns, keys)
    allowed: list = []

    def check(meta: dict, step: int) -> None:
        allowed[:] = check_resume(meta["run"], run_info, lambda: checkpointer.fit_problems(abstract, step))

    try:
        state, meta, skipped = checkpointer.restore_newest_intact(abstract, check)
    except ckpt_lib.NoIntactCheckpoint as error:
        raise ValueError(f"cannot resume {logdir}: {error}; start a new run in another logdir") from None
    if skipped:
        moved = [checkpointer.set_aside(step) for step, _ in skipped]
        say("warning: skipped damaged checkpoint(s) "
            + "; ".join(f"{step} ({reason})" for step, reason in skipped)
            + f"; resuming from {int(meta['env_steps'])} env steps; moved to {os.path.dirname(moved[0])}")
    if allowed:
        say(f"note: resuming with a different {', '.join(allowed)} (same training trajectory; "
            "evaluation points or float rounding may differ from an uninterrupted run)")
    return state, meta


def run_reference(settings: RunSettings, env, env_params, logger) -> dict | None:
    """The Bayes-reference returns (evaluate.reference_returns; measured when not on file for the
    cheap envs), also written to LOGDIR/reference.json; None when unknown."""
    cheap = settings.env.startswith(("point", "escape", "rooms"))
    ref = ev.reference_returns(settings.env, env, env_params, compute=cheap)
    if ref is not None and logger is not None:
        logger.write_json("reference.json", ref)
    return ref


def begin(fns, keys, start: _Start, settings: RunSettings, ref, started: float, eval_every: int,
          log) -> tuple[Any, int]:
    """(the state the chunk loop begins from, the env steps of the next evaluation): the resumed
    ones, or a new run's init (prefill) with its first row (`first_row`) passed to `log`."""
    if start.state is not None:
        return start.state, start.next_eval
    state = fns.init(keys)
    row = first_row(fns, state, settings, ref, started)
    log(row)
    return state, next_eval_step(row["env_steps"], eval_every)


def first_row(fns, state, settings: RunSettings, ref, started: float) -> dict:
    """The metrics row of a new run right after init: the prefill's env steps, an evaluation."""
    env_steps = int(np.min(to_host(state.env_steps)))
    row = {"env_steps": env_steps, "wall_seconds": time.time() - started, "iterations": 0, "updates": 0}
    row.update(evaluation(fns, state, settings, ref))
    return row


def next_eval_step(env_steps: int, eval_every: int) -> int:
    """The next multiple of eval_every after env_steps."""
    return (env_steps // eval_every + 1) * eval_every


def _chunk_row(fns: RunFunctions, summary: dict, started: float) -> dict:
    """The metrics row of one chunk from its host summary ([seeds] per entry): the counters, the
    realised update ratio, each train/* mean over seeds and the returns per seed."""
    row = {
        "env_steps": int(np.min(summary["env_steps"])),
        "wall_seconds": time.time() - started,
        "iterations": int(summary["iterations"][0]),
        "updates": int(summary["updates"][0]),
        "train/updates_per_step": fns.trainer.updates_per_iteration / fns.trainer.steps_per_iteration,
    }
    for key, value in summary.items():
        if key.startswith("train/"):
            row[key] = float(np.mean(value))
            if key.startswith("train/return"):
                row[key + "/per_seed"] = np.asarray(value).tolist()
    return row


def evaluation(fns: RunFunctions, state: TrainState, settings: RunSettings, ref, prefix: str = "eval") -> dict:
    """One evaluation on the run's fixed tasks (evaluate.py): prefix/return etc., from the
    train state alone (the tasks from its eval_key, the policy key from its env steps)."""
    eval_keys = to_host(state.eval_key)
    reset = per_seed(ev.eval_reset_keys, eval_keys, settings.eval_tasks)
    policy = jax.vmap(ev.eval_policy_key)(eval_keys, to_host(state.env_steps))
    stats = to_host(fns.evaluate(state, jax.device_put(reset, fns.sharding), jax.device_put(policy, fns.sharding)))
    return ev.summarize(stats, prefix, ref)


def save_checkpoint(checkpointer, state: TrainState, row: dict, next_eval: int, chunks: int, run_info: dict) -> None:
    """Checkpoint at the row's env steps, with what the loop needs to continue exactly."""
    meta = {"env_steps": row["env_steps"], "wall_seconds": row["wall_seconds"], "next_eval": next_eval,
            "chunks": chunks, "run": run_info}
    checkpointer.save(row["env_steps"], state, meta)


def write_final_test(fns, state, settings: RunSettings, ref, env_steps: int, logger, say) -> dict:
    """The final test (LOGDIR/final_test.json) and its progress line."""
    test = final_test_returns(fns, state, settings, ref)
    test["env_steps"] = env_steps
    if logger is not None:
        logger.write_json("final_test.json", test)
    say(f"final test on {settings.final_eval_tasks} tasks: return {test['test/return']:.4g} "
        + " ".join(f"ep{i + 1} {test[f'test/return_episode_{i + 1}']:.4g}" for i in range(settings.num_episodes)))
    return test


# ----------------------------------------------------------------------------- helpers
def final_test_returns(fns: RunFunctions, state: TrainState, settings: RunSettings, reference=None) -> dict:
    """The final test: settings.final_eval_tasks fresh tasks, in blocks of settings.eval_tasks
    through the evaluation function already compiled (the last block is cut to size)."""
    block = settings.eval_tasks
    blocks = -(-settings.final_eval_tasks // block)
    eval_keys = to_host(state.eval_key)
    reset = per_seed(ev.test_reset_keys, eval_keys, blocks * block)  # [seeds, blocks * E, 2]
    policy = jax.vmap(ev.eval_policy_key)(eval_keys, to_host(state.env_steps))
    parts = []
    for b in range(blocks):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(policy, ev.TEST_FOLD + b)
        out = fns.evaluate(state, jax.device_put(reset[:, b * block:(b + 1) * block], fns.sharding),
                           jax.device_put(keys, fns.sharding))
        parts.append(to_host(out))
    stats = {k: np.concatenate([p[k] for p in parts], axis=1)[:, : settings.final_eval_tasks] for k in parts[0]}
    summary = ev.summarize(stats, "test", reference)
    summary["test/num_tasks"] = settings.final_eval_tasks
    return summary


def to_host(tree):
    """Device arrays -> numpy (gathering shards from every process in a multi-host run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def seed_keys(seed: int, num_seeds: int) -> np.ndarray:
    """[num_seeds, 2] keys: seed i of a run uses fold_in(PRNGKey(seed), i)."""
    base = jax.random.PRNGKey(seed)
    return np.stack([np.asarray(jax.random.fold_in(base, i)) for i in range(num_seeds)])


def per_seed(fn, eval_keys, *args):
    """fn(eval_keys[i], *args) for each seed i, stacked: vmap over the first argument only."""
    return jax.vmap(fn, in_axes=(0,) + (None,) * len(args))(eval_keys, *args)


def abstract_state(fns: RunFunctions, keys) -> Any:
    """The shapes, dtypes and seed sharding of `fns.init(keys)` (traced, nothing computed)."""
    abstract = jax.eval_shape(fns.init, keys)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=fns.sharding), abstract)


def restore_checkpoint(fns: RunFunctions, keys, checkpointer, step: int | None = None):
    """(state, meta) of `checkpointer`'s checkpoint `step` (default: the latest), restored into
    the shapes, dtypes and seed sharding of `fns.init(keys)` (nothing is computed to get them)."""
    return checkpointer.restore(abstract_state(fns, keys), step)


def init_from_run(source: str, fns: RunFunctions, keys, run_info: dict, say=print):
    """(state, meta, changed) of the newest intact checkpoint of the run in `source`, restored
    into the shapes of this run's train state; `changed`: [(name, old, new)] of the Config fields
    that differ (`changed_config_fields`). Damaged newer checkpoints of `source` are skipped with
    a warning line and left where they are. Raises ValueError naming the problem."""
    directory = os.path.join(source, "checkpoints")
    if not os.path.isdir(directory):
        raise ValueError(f"init_from={source!r}: no checkpoints directory there")
    checkpointer = ckpt_lib.Checkpointer(directory)
    abstract = abstract_state(fns, keys)
    changed: list = []

    def check(meta: dict, step: int) -> None:
        saved = meta["run"]
        for name in ("seed", "num_seeds"):
            if saved.get(name) != run_info[name]:
                raise ValueError(f"init_from={source!r}: that run has {name}={saved.get(name)}, this one "
                                 f"{run_info[name]}; they must match")
        changed[:] = changed_config_fields(saved["config"], run_info["config"])
        arrays = checkpointer.fit_problems(abstract, step)
        if arrays:
            raise ValueError(f"init_from={source!r}: its train state does not fit this config (changed: "
                             f"{_describe_changes(changed) or 'nothing'}); only fields that keep the shapes may "
                             f"change; arrays: {_first(arrays)}")

    try:
        if checkpointer.latest_step() is None:
            raise ValueError(f"init_from={source!r}: it holds no complete checkpoint")
        state, meta, skipped = checkpointer.restore_newest_intact(abstract, check)
    except ckpt_lib.NoIntactCheckpoint as error:
        raise ValueError(f"init_from={source!r}: {error}") from None
    finally:
        checkpointer.close()
    if skipped:
        say("warning: skipped damaged checkpoint(s) of the source "
            + "; ".join(f"{step} ({reason})" for step, reason in skipped)
            + f"; starting from {int(meta['env_steps'])} env steps")
    return state, meta, changed


def _start_metrics_from(source: str, logdir: str, max_env_steps: int) -> None:
    """Copies the metrics rows of `source` up to `max_env_steps` into LOGDIR/metrics.jsonl."""
    from mamba_jax.logging import METRICS_FILE, read_metrics

    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, METRICS_FILE), "w") as f:
        for row in read_metrics(source):
            if row.get("env_steps", 0) <= max_env_steps:
                f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- resume checks
_ABSENT = "(absent)"


def changed_config_fields(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """[("config.GROUP.FIELD", saved value, current value), ...] (sorted by name) of the Config fields
    that differ between a saved run's config and this run's (dicts as in run.json), the step budget
    (env_steps) aside. Both are read by `Config.from_dict`, so a config saved before the fields were
    grouped compares field by field, and a field missing from it (added to Config after the
    checkpoint was written) counts as its default; a removed option that was on raises a ValueError
    naming it."""
    saved, current = (flatten(_json(Config.from_dict(c).to_dict())) for c in (saved, current))
    return [(f"config.{name}", saved[name], current[name]) for name in sorted(saved)
            if name.rsplit(".", 1)[-1] != "env_steps" and saved[name] != current[name]]


def check_resume(saved: dict, current: dict, fit_problems: Callable[[], list[str]] = lambda: []) -> list[str]:
    """Resuming needs the same config (the step budget aside), seed and number of seeds.

    Returns the names of the settings in RESUME_MAY_CHANGE that changed. Otherwise raises a
    ValueError (one line) naming the changed Config fields with their old and new values
    ("config.nets.units: 512 -> 256"), then the other changed settings, then the arrays whose shapes
    differ (from `fit_problems()`, e.g. Checkpointer.fit_problems)."""
    saved, current = _json(saved), _json(current)
    config = changed_config_fields(saved["config"], current["config"])
    others = [(k, saved.get(k, _ABSENT), current.get(k, _ABSENT)) for k in sorted(set(saved) | set(current))
              if k != "config" and saved.get(k, _ABSENT) != current.get(k, _ABSENT)]
    fatal = config + [change for change in others if change[0] not in RESUME_MAY_CHANGE]
    if fatal:
        arrays = fit_problems()
        raise ValueError(f"cannot resume: the checkpoint was written with a different {_describe_changes(fatal)}"
                         + (f"; arrays of another shape: {_first(arrays)}" if arrays else "")
                         + "; resume with the same settings (the step budget, chunk_iterations and the devices "
                           "may change)")
    return [name for name, _, _ in others if name in RESUME_MAY_CHANGE]


def _describe_changes(changes) -> str:
    return ", ".join(f"{name}: {old!r} -> {new!r}" if old is not _ABSENT and new is not _ABSENT
                     else f"{name}: {old} -> {new}" for name, old, new in changes)


def _first(items: list[str], count: int = 5) -> str:
    more = f" (and {len(items) - count} more)" if len(items) > count else ""
    return "; ".join(items[:count]) + more


def _json(value):
    """The value as JSON would give it back (tuples as lists, ...), to compare saved and current."""
    return json.loads(json.dumps(value))


def host_info() -> dict:
    """Where the run ran (written to run.json; not compared on resume)."""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # see mamba_jax/hugepages.py
    }
