"""Command-line experiments (absl entry points): `python -m experiments.<name> --help`.

* `experiments.rollout`: a short table of meta-episode returns of a reference policy.
* `experiments.reference_returns`: random / oracle / Bayes returns per env -> results/reference_returns.{json,md}.
* `experiments.bench_envs`: env steps per second vs vmap width -> results/bench_envs.json.
"""

import json
import os
import pathlib


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


def read_result(stdout: str) -> dict:
    """The JSON of the last `RESULT {json}` line a benchmark's child process printed."""
    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def command_line(module: str, parser, args) -> str:
    """The command that reproduces a benchmark's record: `python -m MODULE` plus every option of
    `parser` (argparse) whose value in `args` differs from its default, as `--name=value`
    (`--name` for a switch), in the parser's order."""
    parts = ["python", "-m", module]
    for action in parser._actions:  # argparse keeps no public list of its options
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        parts.append(flag if action.nargs == 0 else f"{flag}={value}")
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
