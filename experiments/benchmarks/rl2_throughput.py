"""RL^2's env steps per second inside its jitted training loop (mamba_jax/rl2_runner.py), compile excluded.

    python -m experiments.benchmarks.rl2_throughput                        # point_robot, 1 and 3 seeds
    python -m experiments.benchmarks.rl2_throughput --num_seeds=1 --num_seeds=8 --updates=1 --reps=2
    python -m experiments.benchmarks.rl2_throughput --preset=rooms --out=/tmp/bench_rl2_rooms.json

For each seed count S it compiles the run's functions as experiments.train_rl2 does
(`rl2_runner.compile_rl2`: vmap over seeds, jit), runs one chunk of `--updates` PPO updates to
compile and warm up, then times `--reps` more chunks (each blocked on). An update collects
num_envs meta-episodes of T = N * L steps with the stochastic policy and runs the PPO epochs over
them (full-sequence BPTT), so a chunk is all of the training loop but the evaluations and
checkpoints between chunks. Reported per S:

* `seconds`: the timed chunks; `compile_and_first_chunk_seconds`,
* `env_steps_per_second` = real env steps of all S seeds in a chunk / median chunk seconds,
  and `env_steps_per_second_per_seed` (the same / S),
* `seconds_per_update` = median chunk seconds / updates (all S seeds' updates run together).

The record also holds the command, the machine (platform, CPUs, devices, jax, huge pages for
malloc) and the load average before and after (`uptime`): on a machine shared with other work
the numbers are lower than on an idle one. Writes --out (results/bench_rl2.json).
"""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import subprocess
import time

import jax
import numpy as np
from absl import app, flags

from experiments import command_line, write_json_record
from mamba_jax import rl2, rl2_runner, runner
from mamba_jax.hugepages import reexec_with_hugepage_malloc

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULE = "experiments.benchmarks.rl2_throughput"

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum("preset", "point_robot", list(rl2.RL2_PRESETS), "RL^2 preset whose training loop is timed.",
                      **fv)
    flags.DEFINE_multi_integer("num_seeds", [1, 3], "A seed count to time (seeds vmapped together, as "
                               "experiments.train_rl2 --num_seeds).", lower_bound=1, **fv)
    flags.DEFINE_integer("updates", 2, "PPO updates per timed chunk.", lower_bound=1, **fv)
    flags.DEFINE_integer("reps", 3, "Timed chunks after the warm-up one (the median is reported).", lower_bound=1,
                         **fv)
    flags.DEFINE_string("out", str(ROOT / "results" / "bench_rl2.json"), "Output JSON file.", **fv)


def uptime() -> str:
    """The output of `uptime` (its load averages say how busy the machine was)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_seeds(config: rl2.RL2Config, num_seeds: int, updates: int, reps: int) -> dict:
    """Times `reps` chunks of `updates` updates of `num_seeds` vmapped seeds after a warm-up chunk."""
    fns = rl2_runner.compile_rl2(config, num_seeds)
    t = time.perf_counter()
    state = fns.init(jax.device_put(runner.seed_keys(0, num_seeds), fns.sharding))
    state, _ = fns.train_chunk(state, updates)
    jax.block_until_ready(state)
    first = time.perf_counter() - t
    seconds, steps = [], []
    for _ in range(reps):
        before = int(np.sum(jax.device_get(state.env_steps)))
        t = time.perf_counter()
        state, summary = fns.train_chunk(state, updates)
        jax.block_until_ready((state, summary))
        seconds.append(time.perf_counter() - t)
        steps.append(int(np.sum(jax.device_get(state.env_steps))) - before)
    median = statistics.median(seconds)
    loss = np.asarray(jax.device_get(summary["train/loss"]))
    return {
        "num_seeds": num_seeds,
        "updates_per_chunk": updates,
        "env_steps_per_chunk": steps,
        "compile_and_first_chunk_seconds": first,
        "seconds": seconds,
        "median_seconds": median,
        "seconds_per_update": median / updates,
        "env_steps_per_second": statistics.median(steps) / median,
        "env_steps_per_second_per_seed": statistics.median(steps) / median / num_seeds,
        "finite_loss": bool(np.isfinite(loss).all()),
    }


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: reads the flags (see `define_flags`), times each seed count, writes --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; this script takes flags only (see --help)")
    fv = flag_values
    config = rl2.get_rl2_config(fv.preset)
    load_before = uptime()
    print(f"{config.name}: {config.steps_per_update} env steps per update; {load_before}", flush=True)
    results = []
    for num_seeds in fv.num_seeds:
        result = bench_seeds(config, num_seeds, fv.updates, fv.reps)
        print(f"{num_seeds} seed(s): {result['median_seconds']:.2f} s per chunk of {fv.updates} update(s) -> "
              f"{result['env_steps_per_second']:.0f} env steps/s ({result['env_steps_per_second_per_seed']:.0f} per "
              f"seed); compile + first chunk {result['compile_and_first_chunk_seconds']:.1f} s", flush=True)
        results.append(result)
    record = {
        "command": command_line(MODULE, fv),
        "preset": config.name,
        "env": config.env,
        "env_steps_per_update": config.steps_per_update,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "uptime_before": load_before,
        "uptime_after": uptime(),
        "results": results,
    }
    write_json_record(fv.out, record)


if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # as experiments.train_rl2 runs (mamba_jax/hugepages.py)
    define_flags()
    app.run(main)
