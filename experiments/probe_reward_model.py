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

With `--visit=THETA_A[,THETA_A2,...]` it also asks whether the model *updates on evidence*: a real meta-episode
(goal far from A) walks to the point at angle THETA_A on the circle and stands there for
`--visit_stay` steps, observing no reward; from that posterior it imagines walking on to each
angle B and standing there. The truth is the Bayes posterior's expected reward at B: the goals whose
disk the walk touched are ruled out and the rest renormalised (0 at A itself, and above the prior
elsewhere). A model that keeps predicting reward at A after seeing none there explains an agent that
waits at a favourite arc; one that predicts it elsewhere leaves the fault with the actor.

The split (`--split=0.45`, default) asks how the model reaches its mean: a real roll-out either
stands in the goal disk (about 0.9 reward per step) or not (0), so the true split puts the fraction
of goals whose disk covers the point (0.128 in the middle of the arc) above 0.45 and the rest at 0.
A model that imagines discoveries at the right rate matches that; one whose roll-outs sit in between
(0.2 per step, never resolving whether the goal is there) promises reward for waiting.

The same split per standing step ("above_by_step") shows when the imagined discoveries happen: in
the real task the robot is in the goal disk from its arrival on or never, so the fraction above the
split is the same at every step. A model whose fraction grows with the steps spent standing
imagines goals that appear while the robot waits (docs/learning_checks.md, tenth round).

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
    alpha, d = _goal_distances(p, theta, points)
    r = np.where(d <= p.goal_disk_radius, 1.0 - d, 0.0)
    return float(np.trapezoid(r, alpha) / (p.goal_angle_max - p.goal_angle_min))


def _goal_distances(p, theta: float, points: int):
    """(alpha [points], the distance from the point at angle theta on the goal circle to the goal at
    each alpha), alpha spanning the goal angles."""
    alpha = np.linspace(p.goal_angle_min, p.goal_angle_max, points)
    return alpha, 2.0 * p.goal_circle_radius * np.abs(np.sin((theta - alpha) / 2.0))


def goto_actions(start, target, steps: int, step_size: float, bound: float = 1.0):
    """The point robot's scripted "go to `target`, then stand" controller, without wind.

    Returns (actions [steps, 2], positions after each action [steps, 2], arrival index: the first
    step whose position is the target). Each action is clip((target - pos) / step_size, -bound,
    bound), the env's s' = s + step_size * clipped action, so the robot lands exactly on the target.
    """
    pos = np.asarray(start, np.float64).copy()
    target = np.asarray(target, np.float64)
    actions, positions, arrival = [], [], None
    for t in range(steps):
        a = np.clip((target - pos) / step_size, -bound, bound)
        pos = pos + step_size * a
        actions.append(a)
        positions.append(pos.copy())
        if arrival is None and np.allclose(pos, target, atol=1e-9):
            arrival = t
    if arrival is None:
        raise ValueError(f"{steps} steps do not reach {target.tolist()} from {np.asarray(start).tolist()}")
    return np.asarray(actions, np.float32), np.asarray(positions), arrival


def circle_point(inner_params, theta: float) -> np.ndarray:
    r = inner_params.goal_circle_radius
    return np.array([r * np.cos(theta), r * np.sin(theta)])


def true_expected_reward_after_visit(inner_params, theta: float, visited, points: int = 200_001) -> float:
    """E[reward of standing at angle theta | no reward was observed at the `visited` positions [n, 2]]:
    the goals alpha ~ U(goal_angle_min, goal_angle_max) whose disk contains a visited position are
    ruled out (their reward there would have been 1 - d >= 1 - disk radius > 0), the rest renormalised."""
    p = inner_params
    alpha = np.linspace(p.goal_angle_min, p.goal_angle_max, points)
    goals = p.goal_circle_radius * np.stack([np.cos(alpha), np.sin(alpha)], -1)  # [points, 2]
    visited = np.asarray(visited, np.float64).reshape(-1, 2)
    seen = (np.linalg.norm(goals[:, None, :] - visited[None, :, :], axis=-1) <= p.goal_disk_radius).any(-1)
    if seen.all():
        raise ValueError("the visited positions rule out every goal")
    d = np.linalg.norm(circle_point(p, theta)[None, :] - goals, axis=-1)
    r = np.where(d <= p.goal_disk_radius, 1.0 - d, 0.0)
    keep = (~seen).astype(np.float64)
    return float(np.trapezoid(r * keep, alpha) / np.trapezoid(keep, alpha))


def imagined_rewards(agent_state, start: dict, actions, key):
    """[L, N] reward the world model predicts at each step of the open-loop action sequence
    `actions` [L, 2] (the same for all N start states), imagined from `start` (latent states [N])."""
    from mamba_jax import dists
    from mamba_jax.rssm import feature

    wm, config = agent_state.world_model, agent_state.config
    bins = dists.bins(config.bins, config.bin_low, config.bin_high)
    n = start["deter"].shape[0]

    def step(state, xs):
        action, k = xs
        nxt = wm.img_step(agent_state.params["wm"], state, jnp.broadcast_to(action, (n, 2)), k)
        return nxt, wm.reward_mean(agent_state.params["wm"], feature(nxt), bins)

    _, rewards = jax.lax.scan(step, start, (actions, jax.random.split(key, actions.shape[0])))
    return rewards


def predicted_rewards(agent_state, env, env_params, thetas, key, samples: int = 512, stay: int = 25):
    """[len(thetas)] mean predicted reward per step while staying at each angle (see the module doc).

    agent_state: one seed's AgentState; env, env_params: the run's (meta-wrapped) point-robot env.
    """
    return rollout_rewards(agent_state, env, env_params, thetas, key, samples, stay).mean(axis=1)


def rollout_rewards(agent_state, env, env_params, thetas, key, samples: int = 512, stay: int = 25):
    """[len(thetas), samples]: each imagined roll-out's mean predicted reward per step while staying
    at each angle (`predicted_rewards` is its mean over the roll-outs)."""
    return rollout_step_rewards(agent_state, env, env_params, thetas, key, samples, stay).mean(axis=1)


def rollout_step_rewards(agent_state, env, env_params, thetas, key, samples: int = 512, stay: int = 25):
    """[len(thetas), stay, samples]: the reward each imagined roll-out predicts at each step spent at
    each angle (the arrival step first)."""
    from mamba_jax import agent as agent_lib

    inner = env_params.env_params
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
        length = walk + stay - 1
        actions = jnp.where(jnp.arange(length)[:, None] < walk, 1.0, 0.0) * direction
        rewards = imagined_rewards(agent_state, start, actions, k_imag)
        return rewards[walk - 1 :]  # the arrival step and the steps spent standing there

    return jax.jit(jax.vmap(one_angle))(jnp.asarray(thetas, jnp.float32))


def split_rollouts(per_rollout, threshold: float):
    """(fraction of roll-outs whose mean reward per step is above `threshold`, the mean reward of
    those, the mean reward of the others), each [..., angles], from `per_rollout` [..., angles, N].
    A conditional mean is 0 where its group is empty."""
    above = per_rollout > threshold
    count = above.sum(-1)
    n = per_rollout.shape[-1]
    hi = np.where(count > 0, np.where(above, per_rollout, 0.0).sum(-1) / np.maximum(count, 1), 0.0)
    lo = np.where(count < n, np.where(above, 0.0, per_rollout).sum(-1) / np.maximum(n - count, 1), 0.0)
    return count / n, hi, lo


def true_goal_probability(inner_params, theta: float, points: int = 200_001) -> float:
    """P over alpha ~ U(goal_angle_min, goal_angle_max) that the point at angle theta on the goal
    circle lies in the goal disk: the fraction of real roll-outs that stand in the goal there."""
    p = inner_params
    alpha, d = _goal_distances(p, theta, points)
    return float(np.trapezoid((d <= p.goal_disk_radius).astype(float), alpha) / (p.goal_angle_max - p.goal_angle_min))


def visit_plan(inner_params, visit_theta: float, visit_stay: int, thetas, stay: int):
    """The scripted paths of the --visit probe (numpy): the visit (origin -> A, then `visit_stay` steps
    standing) and, per angle B, the walk A -> B then `stay` steps standing, padded to one length.

    Returns a dict: visit_actions [n, 2], visit_positions [n, 2], onward_actions [len(thetas), m, 2],
    onward_mask [len(thetas), m] (1 on the arrival step at B and the `stay` - 1 steps after it).
    """
    p = inner_params
    if not p.goal_angle_min <= visit_theta <= p.goal_angle_max:
        raise ValueError(f"--visit={visit_theta}: allowed: an angle in [{p.goal_angle_min}, {p.goal_angle_max}]")
    if p.wind_std != 0:
        raise ValueError(f"--visit scripts exact paths: it needs wind_std == 0 (this env has {p.wind_std})")
    reach = int(np.ceil(2.0 * p.goal_circle_radius / (p.step_size * p.action_bound))) + 1  # any two circle points
    a_visit, pos_visit, arrive = goto_actions(np.zeros(2), circle_point(p, visit_theta), reach, p.step_size,
                                              p.action_bound)
    a_visit = np.concatenate([a_visit[: arrive + 1], np.zeros((visit_stay, 2), np.float32)])
    pos_visit = np.concatenate([pos_visit[: arrive + 1], np.repeat(pos_visit[arrive : arrive + 1], visit_stay, 0)])
    onward, arrivals = [], []
    for theta in thetas:
        acts, _, arrive_b = goto_actions(pos_visit[-1], circle_point(p, theta), reach, p.step_size, p.action_bound)
        onward.append(acts)
        arrivals.append(arrive_b)
    length = reach + stay
    actions = np.zeros((len(thetas), length, 2), np.float32)
    mask = np.zeros((len(thetas), length), np.float32)
    for i, (acts, arrive_b) in enumerate(zip(onward, arrivals)):
        actions[i, :reach] = acts  # the controller's actions are 0 once it stands on the target
        mask[i, arrive_b : arrive_b + stay] = 1.0
    return {"visit_actions": a_visit, "visit_positions": pos_visit, "onward_actions": actions, "onward_mask": mask}


def predicted_rewards_after_visit(agent_state, env, env_params, plan: dict, far_angle: float, key, samples: int = 512):
    """([len(thetas)] mean predicted reward per step while standing at each angle B after the visit,
    [samples] reward observed during the visit): see the module doc and `visit_plan`.

    The visit is a real meta-episode of `env` whose goal is at `far_angle` (outside the visited disks,
    so the reward observed is 0), filtered by the world model's posterior; the onward walks are imagined.
    """
    from mamba_jax import agent as agent_lib

    inner = env_params.env_params
    check_visit_fits(plan, env_params)
    fixed = env_params.replace(env_params=inner.replace(goal_angle_min=far_angle, goal_angle_max=far_angle))
    k_reset, k_post, k_imag = jax.random.split(key, 3)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, samples), fixed)
    carry = agent_lib.initial_carry(agent_state, samples)

    def observe(c, xs):
        carry, obs, env_state, first = c
        action, k = xs
        k_pol, k_env = jax.random.split(k)
        _, carry = agent_lib.policy(agent_state, carry, {**obs, "is_first": jnp.full((samples,), first)}, k_pol,
                                    deterministic=True)
        batch_action = jnp.broadcast_to(action, (samples, 2))
        carry = {**carry, "action": agent_lib.action_to_model(agent_state, batch_action)}
        obs, env_state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(k_env, samples), env_state, batch_action, fixed)
        return (carry, obs, env_state, jnp.bool_(False)), reward

    visit = jnp.asarray(plan["visit_actions"])
    (carry, obs, _, _), rewards = jax.lax.scan(
        observe, (carry, obs, env_state, jnp.bool_(True)), (visit, jax.random.split(k_post, visit.shape[0])))
    _, carry = agent_lib.policy(agent_state, carry, {**obs, "is_first": jnp.zeros((samples,), bool)}, k_post,
                                deterministic=True)  # the posterior after the last observation
    start = carry["state"]

    def one_angle(actions, mask):
        r = imagined_rewards(agent_state, start, actions, k_imag).mean(-1)
        return (r * mask).sum() / mask.sum()

    preds = jax.vmap(one_angle)(jnp.asarray(plan["onward_actions"]), jnp.asarray(plan["onward_mask"]))
    return preds, rewards.sum(0)


def check_visit_fits(plan: dict, env_params) -> None:
    """The visit must stay inside the meta-episode's first episode (the env resets the robot after it)."""
    steps = plan["visit_actions"].shape[0]
    if steps >= env_params.episode_length:
        raise ValueError(f"the visit takes {steps} steps; it must end inside the first episode "
                         f"({env_params.episode_length} steps): lower --visit_stay")


def far_goal_angle(inner_params, visited) -> float:
    """The goal angle in [goal_angle_min, goal_angle_max] farthest from the visited positions."""
    p = inner_params
    alpha = np.linspace(p.goal_angle_min, p.goal_angle_max, 2001)
    goals = p.goal_circle_radius * np.stack([np.cos(alpha), np.sin(alpha)], -1)
    dist = np.linalg.norm(goals[:, None, :] - np.asarray(visited)[None], axis=-1).min(-1)
    return float(alpha[np.argmax(dist)])


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
          seed: int = 0, visits=(), visit_stay: int = 20, split: float = 0.45) -> dict:
    """Runs the probe on every seed of the run; returns (and writes) the result dict. With `visits`
    (angles), the result also holds one after-visit probe per angle, a list under "after_visit"
    (module doc). "split" splits the roll-outs at `split` reward per step (module doc)."""
    import envs

    with open(os.path.join(logdir, "run.json")) as f:
        info = json.load(f)
    env_name = info["config"]["env"]
    if env_name not in POINT_ENVS:  # checked before the run's functions are compiled
        raise ValueError(f"the probe's scripted path needs a point-robot env ({', '.join(POINT_ENVS)}); "
                         f"this run trained on {env_name!r}")
    if visits:  # a bad visit raises here
        _, meta_params = envs.make(env_name, num_episodes=info["config"]["num_episodes"],
                                   episode_length=info["config"]["episode_length"])
        for visit in visits:
            check_visit_fits(visit_plan(meta_params.env_params, visit, visit_stay, [], stay), meta_params)
    config, env, env_params, state, env_steps = load_run(logdir, step)
    inner = env_params.env_params
    margin = 0.5 * (inner.goal_angle_max - inner.goal_angle_min) / angles
    thetas = np.linspace(inner.goal_angle_min + margin, inner.goal_angle_max - margin, angles)
    truth = [true_expected_reward(inner, t) for t in thetas]
    key = jax.random.PRNGKey(seed)
    per_seed_fn = lambda agent: rollout_step_rewards(agent, env, env_params, thetas, key, samples, stay)  # noqa: E731
    by_step = np.asarray(jax.jit(jax.vmap(per_seed_fn))(state.agent), np.float64)  # [seeds, angles, stay, samples]
    rollouts = by_step.mean(-2)  # [seeds, angles, samples]
    per_seed = rollouts.mean(-1).tolist()
    fraction, hi, lo = split_rollouts(rollouts, split)
    above_by_step = (by_step > split).mean(-1).mean(1)  # [seeds, stay], mean over the angles
    goal_p = [true_goal_probability(inner, t) for t in thetas]
    result = {"logdir": logdir, "env_steps": env_steps, "samples": samples, "stay_steps": stay,
              "theta": thetas.tolist(), "true_expected_reward": truth, "predicted_reward_per_seed": per_seed,
              "split": {"threshold": split, "true_fraction_in_goal": goal_p,
                        "true_reward_in_goal": [t / p if p > 0 else 0.0 for t, p in zip(truth, goal_p)],
                        "fraction_above_per_seed": fraction.tolist(), "reward_above_per_seed": hi.tolist(),
                        "reward_below_per_seed": lo.tolist(),
                        "true_fraction_in_goal_mean": float(np.mean(goal_p)),
                        "above_by_step_per_seed": above_by_step.tolist()}}
    if visits:
        result["after_visit"] = [probe_after_visit(env, env_params, state.agent, thetas, key, samples, stay, visit,
                                                   visit_stay) for visit in visits]
    with open(os.path.join(logdir, "probe_reward_model.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def probe_after_visit(env, env_params, agents, thetas, key, samples: int, stay: int, visit: float,
                      visit_stay: int) -> dict:
    """The --visit part of `probe` for seed-stacked `agents`: truth and per-seed predictions."""
    inner = env_params.env_params
    plan = visit_plan(inner, visit, visit_stay, thetas, stay)
    far = far_goal_angle(inner, plan["visit_positions"])
    truth = [true_expected_reward_after_visit(inner, t, plan["visit_positions"]) for t in thetas]
    fn = lambda agent: predicted_rewards_after_visit(agent, env, env_params, plan, far, key, samples)  # noqa: E731
    preds, observed = jax.jit(jax.vmap(fn))(agents)
    return {"visit_theta": visit, "visit_stay_steps": visit_stay, "goal_angle_of_the_visit": far,
            "observed_reward_max": float(np.max(observed)), "true_expected_reward": truth,
            "predicted_reward_per_seed": np.asarray(preds, np.float64).tolist()}


def format_result(result: dict) -> str:
    lines = [f"predicted reward per step while standing on the goal circle, {result['env_steps']} env steps "
             f"({result['samples']} imagined roll-outs from the first observation)",
             "theta  " + " ".join(f"{t:6.2f}" for t in result["theta"]),
             "truth  " + " ".join(f"{v:6.3f}" for v in result["true_expected_reward"])]
    for i, pred in enumerate(result["predicted_reward_per_seed"]):
        lines.append(f"seed {i} " + " ".join(f"{v:6.3f}" for v in pred))
    split = result.get("split")
    if split is not None:
        lines += [f"roll-outs whose mean reward per step is above {split['threshold']:g} (a real one stands in the goal "
                  "disk, about 0.9 per step, or outside it, 0): their fraction, their mean reward, the others' mean "
                  "reward",
                  "truth  " + " ".join(f"{v:6.3f}" for v in split["true_fraction_in_goal"]) + "  (fraction in the goal)"]
        for i in range(len(split["fraction_above_per_seed"])):
            for name in ("fraction_above", "reward_above", "reward_below"):
                row = split[f"{name}_per_seed"][i]
                lines.append(f"seed {i} " + " ".join(f"{v:6.3f}" for v in row) + f"  ({name.replace('_', ' ')})")
        by_step = split.get("above_by_step_per_seed")
        if by_step is not None:
            steps = _shown_steps(len(by_step[0]))
            lines += [f"fraction of the roll-outs above {split['threshold']:g} at standing step "
                      + ", ".join(str(k + 1) for k in steps)
                      + f" (mean over the angles; truth {split['true_fraction_in_goal_mean']:.3f} at every step)"]
            lines += [f"seed {i} " + " ".join(f"{row[k]:6.3f}" for k in steps) for i, row in enumerate(by_step)]
    for after in result.get("after_visit", []):
        lines += [f"after walking to theta = {after['visit_theta']:.2f} and standing there {after['visit_stay_steps']} "
                  f"steps with no reward (largest reward observed: {after['observed_reward_max']:.3f}), then walking "
                  "on to theta:",
                  "truth  " + " ".join(f"{v:6.3f}" for v in after["true_expected_reward"])]
        for i, pred in enumerate(after["predicted_reward_per_seed"]):
            lines.append(f"seed {i} " + " ".join(f"{v:6.3f}" for v in pred))
    return "\n".join(lines)


def _shown_steps(stay: int) -> list[int]:
    """Indices of the standing steps the table prints: the first, every fifth, the last."""
    return sorted({0, stay - 1, *range(4, stay, 5)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", required=True, help="a training logdir with run.json and checkpoints/")
    parser.add_argument("--angles", type=int, default=13, help="number of angles on the goal circle")
    parser.add_argument("--samples", type=int, default=512, help="imagined roll-outs per angle")
    parser.add_argument("--stay", type=int, default=25, help="steps spent standing at the point")
    parser.add_argument("--step", type=int, default=None, help="checkpoint env step (default: the latest)")
    parser.add_argument("--visit", type=str, default="",
                        help="comma-separated angles (radians): also probe after a visit without reward to each "
                             "(module doc)")
    parser.add_argument("--split", type=float, default=0.45,
                        help="also split the roll-outs at this mean reward per step (module doc)")
    parser.add_argument("--visit_stay", type=int, default=20, help="steps spent standing at the visited point")
    args = parser.parse_args(argv)
    for name in ("angles", "samples", "stay", "visit_stay"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: allowed: an integer >= 1")
    try:
        visits = [float(v) for v in args.visit.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--visit={args.visit}: allowed: comma-separated angles in radians, e.g. 0.6,1.57")
    result = probe(args.logdir, args.angles, args.samples, args.stay, args.step, visits=visits,
                   visit_stay=args.visit_stay, split=args.split)
    print(format_result(result))
    print(f"wrote {os.path.join(args.logdir, 'probe_reward_model.json')}")


if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # before any work: faster updates on XLA:CPU (see mamba_jax/hugepages.py)
    main()
