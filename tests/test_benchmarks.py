"""The benchmark drivers' own logic (flags, environments of the child processes, parsing), with the
child processes replaced by fakes: the timings themselves are measured by running the scripts."""

import argparse
import sys

import pytest

from experiments import bench_train, bench_update, command_line


@pytest.mark.parametrize("script", [bench_update, bench_train])
def test_bench_rejects_an_unknown_preset(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench", "--preset=bogus"])
    monkeypatch.setattr(bench_update, "matmul_flop_per_second", lambda: pytest.fail("must fail before timing"))
    with pytest.raises(SystemExit):
        script.main()
    assert "--preset='bogus': allowed: point_robot" in capsys.readouterr().err


def test_command_line_lists_the_options_that_differ_from_their_defaults():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="point_robot")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default="/abs/default.json")
    args = parser.parse_args(["--rounds=5", "--quick", "--out=results/x.json"])
    assert command_line("experiments.m", parser, args) == "python -m experiments.m --rounds=5 --quick --out=results/x.json"
    assert command_line("experiments.m", parser, parser.parse_args([])) == "python -m experiments.m"
    args = parser.parse_args(["--rounds=2", "--steps=0", "--preset=debug"])  # a default given explicitly is left out
    assert command_line("experiments.m", parser, args) == "python -m experiments.m --preset=debug --steps=0"


def test_bench_train_derived_figures_by_hand():
    med = {"chunk": 30.0, "collection_like": 1.0, "evaluation": 2.0, "checkpoint": 1.0}
    out = bench_train.derived_figures(med, env_steps=3000, updates=10, iterations_per_eval=3)
    assert out["update_in_chunk_seconds"] == pytest.approx(2.9)  # (30 - 1) / 10
    assert out["collection_share_of_chunk"] == pytest.approx(1 / 30)
    assert out["env_steps_per_second"] == pytest.approx(100.0)
    assert out["env_steps_per_second_with_eval"] == pytest.approx(3000 / 31.0)  # + (2 + 1) / 3 per iteration
