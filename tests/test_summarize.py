"""experiments.summarize on a hand-written logdir: fractions of the Bayes reference, table."""

import json

import pytest
from absl import app, flags

from experiments import summarize
from mamba_jax.config import PRESETS


def run_main(*args):
    """summarize.main with `args` parsed into fresh flags."""
    flag_values = flags.FlagValues()
    summarize.define_flags(flag_values)
    summarize.main(flag_values(["summarize", *args]), flag_values)


def write_run(path, mamba: bool, final_test: bool):
    import dataclasses

    config = dataclasses.asdict(PRESETS["point_robot_cpu"].replace(mamba=mamba, env_steps=30_000))
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"config": config, "num_seeds": 2}))
    rows = [
        {"env_steps": 7500, "wall_seconds": 10.0, "eval/return": 1.0, "eval/return_episode_1": 0.2,
         "eval/return_episode_2": 0.3, "eval/return_episode_3": 0.5},
        {"env_steps": 30000, "wall_seconds": 60.0, "updates": 300, "train/wm/loss": 1.0},
        {"env_steps": 30000, "wall_seconds": 75.0, "eval/return": 131.62455632781982,
         "eval/return_episode_1": 40.0, "eval/return_episode_2": 45.0, "eval/return_episode_3": 46.6,
         "eval/return/per_seed": [120.0, 143.2]},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if final_test:
        (path / "final_test.json").write_text(json.dumps({
            "test/return": 263.24911265563964, "test/return_episode_1": 80.0, "test/return_episode_2": 90.0,
            "test/return_episode_3": 93.2, "test/num_tasks": 1000,
            "test/positive_episode_1": 0.9, "test/positive_episode_2": 0.95, "test/positive_episode_3": 1.0, "test/return/per_seed": [260.0, 266.5]}))


def test_summary_and_table(tmp_path):
    write_run(tmp_path / "m", True, final_test=True)
    write_run(tmp_path / "d", False, final_test=False)
    out = tmp_path / "out"
    run_main("--run=mamba:" + str(tmp_path / "m"), "--run=dreamer:" + str(tmp_path / "d"),
             "--out=" + str(out), "--machine=test box")
    s = json.loads((out / "summary.json").read_text())
    m, d = s["methods"]["mamba"], s["methods"]["dreamer"]
    # Bayes reference of point_robot 3 x 100: 263.249... (results/reference_returns.json)
    assert m["return_fraction_of_bayes"] == pytest.approx(1.0, abs=1e-6)
    assert d["return_fraction_of_bayes"] == pytest.approx(0.5, abs=1e-6)
    assert m["source"] == "final_test" and m["num_tasks"] == 1000 and d["source"] == "last_eval"
    assert m["episode_returns"] == [80.0, 90.0, 93.2] and d["episode_returns"] == [40.0, 45.0, 46.6]
    assert len(m["oracle_episode_returns"]) == 3 and min(m["oracle_episode_returns"]) > 90
    assert m["random_return"] == pytest.approx(1.8842934587597846)  # point_robot's random policy, the same file
    assert m["env_steps"] == 30000 and m["wall_seconds"] == 75.0 and m["env_steps_per_second"] == 400.0
    assert d["differs_from_preset"] == {"mamba": False, "env_steps": 30000}
    table = (out / "table.md").read_text()
    assert "| mamba | 1.00 (263.2) | 80.0 (93.3)" in table and "| dreamer | 0.50 (131.6)" in table
    assert m["episode_positive_fractions"] == [0.9, 0.95, 1.0] and d["episode_positive_fractions"] == [None] * 3
    assert "| 90% / 95% / 100% |" in table and "| n/a |" in table  # the old-style log has no fractions
    assert "test box" in table


def test_bad_flags_are_refused_before_writing(tmp_path):
    write_run(tmp_path / "m", True, final_test=False)
    out = tmp_path / "out"
    for args, message in (
        (["--run=no_colon"], "--run='no_colon': expected METHOD:LOGDIR"),
        ([f"--run=a:{tmp_path / 'm'}", f"--run=a:{tmp_path / 'm'}"], "method 'a' given twice"),
        ([f"--run=a:{tmp_path}"], "no run.json"),
        ([f"--run=a:{tmp_path / 'm'}", "stray"], r"unexpected arguments \['stray'\]"),
    ):
        with pytest.raises(app.UsageError, match=message):
            run_main(*args, f"--out={out}")
    assert not out.exists()
    for args in (["--out=x"], [f"--run=a:{tmp_path / 'm'}"]):  # --run and --out are required
        with pytest.raises(flags.IllegalFlagValueError, match="must have a value other than None"):
            run_main(*args)
    with pytest.raises(ValueError, match="no run.json"):
        summarize.summarize_run(str(tmp_path))


def test_differs_from_preset_reads_rl2_runs_against_rl2_presets():
    import dataclasses

    from mamba_jax.rl2 import get_rl2_config

    config = dataclasses.asdict(get_rl2_config("debug", lr=0.125))
    assert summarize.differs_from_preset(config, "rl2") == {"lr": 0.125}
    assert summarize.differs_from_preset({**config, "name": "no_such_preset"}, "rl2") == {}
