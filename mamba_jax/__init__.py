"""mamba_jax: MAMBA (Rimon et al., ICLR 2024) as a pure-functional JAX agent.

    import envs, jax, mamba_jax
    config = mamba_jax.get_config("point_robot")
    env, env_params = envs.make(config.env, num_episodes=config.num_episodes,
                                episode_length=config.episode_length)
    state = mamba_jax.init(key, config, env.observation_space(env_params), env.action_space(env_params))
    carry = mamba_jax.initial_carry(state, num_envs)
    action, carry = mamba_jax.policy(state, carry, obs_with_is_first, key, deterministic=False)
    state, metrics = mamba_jax.update(state, batch, key)

See docs/api.md (the data conventions) and docs/agent.md (design choices).
"""

from mamba_jax.agent import AgentState, action_to_model, check_batch, init, initial_carry, policy, update
from mamba_jax.config import PRESETS, Config, get_config, horizon_buckets, wm_horizon

__all__ = [
    "AgentState",
    "Config",
    "PRESETS",
    "action_to_model",
    "check_batch",
    "get_config",
    "horizon_buckets",
    "init",
    "initial_carry",
    "policy",
    "update",
    "wm_horizon",
]
