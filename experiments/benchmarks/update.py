"""Times one full agent update (world model + actor + critic) and counts its FLOPs.

    python -m experiments.benchmarks.update            # point_robot (T=300), point_robot_cpu, reacher (T=900)
    python -m experiments.benchmarks.update --quick    # point_robot_cpu at T=300 only, few repetitions
    python -m experiments.benchmarks.update --preset=point_robot --reps=3   # one preset, its longest bucket

It runs with transparent huge pages for malloc (mamba_jax/hugepages.py; `MAMBA_JAX_HUGEPAGES=0`
turns that off) and records the minor page faults and kernel CPU seconds per update, which show
the difference (run it once with `MAMBA_JAX_HUGEPAGES=0` to compare).

For every case (preset, world-model horizon H) it reports: the compile time of the update for
that horizon bucket, seconds per update (median of timed repetitions after a warm-up), the
FLOPs of one update (below), the FLOP/s of a large float32 matmul measured in the same run, and
fraction_of_matmul = (flop_per_update / seconds_per_update) / matmul_flop_per_second.

flop_per_update counts the matmul and convolution FLOPs of the update's jaxpr with every loop
iteration included (experiments/benchmarks/flops.py: a scan body times its length, the gradient's transposed
scans included, dead code removed). XLA's own `cost_analysis()` figure is kept as
`xla_cost_analysis_flop` for comparison: it counts each while-loop body once, so it misses
most of the posterior scan over T steps and all but one imagination step (151 instead of 166
GFLOP for point_robot in results/bench_update.json). For presets with a horizon ramp it also reports the compile time of the
real `update` (all buckets in one lax.switch).

Each horizon is timed through the single-bucket function the real update dispatches to
(`agent._update_length` with the bucket's static length), so the FLOP count is that of the
branch actually run, not the sum over all branches. Batches are random arrays of the right
shapes (the update's cost does not depend on the values). Writes results/bench_update.json.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import resource
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from gymnax.environments import spaces

import mamba_jax as mj
from experiments import command_line, write_json_record
from experiments.benchmarks import flops as flop_counter
from mamba_jax import agent as agent_lib
from mamba_jax import horizon
from mamba_jax.hugepages import reexec_with_hugepage_malloc

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = str(ROOT / "results" / "bench_update.json")

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_bool("quick", False, "Time point_robot_cpu at H=300 only, with 3 repetitions unless --reps is given.",
                      flag_values=flag_values)
    flags.DEFINE_enum("preset", None, list(mj.PRESETS),
                      "Time only this preset, at its longest horizon bucket (default: point_robot and point_robot_cpu "
                      "at H=300, reacher at H=50,263,475,900).",
                      flag_values=flag_values)
    flags.DEFINE_integer("reps", None, "Timed updates per case after the warm-up (default 5; --quick: 3).",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_string("out", DEFAULT_OUT, "Output JSON file.", flag_values=flag_values)


def spaces_for(config: mj.Config):
    """Observation / action spaces of the preset's env without building it (obs dims of the spec)."""
    obs_dims = {"point_robot": 2, "point_robot_wind": 2, "escape_room": 2, "rooms": 2, "rooms_meta": 2,
                "reacher": 4, "humanoid_dir": None}
    if config.env == "reacher_pixels":
        obs = spaces.Box(0, 255, (64, 64, 3), jnp.uint8)
    elif config.env == "humanoid_dir":
        import envs  # the humanoid's observation size comes from its model

        env, params = envs.make("humanoid_dir")
        obs = env.observation_space(params).spaces["obs"]
    else:
        obs = spaces.Box(-jnp.inf, jnp.inf, (obs_dims[config.env],), jnp.float32)
    obs_space = spaces.Dict({"obs": obs, "reward": spaces.Box(-jnp.inf, jnp.inf, (), jnp.float32),
                             "time": spaces.Box(0.0, 1.0, (), jnp.float32)})
    if config.env.startswith("rooms"):
        return obs_space, spaces.Discrete(5)
    action_dim = {"reacher": 2, "reacher_pixels": 2, "humanoid_dir": 17}.get(config.env, 2)
    return obs_space, spaces.Box(-1.0, 1.0, (action_dim,), jnp.float32)


def random_batch(key, config: mj.Config, state: mj.AgentState) -> dict:
    B = config.protocol.batch_size
    S = config.meta_length + 1 if config.mamba else config.protocol.window_length
    k = jax.random.split(key, 3)
    obs = {}
    for name, shape, image in state.obs_spec:
        if image:
            obs[name] = jax.random.randint(k[0], (B, S) + shape, 0, 256).astype(jnp.uint8)
        else:
            obs[name] = jax.random.normal(k[0], (B, S) + shape)
    obs["reward"] = jax.random.normal(k[1], (B, S))
    obs["time"] = jnp.broadcast_to(jnp.linspace(0, 1, S), (B, S))
    action = jax.random.uniform(k[2], (B, S, state.action_dim), minval=-1, maxval=1)
    if state.discrete:
        action = jax.nn.one_hot(jnp.argmax(action, -1), state.action_dim)
    return {"obs": obs, "action": action, "is_first": jnp.arange(S)[None].repeat(B, 0) == 0,
            "is_terminal": jnp.zeros((B, S), bool)}


def flops_of(compiled) -> float:
    """XLA's FLOP estimate of a compiled executable (counts each loop body once)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def matmul_rate(m: int, k: int, n: int, reps: int = 10) -> float:
    """FLOP/s of a jitted float32 [m, k] x [k, n] matmul (median of `reps` calls after a warm-up)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (m, k))
    b = jax.random.normal(jax.random.PRNGKey(1), (k, n))
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t)
    return 2.0 * m * k * n / statistics.median(times)


def matmul_flop_per_second(n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a large square float32 matmul: the reference rate updates are compared with."""
    return matmul_rate(n, n, n, reps)


def bench_case(config: mj.Config, horizon: int, reps: int) -> dict:
    obs_space, action_space = spaces_for(config)
    state = mj.init(jax.random.PRNGKey(0), config, obs_space, action_space)
    batch = random_batch(jax.random.PRNGKey(1), config, state)
    lengths = horizon.horizon_buckets(config)
    length = lengths[int(horizon.bucket_index(config, horizon))] if config.mamba else lengths[0]
    fn = jax.jit(functools.partial(agent_lib._update_length, length=length))
    h = jnp.int32(horizon)
    t = time.perf_counter()
    compiled = fn.lower(state, batch, jax.random.PRNGKey(2), h).compile()
    compile_s = time.perf_counter() - t
    out = compiled(state, batch, jax.random.PRNGKey(2), h)
    jax.block_until_ready(out)
    times = []
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(reps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch, jax.random.PRNGKey(3 + i), h)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "preset": config.name,
        "batch_size": config.protocol.batch_size,
        "T": config.meta_length,
        "horizon": horizon,
        "bucket_length": length,
        "imag_starts": config.protocol.batch_size * (config.behavior.imag_starts_per_seq if config.behavior.imag_starts_per_seq > 0 else length + 1),
        "imag_horizon": config.behavior.imag_horizon,
        "seconds_per_update": statistics.median(times),
        "min_seconds_per_update": min(times),
        "page_faults_per_update": (usage1.ru_minflt - usage0.ru_minflt) / reps,
        "kernel_cpu_seconds_per_update": (usage1.ru_stime - usage0.ru_stime) / reps,
        "compile_seconds": compile_s,
        "flop_per_update": flop_counter.matmul_flops(fn, state, batch, jax.random.PRNGKey(2), h),
        "xla_cost_analysis_flop": flops_of(compiled),
        "finite_loss": bool(jnp.isfinite(metrics["wm/loss"])),
    }


def full_update_compile_seconds(config: mj.Config) -> float:
    obs_space, action_space = spaces_for(config)
    state = mj.init(jax.random.PRNGKey(0), config, obs_space, action_space)
    batch = random_batch(jax.random.PRNGKey(1), config, state)
    t = time.perf_counter()
    jax.jit(mj.update).lower(state, batch, jax.random.PRNGKey(2)).compile()
    return time.perf_counter() - t


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: reads the flags (see `define_flags`), times the cases, writes --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; this script takes flags only (see --help)")
    fv = flag_values
    if fv.preset is not None:
        cases = [(fv.preset, [mj.get_config(fv.preset).meta_length])]
        reps = fv.reps or 5
    elif fv.quick:
        cases = [("point_robot_cpu", [300])]
        reps = fv.reps or 3
    else:
        cases = [("point_robot", [300]), ("point_robot_cpu", [300]), ("reacher", [50, 263, 475, 900])]
        reps = fv.reps or 5
    matmul = matmul_flop_per_second()
    print(f"matmul float32 2048^3: {matmul / 1e9:.1f} GFLOP/s", flush=True)
    results = []
    for preset, horizons in cases:
        config = mj.get_config(preset)
        for h in horizons:
            r = bench_case(config, h, reps)
            r["matmul_flop_per_second"] = matmul
            r["fraction_of_matmul"] = r["flop_per_update"] / r["seconds_per_update"] / matmul
            results.append(r)
            print(json.dumps(r), flush=True)
    extra = {}
    if not fv.quick and fv.preset is None:
        extra["reacher_full_update_compile_seconds"] = full_update_compile_seconds(mj.get_config("reacher"))
        print(json.dumps(extra), flush=True)
    record = {
        "command": command_line("experiments.benchmarks.update", fv),
        "mode": "quick" if fv.quick else ("preset" if fv.preset else "full"),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "reps": reps,
        "cases": results,
        **extra,
    }
    write_json_record(fv.out, record)


if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # before any work: faster updates on XLA:CPU (see mamba_jax/hugepages.py)
    define_flags()
    app.run(main)
