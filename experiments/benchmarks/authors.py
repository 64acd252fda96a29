"""Our update against the MAMBA authors' unmodified PyTorch code, interleaved on one machine.

    python -m experiments.benchmarks.authors --authors_code=DIR --authors_python=PY [--rounds=3] [--cpus=0]

DIR is a git checkout of github.com/zoharri/mamba (its commit is recorded; its code and configs.yaml
are used as they are) and PY a Python with their requirements on the update path (torch, numpy,
gym, opencv, wandb, ruamel.yaml; absl-py for the driver): `experiments/benchmarks/authors_update.py`
runs there and times their `Dreamer._train` at their point-robot settings (configs.yaml: `defaults`,
then `halfcircle`), see its docstring. For `--rounds` rounds, one fresh process times our update at
`--preset` (`time_ours`: `agent.init`, then the jitted `agent.update` on a random batch of the
preset's shapes at its longest world-model horizon, the median of `--reps` calls after compilation
and `--warmup` more, run as our launchers run it: huge pages for malloc) and one times theirs, the
order alternating. Load that changes between rounds falls on both, so the per-round ratio
(their seconds / ours) is the figure to read; the record has every round's, their median and spread.

Equal work. Our H_im counts imagined transitions: point_robot's H_im = 2 imagines s_0 -> s_1 -> s_2
and trains the actor and critic on two transitions. Their `imag_horizon` counts the states s_0..s_{H-1}
(the start included): their halfcircle `imag_horizon: 2` trains on ONE transition (their code steps
the prior twice and drops the last state). Three comparisons are recorded, each against our preset
as it is: `presets` (theirs with imag_horizon = 2, as configured), `equal_imagined_transitions`
(theirs with imag_horizon = 3: two transitions, as ours), both with their `reconstruction_window`
loss off (their configs.yaml `defaults` set it to 3; we do not implement it), and `as_configured`
(their configs.yaml untouched: imag_horizon = 2 and the reconstruction window on).

`--cpus` pins every timed process to those cores (os.sched_setaffinity, so torch's and XLA's thread
pools size themselves to them); `all` leaves the affinity alone. On a shared, oversubscribed machine
torch's OpenMP threads wait for each other at every one of its many small ops: with the 2 cores at
load ~10, two updates of theirs with 2 threads took 83 and 124 s (`authors_update.py
--variant=h2:reconstruction_window=0 --reps=2 --warmup=1 --prefill=2`), against 3-6.5 s pinned to one
core in results/bench_authors.json; one core per process measures the work and not the waiting.
Writes results/bench_authors.json.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

from absl import app, flags

from experiments import child_env, read_result, write_json_record

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRIVER = ROOT / "experiments" / "benchmarks" / "authors_update.py"
AUTHORS_REPO = "github.com/zoharri/mamba"

# name -> (their options on top of `--set`, what the comparison holds equal); see the module doc.
COMPARISONS = {
    "presets": ("reconstruction_window=0",
                "both presets as configured (ours point_robot H_im = 2: two imagined transitions; theirs "
                "halfcircle imag_horizon = 2: one), their reconstruction window off"),
    "equal_imagined_transitions": ("reconstruction_window=0;imag_horizon=3",
                                   "two imagined transitions each (ours H_im = 2, theirs imag_horizon = 3), "
                                   "their reconstruction window off"),
    "as_configured": ("", "their configs.yaml untouched (imag_horizon = 2, reconstruction_window = 3) against "
                          "our preset"),
}

FLAGS = flags.FLAGS
flags.DEFINE_string("authors_code", None, f"A git checkout of {AUTHORS_REPO} (unmodified; its commit is recorded).")
flags.DEFINE_string("authors_python", sys.executable, "A Python with their requirements (torch, numpy, gym, opencv, "
                    "wandb, ruamel.yaml) and absl-py.")
flags.DEFINE_string("preset", "point_robot", "Our preset to time.")
flags.DEFINE_list("authors_configs", ["halfcircle"], "Blocks of their configs.yaml over `defaults` (their --configs).")
flags.DEFINE_integer("rounds", 3, "Rounds; each times ours and theirs once, in alternating order.", lower_bound=1)
flags.DEFINE_integer("reps", 3, "Timed updates per process (per comparison on their side).", lower_bound=1)
flags.DEFINE_integer("warmup", 1, "Untimed updates first (ours: after the compiling call).", lower_bound=0)
flags.DEFINE_string("cpus", "all", "Cores every timed process is pinned to, comma-separated (e.g. 0), or 'all'.")
flags.DEFINE_string("out", str(ROOT / "results" / "bench_authors.json"), "Where to write the JSON record.")

RECORDED_FLAGS = ("authors_code", "authors_python", "preset", "authors_configs", "rounds", "reps", "warmup", "cpus",
                  "out")


# ------------------------------------------------------------------------- our update's timer
def random_batch(key, agent_state) -> dict:
    """A batch of random arrays of the shapes `agent.update` takes for `agent_state`'s config:
    {"obs": {name: [B, S, ...]}, "action": [B, S, A], "is_first", "is_terminal": [B, S]} with
    S = T + 1 (whole meta-episodes) or the baseline's window. The update's cost does not depend
    on the values."""
    import jax
    import jax.numpy as jnp

    c = agent_state.config
    B, S = c.protocol.batch_size, (c.meta_length + 1 if c.mamba else c.protocol.window_length)
    k_obs, k_reward, k_action = jax.random.split(key, 3)
    obs = {}
    for name, shape, image in agent_state.obs_spec:
        if image:
            obs[name] = jax.random.randint(k_obs, (B, S) + shape, 0, 256).astype(jnp.uint8)
        elif name == "time":
            obs[name] = jnp.broadcast_to(jnp.linspace(0.0, 1.0, S), (B, S))
        else:
            obs[name] = jax.random.normal(jax.random.fold_in(k_obs, len(obs)), (B, S) + shape)
    obs["reward"] = (jax.random.uniform(k_reward, (B, S)) < 0.1).astype(jnp.float32)
    action = jax.random.uniform(k_action, (B, S, agent_state.action_dim), minval=-1.0, maxval=1.0)
    if agent_state.discrete:
        action = jax.nn.one_hot(jnp.argmax(action, -1), agent_state.action_dim)
    is_first = jnp.broadcast_to(jnp.arange(S) == 0, (B, S))
    return {"obs": obs, "action": action, "is_first": is_first, "is_terminal": jnp.zeros((B, S), bool)}


def time_ours(preset: str, reps: int, warmup: int, **overrides) -> dict:
    """Seconds per update of our agent at `preset` (with Config `overrides`), in this process:
    `agent.update` jitted, at the preset's longest world-model horizon (its last bucket), on one
    random batch; the median of `reps` calls after the compiling call and `warmup` more."""
    import time

    import jax
    import jax.numpy as jnp

    import envs
    from mamba_jax import agent
    from mamba_jax.config import get_config
    from mamba_jax.horizon import horizon_buckets

    config = get_config(preset, **overrides)
    env, params = envs.make(config.env, num_episodes=config.protocol.num_episodes,
                              episode_length=config.protocol.episode_length)
    state = agent.init(jax.random.PRNGKey(0), config, env.observation_space(params), env.action_space(params))
    batch = random_batch(jax.random.PRNGKey(1), state)
    h_wm = jnp.int32(horizon_buckets(config)[-1])
    update = jax.jit(agent.update)
    t = time.perf_counter()
    jax.block_until_ready(update(state, batch, jax.random.PRNGKey(2), h_wm))
    compile_seconds = time.perf_counter() - t
    for i in range(warmup):
        jax.block_until_ready(update(state, batch, jax.random.PRNGKey(3 + i), h_wm))
    times, cpu_times = [], []
    for i in range(reps):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(update(state, batch, jax.random.PRNGKey(100 + i), h_wm))
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    return {"seconds_per_update": statistics.median(times), "times": times,
            "cpu_seconds_per_update": statistics.median(cpu_times), "cpu_times": cpu_times,
            "first_call_seconds": compile_seconds, "imag_horizon": config.behavior.imag_horizon,
            "imagination_starts": config.protocol.batch_size * config.behavior.imag_starts_per_seq, "wm_horizon": int(h_wm),
            "jax": jax.__version__, "threads_available": len(os.sched_getaffinity(0))}


def _ours_child() -> None:
    """Entry of the fresh process that times ours: argv = [preset, reps, warmup]."""
    preset, reps, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("RESULT " + json.dumps(time_ours(preset, reps, warmup)))


# ------------------------------------------------------------------------- the two processes
def _pin(cpus):
    """preexec_fn for subprocess: the child's CPU affinity (None: unchanged)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def ours_command(preset: str, reps: int, warmup: int) -> list[str]:
    return [sys.executable, "-c", "from experiments.benchmarks.authors import _ours_child; _ours_child()",
            preset, str(reps), str(warmup)]


def authors_command(authors_python: str, authors_code: str, configs, reps: int, warmup: int) -> list[str]:
    """Their driver with one `--variant` per comparison (named as the comparison)."""
    cmd = [authors_python, str(DRIVER), f"--authors_code={authors_code}", f"--configs={','.join(configs)}",
           f"--reps={reps}", f"--warmup={warmup}"]
    return cmd + [f"--variant={name}:{settings}" for name, (settings, _) in COMPARISONS.items()]


def run_child(cmd: list[str], cwd, env: dict, cpus) -> dict:
    """Runs one timing process and returns its RESULT; RuntimeError with its stderr's tail if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=_pin(cpus))
    if proc.returncode != 0 or "RESULT " not in proc.stdout:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return read_result(proc.stdout)


def time_round(i: int, authors_python: str, authors_code: str, preset: str, configs, reps: int, warmup: int, cpus,
               run=None) -> dict:
    """One round: ours and theirs in fresh processes (`run(cmd, cwd, env, cpus)`, default
    `run_child`), ours first in even rounds."""
    run = run or run_child
    order = ("ours", "authors") if i % 2 == 0 else ("authors", "ours")
    result = {"order": list(order)}
    for who in order:
        if who == "ours":
            env = child_env(hugepages=True, pythonpath=str(ROOT))  # as our launchers run
            result["ours"] = run(ours_command(preset, reps, warmup), ROOT, env, cpus)
        else:  # glibc's default malloc; nothing of ours on the path; their logger's wandb off
            env = {**child_env(hugepages=False, pythonpath=""), "WANDB_MODE": "disabled"}
            result["authors"] = run(authors_command(authors_python, authors_code, configs, reps, warmup), authors_code,
                                    env, cpus)
    result["ratios"] = round_ratios(result)
    result["cpu_ratios"] = round_ratios(result, "cpu_seconds_per_update")
    return result


# ------------------------------------------------------------------------- arithmetic and the record
def round_ratios(result: dict, measure: str = "seconds_per_update") -> dict:
    """{comparison: their `measure` / ours} for one round (measure: seconds_per_update, or
    cpu_seconds_per_update: the processes' user + system time, all threads)."""
    ours = result["ours"][measure]
    return {name: result["authors"]["times"][name][measure] / ours for name in COMPARISONS}


def summarize(rounds: list[dict]) -> dict:
    """Per comparison and measure (wall-clock, CPU): the median over rounds of each side's seconds
    per update, the per-round ratios (theirs / ours), their median and their spread (min, max)."""
    out = {}
    for name, (settings, what) in COMPARISONS.items():
        out[name] = {"what": what, "their_options": settings}
        for measure in ("seconds_per_update", "cpu_seconds_per_update"):
            ratios = [round_ratios(r, measure)[name] for r in rounds]
            out[name][measure] = {
                "median_ours": statistics.median(r["ours"][measure] for r in rounds),
                "median_authors": statistics.median(r["authors"]["times"][name][measure] for r in rounds),
                "per_round_ratios": ratios, "median_ratio": statistics.median(ratios),
                "ratio_spread": [min(ratios), max(ratios)],
            }
    return out


def command(flag_values, names=RECORDED_FLAGS, module: str = "experiments.benchmarks.authors") -> str:
    """`python -m MODULE` plus every flag of `names` whose value differs from its default."""
    parts = ["python", "-m", module]
    for name in names:
        flag = flag_values[name]
        if flag.value != flag.default:
            parts.append(flag.serialize())
    return " ".join(parts)


def authors_commit(authors_code: str) -> tuple[str, list[str]]:
    """(HEAD commit of the checkout, its changed tracked files other than assets/); ValueError if
    it is not a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", authors_code, *args], capture_output=True, text=True)

    head, top = git("rev-parse", "HEAD"), git("rev-parse", "--show-toplevel")
    if head.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(authors_code):
        raise ValueError(f"--authors_code={authors_code!r} is not a git checkout of {AUTHORS_REPO} (needed for its "
                         "commit): git clone it")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)assets").stdout.split("\n")
    return head.stdout.strip(), [line[3:] for line in changed if line.strip()]


def parse_cpus(text: str):
    """'all' -> None; '0,1' -> {0, 1}; ValueError naming the allowed cores otherwise."""
    if text == "all":
        return None
    allowed = sorted(os.sched_getaffinity(0))
    try:
        cpus = {int(x) for x in text.split(",")}
    except ValueError:
        cpus = None
    if not cpus or not cpus <= set(allowed):
        raise ValueError(f"--cpus={text!r}: allowed: 'all' or comma-separated cores among {allowed}")
    return cpus


def main(argv):
    del argv
    if FLAGS.authors_code is None:
        raise app.UsageError(f"--authors_code is required: a git checkout of {AUTHORS_REPO}")
    code = os.path.abspath(FLAGS.authors_code)
    for name in ("configs.yaml", "dreamer.py", "models.py", "networks.py", "tools.py"):
        if not os.path.isfile(os.path.join(code, name)):
            raise app.UsageError(f"--authors_code={FLAGS.authors_code!r}: no {name} there "
                                 f"(a checkout of {AUTHORS_REPO})")
    try:
        cpus = parse_cpus(FLAGS.cpus)
        commit, changed = authors_commit(code)
    except ValueError as e:
        raise app.UsageError(str(e))
    if changed:
        raise app.UsageError(f"--authors_code: the checkout has local changes ({', '.join(changed)}); this benchmark "
                             "times their code unmodified")
    load_before = os.getloadavg()
    rounds = []
    for i in range(FLAGS.rounds):
        result = time_round(i, FLAGS.authors_python, code, FLAGS.preset, FLAGS.authors_configs, FLAGS.reps,
                            FLAGS.warmup, cpus)
        theirs = result["authors"]["times"]
        print(f"round {i + 1} ({' first, '.join(result['order'])} second): ours "
              f"{result['ours']['seconds_per_update']:.2f} s/update; theirs "
              + ", ".join(f"{n} {theirs[n]['seconds_per_update']:.2f} s ({result['ratios'][n]:.2f}x; CPU "
                          f"{result['cpu_ratios'][n]:.2f}x)" for n in COMPARISONS), flush=True)
        rounds.append(result)
    summary = summarize(rounds)
    for name, s in summary.items():
        for measure, unit in (("seconds_per_update", "s"), ("cpu_seconds_per_update", "CPU-s")):
            m = s[measure]
            print(f"{name}: median per-round ratio {m['median_ratio']:.2f}x (spread {m['ratio_spread'][0]:.2f}-"
                  f"{m['ratio_spread'][1]:.2f}); median {unit}/update ours {m['median_ours']:.2f}, theirs "
                  f"{m['median_authors']:.2f}")
    first = rounds[0]["authors"]
    write_json_record(FLAGS.out, {
        "command": command(FLAGS),
        "date": datetime.date.today().isoformat(),
        "authors_code": {"repository": AUTHORS_REPO, "commit": commit, "configs": FLAGS.authors_configs,
                         "variants": first["variants"], "batch_shapes": first["batch_shapes"],
                         "torch_compiled_graphs": first["torch_compiled_graphs"]},
        "preset": FLAGS.preset, "ratio": "their seconds per update / ours",
        "versions": {"torch": first["torch"], "jax": rounds[0]["ours"]["jax"], "python": platform.python_version()},
        "threads": {"torch": first["torch_threads"], "ours_cores_available": rounds[0]["ours"]["threads_available"]},
        "cpus": FLAGS.cpus, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "comparisons": summary, "rounds": rounds,
    })


if __name__ == "__main__":
    app.run(main)
