"""The researcher's entry points besides train: `--help` of each (plot, summarize, sample_efficiency,
suite_table, decomposition, rollout, reference_returns), and the env experiments (rollout table, reference returns) in tiny modes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from absl import app, flags

import envs
import envs.reference as reference
from experiments import decomposition, plot, reference_returns, rollout, sample_efficiency, suite_table, summarize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "module, names",
    [
        (plot, ["out", "labels", "x", "reference", "title"]),
        (summarize, ["run", "out", "machine"]),
        (sample_efficiency, ["compare", "out"]),
        (suite_table, ["summary", "out", "plot"]),
        (decomposition, ["rooms", "out"]),
        (rollout, ["env", "policy", "num_tasks", "seed"]),
        (reference_returns, ["num_tasks", "envs", "policies", "seed", "chunk", "out_dir"]),
    ],
)
def test_help_lists_every_flag_with_its_help_and_the_examples(module, names):
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    assert list(flag_values) == names  # definition order
    assert all(len(flag_values[n].help) > 10 for n in names)
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-m", module.__name__, "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr  # absl's --help exits 1
    for name in names:
        assert f"  --{name}:" in result.stdout, name
    assert f"python -m {module.__name__} " in result.stdout  # the module docstring's example commands


def test_rollout_table():
    result = rollout.rollout("rooms", "oracle", num_tasks=2, seed=0)
    assert result["return"].shape == (2,) and result["episode_returns"].shape == (2, 1)
    table = rollout.format_table(result).splitlines()
    assert table[0].split() == ["task", "return", "episode", "1"]
    assert table[-1].split()[0] == "mean"
    assert float(table[-1].split()[1]) == pytest.approx(result["return"].mean(), abs=0.01)
    assert len(table) == 2 + 2 + 2  # header, rule, 2 tasks, rule, mean


def test_rollout_main_refuses_a_stray_argument():
    flag_values = flags.FlagValues()
    rollout.define_flags(flag_values)
    rest = flag_values(["prog", "rooms", "--policy=oracle"])
    with pytest.raises(app.UsageError, match=r"unexpected arguments \['rooms'\]"):
        rollout.main(rest, flag_values)


def test_bad_flags_name_allowed_values():
    for module, bad, allowed in (
        (rollout, "--env=maze", "rooms_meta"),
        (rollout, "--policy=greedy", "oracle"),
        (reference_returns, "--num_tasks=-3", "positive integer"),
    ):
        flag_values = flags.FlagValues()
        module.define_flags(flag_values)
        with pytest.raises(flags.Error, match=allowed):
            flag_values(["prog", bad])


def test_summarise_hand_values():
    summary = reference_returns.summarise(
        {"return": np.array([1.0, 3.0]), "episode_returns": np.array([[1.0, 0.0], [1.0, 2.0]])}
    )
    assert summary == {"return_mean": 2.0, "return_std": 1.0, "episode_return_means": [1.0, 1.0], "num_tasks": 2}


def test_reference_returns_shape_merge_and_skips(tmp_path, monkeypatch):
    notes = []
    results = reference_returns.reference_returns(["rooms"], ["random", "oracle", "bayes"], 4, 0, 2, log=notes.append)
    assert set(results) == {"rooms"} and set(results["rooms"]) == {"random", "oracle", "bayes"}
    for summary in results["rooms"].values():
        assert set(summary) == {
            "return_mean", "return_std", "episode_return_means", "num_tasks", "num_episodes", "episode_length"
        }
        assert (summary["num_episodes"], summary["episode_length"]) == (1, 100)
        assert len(summary["episode_return_means"]) == 1 and summary["num_tasks"] == 4
        assert summary["episode_return_means"][0] == pytest.approx(summary["return_mean"], abs=1e-4)
    rooms = results["rooms"]
    assert rooms["oracle"]["return_mean"] >= rooms["bayes"]["return_mean"] > rooms["random"]["return_mean"]

    # A missing policy module and a missing env module are skipped with a note, never faked.
    monkeypatch.setitem(reference.POLICY_MODULES, "rooms_meta", "no_such_policies")
    monkeypatch.setitem(envs._REGISTRY, "escape_room", envs._REGISTRY["escape_room"]._replace(module="no_such_env"))
    more = reference_returns.reference_returns(
        ["rooms_meta", "escape_room"], ["random", "oracle"], 2, 0, 2, log=notes.append
    )
    assert set(more) == {"rooms_meta"} and set(more["rooms_meta"]) == {"random"}
    assert any("rooms_meta/oracle" in n for n in notes) and any("skip escape_room" in n for n in notes)

    reference_returns.write(results, str(tmp_path))
    merged = reference_returns.write(more, str(tmp_path))  # keeps "rooms" from the first write
    with open(tmp_path / "reference_returns.json") as f:
        on_disk = json.load(f)
    assert on_disk == merged and set(on_disk) == {"rooms", "rooms_meta"}
    assert on_disk["rooms"] == results["rooms"]
    table = (tmp_path / "reference_returns.md").read_text()
    assert "| rooms | oracle | 4 |" in table and "| rooms_meta | random | 2 |" in table

    with pytest.raises(ValueError, match="allowed"):
        reference_returns.reference_returns(["maze"], ["random"], 2, 0, 2)
