"""The agent's public API: AgentState, init, initial_carry, policy, update (and action_to_model,
defined in rollout.py, for the batch's action format).

    state = init(key, config, obs_space, action_space)
    carry = initial_carry(state, num_envs)
    action, carry = policy(state, carry, obs, key, deterministic=False)   # obs has "is_first" [B]
    state, metrics = update(state, batch, key)

Everything is a pure function of pytrees and keys: jittable (the Config and the observation /
action layout are static fields of `AgentState`) and vmappable over seeds.

`update` = one world-model step then one actor step and one critic step. MAMBA
(config.mamba): the batch holds whole meta-episodes (S = T + 1 entries); the horizon H_wm is
computed from `state.env_steps` (or passed as `h_wm`) and the update runs the branch of
`lax.switch` compiled for the smallest horizon bucket >= H_wm (see `config.world_model.num_horizon_buckets`),
with entries beyond H_wm masked out. Baseline: the batch holds windows of `window_length`
entries and is used whole.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from gymnax.environments import spaces

from mamba_jax import horizon
from mamba_jax.behavior import Behavior, RetNorm, actor_loss, critic_loss
from mamba_jax.config import Config
from mamba_jax.explore import Ensemble, ensemble_loss
from mamba_jax.nets import ObsSpec
from mamba_jax.rollout import action_to_model
from mamba_jax.rssm import RSSM, feature
from mamba_jax.sequence import gather_time, sample_times
from mamba_jax.world_model import WorldModel, wm_value_and_grad

MAMBA_KEYS = ("obs", "reward", "time")
BASELINE_KEYS = ("obs",)


@struct.dataclass
class AgentState:
    """Params, optimiser states and counters of one agent (one seed).

    params:    {"wm": {...}, "actor": ..., "critic": ..., "slow_critic": ...}, and "explore" (the
               disagreement ensemble) when config.behavior.expl_scale > 0
    opt_state: {"wm": ..., "actor": ..., "critic": ...} (optax), and "explore" likewise
    retnorm:   RetNorm (EMA of the return percentiles)
    env_steps: int32 [] real env transitions so far (set by the trainer)
    updates:   int32 [] updates done
    Static: config, obs_spec (the keys the encoder/decoder use), action_dim, discrete,
    action_low / action_high (tuples of floats, continuous only). The static fields are plain
    hashable values, equal for every `init` with the same config and spaces (so two states have
    the same tree structure); the modules and optimisers they determine are `state.modules`.
    """

    params: dict
    opt_state: dict
    retnorm: RetNorm
    env_steps: jax.Array
    updates: jax.Array
    config: Config = struct.field(pytree_node=False)
    obs_spec: ObsSpec = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    discrete: bool = struct.field(pytree_node=False)
    action_low: tuple = struct.field(pytree_node=False, default=())
    action_high: tuple = struct.field(pytree_node=False, default=())

    @property
    def modules(self) -> "Modules":
        """The networks and optimisers of this agent (built once per static layout)."""
        return build_modules(self.config, self.obs_spec, self.action_dim, self.discrete)

    @property
    def world_model(self) -> WorldModel:
        return self.modules.world_model

    @property
    def behavior(self) -> Behavior:
        return self.modules.behavior


@dataclasses.dataclass(frozen=True, eq=False)
class Modules:
    """What an agent's params are used with: the flax modules and the optax optimisers.

    world_model, behavior: the modules; optimisers: {"wm", "actor", "critic"} and "explore" when
    the exploration bonus is on; ensemble: the disagreement ensemble, or None when it is off.
    """

    world_model: WorldModel
    behavior: Behavior
    optimisers: dict
    ensemble: Ensemble | None


@functools.lru_cache(maxsize=64)
def build_modules(config: Config, obs_spec: ObsSpec, action_dim: int, discrete: bool) -> Modules:
    """The agent's Modules for a static layout, built once per distinct (config, obs_spec, action_dim,
    discrete) and then shared: `init`, `policy` and `update` (also while being traced) all use it."""
    wm = WorldModel.create(config, obs_spec, action_dim)
    ens = Ensemble.create(config, wm.feature_size, action_dim) if config.has_exploration_bonus else None
    return Modules(wm, Behavior.create(config, action_dim, discrete), _optimisers(config), ens)


def _optimisers(config: Config) -> dict:
    # optax.flatten: Adam on one concatenated vector is elementwise-identical to per-leaf Adam and
    # compiles ~3x faster on CPU (measured 0.72 s vs 1.95 s for the debug world model's optimiser).
    def make(lr, eps, clip):
        return optax.flatten(optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=eps)))

    tx = {
        "wm": make(config.optim.wm_lr, config.optim.wm_eps, config.optim.wm_clip),
        "actor": make(config.optim.actor_lr, config.optim.actor_eps, config.optim.actor_clip),
        "critic": make(config.optim.critic_lr, config.optim.critic_eps, config.optim.critic_clip),
    }
    if config.has_exploration_bonus:  # the ensemble is a world-model part: the world model's optimiser settings
        tx["explore"] = make(config.optim.wm_lr, config.optim.wm_eps, config.optim.wm_clip)
    return tx


def _obs_spec(config: Config, obs_space) -> ObsSpec:
    if not isinstance(obs_space, spaces.Dict):
        raise ValueError(f"obs_space must be a gymnax spaces.Dict with keys {MAMBA_KEYS}, got {type(obs_space).__name__}")
    missing = [k for k in MAMBA_KEYS if k not in obs_space.spaces]
    if missing:
        raise ValueError(f"obs_space lacks key(s) {missing}; the meta-episode wrapper provides {MAMBA_KEYS}")
    spec = []
    for k in MAMBA_KEYS if config.mamba else BASELINE_KEYS:
        shape = tuple(int(d) for d in obs_space.spaces[k].shape)
        if len(shape) == 3 and shape[:2] != (64, 64):
            raise ValueError(f"image observation {k!r} has shape {shape}; allowed: [64, 64, C]")
        if len(shape) not in (0, 1, 3):
            raise ValueError(f"observation {k!r} has shape {shape}; allowed: a scalar, a vector or a [64, 64, C] image")
        spec.append((k, shape, len(shape) == 3))
    return tuple(spec)


def init(key: jax.Array, config: Config, obs_space, action_space) -> AgentState:
    """Fresh AgentState. obs_space: gymnax spaces.Dict {obs, reward, time}; action_space:
    gymnax spaces.Box (bounds used to clip env actions) or spaces.Discrete(n)."""
    config.validate()
    spec = _obs_spec(config, obs_space)
    if isinstance(action_space, spaces.Discrete):
        discrete, action_dim, low, high = True, int(action_space.n), (), ()
    elif isinstance(action_space, spaces.Box):
        discrete = False
        if len(action_space.shape) != 1:
            raise ValueError(f"continuous action space must be a vector; got shape {action_space.shape}")
        action_dim = int(action_space.shape[0])
        low = tuple(float(x) for x in np.broadcast_to(np.asarray(action_space.low), action_space.shape))
        high = tuple(float(x) for x in np.broadcast_to(np.asarray(action_space.high), action_space.shape))
    else:
        raise ValueError(f"action_space must be gymnax spaces.Box or spaces.Discrete, got {type(action_space).__name__}")
    mods = build_modules(config, spec, action_dim, discrete)
    wm, beh, tx, ens = mods.world_model, mods.behavior, mods.optimisers, mods.ensemble

    def fresh(key):
        k_wm, k_beh = jax.random.split(key)
        params = {"wm": wm.init(k_wm), **beh.init(k_beh, wm.feature_size)}
        if ens is not None:  # its own key, so that the other params do not depend on the option
            params["explore"] = ens.init(jax.random.fold_in(key, 1))
        return params, {name: tx[name].init(params[name]) for name in tx}

    # One compiled initialisation: op by op, flax's init of the debug networks took 13 s on a 2-core
    # CPU (a small executable per op); under an outer jit (the trainer's init) this is inlined.
    params, opt_state = jax.jit(fresh)(key)
    return AgentState(
        params=params,
        opt_state=opt_state,
        retnorm=RetNorm.create(),
        env_steps=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
        config=config,
        obs_spec=spec,
        action_dim=action_dim,
        discrete=discrete,
        action_low=low,
        action_high=high,
    )


# ------------------------------------------------------------------------------ acting
def initial_carry(agent_state: AgentState, batch_size: int) -> dict:
    """{"state": RSSM initial state with batch [B], "action": zeros [B, A]}."""
    wm = agent_state.world_model
    state = wm.rssm.apply(agent_state.params["wm"]["rssm"], (batch_size,), method=RSSM.initial)
    return {"state": state, "action": jnp.zeros((batch_size, agent_state.action_dim), jnp.float32)}


def policy(agent_state: AgentState, carry: dict, obs: dict, key: jax.Array, deterministic: bool = False):
    """One acting step for a batch of envs.

    obs: the env observation dict with leaves [B, ...] plus "is_first" [B] bool (the carry
    is reset to the initial state where it is True). Returns (action, carry): action [B, A]
    float32 clipped to the action bounds, or [B] int32 for discrete; `deterministic`
    (static under jit) takes the actor's mode; the latent is sampled either way.
    """
    wm, beh = agent_state.world_model, agent_state.behavior
    params = agent_state.params
    k_obs, k_act = jax.random.split(key)
    embed = wm.embed(params["wm"], obs)
    post, _ = wm.rssm.apply(
        params["wm"]["rssm"], carry["state"], carry["action"], embed, jnp.asarray(obs["is_first"], bool), k_obs,
        method=RSSM.obs_step,
    )
    feat = feature(post)
    if deterministic:
        model_action = beh.mode(params["actor"], feat)
    else:
        model_action = beh.sample(params["actor"], feat, k_act)
    if agent_state.discrete:
        env_action = jnp.argmax(model_action, -1).astype(jnp.int32)
    else:
        low = jnp.asarray(agent_state.action_low, jnp.float32)
        high = jnp.asarray(agent_state.action_high, jnp.float32)
        env_action = jnp.clip(model_action, low, high)  # [deviation]: the reference passes unclipped samples
    taken = action_to_model(env_action, agent_state.action_dim, agent_state.discrete)  # the action in the batch format
    return env_action, {"state": post, "action": taken}


# ------------------------------------------------------------------------------ training
def _update_length(agent_state: AgentState, batch: dict, key: jax.Array, h_wm, length: int):
    """The whole update on the first `length + 1` entries (static) with horizon h_wm <= length."""
    c = agent_state.config
    mods = agent_state.modules
    wm, beh, tx, ens = mods.world_model, mods.behavior, mods.optimisers, mods.ensemble
    params, opt = agent_state.params, agent_state.opt_state
    batch = jax.tree.map(lambda x: x[:, : length + 1], batch)
    k_wm, k_start, k_actor = jax.random.split(key, 3)
    new_params, new_opt, extra_metrics = {}, {}, {}

    # world model
    (_, (wm_metrics, post)), g_wm = wm_value_and_grad(wm, params["wm"], batch, k_wm, h_wm, c)
    upd, opt_wm = tx["wm"].update(g_wm, opt["wm"], params["wm"])
    wm_params = optax.apply_updates(params["wm"], upd)

    B = batch["is_first"].shape[0]
    bonus_fn = None
    if ens is not None:  # the disagreement ensemble, on the replay's posterior transitions
        idx, _ = sample_times(jax.random.fold_in(key, 1), h_wm - 1, B, length - 1, c.world_model.recon_subsample)
        ens_loss = lambda p: ensemble_loss(ens, p, post, batch["action"], batch["is_first"], h_wm, idx)  # noqa: E731
        (_, extra_metrics), g_ens = jax.value_and_grad(ens_loss, has_aux=True)(params["explore"])
        upd, new_opt["explore"] = tx["explore"].update(g_ens, opt["explore"], params["explore"])
        new_params["explore"] = optax.apply_updates(params["explore"], upd)
        extra_metrics["expl/grad_norm"] = optax.tree.norm(g_ens)
        bonus_fn = lambda f, a: c.behavior.expl_scale * ens.disagreement(new_params["explore"], f, a)  # noqa: E731

    # imagination starts: posterior states (computed with the pre-update params), stop-gradient
    idx, weight = sample_times(k_start, h_wm, B, length, c.behavior.imag_starts_per_seq)
    start = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), gather_time(post, idx))
    start_weight = weight.reshape(-1)

    # actor
    grad_fn = jax.value_and_grad(actor_loss, has_aux=True)
    (_, (traj, retnorm, actor_metrics)), g_actor = grad_fn(
        params["actor"], beh, wm, wm_params, params["critic"], start, start_weight, agent_state.retnorm, k_actor,
        bonus_fn,
    )
    upd, opt_actor = tx["actor"].update(g_actor, opt["actor"], params["actor"])
    actor_params = optax.apply_updates(params["actor"], upd)

    # critic and its slow EMA copy
    grad_fn = jax.value_and_grad(critic_loss, has_aux=True)
    (_, critic_metrics), g_critic = grad_fn(params["critic"], beh, params["slow_critic"], traj, start_weight)
    upd, opt_critic = tx["critic"].update(g_critic, opt["critic"], params["critic"])
    critic_params = optax.apply_updates(params["critic"], upd)
    rate = c.behavior.slow_critic_rate
    slow = jax.tree.map(lambda s, p: (1 - rate) * s + rate * p, params["slow_critic"], critic_params)

    new_state = agent_state.replace(
        params={"wm": wm_params, "actor": actor_params, "critic": critic_params, "slow_critic": slow, **new_params},
        opt_state={"wm": opt_wm, "actor": opt_actor, "critic": opt_critic, **new_opt},
        retnorm=retnorm,
        updates=agent_state.updates + 1,
    )
    metrics = {
        **wm_metrics,
        **actor_metrics,
        **critic_metrics,
        **extra_metrics,
        "wm/grad_norm": optax.tree.norm(g_wm),
        "actor/grad_norm": optax.tree.norm(g_actor),
        "critic/grad_norm": optax.tree.norm(g_critic),
    }
    return new_state, metrics


def check_batch(agent_state: AgentState, batch: dict) -> None:
    """Raises ValueError if the batch's keys or (static) shapes do not fit the config."""
    c = agent_state.config
    for k in ("obs", "action", "is_first", "is_terminal"):
        if k not in batch:
            raise ValueError(f"batch lacks {k!r}; it needs obs, action, is_first, is_terminal")
    if "reward" not in batch["obs"]:
        raise ValueError("batch['obs'] lacks 'reward' (the reward head's target)")
    S = batch["is_first"].shape[1]
    expected = c.meta_length + 1 if c.mamba else c.protocol.window_length
    what = "whole meta-episodes of T + 1" if c.mamba else "windows of window_length"
    if S != expected:
        raise ValueError(f"batch has {S} entries per sequence; config {c.name!r} needs {what} = {expected}")
    if batch["action"].shape[-1] != agent_state.action_dim:
        raise ValueError(f"batch action dim {batch['action'].shape[-1]} != {agent_state.action_dim} (one-hot for discrete)")


def update(agent_state: AgentState, batch: dict, key: jax.Array, h_wm=None):
    """One world-model update, then one actor and one critic update.

    batch: {"obs": {"obs": [B,S,...], "reward": [B,S], "time": [B,S]}, "action": [B,S,A],
    "is_first": [B,S] bool, "is_terminal": [B,S] bool}; S = T + 1 (MAMBA) or window_length
    (baseline). h_wm (optional int32 scalar): the world-model horizon; by default
    wm_horizon(config, agent_state.env_steps). Under vmap over seeds pass it *unbatched*
    (in_axes None): with a batched horizon, vmap turns lax.switch into a select that runs
    every bucket. Returns (new agent_state, metrics: flat dict of float32 scalars).
    """
    check_batch(agent_state, batch)
    c = agent_state.config
    lengths = horizon.horizon_buckets(c)
    if h_wm is None:
        h_wm = horizon.wm_horizon(c, agent_state.env_steps) if c.mamba else jnp.int32(lengths[0])
    h_wm = jnp.minimum(jnp.asarray(h_wm, jnp.int32), lengths[-1])
    branches = [functools.partial(_update_length, length=n) for n in lengths]
    if len(branches) == 1:
        new_state, metrics = branches[0](agent_state, batch, key, h_wm)
        bucket = jnp.int32(0)
    else:
        bucket = jnp.minimum(horizon.bucket_index(c, h_wm), len(lengths) - 1)
        new_state, metrics = jax.lax.switch(bucket, branches, agent_state, batch, key, h_wm)
    metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
    metrics["h_wm"] = h_wm.astype(jnp.float32)
    metrics["h_bucket"] = jnp.asarray(lengths, jnp.float32)[bucket]
    return new_state, metrics
