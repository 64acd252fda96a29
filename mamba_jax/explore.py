"""Optional exploration bonus: ensemble disagreement added to the imagined reward.

Not part of MAMBA (off unless `config.behavior.expl_scale > 0`). Plan2Explore's intrinsic reward (Sekar et
al., 2020), as DreamerV3's code offers it: K small networks each predict, from a model state and
the action taken in it, the posterior's latent distribution at the next step; where the replay
holds no such transitions they disagree, and the actor is paid `expl_scale` times their
disagreement on top of the world model's reward, in the same imagined roll-outs.

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
from mamba_jax.nets import Head
from mamba_jax.rssm import feature
from mamba_jax.sequence import gather_time

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

    @classmethod
    def create(cls, config: Config, feature_size: int, action_dim: int) -> "Ensemble":
        out = config.nets.stoch * config.nets.classes
        net = _Members(config.behavior.expl_members, config.nets.head_layers, config.nets.head_units, out, config.nets.layer_norm_eps)
        return cls(net, feature_size, action_dim, config.nets.stoch, config.nets.classes)

    def init(self, key: jax.Array) -> dict:
        return self.net.init(key, jnp.zeros((1, self.feature_size + self.action_dim)))

    def predict(self, params, feat, action):
        """feat [..., F], action [..., A] -> [K, ..., S*C] predicted next-step latent probabilities
        (a softmax over the classes of each of the S latents)."""
        out = self.net.apply(params, jnp.concatenate([feat, action], -1))
        probs = jax.nn.softmax(out.reshape(out.shape[:-1] + (self.stoch, self.classes)), -1)
        return probs.reshape(out.shape)

    def disagreement(self, params, feat, action):
        """[..., F], [..., A] -> [...]: the members' standard deviation, averaged over outputs."""
        pred = self.predict(params, feat, action)
        return jnp.std(pred, axis=0).mean(-1)


def ensemble_loss(ens: Ensemble, params, post: dict, action, is_first, h_wm, idx):
    """Mean squared error of every member on replay transitions s_t, a_t -> probs(s_{t+1}).

    post: the posterior (stop-gradient) with leaves [B, S, ...]; action [B, S, A] (a_{t-1} at t);
    is_first [B, S]; idx [B, K] time indices t in [0, S - 2] of the transitions to use. A transition
    counts where t + 1 <= h_wm and s_{t+1} does not start a new sequence. Returns (loss, metrics).
    """
    B = is_first.shape[0]
    nxt = idx + 1
    feat = sg(feature(gather_time(post, idx)))
    act = gather_time(action, nxt)
    target = sg(jax.nn.softmax(gather_time(post["logits"], nxt), -1).reshape(B, idx.shape[1], -1))
    valid = (nxt <= h_wm) & ~gather_time(is_first, nxt)
    pred = ens.predict(params, feat, act)  # [K, B, K_t, S*C]
    err = jnp.mean((pred - target[None]) ** 2, axis=(0, -1))
    w = valid.astype(jnp.float32)
    loss = jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, {"expl/loss": loss}
