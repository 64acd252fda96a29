"""MAMBA's sample efficiency against RL²: how many env steps RL² needs to reach MAMBA's final return.

    python -m experiments.sample_efficiency \
        --compare=point_robot:results/point_robot_cpu/mamba:results/rl2/point_robot/run:results/point_robot_cpu/dreamer \
        --compare=escape_room:results/escape_room_cpu/mamba:results/rl2/escape_room/run --out=results/rl2

Each `--compare=ENV:MAMBA_LOGDIR:RL2_LOGDIR[:DREAMER_LOGDIR]` names finished training runs on one
environment. For each, with both fractions of the Bayes-reference return:

    mamba_fraction_of_bayes            MAMBA's final test (fresh tasks; its last evaluation if none)
    mamba_env_steps                    the env steps MAMBA trained for
    rl2_fraction_of_bayes              RL²'s final test, likewise
    rl2_env_steps, rl2_wall_seconds    what RL² ran for
    rl2_env_steps_to_mamba_fraction    the env steps of RL²'s first periodic evaluation whose mean over
                                       seeds reached mamba_fraction_of_bayes; null: not reached
    sample_efficiency_ratio            rl2_env_steps_to_mamba_fraction / mamba_env_steps (null if not
                                       reached: then it is more than rl2_env_steps / mamba_env_steps,
                                       written as ratio_lower_bound)

OUT/summary.json holds {ENV: those fields}; OUT/sample_efficiency.md a table and
OUT/sample_efficiency.png one panel per environment: the fraction of the Bayes return on evaluation
tasks against env steps (log axis) for each method (mean over seeds, min..max shaded), MAMBA's final
fraction dashed and the point where RL² reaches it marked.

RL²'s periodic evaluations use the run's fixed evaluation tasks (config eval_tasks) and MAMBA's final
figure 1000 fresh tasks; both are deterministic-policy returns on tasks drawn from the same distribution.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from experiments import write_study
from experiments.plot import METHOD_COLOURS, draw_fraction, fraction_curve, panels, save
from experiments.summarize import summarize_run

FLAGS = flags.FLAGS
METHODS = ("mamba", "rl2", "dreamer")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_multi_string("compare", None, "ENV:MAMBA_LOGDIR:RL2_LOGDIR[:DREAMER_LOGDIR], finished runs on one "
                              "environment; one per environment, required", flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output directory for summary.json, sample_efficiency.md and .png (required).",
                        flag_values=flag_values)
    flags.mark_flags_as_required(["compare", "out"], flag_values=flag_values)


def parse_compare(spec: str) -> tuple[str, dict[str, str]]:
    """"env:a:b[:c]" -> ("env", {"mamba": a, "rl2": b[, "dreamer": c]}); ValueError saying the format."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not all(parts):
        raise ValueError(f"--compare={spec!r}: expected ENV:MAMBA_LOGDIR:RL2_LOGDIR[:DREAMER_LOGDIR]")
    return parts[0], dict(zip(METHODS, parts[1:]))


def steps_to_reach(steps: np.ndarray, fractions: np.ndarray, target: float) -> int | None:
    """Env steps of the first evaluation whose mean over seeds is >= target; None if none is."""
    reached = np.flatnonzero(np.nanmean(fractions, 1) >= target)
    return int(steps[reached[0]]) if reached.size else None


def compare(logdirs: dict[str, str]) -> dict:
    """The summary fields (module docstring) of one environment's runs."""
    mamba, rl2 = summarize_run(logdirs["mamba"]), summarize_run(logdirs["rl2"])
    for name, s in (("mamba", mamba), ("rl2", rl2)):
        if s["bayes_return"] is None:
            raise ValueError(f"{logdirs[name]}: no Bayes-reference return for its env (results/reference_returns.json)")
    target = mamba["return_fraction_of_bayes"]
    steps, fractions = fraction_curve(logdirs["rl2"], rl2["bayes_return"])
    reached = steps_to_reach(steps, fractions, target)
    out = {
        "rl2_fraction_of_bayes": rl2["return_fraction_of_bayes"],
        "rl2_env_steps": rl2["env_steps"],
        "rl2_wall_seconds": rl2["wall_seconds"],
        "rl2_seeds": rl2["num_seeds"],
        "mamba_fraction_of_bayes": target,
        "mamba_env_steps": mamba["env_steps"],
        "mamba_wall_seconds": mamba["wall_seconds"],
        "mamba_seeds": mamba["num_seeds"],
        "rl2_env_steps_to_mamba_fraction": reached,
        "sample_efficiency_ratio": None if reached is None else reached / mamba["env_steps"],
        "ratio_lower_bound": rl2["env_steps"] / mamba["env_steps"] if reached is None else None,
        "logdirs": logdirs,
    }
    if "dreamer" in logdirs:
        dreamer = summarize_run(logdirs["dreamer"])
        out.update(dreamer_fraction_of_bayes=dreamer["return_fraction_of_bayes"], dreamer_env_steps=dreamer["env_steps"])
    return out


def table(summary: dict) -> str:
    lines = ["| env | MAMBA / Bayes (env steps) | RL² / Bayes (env steps, wall) | RL² steps to MAMBA's fraction "
             "| ratio |", "|---|---|---|---|---|"]
    for env, s in summary.items():
        if s["rl2_env_steps_to_mamba_fraction"] is None:
            reach, ratio = f"not reached in {s['rl2_env_steps']:,}", f"> {s['ratio_lower_bound']:.1f}x"
        else:
            reach, ratio = f"{s['rl2_env_steps_to_mamba_fraction']:,}", f"{s['sample_efficiency_ratio']:.1f}x"
        lines.append(f"| {env} | {s['mamba_fraction_of_bayes']:.2f} ({s['mamba_env_steps']:,}) | "
                     f"{s['rl2_fraction_of_bayes']:.2f} ({s['rl2_env_steps']:,}, {s['rl2_wall_seconds'] / 60:.0f} min) "
                     f"| {reach} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, out: str) -> str:
    fig, axes = panels(1, len(summary))
    for ax, (env, s) in zip(axes[0], summary.items()):
        for method, logdir in s["logdirs"].items():
            draw_fraction(ax, logdir, method, summarize_run(logdir)["bayes_return"], log_x=True)
        ax.axhline(s["mamba_fraction_of_bayes"], color=METHOD_COLOURS["mamba"], linestyle="--", linewidth=1,
                   label="MAMBA final")
        if s["rl2_env_steps_to_mamba_fraction"] is not None:
            ax.plot([s["rl2_env_steps_to_mamba_fraction"]], [s["mamba_fraction_of_bayes"]], "o",
                    color=METHOD_COLOURS["rl2"])
        ax.set_title(env)
    axes[0][0].set_ylabel("return / Bayes-reference return")
    axes[0][0].legend(fontsize=7)
    return save(fig, out)


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """The script: reads the flags (see `define_flags`), writes OUT/summary.json, .md and .png."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; give each environment as --compare=...")
    fv = flag_values
    summary = {}
    try:
        for spec in fv.compare:
            env, logdirs = parse_compare(spec)
            if env in summary:
                raise ValueError(f"--compare={spec!r}: environment {env!r} given twice")
            summary[env] = compare(logdirs)
    except ValueError as error:
        raise app.UsageError(str(error))
    write_study(fv.out, summary, "sample_efficiency.md", table(summary), lambda path: plot(summary, path),
                "sample_efficiency.png")


if __name__ == "__main__":
    define_flags()
    app.run(main)
