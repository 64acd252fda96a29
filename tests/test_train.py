"""The trainer (mamba_jax/trainer.py) and the runner (mamba_jax/runner.py) on the tiny `debug`
preset (T = 20, 2 envs, U = 2): end to end, resume equality, resume past a damaged checkpoint,
resume under a changed config, the horizon switch under vmap, the baseline's shapes, and 4 fake
CPU devices (seeds x data mesh) against one device. The compiled functions are shared by the tests of this
module (one compilation); the multi-device run compiles in a subprocess started first, so the
two compilations overlap on a 2-core machine."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags as absl_flags

import envs
from experiments import plot
from mamba_jax import agent as agent_lib
from mamba_jax import get_config
from mamba_jax import replay as rb
from mamba_jax import rollout as ro
from mamba_jax import runner
from mamba_jax import trainer as tr
from mamba_jax.logging import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = get_config("debug")  # N x L = 2 x 10, prefill 2, 2 envs: 40 env steps per iteration
STEPS = 40
NUM_SEEDS = 2

MULTI_DEVICE = textwrap.dedent(
    """
    import os, sys, json
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    jax.config.update("jax_disable_most_optimizations", True)
    from mamba_jax import get_config, runner
    assert len(jax.devices()) == 4, jax.devices()
    out = runner.run(get_config("debug"), sys.argv[1], num_seeds=2, steps=120, chunk_iterations=1, eval_every=40,
                    reference=False, print_fn=lambda s: None)
    state, fns = out["state"], out["functions"]
    leaves = jax.tree.leaves(state.agent.params)
    np.savez(os.path.join(sys.argv[1], "params.npz"), *[np.asarray(x) for x in leaves])
    text = fns.train_chunk.trace(state, np.int32(0)).lower().as_text()
    info = {"mesh": dict(fns.mesh.shape), "seed_sharded": state.env_steps.sharding.spec == P("seed"),
            "data_constraints": text.count('{"data"}')}
    json.dump(info, open(os.path.join(sys.argv[1], "multi.json"), "w"))
    """
)


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
    """Tiny networks: XLA's cheaper optimisation level halves the compile time of these tests."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def strip(row):
    return {k: v for k, v in row.items() if k != "wall_seconds"}


def params_of(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.agent.params)]


@pytest.fixture(scope="module")
def multi_device(tmp_path_factory):
    """Starts the 4-device run in a subprocess (collected by test_four_devices_match_one)."""
    logdir = str(tmp_path_factory.mktemp("multi"))
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_COMPILATION_CACHE_DIR=os.environ.get("MAMBA_JAX_CACHE", os.path.join(REPO, ".jax_cache")))
    proc = subprocess.Popen([sys.executable, "-c", MULTI_DEVICE, logdir], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc, logdir
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def functions():
    env, params = envs.make(CONFIG.env, num_episodes=CONFIG.protocol.num_episodes, episode_length=CONFIG.protocol.episode_length)
    return tr.compile_run(CONFIG, env, params, num_seeds=NUM_SEEDS, chunk_iterations=1)


@pytest.fixture(scope="module")
def full_run(multi_device, functions, tmp_path_factory):
    """Prefill (40 steps) + 2 chunks of one iteration: 120 env steps, evaluation every chunk."""
    logdir = str(tmp_path_factory.mktemp("full"))
    out = runner.run(CONFIG, logdir, num_seeds=NUM_SEEDS, steps=120, chunk_iterations=1, eval_every=40,
                 reference=False, functions=functions, print_fn=lambda s: None)
    return out, logdir


def test_updates_per_iteration_rounding():
    u = tr.updates_per_iteration
    assert u(get_config("point_robot")) == 10  # 0.01 * 10 * 300 / 3
    assert u(get_config("point_robot_wind")) == 200  # 0.2 * 3000 / 3
    assert u(get_config("rooms")) == 100  # 0.1 * 1000 / 1
    assert u(get_config("humanoid_dir")) == 60  # 0.03 * 4000 / 2
    assert u(CONFIG) == 2  # 0.1 * 40 / 2
    assert u(get_config("debug", train_ratio=0.0625)) == 1  # 1.25 -> 1
    assert u(get_config("debug", train_ratio=0.075)) == 2  # 1.5 -> 2 (half up)
    assert u(get_config("debug", train_ratio=0.001)) == 1  # at least one


def test_make_train_validates():
    env, params = envs.make("point_robot")  # 3 x 100, not the debug preset's 2 x 10
    with pytest.raises(ValueError, match="N x L"):
        tr.make_train(CONFIG, env, params)
    env, params = envs.make("point_robot", num_episodes=2, episode_length=10)
    with pytest.raises(ValueError, match="chunk_iterations"):
        tr.make_train(CONFIG, env, params, chunk_iterations=0)


def test_mesh_shapes():
    cpu = jax.devices()[0]
    assert dict(tr.make_mesh(3, [cpu]).shape) == {"seed": 1, "data": 1}
    fake = [cpu] * 4  # make_mesh only arranges the list
    assert dict(tr.make_mesh(2, fake).shape) == {"seed": 2, "data": 2}
    assert dict(tr.make_mesh(8, fake).shape) == {"seed": 4, "data": 1}
    assert dict(tr.make_mesh(1, fake).shape) == {"seed": 1, "data": 4}
    assert dict(tr.make_mesh(3, fake).shape) == {"seed": 1, "data": 4}


def test_end_to_end(full_run, tmp_path):
    out, logdir = full_run
    rows = read_metrics(logdir)
    assert [r["env_steps"] for r in rows] == [40, 80, 120]
    assert [r["iterations"] for r in rows] == [0, 1, 2] and [r["updates"] for r in rows] == [0, 2, 4]
    for row in rows:
        assert row["wall_seconds"] > 0
        # a meta-episode's return is the sum of its episodes' returns; the row holds means over seeds
        assert row["eval/return"] == pytest.approx(row["eval/return_episode_1"] + row["eval/return_episode_2"])
        assert row["eval/return"] == pytest.approx(np.mean(row["eval/return/per_seed"]))
        assert len(row["eval/return/per_seed"]) == NUM_SEEDS
    for row in rows[1:]:
        train_keys = [k for k in row if k.startswith("train/") and not k.endswith("per_seed")]
        assert "train/wm/loss" in train_keys and "train/return" in train_keys
        for key in train_keys:  # a NaN would be written as null
            assert row[key] is not None and np.isfinite(row[key]), key
        assert row["train/return"] == pytest.approx(row["train/return_episode_1"] + row["train/return_episode_2"])
        assert row["train/updates_per_step"] == 2 / 40  # U = 2 updates per 2 envs x T = 20 steps
        # the world-model horizon follows the schedule (H0 = 8 -> T = 20 by 1000 steps) from the
        # nominal env steps after collection: ceil(8 + 80 * 12 / 1000) = 9, then 10
        assert row["train/h_wm"] == {80: 9, 120: 10}[row["env_steps"]]
    state = out["state"]
    np.testing.assert_array_equal(state.env_steps, [120, 120])
    np.testing.assert_array_equal(state.updates, [4, 4])
    np.testing.assert_array_equal(state.agent.updates, [4, 4])
    np.testing.assert_array_equal(state.replay.size, [6, 6])  # prefill 2 + 2 iterations x 2 envs
    for leaf in jax.tree.leaves(state.agent.params):
        assert np.isfinite(np.asarray(leaf)).all()
    # seed i starts from fold_in(PRNGKey(0), i); init splits that key into 5, the last one being the
    # run's fixed evaluation key
    expected_eval_keys = [np.asarray(jax.random.split(jax.random.fold_in(jax.random.PRNGKey(0), i), 5)[4])
                          for i in range(NUM_SEEDS)]
    np.testing.assert_array_equal(state.eval_key, expected_eval_keys)
    # checkpoint, TensorBoard, final test, plot
    assert sorted(os.listdir(os.path.join(logdir, "checkpoints"))) == ["120", "80"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(logdir))
    with open(os.path.join(logdir, "final_test.json")) as f:
        test = json.load(f)
    assert test["test/num_tasks"] == CONFIG.eval.final_eval_tasks and test["env_steps"] == 120
    assert test["test/return"] == pytest.approx(np.mean(test["test/return/per_seed"]))
    assert test["test/return"] == pytest.approx(test["test/return_episode_1"] + test["test/return_episode_2"])
    assert len(test["test/return/per_seed"]) == NUM_SEEDS
    with open(os.path.join(logdir, "run.json")) as f:
        run_info = json.load(f)
    assert run_info["num_seeds"] == NUM_SEEDS and run_info["config"]["name"] == CONFIG.name
    assert run_info["host"]["glibc_tunables"] == os.environ.get("GLIBC_TUNABLES", "")
    assert run_info["host"]["devices"] == [str(d) for d in jax.devices()]
    png = str(tmp_path / "curves.png")
    flag_values = absl_flags.FlagValues()
    plot.define_flags(flag_values)
    plot.main(flag_values(["plot", logdir, f"--out={png}"]), flag_values)
    assert os.path.getsize(png) > 5000


def test_resume_is_exact(full_run, functions, tmp_path):
    """1 chunk, stop, resume, 1 more chunk == 2 chunks uninterrupted: metrics, params, final test."""
    out, logdir = full_run
    kwargs = dict(num_seeds=NUM_SEEDS, chunk_iterations=1, eval_every=40, reference=False, functions=functions,
                  print_fn=lambda s: None)
    part = str(tmp_path / "part")
    runner.run(CONFIG, part, steps=80, **kwargs)
    assert [r["env_steps"] for r in read_metrics(part)] == [40, 80]
    with pytest.raises(ValueError, match="resume"):
        runner.run(CONFIG, part, steps=120, **kwargs)  # refuses to overwrite a run without resume=True
    resumed = runner.run(CONFIG, part, steps=120, resume=True, **kwargs)
    assert [strip(r) for r in read_metrics(part)] == [strip(r) for r in read_metrics(logdir)]
    for a, b in zip(params_of(resumed["state"]), params_of(out["state"])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed["state"].key, out["state"].key)
    np.testing.assert_array_equal(resumed["state"].replay.data["obs"]["obs"], out["state"].replay.data["obs"]["obs"])
    for name in ("final_test.json",):
        with open(os.path.join(part, name)) as f, open(os.path.join(logdir, name)) as g:
            assert json.load(f) == json.load(g)


def test_init_from_continues_another_run(full_run, functions, tmp_path):
    """A new run started from another run's checkpoint at 80 env steps: with the same config it is
    that run resumed (metrics, params and replay equal the uninterrupted 120-step run's); a config
    that keeps the shapes starts from exactly the saved state and records what changed; one that
    changes them, or another seed count, fails with a ValueError naming the problem."""
    out, logdir = full_run
    kwargs = dict(num_seeds=NUM_SEEDS, chunk_iterations=1, eval_every=40, reference=False, print_fn=lambda s: None)
    source = str(tmp_path / "source")
    first = runner.run(CONFIG, source, steps=80, functions=functions, **kwargs)
    same = str(tmp_path / "same")
    cont = runner.run(CONFIG, same, steps=120, init_from=source, functions=functions, **kwargs)
    assert [strip(r) for r in read_metrics(same)] == [strip(r) for r in read_metrics(logdir)]
    for a, b in zip(params_of(cont["state"]), params_of(out["state"])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cont["state"].replay.data["obs"]["obs"], out["state"].replay.data["obs"]["obs"])
    with open(os.path.join(same, "init_from.json")) as f:
        assert json.load(f) == {"logdir": os.path.abspath(source), "env_steps": 80, "changed": []}
    assert [r["env_steps"] for r in read_metrics(source)] == [40, 80]  # the source is left as it was

    # A changed loss scale: the budget is already spent, so the run only restores (no compilation).
    changed = str(tmp_path / "changed")
    lines = []
    got = runner.run(CONFIG.replace(free_bits=0.5), changed, steps=80, init_from=source, final_test=False,
                 num_seeds=NUM_SEEDS, chunk_iterations=1, eval_every=40, reference=False, print_fn=lines.append)
    for a, b in zip(params_of(got["state"]), params_of(first["state"])):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(changed, "init_from.json")) as f:
        assert json.load(f)["changed"] == ["config.world_model.free_bits"]
    assert any("with a different config.world_model.free_bits: 1.0 -> 0.5" in line for line in lines)
    assert [r["env_steps"] for r in read_metrics(changed)] == [40, 80]

    with pytest.raises(ValueError, match="config.nets.units: 32 -> 16") as refused:
        runner.run(CONFIG.replace(units=16), str(tmp_path / "units"), steps=80, init_from=source, final_test=False,
               **kwargs)
    assert "agent/params/" in str(refused.value) and ", here float32[" in str(refused.value)  # the arrays, named
    with pytest.raises(ValueError, match="num_seeds"):
        runner.run(CONFIG, str(tmp_path / "seeds"), steps=80, num_seeds=1, init_from=source, final_test=False,
               chunk_iterations=1, eval_every=40, reference=False, print_fn=lambda s: None)
    with pytest.raises(ValueError, match="no checkpoints"):
        runner.run(CONFIG, str(tmp_path / "none"), steps=80, init_from=str(tmp_path / "missing"), **kwargs)


def _old_flat_config(config) -> dict:
    """The config as runs saved it before the fields were grouped: one flat dict, with the old name
    of num_horizon_buckets."""
    flat = {name.rsplit(".", 1)[-1]: value for name, value in config.flat().items()}
    flat["horizon_buckets"] = flat.pop("num_horizon_buckets")
    return flat


def test_resume_takes_config_fields_added_later_at_their_defaults():
    """A checkpoint written before a Config field existed (here a flat, ungrouped config without
    expl_scale) resumes with that field at its default and refuses a run that sets it otherwise,
    naming the old and the new value."""
    saved = {"config": _old_flat_config(CONFIG), "seed": 0}
    del saved["config"]["expl_scale"]
    assert runner.check_resume(saved, {"config": CONFIG.to_dict(), "seed": 0}) == []
    with pytest.raises(ValueError, match=r"different config\.behavior\.expl_scale: 0\.0 -> 1\.0;"):
        runner.check_resume(saved, {"config": CONFIG.replace(expl_scale=1.0).to_dict(), "seed": 0})


def test_old_config_with_a_field_since_removed_is_refused_by_name():
    saved = {"config": {**_old_flat_config(CONFIG), "an_option_since_removed": 0.1}, "seed": 0}
    with pytest.raises(ValueError, match=r"field\(s\) that Config no longer has: an_option_since_removed; "):
        runner.check_resume(saved, {"config": CONFIG.to_dict(), "seed": 0})


def test_changed_config_fields_name_group_and_field():
    """Configs are compared field by field under GROUP.FIELD names; the step budget is not a
    difference; settings outside the config follow the config's fields; the settings that a resume
    may change are returned, not refused."""
    saved = {"config": CONFIG.to_dict(), "seed": 0, "mesh": {"seed": 1}}
    current = {"config": CONFIG.replace(units=CONFIG.nets.units + 16, env_steps=900).to_dict(), "seed": 0,
               "mesh": {"seed": 2}}
    units = CONFIG.nets.units
    assert runner.changed_config_fields(saved["config"], current["config"]) == [("config.nets.units", units, units + 16)]
    assert runner.flatten({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": 1, "d": [1, 2]}
    with pytest.raises(ValueError) as refused:
        runner.check_resume(saved, {**current, "seed": 3})
    message = str(refused.value)
    assert "\n" not in message
    assert message.index(f"config.nets.units: {units} -> {units + 16}") < message.index("seed: 0 -> 3")
    assert "mesh" not in message
    assert runner.check_resume(saved, {**current, "config": saved["config"]}) == ["mesh"]


def test_resume_refuses_a_different_config(full_run, tmp_path):
    """A resume under another config names the changed fields with their old and new values,
    then, when the shapes change, the arrays that differ, in one line."""
    _, logdir = full_run
    kwargs = dict(num_seeds=NUM_SEEDS, steps=200, chunk_iterations=1, eval_every=40, reference=False, resume=True,
                  print_fn=lambda s: None)
    with pytest.raises(ValueError, match=r"different config\.protocol\.batch_size: 4 -> 2; resume with the same settings"):
        runner.run(CONFIG.replace(batch_size=2), logdir, **kwargs)
    with pytest.raises(ValueError) as refused:
        runner.run(CONFIG.replace(units=16), logdir, **kwargs)
    message = str(refused.value)
    assert "\n" not in message
    array = r"agent/\S+: saved float32\[[0-9, ]+\], here float32\[[0-9, ]+\]"
    assert re.search(rf"different config\.nets\.units: 32 -> 16; arrays of another shape: {array}; {array}; ", message)
    assert re.search(r" \(and \d+ more\); resume with the same settings", message)  # the first 5 arrays named
    assert sorted(os.listdir(os.path.join(logdir, "checkpoints"))) == ["120", "80"]  # nothing was set aside


def _copy_run(logdir, tmp_path, name) -> str:
    target = str(tmp_path / name)
    shutil.copytree(logdir, target)
    return target


def _largest_state_file(checkpoint_dir) -> str:
    """The largest file of a checkpoint's array store (a data file of the replay)."""
    files = [os.path.join(r, f) for r, _, names in os.walk(os.path.join(checkpoint_dir, "state")) for f in names]
    return max(files, key=os.path.getsize)


def test_resume_skips_a_damaged_newest_checkpoint(full_run, functions, tmp_path):
    """The newest checkpoint (120) of a copy of the finished run is cut short (its largest data
    file truncated, as by a full disk). A resume says so in one warning line naming the step and
    the file, sets it aside, restores 80, drops the metrics row at 120 and trains that chunk
    again: metrics, params and replay equal the uninterrupted run's."""
    out, logdir = full_run
    part = _copy_run(logdir, tmp_path, "part")
    damaged = _largest_state_file(os.path.join(part, "checkpoints", "120"))
    relative = os.path.relpath(damaged, os.path.join(part, "checkpoints", "120"))
    with open(damaged, "r+b") as f:
        f.truncate(1000)
    lines = []
    resumed = runner.run(CONFIG, part, num_seeds=NUM_SEEDS, steps=120, chunk_iterations=1, eval_every=40,
                         reference=False, resume=True, functions=functions, print_fn=lines.append)
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"warning: skipped damaged checkpoint(s) 120 ({relative} is truncated (1000 of "
                                  "at least ")
    assert warnings[0].endswith(f"); resuming from 80 env steps; moved to {os.path.join(part, 'checkpoints_damaged')}")
    assert "resumed " + part + " at 80 env steps" in lines
    assert os.listdir(os.path.join(part, "checkpoints_damaged")) == ["120"]
    assert sorted(os.listdir(os.path.join(part, "checkpoints"))) == ["120", "80"]  # 120 written anew
    assert [strip(r) for r in read_metrics(part)] == [strip(r) for r in read_metrics(logdir)]
    for a, b in zip(params_of(resumed["state"]), params_of(out["state"])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed["state"].replay.data["obs"]["obs"], out["state"].replay.data["obs"]["obs"])


def test_resume_without_an_intact_checkpoint_fails_in_one_line(full_run, functions, tmp_path):
    """Both checkpoints damaged (a file missing, a file cut): the resume fails with one line naming
    each and why, and leaves them where they are."""
    _, logdir = full_run
    part = _copy_run(logdir, tmp_path, "part")
    os.remove(os.path.join(part, "checkpoints", "120", "meta", "metadata"))
    with open(os.path.join(part, "checkpoints", "80", "state", "_METADATA"), "r+b") as f:
        f.truncate(10)
    with pytest.raises(ValueError) as refused:
        runner.run(CONFIG, part, num_seeds=NUM_SEEDS, steps=160, chunk_iterations=1, eval_every=40,
                   reference=False, resume=True, functions=functions, print_fn=lambda s: None)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"cannot resume {part}: no intact checkpoint in {os.path.join(part, 'checkpoints')} "
                              "(120: meta/metadata is missing; 80: state/_METADATA is unreadable (")
    assert message.endswith("; start a new run in another logdir")
    assert sorted(os.listdir(os.path.join(part, "checkpoints"))) == ["120", "80"]
    assert not os.path.exists(os.path.join(part, "checkpoints_damaged"))


def _primitives(jaxpr, found):
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            _primitives(sub, found)
    return found


def test_horizon_switch_stays_a_switch_under_seed_vmap(full_run, functions):
    """With the horizon unbatched, vmap over seeds keeps lax.switch (one bucket runs); a batched
    index would turn it into a select that runs every bucket. (The trace is cached by the run.)"""
    state = full_run[0]["state"]
    jaxpr = functions.train_chunk.trace(state, np.int32(0)).jaxpr
    assert "cond" in _primitives(jaxpr.jaxpr, set())


def test_one_seed_run_matches_seed_0_of_two(functions):
    """With one seed the run's functions skip the vmap (trainer.over_seeds); its init and a chunk
    give what seed 0 of the two-seed (vmapped) functions gives, up to float rounding."""
    env, params = envs.make(CONFIG.env, num_episodes=CONFIG.protocol.num_episodes, episode_length=CONFIG.protocol.episode_length)
    one = tr.compile_run(CONFIG, env, params, num_seeds=1, chunk_iterations=1)
    keys = runner.seed_keys(3, 2)
    two_state, one_state = functions.init(keys), one.init(keys[:1])
    np.testing.assert_array_equal(one_state.replay.data["obs"]["obs"], two_state.replay.data["obs"]["obs"][:1])
    two_state, two_summary = functions.train_chunk(two_state, np.int32(0))
    one_state, one_summary = one.train_chunk(one_state, np.int32(0))
    assert jax.tree.structure(one_summary) == jax.tree.structure(two_summary)
    for a, b in zip(params_of(one_state), params_of(two_state)):
        assert a.shape[0] == 1
        np.testing.assert_allclose(a, b[:1], rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(one_summary), jax.tree.leaves(two_summary)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[:1], rtol=1e-4, atol=1e-5)


def test_baseline_windows_fit_the_agent():
    """The DreamerV3 baseline samples windows of window_length entries that the agent accepts."""
    config = get_config("debug", mamba=False)
    env, params = envs.make(config.env, num_episodes=2, episode_length=10)
    spec = ro.episode_spec(env, params)
    episodes = jax.tree.map(lambda x: jnp.zeros((3, *x.shape), x.dtype), spec)
    replay = rb.add(rb.init(config.protocol.replay_capacity, spec), episodes)
    batch = rb.sample_windows(replay, jax.random.PRNGKey(0), config.protocol.batch_size, config.protocol.window_length)
    assert batch["is_first"].shape == (config.protocol.batch_size, config.protocol.window_length)
    agent_state = jax.eval_shape(
        lambda k: agent_lib.init(k, config, env.observation_space(params), env.action_space(params)),
        jax.random.PRNGKey(0),
    )
    agent_lib.check_batch(agent_state, batch)  # raises if the window does not fit the config
    with pytest.raises(ValueError):
        agent_lib.check_batch(agent_state, rb.sample_episodes(replay, jax.random.PRNGKey(0), config.protocol.batch_size))


def test_four_devices_match_one(multi_device, full_run):
    """4 fake CPU devices, mesh seed=2 x data=2 (seeds sharded, and each seed's envs and batch
    sharded over 'data'), give the single-device metrics and params within float tolerance."""
    proc, logdir = multi_device
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    with open(os.path.join(logdir, "multi.json")) as f:
        info = json.load(f)
    assert info["mesh"] == {"seed": 2, "data": 2} and info["seed_sharded"]
    assert info["data_constraints"] > 0  # the envs / batch of each seed are sharded over 'data'
    rows, ref = read_metrics(logdir), read_metrics(full_run[1])
    assert [r["env_steps"] for r in rows] == [r["env_steps"] for r in ref]
    for a, b in zip(rows, ref):
        for key, value in b.items():
            if key == "wall_seconds" or not (key.startswith("train/") or key.startswith("eval/")):
                continue
            np.testing.assert_allclose(a[key], value, rtol=1e-3, atol=1e-4, err_msg=key)
    params = np.load(os.path.join(logdir, "params.npz"))
    for i, leaf in enumerate(params_of(full_run[0]["state"])):
        np.testing.assert_allclose(params[f"arr_{i}"], leaf, rtol=1e-3, atol=1e-5)


def test_summarize_by_hand():
    from mamba_jax import evaluate as ev

    stats = {"return": np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]),
             "episode_returns": np.array([[[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]], [[2.0, 3.0]] * 3])}
    out = ev.summarize(stats, "eval", {"return": 7.0, "episode_returns": [2.0, 4.0]})
    assert out["eval/return"] == pytest.approx(3.5)  # mean over seeds of (2, 5)
    assert out["eval/return/per_seed"] == [2.0, 5.0]
    assert out["eval/return_std"] == pytest.approx(np.std([1.0, 2.0, 3.0]) / 2)
    assert out["eval/return_episode_1"] == pytest.approx(1.5) and out["eval/return_episode_2"] == pytest.approx(2.0)
    # episode 2 of seed 0 has returns (0, 1, 2): 2 of 3 tasks positive; seed 1: all positive
    assert out["eval/positive_episode_2/per_seed"] == pytest.approx([2 / 3, 1.0])
    assert out["eval/positive_episode_2"] == pytest.approx(5 / 6) and out["eval/positive_episode_1"] == 1.0
    assert out["eval/return_vs_bayes"] == pytest.approx(0.5)
    assert out["eval/return_episode_1_vs_bayes"] == pytest.approx(0.75)
    assert out["eval/return_episode_2_vs_bayes"] == pytest.approx(0.5)


def test_reference_file_reader(tmp_path):
    from mamba_jax import evaluate as ev

    path = tmp_path / "ref.json"
    path.write_text(json.dumps({
        "point_robot": {"bayes": {"return_mean": 200.0, "episode_return_means": [50.0, 70.0, 80.0]}},
        "escape_room": {"bayes": {"return": 3.0, "num_episodes": 2, "episode_length": 60}},
    }))
    env, params = envs.make("point_robot")
    found = ev.reference_returns("point_robot", env, params, str(path), compute=False)
    assert found["episode_returns"] == [50.0, 70.0, 80.0]
    env, params = envs.make("point_robot", num_episodes=2, episode_length=10)  # not the file's 3 x 100
    assert ev.reference_returns("point_robot", env, params, str(path), compute=False) is None
    env, params = envs.make("escape_room")
    assert ev.reference_returns("escape_room", env, params, str(path), compute=False)["return"] == 3.0
    assert ev.reference_returns("escape_room", env, params, str(path), compute=False, policy="oracle") is None


def test_evaluation_and_test_tasks_are_fixed_and_disjoint():
    """The evaluation tasks are split(eval_key): the same keys at every evaluation (computed anew
    from the key, not stored), another set for another eval key; the final test's tasks never
    coincide with them."""
    from mamba_jax import evaluate as ev

    key = jax.random.PRNGKey(3)
    five = np.asarray(ev.eval_reset_keys(key, 5))
    # written down once (threefry keys, jax_threefry_partitionable=True, the default since JAX 0.5)
    np.testing.assert_array_equal(five[:2], [[3716834203, 3481239269], [1946498123, 2217676430]])
    np.testing.assert_array_equal(five, np.asarray(ev.eval_reset_keys(jnp.asarray([0, 3], jnp.uint32), 5)))
    other = np.asarray(ev.eval_reset_keys(jax.random.PRNGKey(4), 5))
    assert not {tuple(k) for k in five.tolist()} & {tuple(k) for k in other.tolist()}
    np.testing.assert_array_equal(np.asarray(ev.test_reset_keys(key, 2)),
                                  [[3950132604, 3119941159], [1243580522, 1917855631]])
    evals = {tuple(k) for k in np.asarray(ev.eval_reset_keys(key, 100)).tolist()}
    tests = {tuple(k) for k in np.asarray(ev.test_reset_keys(key, 1000)).tolist()}
    assert len(evals) == 100 and len(tests) == 1000 and not evals & tests
