"""Our update against the MAMBA authors' PyTorch code, interleaved on one machine.

    python -m experiments.bench_authors --authors_code=DIR --authors_python=PY [--rounds=3] [--reps=5]

DIR is a checkout of the reference code (github.com/zoharri/mamba) and PY a Python with torch
and numpy (the authors' code does not run under JAX's environment; `experiments/authors_update.py`
imports DIR's models.py, networks.py and tools.py there and times one of its updates at the
point_robot preset: 16 whole meta-episodes of 300 steps, 8192 imagination starts x H_im = 2).
For `--rounds` rounds, one fresh process times our point_robot update (`bench_revisions`' timer,
as our launchers run it, with huge pages for malloc) and one the authors', alternating which goes
first; each reports the median of `--reps` updates after a warm-up. Load that changes between
rounds falls on both, so the per-round ratio is the figure to read (the median over rounds is
reported). Writes results/bench_authors.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import subprocess
import sys

from experiments import bench_revisions, child_env, command_line, read_result, write_json_record

ROOT = pathlib.Path(__file__).resolve().parents[1]


def time_authors(authors_python: str, authors_code: str, reps: int) -> dict:
    """One update of the authors' code (experiments/authors_update.py) in a fresh process."""
    cmd = [authors_python, str(ROOT / "experiments" / "authors_update.py"), f"--authors_code={authors_code}",
           f"--reps={reps}"]
    env = child_env(hugepages=False, pythonpath="")  # glibc's default malloc; nothing of ours on the path
    out = subprocess.run(cmd, cwd=authors_code, env=env, capture_output=True, text=True, check=True).stdout
    return read_result(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors_code", required=True, help="a checkout of github.com/zoharri/mamba")
    parser.add_argument("--authors_python", default=sys.executable, help="a Python with torch and numpy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_authors.json"))
    args = parser.parse_args(argv)
    for name in ("models.py", "networks.py", "tools.py"):
        if not os.path.isfile(os.path.join(args.authors_code, name)):
            parser.error(f"--authors_code={args.authors_code!r}: no {name} there (a checkout of zoharri/mamba)")
    if args.rounds < 1 or args.reps < 1:
        parser.error("--rounds and --reps: allowed: integers >= 1")
    rounds = []
    for i in range(args.rounds):
        result = {}
        for who in ("ours", "authors") if i % 2 == 0 else ("authors", "ours"):
            if who == "ours":
                result[who] = bench_revisions.time_update(str(ROOT), "point_robot", args.reps, True)
            else:
                result[who] = time_authors(args.authors_python, args.authors_code, args.reps)
            print(f"round {i + 1} {who:8s} {result[who]['seconds_per_update']:.3f} s/update", flush=True)
        result["speedup"] = result["authors"]["seconds_per_update"] / result["ours"]["seconds_per_update"]
        print(f"round {i + 1} speedup {result['speedup']:.2f}x", flush=True)
        rounds.append(result)
    median = {who: statistics.median(r[who]["seconds_per_update"] for r in rounds) for who in ("ours", "authors")}
    speedup = statistics.median(r["speedup"] for r in rounds)
    print(f"median s/update: ours {median['ours']:.3f}, authors' {median['authors']:.3f}; "
          f"median per-round speedup {speedup:.2f}x")
    write_json_record(args.out, {
        "command": command_line("experiments.bench_authors", parser, args),
        "preset": "point_robot", "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": rounds[0]["authors"].get("torch"), "torch_threads": rounds[0]["authors"].get("torch_threads"),
        "rounds": rounds, "median_seconds_per_update": median, "median_speedup": speedup,
    })


if __name__ == "__main__":
    main()
