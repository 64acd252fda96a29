"""Times one update of the MAMBA authors' PyTorch code, unmodified (the child process of
`experiments.benchmarks.authors`; runs in a Python with torch and their requirements, not JAX).

    python experiments/benchmarks/authors_update.py --authors_code=DIR [--variant=NAME:key=value;...] [--reps=5]

DIR is a checkout of github.com/zoharri/mamba. Its own modules do the work: the configuration is
read from DIR/configs.yaml (`defaults`, then the `--configs` blocks, `halfcircle` by default: the
point robot) and every value passes through their `tools.args_type`, as their dreamer.py's command
line does; `--set=key=value` is one of their command-line options (`device=cpu` by default). The
lines of their `dreamer.main` that derive fields before training (all_layers, the encoder's and
decoder's input_reward, batch_length = N x L for mamba_context, sample_first, the action count from
the env) are repeated here, since main() also starts the whole training. Then, with their code:
the env (`dreamer.make_env`), `--prefill` meta-episodes of uniform random actions collected by
`tools.simulate` (as main's prefill, all kept: is_eval=False), one batch from
`dreamer.make_dataset`, and for every `--variant` (more of their options on top of `--set`) one
`dreamer.Dreamer` (their torch.compile wrapping included: it wraps the modules' `forward`, and
the update calls `_train`, so it runs eagerly; the result reports how many graphs torch compiled).
One update is `Dreamer._train(batch)`: the world model on 16 meta-episodes of 300 steps, then the
actor and critic from 512 posterior states per sequence. Their logger logs to wandb, here in
WANDB_MODE=disabled.

Their `ImagBehavior._imagine(start, horizon)` returns the states s_0..s_{H-1}: imag_horizon = 2
trains on ONE imagined transition (it computes a second prior step and drops it), where our H_im
counts transitions. Their configs.yaml `defaults` set reconstruction_window = 3 (extra decoder,
reward and continue heads on windows of future embeddings), which the halfcircle block keeps; we do
not implement that loss, so the default variants time it both on (as configured) and off.
Prints one line `RESULT {json}`: per variant the median and all times, wall-clock and CPU
(seconds per update after `--warmup` untimed updates; the variants' updates alternate).
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS

# dreamer.py's `__main__` reads its options from these blocks of configs.yaml.
DEFAULT_BLOCKS = ("halfcircle",)
DEFAULT_TASK = "halfcircle_point"  # make_env splits the suite ("halfcircle") off; the rest is unused there
# What experiments.benchmarks.authors compares: their settings as configured (imag_horizon = 2: one
# imagined transition; reconstruction_window = 3); the same without the reconstruction window; and
# that with imag_horizon = 3 (two imagined transitions, as our H_im = 2).
DEFAULT_VARIANTS = ("configured:", "h2:reconstruction_window=0", "h3:reconstruction_window=0;imag_horizon=3")


def define_flags(flag_values=FLAGS) -> None:
    """This script's flags (defined on demand, so that importing the module defines none)."""
    flags.DEFINE_string("authors_code", None, "A checkout of github.com/zoharri/mamba (configs.yaml, dreamer.py, "
                        "models.py, ...).", flag_values=flag_values, required=True)
    flags.DEFINE_list("configs", list(DEFAULT_BLOCKS), "Blocks of their configs.yaml applied over `defaults`, in order "
                      "(their --configs).", flag_values=flag_values)
    flags.DEFINE_string("task", DEFAULT_TASK, "Their --task (suite_name).", flag_values=flag_values)
    flags.DEFINE_multi_string("set", ["device=cpu"], "key=value: one of their command-line options, parsed by their "
                              "tools.args_type (repeat the flag for several).", flag_values=flag_values)
    flags.DEFINE_multi_string("variant", list(DEFAULT_VARIANTS), "NAME:key=value;key=value: a Dreamer to time with "
                              "these of their options on top of --set (NAME: only a label).", flag_values=flag_values)
    flags.DEFINE_integer("prefill", None, "Meta-episodes of random actions to sample the batch from (default: "
                         "their config's prefill).", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("reps", 5, "Timed updates per variant.", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("warmup", 2, "Untimed updates per variant first.", lower_bound=0, flag_values=flag_values)


# ------------------------------------------------------------------ configuration (no torch needed)
def load_configs(authors_code: str, load=None) -> dict:
    """DIR/configs.yaml as a dict, read by `load(text)` (default: ruamel.yaml's safe_load, as their
    dreamer.py; YAML 1.2, so `1e-4` is a float)."""
    path = pathlib.Path(authors_code) / "configs.yaml"
    if not path.is_file():
        raise ValueError(f"no configs.yaml in {authors_code!r}; it must be a checkout of github.com/zoharri/mamba")
    if load is None:
        import ruamel.yaml as yaml  # their requirement (ruamel.yaml==0.17.4)

        load = yaml.safe_load
    return load(path.read_text())


def merge_blocks(configs: dict, names) -> dict:
    """`defaults` then each block of `names`, as dreamer.py's `recursive_update`: a nested dict
    is merged key by key, anything else replaces. `configs` is left unchanged."""
    unknown = [n for n in names if n not in configs]
    if unknown or "defaults" not in configs:
        missing = unknown or ["defaults"]
        raise ValueError(f"configs.yaml has no block {missing[0]!r}; allowed: {', '.join(configs)}")

    def update(base, new):
        for key, value in new.items():
            if isinstance(value, dict) and key in base:
                update(base[key], value)
            else:
                base[key] = copy.deepcopy(value)

    merged = {}
    for name in ("defaults", *names):
        update(merged, configs[name])
    return merged


def parse_settings(settings, flag: str = "set") -> dict:
    """['key=value', ...] -> {key: 'value'}; ValueError for an entry without '='."""
    out = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{flag}: {item!r}: allowed: key=value")
        out[key] = value
    return out


def parse_variants(specs) -> dict:
    """['NAME:key=value;key=value', ...] -> {NAME: {key: 'value'}}; ValueError for a spec without a
    name, with a bad setting, or repeating a name."""
    out = {}
    for spec in specs:
        name, sep, rest = spec.partition(":")
        if not sep or not name:
            raise ValueError(f"--variant={spec!r}: allowed: NAME:key=value;key=value (settings may be empty)")
        if name in out:
            raise ValueError(f"--variant={spec!r}: the name {name!r} is used twice")
        out[name] = parse_settings([item for item in rest.split(";") if item], "variant")
    return out


def config_values(merged: dict, overrides: dict, args_type) -> dict:
    """Every field as their command line gives it: `args_type(default)(value)` with the value from
    `overrides` (strings, as typed on their command line) or the merged default. Unknown keys in
    `overrides` raise ValueError (their argparse would reject them too)."""
    unknown = sorted(set(overrides) - set(merged))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for their dreamer.py; allowed: {', '.join(sorted(merged))}")
    return {k: args_type(v)(overrides.get(k, v)) for k, v in merged.items()}


def derive_fields(config) -> None:
    """The lines of their `dreamer.main` that set fields before anything is built (in place)."""
    if config.all_layers != 0:
        config.reward_layers = config.all_layers
        config.cont_layers = config.all_layers
        config.value_layers = config.all_layers
        config.actor_layers = config.all_layers
    config.decoder["input_reward"] = config.meta_learning
    config.encoder["input_reward"] = config.meta_learning
    if config.mamba_context:
        config.batch_length = config.num_meta_episodes * config.max_episode_length
    config.sample_first = config.mamba_context
    if not config.meta_learning and config.num_meta_episodes > 1:
        raise ValueError("Cannot use more than one meta episode without meta learning")
    config.steps //= config.action_repeat
    config.log_every //= config.action_repeat
    config.time_limit //= config.action_repeat


def make_config(authors_code: str, blocks, task: str, overrides: dict, args_type, load=None):
    """Their config namespace (argparse.Namespace, as their main receives it) before the env."""
    import argparse

    merged = merge_blocks(load_configs(authors_code, load), blocks)
    config = argparse.Namespace(**config_values(merged, {"task": task, **overrides}, args_type))
    derive_fields(config)
    return config


# ------------------------------------------------------------------ their code (needs torch)
def _use_their_modules(authors_code: str) -> None:
    """Puts DIR first on sys.path and drops this script's folder (whose modules could shadow theirs)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [authors_code] + [p for p in sys.path if os.path.abspath(p or ".") != here]
    os.environ.setdefault("WANDB_MODE", "disabled")  # their Logger calls wandb.init


def build(authors_code: str, blocks, task: str, overrides: dict, variants: dict, prefill: int | None):
    """({variant name: a no-argument function running one `Dreamer._train` on a fixed batch},
    facts about the run: torch version and threads, the batch's shapes, each variant's settings)."""
    _use_their_modules(authors_code)
    import collections

    import torch
    from torch import distributions as torchd

    import dreamer
    import tools
    from parallel import Damy

    def config_for(settings):
        config = make_config(authors_code, blocks, task, {**overrides, **settings}, tools.args_type)
        config.num_actions = action_space.shape[0]
        return config

    probe = make_config(authors_code, blocks, task, overrides, tools.args_type)
    helper_env = dreamer.make_env(probe, "eval")
    obs_space, action_space = helper_env.observation_space, helper_env.action_space
    if hasattr(action_space, "n"):
        raise ValueError(f"--task={task!r} has discrete actions; this driver times the continuous point robot")
    probe.num_actions = action_space.shape[0]
    logger = tools.Logger(0, probe)

    # main's prefill: uniform random actions through tools.simulate, one env
    random_actor = torchd.independent.Independent(
        torchd.uniform.Uniform(torch.Tensor(action_space.low)[None], torch.Tensor(action_space.high)[None]), 1)

    def random_agent(o, d, s):
        action = random_actor.sample()
        return {"action": action, "logprob": random_actor.log_prob(action)}, None

    episodes = collections.OrderedDict()
    with tempfile.TemporaryDirectory() as directory:
        tasks = [helper_env.sample_task() for _ in range(prefill or probe.prefill)]
        tools.simulate(random_agent, [Damy(dreamer.make_env(probe, "train"))], tasks, episodes,
                       pathlib.Path(directory), logger, is_eval=False, limit=probe.dataset_size,
                       num_meta_episodes=probe.num_meta_episodes)
    batch = next(dreamer.make_dataset(episodes, probe))

    updates, settings = {}, {}
    for name, extra in variants.items():
        config = config_for(extra)
        agent = dreamer.Dreamer(obs_space, action_space, config, logger, None).to(config.device)
        agent.requires_grad_(requires_grad=False)  # as their main
        updates[name] = (lambda a: lambda: a._train(batch))(agent)
        settings[name] = {"imag_horizon": config.imag_horizon, "reconstruction_window": config.reconstruction_window,
                          **{k: getattr(config, k) for k in extra}}
    facts = {"variants": settings, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
             "batch_shapes": {k: list(v.shape) for k, v in batch.items()},
             "batch_length": probe.batch_length, "batch_size": probe.batch_size,
             "behavior_batch_length": probe.behavior_batch_length, "compile": probe.compile}
    return updates, facts


def time_updates(updates: dict, reps: int, warmup: int, clock=time.perf_counter, cpu_clock=time.process_time) -> dict:
    """{key: {"seconds_per_update", "cpu_seconds_per_update": medians, "times", "cpu_times": [...]}}
    (CPU: the process's user + system time, all threads); the keys' updates alternate, and the
    order alternates between repetitions."""
    keys = list(updates)
    for _ in range(warmup):
        for key in keys:
            updates[key]()
    times = {key: [] for key in keys}
    cpu_times = {key: [] for key in keys}
    for i in range(reps):
        for key in (keys if i % 2 == 0 else keys[::-1]):
            t, c = clock(), cpu_clock()
            updates[key]()
            times[key].append(clock() - t)
            cpu_times[key].append(cpu_clock() - c)
    return {key: {"seconds_per_update": statistics.median(times[key]), "times": times[key],
                  "cpu_seconds_per_update": statistics.median(cpu_times[key]), "cpu_times": cpu_times[key]}
            for key in keys}


def main(argv):
    del argv
    try:
        overrides, variants = parse_settings(FLAGS.set), parse_variants(FLAGS.variant)
    except ValueError as e:
        raise app.UsageError(str(e))
    updates, facts = build(FLAGS.authors_code, FLAGS.configs, FLAGS.task, overrides, variants, FLAGS.prefill)
    result = time_updates(updates, FLAGS.reps, FLAGS.warmup)
    import torch._dynamo.utils

    facts["torch_compiled_graphs"] = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    print("RESULT " + json.dumps({"times": result, **facts}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
