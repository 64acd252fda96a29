"""The world model and its loss (docs/algorithm.md).

`WorldModel` bundles the flax modules (encoder, RSSM, decoder, reward and continue heads);
its params are a plain dict {"encoder", "rssm", "decoder", "reward", "cont"}.

`wm_loss(wm, params, batch, key, h_wm, config)` is the loss on one batch already cut to a
static number of entries S = length + 1 (a horizon bucket): entries t > h_wm (the dynamic
horizon) are masked out of every term.

* KL over every entry t <= h_wm: rep = KL(post || sg(prior)), dyn = KL(sg(post) || prior),
  each summed over latents, clipped below at `free_bits` per (b, t), averaged;
  `kl_dyn_scale * dyn + kl_rep_scale * rep`.
* Reconstruction (decoder, reward two-hot, continue Bernoulli on 1 - is_terminal) on
  `recon_subsample` entries per sequence drawn uniformly with replacement from [0, h_wm]
  (-1: every entry, masked).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mamba_jax import dists
from mamba_jax.config import Config
from mamba_jax.nets import Decoder, Encoder, Head, ObsSpec, decoder_loss
from mamba_jax.rssm import RSSM, feature, observe
from mamba_jax.sequence import gather_time, sample_times

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class WorldModel:
    """The world model's modules. Hashable; build with `WorldModel.create`."""

    encoder: Encoder
    rssm: RSSM
    decoder: Decoder
    reward: Head
    cont: Head
    spec: ObsSpec
    action_dim: int
    reward_from_deter: bool = False  # the reward head reads h_t only (Config.reward_from_deter)
    bins: tuple = (255, -20.0, 20.0)  # the reward head's two-hot bins (number, low, high)

    @classmethod
    def create(cls, config: Config, spec: ObsSpec, action_dim: int) -> "WorldModel":
        c, eps = config, config.nets.layer_norm_eps
        return cls(
            encoder=Encoder(spec, c.nets.enc_layers, c.nets.units, c.nets.cnn_depth, eps),
            rssm=RSSM(c.nets.deter, c.nets.hidden, c.nets.stoch, c.nets.classes, c.nets.unimix, eps),
            decoder=Decoder(spec, c.nets.enc_layers, c.nets.units, c.nets.cnn_depth, eps),
            reward=Head(c.nets.head_layers, c.nets.head_units, c.nets.bins, zero_init=True, eps=eps),
            cont=Head(c.nets.head_layers, c.nets.head_units, 1, eps=eps),
            spec=spec,
            action_dim=action_dim,
            reward_from_deter=c.world_model.reward_from_deter,
            bins=(c.nets.bins, c.nets.bin_low, c.nets.bin_high),
        )

    @property
    def feature_size(self) -> int:
        return self.rssm.stoch * self.rssm.classes + self.rssm.deter

    def init(self, key: jax.Array) -> dict:
        """Fresh params for a batch-free example observation."""
        k = jax.random.split(key, 6)
        obs = {name: jnp.zeros(shape, jnp.float32) for name, shape, _ in self.spec}
        embed_params = self.encoder.init(k[0], obs)
        embed = self.encoder.apply(embed_params, obs)
        init = {"deter": jnp.zeros((self.rssm.deter,)), "stoch": jnp.zeros((self.rssm.stoch, self.rssm.classes))}
        init["logits"] = init["stoch"]
        rssm_params = self.rssm.init(k[1], init, jnp.zeros((self.action_dim,)), embed, jnp.array(True), k[2])
        feat = jnp.zeros((self.feature_size,))
        return {
            "encoder": embed_params,
            "rssm": rssm_params,
            "decoder": self.decoder.init(k[3], feat),
            "reward": self.reward.init(k[4], self.reward_input(feat)),
            "cont": self.cont.init(k[5], feat),
        }

    def embed(self, params, obs):
        return self.encoder.apply(params["encoder"], obs)

    def reward_input(self, feat):
        """What the reward head reads of a feature [..., S*C + D]: all of it, or (with
        `reward_from_deter`) the deterministic part h [..., D] only."""
        return feat[..., -self.rssm.deter :] if self.reward_from_deter else feat

    def reward_logits(self, params, feat):
        """[..., bins] two-hot logits of the reward at features [..., F]."""
        return self.reward.apply(params["reward"], self.reward_input(feat))

    def reward_mean(self, params, feat, bins):
        return dists.twohot_mean(self.reward_logits(params, feat), bins)

    def img_step(self, params, state: dict, action, key, split_gru: bool = False) -> dict:
        """One imagined step s_t, a_t -> s_{t+1} (state leaves [...], action [..., A]): the RSSM's prior
        step. Imagination (`behavior.actor_loss`) steps the model through this method only."""
        return self.rssm.apply(params["rssm"], state, action, key, split_gru, method=RSSM.img_step)

    def cont_prob(self, params, feat):
        return dists.bernoulli_mean(self.cont.apply(params["cont"], feat)[..., 0])


def kl_losses(post_logits, prior_logits, free_bits: float):
    """[..., S, C] logits -> (dyn [...], rep [...], kl [...]): dyn = KL(sg(post) || prior) and
    rep = KL(post || sg(prior)), each summed over latents and clipped below at free_bits; kl is the
    unclipped KL (stop-gradient)."""
    dyn = dists.categorical_kl(sg(post_logits), prior_logits).sum(-1)
    rep = dists.categorical_kl(post_logits, sg(prior_logits)).sum(-1)
    return jnp.maximum(dyn, free_bits), jnp.maximum(rep, free_bits), sg(rep)


def _masked_mean(x, w):
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def wm_loss(wm: WorldModel, params, batch: dict, key, h_wm, config: Config, gru_ghost=None):
    """World-model loss on a batch of S = length + 1 entries (static), horizon h_wm <= length (dynamic).

    batch: {"obs": {key: [B, S, ...]}, "action": [B, S, A], "is_first": [B, S], "is_terminal": [B, S]}.
    Returns (loss, (metrics, post)) with post (stop-gradient) leaves [B, S, ...].
    `gru_ghost`: see `wm_value_and_grad` (post then also holds "gru_input").
    """
    B, S = batch["is_first"].shape
    k_obs, k_rec = jax.random.split(key)
    obs = batch["obs"]
    embed = wm.embed(params, obs)
    post, prior = observe(wm.rssm, params["rssm"], embed, batch["action"], batch["is_first"], k_obs,
                          gru_ghost=gru_ghost)
    gru_input = post.pop("gru_input", None)

    mask = (jnp.arange(S)[None, :] <= h_wm).astype(jnp.float32) * jnp.ones((B, 1))
    dyn, rep, kl = kl_losses(post["logits"], prior["logits"], config.world_model.free_bits)
    dyn_loss, rep_loss = _masked_mean(dyn, mask), _masked_mean(rep, mask)

    idx, weight = sample_times(k_rec, h_wm, B, S - 1, config.world_model.recon_subsample)
    feat = feature(gather_time(post, idx))
    obs_k = gather_time(obs, idx)
    dec_nll, per_key = decoder_loss(wm.decoder.apply(params["decoder"], feat), obs_k, wm.spec)
    bins = dists.bins(config.nets.bins, config.nets.bin_low, config.nets.bin_high)
    reward_k = gather_time(jnp.asarray(obs["reward"], jnp.float32), idx)
    rew_nll = -dists.twohot_log_prob(wm.reward_logits(params, feat), reward_k, bins)
    cont_target = 1.0 - gather_time(batch["is_terminal"], idx).astype(jnp.float32)
    cont_nll = -dists.bernoulli_log_prob(wm.cont.apply(params["cont"], feat)[..., 0], cont_target)

    dec_loss, rew_loss, cont_loss = (_masked_mean(x, weight) for x in (dec_nll, rew_nll, cont_nll))
    loss = (
        config.world_model.dec_scale * dec_loss
        + config.world_model.reward_scale * rew_loss
        + config.world_model.cont_scale * cont_loss
        + config.world_model.kl_dyn_scale * dyn_loss
        + config.world_model.kl_rep_scale * rep_loss
    )
    metrics = {
        "wm/loss": loss,
        "wm/dec": dec_loss,
        "wm/reward": rew_loss,
        "wm/cont": cont_loss,
        "wm/dyn": dyn_loss,
        "wm/rep": rep_loss,
        "wm/kl": _masked_mean(kl, mask),
        "wm/post_entropy": _masked_mean(dists.categorical_entropy(post["logits"]).sum(-1), mask),
    }
    for k, v in per_key.items():
        metrics[f"wm/dec_{k}"] = _masked_mean(v, weight)
    if gru_input is not None:
        post["gru_input"] = gru_input
    return loss, (metrics, sg(post))


def wm_value_and_grad(wm: WorldModel, params, batch: dict, key, h_wm, config: Config):
    """`jax.value_and_grad(wm_loss, argnums=1, has_aux=True)(wm, params, batch, key, h_wm, config)`,
    with the GRU kernel's gradient computed after the posterior scan.

    Inside a scan, the gradient of a weight is summed over steps, one [B, I] x [B, 3D] product
    per step (B = 16: slow small matmuls). Here the scan adds a zero "ghost" input to the GRU's
    gates and uses a stop-gradient kernel; the gradient with respect to the ghost is the gates'
    gradient, and the kernel's is then one [I, B*S] x [B*S, 3D] matmul. Same value and gradient
    up to float rounding (tests/test_world_model.py).
    """
    B, S = batch["is_first"].shape
    ghost = jnp.zeros((B, S, 3 * wm.rssm.deter), jnp.float32)
    loss_fn = lambda p, g: wm_loss(wm, p, batch, key, h_wm, config, gru_ghost=g)
    (loss, (metrics, post)), (grads, g_ghost) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(params, ghost)
    gru_input = post.pop("gru_input")
    gru = grads["rssm"]["params"]["gru"]
    gru["kernel"] = gru["kernel"] + jnp.einsum("bsi,bsg->ig", gru_input, g_ghost)
    return (loss, (metrics, post)), grads
