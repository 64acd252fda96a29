"""Optional exploration bonus: ensemble disagreement added to the imagined reward.

Not part of MAMBA (off unless `config.expl_scale != 0`). Plan2Explore's intrinsic reward (Sekar et
al., 2020), as DreamerV3's code offers it: K small networks each predict, from a model state and
the action taken in it, the posterior's latent distribution at the next step; where the replay
holds no such transitions they disagree, and the actor is paid `expl_scale` times their
disagreement on top of the world model's reward, in the same imagined roll-outs.

With `config.expl_target = "reward"` the members predict the next reward r_{t+1} instead (symlog
space, squared error), and the bonus is their standard deviation in reward units: the model's
uncertainty about the reward of a transition, rather than about the whole next latent.

A negative `expl_scale` makes the same disagreement a penalty: pessimism where the replay holds no
such transitions (as MOPO's uncertainty penalty, Yu et al., 2020), against an actor that climbs the
model's errors there.

    ens = Ensemble.create(config, feature_size, action_dim)
    params = ens.init(key)
    loss, metrics = ensemble_loss(ens, params, post, action, is_first, h_wm, idx)   # train on replay
    bonus = ens.disagreement(params, feat, action)                                  # [N, H]
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mamba_jax.config import Config
from mamba_jax.dists import symexp, symlog
from mamba_jax.nets import Head
from mamba_jax.rssm import feature
from mamba_jax.world_model import gather_time

sg = jax.lax.stop_gradient


class _Members(nn.Module):
    """K independent Heads. [..., I] -> [K, ..., out]."""

    members: int
    layers: int
    units: int
    out: int
    eps: float

    @nn.compact
    def __call__(self, x):
        stacked = nn.vmap(
            Head,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.members,
        )
        return stacked(self.layers, self.units, self.out, eps=self.eps, name="heads")(x)


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """The ensemble's (static) shapes and its flax module."""

    net: _Members
    feature_size: int
    action_dim: int
    stoch: int
    classes: int
    target: str = "latent"  # Config.expl_target: "latent" or "reward"

    @classmethod
    def create(cls, config: Config, feature_size: int, action_dim: int) -> "Ensemble":
        out = config.stoch * config.classes if config.expl_target == "latent" else 1
        net = _Members(config.expl_members, config.head_layers, config.head_units, out, config.layer_norm_eps)
        return cls(net, feature_size, action_dim, config.stoch, config.classes, config.expl_target)

    def init(self, key: jax.Array) -> dict:
        return self.net.init(key, jnp.zeros((1, self.feature_size + self.action_dim)))

    def predict(self, params, feat, action):
        """feat [..., F], action [..., A] -> [K, ..., S*C] predicted next-step latent probabilities
        (a softmax over the classes of each of the S latents), or (target "reward") [K, ..., 1]
        the predicted next reward in symlog space."""
        out = self.net.apply(params, jnp.concatenate([feat, action], -1))
        if self.target == "reward":
            return out
        probs = jax.nn.softmax(out.reshape(out.shape[:-1] + (self.stoch, self.classes)), -1)
        return probs.reshape(out.shape)

    def disagreement(self, params, feat, action):
        """[..., F], [..., A] -> [...]: the members' standard deviation, averaged over outputs
        (target "reward": of the predicted rewards, in reward units)."""
        pred = self.predict(params, feat, action)
        if self.target == "reward":
            pred = symexp(pred)
        return jnp.std(pred, axis=0).mean(-1)


def ensemble_loss(ens: Ensemble, params, post: dict, action, is_first, h_wm, idx, reward=None):
    """Mean squared error of every member on replay transitions s_t, a_t -> probs(s_{t+1}), or
    (target "reward") -> symlog(r_{t+1}).

    post: the posterior (stop-gradient) with leaves [B, S, ...]; action [B, S, A] (a_{t-1} at t);
    is_first [B, S]; idx [B, K] time indices t in [0, S - 2] of the transitions to use; reward
    [B, S] (r_t: the reward into entry t; needed for target "reward"). A transition counts where
    t + 1 <= h_wm and s_{t+1} does not start a new sequence. Returns (loss, metrics).
    """
    B = is_first.shape[0]
    nxt = idx + 1
    feat = sg(feature(gather_time(post, idx)))
    act = gather_time(action, nxt)
    if ens.target == "reward":
        if reward is None:
            raise ValueError("ensemble_loss: target 'reward' needs the replay's rewards [B, S]")
        target = symlog(gather_time(jnp.asarray(reward, jnp.float32), nxt))[..., None]
    else:
        target = sg(jax.nn.softmax(gather_time(post["logits"], nxt), -1).reshape(B, idx.shape[1], -1))
    valid = (nxt <= h_wm) & ~gather_time(is_first, nxt)
    pred = ens.predict(params, feat, act)  # [K, B, K_t, S*C]
    err = jnp.mean((pred - target[None]) ** 2, axis=(0, -1))
    w = valid.astype(jnp.float32)
    loss = jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, {"expl/loss": loss}
