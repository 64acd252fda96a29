"""One table of the suite: every preset's methods (from `experiments.summarize` outputs) side by side.

    python -m experiments.suite_table --summary=point_robot_cpu:results/point_robot_cpu/reward_from_deter \
        --summary=escape_room_cpu:results/escape_room_cpu --summary=rooms_cpu:results/rooms_cpu --out=results/suite.md \
        --plot=results/suite.png

Each `--summary=LABEL:DIR` names a directory holding the summary.json that `experiments.summarize`
wrote. One row per (LABEL, method): seeds, env steps, final return, its fraction of the
Bayes-reference and of the oracle return, the spread of the per-seed fractions of the Bayes return
(min..max), and wall time. Written to --out as markdown and printed. With `--plot=PNG`, also the
learning curves: one panel per LABEL (three to a row), each method's fraction of the Bayes return on its periodic
evaluation tasks against env steps (mean over seeds, min..max shaded), read from the logdirs that
summary.json names.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags

from experiments.plot import METHOD_LABELS, draw_fraction, panels, save

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_multi_string("summary", None, "LABEL:DIR, DIR holding experiments.summarize's summary.json; "
                              "one per preset, in table order, required", flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output markdown file (required).", flag_values=flag_values)
    flags.DEFINE_string("plot", None, "Optional output PNG: the learning curves, one panel per preset.",
                        flag_values=flag_values)
    flags.mark_flags_as_required(["summary", "out"], flag_values=flag_values)


def _steps(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def rows(label: str, summary: dict) -> list[str]:
    """The table rows of one summary.json's methods."""
    out = []
    for method, m in summary["methods"].items():
        bayes, oracle = m.get("bayes_return"), m.get("oracle_episode_returns")
        of_oracle = f"{m['return'] / sum(oracle):.2f}" if oracle else "n/a"
        of_bayes = spread = "n/a"
        if bayes:
            of_bayes = f"{m['return'] / bayes:.2f}"
            per_seed = [r / bayes for r in (m.get("per_seed") or [m["return"]])]
            spread = f"{min(per_seed):.2f}..{max(per_seed):.2f}"
        out.append(f"| {label} | {METHOD_LABELS.get(method, method)} | {m['num_seeds']} | {_steps(m['env_steps'])} | "
                   f"{m['return']:.1f} | {of_bayes} | {spread} | {of_oracle} | {m['wall_seconds'] / 60:.0f} min |")
    return out


def table(summaries: dict[str, dict]) -> str:
    lines = ["| preset | method | seeds | env steps | return | of Bayes | seeds' spread (of Bayes) | of oracle "
             "| wall time |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for label, summary in summaries.items():
        lines += rows(label, summary)
    return "\n".join(lines) + "\n"


def plot(summaries: dict[str, dict], out: str) -> list[list[float]]:
    """The learning curves of every summary's methods (module docstring) -> `out`; returns the
    mean fractions drawn, one list per method, in table order."""
    cols = min(3, len(summaries))
    panel_rows = -(-len(summaries) // cols)
    fig, axes = panels(panel_rows, cols)
    for ax in axes.flat[len(summaries):]:
        ax.set_visible(False)
    drawn = []
    for ax, (label, summary) in zip(axes.flat, summaries.items()):
        for method, m in summary["methods"].items():
            if not m.get("bayes_return"):
                raise ValueError(f"{label}: {method} has no Bayes-reference return to divide by")
            drawn.append(draw_fraction(ax, m["logdir"], method, m["bayes_return"]).tolist())
        ax.axhline(1.0, color="k", linestyle="--", linewidth=1, label="Bayes reference")
        ax.set_title(label)
    axes[0][0].set_ylabel("return / Bayes-reference return")
    axes[0][0].legend(fontsize=7)
    save(fig, out)
    return drawn


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """The script: reads the flags (see `define_flags`), writes --out and prints the table."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; give each preset as --summary=LABEL:DIR")
    summaries = {}
    for spec in flag_values.summary:
        label, sep, directory = spec.partition(":")
        path = pathlib.Path(directory) / "summary.json"
        if not sep or not label:
            raise app.UsageError(f"--summary={spec!r}: expected LABEL:DIR")
        if not path.exists():
            raise app.UsageError(f"--summary={spec!r}: no {path} (write it with experiments.summarize)")
        summaries[label] = json.loads(path.read_text())
    text = table(summaries)
    out = pathlib.Path(flag_values.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
    if flag_values.plot:
        try:
            plot(summaries, flag_values.plot)
        except (ValueError, OSError) as error:  # a summary without its reference, a logdir gone
            raise app.UsageError(f"--plot: {error}") from None
        print(f"wrote {flag_values.plot}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
