"""experiments.suite_table and experiments.decomposition on hand-written summary.json files."""

import json

import numpy as np
import pytest
from absl import app, flags

from experiments import decomposition, suite_table


def run_main(module, *args):
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    module.main(flag_values([module.__name__, *args]), flag_values)


def method(ret, per_seed, bayes=100.0, oracle=(60.0, 65.0), random=-7.0, steps=500_000, seeds=2, wall=600.0):
    """A method's entry of experiments.summarize's summary.json (only the fields the scripts read)."""
    return {"return": ret, "per_seed": per_seed, "bayes_return": bayes, "oracle_episode_returns": list(oracle),
            "random_return": random,
            "return_fraction_of_bayes": ret / bayes, "env_steps": steps, "num_seeds": seeds, "wall_seconds": wall}


def write(path, **methods):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"machine": "m", "methods": methods}))
    return path


def test_suite_table_rows(tmp_path):
    a = write(tmp_path / "a", mamba=method(80.0, [70.0, 90.0]), dreamer=method(20.0, [10.0, 30.0], wall=1500.0))
    b = write(tmp_path / "b", rl2=method(50.0, [50.0], steps=3_000_000, seeds=1))
    out = tmp_path / "t" / "suite.md"
    run_main(suite_table, f"--summary=env_a:{a}", f"--summary=env_b:{b}", f"--out={out}")
    lines = out.read_text().splitlines()
    assert lines[2] == "| env_a | MAMBA | 2 | 500.0k | 80.0 | 0.80 | 0.70..0.90 | 0.64 | 10 min |"
    assert lines[3] == "| env_a | DreamerV3 | 2 | 500.0k | 20.0 | 0.20 | 0.10..0.30 | 0.16 | 25 min |"
    assert lines[4] == "| env_b | RL² | 1 | 3.00M | 50.0 | 0.50 | 0.50..0.50 | 0.40 | 10 min |"
    for args, message in (([f"--summary={a}"], "expected LABEL:DIR"), ([f"--summary=x:{tmp_path}"], "no .*summary.json")):
        with pytest.raises(app.UsageError, match=message):
            run_main(suite_table, *args, f"--out={tmp_path / 'u.md'}")


def eval_logdir(path, evals):
    """A logdir whose metrics.jsonl holds evaluation rows [(env steps, [return per seed])]."""
    path.mkdir()
    rows = [{"env_steps": steps, "eval/return": float(np.mean(r)), "eval/return/per_seed": r} for steps, r in evals]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_suite_plot_draws_each_methods_seed_mean_over_bayes(tmp_path):
    mamba = eval_logdir(tmp_path / "m", [(0, [0.0, 10.0]), (100, [40.0, 60.0])])
    dreamer = eval_logdir(tmp_path / "d", [(0, [0.0, 0.0]), (100, [20.0, 20.0])])
    a = write(tmp_path / "a", mamba={**method(50.0, [40.0, 60.0]), "logdir": mamba},
              dreamer={**method(20.0, [20.0, 20.0]), "logdir": dreamer})
    png = tmp_path / "p" / "suite.png"
    run_main(suite_table, f"--summary=env_a:{a}", f"--out={tmp_path / 't.md'}", f"--plot={png}")
    assert png.stat().st_size > 10_000
    summaries = {"env_a": json.loads((a / "summary.json").read_text())}
    assert suite_table.plot(summaries, str(tmp_path / "q.png")) == [[0.05, 0.5], [0.0, 0.2]]  # Bayes return 100
    gone = write(tmp_path / "g", mamba={**method(1.0, [1.0]), "logdir": str(tmp_path / "missing")})
    with pytest.raises(app.UsageError, match="--plot: .*missing"):
        run_main(suite_table, f"--summary=g:{gone}", f"--out={tmp_path / 'u.md'}", f"--plot={tmp_path / 'u.png'}")


def test_decomposition_summary_in_the_issue_schema(tmp_path):
    dirs = {n: write(tmp_path / f"n{n}", mamba=method(m, [m - 5, m + 5], bayes=bayes), dreamer=method(d, [d, d], bayes=bayes))
            for n, m, d, bayes in ((2, 80.0, 40.0, 90.0), (3, 60.0, 20.0, 80.0), (4, 50.0, 5.0, 70.0))}
    out = tmp_path / "out"
    run_main(decomposition, *[f"--rooms={n}:{d}" for n, d in dirs.items()], f"--out={out}")
    study = json.loads((out / "summary.json").read_text())
    assert list(study["N"]) == ["2", "3", "4"]
    two = study["N"]["2"]
    assert two["mamba"] == pytest.approx(80 / 90) and two["dreamer"] == pytest.approx(40 / 90)
    assert two["bayes_return"] == 90.0 and two["oracle_return"] == 125.0
    assert two["env_steps"] == 500_000 and two["seeds"] == 2 and two["random_return"] == -7.0
    assert two["mamba_per_seed"] == pytest.approx([75 / 90, 85 / 90])
    assert "| 4 | 0.71 | 0.07 | -0.10 | 70.0 | 125.0 | 500,000 | 2 |" in (out / "table.md").read_text()
    assert (out / "fraction_vs_rooms.png").stat().st_size > 10_000


def test_decomposition_refuses_mismatched_runs(tmp_path):
    only_mamba = write(tmp_path / "m", mamba=method(1.0, [1.0]))
    uneven = write(tmp_path / "u", mamba=method(1.0, [1.0]), dreamer=method(1.0, [1.0], steps=1))
    other_budget = write(tmp_path / "o", mamba=method(1.0, [1.0], steps=7), dreamer=method(1.0, [1.0], steps=7))
    full = write(tmp_path / "f", mamba=method(1.0, [1.0]), dreamer=method(1.0, [1.0]))
    old = write(tmp_path / "r", mamba=method(1.0, [1.0], random=None), dreamer=method(1.0, [1.0], random=None))
    for args, message in (
        ([f"--rooms=two:{full}"], "expected N:DIR"),
        ([f"--rooms=2:{only_mamba}"], "no run of dreamer"),
        ([f"--rooms=2:{uneven}"], "differ in env_steps"),
        ([f"--rooms=2:{old}"], "no random-policy return"),
        ([f"--rooms=2:{full}", f"--rooms=3:{other_budget}"], "different env-step budgets"),
    ):
        with pytest.raises(app.UsageError, match=message):
            run_main(decomposition, *args, f"--out={tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()
