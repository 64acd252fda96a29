"""RL^2 (Duan et al. 2016; Wang et al. 2016): the model-free meta-RL baseline, PPO on a GRU, purejaxrl style.

    trainer = make_train(get_rl2_config("point_robot"))
    state, metrics = jax.jit(trainer)(key)                 # the whole budget in one jit
    state, metrics = jax.jit(jax.vmap(trainer))(keys)      # ... over seeds
    state = trainer.init(key)                              # or in chunks, evaluating in between:
    state, metrics = trainer.train_chunk(state)            # chunk_updates updates
    stats = trainer.evaluate(state.params, reset_keys, key)  # {"return": [E], "episode_returns": [E, N]}

The agent reads the meta-episode wrapper's observation (envs/meta.py) plus its own previous action:

    x_t = [flatten(obs["obs"]), obs["reward"] (r_{t-1}), obs["time"] (t / T), a_{t-1} (model format)]
    h_t = GRU(h_{t-1}, tanh(Dense(x_t)));  policy head and value head: tanh MLPs on h_t

The hidden state h and the previous action are zeroed at meta-episode starts only (`is_first`), so h
carries what was learned about the task across the N episodes of a meta-episode.

Actions: Discrete -> categorical over logits (deterministic: argmax). Box -> a *clipped* Gaussian:
the raw sample a ~ N(mean, exp(log_std)) (state-independent log_std, as purejaxrl) is what PPO's
log-probabilities and entropy are of; the env gets clip(a, low, high) (deterministic: clip(mean)).

One PPO update (`update_step`): each of `num_envs` envs plays one whole meta-episode (T = N * L
steps, a fresh task) with the stochastic policy; GAE over it with no bootstrap after its end (the
meta-episode is RL^2's episode; an inner termination, e.g. a fall, ends it early and the rest is
masked padding, as in mamba_jax/rollout.py); then `update_epochs` epochs over `num_minibatches`
minibatches of whole envs, each re-unrolled from the zero state with full-sequence BPTT (no
truncation). Advantages are normalised per minibatch. One update = num_envs * T env steps (fewer
real ones when envs terminate early; `env_steps` counts the real ones), and
`num_updates = total_env_steps // (num_envs * T)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from gymnax.environments import spaces

from mamba_jax import rollout as ro


def _action_input(space, action):
    """The previous action as the network's input: one-hot [..., n] (Discrete) or [..., A] float32."""
    return ro.action_to_model(action, ro.action_dim(space), isinstance(space, spaces.Discrete))


# ---------------------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class RL2Config:
    """RL^2's hyperparameters (frozen, hashable: a static argument of jit)."""

    name: str = "point_robot"
    env: str = "point_robot"  # the envs.make name
    num_episodes: int = 3  # N
    episode_length: int = 100  # L
    total_env_steps: int = 1_000_000  # budget; updates = total_env_steps // (num_envs * N * L)
    num_envs: int = 16  # meta-episodes per update
    lr: float = 3e-4
    anneal_lr: bool = True  # linear decay to 0 over the budget's updates
    gamma: float = 0.997  # as MAMBA's Config.gamma: both agents discount the meta-episode alike
    gae_lambda: float = 0.95
    clip_eps: float = 0.2  # PPO's ratio clip, and the value clip
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    update_epochs: int = 4
    num_minibatches: int = 4  # minibatches of whole envs; must divide num_envs
    embed_units: int = 128  # Dense + tanh on the input
    gru_units: int = 256
    head_units: int = 128  # one tanh hidden layer in each of the policy and value heads
    init_log_std: float = -0.5  # Box actions: the initial log standard deviation
    eval_tasks: int = 20
    eval_every: int = 50_000  # env steps between evaluations (the default chunk size)
    final_eval_tasks: int = 1000

    @property
    def meta_length(self) -> int:
        """T = N * L steps per meta-episode."""
        return self.num_episodes * self.episode_length

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.meta_length

    @property
    def num_updates(self) -> int:
        return self.total_env_steps // self.steps_per_update

    def validate(self) -> "RL2Config":
        """Raises ValueError naming the offending field and what is allowed; returns self."""
        for f in ("num_episodes episode_length total_env_steps num_envs update_epochs num_minibatches "
                  "embed_units gru_units head_units eval_tasks eval_every final_eval_tasks").split():
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"RL2Config.{f}={v!r}: allowed: an integer >= 1")
        for f in ("lr", "clip_eps", "max_grad_norm"):
            if not getattr(self, f) > 0:
                raise ValueError(f"RL2Config.{f}={getattr(self, f)!r}: allowed: a number > 0")
        for f in ("ent_coef", "vf_coef"):
            if not getattr(self, f) >= 0:
                raise ValueError(f"RL2Config.{f}={getattr(self, f)!r}: allowed: a number >= 0")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"RL2Config.gamma={self.gamma!r}: allowed: 0 < gamma <= 1")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"RL2Config.gae_lambda={self.gae_lambda!r}: allowed: 0 <= gae_lambda <= 1")
        if not isinstance(self.anneal_lr, bool):
            raise ValueError(f"RL2Config.anneal_lr={self.anneal_lr!r}: allowed: True or False")
        if not math.isfinite(self.init_log_std):
            raise ValueError(f"RL2Config.init_log_std={self.init_log_std!r}: allowed: a finite number")
        if self.num_envs % self.num_minibatches:
            raise ValueError(f"RL2Config.num_minibatches={self.num_minibatches}: allowed: a divisor of "
                             f"num_envs={self.num_envs}")
        if self.total_env_steps < self.steps_per_update:
            raise ValueError(f"RL2Config.total_env_steps={self.total_env_steps}: allowed: >= num_envs * N * L "
                             f"= {self.steps_per_update} (one update)")
        import envs  # local: importing the config does not import the environments

        if self.env not in envs.NAMES:
            raise ValueError(f"RL2Config.env={self.env!r}: allowed: {', '.join(envs.NAMES)}")
        return self


def _preset(name, env, N, L, steps, eval_every, **extra):
    return RL2Config(name=name, env=env, num_episodes=N, episode_length=L, total_env_steps=int(steps),
                     eval_every=eval_every, **extra)


# N x L, budgets and eval_every as mamba_jax/config.py's presets of the same name (equal env steps).
RL2_PRESETS: dict[str, RL2Config] = {
    "point_robot": _preset("point_robot", "point_robot", 3, 100, 1e6, 50_000),
    "escape_room": _preset("escape_room", "escape_room", 2, 60, 2e6, 100_000),
    "rooms": _preset("rooms", "rooms", 1, 100, 3e6, 150_000, eval_tasks=100),
    "debug": RL2Config(name="debug", env="point_robot", num_episodes=2, episode_length=10, total_env_steps=400,
                       num_envs=4, num_minibatches=2, update_epochs=2, embed_units=16, gru_units=16,
                       head_units=16, eval_tasks=2, eval_every=80, final_eval_tasks=4),
}


def get_rl2_config(name: str, **overrides) -> RL2Config:
    """The named preset with `overrides` applied, validated (ValueError for unknown names / bad values)."""
    if name not in RL2_PRESETS:
        raise ValueError(f"unknown RL2 preset {name!r}; allowed: {', '.join(RL2_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(RL2Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown RL2Config field(s) {unknown}; allowed: {', '.join(sorted(fields))}")
    return dataclasses.replace(RL2_PRESETS[name], **overrides).validate()


# ---------------------------------------------------------------------------------------------- network
class RL2Network(nn.Module):
    """One step: (h [B, H], x [B, I]) -> (h' [B, H], policy output [B, A], log_std [A], value [B]).

    The policy output is the logits (Discrete) or the Gaussian mean (Box); log_std is zeros for
    Discrete (unused)."""

    action_dim: int
    discrete: bool
    embed_units: int
    gru_units: int
    head_units: int
    init_log_std: float

    @nn.compact
    def __call__(self, h, x):
        orth = nn.initializers.orthogonal
        e = jnp.tanh(nn.Dense(self.embed_units, kernel_init=orth(math.sqrt(2)))(x))
        h, y = nn.GRUCell(self.gru_units)(h, e)
        a = jnp.tanh(nn.Dense(self.head_units, kernel_init=orth(math.sqrt(2)))(y))
        out = nn.Dense(self.action_dim, kernel_init=orth(0.01))(a)
        c = jnp.tanh(nn.Dense(self.head_units, kernel_init=orth(math.sqrt(2)))(y))
        value = nn.Dense(1, kernel_init=orth(1.0))(c)[..., 0]
        if self.discrete:
            log_std = jnp.zeros((self.action_dim,))
        else:
            log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))
        return h, out, log_std, value


class Policy(NamedTuple):
    """The network and the action space it acts in (built by `make_policy`)."""

    net: RL2Network
    space: Any  # gymnax spaces.Box or spaces.Discrete
    discrete: bool
    action_dim: int  # A (the one-hot size for Discrete)
    input_dim: int  # I = obs size + 2 + A

    def init_params(self, key):
        return self.net.init(key, jnp.zeros((1, self.net.gru_units)), jnp.zeros((1, self.input_dim)))

    def initial_carry(self, n: int):
        """(h [n, H], previous action [n, A]) at a meta-episode start: zeros."""
        return jnp.zeros((n, self.net.gru_units)), jnp.zeros((n, self.action_dim))

    def sample(self, key, out, log_std):
        """Raw action: int [B] (Discrete) or float [B, A] (Box, unclipped)."""
        if self.discrete:
            return jax.random.categorical(key, out)
        return out + jnp.exp(log_std) * jax.random.normal(key, out.shape)

    def mode(self, out):
        return jnp.argmax(out, -1) if self.discrete else out

    def log_prob(self, out, log_std, action):
        """log pi(raw action) [B]."""
        if self.discrete:
            return jnp.take_along_axis(jax.nn.log_softmax(out), action[..., None].astype(jnp.int32), -1)[..., 0]
        z = (action - out) * jnp.exp(-log_std)
        return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), -1)

    def entropy(self, out, log_std):
        """[B]: of the categorical, or of the (unclipped) Gaussian."""
        if self.discrete:
            logp = jax.nn.log_softmax(out)
            return -jnp.sum(jnp.exp(logp) * logp, -1)
        return jnp.broadcast_to(jnp.sum(0.5 + 0.5 * math.log(2 * math.pi) + log_std), out.shape[:-1])

    def to_env(self, action):
        """Raw action -> env action (Box: clipped to [low, high], reshaped to the space's shape)."""
        if self.discrete:
            return action
        clipped = jnp.clip(action, self.space.low, self.space.high)
        return clipped.reshape(clipped.shape[:-1] + tuple(self.space.shape))


def make_policy(config: RL2Config, obs_space, action_space) -> Policy:
    """The Policy for the wrapper's observation space and an action space (Box or Discrete)."""
    size = ro.action_dim(action_space)  # raises for other spaces
    obs_dim = math.prod(obs_space.spaces["obs"].shape)
    net = RL2Network(size, isinstance(action_space, spaces.Discrete), config.embed_units, config.gru_units,
                     config.head_units, config.init_log_std)
    return Policy(net, action_space, net.discrete, size, obs_dim + 2 + size)


def network_input(obs: dict, prev_action: jax.Array) -> jax.Array:
    """x [B, I] from the wrapper's observation (batched [B, ...]) and a_{t-1} [B, A]."""
    flat = obs["obs"].reshape(obs["obs"].shape[0], -1).astype(jnp.float32)
    return jnp.concatenate([flat, obs["reward"][:, None], obs["time"][:, None], prev_action], -1)


def reset_carry(carry, is_first):
    """Zeroes the carry's rows where is_first [B] (meta-episode starts)."""
    return jax.tree.map(lambda c: jnp.where(is_first[:, None], 0.0, c), carry)


def unroll(policy: Policy, params, h0, xs, is_first):
    """The GRU over a sequence: h0 [B, H], xs [S, B, I], is_first [S, B] (h is zeroed before the step
    where it is True). Returns (hs [S, B, H] (the state after each step), out [S, B, A], log_std [A],
    values [S, B])."""

    def step(h, inp):
        x, first = inp
        h, out, log_std, value = policy.net.apply(params, jnp.where(first[:, None], 0.0, h), x)
        return h, (h, out, log_std, value)

    _, (hs, out, log_std, values) = jax.lax.scan(step, h0, (xs, is_first))
    return hs, out, log_std[0], values


# ---------------------------------------------------------------------------------------------- PPO
def gae(rewards, values, dones, last_value, gamma: float, lam: float):
    """Generalised advantage estimation. rewards, values, dones [S, ...] (dones[t]: the transition t
    ended the episode: no bootstrap after it), last_value [...] (V of the state after the last step).
    Returns (advantages [S, ...], value targets = advantages + values)."""

    def step(carry, inp):
        next_adv, next_value = carry
        r, v, d = inp
        keep = 1.0 - d.astype(jnp.float32)
        delta = r + gamma * next_value * keep - v
        adv = delta + gamma * lam * keep * next_adv
        return (adv, v), adv

    init = (jnp.zeros_like(last_value), last_value)
    _, adv = jax.lax.scan(step, init, (rewards, values, dones), reverse=True)
    return adv, adv + values


def masked_mean(x, mask):
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def normalize_advantages(adv, mask):
    """(adv - mean) / (std + 1e-8) over the unmasked entries."""
    mean = masked_mean(adv, mask)
    std = jnp.sqrt(masked_mean((adv - mean) ** 2, mask))
    return (adv - mean) / (std + 1e-8)


def ppo_loss(logp, old_logp, adv, values, old_values, targets, entropy, mask, clip_eps, vf_coef, ent_coef):
    """PPO's clipped loss; every array [...] alike, averaged where mask is 1. `adv` is used as given.

    policy = mean(-min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)),  rho = exp(logp - old_logp)
    value = mean(0.5 * max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2))
    total = policy + vf_coef * value - ent_coef * mean(entropy). Returns (total, metrics)."""
    mask = mask.astype(jnp.float32)
    log_ratio = logp - old_logp
    ratio = jnp.exp(log_ratio)
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    v_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    vl = 0.5 * jnp.maximum((values - targets) ** 2, (v_clipped - targets) ** 2)
    policy_loss, value_loss, ent = masked_mean(pg, mask), masked_mean(vl, mask), masked_mean(entropy, mask)
    total = policy_loss + vf_coef * value_loss - ent_coef * ent
    return total, {
        "loss": total, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": ent,
        "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
        "clip_frac": masked_mean((jnp.abs(ratio - 1) > clip_eps).astype(jnp.float32), mask),
    }


# ---------------------------------------------------------------------------------------------- training
@struct.dataclass
class RL2State:
    """One seed's run: params, optimiser state, keys, counters (vmap stacks seeds on axis 0)."""

    params: Any
    opt_state: Any
    key: jax.Array  # collection and minibatch randomness
    eval_key: jax.Array  # fixed for the run: evaluation tasks derive from it (mamba_jax/evaluate.py)
    env_steps: jax.Array  # int32 [], real env transitions so far
    updates: jax.Array  # int32 [], PPO updates so far


@dataclasses.dataclass(frozen=True, eq=False)
class RL2Trainer:
    """The pure per-seed functions of a run. Calling it is `train`: `jax.jit(jax.vmap(trainer))(keys)`."""

    init: Callable  # key -> RL2State
    update_step: Callable  # (RL2State, _) -> (RL2State, metrics of one update)
    train_chunk: Callable  # (RL2State, num_updates: static int = chunk_updates) -> (RL2State, metrics [U, ...])
    train: Callable  # key -> (RL2State, metrics [num_updates, ...]) = train_chunk(init(key), num_updates)
    evaluate: Callable  # (params, reset_keys [E, 2], key) -> {"return": [E], "episode_returns": [E, N], "steps": [E]}
    collect: Callable  # (params, key, reset_keys [n, 2]) -> (trajectory [T, n, ...], stats)
    policy: Policy
    num_updates: int
    chunk_updates: int

    def __call__(self, key):
        return self.train(key)


def _make_env(config: RL2Config, env, env_params):
    if env is None:
        import envs

        return envs.make(config.env, num_episodes=config.num_episodes, episode_length=config.episode_length)
    if (env_params.num_episodes, env_params.episode_length) != (config.num_episodes, config.episode_length):
        raise ValueError(f"env params have N x L = {env_params.num_episodes} x {env_params.episode_length} but "
                         f"the config says {config.num_episodes} x {config.episode_length}")
    return env, env_params


def make_train(config: RL2Config, env=None, env_params=None, chunk_updates: int | None = None) -> RL2Trainer:
    """Builds the pure functions of an RL^2 run (see the module docstring).

    env, env_params: any meta-episode env with the wrapper's observation dict and `step_env` /
    `is_truncated` (default: `envs.make(config.env, num_episodes=N, episode_length=L)`).
    chunk_updates: updates per `train_chunk` call (default: eval_every // (num_envs * T), at least 1).
    """
    config.validate()
    env, env_params = _make_env(config, env, env_params)
    policy = make_policy(config, env.observation_space(env_params), env.action_space(env_params))
    T, n, N = config.meta_length, config.num_envs, config.num_episodes
    num_updates = config.num_updates
    if chunk_updates is None:
        chunk_updates = max(1, config.eval_every // config.steps_per_update)
    if not isinstance(chunk_updates, int) or isinstance(chunk_updates, bool) or chunk_updates < 1:
        raise ValueError(f"chunk_updates={chunk_updates!r}: allowed: an integer >= 1, or None")
    num_mb, mb_size = config.num_minibatches, config.num_envs // config.num_minibatches
    lr = optax.linear_schedule(config.lr, 0.0, num_updates * config.update_epochs * num_mb) if config.anneal_lr \
        else config.lr
    tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))
    vstep = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
    vtruncated = jax.vmap(env.is_truncated, in_axes=(0, None))

    def collect(params, key, reset_keys):
        """One meta-episode per env (stochastic policy). Returns (trajectory with leaves [T, n, ...]:
        x, is_first, action (raw), logp, value, reward, done, mask; stats {"return": [n],
        "episode_returns": [n, N], "steps": [n]})."""
        num = reset_keys.shape[0]
        obs0, state0 = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)

        def step(c, key):
            obs, state, carry, alive, first, returns = c
            key_act, key_env = jax.random.split(key)
            h, prev_action = reset_carry(carry, first)
            x = network_input(obs, prev_action)
            h, out, log_std, value = policy.net.apply(params, h, x)
            action = policy.sample(key_act, out, log_std)
            env_action = policy.to_env(action)
            nobs, nstate, reward, terminated, info = vstep(jax.random.split(key_env, num), state, env_action,
                                                           env_params)
            done = jnp.logical_and(alive, jnp.logical_or(terminated, vtruncated(nstate, env_params)))
            reward = jnp.where(alive, reward, 0.0)
            keep = lambda new, old: jnp.where(alive.reshape(alive.shape + (1,) * (new.ndim - 1)), new, old)
            nobs = {**jax.tree.map(keep, nobs, obs), "reward": reward}
            returns = returns + reward[:, None] * jax.nn.one_hot(info["reward_episode_index"], N)
            carry = (h, _action_input(policy.space, env_action))
            record = {"x": x, "is_first": first, "action": action, "logp": policy.log_prob(out, log_std, action),
                      "value": value, "reward": reward, "done": done, "mask": alive.astype(jnp.float32)}
            return (nobs, nstate, carry, alive & ~done, jnp.zeros_like(first), returns), record

        init = (obs0, state0, policy.initial_carry(num), jnp.ones(num, bool), jnp.ones(num, bool),
                jnp.zeros((num, N)))
        final, traj = jax.lax.scan(step, init, jax.random.split(key, T))
        returns = final[5]
        stats = {"return": returns.sum(-1), "episode_returns": returns,
                 "steps": traj["mask"].sum(0).astype(jnp.int32)}
        return traj, stats

    def loss_fn(params, mb):
        _, out, log_std, values = unroll(policy, params, jnp.zeros((mb_size, config.gru_units)), mb["x"],
                                         mb["is_first"])
        return ppo_loss(policy.log_prob(out, log_std, mb["action"]), mb["logp"],
                        normalize_advantages(mb["adv"], mb["mask"]), values, mb["value"], mb["target"],
                        policy.entropy(out, log_std), mb["mask"], config.clip_eps, config.vf_coef,
                        config.ent_coef)

    def minibatch_step(carry, mb):
        params, opt_state = carry
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, mb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def update_step(state: RL2State, _=None):
        """Collect one meta-episode per env, then PPO epochs. Returns (state, metrics of scalars
        and "episode_returns" [N])."""
        key, key_collect, key_reset, key_epochs = jax.random.split(state.key, 4)
        traj, stats = collect(state.params, key_collect, jax.random.split(key_reset, n))
        adv, target = gae(traj["reward"], traj["value"], traj["done"], jnp.zeros(n), config.gamma,
                          config.gae_lambda)
        batch = {**traj, "adv": adv, "target": target}

        def epoch(carry, key):
            perm = jax.random.permutation(key, n)
            mbs = jax.tree.map(lambda v: jnp.swapaxes(v[:, perm].reshape((T, num_mb, mb_size) + v.shape[2:]), 0, 1),
                               batch)  # [num_mb, T, mb_size, ...]
            return jax.lax.scan(minibatch_step, carry, mbs)

        (params, opt_state), metrics = jax.lax.scan(epoch, (state.params, state.opt_state),
                                                    jax.random.split(key_epochs, config.update_epochs))
        env_steps = state.env_steps + stats["steps"].sum().astype(jnp.int32)
        metrics = {k: v.mean() for k, v in metrics.items()}
        metrics.update(**{"return": stats["return"].mean(), "episode_returns": stats["episode_returns"].mean(0),
                          "env_steps": env_steps})
        state = state.replace(params=params, opt_state=opt_state, key=key, env_steps=env_steps,
                              updates=state.updates + 1)
        return state, metrics

    def init(key) -> RL2State:
        key_params, key_run, key_eval = jax.random.split(key, 3)
        params = policy.init_params(key_params)
        zero = jnp.zeros((), jnp.int32)
        return RL2State(params=params, opt_state=tx.init(params), key=key_run, eval_key=key_eval,
                        env_steps=zero, updates=zero)

    def train_chunk(state: RL2State, num_updates: int = chunk_updates):
        return jax.lax.scan(update_step, state, None, length=num_updates)

    def train(key):
        return train_chunk(init(key), num_updates)

    def evaluate_fn(params, reset_keys, key):
        return _evaluate(policy, env, env_params, params, reset_keys, key)

    return RL2Trainer(init, update_step, train_chunk, train, evaluate_fn, collect, policy, num_updates,
                      chunk_updates)


# ---------------------------------------------------------------------------------------------- evaluation
def _evaluate(policy: Policy, env, env_params, params, reset_keys, key) -> dict:
    def policy_step(carry, obs, key):
        h, prev_action = reset_carry(carry, obs["is_first"])
        h, out, _, _ = policy.net.apply(params, h, network_input(obs, prev_action))
        env_action = policy.to_env(policy.mode(out))
        return env_action, (h, _action_input(policy.space, env_action))

    carry = policy.initial_carry(reset_keys.shape[0])
    _, stats = ro.rollout(env, env_params, policy_step, carry, reset_keys, key, record=False)
    return stats


def evaluate(params, config: RL2Config, reset_keys, key, env=None, env_params=None) -> dict:
    """The deterministic policy (mean / argmax), one meta-episode on each task fixed by reset_keys [E, 2]
    (mamba_jax/evaluate.py's eval_reset_keys / test_reset_keys). Returns {"return": [E],
    "episode_returns": [E, N], "steps": [E]} (mamba_jax/rollout.py; `evaluate.summarize` reads it).
    Jittable with config (and env) static."""
    env, env_params = _make_env(config, env, env_params)
    policy = make_policy(config, env.observation_space(env_params), env.action_space(env_params))
    return _evaluate(policy, env, env_params, params, reset_keys, key)
