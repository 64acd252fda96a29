"""Reference policies (random, oracle, Bayes-reference) and a jittable runner for them.

A policy is a pair of pure functions (a `ReferencePolicy`):

    pstate = policy.init(key, params)                                   # params: MetaParams
    action, pstate = policy.act(key, pstate, obs, task, params)

`obs` is the meta-episode wrapper's observation dict for ONE env, unbatched
(`{"obs": inner observation, "reward": [], "time": []}`); `task` is the task array of the
meta-episode. An *oracle* may read `task`; a *Bayes-reference* policy must not (it acts on
observations only, including the reward and time entries). `pstate` is any pytree the policy
carries through the meta-episode (it is never reset between episodes: the policy sees episode
boundaries through `obs["time"]` and its own state). Used with gymnax's auto-resetting `step`, a
policy sees t = 0 again at the start of a new meta-episode (a new task) and should then forget
what it inferred (the rooms Bayes policy does; `evaluate_policy` never auto-resets).

    policy = get_policy("rooms_meta", "bayes", env, params)
    out = evaluate_policy(env, params, policy, key, num_tasks=100)
    out["return"]            # [num_tasks]     meta-episode returns
    out["episode_returns"]   # [num_tasks, N]  per-episode returns (they sum to "return")

Reference policies live in `envs/reference/<module>.py`, each module defining
`oracle_policy(params)` and/or `bayes_policy(params)` (params: the `MetaParams`).
"""

import importlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from gymnax.environments import spaces

import envs


class ReferencePolicy(NamedTuple):
    """A policy as two pure functions; see the module docstring."""

    init: Callable[[jax.Array, Any], Any]  # (key, MetaParams) -> pstate
    act: Callable[[jax.Array, Any, dict, jax.Array, Any], tuple[jax.Array, Any]]
    # (key, pstate, obs dict, task, MetaParams) -> (action, pstate)


# Env name -> module under envs/reference/ holding its oracle / Bayes policies (the env's module name).
POLICY_MODULES: dict[str, str] = dict(envs.MODULES)

POLICY_NAMES: tuple[str, ...] = ("random", "oracle", "bayes")


def memoryless_policy(action_fn: Callable[[jax.Array, dict, Any, Any], jax.Array]) -> ReferencePolicy:
    """A policy without memory: `action_fn(key, obs, task, params) -> action`; its pstate is ()."""

    def init(key, params):
        del key, params
        return ()

    def act(key, pstate, obs, task, params):
        return action_fn(key, obs, task, params), pstate

    return ReferencePolicy(init, act)


def random_policy(env, params) -> ReferencePolicy:
    """Uniform over the env's action space (Discrete: uniform integers; Box: uniform in [low, high])."""
    space = env.action_space(params)
    if not isinstance(space, (spaces.Discrete, spaces.Box)):
        raise ValueError(f"random_policy supports Discrete and Box action spaces, got {space!r}")
    return memoryless_policy(lambda key, obs, task, params: space.sample(key))


def available_policies(env_name: str) -> tuple[str, ...]:
    """Names of the policies that exist for `env_name` (always includes 'random')."""
    if env_name not in POLICY_MODULES:
        raise ValueError(f"unknown env {env_name!r}; allowed: {', '.join(POLICY_MODULES)}")
    module = _policy_module(env_name)
    found = ["random"]
    if module is not None:
        found += [name for name in POLICY_NAMES[1:] if hasattr(module, f"{name}_policy")]
    return tuple(found)


def _policy_module(env_name: str):
    """The module envs.reference.<module> of `env_name`, or None if it does not exist (yet)."""
    name = f"envs.reference.{POLICY_MODULES[env_name]}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            return None
        raise


def get_policy(env_name: str, policy_name: str, env, params) -> ReferencePolicy:
    """The named reference policy for a registered env.

    Args:
        env_name: a name of `envs.NAMES` (e.g. "rooms_meta").
        policy_name: "random", "oracle" or "bayes".
        env, params: the (wrapped) env and its `MetaParams`, as returned by `envs.make`.
    Raises:
        ValueError naming the allowed values when the env or policy is unknown or missing.
    """
    if env_name not in POLICY_MODULES:
        raise ValueError(f"unknown env {env_name!r}; allowed: {', '.join(POLICY_MODULES)}")
    if policy_name not in POLICY_NAMES:
        raise ValueError(f"unknown policy {policy_name!r}; allowed: {', '.join(POLICY_NAMES)}")
    if policy_name == "random":
        return random_policy(env, params)
    module = _policy_module(env_name)
    factory = None if module is None else getattr(module, f"{policy_name}_policy", None)
    if factory is None:
        raise ValueError(
            f"no {policy_name!r} policy for env {env_name!r}; "
            f"available: {', '.join(available_policies(env_name))}"
        )
    return factory(params)


def evaluate_policy(env, params, policy: ReferencePolicy, key: jax.Array, num_tasks: int) -> dict:
    """Runs `num_tasks` whole meta-episodes, one per task (vmap over tasks, lax.scan over T).

    Jittable: `env`, `policy` and `num_tasks` are static (Python objects), `params` a pytree
    whose N and L are static fields; `jax.jit(evaluate_policy, static_argnums=(0, 2, 4))`.
    Uses the wrapper's `reset` / `step_env` (no auto-reset) for T = N * L steps; the steps after
    the meta-episode ended (`terminated` or `is_truncated`: its N-th episode ended, earlier than
    T when episodes ended on inner terminations) are masked out.

    Returns a dict with
        "return":          [num_tasks]     float32, meta-episode return (summed separately),
        "episode_returns": [num_tasks, N]  float32, sum of rewards with
                                           info["reward_episode_index"] == i,
        "task":            [num_tasks, *task_shape] the tasks drawn.
    """
    num_episodes = params.num_episodes
    total_steps = params.num_episodes * params.episode_length

    def one_task(key):
        key_reset, key_policy, key_steps = jax.random.split(key, 3)
        obs, state = env.reset(key_reset, params)
        pstate = policy.init(key_policy, params)

        def step(carry, key):
            obs, state, pstate, alive, total, returns = carry
            key_act, key_env = jax.random.split(key)
            action, pstate = policy.act(key_act, pstate, obs, state.task, params)
            obs, state, reward, terminated, info = env.step_env(key_env, state, action, params)
            counted = jnp.where(alive, reward, 0.0)
            total = total + counted
            returns = returns + counted * jax.nn.one_hot(info["reward_episode_index"], num_episodes)
            done = jnp.logical_or(terminated, env.is_truncated(state, params))
            alive = jnp.logical_and(alive, jnp.logical_not(done))
            return (obs, state, pstate, alive, total, returns), None

        returns = jnp.zeros((num_episodes,), jnp.float32)
        carry = (obs, state, pstate, jnp.ones((), bool), jnp.zeros((), jnp.float32), returns)
        carry, _ = jax.lax.scan(step, carry, jax.random.split(key_steps, total_steps))
        return {"return": carry[4], "episode_returns": carry[5], "task": state.task}

    return jax.vmap(one_task)(jax.random.split(key, num_tasks))


__all__ = [
    "ReferencePolicy",
    "POLICY_MODULES",
    "POLICY_NAMES",
    "memoryless_policy",
    "random_policy",
    "available_policies",
    "get_policy",
    "evaluate_policy",
]
