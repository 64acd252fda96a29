"""Train MAMBA (or the DreamerV3 baseline) on a preset; see docs/training.md.

    python -m experiments.train --env=point_robot --logdir=runs/pr --num_seeds=4
    python -m experiments.train --env=point_robot --logdir=runs/pr_dreamer --nomamba
    python -m experiments.train --env=debug --logdir=/tmp/dbg --steps=400 --config=batch_size=8 --config=wm_lr=3e-4
    python -m experiments.train --env=point_robot --logdir=runs/pr --resume      # continue a run
    python -m experiments.train --env=point_robot --logdir=runs/pr_fb --init_from=runs/pr --config=free_bits=0.5
    python -m experiments.train --env=reacher --logdir=/shared/runs/reacher --num_seeds=8 --distributed  # on every host

Multi-process runs (TPU pods, several GPU nodes): start the same command on every host with
--distributed (the cluster is detected from the environment: Cloud TPU, SLURM, Open MPI, ...)
or with --coordinator_address, --num_processes and --process_id; see docs/training.md.

Every flag and override is validated (preset names, Config field names and types, value
ranges, env parameters) before anything is compiled; errors name the allowed values.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from mamba_jax.config import GROUP_OF, GROUPS, PRESETS, RENAMED, TOP_LEVEL, Config, get_config
from mamba_jax.hugepages import reexec_with_hugepage_malloc

FLAGS = flags.FLAGS
flags.DEFINE_enum("env", None, list(PRESETS), "Preset (sets the env and every hyperparameter).")
flags.DEFINE_string("logdir", None, "Directory for metrics.jsonl, TensorBoard events and checkpoints.")
flags.DEFINE_integer("seed", 0, "Base seed; seed i of the run uses fold_in(PRNGKey(seed), i).", lower_bound=0)
flags.DEFINE_integer("num_seeds", 1, "Seeds trained together (vmapped, sharded over devices).", lower_bound=1)
flags.DEFINE_integer("steps", None, "Budget in real env steps (default: the preset's env_steps).", lower_bound=1)
flags.DEFINE_bool("mamba", None, "MAMBA (true) or the plain DreamerV3 baseline (false); default: the preset's.")
flags.DEFINE_multi_string(
    "config", [], "Override a Config field: --config=field=value or --config=group.field=value, e.g. "
    "--config=units=64 or --config=nets.units=64 (repeatable; docs/training.md lists the groups).")
flags.DEFINE_integer(
    "chunk_iterations", None, "Iterations per jitted chunk (default: ceil(eval_every / env steps per iteration)).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "eval_every", None, "Evaluate every this many env steps (default: the preset's eval_every).", lower_bound=1
)
flags.DEFINE_integer("checkpoint_every", 1, "Checkpoint every this many chunks (and at the end).", lower_bound=1)
flags.DEFINE_integer("max_to_keep", 2, "Checkpoints kept (the newest complete ones).", lower_bound=1)
flags.DEFINE_bool("resume", False, "Continue the run in --logdir from its latest checkpoint.")
flags.DEFINE_string(
    "init_from", None,
    "Start this new run from the latest checkpoint of the run in this logdir (train state and metrics), "
    "continued with this run's config: fields that keep the state's shapes may differ (docs/training.md).")
flags.DEFINE_bool("final_test", True, "Run the final test on final_eval_tasks fresh tasks at the end.")
flags.DEFINE_bool("reference", True, "Report returns as a fraction of the Bayes-reference policy's.")
flags.DEFINE_bool("dry_run", False, "Validate the flags, print the config and exit (compiles nothing).")
flags.DEFINE_bool(
    "distributed", False,
    "Join a multi-process run: jax.distributed.initialize() before any JAX use, with the settings below where given "
    "and the rest detected from the environment (Cloud TPU, SLURM, Open MPI, ...; on a TPU pod no other flag is "
    "needed). Start the same command on every host; they train one run over the devices of all of them.")
flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of the coordinator that process 0 starts and every process connects to (implies --distributed).")
flags.DEFINE_integer(
    "num_processes", None, "Processes in the multi-process run (implies --distributed).", lower_bound=1)
flags.DEFINE_integer(
    "process_id", None, "This process's index in 0..num_processes-1 (implies --distributed).", lower_bound=0)
flags.DEFINE_integer(
    "num_cpu_devices", None,
    "XLA:CPU only: the number of CPU devices this process exposes (jax_num_cpu_devices), to run the device "
    "mesh, or with --coordinator_address several processes, on one machine (tests).", lower_bound=1)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_value(field: dataclasses.Field, text: str):
    """Parses `text` as the type of Config `field` (int, float, bool or str)."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    name = field.name
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"--config={name}={text}: allowed: a boolean ({'/'.join(_TRUE + _FALSE)})")
    if kind == "int":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--config={name}={text}: allowed: an integer") from None
        if not value.is_integer():
            raise ValueError(f"--config={name}={text}: allowed: an integer")
        return int(value)
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--config={name}={text}: allowed: a number") from None
    return text


def config_field(name: str) -> dataclasses.Field:
    """The dataclass field of a Config override name: a top-level field (env, mamba, ...), a field
    of a group named alone (units) or as GROUP.FIELD (nets.units). ValueError naming the allowed."""
    group, _, field = name.rpartition(".")
    if not group and name in TOP_LEVEL:
        return next(f for f in dataclasses.fields(Config) if f.name == name)
    if field in GROUP_OF and group in ("", GROUP_OF[field]):
        return next(f for f in dataclasses.fields(GROUPS[GROUP_OF[field]]) if f.name == field)
    if name in RENAMED:
        raise ValueError(f"--config: field {name!r} is now {RENAMED[name]!r}")
    allowed = ", ".join(sorted(TOP_LEVEL + tuple(GROUP_OF)))
    raise ValueError(f"--config: unknown field {name!r}; allowed: {allowed} (or GROUP.FIELD)")


def parse_overrides(items: list[str]) -> dict:
    """['field=value', ...] -> {field: typed value}; ValueError naming the allowed fields."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--config={item!r}: expected field=value")
        name, text = item.split("=", 1)
        name = name.strip()
        out[name] = parse_value(config_field(name), text.strip())
    return out


def build_config(preset: str, overrides: list[str], mamba: bool | None = None, steps: int | None = None) -> Config:
    """The validated Config of the flags (no JAX computation)."""
    values = parse_overrides(overrides)
    if mamba is not None:
        values["mamba"] = mamba
    if steps is not None:
        values["env_steps"] = steps
    config = get_config(preset, **values)
    import envs  # validates N, L and the env name (raises ValueError naming the allowed values)

    envs.make(config.env, num_episodes=config.protocol.num_episodes,
              episode_length=config.protocol.episode_length)
    return config


def distributed_settings() -> dict | None:
    """The keyword arguments of jax.distributed.initialize from the flags, or None when this
    process runs alone (neither --distributed nor any of the coordinator flags given)."""
    given = {name: FLAGS[name].value for name in ("coordinator_address", "num_processes", "process_id")
             if FLAGS[name].value is not None}
    if not FLAGS.distributed and not given:
        return None
    if FLAGS.num_processes is not None and FLAGS.process_id is not None and FLAGS.process_id >= FLAGS.num_processes:
        raise app.UsageError(f"--process_id={FLAGS.process_id}: allowed: 0 <= process_id < "
                             f"--num_processes={FLAGS.num_processes}")
    return given


def start_jax(settings: dict | None, num_cpu_devices: int | None) -> None:
    """Sets the CPU device count and joins the multi-process run (`settings` from
    `distributed_settings`); both must happen before JAX computes anything."""
    import jax

    if num_cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", num_cpu_devices)
    if settings is not None:
        try:
            jax.distributed.initialize(**settings)
        except ValueError as error:  # a setting neither given nor detected from the environment
            raise app.UsageError(
                f"jax.distributed.initialize: {error} Give --coordinator_address, --num_processes and "
                "--process_id, or run --distributed where JAX detects the cluster (Cloud TPU, SLURM, Open MPI)"
            ) from None


def main(argv):
    if not FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    if FLAGS.env is None:
        raise app.UsageError(f"--env is required; allowed: {', '.join(PRESETS)}")
    if FLAGS.logdir is None and not FLAGS.dry_run:
        raise app.UsageError("--logdir is required")
    if FLAGS.init_from is not None:
        if FLAGS.logdir is not None and os.path.abspath(FLAGS.logdir) == os.path.abspath(FLAGS.init_from):
            raise app.UsageError("--init_from names --logdir itself; to continue a run use --resume")
        source = os.path.join(FLAGS.init_from, "checkpoints")
        if not os.path.isdir(source) or not any(name.isdigit() for name in os.listdir(source)):
            raise app.UsageError(f"--init_from={FLAGS.init_from}: no checkpoint in {source}")
    settings = distributed_settings()
    if not FLAGS.dry_run:
        start_jax(settings, FLAGS.num_cpu_devices)  # before build_config: the env checks compute with JAX
    try:
        config = build_config(FLAGS.env, FLAGS.config, FLAGS.mamba, FLAGS.steps)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if FLAGS.dry_run:
        print(config)
        return 0
    from mamba_jax import runner  # imported after validation

    try:
        runner.run(
            config,
            FLAGS.logdir,
            seed=FLAGS.seed,
            num_seeds=FLAGS.num_seeds,
            steps=config.protocol.env_steps,
            chunk_iterations=FLAGS.chunk_iterations,
            eval_every=FLAGS.eval_every,
            checkpoint_every=FLAGS.checkpoint_every,
            max_to_keep=FLAGS.max_to_keep,
            resume=FLAGS.resume,
            init_from=FLAGS.init_from,
            final_test=FLAGS.final_test,
            reference=FLAGS.reference,
        )
    except ValueError as error:  # the runner's refusals are one line each (a resume it cannot do, ...)
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # before any work: faster updates on XLA:CPU (see mamba_jax/hugepages.py)
    sys.exit(app.run(main))
