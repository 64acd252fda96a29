"""The host runner of RL^2 (mamba_jax/rl2.py): `run_rl2` trains the seeds of an RL2Config end to end.

    from mamba_jax.rl2 import get_rl2_config
    from mamba_jax.rl2_runner import run_rl2
    out = run_rl2(get_rl2_config("debug"), "/tmp/rl2_debug", num_seeds=2)
    out["state"]   # the final RL2State, seeds stacked on axis 0
    out["last"]    # the last metrics row (the last line of LOGDIR/metrics.jsonl)
    out["test"]    # the final test summary (LOGDIR/final_test.json)

It writes what MAMBA's runner (mamba_jax/runner.py) writes, with the same keys (experiments.plot
draws both): LOGDIR/metrics.jsonl (a row per chunk: env_steps, wall_seconds, iterations,
updates, train/* means over the chunk's updates and over seeds, eval/* on evaluation chunks with
.../per_seed lists and .../_vs_bayes fractions), TensorBoard events, run.json ({"algo": "rl2",
"config": ..., ...}), reference.json, checkpoints/ and final_test.json. The steps of a run are
runner.py's (start or resume past damaged checkpoints, the first row, evaluation on the run's
fixed tasks with the deterministic policy, checkpoint, final test), given the config as a
runner.RunSettings (`run_settings`) and the settings in the layout runner.check_resume compares
(`_resume_info`); only the chunk loop and its rows are RL^2's.

Units: an RL^2 iteration is one PPO update (num_envs meta-episodes of T = N * L steps, then the
PPO epochs), so a row's `iterations` and `updates` are equal. A run does `steps // (num_envs * T)`
updates in chunks of `ceil(eval_every / (num_envs * T))` updates (the last one shorter when that
does not divide the budget; chunk boundaries stay at multiples of the chunk length, so a resumed
run ends its chunks where the uninterrupted one does). env_steps counts the real env steps: with
envs that terminate early (a fall) they are fewer than updates * num_envs * T.

One process: the seeds are spread over gcd(num_seeds, local devices) devices (`compile_rl2`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mamba_jax import checkpoint as ckpt_lib
from mamba_jax import rl2
from mamba_jax.runner import (RunSettings, begin, evaluation, host_info, next_eval_step, run_arguments,
                              run_reference, save_checkpoint, seed_keys, start_run, to_host, write_final_test)
from mamba_jax.trainer import RunFunctions, make_mesh, over_seeds


def run_rl2(
    config: rl2.RL2Config,
    logdir: str,
    seed: int = 0,
    num_seeds: int = 1,
    steps: int | None = None,
    eval_every: int | None = None,
    checkpoint_every: int = 1,
    max_to_keep: int = 2,
    resume: bool = False,
    final_test: bool = True,
    reference: bool = True,
    print_fn: Callable[[str], None] | None = None,
    functions: RunFunctions | None = None,
) -> dict:
    """Trains `num_seeds` seeds of `config` for `steps // (num_envs * T)` PPO updates (default
    steps: config.total_env_steps), evaluating every `eval_every` env steps (default
    config.eval_every; at the first chunk boundary at or after each multiple) and at the end,
    checkpointing every `checkpoint_every` chunks and at the end; then the final test on
    config.final_eval_tasks fresh tasks (LOGDIR/final_test.json).

    The learning rate anneals over config.total_env_steps (rl2.make_train), whatever `steps`
    says: a run with a smaller `steps` is the start of the full run, not a shorter schedule.

    resume=True continues from the newest intact checkpoint in LOGDIR/checkpoints (same config,
    seed and num_seeds required; damaged newer checkpoints are set aside with a warning line;
    runner._resume) and reproduces the uninterrupted run's metrics and parameters exactly (a run
    stopped by a smaller `steps` inside a chunk adds its own row there; the parameters and the
    rows after the next chunk boundary still equal); without a checkpoint it starts a new run. A
    LOGDIR with checkpoints and resume=False is refused (ValueError).

    Seed i starts from fold_in(PRNGKey(seed), i) (runner.seed_keys). `functions` (from
    `compile_rl2` with the same config and num_seeds) reuses compiled functions across runs.

    Returns {"state": the final RL2State (seed-stacked), "last": the last metrics row, "test":
    the final test summary or None, "functions": the RunFunctions used}.
    """
    import envs
    from mamba_jax.logging import Logger

    settings = run_settings(config)
    budget, eval_every, chunk_updates = run_arguments(settings, num_seeds, steps, eval_every, checkpoint_every, None)
    if budget < config.steps_per_update:
        raise ValueError(f"steps={budget}: allowed: >= num_envs * N * L = {config.steps_per_update} (one update)")
    total_updates = budget // config.steps_per_update
    env, env_params = envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    fns = functions if functions is not None else compile_rl2(config, num_seeds, env, env_params)
    if (fns.config, fns.num_seeds) != (config, num_seeds):
        raise ValueError("`functions` were compiled for a different config or num_seeds")
    say = print_fn or (lambda s: print(s, flush=True))
    run_info = _run_info(config, seed, num_seeds, chunk_updates, fns)
    resume_info = _resume_info(run_info)
    checkpointer = ckpt_lib.Checkpointer(os.path.join(logdir, "checkpoints"), max_to_keep=max_to_keep)
    keys = jax.device_put(seed_keys(seed, num_seeds), fns.sharding)
    start = start_run(logdir, fns, keys, checkpointer, resume_info, resume, None, True, say)

    logger = Logger(logdir, budget, start_steps=start.env_steps, print_fn=say)
    logger.write_json("run.json", {**run_info, "host": host_info()})
    ref = run_reference(settings, env, env_params, logger) if reference else None
    say(f"{config.name} (RL^2): {num_seeds} seed(s), {config.steps_per_update} env steps per update, "
        f"{total_updates} updates in chunks of {chunk_updates}")
    started = time.time() - start.wall_seconds

    state, next_eval = begin(fns, keys, start, settings, ref, started, eval_every, logger.log)
    chunks = start.chunks
    updates = int(to_host(state.updates)[0])
    env_steps = int(np.min(to_host(state.env_steps)))
    row = None
    while updates < total_updates:
        length = min(chunk_updates - updates % chunk_updates, total_updates - updates)
        state, summary = fns.train_chunk(state, length)
        chunks += 1
        row = chunk_row(to_host(summary), started)
        env_steps, updates = row["env_steps"], row["updates"]
        if env_steps >= next_eval or updates >= total_updates:
            row.update(evaluation(fns, state, settings, ref))
            next_eval = next_eval_step(env_steps, eval_every)
        row["wall_seconds"] = time.time() - started
        logger.log(row)
        if chunks % checkpoint_every == 0 or updates >= total_updates:
            save_checkpoint(checkpointer, state, row, next_eval, chunks, resume_info)

    test = None
    if final_test and updates >= total_updates:
        test = write_final_test(fns, state, settings, ref, env_steps, logger, say)
    logger.close()
    checkpointer.close()
    return {"state": state, "last": row, "test": test, "functions": fns}


def compile_rl2(config: rl2.RL2Config, num_seeds: int, env=None, env_params=None, devices=None) -> RunFunctions:
    """jit(vmap(...)) of rl2.make_train's functions over seeds, seed-sharded over `devices`
    (default: the first gcd(num_seeds, #local devices) local devices), in runner.py's RunFunctions:

        init(keys [seeds, 2]) -> RL2State  (seed after seed: see below)
        train_chunk(RL2State, num_updates: static int) -> (RL2State, summary)  (`chunk_summary`; donates the state)
        evaluate(RL2State, reset_keys [seeds, E, 2], keys [seeds, 2]) -> {"return": [seeds, E], ...}

    `trainer` is the rl2.RL2Trainer. `init` runs the seeds one after another (lax.map), not
    vmapped: the networks' orthogonal initialisers are QR factorisations, and two batched QRs
    (LAPACK through jaxlib's thread pool) at once never finished on a 2-core CPU (jax 0.10.2:
    `jax.jit(jax.vmap(init))` of two orthogonal 384x768 and 256x768 matrices hung, the same
    under lax.map ran), which hung the point_robot preset's runs of 2 and 3 seeds."""
    if devices is None:
        local = jax.local_devices()
        devices = local[: math.gcd(num_seeds, len(local))]
    mesh = make_mesh(num_seeds, devices)
    trainer = rl2.make_train(config, env, env_params)
    sharding = NamedSharding(mesh, P("seed"))

    def train_chunk(state, num_updates: int):
        def one_seed(state):
            state, metrics = trainer.train_chunk(state, num_updates)
            return state, chunk_summary(metrics, state)

        return over_seeds(one_seed, num_seeds)(state)

    def evaluate(state, reset_keys, key):
        return trainer.evaluate(state.params, reset_keys, key)

    return RunFunctions(
        config=config,
        num_seeds=num_seeds,
        trainer=trainer,
        mesh=mesh,
        sharding=sharding,
        init=jax.jit(partial(jax.lax.map, trainer.init), in_shardings=sharding, out_shardings=sharding),
        train_chunk=jax.jit(train_chunk, static_argnums=1, donate_argnums=0, out_shardings=sharding),
        evaluate=jax.jit(over_seeds(evaluate, num_seeds), in_shardings=sharding, out_shardings=sharding),
    )


def chunk_summary(metrics: dict, state: rl2.RL2State) -> dict:
    """One seed's summary of a chunk from train_chunk's metrics ([U] per entry, episode_returns
    [U, N]): "train/<metric>" means over the U updates (the PPO losses, entropy, approx_kl,
    clip_frac, the training meta-episodes' return and return_episode_i), and the counters after
    the chunk (env_steps, updates)."""
    summary = {f"train/{k}": jnp.mean(v) for k, v in metrics.items() if k not in ("episode_returns", "env_steps")}
    for i in range(metrics["episode_returns"].shape[-1]):
        summary[f"train/return_episode_{i + 1}"] = jnp.mean(metrics["episode_returns"][:, i])
    summary["env_steps"] = state.env_steps
    summary["updates"] = state.updates
    return summary


def chunk_row(summary: dict, started: float) -> dict:
    """The metrics row of one chunk from its host summary ([seeds] per entry): the counters (the
    fewest env steps over seeds), each train/* mean over seeds, and the returns per seed."""
    updates = int(summary["updates"][0])
    row = {"env_steps": int(np.min(summary["env_steps"])), "wall_seconds": time.time() - started,
           "iterations": updates, "updates": updates}
    for key, value in summary.items():
        if key.startswith("train/"):
            row[key] = float(np.mean(value))
            if key.startswith("train/return"):
                row[key + "/per_seed"] = np.asarray(value, np.float64).tolist()
    return row


def _run_info(config: rl2.RL2Config, seed: int, num_seeds: int, chunk_updates: int, fns: RunFunctions) -> dict:
    """The settings of the run (LOGDIR/run.json and every checkpoint's meta; compared on resume by
    runner.check_resume, which lets chunk_iterations and the mesh change)."""
    return {
        "algo": "rl2",
        "config": dataclasses.asdict(config),
        "seed": seed,
        "num_seeds": num_seeds,
        "chunk_iterations": chunk_updates,  # an RL^2 iteration is one PPO update
        "steps_per_iteration": config.steps_per_update,
        "mesh": dict(fns.mesh.shape),
    }


def _resume_info(run_info: dict) -> dict:
    """The run's settings as every checkpoint stores them and a resume compares them
    (runner.check_resume): run.json's, with the RL2Config's fields as "config.FIELD" entries, so
    that a changed field is named with its old and new value ("config.lr: 0.0003 -> 0.001"), and
    an empty "config" (the place of MAMBA's Config, which runner.check_resume reads as one)."""
    fields = {f"config.{name}": value for name, value in run_info["config"].items()}
    return {**run_info, "config": {}, **fields}


def run_settings(config: rl2.RL2Config) -> RunSettings:
    """The runner.RunSettings of an RL2Config (an iteration is one PPO update)."""
    return RunSettings(name=config.name, env=config.env, num_episodes=config.num_episodes,
                       steps_per_iteration=config.steps_per_update, env_steps=config.total_env_steps,
                       eval_tasks=config.eval_tasks, eval_every=config.eval_every,
                       final_eval_tasks=config.final_eval_tasks)
