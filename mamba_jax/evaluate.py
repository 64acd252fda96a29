"""The evaluation protocol (docs/algorithm.md, section 8).

* A fixed set of `config.eval.eval_tasks` evaluation tasks per run: the envs are reset with keys
  split from the run's `eval_key` (drawn once, stored in the TrainState, checkpointed), so the
  same tasks (and the same initial states) are used at every evaluation and after a resume.
* Deterministic policy (actor mode; the latent is still sampled), one meta-episode per task.
  Reported: the mean over tasks of the meta-episode return and of the return of each
  episode index 1..N (`eval/return`, `eval/return_episode_i`).
* Final test: `config.eval.final_eval_tasks` (1000) fresh tasks, from keys that never serve as
  evaluation tasks, run in blocks of `eval_tasks` with the same compiled function.
* Returns are also reported as a fraction of the Bayes-reference policy's return
  (`eval/return_vs_bayes`), read from results/reference_returns.json when it holds the env with
  the same N x L, otherwise measured once per run with `envs.reference`'s bayes policy.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Keys of the final test are split from fold_in(eval_key, TEST_FOLD): never evaluation tasks.
TEST_FOLD = 0x7E57

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_FILE = os.path.join(_REPO, "results", "reference_returns.json")


def eval_reset_keys(eval_key: jax.Array, num_tasks: int) -> jax.Array:
    """[num_tasks, 2] reset keys of the run's fixed evaluation tasks."""
    return jax.random.split(eval_key, num_tasks)


def eval_policy_key(eval_key: jax.Array, env_steps: jax.Array) -> jax.Array:
    """The key of the policy/env-step randomness of the evaluation at `env_steps` (so an
    evaluation is a deterministic function of the train state: resume-exact)."""
    return jax.random.fold_in(eval_key, env_steps)


def test_reset_keys(eval_key: jax.Array, num_tasks: int) -> jax.Array:
    """[num_tasks, 2] reset keys of the final test's fresh tasks."""
    return jax.random.split(jax.random.fold_in(eval_key, TEST_FOLD), num_tasks)


def summarize(stats: dict, prefix: str, reference: dict | None = None) -> dict:
    """Host-side summary of per-task stats with a leading [seeds, tasks] (or [tasks]) shape.

    Returns {prefix/return, prefix/return_std (over tasks), prefix/return_episode_i (i = 1..N),
    prefix/positive_episode_i (the fraction of tasks whose episode-i return is > 0: on the
    sparse-reward point robots and the escape room, the fraction of tasks in which episode i
    reached the reward at all, which separates "did not find the goal" from "found it late"),
    prefix/return_vs_bayes and prefix/return_episode_i_vs_bayes when `reference` has them,
    and prefix/<key>/per_seed (a list over seeds) for the return and the per-episode figures}.
    """
    ret = np.asarray(stats["return"], np.float64)
    eps = np.asarray(stats["episode_returns"], np.float64)
    if ret.ndim == 1:
        ret, eps = ret[None], eps[None]
    out = {
        f"{prefix}/return": float(ret.mean()),
        f"{prefix}/return_std": float(ret.std(axis=-1).mean()),
        f"{prefix}/return/per_seed": ret.mean(-1).tolist(),
    }
    for i in range(eps.shape[-1]):
        out[f"{prefix}/return_episode_{i + 1}"] = float(eps[..., i].mean())
        out[f"{prefix}/return_episode_{i + 1}/per_seed"] = eps[..., i].mean(-1).tolist()
        positive = (eps[..., i] > 0).astype(np.float64)
        out[f"{prefix}/positive_episode_{i + 1}"] = float(positive.mean())
        out[f"{prefix}/positive_episode_{i + 1}/per_seed"] = positive.mean(-1).tolist()
    if reference is not None:
        bayes = reference.get("return")
        if bayes:
            out[f"{prefix}/return_vs_bayes"] = float(ret.mean() / bayes)
        for i, value in enumerate(reference.get("episode_returns") or []):
            if value and i < eps.shape[-1]:
                out[f"{prefix}/return_episode_{i + 1}_vs_bayes"] = float(eps[..., i].mean() / value)
    return out


def reference_returns(env_name: str, env, env_params, path: str = REFERENCE_FILE, num_tasks: int = 1000,
                      compute: bool = True, policy: str = "bayes") -> dict | None:
    """The reference policy's mean returns {"return": float, "episode_returns": [N floats]}.

    Read from `path` (results/reference_returns.json) when it has an entry for `env_name` and
    `policy` with this N x L; otherwise, when `compute`, measured on `num_tasks` tasks with
    `envs.reference.get_policy(env_name, policy, ...)`. None when neither is available.
    """
    found = _read_reference(path, env_name, policy, env_params)
    if found is not None or not compute:
        return found
    try:
        from envs import reference
    except ImportError:
        return None
    try:
        pol = reference.get_policy(env_name, policy, env, env_params)
    except ValueError:
        return None
    run = jax.jit(reference.evaluate_policy, static_argnums=(0, 2, 4))
    out = run(env, env_params, pol, jax.random.PRNGKey(0), num_tasks)
    return {
        "return": float(jnp.mean(out["return"])),
        "episode_returns": np.asarray(jnp.mean(out["episode_returns"], 0)).tolist(),
        "source": f"envs.reference {policy} policy, {num_tasks} tasks",
    }


def _read_reference(path: str, env_name: str, policy: str, env_params) -> dict | None:
    """Reads {env: {policy: {"return_mean": x, "episode_return_means": [...], ...}}} (the format
    of experiments/reference_returns.py; "return" / "episode_returns" are accepted too). The
    file holds the registry's N x L for each env (or says num_episodes / episode_length): an
    entry is used only when it matches `env_params`."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        table = json.load(f)
    entry = table.get(env_name) if isinstance(table, dict) else None
    value: Any = entry.get(policy) if isinstance(entry, dict) else None
    if isinstance(value, (int, float)):
        value = {"return": float(value)}
    if not isinstance(value, dict):
        return None
    ret = value.get("return_mean", value.get("return"))
    if isinstance(ret, dict):  # {"mean": ..., "std": ...}
        ret = ret.get("mean")
    if ret is None:
        return None
    episodes = value.get("episode_return_means", value.get("episode_returns")) or []
    if isinstance(episodes, dict):
        episodes = episodes.get("mean") or []
    expected = {"num_episodes": env_params.num_episodes, "episode_length": env_params.episode_length}
    stated = {k: value.get(k, entry.get(k)) for k in expected}
    if any(stated[k] is None for k in expected):
        default = _registry_shape(env_name)
        for k in expected:
            if stated[k] is None:
                stated[k] = None if default is None else default[k]
    if any(stated[k] is not None and int(stated[k]) != expected[k] for k in expected):
        return None
    if episodes and len(episodes) != env_params.num_episodes:
        return None
    return {"return": float(ret), "episode_returns": [float(x) for x in episodes], "source": path}


def _registry_shape(env_name: str) -> dict | None:
    """The registry's N and L for `env_name` (None if unknown)."""
    try:
        import envs

        _, params = envs.make(env_name)
    except (ImportError, ValueError):
        return None
    return {"num_episodes": params.num_episodes, "episode_length": params.episode_length}
