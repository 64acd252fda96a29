"""Shared test set-up: JAX's persistent compilation cache, so repeated runs compile once, and a
fast-compiling XLA:CPU backend.

The tests run tiny networks, so their time is almost all XLA compilation; LLVM's optimisation
level 0 (`--xla_backend_optimization_level=0`) cuts that by about a third (one update-sized test:
28 s -> 18 s on the 2-core machine). It changes float32 rounding, not semantics: results are compared
within each run, subprocesses started by the tests inherit XLA_FLAGS, and the two tests whose
tolerances were tighter than that rounding (test_point_robot's Bayes-vs-oracle returns, test_agent's
vmap-vs-separate actor loss) say so. MAMBA_JAX_TEST_XLA_OPT=1 keeps XLA's default level.
"""

import os
import pathlib

TEST_XLA_FLAG = "--xla_backend_optimization_level=0"
if os.environ.get("MAMBA_JAX_TEST_XLA_OPT") != "1" and TEST_XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAG).strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads it when it starts)

_CACHE = os.environ.get("MAMBA_JAX_CACHE", str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
