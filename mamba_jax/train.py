"""The training loop: jittable chunks of iterations on device, a thin host driver around them.

    trainer = make_train(config, env, env_params, chunk_iterations=10)
    state = trainer.init(key)                          # agent + prefilled replay + keys + counters
    state, summary = trainer.train_chunk(state)        # chunk_iterations iterations, on device
    stats = trainer.evaluate(state.agent, reset_keys, key)

One *iteration* (spec section 4): collect one meta-episode in each of `config.num_envs` envs
with the stochastic policy, insert them into replay (FIFO), set the agent's env-step counter,
then run U updates, each on a fresh batch (MAMBA: B whole meta-episodes from entry 0;
DreamerV3 baseline: B windows of `window_length` entries). U is static:

    U = max(1, floor(train_ratio * num_envs * T / N + 0.5))

(the spec's U = train_ratio * (env steps just collected) / N with the steps counted as
num_envs * T, rounded half up, at least 1; `Trainer.updates_per_iteration`; the realised
ratio is logged as `train/updates_per_step`). Env steps count real transitions, prefill
included (a meta-episode cut short by a terminal counts only its steps taken).

`init` and `train_chunk` are pure functions of one seed; `run` (below) vmaps them over seeds,
jits them with NamedShardings over a ('seed', 'data') device mesh and does evaluation,
logging and checkpointing between chunks on the host. See docs/training.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mamba_jax import replay as rb
from mamba_jax import rollout as ro
from mamba_jax.config import Config, wm_horizon


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly (one seed; `run` stacks seeds on axis 0).

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
    exact = config.train_ratio * config.num_envs * config.meta_length / config.num_episodes
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
    if (env_params.num_episodes, env_params.episode_length) != (config.num_episodes, config.episode_length):
        raise ValueError(
            f"env params have N x L = {env_params.num_episodes} x {env_params.episode_length} but the config "
            f"says {config.num_episodes} x {config.episode_length}; make the env with "
            "envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)"
        )
    if not isinstance(chunk_iterations, int) or chunk_iterations < 1:
        raise ValueError(f"chunk_iterations must be an integer >= 1, got {chunk_iterations!r}")
    T = config.meta_length
    num_envs = config.num_envs
    num_updates = updates_per_iteration(config)
    obs_space = env.observation_space(env_params)
    action_space = env.action_space(env_params)
    spec = ro.episode_spec(env, env_params)
    shard = data_constraint(mesh)

    def sample(replay, key):
        if config.mamba:
            batch = rb.sample_episodes(replay, key, config.batch_size)
        else:
            batch = rb.sample_windows(replay, key, config.batch_size, config.window_length)
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
            shard(jax.random.split(key_reset, config.prefill)),
            key_prefill,
        )
        replay = rb.add(rb.init(config.replay_capacity, spec), episodes)
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
        for i in range(config.num_episodes):
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
        nominal = (config.prefill + iterations * num_envs) * T
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
        prefill_steps=config.prefill * T,
    )


def _set_env_steps(agent_state, env_steps):
    current = getattr(agent_state, "env_steps", None)
    if current is None:
        return agent_state
    return agent_state.replace(env_steps=jnp.asarray(env_steps).astype(jnp.asarray(current).dtype))


# ----------------------------------------------------------------------------- host driver
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
    iteration ran 10 % slower than alone (experiments.bench_train: 3.08 s against 2.79 s; without
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


def to_host(tree):
    """Device arrays -> numpy (gathering shards from every process in a multi-host run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def seed_keys(seed: int, num_seeds: int) -> np.ndarray:
    """[num_seeds, 2] keys: seed i of a run uses fold_in(PRNGKey(seed), i)."""
    base = jax.random.PRNGKey(seed)
    return np.stack([np.asarray(jax.random.fold_in(base, i)) for i in range(num_seeds)])


def restore_checkpoint(fns: RunFunctions, keys, checkpointer, step: int | None = None):
    """(state, meta) of `checkpointer`'s checkpoint `step` (default: the latest), restored into
    the shapes, dtypes and seed sharding of `fns.init(keys)` (nothing is computed to get them)."""
    abstract = jax.eval_shape(fns.init, keys)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=fns.sharding), abstract)
    return checkpointer.restore(abstract, step)


def _per_seed(fn, eval_keys, *args):
    return jax.vmap(fn, in_axes=(0,) + (None,) * len(args))(eval_keys, *args)


def _host_info() -> dict:
    """Where the run ran (written to run.json; not compared on resume)."""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # see mamba_jax/hugepages.py
    }


def run(
    config,
    logdir: str,
    seed: int = 0,
    num_seeds: int = 1,
    steps: int | None = None,
    chunk_iterations: int | None = None,
    eval_every: int | None = None,
    checkpoint_every: int = 1,
    max_to_keep: int = 2,
    resume: bool = False,
    init_from: str | None = None,
    final_test: bool = True,
    reference: bool = True,
    agent=None,
    devices=None,
    functions: RunFunctions | None = None,
    print_fn: Callable[[str], None] | None = None,
) -> dict:
    """Trains `num_seeds` seeds of `config` until `steps` real env steps (default
    config.env_steps), in chunks of `chunk_iterations` iterations, evaluating every `eval_every`
    env steps (default config.eval_every; evaluations happen between chunks, so at the first
    chunk boundary at or after each multiple) and at the end, checkpointing every
    `checkpoint_every` chunks and at the end; then the final test on config.final_eval_tasks
    fresh tasks (LOGDIR/final_test.json).

    The default chunk length is ceil(eval_every / (num_envs * T)) iterations, so every chunk
    ends with an evaluation. The run stops at the first chunk boundary at or after
    `steps` (it may overshoot by less than one chunk).

    resume=True continues from the latest checkpoint in LOGDIR/checkpoints (same config, seed
    and num_seeds required) and reproduces the uninterrupted run's metrics exactly (with the
    same chunk_iterations and devices); without a checkpoint it starts a new run.

    init_from=OTHER_LOGDIR starts a new run (LOGDIR without checkpoints) from the latest
    checkpoint of another run: its whole train state (parameters, optimiser states, replay, keys,
    counters) and its metrics rows up to that checkpoint, continued under `config`, which may
    differ from the other run's in fields that keep the train state's shapes (a loss scale, a
    learning rate, free bits, ...; not the network sizes or the replay). Seed and num_seeds must
    match. LOGDIR/init_from.json records the source, its step and the changed fields. With the
    same config the continuation equals the other run resumed. Ignored when resume=True finds a
    checkpoint in LOGDIR (an interrupted continuation resumes like any run).

    Seed i of the run starts from fold_in(PRNGKey(seed), i), so a run's seed i does not
    depend on num_seeds. `functions` (from `compile_run`, same config / num_seeds /
    chunk_iterations) reuses already compiled functions across runs (tests).

    Returns {"state": the final TrainState (seed-stacked), "last": the last metrics row,
    "test": the final test summary or None, "functions": the RunFunctions used}.
    """

    import envs
    from mamba_jax import checkpoint as ckpt_lib
    from mamba_jax import evaluate as ev
    from mamba_jax.logging import Logger

    budget = int(config.env_steps if steps is None else steps)
    eval_every = int(config.eval_every if eval_every is None else eval_every)
    for name, value in (("num_seeds", num_seeds), ("steps", budget), ("eval_every", eval_every),
                        ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: allowed: an integer >= 1")
    steps_per_iteration = config.num_envs * config.meta_length
    if chunk_iterations is None:
        chunk_iterations = max(1, -(-eval_every // steps_per_iteration))  # ceil: every chunk evaluates
    env, env_params = envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    if functions is None:
        fns = compile_run(config, env, env_params, num_seeds, chunk_iterations, agent=agent, devices=devices)
    else:
        fns = functions
        given = (fns.config, fns.num_seeds, fns.trainer.chunk_iterations)
        if given != (config, num_seeds, chunk_iterations):
            raise ValueError("`functions` were compiled for a different config, num_seeds or chunk_iterations")
    main_process = jax.process_index() == 0
    say = print_fn or (lambda s: print(s, flush=True))
    if not main_process:
        say = lambda s: None  # noqa: E731

    run_info = {
        "config": dataclasses.asdict(config),
        "seed": seed,
        "num_seeds": num_seeds,
        "chunk_iterations": chunk_iterations,
        "updates_per_iteration": fns.trainer.updates_per_iteration,
        "steps_per_iteration": steps_per_iteration,
        "mesh": dict(fns.mesh.shape),
    }
    checkpointer = ckpt_lib.Checkpointer(os.path.join(logdir, "checkpoints"), max_to_keep=max_to_keep)
    keys = jax.device_put(seed_keys(seed, num_seeds), fns.sharding)
    if checkpointer.latest_step() is not None and not resume:
        raise ValueError(
            f"{logdir} already holds checkpoints; pass resume=True (--resume) to continue it, or use a new logdir"
        )
    if resume and checkpointer.latest_step() is not None:
        state, meta = restore_checkpoint(fns, keys, checkpointer)
        changed = _check_resume(meta["run"], run_info)
        if changed:
            say(f"note: resuming with a different {', '.join(changed)} (same training trajectory; "
                "evaluation points or float rounding may differ from an uninterrupted run)")
        wall_offset, next_eval, chunks = meta["wall_seconds"], meta["next_eval"], meta["chunks"]
        start_steps = int(meta["env_steps"])
        say(f"resumed {logdir} at {start_steps} env steps")
    elif init_from is not None:
        state, meta, changed = _init_from(init_from, fns, keys, run_info)
        wall_offset, next_eval, chunks = meta["wall_seconds"], meta["next_eval"], meta["chunks"]
        start_steps = int(meta["env_steps"])
        if main_process:
            _start_metrics_from(init_from, logdir, start_steps)
            with open(os.path.join(logdir, "init_from.json"), "w") as f:
                json.dump({"logdir": os.path.abspath(init_from), "env_steps": start_steps, "changed": changed}, f,
                          indent=1)
        say(f"started from {init_from} at {start_steps} env steps"
            + (f" with a different {', '.join(changed)}" if changed else " (same settings)"))
    else:
        state, wall_offset, next_eval, chunks, start_steps = None, 0.0, 0, 0, 0

    logger = Logger(logdir, budget, start_steps=start_steps, print_fn=say) if main_process else None
    if main_process:
        logger.write_json("run.json", {**run_info, "host": _host_info()})
    ref = None
    if reference:
        cheap = config.env.startswith(("point", "escape", "rooms"))  # measure the Bayes policy if not on file
        ref = ev.reference_returns(config.env, env, env_params, compute=cheap)
        if ref is not None and main_process:
            logger.write_json("reference.json", ref)
    say(
        f"{config.name}: {num_seeds} seed(s) on mesh {dict(fns.mesh.shape)}, {steps_per_iteration} env steps and "
        f"{fns.trainer.updates_per_iteration} updates per iteration, {chunk_iterations} iteration(s) per chunk"
    )
    start = time.time() - wall_offset

    def evaluation(state, prefix="eval"):
        eval_keys = to_host(state.eval_key)
        reset = _per_seed(ev.eval_reset_keys, eval_keys, config.eval_tasks)
        policy = jax.vmap(ev.eval_policy_key)(eval_keys, to_host(state.env_steps))
        stats = to_host(fns.evaluate(state, jax.device_put(reset, fns.sharding), jax.device_put(policy, fns.sharding)))
        return ev.summarize(stats, prefix, ref)

    if state is None:
        state = fns.init(keys)
        env_steps = int(np.min(to_host(state.env_steps)))
        row = {"env_steps": env_steps, "wall_seconds": time.time() - start, "iterations": 0, "updates": 0}
        row.update(evaluation(state))
        next_eval = (env_steps // eval_every + 1) * eval_every
        if main_process:
            logger.log(row)
    env_steps = int(np.min(to_host(state.env_steps)))
    iterations = int(to_host(state.iterations)[0])
    row = None
    while env_steps < budget:
        state, summary = fns.train_chunk(state, np.int32(iterations))
        summary = to_host(summary)
        iterations = int(summary["iterations"][0])
        env_steps = int(np.min(summary["env_steps"]))
        chunks += 1
        row = {
            "env_steps": env_steps,
            "wall_seconds": time.time() - start,
            "iterations": int(summary["iterations"][0]),
            "updates": int(summary["updates"][0]),
            "train/updates_per_step": fns.trainer.updates_per_iteration / steps_per_iteration,
        }
        for key, value in summary.items():
            if key.startswith("train/"):
                row[key] = float(np.mean(value))
                if key.startswith("train/return"):
                    row[key + "/per_seed"] = np.asarray(value).tolist()
        if env_steps >= next_eval or env_steps >= budget:
            row.update(evaluation(state))
            next_eval = (env_steps // eval_every + 1) * eval_every
        row["wall_seconds"] = time.time() - start
        if main_process:
            logger.log(row)
        if chunks % checkpoint_every == 0 or env_steps >= budget:
            meta = {"env_steps": env_steps, "wall_seconds": row["wall_seconds"], "next_eval": next_eval,
                    "chunks": chunks, "run": run_info}
            checkpointer.save(env_steps, state, meta)

    test = None
    if final_test and env_steps >= budget:
        test = final_test_returns(fns, state, config, ref)
        test["env_steps"] = env_steps
        if main_process:
            logger.write_json("final_test.json", test)
            say(f"final test on {config.final_eval_tasks} tasks: return {test['test/return']:.4g} "
                + " ".join(f"ep{i + 1} {test[f'test/return_episode_{i + 1}']:.4g}" for i in range(config.num_episodes)))
    if main_process:
        logger.close()
    checkpointer.close()
    return {"state": state, "last": row, "test": test, "functions": fns}


def final_test_returns(fns: RunFunctions, state: TrainState, config, reference=None) -> dict:
    """The final test: config.final_eval_tasks fresh tasks, in blocks of config.eval_tasks
    through the evaluation function already compiled (the last block is cut to size)."""
    from mamba_jax import evaluate as ev

    block = config.eval_tasks
    blocks = -(-config.final_eval_tasks // block)
    eval_keys = to_host(state.eval_key)
    reset = _per_seed(ev.test_reset_keys, eval_keys, blocks * block)  # [seeds, blocks * E, 2]
    policy = jax.vmap(ev.eval_policy_key)(eval_keys, to_host(state.env_steps))
    parts = []
    for b in range(blocks):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(policy, ev.TEST_FOLD + b)
        out = fns.evaluate(state, jax.device_put(reset[:, b * block:(b + 1) * block], fns.sharding),
                           jax.device_put(keys, fns.sharding))
        parts.append(to_host(out))
    stats = {k: np.concatenate([p[k] for p in parts], axis=1)[:, : config.final_eval_tasks] for k in parts[0]}
    summary = ev.summarize(stats, "test", reference)
    summary["test/num_tasks"] = config.final_eval_tasks
    return summary


def _init_from(source: str, fns: RunFunctions, keys, run_info: dict):
    """(state, meta, changed settings) of the latest checkpoint of the run in `source`, restored
    into the shapes of this run's train state. Raises ValueError naming the problem."""
    from mamba_jax import checkpoint as ckpt_lib

    directory = os.path.join(source, "checkpoints")
    if not os.path.isdir(directory):
        raise ValueError(f"init_from={source!r}: no checkpoints directory there")
    checkpointer = ckpt_lib.Checkpointer(directory)
    try:
        if checkpointer.latest_step() is None:
            raise ValueError(f"init_from={source!r}: it holds no complete checkpoint")
        saved = checkpointer.restore_meta()["run"]
        for name in ("seed", "num_seeds"):
            if saved.get(name) != run_info[name]:
                raise ValueError(f"init_from={source!r}: that run has {name}={saved.get(name)}, this one "
                                 f"{run_info[name]}; they must match")
        changed = _changed_config_fields(saved["config"], run_info["config"])
        try:
            state, meta = restore_checkpoint(fns, keys, checkpointer)
        except ValueError as error:  # Checkpointer.restore names the arrays of another shape, dtype or tree
            raise ValueError(f"init_from={source!r}: its train state does not fit this config (changed: "
                             f"{', '.join(changed) or 'nothing'}); only fields that keep the shapes may change. "
                             f"{error}") from None
    finally:
        checkpointer.close()
    return state, meta, changed


def _start_metrics_from(source: str, logdir: str, max_env_steps: int) -> None:
    """Copies the metrics rows of `source` up to `max_env_steps` into LOGDIR/metrics.jsonl."""
    from mamba_jax.logging import METRICS_FILE, read_metrics

    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, METRICS_FILE), "w") as f:
        for row in read_metrics(source):
            if row.get("env_steps", 0) <= max_env_steps:
                f.write(json.dumps(row) + "\n")


# Settings a resume may change: the trajectory of a seed does not depend on them (each iteration
# splits the state's key), only the evaluation points / float reassociation do.
RESUME_MAY_CHANGE = ("chunk_iterations", "mesh")


def _changed_config_fields(saved: dict, current: dict) -> list[str]:
    """["config.FIELD", ...] (sorted) of the Config fields whose values differ between a saved
    run's config and this run's (dicts as in run.json), the step budget (env_steps) aside. A field
    added to Config after the checkpoint was written had its default then."""
    defaults = json.loads(json.dumps(dataclasses.asdict(Config())))
    saved = {**defaults, **json.loads(json.dumps(saved))}
    current = json.loads(json.dumps(current))
    return [f"config.{k}" for k in sorted(set(saved) | set(current))
            if k != "env_steps" and saved.get(k) != current.get(k)]


def _check_resume(saved: dict, current: dict) -> list[str]:
    """Resuming needs the same config (the step budget aside), seed and number of seeds.
    Returns the names of the settings in RESUME_MAY_CHANGE that changed."""
    saved = json.loads(json.dumps(saved))
    current = json.loads(json.dumps(current))
    diffs = sorted(k for k in set(saved) | set(current) if k != "config" and saved.get(k) != current.get(k))
    diffs += _changed_config_fields(saved["config"], current["config"])
    fatal = [d for d in diffs if d not in RESUME_MAY_CHANGE]
    if fatal:
        raise ValueError(f"cannot resume: the checkpoint was written with different {', '.join(fatal)}; "
                         "resume with the same settings (the step budget, chunk_iterations and the devices may change)")
    return [d for d in diffs if d in RESUME_MAY_CHANGE]
