"""Returns of the reference policies (random, oracle, Bayes reference) on every env.

    python -m experiments.reference_returns                                  # every env and policy, 1000 tasks
    python -m experiments.reference_returns --envs=rooms,rooms_meta --num_tasks=200 --seed=1
    python -m experiments.reference_returns --envs=reacher --chunk=100 --out_dir=/tmp/refs   # MuJoCo: smaller chunks

Evaluates each policy that exists for each selected env on `num_tasks` tasks (one whole
meta-episode per task, `envs.reference.evaluate_policy`) and writes

* results/reference_returns.json:
  `{env: {policy: {"return_mean", "return_std", "episode_return_means": [N], "num_tasks",
  "num_episodes", "episode_length"}}}`
  (std over tasks; entries of envs not selected in this run are kept from the existing file),
* results/reference_returns.md: the same as a markdown table.

Envs whose module is not written yet and policies that do not exist are skipped with a printed
note. MuJoCo envs are slow on CPU: select envs with `--envs` and lower `--chunk` (tasks per
jitted call) if memory is short. The numbers depend on (seed, chunk).
"""

import json
import os
import pathlib
import time

import numpy as np
from absl import app, flags

import jax

import envs
from envs.reference import POLICY_NAMES, evaluate_policy, get_policy
from experiments import check_choices

FLAGS = flags.FLAGS
RESULTS = str(pathlib.Path(__file__).resolve().parents[1] / "results")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_integer(
        "num_tasks", 1000, "Tasks (meta-episodes) per env and policy.", lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "envs", list(envs.NAMES), f"Envs to evaluate; allowed: {', '.join(envs.NAMES)}.",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "policies", list(POLICY_NAMES), f"Policies; allowed: {', '.join(POLICY_NAMES)}.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer("seed", 0, "PRNG seed (env i of envs.NAMES uses fold_in(PRNGKey(seed), i)).",
                         flag_values=flag_values)
    flags.DEFINE_integer("chunk", 1000, "Tasks per jitted call (lower it if memory is short; the numbers depend "
                         "on it).", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_string(
        "out_dir", RESULTS, "Directory of reference_returns.{json,md} (merged into: entries of other envs are kept).",
        flag_values=flag_values,
    )


_EVALUATE = jax.jit(evaluate_policy, static_argnums=(0, 2, 4))


def evaluate(env, params, policy, key, num_tasks: int, chunk: int) -> dict:
    """`evaluate_policy` over ceil(num_tasks / chunk) calls (key i = fold_in(key, i)); numpy arrays."""
    parts = []
    for i, start in enumerate(range(0, num_tasks, chunk)):
        size = min(chunk, num_tasks - start)
        parts.append(jax.tree.map(np.asarray, _EVALUATE(env, params, policy, jax.random.fold_in(key, i), size)))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def summarise(result: dict) -> dict:
    returns = result["return"].astype(np.float64)
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "episode_return_means": [float(v) for v in result["episode_returns"].astype(np.float64).mean(0)],
        "num_tasks": int(returns.shape[0]),
    }


def reference_returns(
    env_names, policy_names, num_tasks: int, seed: int, chunk: int, log=print
) -> dict:
    """{env: {policy: summary}} for every env / policy that exists; skips the others with a note."""
    check_choices("env", env_names, envs.NAMES)
    check_choices("policy", policy_names, POLICY_NAMES)
    out = {}
    for env_name in env_names:
        try:
            env, params = envs.make(env_name)
        except ModuleNotFoundError as error:
            log(f"skip {env_name}: env not available ({error})")
            continue
        for policy_name in policy_names:
            try:
                policy = get_policy(env_name, policy_name, env, params)
            except ValueError as error:
                log(f"skip {env_name}/{policy_name}: {error}")
                continue
            # The key depends on the env's place in envs.NAMES, not on which envs were selected.
            key = jax.random.fold_in(jax.random.PRNGKey(seed), envs.NAMES.index(env_name))
            start = time.perf_counter()
            summary = summarise(evaluate(env, params, policy, key, num_tasks, chunk))
            summary.update(num_episodes=params.num_episodes, episode_length=params.episode_length)
            out.setdefault(env_name, {})[policy_name] = summary
            log(
                f"{env_name:>16s} {policy_name:>6s}: {summary['return_mean']:9.2f} +- {summary['return_std']:.2f}"
                f"  episodes {np.round(summary['episode_return_means'], 2).tolist()}"
                f"  ({time.perf_counter() - start:.1f} s)"
            )
    return out


def markdown_table(results: dict) -> str:
    lines = [
        "| env | policy | tasks | meta-episode return (mean +- std) | per-episode return means |",
        "|---|---|---:|---:|---|",
    ]
    for env_name in [n for n in envs.NAMES if n in results] + sorted(set(results) - set(envs.NAMES)):
        for policy_name, s in results[env_name].items():
            episodes = ", ".join(f"{v:.2f}" for v in s["episode_return_means"])
            lines.append(
                f"| {env_name} | {policy_name} | {s.get('num_tasks', '')} | "
                f"{s['return_mean']:.2f} +- {s['return_std']:.2f} | {episodes} |"
            )
    return "\n".join(lines) + "\n"


def write(results: dict, out_dir: str) -> dict:
    """Merges `results` into out_dir/reference_returns.json (replacing the envs evaluated) and
    rewrites out_dir/reference_returns.md from the merged content. Returns the merged dict."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "reference_returns.json")
    merged = {}
    if os.path.exists(path):
        with open(path) as f:
            merged = json.load(f)
    merged.update(results)
    with open(path, "w") as f:
        json.dump(merged, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "reference_returns.md"), "w") as f:
        f.write("# Reference returns\n\n")
        f.write("Produced by `python -m experiments.reference_returns`; std is over tasks.\n\n")
        f.write(markdown_table(merged))
    return merged


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: reads the flags (see `define_flags`), evaluates, merges into --out_dir's files."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; this script takes flags only (see --help)")
    fv = flag_values
    try:
        results = reference_returns(fv.envs, fv.policies, fv.num_tasks, fv.seed, fv.chunk)
    except ValueError as error:
        raise app.UsageError(str(error))
    write(results, fv.out_dir)
    print(f"wrote {os.path.join(fv.out_dir, 'reference_returns.json')} and .md")


if __name__ == "__main__":
    define_flags()
    app.run(main)
