"""Learning curves from training logdirs to a PNG.

    python -m experiments.plot runs/pr_mamba runs/pr_dreamer --out=fig.png
    python -m experiments.plot runs/s0 runs/s1 runs/d0 --labels=MAMBA,MAMBA,DreamerV3 --out=fig.png
    python -m experiments.plot runs/pr --x=wall_seconds --out=fig_wall.png

The arguments that are not flags are the training logdirs (each with metrics.jsonl), one or more.
One panel for the meta-episode return (`eval/return`) and one per episode index
(`eval/return_episode_i`), against real env steps (or wall-clock seconds). Each curve is the
mean over seeds with the spread (min..max over seeds) shaded; seeds come from a logdir's
`.../per_seed` lists (one run with --num_seeds) and from logdirs sharing a label. Horizontal
dashed lines: the reference policies' returns from results/reference_returns.json (and the
run's own LOGDIR/reference.json), when their env and N x L match the run.
"""

from __future__ import annotations

import json
import os
import types

import numpy as np
from absl import app, flags
from matplotlib.ticker import EngFormatter

from mamba_jax import evaluate as ev
from mamba_jax.config import field_values
from mamba_jax.logging import read_metrics

FLAGS = flags.FLAGS
X_AXES = ("env_steps", "wall_seconds")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_string("out", None, "Output PNG path (required).", flag_values=flag_values)
    flags.DEFINE_list("labels", None, "One legend label per logdir, comma-separated (default: the logdirs' "
                      "names); logdirs with equal labels are merged as seeds of one curve.", flag_values=flag_values)
    flags.DEFINE_enum("x", "env_steps", list(X_AXES), "x axis: real env steps or wall-clock seconds.",
                      flag_values=flag_values)
    flags.DEFINE_string("reference", ev.REFERENCE_FILE, "Reference returns JSON whose random / oracle / Bayes "
                        "returns are drawn as dashed lines (when the env and N x L match the run).",
                        flag_values=flag_values)
    flags.DEFINE_string("title", None, "Figure title (default: the first run's preset name).",
                        flag_values=flag_values)
    flags.mark_flag_as_required("out", flag_values=flag_values)


REFERENCE_STYLES = {
    "bayes": ("k", "Bayes reference"),
    "oracle": ("tab:green", "oracle"),
    "random": ("tab:gray", "random"),
}


def load_run(logdir: str, x_key: str = "env_steps") -> dict:
    """{"x": [P], "series": {metric: [P, seeds]}, "info": run.json or {}} from one logdir (eval rows only)."""
    rows = [r for r in read_metrics(logdir) if r.get("eval/return") is not None]
    if not rows:
        raise ValueError(f"{logdir}: no evaluation rows in metrics.jsonl")
    info = {}
    if os.path.exists(os.path.join(logdir, "run.json")):
        with open(os.path.join(logdir, "run.json")) as f:
            info = json.load(f)
    metrics = ["eval/return"]
    i = 1
    while f"eval/return_episode_{i}" in rows[0]:
        metrics.append(f"eval/return_episode_{i}")
        i += 1
    series = {}
    for m in metrics:
        per_seed = [r.get(m + "/per_seed") or [r[m]] for r in rows]
        series[m] = np.asarray([[np.nan if v is None else v for v in s] for s in per_seed], np.float64)
    return {"x": np.asarray([r[x_key] for r in rows], np.float64), "series": series, "info": info}


METHOD_COLOURS = {"mamba": "tab:blue", "dreamer": "tab:orange", "rl2": "tab:red"}
METHOD_LABELS = {"mamba": "MAMBA", "dreamer": "DreamerV3", "rl2": "RL²"}


def panels(rows: int, cols: int):
    """A figure of rows x cols panels, 4.2 x 3.4 inches each, drawn off-screen (Agg backend) ->
    (figure, axes [rows, cols]), the figure size every plot of these scripts uses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)


def save(fig, out: str) -> str:
    """Lays `fig` out, writes it to `out` (PNG, 120 dpi; its folder made) and closes it -> out."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def fraction_curve(logdir: str, bayes_return: float) -> tuple[np.ndarray, np.ndarray]:
    """(env steps [P], fraction of the Bayes return [P, seeds]) of a run's periodic evaluations."""
    run = load_run(logdir)
    return run["x"], run["series"]["eval/return"] / bayes_return


def draw_fraction(ax, logdir: str, method: str, bayes_return: float, log_x: bool = False) -> np.ndarray:
    """Draws a run's fraction of the Bayes return on `ax` (matplotlib Axes): the mean over seeds as a
    line, min..max over seeds shaded, in the method's colour ("mamba", "dreamer" or "rl2"). With
    `log_x` the evaluation at 0 env steps is left out. Returns the mean [P'] drawn."""
    steps, fractions = fraction_curve(logdir, bayes_return)
    keep = steps > 0 if log_x else np.ones_like(steps, bool)
    mean = np.nanmean(fractions, 1)[keep]
    colour = METHOD_COLOURS[method]
    ax.plot(steps[keep], mean, color=colour, label=f"{METHOD_LABELS[method]} ({fractions.shape[1]} seeds)")
    ax.fill_between(steps[keep], np.nanmin(fractions, 1)[keep], np.nanmax(fractions, 1)[keep], color=colour,
                    alpha=0.2)
    if log_x:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel("env steps")
    ax.grid(alpha=0.3)
    return mean


def merge(runs: list[dict]) -> dict:
    """Runs of one label -> seeds stacked on the first run's x grid (linear interpolation)."""
    base = runs[0]
    out = {"x": base["x"], "series": {}, "info": base["info"]}
    for m in base["series"]:
        cols = []
        for r in runs:
            if m not in r["series"]:
                continue
            for s in range(r["series"][m].shape[1]):
                cols.append(np.interp(base["x"], r["x"], r["series"][m][:, s], right=np.nan))
        out["series"][m] = np.stack(cols, 1)
    return out


def references(info: dict, logdirs: list[str], path: str) -> dict:
    """{policy: {"return": x, "episode_returns": [...]}} for the run's env and N x L."""
    config = field_values(info.get("config", {}))
    env = config.get("env")
    if env is None:
        return {}
    params = types.SimpleNamespace(num_episodes=config.get("num_episodes"), episode_length=config.get("episode_length"))
    refs = {}
    for policy in REFERENCE_STYLES:
        found = ev._read_reference(path, env, policy, params)
        if found is not None:
            refs[policy] = found
    for logdir in logdirs:
        own = os.path.join(logdir, "reference.json")
        if "bayes" not in refs and os.path.exists(own):
            with open(own) as f:
                refs["bayes"] = json.load(f)
    return refs


def plot(logdirs: list[str], out: str, labels: list[str] | None = None, x_key: str = "env_steps",
         reference_file: str = ev.REFERENCE_FILE, title: str | None = None) -> str:
    if labels is None:
        labels = [os.path.basename(os.path.normpath(d)) for d in logdirs]
    if len(labels) != len(logdirs):
        raise ValueError(f"--labels has {len(labels)} names for {len(logdirs)} logdirs; give one per logdir")
    groups: dict[str, list[str]] = {}
    for label, logdir in zip(labels, logdirs):
        groups.setdefault(label, []).append(logdir)
    curves = {label: merge([load_run(d, x_key) for d in dirs]) for label, dirs in groups.items()}
    metrics = list(next(iter(curves.values()))["series"])
    fig, axes = panels(1, len(metrics))
    first = next(iter(curves.values()))
    refs = references(first["info"], logdirs, reference_file)
    for ax, metric in zip(axes[0], metrics):
        for label, curve in curves.items():
            if metric not in curve["series"]:
                continue
            values = curve["series"][metric]
            mean = np.nanmean(values, 1)
            seeds = values.shape[1]
            (line,) = ax.plot(curve["x"], mean, label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
            if seeds > 1:
                low, high = np.nanmin(values, 1), np.nanmax(values, 1)
                ax.fill_between(curve["x"], low, high, color=line.get_color(), alpha=0.2)
        for policy, ref in refs.items():
            color, name = REFERENCE_STYLES[policy]
            if metric == "eval/return":
                value = ref.get("return")
            else:
                index = int(metric.rsplit("_", 1)[1]) - 1
                episodes = ref.get("episode_returns") or []
                value = episodes[index] if index < len(episodes) else None
            if value is not None:
                ax.axhline(value, color=color, linestyle="--", linewidth=1, label=name)
        ax.set_title("meta-episode return" if metric == "eval/return" else f"episode {metric.rsplit('_', 1)[1]} return")
        ax.set_xlabel("env steps" if x_key == "env_steps" else "wall-clock seconds")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 600k, 1M: long tick labels overlapped
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean return over evaluation tasks")
    axes[0][0].legend(fontsize=7)
    if title is None:
        title = field_values(first["info"].get("config", {})).get("name")
    if title:
        fig.suptitle(title)
    return save(fig, out)


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """The script: the logdirs are the non-flag arguments (argv[1:]); writes --out and prints its path."""
    fv = flag_values
    logdirs = list(argv[1:])
    if not logdirs:
        raise app.UsageError("no logdir given; usage: python -m experiments.plot LOGDIR [LOGDIR ...] --out=fig.png")
    try:
        path = plot(logdirs, fv.out, fv.labels, fv.x, fv.reference, fv.title)
    except ValueError as error:
        raise app.UsageError(str(error))
    print(path)


if __name__ == "__main__":
    define_flags()
    app.run(main)
