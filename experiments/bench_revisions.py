"""Is the update faster than at another git revision? Interleaved timings in fresh processes.

    python -m experiments.bench_revisions --base=3a90ed6                 # point_robot, 3 rounds
    python -m experiments.bench_revisions --base=HEAD~3 --preset=point_robot_cpu --rounds=5
    python -m experiments.bench_revisions --base=3a90ed6 --what=train --rounds=2   # training env steps/s

Checks `--base` out into a temporary git worktree and, for `--rounds` rounds, times one update of
`--preset` (its longest horizon bucket, B whole meta-episodes of random data, the median of
`--reps` calls after a warm-up) once with the base's code and once with the working tree's, each in
a fresh process with its own code on PYTHONPATH, alternating which goes first. The base runs with
glibc's default malloc, as it did; the working tree as its launchers run it, with transparent huge
pages for malloc (mamba_jax/hugepages.py), unless `--same_malloc`. Machine load that changes
between rounds falls on both, so the per-round ratio is the figure to read (the median over rounds
is reported). With `--what=train` each process is instead a short training run,
`python -m experiments.train --env=P --steps=S --chunk_iterations=1 --eval_every=1 --nofinal_test`
(one collection + its updates + an evaluation on the preset's tasks + a checkpoint per chunk), and
the figure is the env steps per second of its last chunk (compilation excluded), read from its
progress line. Writes results/bench_revisions.json (or bench_revisions_train.json).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile

from experiments import child_env, command_line, read_result, write_json_record

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs with the code of the directory on PYTHONPATH; uses only APIs that exist at older revisions.
TIMER = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
import mamba_jax as mj
from mamba_jax import agent as agent_lib, config as cfg
from experiments.bench_update import random_batch, spaces_for
preset, reps = sys.argv[1], int(sys.argv[2])
c = mj.get_config(preset)
state = mj.init(jax.random.PRNGKey(0), c, *spaces_for(c))
batch = random_batch(jax.random.PRNGKey(1), c, state)
length = cfg.horizon_buckets(c)[-1]
batch = jax.tree.map(lambda x: x[:, : length + 1], batch)
f = jax.jit(lambda s, b, k, h: agent_lib._update_length(s, b, k, h, length=length))
h = jnp.int32(length)
jax.block_until_ready(f(state, batch, jax.random.PRNGKey(2), h))
times = []
u0 = resource.getrusage(resource.RUSAGE_SELF)
for i in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(f(state, batch, jax.random.PRNGKey(3 + i), h))
    times.append(time.perf_counter() - t)
u1 = resource.getrusage(resource.RUSAGE_SELF)
print("RESULT " + json.dumps({"seconds_per_update": sorted(times)[len(times) // 2], "min_seconds": min(times),
      "cpu_seconds_per_update": (u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime) / reps,
      "page_faults_per_update": (u1.ru_minflt - u0.ru_minflt) / reps}))
"""


def time_update(code_dir: str, preset: str, reps: int, hugepages: bool, xla_flags: str | None = None) -> dict:
    """One update's timing (the TIMER script) in a fresh process with the code in code_dir;
    `xla_flags` (optional) replaces XLA_FLAGS there."""
    env = child_env(hugepages, pythonpath=code_dir)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", TIMER, preset, str(reps)], cwd=code_dir, env=env,
                         capture_output=True, text=True, check=True).stdout
    return read_result(out)


def train_throughput(code_dir: str, preset: str, steps: int, hugepages: bool) -> dict:
    """Env steps per second of the last chunk of a short training run with the code in code_dir."""
    env = child_env(hugepages, pythonpath=code_dir)
    with tempfile.TemporaryDirectory() as logdir:
        cmd = [sys.executable, "-m", "experiments.train", f"--env={preset}", f"--steps={steps}", "--chunk_iterations=1",
               "--eval_every=1", "--nofinal_test", f"--logdir={logdir}/run"]
        out = subprocess.run(cmd, cwd=code_dir, env=env, capture_output=True, text=True, check=True)
    rates = [float(m.group(1)) for m in re.finditer(r"([0-9.]+) steps/s", out.stdout + out.stderr)]
    if len(rates) < 2:
        raise RuntimeError(f"no steady-state progress line in the output of {' '.join(cmd)}")
    return {"env_steps_per_second": rates[-1], "chunk_rates": rates}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--preset", default="point_robot")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--same_malloc", action="store_true", help="run both with glibc's default malloc")
    parser.add_argument("--what", choices=("update", "train"), default="update")
    parser.add_argument("--steps", type=int, default=None, help="--what=train: env steps (default: 4 iterations)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    name = "bench_revisions.json" if args.what == "update" else "bench_revisions_train.json"
    args.out = args.out or str(ROOT / "results" / name)
    if args.rounds < 1 or args.reps < 1:
        parser.error("--rounds and --reps: allowed: integers >= 1")
    try:
        base_commit = subprocess.run(["git", "rev-parse", "--verify", f"{args.base}^{{commit}}"], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError:
        parser.error(f"--base={args.base!r}: not a git revision of {ROOT}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    if args.what == "train":
        import mamba_jax as mj  # the working tree's presets give the env steps per iteration

        c = mj.get_config(args.preset)
        steps = args.steps or 4 * c.num_envs * c.meta_length
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", base_dir, base_commit], cwd=ROOT, check=True)
        try:
            for i in range(args.rounds):
                runs = [("base", base_dir, False), ("current", str(ROOT), not args.same_malloc)]
                result = {}
                for name, code_dir, huge in (runs if i % 2 == 0 else runs[::-1]):
                    if args.what == "update":
                        result[name] = time_update(code_dir, args.preset, args.reps, huge)
                        print(f"round {i + 1} {name:8s} {result[name]['seconds_per_update']:.3f} s/update "
                              f"({result[name]['cpu_seconds_per_update']:.2f} CPU-s)", flush=True)
                    else:
                        result[name] = train_throughput(code_dir, args.preset, steps, huge)
                        print(f"round {i + 1} {name:8s} {result[name]['env_steps_per_second']:.1f} env steps/s "
                              f"(chunks: {result[name]['chunk_rates']})", flush=True)
                    result[name]["hugepages"] = huge
                if args.what == "update":
                    result["speedup"] = result["base"]["seconds_per_update"] / result["current"]["seconds_per_update"]
                else:
                    result["speedup"] = (result["current"]["env_steps_per_second"]
                                         / result["base"]["env_steps_per_second"])
                rounds.append(result)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base_dir], cwd=ROOT, check=False)
    speedup = statistics.median(r["speedup"] for r in rounds)
    print(f"median speedup of the working tree over {args.base} ({base_commit[:10]}): {speedup:.2f}x")
    record = {
        "command": command_line("experiments.bench_revisions", parser, args),
        "what": args.what,
        "base": base_commit, "current": head, "current_has_uncommitted_changes": dirty,
        "preset": args.preset, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "rounds": rounds, "median_speedup": speedup,
    }
    write_json_record(args.out, record)


if __name__ == "__main__":
    main()
