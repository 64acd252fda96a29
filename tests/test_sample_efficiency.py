"""experiments.sample_efficiency on hand-written logdirs: RL²'s env steps to MAMBA's fraction, the ratio."""

import dataclasses
import json

import numpy as np
import pytest
from absl import app, flags

from experiments import sample_efficiency as se
from mamba_jax.config import PRESETS
from mamba_jax.rl2 import get_rl2_config

BAYES = 263.24911265563964  # point_robot 3 x 100, results/reference_returns.json


def run_main(*args):
    flag_values = flags.FlagValues()
    se.define_flags(flag_values)
    se.main(flag_values(["sample_efficiency", *args]), flag_values)


def write_run(path, config: dict, algo: str, evals: list[tuple[int, list[float]]], final: float, wall: float):
    """A logdir whose eval rows have per-seed returns `evals` [(env steps, [fraction of Bayes per seed])]
    and whose final test returns `final` * Bayes."""
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"config": config, "num_seeds": len(evals[0][1]), "algo": algo}))
    rows = [{"env_steps": steps, "wall_seconds": wall * steps / evals[-1][0],
             "eval/return": float(np.mean(f)) * BAYES, "eval/return/per_seed": [x * BAYES for x in f],
             "eval/return_episode_1": 0.0, "eval/return_episode_2": 0.0, "eval/return_episode_3": 0.0}
            for steps, f in evals]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "final_test.json").write_text(json.dumps({
        "test/return": final * BAYES, "test/num_tasks": 1000, "test/return_episode_1": 0.0,
        "test/return_episode_2": 0.0, "test/return_episode_3": 0.0}))


@pytest.fixture
def runs(tmp_path):
    mamba = dataclasses.asdict(PRESETS["point_robot_cpu"])
    rl2 = dataclasses.asdict(get_rl2_config("point_robot"))
    write_run(tmp_path / "mamba", mamba, "mamba", [(0, [0.0, 0.0]), (600_000, [0.3, 0.5])], 0.4, 3600.0)
    # RL²'s seed mean: 0.1, 0.35 (one seed above 0.4: not yet), 0.45 (reached at 2M), 0.3
    write_run(tmp_path / "rl2", rl2, "rl2", [(0, [0.0, 0.0]), (1_000_000, [0.1, 0.1]), (1_500_000, [0.2, 0.5]),
                                             (2_000_000, [0.4, 0.5]), (3_000_000, [0.3, 0.3])], 0.3, 1200.0)
    write_run(tmp_path / "slow", rl2, "rl2", [(0, [0.0, 0.0]), (900_000, [0.35, 0.39])], 0.37, 600.0)
    return tmp_path


def test_steps_to_reach_is_the_first_seed_mean_at_or_above_the_target():
    steps = np.array([0, 10, 20, 30])
    fractions = np.array([[0.0, 0.0], [0.5, 0.1], [0.3, 0.3], [0.9, 0.9]])
    assert se.steps_to_reach(steps, fractions, 0.3) == 10  # mean 0.3 >= 0.3 at 10
    assert se.steps_to_reach(steps, fractions, 0.31) == 30
    assert se.steps_to_reach(steps, fractions, 0.95) is None


def test_summary_table_and_plot(runs):
    out = runs / "out"
    run_main(f"--compare=point_robot:{runs / 'mamba'}:{runs / 'rl2'}",
             f"--compare=slow_env:{runs / 'mamba'}:{runs / 'slow'}:{runs / 'mamba'}", f"--out={out}")
    s = json.loads((out / "summary.json").read_text())
    pr = s["point_robot"]
    assert pr["mamba_fraction_of_bayes"] == pytest.approx(0.4) and pr["mamba_env_steps"] == 600_000
    assert pr["rl2_fraction_of_bayes"] == pytest.approx(0.3) and pr["rl2_env_steps"] == 3_000_000
    assert pr["rl2_wall_seconds"] == 1200.0
    assert pr["rl2_env_steps_to_mamba_fraction"] == 2_000_000
    assert pr["sample_efficiency_ratio"] == pytest.approx(2_000_000 / 600_000) and pr["ratio_lower_bound"] is None
    slow = s["slow_env"]
    assert slow["rl2_env_steps_to_mamba_fraction"] is None and slow["sample_efficiency_ratio"] is None
    assert slow["ratio_lower_bound"] == pytest.approx(1.5) and slow["dreamer_fraction_of_bayes"] == pytest.approx(0.4)
    table = (out / "sample_efficiency.md").read_text()
    assert "| point_robot | 0.40 (600,000) | 0.30 (3,000,000, 20 min) | 2,000,000 | 3.3x |" in table
    assert "| slow_env | 0.40 (600,000) | 0.37 (900,000, 10 min) | not reached in 900,000 | > 1.5x |" in table
    assert (out / "sample_efficiency.png").stat().st_size > 10_000


def test_bad_flags_are_refused_before_writing(runs):
    out = runs / "out"
    for args, message in (
        (["--compare=env:only_one"], "expected ENV:MAMBA_LOGDIR:RL2_LOGDIR"),
        ([f"--compare=e:{runs / 'mamba'}:{runs / 'rl2'}"] * 2, "environment 'e' given twice"),
        ([f"--compare=e:{runs}:{runs / 'rl2'}"], "no run.json"),
        ([f"--compare=e:{runs / 'mamba'}:{runs / 'rl2'}", "stray"], r"unexpected arguments \['stray'\]"),
    ):
        with pytest.raises(app.UsageError, match=message):
            run_main(*args, f"--out={out}")
    assert not out.exists()
