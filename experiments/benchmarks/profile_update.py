"""Where the time of one agent update goes: times and FLOP-counts its pieces separately.

    python -m experiments.benchmarks.profile_update              # point_robot (B=16, T=300, 8192 starts x H_im 2)
    python -m experiments.benchmarks.profile_update --preset=point_robot_cpu --reps=3

Each piece is the agent's own function (mamba_jax.agent / world_model / behavior / rssm), jitted
on its own, timed as the median of `--reps` calls after a warm-up (block_until_ready), and
FLOP-counted from its jaxpr with every loop iteration included (experiments/benchmarks/flops.py; XLA's
`cost_analysis()`, which counts a loop body once, is kept as `xla_flop`). The pieces:

    wm_observe_fwd    encoder + RSSM posterior scan over the T + 1 entries (forward only)
    wm_loss_fwd       world-model loss forward (observe + KL + decoder/reward/cont heads)
    wm_loss_grad      world_model.wm_value_and_grad (what the update runs)
    wm_opt_step       clip_by_global_norm + Adam on the world model's parameters
    imagine_fwd       the imagination rollout alone (N starts x H_im prior steps + actor samples)
    actor_loss_fwd    actor loss forward (imagination + reward/cont/critic heads + returns)
    actor_loss_grad   value_and_grad of the actor loss (what the update runs)
    critic_loss_grad  value_and_grad of the critic loss
    full_update       agent._update_length for the bucket (the whole update, one executable)

The sum of wm_loss_grad + wm_opt_step + actor_loss_grad + critic_loss_grad (+ two small
optimiser steps) is close to full_update; the rest is what XLA fuses or overlaps in one
executable. For each piece it reports seconds, GFLOP, GFLOP/s and the fraction of the float32
2048^3 matmul rate measured in the same run, plus the rate of matmuls with the shapes the
update's batched layers use ([8192, 768] x [768, 512] etc.) as a realistic ceiling.
Writes results/profile_update.json.
"""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

import mamba_jax as mj
from experiments import command_line, write_json_record
from experiments.benchmarks import flops as flop_counter
from experiments.benchmarks.update import flops_of, matmul_flop_per_second, matmul_rate, random_batch, spaces_for
from mamba_jax import agent as agent_lib
from mamba_jax import horizon
from mamba_jax.behavior import actor_loss, critic_loss
from mamba_jax.rssm import feature, imagine, observe, prior_step
from mamba_jax.sequence import gather_time, sample_times
from mamba_jax.world_model import wm_loss, wm_value_and_grad
from mamba_jax.hugepages import reexec_with_hugepage_malloc

ROOT = pathlib.Path(__file__).resolve().parents[2]

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_enum("preset", "point_robot", list(mj.PRESETS), "Preset whose update is profiled (its longest "
                      "horizon bucket).", flag_values=flag_values)
    flags.DEFINE_integer("reps", 5, "Timed calls per piece after the warm-up (the median is reported).",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_string("out", str(ROOT / "results" / "profile_update.json"), "Output JSON file.",
                        flag_values=flag_values)


def time_piece(name, fn, args, reps):
    """(record, output) for jit(fn)(*args): compile seconds, median seconds, XLA flops."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t
    out = jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
    rec = {"piece": name, "seconds": statistics.median(times), "min_seconds": min(times),
           "flop": flop_counter.matmul_flops(fn, *args), "xla_flop": flops_of(compiled),
           "compile_seconds": compile_s}
    return rec, out


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: reads the flags (see `define_flags`), times and counts the pieces, writes --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; this script takes flags only (see --help)")
    fv = flag_values

    config = mj.get_config(fv.preset)
    obs_space, action_space = spaces_for(config)
    state = mj.init(jax.random.PRNGKey(0), config, obs_space, action_space)
    batch = random_batch(jax.random.PRNGKey(1), config, state)
    length = horizon.horizon_buckets(config)[-1]
    h = jnp.int32(length)
    batch = jax.tree.map(lambda x: x[:, : length + 1], batch)
    wm, beh, c = state.world_model, state.behavior, config
    tx = agent_lib._optimisers(c)
    p = state.params
    key = jax.random.PRNGKey(2)

    load_start = os.getloadavg()
    mm = matmul_flop_per_second()
    feat_size = c.nets.deter + c.nets.stoch * c.nets.classes
    n_starts = c.protocol.batch_size * c.behavior.imag_starts_per_seq
    shapes = {f"{n_starts}x{feat_size}x{c.nets.head_units}": (n_starts, feat_size, c.nets.head_units),
              f"{n_starts}x{c.nets.deter}x{c.nets.units}": (n_starts, c.nets.deter, c.nets.units),
              f"{n_starts}x{c.nets.units}x{3 * c.nets.deter}": (n_starts, c.nets.units, 3 * c.nets.deter),
              f"{c.protocol.batch_size}x{c.nets.units}x{3 * c.nets.deter}": (c.protocol.batch_size, c.nets.units, 3 * c.nets.deter)}
    shape_rates = {k: matmul_rate(*v) / 1e9 for k, v in shapes.items()}
    print(f"matmul 2048^3: {mm / 1e9:.1f} GFLOP/s; layer-shaped matmuls (GFLOP/s): "
          + ", ".join(f"{k}: {v:.1f}" for k, v in shape_rates.items()), flush=True)

    records = []

    def run(name, fn, *a):
        rec, out = time_piece(name, fn, a, fv.reps)
        rec["gflop_per_s"] = rec["flop"] / rec["seconds"] / 1e9
        rec["fraction_of_matmul"] = rec["flop"] / rec["seconds"] / mm
        records.append(rec)
        print(f"{name:18s} {rec['seconds']:8.4f} s  {rec['flop'] / 1e9:8.2f} GFLOP  "
              f"{rec['gflop_per_s']:7.1f} GFLOP/s  {rec['fraction_of_matmul']:.3f} of matmul", flush=True)
        return out

    # world model
    def wm_observe(params, batch, key):
        embed = wm.embed(params, batch["obs"])
        post, prior = observe(wm.rssm, params["rssm"], embed, batch["action"], batch["is_first"], key)
        return post["deter"].sum() + prior["logits"].sum()

    run("wm_observe_fwd", wm_observe, p["wm"], batch, key)
    run("wm_loss_fwd", lambda params, b, k: wm_loss(wm, params, b, k, h, c)[0], p["wm"], batch, key)
    (_, (_, post)), g_wm = run("wm_loss_grad", lambda params, b, k: wm_value_and_grad(wm, params, b, k, h, c),
                               p["wm"], batch, key)

    def opt_step(name):
        def f(g, o, params):
            upd, o = tx[name].update(g, o, params)
            return jax.tree.map(lambda a, b: a + b, params, upd), o
        return f

    wm_params, _ = run("wm_opt_step", opt_step("wm"), g_wm, state.opt_state["wm"], p["wm"])

    # imagination starts as the update builds them
    B = c.protocol.batch_size
    idx, weight = sample_times(jax.random.PRNGKey(3), h, B, length, c.behavior.imag_starts_per_seq)
    start = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), gather_time(post, idx))
    start_weight = weight.reshape(-1)

    def imag(actor_params, wm_params, start, key):
        def policy_fn(s, k):
            return beh.sample(actor_params, jax.lax.stop_gradient(feature(s)), k)
        states, actions = imagine(prior_step(wm.rssm, wm_params["rssm"]), start, policy_fn, key, c.behavior.imag_horizon)
        return feature(states).sum() + actions.sum()

    run("imagine_fwd", imag, p["actor"], wm_params, start, key)
    a_args = (p["actor"], wm_params, p["critic"], start, start_weight, state.retnorm, key)
    run("actor_loss_fwd", lambda ap, wp, cp, s, sw, n, k: actor_loss(ap, beh, wm, wp, cp, s, sw, n, k)[0], *a_args)
    a_grad = jax.value_and_grad(actor_loss, has_aux=True)
    (_, (traj, _, _)), g_actor = run(
        "actor_loss_grad", lambda ap, wp, cp, s, sw, n, k: a_grad(ap, beh, wm, wp, cp, s, sw, n, k), *a_args)
    run("actor_opt_step", opt_step("actor"), g_actor, state.opt_state["actor"], p["actor"])
    c_grad = jax.value_and_grad(critic_loss, has_aux=True)
    _, g_critic = run("critic_loss_grad", lambda cp, sp, t, sw: c_grad(cp, beh, sp, t, sw),
                      p["critic"], p["slow_critic"], traj, start_weight)
    run("critic_opt_step", opt_step("critic"), g_critic, state.opt_state["critic"], p["critic"])
    run("full_update", lambda s, b, k, hh: agent_lib._update_length(s, b, k, hh, length=length)[1],
        state, batch, key, h)

    by = {r["piece"]: r for r in records}
    parts = ["wm_loss_grad", "wm_opt_step", "actor_loss_grad", "actor_opt_step", "critic_loss_grad", "critic_opt_step"]
    sum_parts = sum(by[k]["seconds"] for k in parts)
    full = by["full_update"]["seconds"]
    share = {k: by[k]["seconds"] / sum_parts for k in parts}
    print("share of the summed pieces: " + ", ".join(f"{k}: {v:.2f}" for k, v in share.items()))
    print(f"sum of pieces {sum_parts:.3f} s vs full update {full:.3f} s")
    record = {
        "command": command_line("experiments.benchmarks.profile_update", fv),
        "preset": fv.preset, "batch_size": B, "T": c.meta_length, "bucket_length": length,
        "imag_starts": n_starts, "imag_horizon": c.behavior.imag_horizon,
        "device": str(jax.devices()[0]), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "jax": jax.__version__, "load_average_at_end": os.getloadavg(),
        "matmul_2048_gflop_per_s": mm / 1e9, "layer_shaped_matmul_gflop_per_s": shape_rates,
        "load_average_at_start": load_start, "flop_count": "matmul + conv FLOPs of the jaxpr, loops included",
        "pieces": records, "sum_of_update_pieces_seconds": sum_parts, "share_of_summed_pieces": share,
    }
    write_json_record(fv.out, record)


if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # before any work: faster updates on XLA:CPU (see mamba_jax/hugepages.py)
    define_flags()
    app.run(main)
