"""Env throughput: steps per second of whole meta-episodes, vs the vmap width.

    python -m experiments.benchmarks.envs --quick               # width 1024, no MuJoCo envs (< 1 min)
    python -m experiments.benchmarks.envs                       # every env, widths 1, 64, 1024, 16384
    python -m experiments.benchmarks.envs --envs=point_robot,rooms --widths=1,64,1024 --modes=step_env

For every selected env (the meta-episode wrapper of `envs.make(name)`) and width W, one jitted
function resets W envs and runs `lax.scan` over `--meta_episodes` whole meta-episodes of T = N * L
steps, drawing uniform random actions inside the jit (one batched draw per step) and stepping the
W envs under `vmap`, in one or both of two modes (`--modes`):

* `step_env`: the wrapper's `step_env` (no auto-reset), as `mamba_jax.rollout` and
  `envs.reference.evaluate_policy` collect data: reset, then T steps (`--meta_episodes` > 1
  repeats reset + T steps);
* `auto_reset`: gymnax's `step`, which also computes a reset to a fresh task at every step and
  selects it when the meta-episode ends (`--meta_episodes` meta-episodes back to back).

Reported per mode and width:

* `steps_per_s` = W * T * meta_episodes / (best of `--repeats` timed calls after the first),
* `first_call_s` (compile + one run) and `compile_s` = first_call_s - call_s,
* `steps_per_cpu_s`: the same per second of this process's CPU time (all threads; on a shared
  machine a steadier measure of the work than wall time),

all timed with `block_until_ready`. MuJoCo envs (reacher, reacher_pixels, humanoid_dir) use
`--mujoco_widths` and are left out of `--quick` unless named in `--envs`. A plain NumPy point
robot (the same dynamics, reward and episode resets; NumPy arrays [W, 2] vectorised over the
width, a Python loop over time) gives a baseline at the same widths, and the JAX / NumPy ratio.
Writes `--out` (results/bench_envs.json). Widths that run out of memory are recorded as such.
Measure on an idle machine: the load average at start is recorded in the JSON.
"""

import json
import os
import pathlib
import platform
import time

import numpy as np
from absl import app, flags

import jax
import jax.numpy as jnp
from gymnax.environments import spaces

import envs
from experiments import check_choices

MUJOCO_ENVS = ("reacher", "reacher_pixels", "humanoid_dir")
ROOT = pathlib.Path(__file__).resolve().parents[2]

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_bool(
        "quick", False, "Width 1024, mode step_env, no MuJoCo envs unless named (< 1 min).",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "envs", None, f"Envs (default: all; --quick: all but {', '.join(MUJOCO_ENVS)}).",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "widths", None, "vmap widths (default 1,64,1024,16384; --quick: 1024).",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "mujoco_widths", ["1", "16"], "vmap widths of the MuJoCo envs (humanoid_dir: ~1e2-1e3 steps/s on CPU).",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "modes", None, "step_env and/or auto_reset (default both; --quick: step_env).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "meta_episodes", 1, "Meta-episodes per timed call.", lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "repeats", 3, "Timed calls after the first (the best is reported).", lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_bool("numpy", True, "Also time the NumPy point robot baseline.", flag_values=flag_values)
    flags.DEFINE_string("out", str(ROOT / "results" / "bench_envs.json"), "Output JSON file.", flag_values=flag_values)


def sample_actions(space, key: jax.Array, width: int) -> jax.Array:
    """[W, *shape] uniform random actions of a Discrete or Box space, in one draw."""
    if isinstance(space, spaces.Discrete):
        return jax.random.randint(key, (width,), 0, space.n, space.dtype)
    if isinstance(space, spaces.Box):
        shape = (width,) + tuple(space.shape)
        return jax.random.uniform(key, shape, jnp.float32, space.low, space.high).astype(space.dtype)
    raise ValueError(f"the env benchmark supports Discrete and Box action spaces, got {space!r}")


MODES = ("step_env", "auto_reset")


def make_rollout(env, params, width: int, meta_episodes: int, mode: str = "step_env"):
    """A jitted `run(key) -> scalar` stepping W envs through `meta_episodes` meta-episodes.

    Returns (run, number of steps per env per call)."""
    check_choices("mode", [mode], MODES)
    steps = params.num_episodes * params.episode_length
    space = env.action_space(params)
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step_env = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, key):
        state, total = carry
        key_action, key_step = jax.random.split(key)
        actions = sample_actions(space, key_action, width)
        keys = jax.random.split(key_step, width)
        if mode == "step_env":
            _, state, reward, _, _ = step_env(keys, state, actions, params)
        else:
            _, state, reward, _, _, _ = step(keys, state, actions, params)
        return (state, total + reward.sum()), None

    def meta_episodes_from(state, total, key, count):
        (state, total), _ = jax.lax.scan(body, (state, total), jax.random.split(key, steps * count))
        return state, total

    def run(key):
        total = jnp.zeros((), jnp.float32)
        if mode == "auto_reset":
            key_reset, key_scan = jax.random.split(key)
            _, state = reset(jax.random.split(key_reset, width), params)
            return meta_episodes_from(state, total, key_scan, meta_episodes)[1]
        for i in range(meta_episodes):  # reset + T steps, as a collection round does
            key_reset, key_scan = jax.random.split(jax.random.fold_in(key, i))
            _, state = reset(jax.random.split(key_reset, width), params)
            _, total = meta_episodes_from(state, total, key_scan, 1)
        return total

    return jax.jit(run), steps * meta_episodes


def time_jax(env, params, width: int, meta_episodes: int, repeats: int, mode: str = "step_env") -> dict:
    run, steps = make_rollout(env, params, width, meta_episodes, mode)
    start = time.perf_counter()
    jax.block_until_ready(run(jax.random.PRNGKey(0)))
    first = time.perf_counter() - start
    times, cpu_times = [], []
    for i in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        jax.block_until_ready(run(jax.random.PRNGKey(i + 1)))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    best = min(times)
    return {
        "steps_per_s": width * steps / best,
        "call_s": best,
        "first_call_s": first,
        "compile_s": max(first - best, 0.0),
        "steps_per_call": width * steps,
        # CPU time of this process (all threads) per call: less sensitive to other jobs than wall time.
        "steps_per_cpu_s": width * steps / max(min(cpu_times), 1e-9),
    }


def numpy_point_robot(width: int, num_episodes: int = 3, episode_length: int = 100, seed: int = 0) -> float:
    """Seconds for one meta-episode of W NumPy point robots (float32 [W, 2], Python loop over time)."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0.0, np.pi, width).astype(np.float32)
    goal = np.stack([np.cos(angle), np.sin(angle)], -1)
    pos = np.zeros((width, 2), np.float32)
    total = np.zeros(width, np.float32)
    start = time.perf_counter()
    for t in range(1, num_episodes * episode_length + 1):
        action = rng.uniform(-1.0, 1.0, (width, 2)).astype(np.float32)
        pos += np.float32(0.1) * np.clip(action, -1.0, 1.0)
        d = np.sqrt(((pos - goal) ** 2).sum(-1))
        total += np.where(d <= 0.2, 1.0 - d, 0.0).astype(np.float32)
        if t % episode_length == 0:  # next episode (same goal): back to the origin
            pos[:] = 0.0
    return time.perf_counter() - start


def bench(
    env_names, widths, mujoco_widths, meta_episodes, repeats, modes=MODES, numpy_baseline=True, log=print
) -> dict:
    """Runs the benchmark; returns the JSON-ready dict:

    {"device", "platform", "cpu_count", "load_average_at_start", "jax_version", "meta_episodes_per_call",
     "repeats", "envs": {env: {"T": T, mode: {"widths": {W: {"steps_per_s", "call_s", "first_call_s",
     "compile_s", "steps_per_call", "steps_per_cpu_s"} or {"error"}}, "best_width", "best_steps_per_s"}}},
     "numpy_point_robot": {"kind", "widths": {W: {"steps_per_s", "call_s"}}},
     "ratio_jax_over_numpy_point_robot": {W: ratio}}   (JAX in mode step_env)
    """
    check_choices("env", env_names, envs.NAMES)
    check_choices("mode", modes, MODES)
    out = {
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "jax_version": jax.__version__,
        "meta_episodes_per_call": meta_episodes,
        "repeats": repeats,
        "envs": {},
    }
    for name in env_names:
        try:
            env, params = envs.make(name)
        except ModuleNotFoundError as error:
            log(f"skip {name}: env not available ({error})")
            continue
        result = {"T": params.num_episodes * params.episode_length}
        for mode in modes:
            timings = {}
            for width in mujoco_widths if name in MUJOCO_ENVS else widths:
                try:
                    r = time_jax(env, params, width, meta_episodes, repeats, mode)
                except (MemoryError, jax.errors.JaxRuntimeError) as error:
                    if "RESOURCE_EXHAUSTED" not in str(error) and not isinstance(error, MemoryError):
                        raise
                    log(f"{name:>16s} {mode:>10s} W={width:>6d}: out of memory")
                    timings[str(width)] = {"error": "out of memory"}
                    continue
                timings[str(width)] = r
                log(
                    f"{name:>16s} {mode:>10s} W={width:>6d}: {r['steps_per_s']:10.4g} steps/s"
                    f"  ({r['steps_per_cpu_s']:.4g} per CPU-s;"
                    f" call {r['call_s']:.3f} s, compile {r['compile_s']:.2f} s)"
                )
            entry = {"widths": timings}
            timed = {w: r for w, r in timings.items() if "steps_per_s" in r}
            if timed:
                best = max(timed, key=lambda w: timed[w]["steps_per_s"])
                entry["best_width"], entry["best_steps_per_s"] = int(best), timed[best]["steps_per_s"]
            result[mode] = entry
        out["envs"][name] = result
    if numpy_baseline:
        base = {
            "kind": "NumPy arrays [W, 2] vectorised over the width, Python loop over time; one meta-episode "
            "(N x L = 3 x 100) per call, best of the repeats",
            "widths": {},
        }
        for width in widths:
            seconds = min(numpy_point_robot(width) for _ in range(max(repeats, 1)))
            sps = width * 300 / seconds
            base["widths"][str(width)] = {"steps_per_s": sps, "call_s": seconds}
            log(f"{'numpy point_robot':>16s} W={width:>6d}: {sps:10.4g} steps/s")
        out["numpy_point_robot"] = base
        jax_pr = out["envs"].get("point_robot", {}).get("step_env", {}).get("widths", {})
        out["ratio_jax_over_numpy_point_robot"] = {
            w: jax_pr[w]["steps_per_s"] / base["widths"][w]["steps_per_s"]
            for w in base["widths"]
            if "steps_per_s" in jax_pr.get(w, {})
        }
        for w, ratio in out["ratio_jax_over_numpy_point_robot"].items():
            log(f"point_robot JAX (step_env) / NumPy at W={w}: {ratio:.2f}x")
    return out


def main(argv, flag_values: flags.FlagValues = FLAGS):
    """The script: reads the flags (see `define_flags`), runs `bench`, writes --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; this script takes flags only (see --help)")
    fv = flag_values
    quick = fv.quick
    names = fv.envs or [n for n in envs.NAMES if not (quick and n in MUJOCO_ENVS)]
    modes = fv.modes or (["step_env"] if quick else list(MODES))
    try:
        widths = [int(w) for w in (fv.widths or (["1024"] if quick else ["1", "64", "1024", "16384"]))]
        mujoco_widths = [int(w) for w in fv.mujoco_widths]
    except ValueError:
        widths = mujoco_widths = [0]
    if any(w < 1 for w in widths + mujoco_widths):
        raise app.UsageError("--widths / --mujoco_widths: allowed: comma-separated integers >= 1")
    try:
        result = bench(names, widths, mujoco_widths, fv.meta_episodes, fv.repeats, modes, fv.numpy)
    except ValueError as error:
        raise app.UsageError(str(error))
    result["quick"] = quick
    os.makedirs(os.path.dirname(os.path.abspath(fv.out)), exist_ok=True)
    with open(fv.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {fv.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
