"""Where does a trained agent's world model expect reward? (point-robot family)

    python -m experiments.probe_reward_model --logdir=runs/quickstart --angles=13 --samples=512

From the posterior of a meta-episode's first observation (nothing observed yet, so the model's
belief over the goal should be the task prior), imagines `samples` latent roll-outs of a
scripted path: walk straight from the origin to the point at angle theta on the goal circle,
then stay there (zero action) for `stay` steps. For each theta it reports the world model's mean
predicted reward per step while staying, next to the true expected reward at that point under
the task distribution (the mean over goal angles alpha ~ U(goal_angle_min, goal_angle_max) of
the env's reward at that point, computed by quadrature). It prints a table per seed and writes
LOGDIR/probe_reward_model.json.

A calibrated model matches the truth at every angle. A model whose replay rarely reached some
part of the circle predicts about 0 there, and the actor, which only optimises imagined reward,
then has no reason to search there: that is how docs/learning_checks.md ("Third round") found
why point_robot_cpu plateaus.
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mamba_jax.hugepages import reexec_with_hugepage_malloc

POINT_ENVS = ("point_robot", "point_robot_wind")


def true_expected_reward(inner_params, theta: float, points: int = 200_001) -> float:
    """E over alpha ~ U(goal_angle_min, goal_angle_max) of the reward of standing at angle theta
    on the goal circle (d = distance to the goal at alpha; r = 1 - d if d <= disk radius else 0)."""
    p = inner_params
    alpha = np.linspace(p.goal_angle_min, p.goal_angle_max, points)
    d = 2.0 * p.goal_circle_radius * np.abs(np.sin((theta - alpha) / 2.0))
    r = np.where(d <= p.goal_disk_radius, 1.0 - d, 0.0)
    return float(np.trapezoid(r, alpha) / (p.goal_angle_max - p.goal_angle_min))


def predicted_rewards(agent_state, env, env_params, thetas, key, samples: int = 512, stay: int = 25):
    """[len(thetas)] mean predicted reward per step while staying at each angle (see the module doc).

    agent_state: one seed's AgentState; env, env_params: the run's (meta-wrapped) point-robot env.
    """
    from mamba_jax import agent as agent_lib
    from mamba_jax import dists
    from mamba_jax.rssm import RSSM, feature

    inner = env_params.env_params
    wm, config = agent_state.world_model, agent_state.config
    bins = dists.bins(config.bins, config.bin_low, config.bin_high)
    walk = int(round(inner.goal_circle_radius / inner.step_size))  # steps at full speed to the circle
    if walk < 1:
        raise ValueError(f"goal_circle_radius / step_size = {walk}: need at least one step to the circle")
    k_reset, k_post, k_imag = jax.random.split(key, 3)
    obs, _ = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, samples), env_params)
    carry = agent_lib.initial_carry(agent_state, samples)
    _, carry = agent_lib.policy(agent_state, carry, {**obs, "is_first": jnp.ones((samples,), bool)}, k_post,
                                deterministic=True)
    start = carry["state"]

    def one_angle(theta):
        direction = jnp.stack([jnp.cos(theta), jnp.sin(theta)])

        def step(state, xs):
            t, k = xs
            action = jnp.broadcast_to(jnp.where(t < walk, 1.0, 0.0) * direction, (samples, 2))
            nxt = wm.rssm.apply(agent_state.params["wm"]["rssm"], state, action, k, method=RSSM.img_step)
            return nxt, wm.reward_mean(agent_state.params["wm"], feature(nxt), bins)

        length = walk + stay - 1
        _, rewards = jax.lax.scan(step, start, (jnp.arange(length), jax.random.split(k_imag, length)))
        return rewards[walk - 1 :].mean()  # the arrival step and the steps spent standing there

    return jax.jit(jax.vmap(one_angle))(jnp.asarray(thetas, jnp.float32))


def load_run(logdir: str, step: int | None = None):
    """(config, env, env_params, seed-stacked TrainState, env step) of a training logdir's checkpoint."""
    import envs
    from mamba_jax import checkpoint as ckpt_lib
    from mamba_jax import train
    from mamba_jax.config import Config

    with open(os.path.join(logdir, "run.json")) as f:
        info = json.load(f)
    config = Config(**info["config"]).validate()
    env, env_params = envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    fns = train.compile_run(config, env, env_params, info["num_seeds"], info["chunk_iterations"])
    keys = jax.device_put(train.seed_keys(info["seed"], info["num_seeds"]), fns.sharding)
    checkpointer = ckpt_lib.Checkpointer(os.path.join(logdir, "checkpoints"))
    state, meta = train.restore_checkpoint(fns, keys, checkpointer, step)
    return config, env, env_params, state, int(meta["env_steps"])


def probe(logdir: str, angles: int = 13, samples: int = 512, stay: int = 25, step: int | None = None,
          seed: int = 0) -> dict:
    """Runs the probe on every seed of the run; returns (and writes) the result dict."""
    config, env, env_params, state, env_steps = load_run(logdir, step)
    if config.env not in POINT_ENVS:
        raise ValueError(f"the probe's scripted path needs a point-robot env ({', '.join(POINT_ENVS)}); "
                         f"this run trained on {config.env!r}")
    inner = env_params.env_params
    margin = 0.5 * (inner.goal_angle_max - inner.goal_angle_min) / angles
    thetas = np.linspace(inner.goal_angle_min + margin, inner.goal_angle_max - margin, angles)
    truth = [true_expected_reward(inner, t) for t in thetas]
    key = jax.random.PRNGKey(seed)
    per_seed_fn = lambda agent: predicted_rewards(agent, env, env_params, thetas, key, samples, stay)  # noqa: E731
    preds = jax.jit(jax.vmap(per_seed_fn))(state.agent)  # [seeds, angles], one compilation for all seeds
    per_seed = np.asarray(preds, np.float64).tolist()
    result = {"logdir": logdir, "env_steps": env_steps, "samples": samples, "stay_steps": stay,
              "theta": thetas.tolist(), "true_expected_reward": truth, "predicted_reward_per_seed": per_seed}
    with open(os.path.join(logdir, "probe_reward_model.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def format_result(result: dict) -> str:
    lines = [f"predicted reward per step while standing on the goal circle, {result['env_steps']} env steps "
             f"({result['samples']} imagined roll-outs from the first observation)",
             "theta  " + " ".join(f"{t:6.2f}" for t in result["theta"]),
             "truth  " + " ".join(f"{v:6.3f}" for v in result["true_expected_reward"])]
    for i, pred in enumerate(result["predicted_reward_per_seed"]):
        lines.append(f"seed {i} " + " ".join(f"{v:6.3f}" for v in pred))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", required=True, help="a training logdir with run.json and checkpoints/")
    parser.add_argument("--angles", type=int, default=13, help="number of angles on the goal circle")
    parser.add_argument("--samples", type=int, default=512, help="imagined roll-outs per angle")
    parser.add_argument("--stay", type=int, default=25, help="steps spent standing at the point")
    parser.add_argument("--step", type=int, default=None, help="checkpoint env step (default: the latest)")
    args = parser.parse_args(argv)
    for name in ("angles", "samples", "stay"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: allowed: an integer >= 1")
    result = probe(args.logdir, args.angles, args.samples, args.stay, args.step)
    print(format_result(result))
    print(f"wrote {os.path.join(args.logdir, 'probe_reward_model.json')}")


if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # before any work: faster updates on XLA:CPU (see mamba_jax/hugepages.py)
    main()
