"""The launcher (experiments/train.py): overrides, validation before any compilation, wiring to
train.run; and the plot script on a synthetic logdir."""

import json
import os
import re
import subprocess
import sys

import pytest
from absl import app as absl_app
from absl import flags as absl_flags

from experiments import plot
from experiments import train as launcher
import mamba_jax as mj
from mamba_jax import runner as tr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_overrides_types():
    values = launcher.parse_overrides(
        ["batch_size=8", "env_steps=1e4", "wm_lr=3e-4", "mamba=false", "env=escape_room", " units = 64 "]
    )
    expected = {"batch_size": 8, "env_steps": 10000, "wm_lr": 3e-4, "mamba": False, "env": "escape_room", "units": 64}
    assert values == expected
    assert type(values["env_steps"]) is int and type(values["wm_lr"]) is float


@pytest.mark.parametrize(
    "item, message",
    [
        ("bogus=1", "unknown field 'bogus'; allowed: actor_clip"),
        ("batch_size=1.5", "batch_size=1.5: allowed: an integer"),
        ("batch_size=abc", "allowed: an integer"),
        ("wm_lr=fast", "allowed: a number"),
        ("mamba=maybe", "allowed: a boolean"),
        ("batch_size", "expected field=value"),
    ],
)
def test_parse_overrides_errors(item, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        launcher.parse_overrides([item])


def test_build_config():
    config = launcher.build_config("debug", ["batch_size=8"], mamba=False, steps=400)
    assert (config.protocol.batch_size, config.mamba, config.protocol.env_steps, config.name) == (8, False, 400, "debug")
    with pytest.raises(ValueError, match="Config.protocol.batch_size=0: allowed: an integer >= 1"):
        launcher.build_config("debug", ["batch_size=0"])
    with pytest.raises(ValueError, match="unknown preset 'nope'; allowed: point_robot"):
        launcher.build_config("nope", [])
    with pytest.raises(ValueError, match="unknown env 'nope'; allowed|Config.env='nope'"):
        launcher.build_config("debug", ["env=nope"])
    assert launcher.build_config("debug", ["reward_from_deter=true"]).world_model.reward_from_deter is True
    with pytest.raises(ValueError, match="Config.world_model.reward_from_deter=1: allowed: True or False"):
        mj.get_config("debug", reward_from_deter=1)
    assert launcher.build_config("debug", ["free_bits=0.5"]).world_model.free_bits == 0.5
    with pytest.raises(ValueError, match="unknown field 'no_such_field'"):
        launcher.build_config("debug", ["no_such_field=0.1"])


def test_main_passes_flags_to_run(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(tr, "run", lambda config, logdir, **kwargs: calls.append((config, logdir, kwargs)))
    argv = ["train", "--env=debug", f"--logdir={tmp_path}", "--steps=400", "--config=batch_size=8",
            "--config=wm_lr=1e-3", "--nomamba", "--num_seeds=3", "--seed=5", "--chunk_iterations=4",
            "--eval_every=80", "--checkpoint_every=2", "--resume", f"--init_from={tmp_path / 'src'}"]
    (tmp_path / "src" / "checkpoints" / "120").mkdir(parents=True)
    launcher.FLAGS(argv)
    try:
        assert launcher.main(["train"]) == 0
    finally:
        launcher.FLAGS.unparse_flags()
    (config, logdir, kwargs), = calls
    assert (config.protocol.batch_size, config.optim.wm_lr, config.mamba, config.protocol.env_steps) == (8, 1e-3, False, 400)
    assert logdir == str(tmp_path)
    assert kwargs["num_seeds"] == 3 and kwargs["seed"] == 5 and kwargs["steps"] == 400
    assert kwargs["chunk_iterations"] == 4 and kwargs["eval_every"] == 80 and kwargs["checkpoint_every"] == 2
    assert kwargs["resume"] is True and kwargs["init_from"] == str(tmp_path / "src")


def test_config_overrides_by_field_or_group_and_field():
    config = launcher.build_config("debug", ["nets.units=16", "deter=8", "behavior.imag_horizon=2"])
    assert (config.nets.units, config.nets.deter, config.behavior.imag_horizon) == (16, 8, 2)
    for item, message in (("optim.units=16", "unknown field 'optim.units'"),
                          ("horizon_buckets=3", "field 'horizon_buckets' is now 'num_horizon_buckets'"),
                          ("nets.units=1.5", "--config=units=1.5: allowed: an integer")):
        with pytest.raises(ValueError, match=re.escape(message)):
            launcher.build_config("debug", [item])


def test_main_prints_the_runners_refusal_in_one_line(monkeypatch, tmp_path, capsys):
    """A failure the runner reports (e.g. resume with no intact checkpoint) ends the launcher with
    exit status 1 and one line on stderr, without a traceback."""
    message = f"cannot resume {tmp_path}: no intact checkpoint in {tmp_path}/checkpoints (80: meta unreadable)"

    def refuse(*args, **kwargs):
        raise ValueError(message)

    monkeypatch.setattr(tr, "run", refuse)
    launcher.FLAGS(["train", "--env=debug", f"--logdir={tmp_path}", "--resume"])
    try:
        assert launcher.main(["train"]) == 1
    finally:
        launcher.FLAGS.unparse_flags()
    assert capsys.readouterr().err == f"error: {message}\n"


def _compiled_training(stderr: str) -> list[str]:
    """Compilations (JAX_LOG_COMPILES) of the training functions; import-time constants aside."""
    names = ("init", "train_chunk", "evaluate", "rollout", "update")
    lines = [line for line in stderr.splitlines() if line.startswith("Compiling")]
    return [line for line in lines if any(n in line.split(" with ")[0] for n in names)]


def _launch(*flags):
    # MAMBA_JAX_HUGEPAGES=0: no re-exec with huge pages (it would import everything twice)
    env = dict(os.environ, JAX_LOG_COMPILES="1", PYTHONPATH=REPO, MAMBA_JAX_HUGEPAGES="0")
    return subprocess.run([sys.executable, "-m", "experiments.train", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env=bogus", "--logdir=LOG"], "value should be one of <point_robot|point_robot_wind|"),
        (["--env=debug", "--logdir=LOG", "--config=initial_wm_horizon=100"], "allowed: 1 <= initial_wm_horizon <= 20"),
    ],
)
def test_bad_flags_fail_before_compiling(flags, message, tmp_path):
    log = str(tmp_path / "log")
    result = _launch(*[f.replace("LOG", log) for f in flags])
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not _compiled_training(result.stderr) and not os.path.exists(log)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env=debug", "--logdir=LOG", "--config=foo=1"], "unknown field 'foo'; allowed:"),
        (["--env=debug", "--logdir=LOG", "--config=episode_length=0"], "allowed: an integer >= 1"),
        (["--env=debug", "--logdir=LOG", "--config=eval_tasks=-3"], "Config.eval.eval_tasks=-3: allowed: an integer >= 1"),
        (["--logdir=LOG"], "--env is required; allowed: point_robot"),
        (["--env=debug"], "--logdir is required"),
        (["--env=debug", "--logdir=LOG", "--init_from=LOG_nowhere"], "_nowhere: no checkpoint in"),
        (["--env=debug", "--logdir=LOG", "--init_from=LOG"], "--init_from names --logdir itself"),
    ],
)
def test_main_rejects_bad_values_without_running(flags, message, monkeypatch, tmp_path):
    monkeypatch.setattr(tr, "run", lambda *a, **k: pytest.fail("runner.run must not be reached"))
    launcher.FLAGS(["train"] + [f.replace("LOG", str(tmp_path / "log")) for f in flags])
    try:
        with pytest.raises(launcher.app.UsageError, match=message.replace("(", r"\(")):
            launcher.main(["train"])
    finally:
        launcher.FLAGS.unparse_flags()


def test_num_seeds_flag_bound():
    with pytest.raises(launcher.flags.IllegalFlagValueError, match="num_seeds"):
        launcher.FLAGS(["train", "--env=debug", "--num_seeds=0"])
    launcher.FLAGS.unparse_flags()


def test_dry_run_prints_the_config(tmp_path):
    result = _launch("--env=debug", "--dry_run", "--config=units=16", "--nomamba")
    assert result.returncode == 0, result.stderr
    assert "Config(name='debug'" in result.stdout and "units=16" in result.stdout and "mamba=False" in result.stdout
    assert not _compiled_training(result.stderr)


def _fake_logdir(path, seeds_returns, env_steps=(100, 200, 300)):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "run.json"), "w") as f:
        json.dump({"config": {"name": "fake", "env": "point_robot", "num_episodes": 3, "episode_length": 100}}, f)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for i, steps in enumerate(env_steps):
            per_seed = [r * (i + 1) for r in seeds_returns]
            row = {"env_steps": steps, "wall_seconds": 1.0 + i, "eval/return": sum(per_seed) / len(per_seed),
                   "eval/return/per_seed": per_seed, "eval/return_episode_1": 0.5, "eval/return_episode_2": 1.5}
            f.write(json.dumps(row) + "\n")
            f.write(json.dumps({"env_steps": steps + 1, "wall_seconds": 2.0 + i, "train/return": 1.0}) + "\n")


def test_plot_learning_curves(tmp_path):
    _fake_logdir(tmp_path / "a", [1.0, 2.0])
    _fake_logdir(tmp_path / "b", [3.0])
    _fake_logdir(tmp_path / "c", [4.0], env_steps=(50, 250))
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"point_robot": {
        "bayes": {"return_mean": 9.0, "episode_return_means": [2.0, 3.0, 4.0]},  # the registry's 3 x 100
        "random": {"return_mean": 0.1, "episode_return_means": [0.05, 0.05]},  # wrong N: ignored
    }}))
    curves = {label: plot.merge([plot.load_run(str(tmp_path / d)) for d in dirs])
              for label, dirs in {"x": ["a", "c"], "y": ["b"]}.items()}
    assert curves["x"]["series"]["eval/return"].shape == (3, 3)  # 3 points, seeds 2 (a) + 1 (c)
    # c interpolated at 200: 4 + 4 * 150 / 200
    assert curves["x"]["series"]["eval/return"][1].tolist() == [2.0, 4.0, 7.0]
    refs = plot.references(curves["x"]["info"], [], str(reference))
    assert refs["bayes"]["return"] == 9.0 and refs["bayes"]["episode_returns"] == [2.0, 3.0, 4.0]
    assert "random" not in refs  # its N does not match
    out = str(tmp_path / "fig.png")
    flag_values, rest = _plot_flags([str(tmp_path / d) for d in "abc"] + ["--labels=x,y,x", f"--out={out}",
                                                                      f"--reference={reference}"])
    assert rest[1:] == [str(tmp_path / d) for d in "abc"]  # the logdirs are the non-flag arguments
    plot.main(rest, flag_values)
    assert os.path.getsize(out) > 5000
    os.remove(out)
    for args, message in (([str(tmp_path / "a"), "--labels=x,y"], "--labels has 2 names for 1 logdirs"),
                          ([], "no logdir given")):
        flag_values, rest = _plot_flags(args + [f"--out={out}"])
        with pytest.raises(absl_app.UsageError, match=message):
            plot.main(rest, flag_values)
    assert not os.path.exists(out)
    with pytest.raises(absl_flags.IllegalFlagValueError, match="--out"):  # --out is required
        _plot_flags([str(tmp_path / "a")])


def _plot_flags(args):
    """The plot script's flags in a fresh FlagValues, parsed from `args`; and the non-flag arguments."""
    flag_values = absl_flags.FlagValues()
    plot.define_flags(flag_values)
    return flag_values, flag_values(["plot", *args])
