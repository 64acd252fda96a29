"""The RL^2 runner (mamba_jax/rl2_runner.py), launcher (experiments/train_rl2.py) and throughput
benchmark (experiments/benchmarks/rl2_throughput.py) on the tiny `debug` RL^2 preset moved to
`rooms` (N x L = 2 x 10, 4 envs: 80 env steps per update; an untrained policy's returns there
differ between tasks, episodes and seeds, unlike the point robot's zeros): the files and rows of
a run, its evaluations against rl2.evaluate on the protocol's tasks, exact resume (also past a
damaged checkpoint), refusals, the command line, the benchmark's record. The compiled functions
are shared by the runner's tests."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import app, flags

from experiments import train_rl2 as launcher
from mamba_jax import evaluate as ev
from mamba_jax import rl2, rl2_runner
from mamba_jax.logging import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = rl2.get_rl2_config("debug", env="rooms", eval_tasks=8, final_eval_tasks=12)
NUM_SEEDS = 2
STEPS = 240  # 3 updates
EVAL_EVERY = 160  # chunks of 2 updates: 2, then 1 (the budget's end)
QUIET = dict(print_fn=lambda s: None)


@pytest.fixture(scope="module")
def functions():
    return rl2_runner.compile_rl2(CONFIG, NUM_SEEDS)


@pytest.fixture(scope="module")
def full_run(functions, tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("full"))
    lines = []
    out = rl2_runner.run_rl2(CONFIG, logdir, num_seeds=NUM_SEEDS, steps=STEPS, eval_every=EVAL_EVERY,
                             functions=functions, print_fn=lines.append)
    return out, logdir, lines


def strip(row):
    return {k: v for k, v in row.items() if k != "wall_seconds"}


def params_of(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def read_json(*path):
    with open(os.path.join(*path)) as f:
        return json.load(f)


def protocol_returns(state, seed: int, reset_keys, key):
    """rl2.evaluate of seed `seed`'s parameters, outside the runner: {"return": [E], ...}."""
    params = jax.tree.map(lambda x: x[seed], state.params)
    return jax.device_get(rl2.evaluate(params, CONFIG, reset_keys, key))


def test_run_writes_rows_run_json_and_final_test(full_run):
    out, logdir, lines = full_run
    rows = read_metrics(logdir)
    assert [r["env_steps"] for r in rows] == [0, 160, 240]
    assert [r["updates"] for r in rows] == [0, 2, 3] and [r["iterations"] for r in rows] == [0, 2, 3]
    for row in rows:
        # no env of rooms ends its meta-episode early: every update is num_envs * N * L real steps
        assert row["env_steps"] == row["updates"] * CONFIG.num_envs * CONFIG.meta_length
        assert row["wall_seconds"] > 0
        assert row["eval/return"] == pytest.approx(row["eval/return_episode_1"] + row["eval/return_episode_2"])
        assert row["eval/return"] == pytest.approx(np.mean(row["eval/return/per_seed"]))
        assert len(row["eval/return/per_seed"]) == NUM_SEEDS
    assert len(set(rows[-1]["eval/return/per_seed"])) == NUM_SEEDS  # the per-seed checks below are not vacuous
    reference = read_json(logdir, "reference.json")
    assert reference["episode_returns"] and len(reference["episode_returns"]) == CONFIG.num_episodes
    for row in rows:
        assert row["eval/return_vs_bayes"] == pytest.approx(row["eval/return"] / reference["return"])
        assert row["eval/return_episode_2_vs_bayes"] == pytest.approx(
            row["eval/return_episode_2"] / reference["episode_returns"][1])
    metrics = ["loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "return",
               "return_episode_1", "return_episode_2"]
    expected = {f"train/{k}" for k in metrics} | {f"train/{k}/per_seed" for k in metrics if k.startswith("return")}
    for row in rows[1:]:
        assert {k for k in row if k.startswith("train/")} == expected
        assert row["train/return"] == pytest.approx(row["train/return_episode_1"] + row["train/return_episode_2"])
        assert row["train/return"] == pytest.approx(np.mean(row["train/return/per_seed"]))
    state = out["state"]
    np.testing.assert_array_equal(state.updates, [3, 3])
    np.testing.assert_array_equal(state.env_steps, [240, 240])
    # seed i starts from fold_in(PRNGKey(0), i); rl2's init splits it in 3, the last being the eval key
    np.testing.assert_array_equal(state.eval_key, [jax.random.split(jax.random.fold_in(jax.random.PRNGKey(0), i), 3)[2]
                                                   for i in range(NUM_SEEDS)])
    info = read_json(logdir, "run.json")
    assert info["algo"] == "rl2" and info["config"] == json.loads(json.dumps(dataclasses.asdict(CONFIG)))
    assert (info["seed"], info["num_seeds"], info["chunk_iterations"], info["steps_per_iteration"]) == (0, 2, 2, 80)
    assert info["host"]["devices"] == [str(d) for d in jax.devices()]
    test = read_json(logdir, "final_test.json")
    assert test["test/num_tasks"] == 12 and test["env_steps"] == 240
    assert test["test/return"] == pytest.approx(test["test/return_episode_1"] + test["test/return_episode_2"])
    assert test["test/return"] == pytest.approx(np.mean(test["test/return/per_seed"]))
    assert sorted(os.listdir(os.path.join(logdir, "checkpoints"))) == ["160", "240"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(logdir))
    assert lines[0] == "debug (RL^2): 2 seed(s), 80 env steps per update, 3 updates in chunks of 2"
    assert lines[-1].startswith(f"final test on 12 tasks: return {test['test/return']:.4g} ep1 ")


def test_evaluations_follow_the_protocol(full_run):
    """The last row's evaluation and the final test, per seed, equal rl2.evaluate of that seed's
    parameters on evaluate.py's tasks: the run's fixed tasks (eval_reset_keys of the seed's
    eval_key, policy key from the env steps), and the fresh test tasks in blocks of eval_tasks."""
    out, logdir, _ = full_run
    state, last, test = out["state"], read_metrics(logdir)[-1], read_json(logdir, "final_test.json")
    for seed in range(NUM_SEEDS):
        eval_key, steps = state.eval_key[seed], state.env_steps[seed]
        policy_key = ev.eval_policy_key(eval_key, steps)
        stats = protocol_returns(state, seed, ev.eval_reset_keys(eval_key, CONFIG.eval_tasks), policy_key)
        assert last["eval/return/per_seed"][seed] == pytest.approx(stats["return"].mean(), rel=1e-5)
        assert last["eval/return_episode_1/per_seed"][seed] == pytest.approx(
            stats["episode_returns"][:, 0].mean(), rel=1e-5)
        tasks = ev.test_reset_keys(eval_key, 16)  # 2 blocks of 8, cut to 12
        returns = np.concatenate([protocol_returns(state, seed, tasks[8 * b:8 * b + 8],
                                                   jax.random.fold_in(policy_key, ev.TEST_FOLD + b))["return"]
                                  for b in range(2)])[:12]
        assert test["test/return/per_seed"][seed] == pytest.approx(returns.mean(), rel=1e-5)


def test_resume_is_exact(full_run, functions, tmp_path):
    """Stopped after the first chunk (160 env steps), then resumed to 240: the metrics rows, the
    parameters, the keys and the final test equal the uninterrupted run's."""
    out, logdir, _ = full_run
    part = str(tmp_path / "part")
    kwargs = dict(num_seeds=NUM_SEEDS, eval_every=EVAL_EVERY, functions=functions, **QUIET)
    rl2_runner.run_rl2(CONFIG, part, steps=160, **kwargs)
    assert [r["env_steps"] for r in read_metrics(part)] == [0, 160]
    with pytest.raises(ValueError, match="already holds checkpoints; pass resume=True"):
        rl2_runner.run_rl2(CONFIG, part, steps=STEPS, **kwargs)
    resumed = rl2_runner.run_rl2(CONFIG, part, steps=STEPS, resume=True, **kwargs)
    assert [strip(r) for r in read_metrics(part)] == [strip(r) for r in read_metrics(logdir)]
    for a, b in zip(params_of(resumed["state"]), params_of(out["state"]), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("opt_state", "key", "env_steps", "updates"):
        for a, b in zip(jax.tree.leaves(getattr(resumed["state"], name)), jax.tree.leaves(getattr(out["state"], name))):
            np.testing.assert_array_equal(a, b)
    assert read_json(part, "final_test.json") == read_json(logdir, "final_test.json")
    # stopped inside the first chunk (after 1 of its 2 updates): the run goes on with a 1-update
    # chunk to the chunk boundary (160; its train/* means cover that update only), then as the
    # uninterrupted run
    inside = str(tmp_path / "inside")
    rl2_runner.run_rl2(CONFIG, inside, steps=80, **kwargs)
    resumed = rl2_runner.run_rl2(CONFIG, inside, steps=STEPS, resume=True, **kwargs)
    rows, full = read_metrics(inside), read_metrics(logdir)
    assert [r["env_steps"] for r in rows] == [0, 80, 160, 240]
    assert {k: v for k, v in rows[2].items() if k.startswith("eval/")} == \
        {k: v for k, v in full[1].items() if k.startswith("eval/")}
    assert strip(rows[3]) == strip(full[2])
    for a, b in zip(params_of(resumed["state"]), params_of(out["state"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_skips_a_damaged_newest_checkpoint(full_run, functions, tmp_path):
    """The newest checkpoint (240) of a copy of the finished run has its largest data file cut
    short: the resume warns in one line, sets it aside, restores 160, trains the last update
    again and ends equal to the uninterrupted run."""
    out, logdir, _ = full_run
    part = str(tmp_path / "part")
    shutil.copytree(logdir, part)
    newest = os.path.join(part, "checkpoints", "240", "state")
    files = [os.path.join(r, f) for r, _, names in os.walk(newest) for f in names]
    with open(max(files, key=os.path.getsize), "r+b") as f:
        f.truncate(100)
    lines = []
    resumed = rl2_runner.run_rl2(CONFIG, part, num_seeds=NUM_SEEDS, steps=STEPS, eval_every=EVAL_EVERY, resume=True,
                                 functions=functions, print_fn=lines.append)
    warnings = [line for line in lines if line.startswith("warning")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped damaged checkpoint(s) 240 (")
    assert f"resumed {part} at 160 env steps" in lines
    assert os.listdir(os.path.join(part, "checkpoints_damaged")) == ["240"]
    assert [strip(r) for r in read_metrics(part)] == [strip(r) for r in read_metrics(logdir)]
    for a, b in zip(params_of(resumed["state"]), params_of(out["state"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_refusals(full_run, tmp_path):
    """A resume under another config names the changed field; bad arguments name what is allowed.
    (Nothing is compiled: the checks come first.)"""
    _, logdir, _ = full_run
    with pytest.raises(ValueError, match=r"different config\.lr: 0\.0003 -> 0\.001; resume with the same settings"):
        rl2_runner.run_rl2(dataclasses.replace(CONFIG, lr=1e-3), logdir, num_seeds=NUM_SEEDS, steps=STEPS,
                           resume=True, **QUIET)
    with pytest.raises(ValueError, match=r"different num_seeds: 2 -> 1"):
        rl2_runner.run_rl2(CONFIG, logdir, num_seeds=1, steps=STEPS, resume=True, **QUIET)
    with pytest.raises(ValueError, match=r"steps=40: allowed: >= num_envs \* N \* L = 80 \(one update\)"):
        rl2_runner.run_rl2(CONFIG, str(tmp_path / "a"), steps=40, **QUIET)
    with pytest.raises(ValueError, match="eval_every=0: allowed: an integer >= 1"):
        rl2_runner.run_rl2(CONFIG, str(tmp_path / "b"), eval_every=0, **QUIET)
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


# ------------------------------------------------------------------ the command line
def run_script(*args):
    return subprocess.run([sys.executable, "-m", "experiments.train_rl2", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO, MAMBA_JAX_HUGEPAGES="0"))


def test_help_lists_every_flag():
    proc = run_script("--help")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr  # absl exits with 1 after --help
    for name in ("env", "logdir", "seed", "num_seeds", "steps", "config", "eval_every", "checkpoint_every",
                 "max_to_keep", "resume", "final_test", "reference", "dry_run"):
        assert f"--{name}:" in proc.stdout or f"--[no]{name}:" in proc.stdout, name
    assert "<point_robot|escape_room|rooms|debug>" in proc.stdout


def test_bad_values_are_refused_naming_what_is_allowed():
    proc = run_script("--env=debug", "--config=gru_units=abc", "--dry_run")
    assert proc.returncode == 1 and "--config=gru_units=abc: allowed: an integer" in proc.stderr
    proc = run_script("--env=nope", "--dry_run")
    assert proc.returncode == 1 and "value should be one of <point_robot|escape_room|rooms|debug>" in proc.stderr
    cases = [
        (["bogus=1"], "unknown field 'bogus'; allowed: anneal_lr, clip_eps, "),
        (["lr=fast"], "--config=lr=fast: allowed: a number"),
        (["anneal_lr=maybe"], "--config=anneal_lr=maybe: allowed: a boolean (true/yes/on/1/false/no/off/0)"),
        (["num_envs=2.5"], "--config=num_envs=2.5: allowed: an integer"),
        (["gru_units"], "--config='gru_units': expected field=value"),
        (["num_minibatches=3"], "RL2Config.num_minibatches=3: allowed: a divisor of num_envs=4"),
        (["env=nope"], "RL2Config.env='nope': allowed: point_robot, "),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError) as refused:
            launcher.build_config("debug", overrides)
        assert message in str(refused.value)
    with pytest.raises(ValueError, match="unknown RL2 preset 'nope'; allowed: point_robot, escape_room, rooms, debug"):
        launcher.build_config("nope", [])


def test_main_passes_the_flags_to_run_rl2(monkeypatch, tmp_path, capsys):
    values = launcher.parse_overrides(["total_env_steps=1e4", "lr=3e-4", "anneal_lr=no", "env=rooms", " gru_units = 8"])
    assert values == {"total_env_steps": 10000, "lr": 3e-4, "anneal_lr": False, "env": "rooms", "gru_units": 8}
    assert type(values["total_env_steps"]) is int and type(values["lr"]) is float
    calls = []
    monkeypatch.setattr(rl2_runner, "run_rl2", lambda config, logdir, **kwargs: calls.append((config, logdir, kwargs)))
    argv = ["--env=debug", f"--logdir={tmp_path}", "--steps=800", "--config=gru_units=8", "--num_seeds=3", "--seed=5",
            "--eval_every=160", "--checkpoint_every=2", "--resume", "--noreference"]
    assert launcher.main(["train_rl2"], parsed(*argv)) == 0
    (config, logdir, kwargs), = calls
    assert (config.gru_units, config.total_env_steps, logdir) == (8, 800, str(tmp_path))
    assert kwargs == dict(seed=5, num_seeds=3, steps=800, eval_every=160, checkpoint_every=2, max_to_keep=2,
                          resume=True, final_test=True, reference=False)
    assert launcher.main(["train_rl2"], parsed("--env=debug", "--dry_run")) == 0 and len(calls) == 1
    assert capsys.readouterr().out.startswith("RL2Config(name='debug', env='point_robot', num_episodes=2")
    with pytest.raises(app.UsageError, match="--logdir is required"):
        launcher.main(["train_rl2"], parsed("--env=debug"))
    with pytest.raises(app.UsageError, match="--env is required; allowed: point_robot, escape_room, rooms, debug"):
        launcher.main(["train_rl2"], parsed(f"--logdir={tmp_path}"))
    with pytest.raises(app.UsageError, match="unexpected arguments"):
        launcher.main(["train_rl2", "extra"], parsed("--env=debug", "--dry_run"))
    assert len(calls) == 1


def parsed(*args) -> flags.FlagValues:
    """The launcher's flags in a fresh FlagValues, parsed from `args`."""
    flag_values = flags.FlagValues()
    launcher.define_flags(flag_values)
    flag_values(["train_rl2", *args])
    return flag_values


def test_throughput_benchmark_record(tmp_path):
    """experiments.benchmarks.rl2_throughput on the debug preset (1 seed, 2 timed chunks of one
    update): the record's figures follow from its own timings."""
    from experiments.benchmarks import rl2_throughput as bench

    out = tmp_path / "bench.json"
    flag_values = flags.FlagValues()
    bench.define_flags(flag_values)
    flag_values(["rl2_throughput", "--preset=debug", "--num_seeds=1", "--updates=1", "--reps=2", f"--out={out}"])
    bench.main(["rl2_throughput"], flag_values)
    record = json.loads(out.read_text())
    assert record["command"] == ("python -m experiments.benchmarks.rl2_throughput --preset=debug --num_seeds=1 "
                                 f"--updates=1 --reps=2 --out={out}")
    assert "load average" in record["uptime_before"] and record["env_steps_per_update"] == 80
    (result,) = record["results"]
    assert result["env_steps_per_chunk"] == [80, 80] and len(result["seconds"]) == 2
    assert result["median_seconds"] == pytest.approx(np.median(result["seconds"]))
    assert result["env_steps_per_second"] == pytest.approx(80 / result["median_seconds"])
    assert result["compile_and_first_chunk_seconds"] > result["median_seconds"] and result["finite_loss"]


INIT_POINT_ROBOT = """
import jax, numpy as np
from mamba_jax import rl2, rl2_runner, runner
config = rl2.get_rl2_config("point_robot")
fns = rl2_runner.compile_rl2(config, 3)
state = fns.init(jax.device_put(runner.seed_keys(0, 3), fns.sharding))
alone = jax.jit(fns.trainer.init)(runner.seed_keys(0, 3)[2])
for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(alone), strict=True):
    np.testing.assert_array_equal(np.asarray(a)[2], np.asarray(b))
print("ok", sum(x.size for x in jax.tree.leaves(alone.params)))
"""


def test_init_of_full_size_networks_for_three_seeds():
    """compile_rl2's init of the point_robot preset (GRU 256) for 3 seeds finishes (a vmapped init,
    batched QRs of the orthogonal initialisers, hung on a 2-core CPU), and its seed 2 is the
    trainer's init of that seed's key alone. In a subprocess, so that a hang fails the test."""
    proc = subprocess.run([sys.executable, "-c", INIT_POINT_ROBOT], cwd=REPO, capture_output=True, text=True,
                          timeout=180, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0 and proc.stdout.startswith("ok "), proc.stderr[-2000:]
