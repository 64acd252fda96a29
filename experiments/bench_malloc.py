"""Update time with and without transparent huge pages for malloc, interleaved in one run.

    python -m experiments.bench_malloc                  # point_robot, 3 rounds of (default, hugepages)
    python -m experiments.bench_malloc --preset=point_robot_cpu --rounds=2

Each round runs `experiments.bench_update --preset=P` twice in fresh processes: once with
`MAMBA_JAX_HUGEPAGES=0` (glibc's default malloc: every update page-faults its working set as
4-KiB pages) and once with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (mamba_jax/hugepages.py).
The order alternates between rounds so that a change in the machine's load falls on both.
Reports per round: seconds per update, minor page faults and kernel CPU seconds per update;
and the median over rounds of the ratio default / hugepages. Writes results/bench_malloc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile

from experiments import child_env, command_line, write_json_record

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = {"default_malloc": False, "hugepages": True}  # mode -> huge pages for malloc


def run_bench(preset: str, reps: int, hugepages: bool) -> dict:
    """One `bench_update --preset` in a fresh process; returns its case record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        env = child_env(hugepages)
        cmd = [sys.executable, "-m", "experiments.bench_update", f"--preset={preset}", f"--reps={reps}", f"--out={out}"]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        record = json.loads(pathlib.Path(out).read_text())
    case = record["cases"][0]
    case["glibc_tunables"] = record["glibc_tunables"]
    return case


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="point_robot")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3, help="timed updates per process")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_malloc.json"))
    args = parser.parse_args()
    if args.rounds < 1 or args.reps < 1:
        parser.error("--rounds and --reps: allowed: integers >= 1")
    rounds = []
    for i in range(args.rounds):
        order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
        result = {}
        for mode in order:
            case = run_bench(args.preset, args.reps, MODES[mode])
            result[mode] = {k: case[k] for k in ("seconds_per_update", "min_seconds_per_update",
                                                 "page_faults_per_update", "kernel_cpu_seconds_per_update",
                                                 "glibc_tunables", "flop_per_update")}
            print(f"round {i + 1} {mode:15s} {case['seconds_per_update']:.3f} s/update, "
                  f"{case['page_faults_per_update']:.0f} page faults, "
                  f"{case['kernel_cpu_seconds_per_update']:.2f} s kernel CPU", flush=True)
        result["speedup"] = result["default_malloc"]["seconds_per_update"] / result["hugepages"]["seconds_per_update"]
        rounds.append(result)
    speedup = statistics.median(r["speedup"] for r in rounds)
    print(f"median speedup (default malloc / hugepages): {speedup:.2f}x")
    record = {
        "command": command_line("experiments.bench_malloc", parser, args),
        "preset": args.preset,
        "platform": platform.platform(),
        "libc": platform.libc_ver(),
        "cpu_count": os.cpu_count(),
        "rounds": rounds,
        "median_speedup": speedup,
    }
    write_json_record(args.out, record)


if __name__ == "__main__":
    main()
