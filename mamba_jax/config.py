"""The agent's configuration: a frozen `Config` of six groups, the presets, validation.

    from mamba_jax import get_config
    config = get_config("point_robot", batch_size=8)   # a validated, hashable Config
    config.protocol.batch_size, config.nets.units, config.world_model.free_bits

`Config` holds the identity of a run (`name`, `env`, `mamba`) and six groups, each a frozen
dataclass of the fields that configure one thing:

    protocol     the data: meta-episode shape N x L, env-step budget, train ratio, replay, batches
    nets         network sizes, shared by the world model and the actor / critic heads
    world_model  the world-model loss and its horizon schedule (MAMBA's growing H_wm)
    behavior     imagination, returns, actor and critic losses, the optional exploration bonus
    optim        the three Adam optimisers (learning rate, epsilon, gradient clip)
    eval         the evaluation protocol

Field names are unique across groups, so overrides name a field alone (`units=64`, or on the
command line `--config=units=64`; `--config=nets.units=64` works too). `Config` is frozen and
hashable: a static (non-pytree) field of `AgentState` and a static argument of `jax.jit`.
`get_config` validates; `Config.validate()` raises a ValueError naming the field and what is
allowed. The equations these fields enter are in docs/algorithm.md; the presets are its table.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


# ------------------------------------------------------------------------------ the groups
@dataclasses.dataclass(frozen=True)
class Protocol:
    """What is collected and how much is trained on it (docs/algorithm.md, "Training protocol")."""

    num_episodes: int = 3  # N episodes per meta-episode (one task)
    episode_length: int = 100  # L steps per episode
    env_steps: int = 1_000_000  # budget, in real env transitions
    train_ratio: float = 0.01  # updates per collected meta-episode step: U = ratio * steps / N
    batch_size: int = 16  # B meta-episodes (or windows, for the DreamerV3 baseline) per update
    prefill: int = 25  # meta-episodes of uniform random actions before training
    num_envs: int = 10  # envs collecting in parallel (one meta-episode each per iteration)
    replay_capacity: int = 3333  # in meta-episodes (the reference keeps 1e6 transitions)
    window_length: int = 64  # DreamerV3 baseline only: entries per training window


@dataclasses.dataclass(frozen=True)
class Networks:
    """Network sizes (DreamerV3's, as in MAMBA's reference configs)."""

    units: int = 512  # encoder / decoder MLP width
    enc_layers: int = 4  # encoder and decoder MLP depth
    cnn_depth: int = 32  # first conv channels (32/64/128/256), image observations only
    deter: int = 512  # GRU state size D
    hidden: int = 64  # RSSM input / output hidden size
    stoch: int = 16  # number of categorical latents
    classes: int = 16  # classes per categorical latent
    head_layers: int = 2  # reward, continue, actor and critic MLP depth
    head_units: int = 128  # their width
    bins: int = 255  # two-hot bins of the reward and value heads
    bin_low: float = -20.0  # symlog-space range of the bins
    bin_high: float = 20.0
    unimix: float = 0.01  # uniform mixture of the categorical latents (and discrete actions)
    layer_norm_eps: float = 1e-3


@dataclasses.dataclass(frozen=True)
class WorldModelLoss:
    """The world-model loss and MAMBA's horizon schedule H_wm(steps) (docs/algorithm.md)."""

    initial_wm_horizon: int = 300  # H0
    wm_horizon_ramp_steps: int = 0  # R env steps until H_wm = T; required > 0 when H0 < T
    num_horizon_buckets: int = 4  # static sequence lengths the update is compiled for (H0 < T)
    recon_subsample: int = 64  # reconstruction entries per sequence (-1: every entry)
    free_bits: float = 1.0
    kl_dyn_scale: float = 0.5
    kl_rep_scale: float = 0.1
    dec_scale: float = 1.0
    reward_scale: float = 1.0
    cont_scale: float = 1.0
    # optional, not in the paper: the reward head reads the deterministic state h_t only, so it
    # predicts E[r_t | history] (docs/learning_checks.md: 0.31 -> 0.44 of the Bayes return at 1.03M)
    reward_from_deter: bool = False


@dataclasses.dataclass(frozen=True)
class Behavior:
    """Imagination, returns and the actor / critic losses (DreamerV3's)."""

    imag_starts_per_seq: int = 512  # imagination starts per sequence (-1: every entry)
    imag_horizon: int = 2  # H_im imagined transitions per start
    gamma: float = 0.997
    lam: float = 0.95
    entropy_scale: float = 3e-4
    actor_min_std: float = 0.1
    actor_max_std: float = 1.0
    slow_critic_rate: float = 0.02
    slow_critic_scale: float = 1.0
    retnorm_rate: float = 0.01
    retnorm_low: float = 5.0  # percentile
    retnorm_high: float = 95.0  # percentile
    retnorm_max_inv: float = 1.0  # scale = max(p_high - p_low, this)
    # optional, not in the paper: Plan2Explore's latent-disagreement bonus (mamba_jax/explore.py);
    # imagined reward += expl_scale * ensemble disagreement; 0 = off
    expl_scale: float = 0.0
    expl_members: int = 8  # ensemble size


@dataclasses.dataclass(frozen=True)
class Optimisers:
    """Adam with global-norm clipping for the world model, the actor and the critic."""

    wm_lr: float = 1e-4
    wm_eps: float = 1e-8
    wm_clip: float = 1000.0
    actor_lr: float = 3e-5
    actor_eps: float = 1e-5
    actor_clip: float = 100.0
    critic_lr: float = 3e-5
    critic_eps: float = 1e-5
    critic_clip: float = 100.0


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Evaluation during training (fixed tasks) and the final test (fresh tasks)."""

    eval_tasks: int = 20
    eval_every: int = 50_000  # env steps
    final_eval_tasks: int = 1000


GROUPS: dict[str, type] = {
    "protocol": Protocol,
    "nets": Networks,
    "world_model": WorldModelLoss,
    "behavior": Behavior,
    "optim": Optimisers,
    "eval": Evaluation,
}
TOP_LEVEL = ("name", "env", "mamba")
# Fields renamed since checkpoints were first written (old name -> new name).
RENAMED = {"horizon_buckets": "num_horizon_buckets"}



def _group_of_field() -> dict[str, str]:
    out = {}
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in out and f.name not in TOP_LEVEL, f.name  # names are unique
            out[f.name] = group
    return out


GROUP_OF = _group_of_field()  # field name -> its group


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyperparameter of the agent and of its training protocol (see the module docstring)."""

    name: str = "point_robot"
    env: str = "point_robot"  # the envs.make name
    mamba: bool = True  # False: plain DreamerV3 (windows, no schedule, no reward/time inputs)
    protocol: Protocol = Protocol()
    nets: Networks = Networks()
    world_model: WorldModelLoss = WorldModelLoss()
    behavior: Behavior = Behavior()
    optim: Optimisers = Optimisers()
    eval: Evaluation = Evaluation()

    # ------------------------------------------------------------------ derived
    @property
    def meta_length(self) -> int:
        """T = N * L transitions per meta-episode (a stored meta-episode has T + 1 entries)."""
        return self.protocol.num_episodes * self.protocol.episode_length

    @property
    def has_ramp(self) -> bool:
        """MAMBA with a growing world-model horizon (H0 < T)."""
        return self.mamba and self.world_model.initial_wm_horizon < self.meta_length

    @property
    def has_exploration_bonus(self) -> bool:
        """The optional ensemble-disagreement bonus (mamba_jax/explore.py) is on."""
        return self.behavior.expl_scale != 0

    # ------------------------------------------------------------------ construction
    def replace(self, **overrides) -> "Config":
        """A copy with fields changed, named alone (`units=64`), dotted (`**{"nets.units": 64}`) or as
        whole groups (`nets=Networks(...)`). Not validated: call `.validate()` or use get_config."""
        top, groups = {}, {}
        for key, value in overrides.items():
            if key in TOP_LEVEL or key in GROUPS:
                top[key] = value
                continue
            group, _, name = key.rpartition(".")
            if name not in GROUP_OF or group not in ("", GROUP_OF[name]):
                raise ValueError(_unknown_field_message(key))
            groups.setdefault(GROUP_OF[name], {})[name] = value
        new = dataclasses.replace(self, **top)
        changed = {g: dataclasses.replace(getattr(new, g), **v) for g, v in groups.items()}
        return dataclasses.replace(new, **changed)

    def to_dict(self) -> dict:
        """The nested dict of every field (JSON-ready): {"name", "env", "mamba", "protocol": {...}, ...}."""
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        """{"name": ..., "protocol.num_episodes": ..., ...}: every field under its dotted name."""
        return flatten(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        """A Config from `to_dict()`'s nested dict, or from the flat dict that runs saved before the
        fields were grouped (their run.json / checkpoints). Renamed fields are mapped (RENAMED); a
        field this Config does not have (an option since removed from the library: docs/learning_checks.md
        names them and the commit at which they last existed) raises a ValueError naming it. Not validated."""
        values = {}
        for key, value in data.items():
            if key in GROUPS and isinstance(value, dict):
                values.update(value)
            else:
                values[key] = value
        values = {RENAMED.get(k, k): v for k, v in values.items()}
        unknown = sorted(k for k in values if k not in TOP_LEVEL and k not in GROUP_OF)
        if unknown:
            raise ValueError(
                f"this config has field(s) that Config no longer has: {', '.join(unknown)}; options removed from "
                "the library are listed in docs/learning_checks.md with the commit at which they last existed")
        return cls().replace(**values)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "Config":
        """Raises ValueError naming the offending field and what is allowed; returns self."""
        p, n, w, b = self.protocol, self.nets, self.world_model, self.behavior
        for group in GROUPS:
            if not isinstance(getattr(self, group), GROUPS[group]):
                raise ValueError(f"Config.{group} must be a {GROUPS[group].__name__}, got {getattr(self, group)!r}")
        positive_ints = {
            "protocol": "num_episodes episode_length env_steps batch_size prefill num_envs replay_capacity window_length",
            "nets": "units enc_layers cnn_depth deter hidden stoch classes head_layers head_units",
            "world_model": "initial_wm_horizon num_horizon_buckets",
            "behavior": "imag_horizon expl_members",
            "eval": "eval_tasks eval_every final_eval_tasks",
        }
        for group, names in positive_ints.items():
            for f in names.split():
                v = getattr(getattr(self, group), f)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"Config.{group}.{f}={v!r}: allowed: an integer >= 1")
        for group, f in (("world_model", "recon_subsample"), ("behavior", "imag_starts_per_seq")):
            v = getattr(getattr(self, group), f)
            if not isinstance(v, int) or isinstance(v, bool) or not (v == -1 or v >= 1):
                raise ValueError(f"Config.{group}.{f}={v!r}: allowed: an integer >= 1, or -1 for every step")
        positive_floats = {
            "protocol": "train_ratio",
            "nets": "layer_norm_eps",
            "behavior": "retnorm_max_inv",
            "optim": " ".join(f.name for f in dataclasses.fields(Optimisers)),
        }
        for group, names in positive_floats.items():
            for f in names.split():
                v = getattr(getattr(self, group), f)
                if not _is_number(v) or not v > 0:
                    raise ValueError(f"Config.{group}.{f}={v!r}: allowed: a number > 0")
        non_negative = {
            "world_model": "free_bits kl_dyn_scale kl_rep_scale dec_scale reward_scale cont_scale",
            "behavior": "entropy_scale slow_critic_scale",
        }
        for group, names in non_negative.items():
            for f in names.split():
                v = getattr(getattr(self, group), f)
                if not _is_number(v) or not v >= 0:
                    raise ValueError(f"Config.{group}.{f}={v!r}: allowed: a number >= 0")
        if not _is_number(b.expl_scale) or not (math.isfinite(b.expl_scale) and b.expl_scale >= 0):
            raise ValueError(f"Config.behavior.expl_scale={b.expl_scale!r}: allowed: a finite number >= 0 "
                             "(0: off, > 0: the disagreement bonus)")
        for f in ("gamma", "slow_critic_rate", "retnorm_rate"):
            v = getattr(b, f)
            if not _is_number(v) or not 0 < v <= 1:
                raise ValueError(f"Config.behavior.{f}={v!r}: allowed: 0 < value <= 1")
        if not 0 <= b.lam <= 1:
            raise ValueError(f"Config.behavior.lam={b.lam!r}: allowed: 0 <= lam <= 1")
        if not 0 <= n.unimix < 1:
            raise ValueError(f"Config.nets.unimix={n.unimix!r}: allowed: 0 <= unimix < 1")
        if not 0 <= b.retnorm_low < b.retnorm_high <= 100:
            raise ValueError(f"Config.behavior.retnorm_low/high={b.retnorm_low}/{b.retnorm_high}: "
                             "allowed: 0 <= low < high <= 100 (percentiles)")
        if not 0 < b.actor_min_std < b.actor_max_std:
            raise ValueError(f"Config.behavior.actor_min_std/max_std={b.actor_min_std}/{b.actor_max_std}: "
                             "allowed: 0 < min_std < max_std")
        if not isinstance(n.bins, int) or n.bins < 2 or not n.bin_low < n.bin_high:
            raise ValueError(f"Config.nets.bins={n.bins!r}, bin_low={n.bin_low}, bin_high={n.bin_high}: "
                             "allowed: bins an integer >= 2 and bin_low < bin_high")
        if not isinstance(w.wm_horizon_ramp_steps, int) or w.wm_horizon_ramp_steps < 0:
            raise ValueError(f"Config.world_model.wm_horizon_ramp_steps={w.wm_horizon_ramp_steps!r}: "
                             "allowed: an integer >= 0")
        T = self.meta_length
        if w.initial_wm_horizon > T:
            raise ValueError(
                f"Config.world_model.initial_wm_horizon={w.initial_wm_horizon} exceeds the meta-episode length "
                f"T = num_episodes * episode_length = {T}; allowed: 1 <= initial_wm_horizon <= {T}")
        if self.mamba and w.initial_wm_horizon < T and w.wm_horizon_ramp_steps <= 0:
            raise ValueError(
                f"Config.world_model.initial_wm_horizon={w.initial_wm_horizon} < T={T} needs a ramp: set "
                "wm_horizon_ramp_steps (env steps at which the horizon reaches T) to a value > 0, "
                f"or initial_wm_horizon={T} for no schedule")
        if not self.mamba and not 2 <= p.window_length <= T + 1:
            raise ValueError(
                f"Config.protocol.window_length={p.window_length}: the baseline cuts windows from stored "
                f"meta-episodes of T + 1 = {T + 1} entries; allowed: 2 <= window_length <= {T + 1}")
        if p.replay_capacity < p.prefill:
            raise ValueError(f"Config.protocol.replay_capacity={p.replay_capacity} < prefill={p.prefill}: the "
                             "prefill would not fit; allowed: replay_capacity >= prefill")
        if p.replay_capacity < p.num_envs:
            raise ValueError(f"Config.protocol.replay_capacity={p.replay_capacity} < num_envs={p.num_envs}: one "
                             "collection round would not fit; allowed: replay_capacity >= num_envs")
        for name, v in (("mamba", self.mamba), ("world_model.reward_from_deter", w.reward_from_deter)):
            if not isinstance(v, bool):
                raise ValueError(f"Config.{name}={v!r}: allowed: True or False")
        _check_env_name(self.env)
        return self


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}, "c": 2} -> {"a.b": 1, "c": 2}."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def field_values(data: dict) -> dict:
    """{field name: value} of a saved config dict, nested (`Config.to_dict()`) or the flat dict of runs
    saved before the fields were grouped; old names stay as they were saved (no validation: for
    reading the records of any run, e.g. in experiments.summarize)."""
    return {key.rsplit(".", 1)[-1]: value for key, value in flatten(data).items()}


def _unknown_field_message(key: str) -> str:
    if key in RENAMED:
        return f"Config field {key!r} is now {RENAMED[key]!r}"
    allowed = sorted(TOP_LEVEL + tuple(GROUP_OF))
    return f"unknown Config field {key!r}; allowed: {', '.join(allowed)} (or GROUP.FIELD)"


def _check_env_name(name: str) -> None:
    import envs  # here: the agent does not otherwise depend on the env package

    if name not in envs.NAMES:
        raise ValueError(f"Config.env={name!r}: unknown environment; allowed: {', '.join(envs.NAMES)}")


# ------------------------------------------------------------------------------ presets
def _paper_preset(name: str, env: str, *, num_episodes: int, episode_length: int, env_steps: float,
                  train_ratio: float, imag_horizon: int, initial_wm_horizon: int, wm_horizon_ramp_steps: float,
                  enc_layers: int, lrs: tuple[float, float, float], **overrides) -> Config:
    """A preset of the paper's table (docs/algorithm.md): the reference's replay of 1e6 transitions and
    20 evaluations per run."""
    T = num_episodes * episode_length
    steps = int(env_steps)
    return Config(
        name=name,
        env=env,
        protocol=Protocol(num_episodes=num_episodes, episode_length=episode_length, env_steps=steps,
                          train_ratio=train_ratio, replay_capacity=max(1_000_000 // T, 25)),
        nets=Networks(enc_layers=enc_layers),
        world_model=WorldModelLoss(initial_wm_horizon=initial_wm_horizon,
                                   wm_horizon_ramp_steps=int(wm_horizon_ramp_steps)),
        behavior=Behavior(imag_horizon=imag_horizon),
        optim=Optimisers(wm_lr=lrs[0], actor_lr=lrs[1], critic_lr=lrs[2]),
        eval=Evaluation(eval_every=max(steps // 20, T)),
    ).replace(**overrides)


SMALL_LRS = (1e-4, 3e-5, 3e-5)  # world model, actor, critic
LARGE_LRS = (2e-4, 6e-5, 6e-5)

# Networks a 2-core CPU affords ~10^4 updates of (the *_cpu presets; docs/learning_checks.md).
_CPU_NETWORKS = dict(units=64, deter=64, hidden=32, stoch=8, classes=8, head_units=128, recon_subsample=32,
                     imag_starts_per_seq=16)


def _rooms_cpu(name: str, env: str) -> Config:
    """Rooms-N (one 100-step episode) on a 2-core CPU: see rooms_cpu below."""
    return _paper_preset(
        name, env, num_episodes=1, episode_length=100, env_steps=5e5, train_ratio=0.02, imag_horizon=10,
        initial_wm_horizon=50, wm_horizon_ramp_steps=2.5e5, enc_layers=2, lrs=(3e-4, 1e-4, 3e-4), **_CPU_NETWORKS,
        reward_from_deter=True, entropy_scale=3e-2, eval_tasks=100)


PRESETS: dict[str, Config] = {
    # The paper's table, in real env steps.
    "point_robot": _paper_preset(
        "point_robot", "point_robot", num_episodes=3, episode_length=100, env_steps=1e6, train_ratio=0.01,
        imag_horizon=2, initial_wm_horizon=300, wm_horizon_ramp_steps=0, enc_layers=4, lrs=SMALL_LRS),
    "point_robot_wind": _paper_preset(
        "point_robot_wind", "point_robot_wind", num_episodes=3, episode_length=100, env_steps=1e6,
        train_ratio=0.2, imag_horizon=10, initial_wm_horizon=300, wm_horizon_ramp_steps=0, enc_layers=4,
        lrs=SMALL_LRS),
    "escape_room": _paper_preset(
        "escape_room", "escape_room", num_episodes=2, episode_length=60, env_steps=2e6, train_ratio=0.2,
        imag_horizon=10, initial_wm_horizon=120, wm_horizon_ramp_steps=0, enc_layers=4, lrs=SMALL_LRS),
    "rooms": _paper_preset(
        "rooms", "rooms", num_episodes=1, episode_length=100, env_steps=3e6, train_ratio=0.1, imag_horizon=2,
        initial_wm_horizon=50, wm_horizon_ramp_steps=2.5e6, enc_layers=4, lrs=SMALL_LRS, eval_tasks=100),
    # Not in the paper's table: rooms with N = 3 (meta-learning proper); ramp 50 -> 300 by 2.5M.
    "rooms_meta": _paper_preset(
        "rooms_meta", "rooms_meta", num_episodes=3, episode_length=100, env_steps=3e6, train_ratio=0.1,
        imag_horizon=2, initial_wm_horizon=50, wm_horizon_ramp_steps=2.5e6, enc_layers=4, lrs=SMALL_LRS,
        eval_tasks=100),
    "reacher": _paper_preset(
        "reacher", "reacher", num_episodes=3, episode_length=300, env_steps=10e6, train_ratio=0.03,
        imag_horizon=10, initial_wm_horizon=50, wm_horizon_ramp_steps=2.5e6, enc_layers=2, lrs=LARGE_LRS),
    "reacher_pixels": _paper_preset(
        "reacher_pixels", "reacher_pixels", num_episodes=3, episode_length=300, env_steps=15e6,
        train_ratio=0.06, imag_horizon=10, initial_wm_horizon=50, wm_horizon_ramp_steps=2.5e6, enc_layers=2,
        lrs=LARGE_LRS),
    "humanoid_dir": _paper_preset(
        "humanoid_dir", "humanoid_dir", num_episodes=2, episode_length=200, env_steps=15e6, train_ratio=0.03,
        imag_horizon=10, initial_wm_horizon=50, wm_horizon_ramp_steps=7.5e6, enc_layers=2, lrs=LARGE_LRS),
    # The point robot with networks small enough for a 2-core CPU (same env and protocol). It affords
    # ~10^4 updates instead of DreamerV3's ~10^6, so the learning rates are raised (the critic's most)
    # and H_im = 10 (as for point_robot_wind) propagates sparse rewards 5x faster
    # (docs/learning_checks.md says what each change bought).
    "point_robot_cpu": _paper_preset(
        "point_robot_cpu", "point_robot", num_episodes=3, episode_length=100, env_steps=6e5, train_ratio=0.04,
        imag_horizon=10, initial_wm_horizon=300, wm_horizon_ramp_steps=0, enc_layers=2, lrs=(3e-4, 1e-4, 3e-4),
        **_CPU_NETWORKS),
    # The point robot with wind (the paper's third point-robot task) as point_robot_cpu, reading the
    # reward from h_t as the other *_cpu presets of the suite do (docs/algorithm.md section 9).
    "point_robot_wind_cpu": _paper_preset(
        "point_robot_wind_cpu", "point_robot_wind", num_episodes=3, episode_length=100, env_steps=6e5,
        train_ratio=0.04, imag_horizon=10, initial_wm_horizon=300, wm_horizon_ramp_steps=0, enc_layers=2,
        lrs=(3e-4, 1e-4, 3e-4), **_CPU_NETWORKS, reward_from_deter=True),
    # The escape room and Rooms-3 with point_robot_cpu's networks and learning rates (same env and
    # protocol as the paper's presets, half / a third of their env steps). Both read the reward from
    # h_t (it lifted point_robot_cpu on 3 seeds, MAMBA and DreamerV3 alike); Rooms, the first discrete
    # task, also has a 100x entropy bonus (with 10x its actor fell to the unimix floor within 100k env
    # steps, below the random return; docs/results.md) and its ramp 50 -> 100 done by half the budget.
    "escape_room_cpu": _paper_preset(
        "escape_room_cpu", "escape_room", num_episodes=2, episode_length=60, env_steps=5e5, train_ratio=0.04,
        imag_horizon=10, initial_wm_horizon=120, wm_horizon_ramp_steps=0, enc_layers=2, lrs=(3e-4, 1e-4, 3e-4),
        **_CPU_NETWORKS, reward_from_deter=True),
    "rooms_cpu": _rooms_cpu("rooms_cpu", "rooms"),
    # Rooms-2 and Rooms-4 the same way, for the decomposition study (docs/results.md).
    "rooms2_cpu": _rooms_cpu("rooms2_cpu", "rooms2"),
    "rooms4_cpu": _rooms_cpu("rooms4_cpu", "rooms4"),
    # Tiny networks and a short meta-episode with a ramp, for tests: compiles in seconds.
    "debug": Config(
        name="debug",
        env="point_robot",
        protocol=Protocol(num_episodes=2, episode_length=10, env_steps=2_000, train_ratio=0.1, batch_size=4,
                          prefill=2, num_envs=2, replay_capacity=16, window_length=8),
        nets=Networks(units=32, enc_layers=1, cnn_depth=4, deter=32, hidden=16, stoch=4, classes=4,
                      head_layers=1, head_units=32),
        world_model=WorldModelLoss(initial_wm_horizon=8, wm_horizon_ramp_steps=1_000, num_horizon_buckets=2,
                                   recon_subsample=8),
        behavior=Behavior(imag_starts_per_seq=4, imag_horizon=3),
        eval=Evaluation(eval_tasks=2, eval_every=400, final_eval_tasks=4),
    ),
}


def get_config(preset: str, **overrides) -> Config:
    """The named preset with `overrides` (field names, see Config.replace) applied, validated.

    Raises ValueError for an unknown preset (listing the allowed names), an unknown field,
    or an invalid value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[preset].replace(**overrides).validate()
