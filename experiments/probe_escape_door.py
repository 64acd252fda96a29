"""Escape room, diagnosis round 2: after episode 1 found the door, does the world model still know it?

    python -m experiments.probe_escape_door LOGDIR [TASKS]

Restores the run's last checkpoint and, per seed, runs the agent (deterministic, as the evaluation
does) on TASKS fresh tasks (default 1000) for its whole meta-episode of two episodes. At the start of
each episode (the posterior after its first observation) it imagines, with the world model's prior,
three scripted open-loop paths for the rest of that episode and sums the predicted reward:

* door:  walk to 0.9 R at the door's angle, then radially out through the door (the real return of this
         path is also computed, with the env's own `move`);
* wrong: the same path at another possible door angle (theta +- pi/2, inside [0, pi]): blocked, real 0;
* actor: the actor's own imagined roll-out (its mode, as it acts).

Grouped by whether episode 1 and episode 2 left the room, it prints the mean of each. A model that
knows the door in episode 2 predicts the door path's real return there and about 0 for the wrong path;
in episode 1 (nothing seen yet) both should be the prior's small expectation. If the model knows the
door in the tasks where episode 2 fails, the actor loses it; if it does not, the world model does.
Writes LOGDIR/probe_escape_door.json.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs import escape_room
from mamba_jax import agent as agent_lib
from mamba_jax import dists, runner
from mamba_jax.checkpoint import Checkpointer
from mamba_jax.config import Config
from mamba_jax.rssm import feature
from mamba_jax.trainer import compile_run


def scripted_path(start, angle, door, params, steps: int):
    """(actions [steps, 2], real rewards [steps]) of "walk to 0.9 R at `angle`, then radially out"
    from `start` [2] in the room whose door is at `door` (speed at most step_size per step)."""
    u = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
    inner = 0.9 * params.wall_radius * u

    def step(carry, _):
        pos, reached = carry
        d = (inner - pos) / params.step_size
        towards = d / jnp.maximum(1.0, jnp.linalg.norm(d))
        action = jnp.where(reached, u, towards)
        new = escape_room.move(pos, action, door, params)
        reward = (jnp.dot(new, new) > params.wall_radius**2).astype(jnp.float32)
        return (new, reached | (jnp.linalg.norm(new - inner) < 1e-4)), (action, reward)

    _, (actions, rewards) = jax.lax.scan(step, (start, jnp.bool_(False)), None, length=steps)
    return actions, rewards


def imagined_return(agent, start: dict, actions, key):
    """[n] summed predicted reward of open-loop `actions` [steps, n, 2] from latent states `start` [n]."""
    wm, c = agent.world_model, agent.config
    bins = dists.bins(c.nets.bins, c.nets.bin_low, c.nets.bin_high)

    def step(state, xs):
        action, k = xs
        nxt = wm.img_step(agent.params["wm"], state, action, k)
        return nxt, wm.reward_mean(agent.params["wm"], feature(nxt), bins)

    _, rewards = jax.lax.scan(step, start, (actions, jax.random.split(key, actions.shape[0])))
    return rewards.sum(0)


def actor_return(agent, start: dict, steps: int, key):
    """[n] summed predicted reward of the actor's own imagined roll-out (its mode) from `start` [n]."""
    wm, c = agent.world_model, agent.config
    bins = dists.bins(c.nets.bins, c.nets.bin_low, c.nets.bin_high)

    def step(state, k):
        action = agent.behavior.mode(agent.params["actor"], feature(state))
        nxt = wm.img_step(agent.params["wm"], state, action, k)
        return nxt, wm.reward_mean(agent.params["wm"], feature(nxt), bins)

    _, rewards = jax.lax.scan(step, start, jax.random.split(key, steps))
    return rewards.sum(0)


def probe_seed(agent, env, env_params, reset_keys, key):
    """Per task: the two episodes' returns and, at each episode's start, the three imagined returns
    and the door path's real return (dict of [n] or [n, 2] arrays)."""
    n, length = reset_keys.shape[0], env_params.episode_length
    inner = env_params.env_params
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)
    carry = agent_lib.initial_carry(agent, n)

    def step(c, xs):
        carry, obs, env_state = c
        t, k = xs
        k_pol, k_env = jax.random.split(k)
        action, carry = agent_lib.policy(agent, carry, {**obs, "is_first": jnp.full((n,), t == 0)}, k_pol,
                                         deterministic=True)
        out = (carry["state"], env_state.env_state.pos)
        obs, env_state, reward, _, _ = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))(
            jax.random.split(k_env, n), env_state, action, env_params)
        return (carry, obs, env_state), (out, reward)

    steps = 2 * length
    (_, _, last), ((states, positions), rewards) = jax.lax.scan(
        step, (carry, obs, env_state), (jnp.arange(steps), jax.random.split(key, steps)))
    door = last.task
    wrong = jnp.where(door < jnp.pi / 2, door + jnp.pi / 2, door - jnp.pi / 2)
    result = {"returns": rewards.reshape(2, length, n).sum(1).T}
    for e in range(2):
        start = jax.tree.map(lambda x: x[e * length], states)
        path = jax.vmap(scripted_path, in_axes=(0, 0, 0, None, None), out_axes=1)
        door_actions, door_rewards = path(positions[e * length], door, door, inner, length)
        wrong_actions, _ = path(positions[e * length], wrong, door, inner, length)
        k = jax.random.fold_in(key, e)
        result[f"ep{e + 1}_door_real"] = door_rewards.sum(0)
        result[f"ep{e + 1}_door_imagined"] = imagined_return(agent, start, door_actions, k)
        result[f"ep{e + 1}_wrong_imagined"] = imagined_return(agent, start, wrong_actions, k)
        result[f"ep{e + 1}_actor_imagined"] = actor_return(agent, start, length, k)
    return result


def main(logdir: str, tasks: int = 1000) -> dict:
    info = json.load(open(f"{logdir}/run.json"))
    config = Config.from_dict(info["config"])
    env, env_params = envs.make(config.env, num_episodes=config.protocol.num_episodes,
                                episode_length=config.protocol.episode_length)
    if config.env != "escape_room" or env_params.num_episodes != 2:
        raise ValueError(f"{logdir}: this probe is for escape_room with 2 episodes (got {config.env})")
    fns = compile_run(config, env, env_params, info["num_seeds"], info["chunk_iterations"])
    keys = jax.device_put(runner.seed_keys(info["seed"], info["num_seeds"]), fns.sharding)
    state, meta = runner.restore_checkpoint(fns, keys, Checkpointer(f"{logdir}/checkpoints"))
    state = runner.to_host(state)
    report = {"env_steps": int(meta["env_steps"]), "tasks": tasks, "seeds": []}
    probe = jax.jit(probe_seed, static_argnums=(1,))
    for s in range(info["num_seeds"]):
        agent = jax.tree.map(lambda x: x[s], state.agent)
        r = jax.tree.map(np.asarray, probe(agent, env, env_params, jax.random.split(jax.random.PRNGKey(100 + s), tasks),
                                           jax.random.PRNGKey(200 + s)))
        left1, left2 = r["returns"][:, 0] > 0, r["returns"][:, 1] > 0
        groups = {"ep1 left, ep2 left": left1 & left2, "ep1 left, ep2 did not": left1 & ~left2,
                  "ep1 did not": ~left1}
        rows = {}
        for name, mask in groups.items():
            rows[name] = {"tasks": int(mask.sum()), "ep2_return": float(r["returns"][mask, 1].mean())}
            for k in r:
                if k != "returns":
                    rows[name][k] = float(r[k][mask].mean())
        report["seeds"].append(rows)
        print(f"seed {s}")
        for name, row in rows.items():
            print(f"  {name:22s} " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in row.items()))
    with open(f"{logdir}/probe_escape_door.json", "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
