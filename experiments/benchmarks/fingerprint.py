"""Behaviour fingerprint: fixed-seed numbers that a refactor must leave bit-identical.

    python -m experiments.benchmarks.fingerprint --out=/tmp/now.json
    python -m experiments.benchmarks.fingerprint --compare=results/behaviour_fingerprint.json

It records (1) the metrics rows and final test of a `debug` run of 400 env steps, one seed, and
(2) the metrics and a SHA-256 of the new parameters after one `point_robot_cpu` update on a fixed
random batch. `--compare` recomputes both and exits 1 naming every number that differs (exact
equality: the same code on the same machine and XLA flags gives the same bits). Numbers depend
on the CPU's instruction set and on XLA, so a recorded file holds for the machine it was taken on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_string("out", None, "Write the fingerprint JSON to this path.", flag_values=flag_values)
    flags.DEFINE_string("compare", None, "Recompute and compare with the fingerprint JSON at this path; exit 1 on any "
                        "difference.", flag_values=flag_values)


def _param_digest(tree) -> str:
    """SHA-256 over every leaf's bytes, leaves ordered by their path (independent of tree order)."""
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    digest = hashlib.sha256()
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def debug_run() -> dict:
    """Metrics rows (wall time dropped) and the final test of 400 env steps of the debug preset, seed 0."""
    from mamba_jax.config import get_config
    from mamba_jax.logging import read_metrics
    from mamba_jax.runner import run

    config = get_config("debug")
    with tempfile.TemporaryDirectory() as logdir:
        out = run(config, logdir, seed=0, num_seeds=1, steps=400, eval_every=200, print_fn=lambda s: None)
        rows = [{k: v for k, v in row.items() if k != "wall_seconds"} for row in read_metrics(logdir)]
    return {"rows": rows, "test": out["test"], "params_sha256": _param_digest(out["state"].agent.params)}


def point_robot_cpu_update() -> dict:
    """Metrics and new-parameter digest of one point_robot_cpu update on a fixed random batch."""
    import jax
    import jax.numpy as jnp

    import envs
    from mamba_jax import agent
    from mamba_jax.config import get_config

    config = get_config("point_robot_cpu")
    env, env_params = envs.make(config.env, num_episodes=config.protocol.num_episodes, episode_length=config.protocol.episode_length)
    state = agent.init(jax.random.PRNGKey(0), config, env.observation_space(env_params), env.action_space(env_params))
    B, S = config.protocol.batch_size, config.meta_length + 1
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    obs_dim = env.observation_space(env_params).spaces["obs"].shape[0]
    batch = {
        "obs": {
            "obs": jax.random.normal(k[0], (B, S, obs_dim)),
            "reward": jax.random.uniform(k[1], (B, S)),
            "time": jnp.broadcast_to(jnp.linspace(0.0, 1.0, S), (B, S)),
        },
        "action": jax.random.uniform(k[2], (B, S, 2), minval=-1.0, maxval=1.0),
        "is_first": jnp.zeros((B, S), bool).at[:, 0].set(True),
        "is_terminal": jnp.zeros((B, S), bool),
    }
    new_state, metrics = jax.jit(agent.update)(state, batch, k[3])
    return {"metrics": {k: float(v) for k, v in sorted(metrics.items())},
            "params_sha256": _param_digest(new_state.params)}


def fingerprint() -> dict:
    return {"debug_run": debug_run(), "point_robot_cpu_update": point_robot_cpu_update()}


def differences(recorded, current, path="") -> list[str]:
    """Every leaf path whose value differs (exactly) between two JSON-like trees."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(recorded) | set(current)):
            if k not in recorded or k not in current:
                out.append(f"{path}/{k}: only in {'recorded' if k in recorded else 'current'}")
            else:
                out += differences(recorded[k], current[k], f"{path}/{k}")
        return out
    if isinstance(recorded, list) and isinstance(current, list) and len(recorded) == len(current):
        return [d for i, (a, b) in enumerate(zip(recorded, current)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if recorded == current else [f"{path}: recorded {recorded!r}, now {current!r}"]


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: records (--out) and / or checks (--compare) the fingerprint."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    fv = flag_values
    if not (fv.out or fv.compare):
        raise app.UsageError("give --out=PATH to record, --compare=PATH to check, or both")
    current = fingerprint()
    if fv.out:
        with open(fv.out, "w") as f:
            json.dump(current, f, indent=1)
        print(f"wrote {fv.out}")
    if fv.compare:
        with open(fv.compare) as f:
            recorded = json.load(f)
        diffs = differences(recorded, current)
        if diffs:
            print(f"{len(diffs)} number(s) differ from {fv.compare}:")
            print("\n".join(diffs[:50]))
            sys.exit(1)
        n = len(current["debug_run"]["rows"])
        print(f"identical to {fv.compare}: {n} debug metrics rows, final test, both parameter digests")


if __name__ == "__main__":
    define_flags()
    app.run(main)
