"""Counts the matrix-multiply FLOPs of a JAX function from its jaxpr, loops included.

XLA's `compiled.cost_analysis()["flops"]` counts the body of a while loop once, not times its trip
count, so for an update whose work sits in `lax.scan`s (the posterior over T steps, the imagination
over H_im steps, and their transposes in the gradient) it undercounts. This module walks the jaxpr
instead:

    dot_general               2 * size(output) * prod(contracting dims)
    conv_general_dilated      2 * size(output) * size(kernel) / out_features
    scan                      length * FLOPs(body)
    cond / switch             the most expensive branch (only one runs)
    while                     FLOPs(body) once, and `has_while` is set (trip count unknown)
    any other sub-jaxpr       (jit, custom_jvp/vjp, remat, shard_map, ...) counted once

Only matmul-type FLOPs are counted (the elementwise work is small and not what the matmul rate
measures), so `count(f)(...) / seconds / matmul_rate` is a model-FLOPs utilisation. Dead code is
removed first where JAX's internal `dce_jaxpr` is available (XLA removes it too).

    from experiments.benchmarks.flops import matmul_flops
    n = matmul_flops(f, *args)          # same call signature as f

A library module with no command line; experiments.benchmarks.update and .profile_update report its
counts (`flop_per_update`, `flop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
from jax.extend import core as jcore


@dataclass
class FlopCount:
    matmul: float = 0.0      # dot_general FLOPs
    conv: float = 0.0        # convolution FLOPs
    has_while: bool = False  # a while loop was counted once (its trip count is unknown)

    @property
    def total(self) -> float:
        return self.matmul + self.conv

    def scaled(self, k: float) -> "FlopCount":
        return FlopCount(self.matmul * k, self.conv * k, self.has_while)

    def __add__(self, other: "FlopCount") -> "FlopCount":
        return FlopCount(self.matmul + other.matmul, self.conv + other.conv, self.has_while or other.has_while)


def _size(aval) -> int:
    return int(math.prod(aval.shape))


def _dce(jaxpr):
    try:
        from jax._src.interpreters import partial_eval as pe

        return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))[0]
    except Exception:  # internal API: counting without DCE is still correct, only an upper bound
        return jaxpr


def _open(j):
    """Jaxpr of a Jaxpr or ClosedJaxpr."""
    return j.jaxpr if hasattr(j, "consts") else j


def count_jaxpr(jaxpr) -> FlopCount:
    """FLOPs of an (open) jaxpr, recursing into its sub-jaxprs."""
    total = FlopCount()
    for eqn in _dce(jaxpr).eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval
            k = math.prod(lhs.shape[d] for d in lhs_contract)
            total.matmul += 2.0 * _size(eqn.outvars[0].aval) * k
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval
            out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            total.conv += 2.0 * _size(eqn.outvars[0].aval) * _size(rhs) / rhs.shape[out_feature_dim]
        elif name == "scan":
            total = total + count_jaxpr(_open(eqn.params["jaxpr"])).scaled(eqn.params["length"])
        elif name == "cond":
            branches = [count_jaxpr(_open(b)) for b in eqn.params["branches"]]
            total = total + max(branches, key=lambda c: c.total)
        elif name == "while":
            body = count_jaxpr(_open(eqn.params["body_jaxpr"]))
            body.has_while = True
            total = total + body
        else:
            for sub in jcore.jaxprs_in_params(eqn.params):
                total = total + count_jaxpr(_open(sub))
    return total


def count(f, *args, **kwargs) -> FlopCount:
    """FlopCount of f(*args, **kwargs) (traced with jax.make_jaxpr, nothing is run)."""
    closed = jax.make_jaxpr(f)(*args, **kwargs)
    return count_jaxpr(closed.jaxpr)


def matmul_flops(f, *args, **kwargs) -> float:
    """Matmul + convolution FLOPs of one call f(*args, **kwargs), every loop iteration counted."""
    return count(f, *args, **kwargs).total
