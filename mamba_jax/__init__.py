"""mamba_jax: MAMBA (Rimon et al., ICLR 2024) as a pure-functional JAX agent."""

from mamba_jax.config import PRESETS, Config, get_config, horizon_buckets, wm_horizon

__all__ = ["Config", "PRESETS", "get_config", "wm_horizon", "horizon_buckets"]
