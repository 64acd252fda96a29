"""experiments.benchmarks.authors and its driver of the authors' code, without torch: the reading of
their configs.yaml (a small fake one), the commands and the record, the ratio arithmetic, and our
own timer on the debug preset. The authors' side itself is measured by running the benchmark."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from absl import flags

from experiments.benchmarks import authors, authors_update

FAKE_CONFIGS = """
defaults:
  task: 'dmc_walker_walk'
  device: 'cuda:0'
  steps: 1000
  log_every: 100
  time_limit: 50
  action_repeat: 2
  meta_learning: True
  mamba_context: True
  num_meta_episodes: 1
  max_episode_length: 100
  batch_length: 64
  all_layers: 0
  reward_layers: 2
  cont_layers: 2
  value_layers: 2
  actor_layers: 2
  imag_horizon: 10
  reconstruction_window: 3
  log_imagined_horizon_effective_length: False
  grad_heads: [ 'decoder', 'reward', 'cont' ]
  encoder: { mlp_keys: '$^', cnn_keys: 'image', mlp_layers: 2 }
  decoder: { mlp_keys: '$^', cnn_keys: 'image', mlp_layers: 2 }
halfcircle:
  num_meta_episodes: 3
  imag_horizon: 2
  all_layers: 4
  encoder: { mlp_keys: '.*', cnn_keys: None, mlp_layers: 4 }
  decoder: { mlp_keys: '.*', cnn_keys: None }
"""


def simple_args_type(default):
    """The part of their tools.args_type these fields need: a string becomes the default's type."""
    if isinstance(default, bool):
        return lambda x: bool(["False", "True"].index(x)) if isinstance(x, str) else x
    if default is None or isinstance(default, (dict, list, tuple)):
        return lambda x: tuple(x) if isinstance(x, list) else x
    return lambda x: type(default)(x) if isinstance(x, str) else x


@pytest.fixture
def fake_code(tmp_path):
    (tmp_path / "configs.yaml").write_text(FAKE_CONFIGS)
    return tmp_path


# ------------------------------------------------------------------ reading their configs.yaml
def test_merge_blocks_merges_nested_dicts_key_by_key_and_leaves_the_source_alone():
    configs = yaml.safe_load(FAKE_CONFIGS)
    merged = authors_update.merge_blocks(configs, ["halfcircle"])
    assert merged["imag_horizon"] == 2 and merged["num_meta_episodes"] == 3 and merged["batch_length"] == 64
    assert merged["encoder"] == {"mlp_keys": ".*", "cnn_keys": "None", "mlp_layers": 4}
    assert merged["decoder"] == {"mlp_keys": ".*", "cnn_keys": "None", "mlp_layers": 2}  # mlp_layers from defaults
    merged["encoder"]["mlp_layers"] = 9
    assert configs["defaults"]["encoder"]["mlp_layers"] == 2 and configs["halfcircle"]["encoder"]["mlp_layers"] == 4


def test_merge_blocks_rejects_an_unknown_block_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="no block 'pointrobot'; allowed: defaults, halfcircle"):
        authors_update.merge_blocks(yaml.safe_load(FAKE_CONFIGS), ["pointrobot"])


def test_make_config_reads_every_field_of_the_file_and_derives_as_their_main(fake_code):
    config = authors_update.make_config(str(fake_code), ["halfcircle"], "halfcircle_point",
                                        {"device": "cpu", "imag_horizon": "3"}, simple_args_type, load=yaml.safe_load)
    assert config.log_imagined_horizon_effective_length is False  # a field only the file knows
    assert config.task == "halfcircle_point" and config.device == "cpu"
    assert config.imag_horizon == 3  # the override, parsed to the default's type
    assert config.reconstruction_window == 3 and config.grad_heads == ("decoder", "reward", "cont")
    assert (config.reward_layers, config.cont_layers, config.value_layers, config.actor_layers) == (4, 4, 4, 4)
    assert config.batch_length == 300 and config.sample_first is True  # N x L with mamba_context
    assert config.encoder["input_reward"] is True and config.decoder["input_reward"] is True
    assert (config.steps, config.log_every, config.time_limit) == (500, 50, 25)  # divided by action_repeat


def test_make_config_without_overrides_keeps_the_file_values(fake_code):
    config = authors_update.make_config(str(fake_code), ["halfcircle"], "halfcircle_point", {}, simple_args_type,
                                        load=yaml.safe_load)
    assert config.imag_horizon == 2 and config.device == "cuda:0"


def test_config_values_rejects_an_unknown_option_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['imag_horizn'\].*allowed: a, imag_horizon"):
        authors_update.config_values({"imag_horizon": 2, "a": 1}, {"imag_horizn": "3"}, simple_args_type)


def test_load_configs_needs_a_configs_yaml(tmp_path):
    with pytest.raises(ValueError, match="no configs.yaml in"):
        authors_update.load_configs(str(tmp_path), load=yaml.safe_load)


def test_parse_settings_and_variants():
    assert authors_update.parse_settings(["device=cpu", "imag_horizon=3"]) == {"device": "cpu", "imag_horizon": "3"}
    with pytest.raises(ValueError, match="allowed: key=value"):
        authors_update.parse_settings(["device"])
    variants = authors_update.parse_variants(["a:", "b:reconstruction_window=0;imag_horizon=3"])
    assert variants == {"a": {}, "b": {"reconstruction_window": "0", "imag_horizon": "3"}}
    with pytest.raises(ValueError, match="NAME:key=value"):
        authors_update.parse_variants(["imag_horizon=3"])
    with pytest.raises(ValueError, match="used twice"):
        authors_update.parse_variants(["a:", "a:imag_horizon=3"])


def test_time_updates_alternates_the_variants_and_takes_medians():
    calls, now = [], [0.0]
    durations = {"x": iter([1.0, 3.0, 2.0, 5.0, 4.0]), "y": iter([10.0, 30.0, 20.0, 50.0, 40.0])}

    def update(key):
        def run():
            calls.append(key)
            now[0] += next(durations[key])
        return run

    result = authors_update.time_updates({"x": update("x"), "y": update("y")}, reps=4, warmup=1,
                                         clock=lambda: now[0], cpu_clock=lambda: now[0] / 2)
    assert calls == ["x", "y", "x", "y", "y", "x", "x", "y", "y", "x"]
    assert result["x"]["times"] == [3.0, 2.0, 5.0, 4.0] and result["x"]["seconds_per_update"] == 3.5
    assert result["y"]["times"] == [30.0, 20.0, 50.0, 40.0] and result["y"]["seconds_per_update"] == 35.0
    assert result["y"]["cpu_times"] == [15.0, 10.0, 25.0, 20.0] and result["y"]["cpu_seconds_per_update"] == 17.5


# ------------------------------------------------------------------ commands, rounds, arithmetic
def test_authors_command_asks_for_one_variant_per_comparison():
    cmd = authors.authors_command("/torch/python", "/ref", ["halfcircle"], 3, 1)
    assert cmd[:2] == ["/torch/python", str(authors.DRIVER)]
    assert cmd[2:6] == ["--authors_code=/ref", "--configs=halfcircle", "--reps=3", "--warmup=1"]
    assert cmd[6:] == ["--variant=presets:reconstruction_window=0",
                       "--variant=equal_imagined_transitions:reconstruction_window=0;imag_horizon=3",
                       "--variant=as_configured:"]


def _their_result(wall, cpu):
    return {"times": {name: {"seconds_per_update": w, "cpu_seconds_per_update": c}
                      for name, w, c in zip(authors.COMPARISONS, wall, cpu)}}


def test_time_round_alternates_and_runs_each_side_in_its_environment(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    calls = []

    def run(cmd, cwd, env, cpus):
        calls.append({"cmd": cmd, "cwd": cwd, "env": env, "cpus": cpus})
        if cmd[0] == sys.executable:
            return {"seconds_per_update": 2.0, "cpu_seconds_per_update": 1.0}
        return _their_result((4.0, 5.0, 8.0), (3.0, 4.0, 6.0))

    first = authors.time_round(0, "/torch/python", "/ref", "point_robot", ["halfcircle"], 3, 1, {0}, run=run)
    second = authors.time_round(1, "/torch/python", "/ref", "point_robot", ["halfcircle"], 3, 1, {0}, run=run)
    assert first["order"] == ["ours", "authors"] and second["order"] == ["authors", "ours"]
    assert [c["cmd"][0] for c in calls] == [sys.executable, "/torch/python", "/torch/python", sys.executable]
    ours, theirs = calls[0], calls[1]
    assert ours["cmd"][-3:] == ["point_robot", "3", "1"] and ours["env"]["PYTHONPATH"] == str(authors.ROOT)
    assert ours["env"]["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"  # as our launchers run it
    assert theirs["cwd"] == "/ref" and theirs["env"]["PYTHONPATH"] == "" and theirs["env"]["WANDB_MODE"] == "disabled"
    assert "GLIBC_TUNABLES" not in theirs["env"] and all(c["cpus"] == {0} for c in calls)
    assert first["ratios"] == {"presets": 2.0, "equal_imagined_transitions": 2.5, "as_configured": 4.0}
    assert first["cpu_ratios"] == {"presets": 3.0, "equal_imagined_transitions": 4.0, "as_configured": 6.0}


def test_summarize_takes_per_round_ratios_their_median_and_spread():
    rounds = []
    for ours, theirs in ((2.0, (4.0, 5.0, 8.0)), (4.0, (6.0, 10.0, 12.0)), (1.0, (3.0, 2.0, 2.0))):
        r = {"ours": {"seconds_per_update": ours, "cpu_seconds_per_update": ours / 2},
             "authors": _their_result(theirs, theirs)}
        rounds.append(r)
    s = authors.summarize(rounds)
    wall = s["presets"]["seconds_per_update"]
    assert wall["per_round_ratios"] == [2.0, 1.5, 3.0] and wall["median_ratio"] == 2.0
    assert wall["ratio_spread"] == [1.5, 3.0]
    assert wall["median_ours"] == 2.0 and wall["median_authors"] == 4.0
    cpu = s["equal_imagined_transitions"]["cpu_seconds_per_update"]
    assert cpu["per_round_ratios"] == [5.0, 5.0, 4.0] and cpu["median_ratio"] == 5.0
    assert s["as_configured"]["their_options"] == ""


def test_command_lists_the_flags_that_differ_from_their_defaults():
    fv = flags.FlagValues()
    flags.DEFINE_string("authors_code", None, "x", flag_values=fv)
    flags.DEFINE_integer("rounds", 3, "x", flag_values=fv)
    flags.DEFINE_list("authors_configs", ["halfcircle"], "x", flag_values=fv)
    flags.DEFINE_string("cpus", "all", "x", flag_values=fv)
    fv(["prog", "--authors_code=/ref", "--rounds=5", "--cpus=all"])
    assert (authors.command(fv, ("authors_code", "rounds", "authors_configs", "cpus"))
            == "python -m experiments.benchmarks.authors --authors_code=/ref --rounds=5")


def test_parse_cpus():
    core = min(os.sched_getaffinity(0))
    assert authors.parse_cpus("all") is None and authors.parse_cpus(str(core)) == {core}
    with pytest.raises(ValueError, match="allowed: 'all' or comma-separated cores among"):
        authors.parse_cpus("9999")
    with pytest.raises(ValueError, match="allowed"):
        authors.parse_cpus("first")


def _git_checkout(path):
    for name in ("configs.yaml", "dreamer.py", "models.py", "networks.py", "tools.py", "assets/a.gif"):
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text(FAKE_CONFIGS if name == "configs.yaml" else "# theirs\n")
    git = lambda *a: subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "theirs")
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_authors_commit_records_head_and_local_changes_outside_assets(tmp_path):
    code = tmp_path / "ref"
    code.mkdir()
    head = _git_checkout(code)
    assert authors.authors_commit(str(code)) == (head, [])
    (code / "assets" / "a.gif").unlink()  # large assets may be absent in a checkout
    assert authors.authors_commit(str(code)) == (head, [])
    (code / "models.py").write_text("# changed\n")
    assert authors.authors_commit(str(code)) == (head, ["models.py"])
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ValueError, match="not a git checkout"):
        authors.authors_commit(str(plain))
    with pytest.raises(ValueError, match="not a git checkout"):  # a folder inside one is not one
        authors.authors_commit(str(code / "assets"))


def test_main_writes_the_record_with_the_commit_and_the_command(monkeypatch, tmp_path):
    code = tmp_path / "ref"
    code.mkdir()
    head = _git_checkout(code)
    walls = iter([(4.0, 5.0, 8.0), (6.0, 9.0, 12.0), (3.0, 2.0, 2.0)])

    def run(cmd, cwd, env, cpus):
        if cmd[0] == sys.executable:
            return {"seconds_per_update": 2.0, "cpu_seconds_per_update": 1.0, "jax": "J", "threads_available": 1}
        r = _their_result(next(walls), (1.0, 2.0, 3.0))
        return {**r, "variants": {"presets": {"imag_horizon": 2}}, "batch_shapes": {"state": [16, 300, 2]},
                "torch_compiled_graphs": 0, "torch": "T", "torch_threads": 1}

    monkeypatch.setattr(authors, "run_child", run)
    out = tmp_path / "r.json"
    flags.FLAGS(["prog", f"--authors_code={code}", "--authors_python=/torch/python", "--cpus=all", f"--out={out}"])
    try:
        authors.main([])
    finally:
        flags.FLAGS.unparse_flags()
    record = json.loads(out.read_text())
    assert record["authors_code"]["commit"] == head
    assert record["command"] == (f"python -m experiments.benchmarks.authors --authors_code={code} "
                                 f"--authors_python=/torch/python --out={out}")
    assert record["versions"]["torch"] == "T" and record["versions"]["jax"] == "J"
    assert record["comparisons"]["presets"]["seconds_per_update"]["per_round_ratios"] == [2.0, 3.0, 1.5]
    assert record["comparisons"]["presets"]["seconds_per_update"]["median_ratio"] == 2.0
    assert [r["order"][0] for r in record["rounds"]] == ["ours", "authors", "ours"]


def test_main_refuses_a_modified_checkout(monkeypatch, tmp_path):
    _git_checkout(tmp_path)
    (tmp_path / "models.py").write_text("# changed\n")
    flags.FLAGS(["prog", f"--authors_code={tmp_path}"])
    try:
        with pytest.raises(Exception, match=r"local changes \(models.py\)"):
            authors.main([])
    finally:
        flags.FLAGS.unparse_flags()


# ------------------------------------------------------------------ our timer
def test_time_ours_times_the_update_at_the_longest_horizon():
    result = authors.time_ours("debug", reps=1, warmup=0)
    assert len(result["times"]) == 1 and result["seconds_per_update"] == result["times"][0]
    assert result["wm_horizon"] == 20  # debug: T = 2 x 10, its last bucket
    assert result["imag_horizon"] == 3 and result["imagination_starts"] == 4 * 4
    assert result["cpu_times"][0] == result["cpu_seconds_per_update"]
