"""Actor, critic, imagination, lambda-returns and the return normaliser (docs/algorithm.md).

Time convention for an imagined trajectory of states s_0..s_H ([N, H + 1]):
r_t = reward-head mean at s_t (the reward of the transition into s_t; r_0 is unused and not
computed), c_t = continue probability at s_t, d_t = gamma * c_t, v_t = critic mean at s_t. Then

    R_H = v_H,   R_t = r_{t+1} + d_{t+1} * ((1 - lam) * v_{t+1} + lam * R_{t+1})     (t < H)
    w_0 = 1,     w_t = prod_{k < t} d_k                                         (stop-gradient)

Actor loss  = -mean_t<H(w_t * (adv_t + eta * H[pi(.|s_t)])), adv_t = (R_t - v_t) / scale, with
              gradients through the dynamics (continuous) or REINFORCE logp(a_t) * sg(adv_t)
              (discrete; the advantage is normalised too: [deviation] from the reference).
Critic loss = -mean_t<H(w_t * (log p(sg(R_t)) + log p(sg(slow_critic_mean(s_t))))).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from mamba_jax import dists
from mamba_jax.config import Config
from mamba_jax.nets import Head
from mamba_jax.rssm import feature, imagine
from mamba_jax.world_model import WorldModel

sg = jax.lax.stop_gradient


# ------------------------------------------------------------------------------ returns
def lambda_returns(rewards, discounts, values, lam: float):
    """[N, H + 1] rewards, discounts, values (of states s_0..s_H) -> [N, H] lambda-returns R_0..R_{H-1}."""

    def step(ret_next, xs):
        r, d, v = xs
        ret = r + d * ((1.0 - lam) * v + lam * ret_next)
        return ret, ret

    xs = (rewards[:, 1:].T, discounts[:, 1:].T, values[:, 1:].T)
    _, rets = jax.lax.scan(step, values[:, -1], xs, reverse=True)
    return rets.T


def return_weights(discounts):
    """[N, H + 1] discounts -> [N, H + 1] weights w_t = prod_{k<t} d_k (w_0 = 1), stop-gradient."""
    shifted = jnp.concatenate([jnp.ones_like(discounts[:, :1]), discounts[:, :-1]], 1)
    return sg(jnp.cumprod(shifted, 1))


@struct.dataclass
class RetNorm:
    """EMA of the low / high percentiles of the lambda-returns (both start at 0)."""

    low: jax.Array
    high: jax.Array

    @classmethod
    def create(cls) -> "RetNorm":
        return cls(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))


def retnorm_update(norm: RetNorm, returns, config: Config, mask=None):
    """EMA update with this batch's percentiles; returns (new norm, scale = max(high - low, max_inv)).

    `mask` (same shape as returns, optional) excludes entries from the percentiles.
    """
    x = sg(returns)
    if mask is not None:
        x = jnp.where(mask > 0, x, jnp.nan)
    p_low = jnp.nanpercentile(x, config.behavior.retnorm_low)
    p_high = jnp.nanpercentile(x, config.behavior.retnorm_high)
    rate = config.behavior.retnorm_rate
    new = RetNorm((1 - rate) * norm.low + rate * p_low, (1 - rate) * norm.high + rate * p_high)
    return new, jnp.maximum(new.high - new.low, config.behavior.retnorm_max_inv)


# ------------------------------------------------------------------------------ networks
class Actor(nn.Module):
    """feature [..., F] -> (continuous) (mu, rho) [..., A] each, or (discrete) unimix logits [..., A]."""

    action_dim: int
    discrete: bool
    layers: int
    units: int
    unimix: float = 0.01
    eps: float = 1e-3

    @nn.compact
    def __call__(self, feat):
        if self.discrete:
            logits = Head(self.layers, self.units, self.action_dim, eps=self.eps)(feat)
            return dists.unimix_logits(logits, self.unimix)
        out = Head(self.layers, self.units, 2 * self.action_dim, eps=self.eps)(feat)
        return tuple(jnp.split(out, 2, -1))


@dataclasses.dataclass(frozen=True)
class Behavior:
    """The actor and critic modules (the slow critic shares the critic's module)."""

    actor: Actor
    critic: Head
    config: Config

    @classmethod
    def create(cls, config: Config, action_dim: int, discrete: bool) -> "Behavior":
        c = config
        actor = Actor(action_dim, discrete, c.nets.head_layers, c.nets.head_units, c.nets.unimix, c.nets.layer_norm_eps)
        critic = Head(c.nets.head_layers, c.nets.head_units, c.nets.bins, zero_init=True, eps=c.nets.layer_norm_eps)
        return cls(actor, critic, config)

    @property
    def discrete(self) -> bool:
        return self.actor.discrete

    def init(self, key, feature_size: int) -> dict:
        ka, kc = jax.random.split(key)
        feat = jnp.zeros((feature_size,))
        critic = self.critic.init(kc, feat)
        return {"actor": self.actor.init(ka, feat), "critic": critic, "slow_critic": critic}

    # -------------------------------------------------------------- actor distribution helpers
    def sample(self, actor_params, feat, key):
        """Action in model format [..., A]: reparameterised Normal sample (continuous) or one-hot (discrete)."""
        return self.sample_from(self.actor.apply(actor_params, feat), key)

    def sample_from(self, out, key):
        """Action sampled from the actor's output `out` (logits, or the (mu, rho) pair)."""
        if self.discrete:
            return dists.onehot_sample(key, out.astype(jnp.float32))
        c = self.config
        return dists.actor_normal(*out, c.behavior.actor_min_std, c.behavior.actor_max_std).sample(seed=key)

    def mode(self, actor_params, feat):
        out = self.actor.apply(actor_params, feat)
        if self.discrete:
            return dists.onehot_mode(out)
        return jnp.tanh(out[0])

    def log_prob_entropy(self, actor_params, feat, action):
        return self.log_prob_entropy_from(self.actor.apply(actor_params, feat), action)

    def log_prob_entropy_from(self, out, action):
        """(log pi(action), entropy) of the actor's output `out`."""
        if self.discrete:
            return dists.categorical_log_prob(out, action), dists.categorical_entropy(out)
        c = self.config
        d = dists.actor_normal(*out, c.behavior.actor_min_std, c.behavior.actor_max_std)
        return d.log_prob(action), d.entropy()

    def value(self, critic_params, feat, bins):
        return dists.twohot_mean(self.critic.apply(critic_params, feat), bins)


# ------------------------------------------------------------------------------ losses
def actor_loss(actor_params, beh: Behavior, wm: WorldModel, wm_params, critic_params, start, start_weight, norm, key,
               bonus_fn=None):
    """Imagines H_im steps from `start` (leaves [N, ...], stop-gradient) and returns
    (loss, aux) with aux = (traj, new_norm, metrics); traj holds stop-gradient features
    [N, H+1, F], returns [N, H] and weights [N, H] for the critic.
    The trajectory is imagined with `wm.img_step` (the world model's imagined step).
    `start_weight` [N] zero-weights padded starts. `bonus_fn` (optional): (features [N, H, F],
    actions [N, H, A]) -> [N, H], a reward added to the world model's for the step s_t, a_t ->
    s_{t+1} (e.g. the exploration bonus of mamba_jax/explore.py).
    """
    c = beh.config
    bins = dists.bins(c.nets.bins, c.nets.bin_low, c.nets.bin_high)

    def policy_fn(state, k):
        out = beh.actor.apply(actor_params, sg(feature(state)))  # kept for log-prob / entropy below
        a = beh.sample_from(out, k)
        return (sg(a) if beh.discrete else a), out

    states, actions, actor_out = imagine(functools.partial(wm.img_step, wm_params), start, policy_fn, key,
                                         c.behavior.imag_horizon, with_aux=True)
    feat = feature(states)  # [N, H+1, F]
    # The heads see s_0 (a stop-gradient start) apart from s_1..s_H, so that the backward pass
    # computes input gradients for the H states that have them only (not for H + 1).
    # r_0 (the reward into the start state) is not used by the returns.
    start_feat, next_feat = sg(feat[:, :1]), feat[:, 1:]
    model_rewards = wm.reward_mean(wm_params, next_feat, bins)  # [N, H]
    bonus = None if bonus_fn is None else bonus_fn(jnp.concatenate([start_feat, next_feat[:, :-1]], 1), actions)
    rewards = jnp.pad(model_rewards if bonus is None else model_rewards + bonus, ((0, 0), (1, 0)))
    discounts = c.behavior.gamma * jnp.concatenate(
        [wm.cont_prob(wm_params, start_feat), wm.cont_prob(wm_params, next_feat)], 1)
    values = jnp.concatenate([beh.value(critic_params, start_feat, bins), beh.value(critic_params, next_feat, bins)], 1)
    rets = lambda_returns(rewards, discounts, values, c.behavior.lam)  # [N, H]
    H = c.behavior.imag_horizon
    weights = return_weights(discounts)[:, :H] * start_weight[:, None]
    new_norm, scale = retnorm_update(norm, rets, c, jnp.broadcast_to(start_weight[:, None], rets.shape))
    adv = (rets - values[:, :H]) / scale
    logp, ent = beh.log_prob_entropy_from(actor_out, sg(actions))  # the actor's outputs at sg(s_0..s_{H-1})
    objective = logp * sg(adv) if beh.discrete else adv
    denom = jnp.maximum(jnp.sum(start_weight) * H, 1.0)
    loss = -jnp.sum(weights * (objective + c.behavior.entropy_scale * ent)) / denom
    traj = {"feat": sg(feat), "returns": sg(rets), "weights": sg(weights)}
    metrics = {
        "actor/loss": loss,
        "actor/entropy": jnp.sum(ent * start_weight[:, None]) / denom,
        "actor/adv_mean": jnp.sum(adv * start_weight[:, None]) / denom,
        "imag/return_mean": jnp.sum(rets * start_weight[:, None]) / denom,
        "imag/reward_mean": jnp.sum(model_rewards * start_weight[:, None]) / denom,
        "imag/cont_mean": jnp.sum(discounts[:, 1:] * start_weight[:, None]) / (c.behavior.gamma * denom),
        "retnorm/low": new_norm.low,
        "retnorm/high": new_norm.high,
        "retnorm/scale": scale,
    }
    if bonus is not None:
        metrics["imag/bonus_mean"] = jnp.sum(bonus * start_weight[:, None]) / denom
    return loss, (traj, new_norm, metrics)


def critic_loss(critic_params, beh: Behavior, slow_params, traj: dict, start_weight):
    """-mean(w_t * (log p(sg(R_t)) + slow_scale * log p(sg(slow_mean(s_t))))) over t < H."""
    c = beh.config
    bins = dists.bins(c.nets.bins, c.nets.bin_low, c.nets.bin_high)
    H = c.behavior.imag_horizon
    feat = traj["feat"][:, :H]
    logits = beh.critic.apply(critic_params, feat)
    slow_mean = sg(beh.value(slow_params, feat, bins))
    nll = -dists.twohot_log_prob(logits, sg(traj["returns"]), bins)
    reg = -dists.twohot_log_prob(logits, slow_mean, bins)
    denom = jnp.maximum(jnp.sum(start_weight) * H, 1.0)
    loss = jnp.sum(traj["weights"] * (nll + c.behavior.slow_critic_scale * reg)) / denom
    value = dists.twohot_mean(logits, bins)
    metrics = {
        "critic/loss": loss,
        "critic/value_mean": jnp.sum(value * start_weight[:, None]) / denom,
        "critic/slow_reg": jnp.sum(traj["weights"] * reg) / denom,
    }
    return loss, metrics
