"""Command-line experiments (absl entry points; `python -m experiments.<name> --help` lists the flags).

What a researcher runs:

* `experiments.train`: train MAMBA (or the DreamerV3 baseline) on a preset -> LOGDIR (metrics, checkpoints).
* `experiments.train_rl2`: train the model-free RL^2 baseline (mamba_jax/rl2.py) -> LOGDIR, in the same format.
* `experiments.plot`: learning curves of training logdirs (mean and spread over seeds) -> a PNG.
* `experiments.summarize`: finished runs side by side against the reference policies -> OUT/summary.json, table.md.
* `experiments.suite_table`: several presets' summaries as one table and one figure of curves (the README's results).
* `experiments.sample_efficiency`: env steps RL^2 needs to reach MAMBA's final return -> OUT/summary.json, .md, .png.
* `experiments.decomposition`: Rooms-N's fraction of the Bayes return against N -> OUT/summary.json, .md, .png.
* `experiments.reference_returns`: random / oracle / Bayes returns per env -> results/reference_returns.{json,md}.
* `experiments.rollout`: a short table of meta-episode returns of a reference policy.

Benchmarks and checks of the implementation, in the sub-package `experiments.benchmarks`
(`python -m experiments.benchmarks.<name> --help`):

* `envs`: env steps per second vs vmap width -> results/bench_envs.json.
* `update`: seconds and FLOPs of one agent update -> results/bench_update.json.
* `train_iteration`: where a training iteration's time goes -> results/bench_train.json.
* `profile_update`: the update's pieces timed and FLOP-counted apart -> results/profile_update.json.
* `flops`: the jaxpr matmul-FLOP counter the two above use (a library module, no command line).
* `authors`: one update of ours against the MAMBA authors' PyTorch code (their unmodified checkout)
  -> results/bench_authors.json.
* `rl2_throughput`: RL^2's env steps per second inside its jitted training loop -> results/bench_rl2.json.
* `fingerprint`: fixed-seed numbers a refactor must leave bit-identical -> results/behaviour_fingerprint.json.

The helpers below are shared by these scripts.
"""

import json
import os
import pathlib
import shlex


def check_choices(kind: str, values, allowed) -> None:
    """Raises ValueError naming the allowed values when one of `values` is not in `allowed`."""
    for value in values:
        if value not in allowed:
            raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


def write_json_record(path, record: dict) -> None:
    """Writes a benchmark's `record` as indented JSON to `path` (parents created) and says so."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


def write_study(out_dir, summary: dict, table_name: str, table_text: str, plot=None, plot_name: str = "") -> None:
    """A study's outputs: OUT/summary.json, the markdown OUT/table_name and, with `plot` (a function
    of the output path), OUT/plot_name; prints the table and what was written."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / table_name).write_text(table_text)
    written = [str(out / "summary.json"), table_name]
    if plot is not None:
        plot(str(out / plot_name))
        written.append(plot_name)
    print(table_text)
    print(f"wrote {', '.join(written)}")


def read_result(stdout: str) -> dict:
    """The JSON of the last `RESULT {json}` line a benchmark's child process printed."""
    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def command_line(module: str, flag_values) -> str:
    """The command that reproduces a run of `python -m MODULE`: every flag of `flag_values` (absl
    FlagValues, already parsed) given on the command line with a value that differs from its
    default, as absl writes it (`--name=value`, `--name` / `--noname` for a switch, a repeated flag
    once per value), in the order the flags were defined; shell-quoted where needed. Flags that
    absl itself changes after parsing (e.g. logging's --verbosity) are left out."""
    parts = ["python", "-m", module]
    seen = set()
    for name in flag_values:  # definition order (a flag with a short name appears twice)
        flag = flag_values[name]
        if id(flag) in seen or not flag.present or flag.value == flag.default:
            continue
        seen.add(id(flag))
        parts += [shlex.quote(item) for item in flag.serialize().split("\n") if item]
    return " ".join(parts)


def child_env(hugepages: bool, pythonpath: str | None = None) -> dict:
    """This process's environment for a benchmark's child process, with huge pages for malloc set
    explicitly on or off (mamba_jax/hugepages.py), whatever this process runs with; `pythonpath`
    (optional) replaces PYTHONPATH, to run another checkout's code."""
    from mamba_jax.hugepages import OPT_OUT_VAR, TUNABLE  # here: plot / summarize need no JAX import

    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if hugepages:
        env["GLIBC_TUNABLES"] = TUNABLE
    else:
        env[OPT_OUT_VAR] = "0"
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return env
