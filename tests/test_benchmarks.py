"""The benchmark scripts of experiments/benchmarks/ (their flags, `--help`, the logic around the
timings, the env benchmark in tiny modes) and the helpers they share (experiments/__init__.py).
The timings themselves are measured by running the scripts."""

import json
import os
import subprocess
import sys

import jax
import pytest
from absl import app, flags

import envs
from experiments import child_env, command_line, read_result
from experiments.benchmarks import envs as bench_envs
from experiments.benchmarks import profile_update, train_iteration, update

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parsed(module, *args) -> tuple[flags.FlagValues, list[str]]:
    """The module's flags in a fresh FlagValues, parsed from `args`; and the non-flag arguments."""
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    rest = flag_values(["prog", *args])
    return flag_values, rest


def help_text(module: str) -> str:
    """The output of `python -m MODULE --help` (absl exits with status 1 after it), without the
    re-execution for huge pages."""
    env = dict(os.environ, PYTHONPATH=REPO, MAMBA_JAX_HUGEPAGES="0")
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "module, names",
    [
        (bench_envs, ["quick", "envs", "widths", "mujoco_widths", "modes", "meta_episodes", "repeats", "numpy", "out"]),
        (update, ["quick", "preset", "reps", "out"]),
        (train_iteration, ["preset", "num_seeds", "reps", "out"]),
        (profile_update, ["preset", "reps", "out"]),
    ],
)
def test_help_lists_every_flag_with_its_help_and_the_examples(module, names):
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    assert list(flag_values) == names  # definition order
    assert all(len(flag_values[n].help) > 10 for n in names)
    text = help_text(module.__name__)
    for name in names:
        assert f"  --{name}:" in text or f"  --[no]{name}:" in text, name
    assert f"python -m {module.__name__} " in text  # the module docstring's example commands


def test_fingerprint_help_lists_its_flags():
    text = help_text("experiments.benchmarks.fingerprint")
    assert "  --out:" in text and "  --compare:" in text


def test_command_line_lists_the_flags_that_differ_from_their_defaults():
    flag_values = flags.FlagValues()
    flags.DEFINE_enum("preset", "point_robot", ["point_robot", "debug"], "p", flag_values=flag_values)
    flags.DEFINE_integer("rounds", 2, "r", flag_values=flag_values)
    flags.DEFINE_bool("quick", False, "q", flag_values=flag_values)
    flags.DEFINE_bool("numpy", True, "n", flag_values=flag_values)
    flags.DEFINE_integer("steps", None, "s", short_name="s", flag_values=flag_values)
    flags.DEFINE_list("widths", ["1", "64"], "w", flag_values=flag_values)
    flags.DEFINE_multi_string("run", None, "r", flag_values=flag_values)
    flags.DEFINE_string("out", "/abs/default.json", "o", flag_values=flag_values)
    flags.DEFINE_string("machine", "a box", "m", flag_values=flag_values)

    def line(*args):
        flag_values.unparse_flags()
        flag_values(["prog", *args])
        return command_line("experiments.m", flag_values)

    assert line() == "python -m experiments.m"
    # definition order, whatever the order on the command line; a switch as --name / --noname
    assert line("--out=results/x.json", "--quick", "--rounds=5", "--nonumpy") == (
        "python -m experiments.m --rounds=5 --quick --nonumpy --out=results/x.json")
    # a default given explicitly is left out; a short name is written long; lists joined by commas
    assert line("--rounds=2", "-s", "0", "--preset=debug", "--widths=1,2,3") == (
        "python -m experiments.m --preset=debug --steps=0 --widths=1,2,3")
    # a repeated flag once per value; a value with a space quoted for the shell
    assert line("--run=a:x", "--run=b:y", "--machine=8 cores") == (
        "python -m experiments.m --run=a:x --run=b:y '--machine=8 cores'")
    # a value set after parsing, not on the command line (absl's logging sets --verbosity so), is left out
    flag_values["rounds"].value = 7
    assert command_line("experiments.m", flag_values) == "python -m experiments.m --run=a:x --run=b:y '--machine=8 cores'"


def test_child_env_sets_huge_pages_explicitly(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.setenv("PYTHONPATH", "/mine")
    off = child_env(hugepages=False)
    assert off["MAMBA_JAX_HUGEPAGES"] == "0" and "GLIBC_TUNABLES" not in off  # the parent's is not inherited
    assert off["PYTHONPATH"] == "/mine"
    on = child_env(hugepages=True, pythonpath="/other")
    assert on["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and on["PYTHONPATH"] == "/other"


def test_read_result_takes_the_last_result_line():
    stdout = 'warning\nRESULT {"a": 1}\nmore noise\nRESULT {"a": 2, "b": [3]}\ntrailing\n'
    assert read_result(stdout) == {"a": 2, "b": [3]}


@pytest.mark.parametrize("module", [update, train_iteration, profile_update])
def test_an_unknown_preset_is_refused_naming_the_allowed_ones(module):
    with pytest.raises(flags.IllegalFlagValueError, match=r"value should be one of <point_robot\|point_robot_wind"):
        parsed(module, "--preset=bogus")


@pytest.mark.parametrize("module", [update, train_iteration, profile_update])
def test_main_refuses_a_stray_argument_before_any_work(module, monkeypatch, tmp_path):
    monkeypatch.setattr(update, "matmul_flop_per_second", lambda: pytest.fail("must fail before timing"))
    flag_values, rest = parsed(module, "point_robot", "--preset=debug", f"--out={tmp_path / 'x.json'}")
    assert rest == ["prog", "point_robot"]
    with pytest.raises(app.UsageError, match=r"unexpected arguments \['point_robot'\]"):
        module.main(rest, flag_values)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("module, flag", [(update, "--reps=0"), (train_iteration, "--num_seeds=0"),
                                          (profile_update, "--reps=0"), (bench_envs, "--repeats=0")])
def test_counts_below_one_are_refused(module, flag):
    with pytest.raises(flags.IllegalFlagValueError, match="positive integer"):
        parsed(module, flag)


def test_train_iteration_derived_figures_by_hand():
    med = {"chunk": 30.0, "collection_like": 1.0, "evaluation": 2.0, "checkpoint": 1.0}
    out = train_iteration.derived_figures(med, env_steps=3000, updates=10, iterations_per_eval=3)
    assert out["update_in_chunk_seconds"] == pytest.approx(2.9)  # (30 - 1) / 10
    assert out["collection_share_of_chunk"] == pytest.approx(1 / 30)
    assert out["env_steps_per_second"] == pytest.approx(100.0)
    assert out["env_steps_per_second_with_eval"] == pytest.approx(3000 / 31.0)  # + (2 + 1) / 3 per iteration


def test_envs_main_rejects_bad_widths_and_envs(tmp_path):
    for bad, allowed in (("--widths=a", "integers >= 1"), ("--widths=0", "integers >= 1"), ("--envs=maze", "rooms")):
        flag_values, rest = parsed(bench_envs, bad, f"--out={tmp_path / 'b.json'}")
        with pytest.raises(app.UsageError, match=allowed):
            bench_envs.main(rest, flag_values)
    assert not (tmp_path / "b.json").exists()


def test_envs_rollout_counts_every_step():
    # With both rewards set to -1, the total reward is exactly -(W * steps).
    env, params = envs.make("rooms", num_rooms=1, episode_length=7, step_reward=-1.0, goal_reward=-1.0)
    for mode, meta_episodes in (("step_env", 2), ("auto_reset", 3)):
        run, steps = bench_envs.make_rollout(env, params, 3, meta_episodes, mode)
        assert steps == 7 * meta_episodes
        assert float(run(jax.random.PRNGKey(0))) == -3.0 * steps
    with pytest.raises(ValueError, match="allowed: step_env, auto_reset"):
        bench_envs.make_rollout(env, params, 3, 1, "fast")


def test_envs_json_shape(tmp_path):
    flag_values, rest = parsed(bench_envs, "--envs=rooms,point_robot", "--widths=2", "--modes=step_env",
                               "--repeats=1", f"--out={tmp_path / 'bench.json'}")
    bench_envs.main(rest, flag_values)
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


def test_fingerprint_differences_name_every_changed_number():
    from experiments.benchmarks import fingerprint

    recorded = {"rows": [{"a": 1.0, "b": [1, 2]}], "digest": "x", "only_old": 1}
    assert fingerprint.differences(recorded, recorded) == []
    current = {"rows": [{"a": 1.5, "b": [1, 3]}], "digest": "x", "only_new": 2}
    assert fingerprint.differences(recorded, current) == [
        "/only_new: only in current",
        "/only_old: only in recorded",
        "/rows[0]/a: recorded 1.0, now 1.5",
        "/rows[0]/b[1]: recorded 2, now 3",
    ]
    # a list of another length is one difference, not an index error
    assert fingerprint.differences({"r": [1]}, {"r": [1, 2]}) == ["/r: recorded [1], now [1, 2]"]
