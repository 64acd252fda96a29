"""Where the time of training goes: collection, updates, evaluation and checkpoints, in one process.

    python -m experiments.benchmarks.train_iteration                       # point_robot (the full preset), 3 reps
    python -m experiments.benchmarks.train_iteration --preset=point_robot_cpu --num_seeds=3 --reps=5

Compiles the run's own functions (`trainer.compile_run`, one iteration per chunk), then times,
interleaved over `--reps` rounds after a warm-up (medians reported):

* `chunk`: one training iteration, as `experiments.train` runs it: a collection of num_envs
  meta-episodes with the sampled policy, then U updates on replay batches, all in one executable;
* `collection_like`: the deterministic policy on num_envs tasks (the evaluation function at the
  collection's width: the same per-step network and env work, without the replay writes);
* `evaluation`: the evaluation on the preset's eval_tasks tasks;
* `checkpoint`: saving the whole train state (replay included) with orbax;
* `update_alone`: one update of the longest horizon bucket timed alone, as
  `experiments.benchmarks.update` times it (its own compiled function on a random batch).

From these: `env_steps_per_second` = num_envs * T / chunk (collection + updates, the quantity the
authors' 83 env steps/s is); `env_steps_per_second_with_eval` adds one evaluation and one
checkpoint per preset eval_every env steps (what `experiments.train` does by default); and
`update_in_chunk_seconds` = (chunk - collection_like) / U. Ratios between these are what transfers
across days on a shared machine; absolute seconds do not. Writes results/bench_train.json.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

import envs
import mamba_jax as mj
from experiments import command_line, write_json_record
from experiments.benchmarks import update as bench_update
from mamba_jax import checkpoint as ckpt_lib
from mamba_jax import evaluate as ev
from mamba_jax import runner, trainer
from mamba_jax.hugepages import reexec_with_hugepage_malloc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_enum("preset", "point_robot", list(mj.PRESETS), "Preset whose training iteration is timed.",
                      flag_values=flag_values)
    flags.DEFINE_integer("num_seeds", 1, "Seeds trained together (vmapped), as experiments.train --num_seeds.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("reps", 3, "Timed rounds after the warm-up (medians are reported).", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_string("out", os.path.join(ROOT, "results", "bench_train.json"), "Output JSON file.",
                        flag_values=flag_values)


def timed(fn) -> float:
    """Seconds of one call of fn() (its result, if any, blocked on)."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def derived_figures(median_seconds: dict, env_steps: int, updates: int, iterations_per_eval: int) -> dict:
    """Throughput figures from the median seconds of one iteration ("chunk"), a collection-like
    roll-out, an evaluation and a checkpoint (see the module docstring)."""
    chunk = median_seconds["chunk"]
    with_eval = chunk + (median_seconds["evaluation"] + median_seconds["checkpoint"]) / iterations_per_eval
    return {
        "update_in_chunk_seconds": (chunk - median_seconds["collection_like"]) / updates,
        "collection_share_of_chunk": median_seconds["collection_like"] / chunk,
        "env_steps_per_second": env_steps / chunk,
        "env_steps_per_second_with_eval": env_steps / with_eval,
    }


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: reads the flags (see `define_flags`), times the pieces, writes --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; this script takes flags only (see --help)")
    fv = flag_values
    config = mj.get_config(fv.preset)
    env, env_params = envs.make(config.env, num_episodes=config.protocol.num_episodes, episode_length=config.protocol.episode_length)
    matmul = bench_update.matmul_flop_per_second()
    print(f"matmul float32 2048^3: {matmul / 1e9:.1f} GFLOP/s", flush=True)

    t = time.perf_counter()
    fns = trainer.compile_run(config, env, env_params, fv.num_seeds, chunk_iterations=1)
    keys = jax.device_put(runner.seed_keys(0, fv.num_seeds), fns.sharding)
    state = fns.init(keys)
    state, _ = fns.train_chunk(state, np.int32(0))
    jax.block_until_ready(state)
    print(f"compiled and ran the first chunk in {time.perf_counter() - t:.1f} s", flush=True)

    eval_keys = runner.to_host(state.eval_key)
    policy_keys = jax.device_put(jax.vmap(ev.eval_policy_key)(eval_keys, runner.to_host(state.env_steps)), fns.sharding)

    def tasks(n):
        return jax.device_put(runner.per_seed(ev.eval_reset_keys, eval_keys, n), fns.sharding)

    collect_tasks, eval_tasks = tasks(config.protocol.num_envs), tasks(config.eval.eval_tasks)
    for reset in (collect_tasks, eval_tasks):  # compile both widths
        jax.block_until_ready(fns.evaluate(state, reset, policy_keys))
    times = {name: [] for name in ("chunk", "collection_like", "evaluation", "checkpoint")}
    iteration = int(runner.to_host(state.iterations)[0])
    with tempfile.TemporaryDirectory(prefix="bench_train_ckpt_") as checkpoint_dir:  # a whole replay per save
        checkpointer = ckpt_lib.Checkpointer(checkpoint_dir, max_to_keep=1)
        for rep in range(fv.reps):
            t = time.perf_counter()
            state, summary = fns.train_chunk(state, np.int32(iteration))
            jax.block_until_ready(summary)
            times["chunk"].append(time.perf_counter() - t)
            iteration += 1
            times["collection_like"].append(timed(lambda: fns.evaluate(state, collect_tasks, policy_keys)))
            times["evaluation"].append(timed(lambda: fns.evaluate(state, eval_tasks, policy_keys)))
            times["checkpoint"].append(timed(lambda: checkpointer.save(rep + 1, state, {"env_steps": 0})))
            print(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        checkpointer.close()
    finite = bool(np.all(np.isfinite(runner.to_host(summary["train/wm/loss"]))))

    update = bench_update.bench_case(config, config.meta_length, fv.reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    steps = fns.trainer.steps_per_iteration * fv.num_seeds
    num_updates = fns.trainer.updates_per_iteration
    iterations_per_eval = max(1, math.ceil(config.eval.eval_every / fns.trainer.steps_per_iteration))
    record = {
        "command": command_line("experiments.benchmarks.train_iteration", fv),
        "preset": fv.preset,
        "num_seeds": fv.num_seeds,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "matmul_flop_per_second": matmul,
        "env_steps_per_iteration": steps,
        "updates_per_iteration": num_updates,
        "iterations_per_evaluation": iterations_per_eval,
        "seconds": times,
        "median_seconds": med,
        "update_alone_seconds": update["seconds_per_update"],
        **derived_figures(med, steps, num_updates, iterations_per_eval),
        "finite_loss": finite and update["finite_loss"],
    }
    print(
        f"{fv.preset}: chunk {med['chunk']:.2f} s ({steps} env steps, {num_updates} updates) -> "
        f"{record['env_steps_per_second']:.1f} env steps/s; collection-like {med['collection_like']:.2f} s "
        f"({100 * record['collection_share_of_chunk']:.0f} % of the chunk); update in chunk "
        f"{record['update_in_chunk_seconds']:.3f} s vs alone {record['update_alone_seconds']:.3f} s; "
        f"evaluation {med['evaluation']:.2f} s, checkpoint {med['checkpoint']:.2f} s every {iterations_per_eval} "
        f"iterations -> {record['env_steps_per_second_with_eval']:.1f} env steps/s",
        flush=True,
    )
    write_json_record(fv.out, record)


if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # as experiments.train runs (mamba_jax/hugepages.py)
    define_flags()
    app.run(main)
