"""Networks (flax linen): MLP, CNN encoder/decoder, observation encoder/decoder, heads.

Every hidden layer is Linear (no bias) -> LayerNorm (eps 1e-3) -> SiLU with
truncated-normal fan-avg initialisation (as in DreamerV3). Output layers of the reward and
value heads are zero-initialised (`zero_init=True`), so they start predicting exactly 0.

Observations are dicts. `ObsSpec` (a hashable tuple of (key, shape, is_image)) says which
keys the encoder reads and the decoder reconstructs: vector keys are flattened,
concatenated and symlog'ed; a key of shape [64, 64, C] is an image (uint8 or float in
[0, 255]), scaled to [-0.5, 0.5].
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mamba_jax.dists import symlog

ObsSpec = tuple  # tuple[(key: str, shape: tuple[int, ...], is_image: bool), ...]

init_fan_avg = nn.initializers.variance_scaling(1.0, "fan_avg", "truncated_normal")


def dense(units: int, bias: bool = False, zero: bool = False, name: str | None = None) -> nn.Dense:
    kernel = nn.initializers.zeros if zero else init_fan_avg
    return nn.Dense(units, use_bias=bias, kernel_init=kernel, bias_init=nn.initializers.zeros, name=name)


class NormAct(nn.Module):
    """LayerNorm (eps) over the last axis then SiLU."""

    eps: float = 1e-3

    @nn.compact
    def __call__(self, x):
        return jax.nn.silu(nn.LayerNorm(epsilon=self.eps)(x))


class MLP(nn.Module):
    """`layers` x (Linear without bias -> LayerNorm -> SiLU), `units` wide. [..., I] -> [..., units]."""

    layers: int
    units: int
    eps: float = 1e-3

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = NormAct(self.eps)(dense(self.units)(x))
        return x


class Head(nn.Module):
    """MLP then a linear output with bias. [..., I] -> [..., out]."""

    layers: int
    units: int
    out: int
    zero_init: bool = False
    eps: float = 1e-3

    @nn.compact
    def __call__(self, x):
        x = MLP(self.layers, self.units, self.eps)(x)
        return dense(self.out, bias=True, zero=self.zero_init)(x)


class ConvEncoder(nn.Module):
    """[..., 64, 64, C] image in [-0.5, 0.5] -> [..., 4*4*8*depth]: 4 stride-2 convs, kernel 4,
    channels depth * (1, 2, 4, 8), channel LayerNorm, SiLU."""

    depth: int = 32
    eps: float = 1e-3

    @nn.compact
    def __call__(self, x):
        batch = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for i in range(4):
            x = nn.Conv(self.depth * 2**i, (4, 4), (2, 2), padding="SAME", use_bias=False, kernel_init=init_fan_avg)(x)
            x = NormAct(self.eps)(x)
        return x.reshape(batch + (-1,))


class ConvDecoder(nn.Module):
    """[..., F] -> [..., 64, 64, C] image in [-0.5, 0.5]: linear to 4x4x(8 depth), then transposed
    convs (kernel 4, stride 2) with channels 4, 2, 1 x depth and C."""

    channels: int = 3
    depth: int = 32
    eps: float = 1e-3

    @nn.compact
    def __call__(self, x):
        batch = x.shape[:-1]
        x = dense(4 * 4 * 8 * self.depth, bias=True)(x.reshape((-1, x.shape[-1])))
        x = x.reshape((-1, 4, 4, 8 * self.depth))
        for i in (4, 2, 1):
            x = nn.ConvTranspose(self.depth * i, (4, 4), (2, 2), padding="SAME", use_bias=False, kernel_init=init_fan_avg)(x)
            x = NormAct(self.eps)(x)
        x = nn.ConvTranspose(self.channels, (4, 4), (2, 2), padding="SAME", kernel_init=init_fan_avg)(x)
        return x.reshape(batch + x.shape[1:])


def image_to_float(x: jax.Array) -> jax.Array:
    """Pixels in [0, 255] -> float32 in [-0.5, 0.5]."""
    return jnp.asarray(x, jnp.float32) / 255.0 - 0.5


def _vector_keys(spec: ObsSpec):
    return [(k, s) for k, s, img in spec if not img]


def _image_keys(spec: ObsSpec):
    return [(k, s) for k, s, img in spec if img]


class Encoder(nn.Module):
    """Observation dict -> embedding [..., E].

    `obs[key]` has shape [..., *shape] for each (key, shape, is_image) in `spec`; keys not
    in `spec` are ignored (that is how the baseline drops reward and time).
    """

    spec: ObsSpec
    layers: int
    units: int
    depth: int
    eps: float = 1e-3

    @nn.compact
    def __call__(self, obs: dict):
        outs = []
        vec = _vector_keys(self.spec)
        if vec:
            batch = _batch_shape(obs, self.spec)
            x = jnp.concatenate([jnp.asarray(obs[k], jnp.float32).reshape(batch + (-1,)) for k, _ in vec], -1)
            outs.append(MLP(self.layers, self.units, self.eps)(symlog(x)))
        for k, _ in _image_keys(self.spec):
            outs.append(ConvEncoder(self.depth, self.eps)(image_to_float(obs[k])))
        return jnp.concatenate(outs, -1)


class Decoder(nn.Module):
    """Feature [..., F] -> dict of predictions, one per key of `spec`.

    Vector keys are predicted in symlog space (compare with symlog(target)); images in
    [-0.5, 0.5] (compare with image_to_float(target)).
    """

    spec: ObsSpec
    layers: int
    units: int
    depth: int
    eps: float = 1e-3

    @nn.compact
    def __call__(self, feat):
        out = {}
        vec = _vector_keys(self.spec)
        if vec:
            h = MLP(self.layers, self.units, self.eps)(feat)
            for k, shape in vec:
                size = math.prod(shape)
                out[k] = dense(size, bias=True, name=f"out_{k}")(h).reshape(feat.shape[:-1] + tuple(shape))
        for k, shape in _image_keys(self.spec):
            out[k] = ConvDecoder(shape[-1], self.depth, self.eps, name=f"cnn_{k}")(feat)
        return out


def decoder_loss(pred: dict, obs: dict, spec: ObsSpec) -> tuple[jax.Array, dict]:
    """Negative log-likelihood (squared error summed over each key's dims) -> ([...], per-key dict).

    Vector keys: symlog-MSE; images: MSE in [-0.5, 0.5]. Both summed over the key's dims.
    """
    losses = {}
    for k, shape, img in spec:
        target = image_to_float(obs[k]) if img else symlog(jnp.asarray(obs[k], jnp.float32))
        err = (pred[k] - target) ** 2
        losses[k] = err.reshape(err.shape[: err.ndim - len(shape)] + (-1,)).sum(-1)
    total = sum(losses.values())
    return total, losses


def _batch_shape(obs: dict, spec: ObsSpec) -> tuple:
    k, shape, _ = spec[0]
    x = obs[k]
    return tuple(x.shape[: x.ndim - len(shape)])


def obs_spec_from_space(obs_space, keys: Sequence[str] | None = None) -> ObsSpec:
    """gymnax spaces.Dict -> ObsSpec (sorted keys; optionally only `keys`)."""
    spec = []
    for k in sorted(obs_space.spaces):
        if keys is not None and k not in keys:
            continue
        shape = tuple(int(d) for d in obs_space.spaces[k].shape)
        is_image = len(shape) == 3
        spec.append((k, shape, is_image))
    if not spec:
        raise ValueError(f"no observation keys left; the space has {sorted(obs_space.spaces)}, wanted {keys}")
    return tuple(spec)
