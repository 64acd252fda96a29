"""Shared test set-up: JAX's persistent compilation cache, so repeated runs compile once."""

import os
import pathlib

import jax

_CACHE = os.environ.get("MAMBA_JAX_CACHE", str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
