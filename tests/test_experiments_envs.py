"""The env experiments (rollout table, reference returns, env benchmark) in tiny modes."""

import json

import numpy as np
import pytest

import jax
from absl import app, flags

import envs
import envs.reference as reference
from experiments import bench_envs, reference_returns, rollout


def test_rollout_table():
    result = rollout.rollout("rooms", "oracle", num_tasks=2, seed=0)
    assert result["return"].shape == (2,) and result["episode_returns"].shape == (2, 1)
    table = rollout.format_table(result).splitlines()
    assert table[0].split() == ["task", "return", "episode", "1"]
    assert table[-1].split()[0] == "mean"
    assert float(table[-1].split()[1]) == pytest.approx(result["return"].mean(), abs=0.01)
    assert len(table) == 2 + 2 + 2  # header, rule, 2 tasks, rule, mean


def test_bad_flags_name_allowed_values():
    for module, bad, allowed in (
        (rollout, "--env=maze", "rooms_meta"),
        (rollout, "--policy=greedy", "oracle"),
        (bench_envs, "--repeats=0", "positive integer"),
        (reference_returns, "--num_tasks=-3", "positive integer"),
    ):
        flag_values = flags.FlagValues()
        module.define_flags(flag_values)
        with pytest.raises(flags.Error, match=allowed):
            flag_values(["prog", bad])


def test_bench_main_rejects_bad_widths_and_envs(tmp_path):
    for bad, allowed in (("--widths=a", "integers >= 1"), ("--widths=0", "integers >= 1"), ("--envs=maze", "rooms")):
        flag_values = flags.FlagValues()
        bench_envs.define_flags(flag_values)
        flag_values(["prog", bad, f"--out={tmp_path / 'b.json'}"])
        with pytest.raises(app.UsageError, match=allowed):
            bench_envs.main([], flag_values)
    assert not (tmp_path / "b.json").exists()


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


def test_bench_rollout_counts_every_step():
    # With both rewards set to -1, the total reward is exactly -(W * steps).
    env, params = envs.make("rooms", num_rooms=1, episode_length=7, step_reward=-1.0, goal_reward=-1.0)
    for mode, meta_episodes in (("step_env", 2), ("auto_reset", 3)):
        run, steps = bench_envs.make_rollout(env, params, 3, meta_episodes, mode)
        assert steps == 7 * meta_episodes
        assert float(run(jax.random.PRNGKey(0))) == -3.0 * steps
    with pytest.raises(ValueError, match="allowed: step_env, auto_reset"):
        bench_envs.make_rollout(env, params, 3, 1, "fast")


def test_bench_json_shape(tmp_path):
    flag_values = flags.FlagValues()
    bench_envs.define_flags(flag_values)
    flag_values(["prog", "--envs=rooms,point_robot", "--widths=2", "--modes=step_env", "--repeats=1",
                 f"--out={tmp_path / 'bench.json'}"])
    bench_envs.main([], flag_values)
    with open(tmp_path / "bench.json") as f:
        result = json.load(f)
    assert set(result["envs"]) == {"rooms", "point_robot"}
    for name, T in (("rooms", 100), ("point_robot", 300)):
        entry = result["envs"][name]
        assert entry["T"] == T and set(entry) == {"T", "step_env"}
        timing = entry["step_env"]["widths"]["2"]
        assert set(timing) == {
            "steps_per_s", "call_s", "first_call_s", "compile_s", "steps_per_call", "steps_per_cpu_s"
        }
        assert timing["steps_per_call"] == 2 * T and timing["steps_per_s"] > 0
        assert entry["step_env"]["best_width"] == 2
    assert set(result["numpy_point_robot"]["widths"]) == {"2"}
    assert set(result["ratio_jax_over_numpy_point_robot"]) == {"2"}
    assert result["quick"] is False and len(result["load_average_at_start"]) == 3
