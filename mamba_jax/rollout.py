"""Collection of whole meta-episodes: a policy and a vmapped batch of envs in one lax.scan.

Each env is reset (a fresh task) and stepped T = N * L times with the meta-episode wrapper's
`step_env` (no auto-reset), so each env yields exactly one meta-episode of S = T + 1 entries
in the replay format of docs/api.md:

    episodes = {"obs": {"obs": [n, S, ...], "reward": [n, S], "time": [n, S]},
                "action": [n, S, A] float32    (a_{t-1} in model format; zeros at t = 0),
                "is_first": [n, S] bool        (True at t = 0, and on padding, see below),
                "is_terminal": [n, S] bool}    (the wrapper's `terminated`; time limits are not)

A meta-episode can end before T steps (an inner termination, e.g. a humanoid fall, ends its
episode early: in the last episode it ends the meta-episode with a terminal, in an earlier one
the meta-episode ends, truncated, when its N-th episode reaches L steps). The remaining entries
are *padding*: the last observation repeated with reward 0, a zero action, is_first True and
is_terminal False. With is_first set, the agent restarts from its initial state at each of
them, so no transition is ever learned across the end (as DreamerV3 does between episodes
stored back to back); they add nothing to the returns and are not counted as env steps.

A policy is a function `policy_step(carry, obs, key) -> (env_action, carry)` where `obs` is the
wrapper's observation dict batched [n, ...] plus `"is_first": [n] bool` (the agent's `policy`
with its state closed over, or `random_policy(action_space)`).
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from gymnax.environments import spaces


def action_dim(action_space) -> int:
    """A, the size of an action in model format (one-hot size for Discrete)."""
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.Box):
        return int(math.prod(action_space.shape))
    raise ValueError(f"action space must be gymnax spaces.Box or spaces.Discrete, got {action_space!r}")


def action_to_model(action: jax.Array, action_dim: int, discrete: bool) -> jax.Array:
    """Env actions -> the batch's action format [..., A] float32 (A = action_dim).

    Discrete: int actions [...] -> one-hot [..., A]. Continuous: actions [..., A] as float32.
    The agent's policy calls it with `agent_state.action_dim, agent_state.discrete`; for a gymnax
    space, `action_dim(space), isinstance(space, spaces.Discrete)`.
    """
    if discrete:
        return jax.nn.one_hot(action, action_dim, dtype=jnp.float32)
    action = jnp.asarray(action, jnp.float32)
    if action.shape[-1:] != (action_dim,):
        raise ValueError(f"continuous actions must have shape [..., {action_dim}]; got {action.shape}")
    return action


def random_policy(action_space) -> Callable:
    """Uniform random actions (Box: uniform in [low, high]; Discrete: uniform integers).
    The carry is unused (pass `()`)."""
    action_dim(action_space)  # validates the space

    def policy_step(carry, obs, key):
        num_envs = obs["is_first"].shape[0]
        keys = jax.random.split(key, num_envs)
        return jax.vmap(action_space.sample)(keys), carry

    return policy_step


def rollout(
    env,
    env_params,
    policy_step: Callable,
    carry: Any,
    reset_keys: jax.Array,
    key: jax.Array,
    record: bool = True,
):
    """Runs one meta-episode in each of n envs.

    Args:
        env, env_params: the meta-episode wrapper and its MetaParams (N, L static).
        policy_step, carry: the policy and its initial carry (batched [n, ...]).
        reset_keys: [n] keys for the envs' resets (they fix the tasks: pass the same keys to
            evaluate on the same tasks).
        key: randomness of the policy and of the env steps.
        record: (static) also return the episodes in replay format; False returns None
            for them (evaluation: no [n, S, ...] buffers).
    Returns:
        (episodes or None, stats) with stats = {"return": [n], "episode_returns": [n, N],
        "steps": [n] int32 (real env transitions)}.
    """
    num_envs = reset_keys.shape[0]
    num_episodes = env_params.num_episodes
    total = env_params.num_episodes * env_params.episode_length
    space = env.action_space(env_params)
    size = action_dim(space)
    discrete = isinstance(space, spaces.Discrete)
    vstep = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))

    obs0, state0 = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)

    vtruncated = jax.vmap(env.is_truncated, in_axes=(0, None))

    def step(c, key):
        obs, state, pcarry, alive, first, returns = c
        key_act, key_env = jax.random.split(key)
        action, pcarry = policy_step(pcarry, {**obs, "is_first": first}, key_act)
        env_keys = jax.random.split(key_env, num_envs)
        nobs, nstate, reward, terminated, info = vstep(env_keys, state, action, env_params)
        terminated = jnp.logical_and(alive, terminated)
        ended = jnp.logical_or(terminated, vtruncated(nstate, env_params))
        reward = jnp.where(alive, reward, 0.0)

        def keep(new, old):  # after the end: keep the last real observation / state
            mask = alive.reshape(alive.shape + (1,) * (new.ndim - 1))
            return jnp.where(mask, new, old)

        nobs = {**jax.tree.map(keep, nobs, obs), "reward": reward}
        nstate = jax.tree.map(keep, nstate, state)
        returns = returns + reward[:, None] * jax.nn.one_hot(info["reward_episode_index"], num_episodes)
        out = {"alive": alive}
        if record:
            flat = action if discrete else action.reshape(num_envs, size)  # a scalar or matrix Box: a vector
            model_action = action_to_model(flat, size, discrete) * alive[:, None]
            padding = jnp.logical_not(alive)
            out.update(obs=nobs, action=model_action, is_first=padding, is_terminal=terminated)
        carry = (nobs, nstate, pcarry, jnp.logical_and(alive, jnp.logical_not(ended)), jnp.zeros_like(first), returns)
        return carry, out

    init = (
        obs0,
        state0,
        carry,
        jnp.ones((num_envs,), bool),
        jnp.ones((num_envs,), bool),
        jnp.zeros((num_envs, num_episodes), jnp.float32),
    )
    final, outs = jax.lax.scan(step, init, jax.random.split(key, total))
    returns = final[5]
    stats = {
        "return": returns.sum(-1),
        "episode_returns": returns,
        "steps": outs["alive"].sum(0).astype(jnp.int32),
    }
    if not record:
        return None, stats

    def with_first(first, rest):  # [n, ...] and [T, n, ...] -> [n, S, ...]
        return jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)

    episodes = {
        "obs": jax.tree.map(with_first, obs0, outs["obs"]),
        "action": with_first(jnp.zeros((num_envs, size), jnp.float32), outs["action"]),
        "is_first": with_first(jnp.ones((num_envs,), bool), outs["is_first"]),
        "is_terminal": with_first(jnp.zeros((num_envs,), bool), outs["is_terminal"]),
    }
    return episodes, stats


def episode_spec(env, env_params) -> dict:
    """One stored meta-episode as jax.ShapeDtypeStruct leaves [S, ...] (for `replay.init`)."""
    episodes, _ = jax.eval_shape(
        lambda k: rollout(env, env_params, random_policy(env.action_space(env_params)), (), k[None], k),
        jax.random.PRNGKey(0),
    )
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), episodes)
