"""The world model and its loss (spec sections 1-3).

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
    grounded_imagination: bool = False  # imagined z_t from the posterior (Config.grounded_imagination)
    imag_latent_mode: bool = False  # imagined z_t = the prior's mode (Config.imag_latent_mode)
    bins: tuple = (255, -20.0, 20.0)  # the reward head's two-hot bins (number, low, high)

    @classmethod
    def create(cls, config: Config, spec: ObsSpec, action_dim: int) -> "WorldModel":
        c, eps = config, config.layer_norm_eps
        model = cls(
            encoder=Encoder(spec, c.enc_layers, c.units, c.cnn_depth, eps),
            rssm=RSSM(c.deter, c.hidden, c.stoch, c.classes, c.unimix, eps),
            decoder=Decoder(spec, c.enc_layers, c.units, c.cnn_depth, eps),
            reward=Head(c.head_layers, c.head_units, c.bins, zero_init=True, eps=eps),
            cont=Head(c.head_layers, c.head_units, 1, eps=eps),
            spec=spec,
            action_dim=action_dim,
            reward_from_deter=c.reward_from_deter,
            grounded_imagination=c.grounded_imagination,
            imag_latent_mode=c.imag_latent_mode,
            bins=(c.bins, c.bin_low, c.bin_high),
        )
        if c.grounded_imagination:
            model._check_grounded()
        return model

    def _check_grounded(self) -> None:
        keys = [k for k, _, _ in self.spec]
        if "reward" not in keys:
            raise ValueError("Config.grounded_imagination=True: the observation has no 'reward' key to imagine "
                             f"(it has {keys}; the DreamerV3 baseline drops it); allowed: mamba=True")
        images = [k for k, _, img in self.spec if img]
        if images:
            raise ValueError(f"Config.grounded_imagination=True: image observations ({images}) are not supported; "
                             "allowed: vector observations")

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
        """One imagined step s_t, a_t -> s_{t+1}: the RSSM's prior step, or (with
        `grounded_imagination`) `grounded_img_step`; with `imag_latent_mode` the prior step takes the
        prior's mode as z_{t+1}."""
        if self.grounded_imagination:
            return self.grounded_img_step(params, state, action, key, split_gru)
        return self.rssm.apply(params["rssm"], state, action, key, split_gru, self.imag_latent_mode,
                               method=RSSM.img_step)

    def grounded_img_step(self, params, state: dict, action, key, split_gru: bool = False) -> dict:
        """An imagined step whose stochastic state comes from the posterior of an imagined observation
        (Config.grounded_imagination; not in the paper).

        h' = GRU(s, a) as in the prior step; the observation o' is the decoder's mean at (h', z ~ prior(h')),
        except its "reward" entry, which is a sample of the reward head's two-hot distribution at h' (the
        head reads h' alone: `reward_from_deter`); z' ~ posterior(h', o'). A discovery (a reward) then
        enters the imagined belief at the rate the reward head predicts from the history, as a real one
        enters it through the posterior, instead of at the rate of the prior's latents (which free bits
        leave unpenalised below 1 nat). Returns a state dict [...]: "deter", "stoch", "logits" (posterior).
        """
        k_prior, k_reward, k_post = jax.random.split(key, 3)
        prior = self.rssm.apply(params["rssm"], state, action, k_prior, split_gru, method=RSSM.img_step)
        feat = feature(prior)
        pred = self.decoder.apply(params["decoder"], feat)
        obs = {k: dists.symexp(pred[k]) for k, _, _ in self.spec}  # vector keys: predicted in symlog space
        bins = dists.bins(*self.bins)
        index = jax.random.categorical(k_reward, self.reward_logits(params, feat))
        obs["reward"] = dists.symexp(bins[index]).reshape(obs["reward"].shape)
        proj = self.rssm.apply(params["rssm"], self.embed(params, obs), method=RSSM.embed_proj)
        return self.rssm.apply(params["rssm"], prior["deter"], proj, k_post, method=RSSM.post_from_deter)

    def cont_prob(self, params, feat):
        return dists.bernoulli_mean(self.cont.apply(params["cont"], feat)[..., 0])


def gather_time(tree, idx):
    """Leaves [B, S, ...] and idx [B, K] int -> leaves [B, K, ...]."""
    rows = jnp.arange(idx.shape[0])[:, None]
    return jax.tree.map(lambda x: x[rows, idx], tree)


def sample_times(key, h_wm, batch: int, length: int, count: int):
    """Time indices [B, K] and weights [B, K] for sub-sampled losses / imagination starts.

    count > 0: uniform with replacement from [0, h_wm] (weights 1). count == -1: every entry
    0..length (K = length + 1), weighted 1 where t <= h_wm and 0 beyond.
    """
    if count == -1:
        idx = jnp.broadcast_to(jnp.arange(length + 1), (batch, length + 1))
        return idx, (idx <= h_wm).astype(jnp.float32)
    idx = jax.random.randint(key, (batch, count), 0, h_wm + 1)
    return idx, jnp.ones((batch, count), jnp.float32)


def kl_losses(post_logits, prior_logits, free_bits: float, dyn_free_bits: float | None = None):
    """[..., S, C] logits -> (dyn [...], rep [...], kl [...]): KL summed over latents, clipped below at
    free_bits (dyn at `dyn_free_bits` where given: Config.dyn_free_bits)."""
    dyn = dists.categorical_kl(sg(post_logits), prior_logits).sum(-1)
    rep = dists.categorical_kl(post_logits, sg(prior_logits)).sum(-1)
    dyn_floor = free_bits if dyn_free_bits is None else dyn_free_bits
    return jnp.maximum(dyn, dyn_floor), jnp.maximum(rep, free_bits), sg(rep)


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
    dyn, rep, kl = kl_losses(post["logits"], prior["logits"], config.free_bits, config.dyn_free_floor)
    dyn_loss, rep_loss = _masked_mean(dyn, mask), _masked_mean(rep, mask)

    idx, weight = sample_times(k_rec, h_wm, B, S - 1, config.recon_subsample)
    feat = feature(gather_time(post, idx))
    obs_k = gather_time(obs, idx)
    dec_nll, per_key = decoder_loss(wm.decoder.apply(params["decoder"], feat), obs_k, wm.spec)
    bins = dists.bins(config.bins, config.bin_low, config.bin_high)
    reward_k = gather_time(jnp.asarray(obs["reward"], jnp.float32), idx)
    rew_nll = -dists.twohot_log_prob(wm.reward_logits(params, feat), reward_k, bins)
    cont_target = 1.0 - gather_time(batch["is_terminal"], idx).astype(jnp.float32)
    cont_nll = -dists.bernoulli_log_prob(wm.cont.apply(params["cont"], feat)[..., 0], cont_target)

    dec_loss, rew_loss, cont_loss = (_masked_mean(x, weight) for x in (dec_nll, rew_nll, cont_nll))
    loss = (
        config.dec_scale * dec_loss
        + config.reward_scale * rew_loss
        + config.cont_scale * cont_loss
        + config.kl_dyn_scale * dyn_loss
        + config.kl_rep_scale * rep_loss
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
