"""A multi-process run on one machine: two `python -m experiments.train` processes joined by
jax.distributed (--coordinator_address=localhost:PORT --num_processes=2 --process_id=i), one
XLA:CPU device each, cross-process collectives over gloo (jax's default CPU implementation),
train the `debug` preset with its one seed's data split over the two processes (mesh
{'seed': 1, 'data': 2}: the collecting envs, the replay and the training batch are sharded
across the processes, so every gradient is an all-reduce between them), write their checkpoint
into one directory, and two new processes resume from it.

The metrics, the final test and the checkpointed train state must equal, bit for bit, those of
the same run in one process with two CPU devices (--num_cpu_devices=2): each device runs the
same partitioned program either way, and a sum over two devices is one float addition, whose
result does not depend on the order of its operands or on the transport.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import train as launcher
from mamba_jax import runner as tr
from mamba_jax.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300  # seconds per launch; a process whose peer died waits for jax's heartbeat timeout
RUN_FLAGS = ["--env=debug", "--num_seeds=1", "--eval_every=40", "--chunk_iterations=1", "--noreference"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(logdir, *flags):
    env = dict(os.environ, PYTHONPATH=REPO, MAMBA_JAX_HUGEPAGES="0", JAX_PLATFORMS="cpu")
    cache = jax.config.jax_compilation_cache_dir  # tests/conftest.py's: a rerun loads the executables
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    command = [sys.executable, "-m", "experiments.train", *RUN_FLAGS, f"--logdir={logdir}", *flags]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(processes) -> list[str]:
    """Waits for the processes; their stdouts. Kills them all if one fails or hangs."""
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=TIMEOUT)
            assert process.returncode == 0, f"{process.args}\n{out}\n{err[-4000:]}"
            outputs.append(out)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def _two_processes(logdir, *flags) -> list[str]:
    port = _free_port()
    return _finish([
        _start(logdir, *flags, "--num_cpu_devices=1", f"--coordinator_address=localhost:{port}",
               "--num_processes=2", f"--process_id={i}")
        for i in range(2)
    ])


def _printed(stdout: str) -> list[str]:
    """The lines of a process's stdout but gloo's own ("[Gloo] Rank 1 is connected to 1 peer ranks...")."""
    return [line for line in stdout.splitlines() if line.strip() and not line.startswith("[Gloo]")]


def _rows(logdir) -> list[dict]:
    with open(os.path.join(logdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "wall_seconds"} for line in f]


def _json(logdir, name) -> dict:
    with open(os.path.join(logdir, name)) as f:
        return json.load(f)


def _checkpoint(logdir):
    """(steps, {path: array} of the latest train state) of a run's checkpoints, read in this
    one-device process from orbax's metadata (shapes and dtypes) alone."""
    checkpointer = Checkpointer(os.path.join(logdir, "checkpoints"))
    try:
        metadata = checkpointer._manager.item_metadata(checkpointer.latest_step())["state"]
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              getattr(metadata, "tree", metadata))
        state, _ = checkpointer.restore(target)
        steps = checkpointer.all_steps()
    finally:
        checkpointer.close()
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return sorted(steps), {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def test_two_processes_train_and_resume_like_one(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    reference = _start(one, "--steps=80", "--num_cpu_devices=2")  # alongside the two processes
    try:
        first = _two_processes(two, "--steps=80")
    finally:
        _finish([reference])

    # only process 0 prints (and writes the logs)
    assert "[       80/80 100.0%]" in first[0] and "final test on 4 tasks" in first[0]
    assert _printed(first[1]) == [], first[1]
    run = _json(two, "run.json")
    assert run["mesh"] == {"seed": 1, "data": 2} and len(run["host"]["devices"]) == 2
    assert _json(one, "run.json")["mesh"] == run["mesh"]

    rows = _rows(two)
    assert [r["env_steps"] for r in rows] == [40, 80]
    assert rows[-1]["updates"] == 2 and rows[-1]["train/wm/loss"] > 1.0
    assert rows == _rows(one)
    test = _json(two, "final_test.json")
    assert test == _json(one, "final_test.json") and test["env_steps"] == 80

    steps, state = _checkpoint(two)
    steps_one, state_one = _checkpoint(one)
    assert steps == steps_one == [80]
    assert state.keys() == state_one.keys() and len(state) > 50
    different = [path for path in state if not np.array_equal(state[path], state_one[path])]
    assert not different, different

    # two new processes restore the checkpoint (each its shards) and, the budget reached, run the
    # final test again: the same numbers from the restored parameters, keys and counters
    os.remove(os.path.join(two, "final_test.json"))
    resumed = _two_processes(two, "--steps=80", "--resume")
    assert f"resumed {two} at 80 env steps" in resumed[0] and _printed(resumed[1]) == []
    assert _json(two, "final_test.json") == test
    assert _rows(two) == rows


def _main(monkeypatch, *flags):
    """Runs the launcher's main in this process with start_jax, build_config and runner.run
    recorded (start_jax and runner.run not run); the calls in order."""
    calls = []
    monkeypatch.setattr(launcher, "start_jax", lambda *args: calls.append(("start_jax", args)))
    build_config = launcher.build_config
    monkeypatch.setattr(launcher, "build_config",
                        lambda *args: calls.append(("build_config", args[0])) or build_config(*args))
    monkeypatch.setattr(tr, "run", lambda config, logdir, **kwargs: calls.append(("run", config.name)))
    launcher.FLAGS(["train", "--env=debug", "--logdir=/nowhere", *flags])
    try:
        launcher.main(["train"])
    finally:
        launcher.FLAGS.unparse_flags()
    return calls


def test_launcher_joins_before_building_the_config(monkeypatch):
    built = [("build_config", "debug"), ("run", "debug")]
    joined = [("start_jax", ({"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}, 2))]
    assert _main(monkeypatch, "--coordinator_address=10.0.0.1:1234", "--num_processes=4", "--process_id=3",
                 "--num_cpu_devices=2") == joined + built
    assert _main(monkeypatch, "--distributed") == [("start_jax", ({}, None))] + built
    assert _main(monkeypatch, "--num_processes=2") == [("start_jax", ({"num_processes": 2}, None))] + built
    assert _main(monkeypatch) == [("start_jax", (None, None))] + built
    assert _main(monkeypatch, "--distributed", "--dry_run") == built[:1]  # validates only; joins nothing
    with pytest.raises(launcher.app.UsageError, match=r"--process_id=2: allowed: 0 <= process_id < --num_processes=2"):
        _main(monkeypatch, "--num_processes=2", "--process_id=2")


def test_start_jax_names_the_flags_when_jax_lacks_a_setting(monkeypatch):
    given = []

    def initialize(**kwargs):
        given.append(kwargs)
        raise ValueError("The process id of the current process must be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    with pytest.raises(launcher.app.UsageError, match="must be defined. Give --coordinator_address, --num_processes "
                                                      "and --process_id, or run --distributed where JAX detects"):
        launcher.start_jax({"coordinator_address": "localhost:1", "num_processes": 2}, None)
    assert given == [{"coordinator_address": "localhost:1", "num_processes": 2}]
