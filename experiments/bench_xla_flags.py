"""Does an XLA:CPU option make the update faster? Interleaved timings in fresh processes.

    python -m experiments.bench_xla_flags                      # point_robot, 2 rounds, the variants below
    python -m experiments.bench_xla_flags --preset=point_robot_cpu --rounds=3 --variants=default,xnnpack

Times one update of `--preset` (its longest horizon bucket, random data; the median of `--reps`
calls after a warm-up: `experiments.bench_revisions`' timer) once per variant per round, each in a
fresh process with XLA_FLAGS set to the variant's flags (and huge pages for malloc, as the
launchers run), alternating the order between rounds. Writes results/bench_xla_flags.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics

from experiments import check_choices, command_line, write_json_record
from experiments import bench_revisions

ROOT = pathlib.Path(__file__).resolve().parents[1]

VARIANTS = {
    "default": "",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "onednn": "--xla_cpu_use_onednn=true",
    "single_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
    "no_thunk_runtime": "--xla_cpu_use_thunk_runtime=false",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="point_robot")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of: " + ", ".join(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_xla_flags.json"))
    args = parser.parse_args(argv)
    from mamba_jax.config import PRESETS

    if args.preset not in PRESETS:
        parser.error(f"--preset={args.preset!r}: allowed: {', '.join(PRESETS)}")
    names = args.variants.split(",")
    try:
        check_choices("variant", names, VARIANTS)
    except ValueError as e:
        parser.error(str(e))
    if args.rounds < 1 or args.reps < 1:
        parser.error("--rounds and --reps: allowed: integers >= 1")
    seconds = {n: [] for n in names}
    failed = {}
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            if name in failed:
                continue
            try:
                r = bench_revisions.time_update(str(ROOT), args.preset, args.reps, True, xla_flags=VARIANTS[name])
            except Exception as e:  # an option this jaxlib rejects: recorded, not fatal
                failed[name] = str(getattr(e, "stderr", "") or e)[-500:]
                print(f"round {i + 1} {name:22s} failed", flush=True)
                continue
            seconds[name].append(r["seconds_per_update"])
            print(f"round {i + 1} {name:22s} {r['seconds_per_update']:.3f} s/update", flush=True)
    medians = {n: statistics.median(v) for n, v in seconds.items() if v}
    for n, m in medians.items():
        print(f"{n:22s} median {m:.3f} s/update ({m / medians.get('default', m):.2f}x the default's time)")
    record = {
        "command": command_line("experiments.bench_xla_flags", parser, args),
        "preset": args.preset, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "xla_flags": {n: VARIANTS[n] for n in names},
        "seconds_per_update": seconds, "median_seconds_per_update": medians, "failed": failed,
    }
    write_json_record(args.out, record)


if __name__ == "__main__":
    main()
