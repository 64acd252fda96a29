"""Train the RL^2 baseline (mamba_jax/rl2.py: a GRU actor-critic trained with PPO over whole
meta-episodes) on a preset; the logdir has the layout of experiments.train's (metrics.jsonl with
the same keys, run.json, checkpoints, final_test.json; experiments.plot draws both).

    python -m experiments.train_rl2 --env=point_robot --logdir=runs/rl2_pr --num_seeds=3
    python -m experiments.train_rl2 --env=debug --logdir=/tmp/rl2_dbg --steps=400 --config=gru_units=32 --config=lr=1e-3
    python -m experiments.train_rl2 --env=point_robot --logdir=runs/rl2_pr --num_seeds=3 --resume   # continue a run
    python -m experiments.train_rl2 --env=rooms --config=num_envs=32 --config=num_minibatches=8 --dry_run

Presets (mamba_jax.rl2.RL2_PRESETS) have the N x L, budget and evaluation interval of MAMBA's
presets of the same name. Every flag and override is validated (preset names, RL2Config field
names and types, value ranges, env parameters) before anything is compiled; errors name the
allowed values.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags
from absl import logging as absl_logging

from mamba_jax.hugepages import reexec_with_hugepage_malloc
from mamba_jax.rl2 import RL2_PRESETS, RL2Config, get_rl2_config

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines this script's flags (called only when run as a script, so importing is side-effect free)."""
    fv = dict(flag_values=flag_values)
    flags.DEFINE_enum("env", None, list(RL2_PRESETS), "RL^2 preset (sets the env, N x L and every hyperparameter).",
                      **fv)
    flags.DEFINE_string("logdir", None, "Directory for metrics.jsonl, TensorBoard events and checkpoints.", **fv)
    flags.DEFINE_integer("seed", 0, "Base seed; seed i of the run uses fold_in(PRNGKey(seed), i).", lower_bound=0,
                         **fv)
    flags.DEFINE_integer("num_seeds", 1, "Seeds trained together (vmapped).", lower_bound=1, **fv)
    flags.DEFINE_integer("steps", None, "Budget in env steps (default: the preset's total_env_steps); sets "
                         "total_env_steps, over which the learning rate anneals, so a resume needs the same value.",
                         lower_bound=1, **fv)
    flags.DEFINE_multi_string("config", [], "Override an RL2Config field: --config=field=value", **fv)
    flags.DEFINE_integer("eval_every", None, "Evaluate every this many env steps (default: the preset's "
                         "eval_every); a jitted chunk holds ceil(eval_every / (num_envs * N * L)) updates.",
                         lower_bound=1, **fv)
    flags.DEFINE_integer("checkpoint_every", 1, "Checkpoint every this many chunks (and at the end).", lower_bound=1,
                         **fv)
    flags.DEFINE_integer("max_to_keep", 2, "Checkpoints kept (the newest complete ones).", lower_bound=1, **fv)
    flags.DEFINE_bool("resume", False, "Continue the run in --logdir from its newest intact checkpoint.", **fv)
    flags.DEFINE_bool("final_test", True, "Run the final test on final_eval_tasks fresh tasks at the end.", **fv)
    flags.DEFINE_bool("reference", True, "Report returns as a fraction of the Bayes-reference policy's.", **fv)
    flags.DEFINE_bool("dry_run", False, "Validate the flags, print the config and exit (compiles nothing).", **fv)


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _parse_int(text: str):
    """int of "8" or "1e6"; None when the text is no whole number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _parse_float(text: str):
    try:
        return float(text)
    except ValueError:
        return None


# RL2Config's field types as written ("int", ...: postponed annotations) -> (parser, what is allowed)
_PARSERS = {
    "int": (_parse_int, "an integer"),
    "float": (_parse_float, "a number"),
    "bool": (lambda text: _BOOLEANS.get(text.lower()), f"a boolean ({'/'.join(_BOOLEANS)})"),
}


def parse_overrides(items: list[str]) -> dict:
    """['field=value', ...] -> {field: value of the RL2Config field's type (int, float, bool, str)};
    ValueError naming the allowed fields or values."""
    types = {f.name: f.type for f in dataclasses.fields(RL2Config)}
    out = {}
    for item in items:
        name, sep, text = (part.strip() for part in item.partition("="))
        if not sep:
            raise ValueError(f"--config={item!r}: expected field=value")
        if name not in types:
            raise ValueError(f"--config: unknown field {name!r}; allowed: {', '.join(sorted(types))}")
        value = text
        if types[name] in _PARSERS:
            parse, allowed = _PARSERS[types[name]]
            value = parse(text)
            if value is None:
                raise ValueError(f"--config={name}={text}: allowed: {allowed}")
        out[name] = value
    return out


def build_config(preset: str, overrides: list[str], steps: int | None = None) -> RL2Config:
    """The validated RL2Config of the flags (no JAX computation)."""
    values = parse_overrides(overrides)
    if steps is not None:
        values["total_env_steps"] = steps
    config = get_rl2_config(preset, **values)
    import envs  # validates N and L for the env (ValueError naming the allowed values)

    envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    return config


def main(argv, flag_values: flags.FlagValues = FLAGS) -> int:
    """The script: validates the flags (see `define_flags`), then rl2_runner.run_rl2."""
    fv = flag_values
    if "verbosity" not in fv or not fv["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; every option is a --flag")
    if fv.env is None:
        raise app.UsageError(f"--env is required; allowed: {', '.join(RL2_PRESETS)}")
    if fv.logdir is None and not fv.dry_run:
        raise app.UsageError("--logdir is required")
    try:
        config = build_config(fv.env, fv.config, fv.steps)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if fv.dry_run:
        print(config)
        return 0
    from mamba_jax.rl2_runner import run_rl2  # imported after validation

    run_rl2(config, fv.logdir, seed=fv.seed, num_seeds=fv.num_seeds, steps=config.total_env_steps,
            eval_every=fv.eval_every, checkpoint_every=fv.checkpoint_every, max_to_keep=fv.max_to_keep,
            resume=fv.resume, final_test=fv.final_test, reference=fv.reference)
    return 0


if __name__ == "__main__":
    reexec_with_hugepage_malloc()  # before any work: faster updates on XLA:CPU (see mamba_jax/hugepages.py)
    define_flags()
    sys.exit(app.run(main))
