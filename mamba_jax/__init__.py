"""mamba_jax: MAMBA (Rimon et al., ICLR 2024) as a pure-functional JAX agent.

    import envs, jax, mamba_jax
    config = mamba_jax.get_config("point_robot")
    env, env_params = envs.make(config.env, num_episodes=config.protocol.num_episodes,
                                episode_length=config.protocol.episode_length)
    state = mamba_jax.init(key, config, env.observation_space(env_params), env.action_space(env_params))
    carry = mamba_jax.initial_carry(state, num_envs)
    action, carry = mamba_jax.policy(state, carry, obs_with_is_first, key, deterministic=False)
    state, metrics = mamba_jax.update(state, batch, key)

See docs/api.md (the data conventions) and docs/agent.md (design choices).
"""

import importlib

# Where each public name lives. The names are loaded on first use (PEP 562 module __getattr__), so
# that `import mamba_jax.config` or `mamba_jax.hugepages` does not start JAX: the launchers read
# their flags and re-execute themselves (hugepages.py) before any JAX import.
_EXPORTS = {
    "AgentState": "mamba_jax.agent",
    "action_to_model": "mamba_jax.rollout",
    "check_batch": "mamba_jax.agent",
    "init": "mamba_jax.agent",
    "initial_carry": "mamba_jax.agent",
    "policy": "mamba_jax.agent",
    "update": "mamba_jax.agent",
    "PRESETS": "mamba_jax.config",
    "Config": "mamba_jax.config",
    "get_config": "mamba_jax.config",
    "horizon_buckets": "mamba_jax.horizon",
    "wm_horizon": "mamba_jax.horizon",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:  # a submodule (`mamba_jax.rssm`), as an eager import used to provide
        try:
            return importlib.import_module(f"mamba_jax.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"mamba_jax.{name}":
                raise
            raise AttributeError(f"module 'mamba_jax' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
