"""The pure trainer: jittable chunks of training iterations of one seed, vmapped over seeds.

    trainer = make_train(config, env, env_params, chunk_iterations=10)
    state = trainer.init(key)                          # agent + prefilled replay + keys + counters
    state, summary = trainer.train_chunk(state)        # chunk_iterations iterations, on device
    stats = trainer.evaluate(state.agent, reset_keys, key)

    fns = compile_run(config, env, env_params, num_seeds=4, chunk_iterations=10)
    state = fns.init(keys)                             # keys [4, 2]: every leaf gains a seed axis
    state, summary = fns.train_chunk(state, np.int32(0))

One *iteration* (docs/algorithm.md, section 7): collect one meta-episode in each of
`config.protocol.num_envs` envs with the stochastic policy, insert them into replay (FIFO), set the
agent's env-step counter, then run U updates, each on a fresh batch (MAMBA: B whole meta-episodes from entry 0;
DreamerV3 baseline: B windows of `window_length` entries). U is static:

    U = max(1, floor(train_ratio * num_envs * T / N + 0.5))

(the spec's U = train_ratio * (env steps just collected) / N with the steps counted as
num_envs * T, rounded half up, at least 1; `Trainer.updates_per_iteration`; the realised
ratio is logged as `train/updates_per_step`). Env steps count real transitions, prefill
included (a meta-episode cut short by a terminal counts only its steps taken).

Here: TrainState, Trainer and `make_train` (the pure functions of one seed), `make_mesh`,
`data_constraint` and `over_seeds` (the ('seed', 'data') device mesh, sharding inside a seed, the
vmap over seeds), and `compile_run` (jit + vmap over seeds with NamedShardings: RunFunctions).
Evaluation, logging and checkpointing between chunks happen on the host: mamba_jax/runner.py.
See docs/training.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mamba_jax import replay as rb
from mamba_jax import rollout as ro
from mamba_jax.horizon import wm_horizon


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly (one seed; `compile_run` stacks seeds on axis 0).

    agent:      the AgentState (params, optimiser states, normaliser, counters; config static)
    replay:     the Replay of meta-episodes
    key:        PRNGKey [2] uint32 for collection and updates
    eval_key:   PRNGKey [2] uint32, fixed for the run: the evaluation tasks derive from it
    env_steps:  int32 [], real env transitions so far (prefill included)
    updates:    int32 [], gradient updates so far
    iterations: int32 [], collection rounds so far (prefill excluded)
    """

    agent: Any
    replay: rb.Replay
    key: jax.Array
    eval_key: jax.Array
    env_steps: jax.Array
    updates: jax.Array
    iterations: jax.Array


class Trainer(NamedTuple):
    """The jittable pure functions of one seed, and the static numbers they were built with."""

    init: Callable  # (key) -> TrainState
    train_chunk: Callable  # (TrainState, iterations done=None) -> (TrainState, summary dict of scalars)
    evaluate: Callable  # (agent_state, reset_keys [E, 2], key) -> stats (see evaluate.py)
    chunk_iterations: int
    updates_per_iteration: int  # U
    steps_per_iteration: int  # num_envs * T (an upper bound when envs can terminate)
    prefill_steps: int  # prefill * T (an upper bound when envs can terminate)


def updates_per_iteration(config) -> int:
    """U = max(1, round_half_up(train_ratio * num_envs * T / N))."""
    exact = config.protocol.train_ratio * config.protocol.num_envs * config.meta_length / config.protocol.num_episodes
    return max(1, int(math.floor(exact + 0.5)))


def _default_agent():
    from mamba_jax import agent  # the agent module of docs/api.md

    return agent


def data_constraint(mesh: Mesh | None):
    """A function that shards axis 0 of every leaf over the mesh's 'data' axis (where it divides).

    Used inside the per-seed functions; under `jax.vmap(..., spmd_axis_name='seed')` the seed axis
    is added in front. The identity without a mesh or with a data axis of size 1.
    """
    if mesh is None or mesh.shape.get("data", 1) == 1:
        return lambda tree: tree
    size = mesh.shape["data"]
    sharding = NamedSharding(mesh, P("data"))

    def constrain(tree):
        def leaf(x):
            if x.ndim == 0 or x.shape[0] % size:
                return x
            return jax.lax.with_sharding_constraint(x, sharding)

        return jax.tree.map(leaf, tree)

    return constrain


def make_train(config, env, env_params, chunk_iterations: int = 1, agent=None, mesh: Mesh | None = None) -> Trainer:
    """Builds the pure per-seed functions of a run (see the module docstring).

    Args:
        config: the validated Config (static: it sets every shape and loop length).
        env, env_params: `envs.make(config.env, num_episodes=N, episode_length=L)`.
        chunk_iterations: iterations per `train_chunk` call (static: the scan length).
        agent: the agent module (default `mamba_jax.agent`); anything with the docs/api.md
            functions init / initial_carry / policy / update.
        mesh: optional device mesh with a 'data' axis for data parallelism inside one seed
            (the collecting envs and the training batch are sharded over it).
    """
    agent = _default_agent() if agent is None else agent
    if (env_params.num_episodes, env_params.episode_length) != (config.protocol.num_episodes, config.protocol.episode_length):
        raise ValueError(
            f"env params have N x L = {env_params.num_episodes} x {env_params.episode_length} but the config "
            f"says {config.protocol.num_episodes} x {config.protocol.episode_length}; make the env with "
            "envs.make(config.env, num_episodes=config.protocol.num_episodes, episode_length=config.protocol.episode_length)"
        )
    if not isinstance(chunk_iterations, int) or chunk_iterations < 1:
        raise ValueError(f"chunk_iterations must be an integer >= 1, got {chunk_iterations!r}")
    T = config.meta_length
    num_envs = config.protocol.num_envs
    num_updates = updates_per_iteration(config)
    obs_space = env.observation_space(env_params)
    action_space = env.action_space(env_params)
    spec = ro.episode_spec(env, env_params)
    shard = data_constraint(mesh)

    def sample(replay, key):
        if config.mamba:
            batch = rb.sample_episodes(replay, key, config.protocol.batch_size)
        else:
            batch = rb.sample_windows(replay, key, config.protocol.batch_size, config.protocol.window_length)
        return shard(batch)

    def collect(agent_state, key, deterministic: bool, reset_keys, record: bool = True):
        reset_keys = shard(reset_keys)
        carry = shard(agent.initial_carry(agent_state, reset_keys.shape[0]))

        def policy_step(carry, obs, key):
            return agent.policy(agent_state, carry, obs, key, deterministic)

        return ro.rollout(env, env_params, policy_step, carry, reset_keys, key, record=record)

    def init(key: jax.Array) -> TrainState:
        key_agent, key_prefill, key_reset, key_run, key_eval = jax.random.split(key, 5)
        agent_state = agent.init(key_agent, config, obs_space, action_space)
        episodes, stats = ro.rollout(
            env,
            env_params,
            ro.random_policy(action_space),
            (),
            shard(jax.random.split(key_reset, config.protocol.prefill)),
            key_prefill,
        )
        replay = rb.add(rb.init(config.protocol.replay_capacity, spec), episodes)
        env_steps = stats["steps"].sum().astype(jnp.int32)
        return TrainState(
            agent=_set_env_steps(agent_state, env_steps),
            replay=replay,
            key=key_run,
            eval_key=key_eval,
            env_steps=env_steps,
            updates=jnp.zeros((), jnp.int32),
            iterations=jnp.zeros((), jnp.int32),
        )

    def iteration_step(state: TrainState, index):
        key, key_collect, key_reset, key_update = jax.random.split(state.key, 4)
        episodes, stats = collect(state.agent, key_collect, False, jax.random.split(key_reset, num_envs))
        replay = rb.add(state.replay, episodes)
        env_steps = state.env_steps + stats["steps"].sum().astype(jnp.int32)
        agent_state = _set_env_steps(state.agent, env_steps)
        h_wm = horizon(index + 1)

        def update(agent_state, key):
            key_sample, key_update = jax.random.split(key)
            return agent.update(agent_state, sample(replay, key_sample), key_update, h_wm)

        agent_state, metrics = jax.lax.scan(update, agent_state, jax.random.split(key_update, num_updates))
        summary = {f"train/{k}": jnp.mean(v) for k, v in metrics.items()}
        summary["train/return"] = jnp.mean(stats["return"])
        for i in range(config.protocol.num_episodes):
            summary[f"train/return_episode_{i + 1}"] = jnp.mean(stats["episode_returns"][:, i])
        state = TrainState(
            agent=agent_state,
            replay=replay,
            key=key,
            eval_key=state.eval_key,
            env_steps=env_steps,
            updates=state.updates + num_updates,
            iterations=state.iterations + 1,
        )
        return state, summary

    def horizon(iterations):
        """H_wm after `iterations` collection rounds, from the nominal env-step count
        (prefill + iterations * num_envs) * T: seed-independent, so under a vmap over seeds
        it stays unbatched and lax.switch picks one horizon bucket (docs/api.md)."""
        if not config.mamba:
            return None
        nominal = (config.protocol.prefill + iterations * num_envs) * T
        return wm_horizon(config, nominal)

    def train_chunk(state: TrainState, iteration=None):
        """`chunk_iterations` iterations. `iteration` (int32 [], default state.iterations): the
        iterations done before this chunk; pass it unbatched when vmapping over seeds."""
        first = state.iterations if iteration is None else jnp.asarray(iteration, jnp.int32)
        indices = first + jnp.arange(chunk_iterations, dtype=jnp.int32)
        state, summaries = jax.lax.scan(iteration_step, state, indices)
        summary = jax.tree.map(lambda x: jnp.mean(x.astype(jnp.float32)), summaries)
        summary["env_steps"] = state.env_steps
        summary["updates"] = state.updates
        summary["iterations"] = state.iterations
        return state, summary

    def evaluate(agent_state, reset_keys: jax.Array, key: jax.Array) -> dict:
        """Deterministic policy on the tasks fixed by `reset_keys` [E, 2]: per-task returns
        {"return": [E], "episode_returns": [E, N], "steps": [E]}."""
        _, stats = collect(agent_state, key, True, reset_keys, record=False)
        return stats

    return Trainer(
        init=init,
        train_chunk=train_chunk,
        evaluate=evaluate,
        chunk_iterations=chunk_iterations,
        updates_per_iteration=num_updates,
        steps_per_iteration=num_envs * T,
        prefill_steps=config.protocol.prefill * T,
    )


def _set_env_steps(agent_state, env_steps):
    current = getattr(agent_state, "env_steps", None)
    if current is None:
        return agent_state
    return agent_state.replace(env_steps=jnp.asarray(env_steps).astype(jnp.asarray(current).dtype))


# ----------------------------------------------------------------------------- seeds, devices, jit
def make_mesh(num_seeds: int, devices=None) -> Mesh:
    """A ('seed', 'data') mesh over `devices` (default: all devices of all processes).

    Seeds are spread over as many devices as divide them: seed axis = gcd(num_seeds, #devices);
    the remaining factor is the 'data' axis (data parallelism inside each seed).
    """
    devices = list(jax.devices() if devices is None else devices)
    seed_axis = math.gcd(num_seeds, len(devices))
    grid = np.asarray(devices, dtype=object).reshape(seed_axis, len(devices) // seed_axis)
    return Mesh(grid, ("seed", "data"))


def over_seeds(fn, num_seeds: int, in_axes=0):
    """`jax.vmap(fn, in_axes, spmd_axis_name="seed")` over the leading seed axis of the arguments
    with in_axes 0 (the others are shared). With one seed it calls fn on the squeezed arguments
    and adds the axis back instead: with a vmap of size 1 a full point_robot update inside a training
    iteration ran 10 % slower than alone (experiments.benchmarks.train_iteration: 3.08 s against 2.79 s; without
    it 2.89 s against 2.87 s); the results agree up to float rounding (tests/test_train.py)."""
    if num_seeds != 1:
        return jax.vmap(fn, in_axes=in_axes, spmd_axis_name="seed")

    def one_seed(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        args = [a if ax is None else jax.tree.map(lambda x: x[0], a) for a, ax in zip(args, axes)]
        return jax.tree.map(lambda x: x[None], fn(*args))

    return one_seed


class RunFunctions(NamedTuple):
    """The jitted, seed-vmapped, sharded functions of a run."""

    config: Any
    num_seeds: int
    trainer: Trainer
    mesh: Mesh
    sharding: NamedSharding  # leading seed axis over 'seed', replicated over 'data'
    init: Callable  # (keys [seeds, 2]) -> TrainState
    train_chunk: Callable  # (TrainState, iterations done: int32 [] unbatched) -> (TrainState, summary)
    evaluate: Callable  # (TrainState, reset_keys [seeds, E, 2], keys [seeds, 2]) -> stats


def compile_run(
    config, env, env_params, num_seeds: int, chunk_iterations: int, agent=None, devices=None
) -> RunFunctions:
    """jit(vmap(...)) of the trainer's functions over seeds with NamedShardings over the mesh.

    Static under jit: the config (shapes, loop lengths, U), chunk_iterations, num_seeds,
    the env and the number of evaluation tasks (the shape of reset_keys).
    """
    mesh = make_mesh(num_seeds, devices)
    trainer = make_train(config, env, env_params, chunk_iterations, agent=agent, mesh=mesh)
    sharding = NamedSharding(mesh, P("seed"))

    def vmap(fn, in_axes=0):
        return over_seeds(fn, num_seeds, in_axes)

    def evaluate(state, reset_keys, key):
        return trainer.evaluate(state.agent, reset_keys, key)

    return RunFunctions(
        config=config,
        num_seeds=num_seeds,
        trainer=trainer,
        mesh=mesh,
        sharding=sharding,
        init=jax.jit(vmap(trainer.init), in_shardings=sharding, out_shardings=sharding),
        train_chunk=jax.jit(
            vmap(trainer.train_chunk, in_axes=(0, None)),
            in_shardings=(sharding, NamedSharding(mesh, P())),
            out_shardings=sharding,
            donate_argnums=0,
        ),
        evaluate=jax.jit(vmap(evaluate), in_shardings=sharding, out_shardings=sharding),
    )
