"""The decomposition study: fraction of the Bayes-reference return against the number of rooms N.

    python -m experiments.decomposition --rooms=2:results/rooms2_cpu --rooms=3:results/rooms_cpu \
        --rooms=4:results/rooms4_cpu --out=results/rooms_decomposition

Each `--rooms=N:DIR` names a directory holding the summary.json that `experiments.summarize` wrote for
MAMBA's and DreamerV3's runs on Rooms-N (methods "mamba" and "dreamer"). Writes OUT/summary.json as

    {"N": {"2": {"mamba": fraction, "dreamer": fraction, "bayes_return": ..., "oracle_return": ...,
                 "random_return": ..., "env_steps": ..., "seeds": ..., "mamba_per_seed": [...], ...}, ...}}

(fractions of the Bayes-reference return; env_steps and seeds MAMBA's run's, the DreamerV3 run's
being refused if they differ), OUT/table.md and OUT/fraction_vs_rooms.png (one line per method, the
per-seed fractions as dots, the random policy's fraction dotted).
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags

from experiments import write_study
from experiments.plot import METHOD_COLOURS, METHOD_LABELS, REFERENCE_STYLES, panels, save

FLAGS = flags.FLAGS
METHODS = ("mamba", "dreamer")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_multi_string("rooms", None, "N:DIR, DIR holding experiments.summarize's summary.json of the "
                              "Rooms-N runs (methods mamba and dreamer); one per N, required", flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output directory (required).", flag_values=flag_values)
    flags.mark_flags_as_required(["rooms", "out"], flag_values=flag_values)


def entry(summary: dict, where: str) -> dict:
    """The study's fields for one N from its summary.json (`where` names it in errors)."""
    methods = summary["methods"]
    missing = sorted(set(METHODS) - set(methods))
    if missing:
        raise ValueError(f"{where}: no run of {', '.join(missing)} (methods: {', '.join(methods)})")
    mamba, dreamer = methods["mamba"], methods["dreamer"]
    for field in ("env_steps", "num_seeds"):
        if mamba[field] != dreamer[field]:
            raise ValueError(f"{where}: MAMBA and DreamerV3 differ in {field} ({mamba[field]} vs {dreamer[field]})")
    if mamba["bayes_return"] is None or mamba["oracle_episode_returns"] is None:
        raise ValueError(f"{where}: no reference returns for its env (results/reference_returns.json)")
    if mamba.get("random_return") is None:
        raise ValueError(f"{where}: no random-policy return (summary.json written before it had one: rerun "
                         "experiments.summarize)")
    out = {name: methods[name]["return_fraction_of_bayes"] for name in METHODS}
    out.update({f"{name}_per_seed": [r / mamba["bayes_return"] for r in methods[name]["per_seed"]] for name in METHODS})
    out.update(bayes_return=mamba["bayes_return"], oracle_return=sum(mamba["oracle_episode_returns"]),
               random_return=mamba["random_return"], env_steps=mamba["env_steps"], seeds=mamba["num_seeds"])
    return out


def table(study: dict) -> str:
    lines = ["| N rooms | MAMBA / Bayes | DreamerV3 / Bayes | random / Bayes | Bayes return | oracle return | "
             "env steps | seeds |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, e in study["N"].items():
        lines.append(f"| {n} | {e['mamba']:.2f} | {e['dreamer']:.2f} | {e['random_return'] / e['bayes_return']:.2f} | "
                     f"{e['bayes_return']:.1f} | {e['oracle_return']:.1f} | {e['env_steps']:,} | {e['seeds']} |")
    return "\n".join(lines) + "\n"


def plot(study: dict, out: str) -> str:
    ns = [int(n) for n in study["N"]]
    entries = list(study["N"].values())
    fig, axes = panels(1, 1)
    ax = axes[0][0]
    for method in METHODS:
        colour = METHOD_COLOURS[method]
        ax.plot(ns, [e[method] for e in entries], "-o", color=colour, label=METHOD_LABELS[method])
        for n, e in zip(ns, entries):
            ax.plot([n] * len(e[f"{method}_per_seed"]), e[f"{method}_per_seed"], ".", color=colour, alpha=0.5)
    ax.axhline(1.0, color="k", linestyle="--", linewidth=1, label="Bayes reference")
    ax.plot(ns, [e["random_return"] / e["bayes_return"] for e in entries], ":", color=REFERENCE_STYLES["random"][0],
            label="random policy")
    ax.set_xticks(ns)
    ax.set_xlabel("rooms N")
    ax.set_ylabel("return / Bayes-reference return")
    ax.set_title(f"Rooms-N, {entries[0]['env_steps']:,} env steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out)


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """The script: reads the flags (see `define_flags`), writes OUT/summary.json, table.md, the plot."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; give each N as --rooms=N:DIR")
    found = {}
    try:
        for spec in flag_values.rooms:
            n, sep, directory = spec.partition(":")
            path = pathlib.Path(directory) / "summary.json"
            if not sep or not n.isdigit():
                raise ValueError(f"--rooms={spec!r}: expected N:DIR with N an integer")
            if not path.exists():
                raise ValueError(f"--rooms={spec!r}: no {path} (write it with experiments.summarize)")
            found[int(n)] = entry(json.loads(path.read_text()), str(path))
        steps = {e["env_steps"] for e in found.values()}
        if len(steps) > 1:
            raise ValueError(f"the Rooms-N runs have different env-step budgets {sorted(steps)}; the study uses one")
    except ValueError as error:
        raise app.UsageError(str(error))
    study = {"N": {str(n): found[n] for n in sorted(found)}}
    write_study(flag_values.out, study, "table.md", table(study), lambda path: plot(study, path),
                "fraction_vs_rooms.png")


if __name__ == "__main__":
    define_flags()
    app.run(main)
