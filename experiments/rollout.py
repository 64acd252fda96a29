"""Roll out a reference policy on a few tasks and print its returns.

    python -m experiments.rollout --env=point_robot --policy=bayes --num_tasks=8 --seed=0
    python -m experiments.rollout --env=rooms_meta --policy=random --num_tasks=4

Prints one row per task (meta-episode return, then the return of every episode) and a mean row.
Policies: random, oracle (knows the task), bayes (a hand-written Bayes-reference policy); see
`envs.reference`.
"""

import numpy as np
from absl import app, flags

import jax

import envs
from envs.reference import POLICY_NAMES, evaluate_policy, get_policy

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_enum("env", "point_robot", list(envs.NAMES), "Registered env name (envs.NAMES).",
                      flag_values=flag_values)
    flags.DEFINE_enum("policy", "bayes", list(POLICY_NAMES), "Reference policy: random, oracle (knows the task) "
                      "or bayes (the Bayes-reference policy); not every env has every policy.",
                      flag_values=flag_values)
    flags.DEFINE_integer(
        "num_tasks", 8, "Number of tasks (one meta-episode each).", lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer("seed", 0, "PRNG seed of the run (tasks and actions): jax.random.PRNGKey(seed).",
                         flag_values=flag_values)


def rollout(env_name: str, policy_name: str, num_tasks: int, seed: int) -> dict:
    """Runs `num_tasks` meta-episodes; returns numpy {"return": [B], "episode_returns": [B, N], "task"}."""
    env, params = envs.make(env_name)
    policy = get_policy(env_name, policy_name, env, params)
    evaluate = jax.jit(evaluate_policy, static_argnums=(0, 2, 4))
    result = evaluate(env, params, policy, jax.random.PRNGKey(seed), num_tasks)
    return jax.tree.map(np.asarray, result)


def format_table(result: dict) -> str:
    """A fixed-width text table: task, meta-episode return, per-episode returns; then the mean."""
    returns, episodes = result["return"], result["episode_returns"]
    num_episodes = episodes.shape[1]
    header = ["task", "return"] + [f"episode {i + 1}" for i in range(num_episodes)]
    rows = [[str(b), f"{returns[b]:.2f}"] + [f"{v:.2f}" for v in episodes[b]] for b in range(len(returns))]
    rows.append(["mean", f"{returns.mean():.2f}"] + [f"{v:.2f}" for v in episodes.mean(0)])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: reads the flags (see `define_flags`), rolls out, prints the table."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; this script takes flags only (see --help)")
    fv = flag_values
    try:
        result = rollout(fv.env, fv.policy, fv.num_tasks, fv.seed)
    except ValueError as error:  # e.g. a policy that does not exist for this env
        raise app.UsageError(str(error))
    except ModuleNotFoundError as error:  # an env whose module is not written yet
        raise app.UsageError(f"env {fv.env!r} is not available: {error}")
    env, params = envs.make(fv.env)
    print(
        f"{fv.env}: {fv.policy} policy, {fv.num_tasks} tasks, "
        f"N x L = {params.num_episodes} x {params.episode_length}, seed {fv.seed}"
    )
    print(format_table(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
