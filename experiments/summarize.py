"""Summarises finished training runs (MAMBA vs the DreamerV3 baseline) into JSON and a table.

    python -m experiments.summarize --run=mamba:runs/prc_mamba --run=dreamer:runs/prc_dreamer \
        --out=results/point_robot_cpu
    python -m experiments.summarize --run=mamba:runs/pr --out=/tmp/summary --machine="8-core laptop, no GPU"

For each `--run=METHOD:LOGDIR` it reads LOGDIR/run.json, metrics.jsonl and (if present)
final_test.json and writes OUT/summary.json with, per method:

    return_fraction_of_bayes   final return / the Bayes-reference policy's return
    episode_returns            final mean return of each episode index 1..N (mean over seeds)
    oracle_episode_returns     the oracle's per-episode returns (results/reference_returns.json)
    bayes_episode_returns      the Bayes reference's per-episode returns
    random_return              the uniform-random policy's return (the floor a policy that learnt nothing sits at)
    env_steps, wall_seconds, env_steps_per_second   of the whole run (compilation included)
    per_seed                   the per-seed final returns
    differs_from_preset        the config fields the run overrode (e.g. mamba=False, env_steps)
    source                     "final_test" (config.eval.final_eval_tasks fresh tasks) or "last_eval"

and OUT/table.md with the same figures side by side. `--machine` is written into both.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform

from absl import app, flags

from experiments import write_study
from experiments.plot import references
from mamba_jax import evaluate as ev
from mamba_jax.config import field_values
from mamba_jax.logging import read_metrics


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_multi_string("run", None, "METHOD:LOGDIR, a finished training run and the name it gets in the "
                              "summary; one per method, required", flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output directory for summary.json and table.md (required).",
                        flag_values=flag_values)
    flags.DEFINE_string("machine", f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
                        "Description of the machine the runs ran on, written into both files.",
                        flag_values=flag_values)
    flags.mark_flags_as_required(["run", "out"], flag_values=flag_values)


def _read_json(path: str) -> dict | None:
    return json.loads(pathlib.Path(path).read_text()) if os.path.exists(path) else None


def summarize_run(logdir: str) -> dict:
    info = _read_json(os.path.join(logdir, "run.json"))
    if info is None:
        raise ValueError(f"{logdir}: no run.json (not a training logdir)")
    rows = read_metrics(logdir)
    evals = [r for r in rows if r.get("eval/return") is not None]
    if not evals:
        raise ValueError(f"{logdir}: no evaluation rows in metrics.jsonl")
    config = field_values(info["config"])
    n = config["num_episodes"]
    test = _read_json(os.path.join(logdir, "final_test.json"))
    if test is not None:
        prefix, src, source = "test", test, "final_test"
    else:
        prefix, src, source = "eval", evals[-1], "last_eval"
    refs = references(info, [logdir], ev.REFERENCE_FILE)  # the same lookup as the plot's reference lines
    bayes, oracle, random = refs.get("bayes"), refs.get("oracle"), refs.get("random")
    last = rows[-1]
    ret = src[f"{prefix}/return"]
    return {
        "logdir": logdir,
        "algo": info.get("algo", "mamba" if config.get("mamba", True) else "dreamer"),
        "mamba": config.get("mamba", False),
        "num_seeds": info.get("num_seeds", 1),
        "source": source,
        "num_tasks": src.get(f"{prefix}/num_tasks", config["eval_tasks"]),
        "return": ret,
        "return_fraction_of_bayes": ret / bayes["return"] if bayes else None,
        "episode_returns": [src[f"{prefix}/return_episode_{i + 1}"] for i in range(n)],
        "oracle_episode_returns": oracle["episode_returns"] if oracle else None,
        "bayes_episode_returns": bayes["episode_returns"] if bayes else None,
        "bayes_return": bayes["return"] if bayes else None,
        "random_return": random["return"] if random else None,
        "per_seed": src.get(f"{prefix}/return/per_seed"),
        # fraction of tasks whose episode-i return is > 0 (None for logs written before it existed)
        "episode_positive_fractions": [src.get(f"{prefix}/positive_episode_{i + 1}") for i in range(n)],
        "env_steps": last["env_steps"],
        "wall_seconds": last["wall_seconds"],
        "env_steps_per_second": last["env_steps"] / last["wall_seconds"],
        "updates": last.get("updates"),
        "differs_from_preset": differs_from_preset(info["config"], info.get("algo", "mamba")),
    }


def differs_from_preset(config: dict, algo: str = "mamba") -> dict:
    """{field: value} of the run's saved config (nested or flat) where it differs from its named preset
    (MAMBA's presets, or RL²'s for algo "rl2")."""
    import dataclasses

    from mamba_jax.config import PRESETS
    from mamba_jax.rl2 import RL2_PRESETS

    values = field_values(config)
    if algo == "rl2":
        preset = RL2_PRESETS.get(values.get("name"))
        defaults = None if preset is None else dataclasses.asdict(preset)
    else:
        preset = PRESETS.get(values.get("name"))
        defaults = None if preset is None else field_values(preset.to_dict())
    if defaults is None:
        return {}
    return {k: v for k, v in values.items() if k in defaults and defaults[k] != v}


def table(summary: dict) -> str:
    methods = summary["methods"]
    n = len(next(iter(methods.values()))["episode_returns"])
    head = ["method", "return / Bayes"] + [f"episode {i + 1} (oracle)" for i in range(n)] + [
        "tasks with reward > 0 per episode", "env steps", "env steps / s", "wall time", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in methods.items():
        eps = [f"{e:.1f} ({o:.1f})" if m["oracle_episode_returns"] else f"{e:.1f}"
               for e, o in zip(m["episode_returns"], m["oracle_episode_returns"] or [0.0] * n)]
        pos = m.get("episode_positive_fractions") or [None] * n
        pos = "n/a" if any(p is None for p in pos) else " / ".join(f"{100 * p:.0f}%" for p in pos)
        frac = "n/a" if m["return_fraction_of_bayes"] is None else f"{m['return_fraction_of_bayes']:.2f}"
        lines.append("| " + " | ".join([name, f"{frac} ({m['return']:.1f})"] + eps + [
            pos, f"{m['env_steps']:,}", f"{m['env_steps_per_second']:.0f}", f"{m['wall_seconds'] / 60:.1f} min",
            str(m["num_seeds"])]) + " |")
    return "\n".join(lines) + f"\n\nMachine: {summary['machine']}. Returns: {summary['source_note']}\n"


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """The script: reads the flags (see `define_flags`), writes OUT/summary.json and OUT/table.md."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; give each run as --run=METHOD:LOGDIR")
    fv = flag_values
    methods = {}
    for spec in fv.run:
        if ":" not in spec:
            raise app.UsageError(f"--run={spec!r}: expected METHOD:LOGDIR, e.g. mamba:runs/prc_mamba")
        name, logdir = spec.split(":", 1)
        if name in methods:
            raise app.UsageError(f"--run={spec!r}: method {name!r} given twice; give each method one logdir")
        try:
            methods[name] = summarize_run(logdir)
        except ValueError as error:
            raise app.UsageError(str(error))
    sources = sorted({m["source"] for m in methods.values()})
    note = ", ".join(f"{s} ({'fresh tasks after training' if s == 'final_test' else 'last periodic evaluation'})"
                     for s in sources)
    summary = {"machine": fv.machine, "source_note": note, "methods": methods}
    write_study(fv.out, summary, "table.md", table(summary))


if __name__ == "__main__":
    define_flags()
    app.run(main)
