"""Times one update of the MAMBA authors' PyTorch code at the point_robot preset (the child process
of `experiments.bench_authors`; needs torch, not JAX).

    python experiments/authors_update.py --authors_code=DIR [--reps=5]

DIR is a checkout of the reference code (github.com/zoharri/mamba; its models.py, networks.py and
tools.py are imported from there, unchanged). One update is what its `Dreamer._train` runs:
`WorldModel._train` on a batch of B = 16 whole meta-episodes of T = 300 steps (random data of the
point robot's shapes), then `ImagBehavior._train` from 512 posterior states per sequence (8192
imagination starts, H_im = 2), with its `halfcircle` settings (configs.yaml: defaults, then the
`halfcircle` block) and the reconstruction window off, as in the released experiment (spec
section 7). Prints one line `RESULT {json}` with the median and all times (seconds per update,
after `--warmup` untimed updates).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types

# configs.yaml `defaults` overridden by its `halfcircle` block, on the update path.
HALFCIRCLE = dict(
    device="cpu", precision=32, rnn_detach_every=-1,
    dyn_cell="gru_layer_norm", dyn_hidden=64, dyn_deter=512, dyn_stoch=16, dyn_discrete=16,
    dyn_input_layers=1, dyn_output_layers=1, dyn_rec_depth=1, dyn_shared=False, dyn_mean_act="none",
    dyn_std_act="sigmoid2", dyn_min_std=0.1, dyn_temp_post=True, grad_heads=("decoder", "reward", "cont"),
    units=128, reward_layers=2, cont_layers=2, value_layers=2, actor_layers=2, act="SiLU", norm="LayerNorm",
    encoder=dict(mlp_keys=".*", cnn_keys="None", act="SiLU", norm="LayerNorm", cnn_depth=32, kernel_size=4,
                 minres=4, mlp_layers=4, mlp_units=512, symlog_inputs=True, input_reward=True),
    decoder=dict(mlp_keys=".*", cnn_keys="None", act="SiLU", norm="LayerNorm", cnn_depth=32, kernel_size=4,
                 minres=4, mlp_layers=4, mlp_units=512, cnn_sigmoid=False, image_dist="mse",
                 vector_dist="symlog_mse", input_reward=True),
    value_head="symlog_disc", reward_head="symlog_disc", dyn_scale="0.5", rep_scale="0.1", kl_free="1.0",
    cont_scale=1.0, reward_scale=1.0, weight_decay=0.0, unimix_ratio=0.01, action_unimix_ratio=0.01,
    initial="learned", reconstruction_window=0,
    batch_size=16, batch_length=300, behavior_batch_length=512, hidden_states_subsample=64,
    model_lr=1e-4, opt_eps=1e-8, grad_clip=1000, value_lr=3e-5, actor_lr=3e-5, ac_opt_eps=1e-5,
    value_grad_clip=100, actor_grad_clip=100, slow_value_target=True, slow_target_update=1,
    slow_target_fraction=0.02, opt="adam", reward_EMA=True,
    discount=0.997, discount_lambda=0.95, imag_horizon=2, imag_gradient="dynamics", imag_sample=True,
    actor_dist="normal", actor_init_std=1.0, actor_min_std=0.1, actor_max_std=1.0, actor_temp=0.1,
    behavior_stop_grad=True, value_decay=0.0, future_entropy=False, num_actions=2,
)
OBS_SHAPES = {"obs": (2,), "reward": (1,), "time_step": (1,), "is_first": (1,), "is_terminal": (1,)}


def build(authors_code: str):
    """(update_fn, torch): the authors' world model and behaviour at the point_robot preset."""
    sys.path.insert(0, authors_code)
    if "wandb" not in sys.modules:  # tools.py imports it for its Logger only
        try:
            import wandb  # noqa: F401
        except ImportError:
            sys.modules["wandb"] = types.ModuleType("wandb")
    import numpy as np
    import torch

    import models

    config = types.SimpleNamespace(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in HALFCIRCLE.items()})
    config.actor_entropy = lambda: 3e-4
    config.actor_state_entropy = lambda: 0.0
    config.imag_gradient_mix = lambda: 0.0
    space = types.SimpleNamespace(spaces={k: types.SimpleNamespace(shape=s) for k, s in OBS_SHAPES.items()})
    wm = models.WorldModel(space, None, 0, config)
    reward = lambda f, s, a: wm.heads["reward"](f).mode()  # noqa: E731 (as Dreamer.__init__)
    behavior = models.ImagBehavior(config, None, wm, config.behavior_stop_grad, reward)
    B, T = config.batch_size, config.batch_length
    rng = np.random.default_rng(0)
    data = {
        "obs": rng.normal(size=(B, T, 2)).astype(np.float32),
        "reward": (rng.random((B, T)) < 0.1).astype(np.float32),
        "time_step": np.tile(np.linspace(0, 1, T, dtype=np.float32), (B, 1)),
        "is_first": np.zeros((B, T), np.float32),
        "is_terminal": np.zeros((B, T), np.float32),
        "action": rng.uniform(-1, 1, size=(B, T, 2)).astype(np.float32),
    }
    data["is_first"][:, 0] = 1.0

    def update():
        # Dreamer._train: world model, then the behaviour from 512 posterior states per sequence
        post, _, _ = wm._train(dict(data))
        idx = np.array([np.random.choice(np.arange(T), config.behavior_batch_length, replace=True) for _ in range(B)])
        start = {k: v[np.arange(B)[:, None], idx] for k, v in post.items()}
        behavior._train(start)

    return update, torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authors_code", required=True, help="a checkout of github.com/zoharri/mamba")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    update, torch = build(args.authors_code)
    for _ in range(args.warmup):
        update()
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        update()
        times.append(time.perf_counter() - t)
    print("RESULT " + json.dumps({"seconds_per_update": statistics.median(times), "times": times,
                                  "torch": torch.__version__, "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
