"""The jaxpr FLOP counter of experiments/benchmarks/flops.py against hand-counted matmul FLOPs."""

import jax
import jax.numpy as jnp

from experiments.benchmarks import flops

W = jnp.ones((512, 512))
X = jnp.ones((16, 512))
MM = 2 * 16 * 512 * 512  # one [16, 512] x [512, 512] matmul


def scan_matmuls(w, x, length=300):
    def step(c, _):
        return jnp.tanh(c @ w), None

    return jax.lax.scan(step, x, None, length=length)[0].sum()


def test_single_and_batched_dot():
    assert flops.matmul_flops(lambda a, b: a @ b, X, W) == MM
    a, b = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 7))
    assert flops.matmul_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b) == 2 * 3 * 4 * 5 * 7


def test_scan_counts_every_step_where_xla_counts_one():
    assert flops.matmul_flops(scan_matmuls, W, X) == 300 * MM
    # XLA's cost analysis counts the loop body once (why this counter exists).
    xla = jax.jit(scan_matmuls).lower(W, X).compile().cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    assert xla["flops"] < 2 * MM


def test_gradient_of_a_scan_counts_forward_and_both_transposes():
    # forward c @ w, then per step the input gradient g @ w.T and the weight gradient c.T @ g.
    assert flops.matmul_flops(jax.grad(scan_matmuls), W, X) == 3 * 300 * MM
    # only the input gradient when the weights are not differentiated
    assert flops.matmul_flops(jax.grad(scan_matmuls, argnums=1), W, X) == 2 * 300 * MM


def test_nested_jit_scan_and_vmap():
    f = jax.jit(lambda w, x: jax.lax.scan(lambda c, _: (scan_matmuls(w, x, 10) + c, None), 0.0, None, length=4)[0])
    assert flops.matmul_flops(f, W, X) == 40 * MM
    assert flops.matmul_flops(jax.vmap(scan_matmuls, (None, 0)), W, jnp.ones((5, 16, 512))) == 5 * 300 * MM


def test_cond_counts_the_most_expensive_branch_and_dead_code_is_dropped():
    def f(p, w, x):
        return jax.lax.cond(p, lambda: (x @ w @ w).sum(), lambda: (x @ w).sum())

    assert flops.matmul_flops(f, True, W, X) == 2 * MM

    def dead(w, x):
        _ = x @ w  # unused: XLA drops it, so does the counter
        return (x @ w @ w).sum()

    assert flops.matmul_flops(dead, W, X) == 2 * MM


def test_convolution():
    img = jnp.ones((2, 8, 16, 16))   # N C H W
    ker = jnp.ones((4, 8, 3, 3))     # O I kH kW
    f = lambda a, b: jax.lax.conv_general_dilated(a, b, (2, 2), "SAME")
    out = jax.eval_shape(f, img, ker).shape  # (2, 4, 8, 8)
    assert flops.matmul_flops(f, img, ker) == 2 * (2 * 4 * 8 * 8) * (8 * 3 * 3) == 2 * out[0] * out[1] * out[2] * out[3] * 72


def test_while_loop_is_flagged():
    f = lambda w, x: jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ w, c[1] + 1), (x, 0))[0]
    c = flops.count(f, W, X)
    assert c.has_while and c.total == MM
