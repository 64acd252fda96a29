"""The benchmark drivers' own logic (flags, environments of the child processes, parsing), with the
child processes replaced by fakes: the timings themselves are measured by running the scripts."""

import argparse
import json
import subprocess
import sys
import types

import pytest

from experiments import bench_authors, bench_malloc, bench_revisions, bench_train, bench_update, bench_xla_flags, command_line


def _fake_run(calls, stdout="", write_json=None):
    def run(cmd, cwd=None, env=None, **kwargs):
        calls.append({"cmd": cmd, "cwd": cwd, "env": env})
        if write_json is not None:
            out = [a for a in cmd if a.startswith("--out=")][0][len("--out="):]
            with open(out, "w") as f:
                json.dump(write_json, f)
        return types.SimpleNamespace(stdout=stdout, stderr="", returncode=0)

    return run


def test_bench_malloc_runs_each_mode_with_its_environment(monkeypatch):
    record = {"glibc_tunables": "x", "cases": [{"seconds_per_update": 1.0}]}
    calls = []
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, write_json=record))
    case = bench_malloc.run_bench("debug", 2, bench_malloc.MODES["default_malloc"])
    assert case == {"seconds_per_update": 1.0, "glibc_tunables": "x"}
    env = calls[0]["env"]
    assert env["MAMBA_JAX_HUGEPAGES"] == "0" and "GLIBC_TUNABLES" not in env  # the parent's is not inherited
    assert calls[0]["cmd"][1:5] == ["-m", "experiments.bench_update", "--preset=debug", "--reps=2"]
    bench_malloc.run_bench("debug", 2, bench_malloc.MODES["hugepages"])
    assert calls[1]["env"]["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_bench_revisions_time_update_parses_the_child_result(monkeypatch):
    calls = []
    result = {"seconds_per_update": 2.5, "min_seconds": 2.4, "cpu_seconds_per_update": 5.0, "page_faults_per_update": 7}
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stdout="noise\nRESULT " + json.dumps(result) + "\n"))
    assert bench_revisions.time_update("/code", "debug", 3, hugepages=True) == result
    assert calls[0]["env"]["PYTHONPATH"] == "/code" and calls[0]["cwd"] == "/code"
    assert calls[0]["env"]["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert calls[0]["cmd"][-2:] == ["debug", "3"]
    bench_revisions.time_update("/code", "debug", 3, hugepages=False)
    assert "GLIBC_TUNABLES" not in calls[1]["env"]


def test_bench_revisions_train_throughput_reads_the_last_progress_line(monkeypatch):
    lines = ("[   600/2400  25.0%]    675.4 steps/s | eval 0.5\n"
             "[  1200/2400  50.0%]     98.2 steps/s | train 1.0\n"
             "[  2400/2400 100.0%]    101.5 steps/s | train 1.1\n")
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stdout=lines))
    out = bench_revisions.train_throughput("/code", "debug", 2400, hugepages=False)
    assert out == {"env_steps_per_second": 101.5, "chunk_rates": [675.4, 98.2, 101.5]}
    assert "--steps=2400" in calls[0]["cmd"] and calls[0]["env"]["MAMBA_JAX_HUGEPAGES"] == "0"
    monkeypatch.setattr(subprocess, "run", _fake_run([], stdout=lines.splitlines()[0]))
    with pytest.raises(RuntimeError, match="no steady-state progress line"):
        bench_revisions.train_throughput("/code", "debug", 2400, hugepages=False)


def test_bench_revisions_rejects_an_unknown_revision(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_revisions", "--base=no-such-revision-xyz"])
    with pytest.raises(SystemExit):
        bench_revisions.main()
    assert "--base='no-such-revision-xyz': not a git revision" in capsys.readouterr().err


@pytest.mark.parametrize("script", [bench_update, bench_train])
def test_bench_rejects_an_unknown_preset(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench", "--preset=bogus"])
    monkeypatch.setattr(bench_update, "matmul_flop_per_second", lambda: pytest.fail("must fail before timing"))
    with pytest.raises(SystemExit):
        script.main()
    assert "--preset='bogus': allowed: point_robot" in capsys.readouterr().err


def test_bench_revisions_time_update_sets_xla_flags(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stdout='RESULT {"seconds_per_update": 1.0}\n'))
    monkeypatch.setenv("XLA_FLAGS", "--outer")
    bench_revisions.time_update("/code", "debug", 3, hugepages=True, xla_flags="--xla_cpu_use_xnnpack=true")
    bench_revisions.time_update("/code", "debug", 3, hugepages=True)
    assert calls[0]["env"]["XLA_FLAGS"] == "--xla_cpu_use_xnnpack=true" and calls[1]["env"]["XLA_FLAGS"] == "--outer"


def test_bench_xla_flags_interleaves_variants_and_records_failures(monkeypatch, tmp_path):
    seen = []

    def fake_time_update(code_dir, preset, reps, hugepages, xla_flags=None):
        seen.append(xla_flags)
        if xla_flags == bench_xla_flags.VARIANTS["onednn"]:
            raise subprocess.CalledProcessError(1, "python", stderr="Unknown flag")
        return {"seconds_per_update": {"": 2.0, "--xla_cpu_use_xnnpack=true": 3.0}[xla_flags] + len(seen) / 100}

    monkeypatch.setattr(bench_revisions, "time_update", fake_time_update)
    out = tmp_path / "flags.json"
    bench_xla_flags.main(["--preset=debug", "--rounds=2", "--variants=default,xnnpack,onednn", f"--out={out}"])
    v = bench_xla_flags.VARIANTS
    assert seen == [v["default"], v["xnnpack"], v["onednn"], v["xnnpack"], v["default"]]  # reversed in round 2
    record = json.loads(out.read_text())
    assert record["seconds_per_update"] == {"default": [2.01, 2.05], "xnnpack": [3.02, 3.04], "onednn": []}
    assert record["median_seconds_per_update"] == pytest.approx({"default": 2.03, "xnnpack": 3.03})
    assert "Unknown flag" in record["failed"]["onednn"]
    # the saved command reproduces the run, --out included (defaults are left out)
    assert record["command"] == (f"python -m experiments.bench_xla_flags --preset=debug --variants=default,xnnpack,onednn "
                                 f"--out={out}")


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


@pytest.mark.parametrize("arg", ["--variants=default,nope", "--preset=bogus"])
def test_bench_xla_flags_rejects_bad_arguments(arg, capsys):
    with pytest.raises(SystemExit):
        bench_xla_flags.main([arg])
    assert "allowed" in capsys.readouterr().err


def test_bench_train_derived_figures_by_hand():
    med = {"chunk": 30.0, "collection_like": 1.0, "evaluation": 2.0, "checkpoint": 1.0}
    out = bench_train.derived_figures(med, env_steps=3000, updates=10, iterations_per_eval=3)
    assert out["update_in_chunk_seconds"] == pytest.approx(2.9)  # (30 - 1) / 10
    assert out["collection_share_of_chunk"] == pytest.approx(1 / 30)
    assert out["env_steps_per_second"] == pytest.approx(100.0)
    assert out["env_steps_per_second_with_eval"] == pytest.approx(3000 / 31.0)  # + (2 + 1) / 3 per iteration


def _authors_checkout(tmp_path):
    for name in ("models.py", "networks.py", "tools.py"):
        (tmp_path / name).write_text("")
    return str(tmp_path)


def test_bench_authors_time_authors_runs_the_child_in_the_given_python(monkeypatch):
    calls = []
    result = {"seconds_per_update": 3.3, "times": [3.3], "torch": "x", "torch_threads": 2}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stdout="warning\nRESULT " + json.dumps(result) + "\n"))
    assert bench_authors.time_authors("/torch/python", "/ref", 4) == result
    cmd = calls[0]["cmd"]
    assert cmd[0] == "/torch/python" and cmd[1].endswith("experiments/authors_update.py")
    assert cmd[2:] == ["--authors_code=/ref", "--reps=4"] and calls[0]["cwd"] == "/ref"
    assert "GLIBC_TUNABLES" not in calls[0]["env"]  # the authors' code runs with the default malloc


def test_bench_authors_interleaves_and_records_per_round_speedups(monkeypatch, tmp_path):
    order = []
    ours, theirs = iter([2.0, 1.0, 1.5]), iter([4.0, 3.0, 3.0])

    def fake_ours(code_dir, preset, reps, hugepages, xla_flags=None):
        order.append("ours")
        assert preset == "point_robot" and hugepages
        return {"seconds_per_update": next(ours)}

    def fake_authors(python, code, reps):
        order.append("authors")
        return {"seconds_per_update": next(theirs), "torch": "2.x", "torch_threads": 2}

    monkeypatch.setattr(bench_revisions, "time_update", fake_ours)
    monkeypatch.setattr(bench_authors, "time_authors", fake_authors)
    code, out = _authors_checkout(tmp_path), tmp_path / "a.json"
    bench_authors.main([f"--authors_code={code}", "--rounds=3", "--reps=2", f"--out={out}"])
    assert order == ["ours", "authors", "authors", "ours", "ours", "authors"]
    record = json.loads(out.read_text())
    assert [r["speedup"] for r in record["rounds"]] == [2.0, 3.0, 2.0]
    assert record["median_speedup"] == 2.0
    assert record["median_seconds_per_update"] == {"ours": 1.5, "authors": 3.0}
    assert record["command"] == f"python -m experiments.bench_authors --authors_code={code} --reps=2 --out={out}"


def test_bench_authors_rejects_a_directory_without_the_reference_code(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_authors.main([f"--authors_code={tmp_path}"])
    assert "no models.py there" in capsys.readouterr().err
