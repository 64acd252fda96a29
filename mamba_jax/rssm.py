"""The recurrent state-space model: a LayerNorm GRU plus categorical latents (DreamerV3's RSSM).

A latent state is a dict of arrays with batch shape [...]:

    {"deter": [..., D], "stoch": [..., S, C] (one-hot, straight-through), "logits": [..., S, C]}

(`logits` are the unimix'ed logits of the distribution `stoch` was drawn from).
`feature(state)` = [flat stoch (S*C), deter (D)].

The module (`RSSM`) holds the layers and single steps; `observe` / `imagine` scan them over
time as pure functions of the params:

    post, prior = observe(rssm, params, embed [B,T,E], action [B,T,A], is_first [B,T], key)
    states, actions = imagine(prior_step(rssm, params), start, policy_fn, key, horizon)

Convention (DreamerV3): entry t holds o_t and the previous action a_{t-1}; the posterior at t
is computed from (state_{t-1}, a_{t-1}, o_t). Where `is_first[t]`, the previous state and
action are replaced by the learned initial state and zeros, so a sequence restarts exactly
as from `initial`. Actions are clamped to [-1, 1] on entry.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mamba_jax import dists
from mamba_jax.nets import NormAct, dense


def clamp_action(action: jax.Array) -> jax.Array:
    """Clamps actions entering the RSSM to [-1, 1] elementwise, keeping a gradient.

    Forward value = clip(a, -1, 1); computed as a * sg(1 / max(1, |a|)) as in DreamerV3 and the
    reference code, so a sampled component beyond the bounds still passes a (scaled) gradient
    to the actor, where a plain clip would pass none.
    """
    return action * jax.lax.stop_gradient(1.0 / jnp.maximum(1.0, jnp.abs(action)))


class RSSM(nn.Module):
    deter: int = 512
    hidden: int = 64
    stoch: int = 16
    classes: int = 16
    unimix: float = 0.01
    eps: float = 1e-3

    def setup(self):
        self.img_in = dense(self.hidden)
        self.img_in_norm = NormAct(self.eps)
        self.gru = dense(3 * self.deter)
        self.gru_norm = nn.LayerNorm(epsilon=self.eps)
        self.img_out = dense(self.hidden)
        self.img_out_norm = NormAct(self.eps)
        self.img_logits = dense(self.stoch * self.classes, bias=True)
        self.obs_out = dense(self.hidden)
        self.obs_out_norm = NormAct(self.eps)
        self.obs_logits = dense(self.stoch * self.classes, bias=True)
        self.w0 = self.param("initial_deter", nn.initializers.zeros, (self.deter,))

    # -------------------------------------------------------------- pieces
    def _prior_logits(self, deter):
        x = self.img_out_norm(self.img_out(deter))
        logits = self.img_logits(x).reshape(deter.shape[:-1] + (self.stoch, self.classes))
        return dists.unimix_logits(logits, self.unimix)

    def _post_logits(self, deter, embed_proj):
        # obs_out(concat[deter, embed]) = deter @ W[:D] + embed @ W[D:], the second term precomputed.
        x = self.obs_out_norm(deter @ self.obs_out.variables["params"]["kernel"][: self.deter] + embed_proj)
        logits = self.obs_logits(x).reshape(deter.shape[:-1] + (self.stoch, self.classes))
        return dists.unimix_logits(logits, self.unimix)

    def _gru(self, gru_input, deter, ghost=None, split=False):
        """LayerNorm GRU on gru_input = [x, deter]. With `ghost` (same shape as the gates), the
        gates are gru_input @ sg(kernel) + ghost: the kernel gets no gradient here, and the
        gradient with respect to `ghost` is the gates' (see `observe`). With `split`, the gates
        are x @ kernel[:hidden] + deter @ kernel[hidden:] (same value): where `deter` carries no
        gradient, the backward pass then skips its [N, 3D] x [3D, D] product (see `imagine`)."""
        if split:
            kernel = self.gru.variables["params"]["kernel"]
            gates = gru_input[..., : self.hidden] @ kernel[: self.hidden] + deter @ kernel[self.hidden :]
        elif ghost is None:
            gates = self.gru(gru_input)
        else:
            gates = gru_input @ jax.lax.stop_gradient(self.gru.variables["params"]["kernel"]) + ghost
        parts = self.gru_norm(gates)
        reset, cand, update = jnp.split(parts, 3, -1)
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * deter

    def _gru_input(self, state, action):
        stoch = state["stoch"].reshape(state["stoch"].shape[:-2] + (-1,))
        action = clamp_action(action)
        x = self.img_in_norm(self.img_in(jnp.concatenate([stoch, action], -1)))
        return jnp.concatenate([x, state["deter"]], -1)

    def _deter_step(self, state, action, split=False):
        return self._gru(self._gru_input(state, action), state["deter"], split=split)

    # -------------------------------------------------------------- public steps
    def initial(self, batch_shape: tuple) -> dict:
        """The learned initial state: h0 = tanh(w), z0 = mode of the prior at h0. [*batch_shape, ...]."""
        deter = jnp.broadcast_to(jnp.tanh(self.w0), tuple(batch_shape) + (self.deter,))
        logits = self._prior_logits(deter)
        return {"deter": deter, "stoch": dists.onehot_mode(logits), "logits": logits}

    def img_step(self, state: dict, action: jax.Array, key: jax.Array, split_gru: bool = False) -> dict:
        """Prior step: (state [...], action [..., A]) -> next state [...], its stochastic part sampled
        from the prior (straight-through).

        `split_gru`: see `_gru` (same value; for a `state` that carries no gradient)."""
        deter = self._deter_step(state, action, split=split_gru)
        logits = self._prior_logits(deter)
        return {"deter": deter, "stoch": dists.onehot_sample_st(key, logits), "logits": logits}

    def embed_proj(self, embed: jax.Array) -> jax.Array:
        """The embedding's share of the posterior layer: [..., E] -> [..., hidden].

        `observe` computes it for a whole sequence in one matmul before its scan, instead of one
        small matmul per step inside it (the layer's input is the concatenation [deter, embed]).
        """
        if self.is_initializing():
            self.obs_out(jnp.zeros(embed.shape[:-1] + (self.deter + embed.shape[-1],)))
        return embed @ self.obs_out.variables["params"]["kernel"][self.deter :]

    def prior_logits(self, deter: jax.Array) -> jax.Array:
        """Unimix'ed prior logits [..., S, C] at deterministic states [..., D]."""
        return self._prior_logits(deter)

    def obs_step(self, state: dict, action: jax.Array, embed: jax.Array, is_first: jax.Array, key: jax.Array):
        """Posterior step. Resets (state, action) to (initial, 0) where `is_first` [...].

        Returns (post, prior): post = {deter, stoch, logits}, prior = {deter, logits} (same deter).
        """
        post = self.post_step(state, action, self.embed_proj(embed), is_first, key)
        return post, {"deter": post["deter"], "logits": self._prior_logits(post["deter"])}

    def post_step(self, state: dict, action: jax.Array, embed_proj: jax.Array, is_first: jax.Array, key: jax.Array,
                  init: dict | None = None, gru_ghost: jax.Array | None = None):
        """The posterior part of `obs_step`, from the precomputed `embed_proj(embed)` [..., hidden].

        `init` (optional) is `initial(is_first.shape)`, passed in by `observe` so that its scan
        does not recompute the constant initial state at every step. With `gru_ghost` [..., 3D]
        (see `observe`), the result also holds "gru_input" [..., I], the GRU's input.
        """
        init = self.initial(is_first.shape) if init is None else init
        first = is_first[..., None]
        state = {
            "deter": jnp.where(first, init["deter"], state["deter"]),
            "stoch": jnp.where(first[..., None], init["stoch"], state["stoch"]),
            "logits": state["logits"],
        }
        action = jnp.where(first, 0.0, action)
        gru_input = self._gru_input(state, action)
        deter = self._gru(gru_input, state["deter"], gru_ghost)
        post_logits = self._post_logits(deter, embed_proj)
        post = {"deter": deter, "stoch": dists.onehot_sample_st(key, post_logits), "logits": post_logits}
        return post if gru_ghost is None else {**post, "gru_input": gru_input}

    def __call__(self, state, action, embed, is_first, key):
        """Touches every layer (used by `init`)."""
        post, _ = self.obs_step(state, action, embed, is_first, key)
        return self.img_step(post, action, key)


def feature(state: dict) -> jax.Array:
    """[..., S*C + D]: flat stoch then deter."""
    stoch = state["stoch"]
    return jnp.concatenate([stoch.reshape(stoch.shape[:-2] + (-1,)), state["deter"]], -1)


def initial_state(rssm: RSSM, params, batch_shape: tuple) -> dict:
    return rssm.apply(params, tuple(batch_shape), method=RSSM.initial)


def observe(rssm: RSSM, params, embed, action, is_first, key, state=None, gru_ghost=None):
    """Posterior over a sequence.

    embed [B, T, E], action [B, T, A] (a_{t-1} at t), is_first [B, T] bool, state (optional,
    batch [B]; defaults to the initial state, which the reset at is_first[:, 0] reproduces).
    Returns (post, prior) with leaves [B, T, ...].

    `gru_ghost` (optional, zeros [B, T, 3D]) moves the GRU kernel's gradient out of the scan:
    the scan then uses a stop-gradient kernel plus this input, and post also holds
    "gru_input" [B, T, I]. The kernel's gradient is einsum("bti,btg->ig", gru_input, d ghost),
    one large matmul instead of T small ones in the backward scan
    (`world_model.wm_value_and_grad` does this; same gradient).
    """
    B, T = is_first.shape
    init = initial_state(rssm, params, (B,))
    if state is None:
        state = init
    keys = jax.random.split(key, T)
    # Only the recurrence stays in the scan: the embedding's share of the posterior layer and the
    # prior logits (a function of deter alone) are computed for all T steps at once.
    proj = rssm.apply(params, embed, method=RSSM.embed_proj)

    def step(carry, xs):
        e, a, f, k, g = xs
        post = rssm.apply(params, carry, a, e, f, k, init, g, method=RSSM.post_step)
        return {n: post[n] for n in carry}, post

    ghost = None if gru_ghost is None else jnp.swapaxes(gru_ghost, 0, 1)
    xs = (jnp.swapaxes(proj, 0, 1), jnp.swapaxes(action, 0, 1), jnp.swapaxes(is_first, 0, 1), keys, ghost)
    _, post = jax.lax.scan(step, state, xs)
    post = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), post)
    prior = {"deter": post["deter"], "logits": rssm.apply(params, post["deter"], method=RSSM.prior_logits)}
    return post, prior


def prior_step(rssm: RSSM, params):
    """`RSSM.img_step` with its params bound: (state, action, key, split_gru=False) -> next state."""

    def step(state, action, key, split_gru=False):
        return rssm.apply(params, state, action, key, split_gru, method=RSSM.img_step)

    return step


def imagine(img_step, start: dict, policy_fn, key, horizon: int, with_aux: bool = False):
    """Rolls a model forward from `start` (batch [N]) for `horizon` steps.

    `img_step(state, action, key, split_gru) -> next state` is the model's imagined step: the
    RSSM's prior step (`prior_step(rssm, params)`, or `WorldModel.img_step` with its params bound).
    `split_gru` is True for the first step only (see below).

    `policy_fn(state, key) -> action [N, A]` picks a_t from s_t. Returns (states, actions):
    states with leaves [N, horizon + 1, ...] (s_0 = start, ..., s_H) and actions [N, horizon, A]
    (a_t taken in s_t, t < H). With `with_aux=True`, `policy_fn` returns (action, aux) and the
    result is (states, actions, aux) with aux leaves [N, horizon, ...] (e.g. the actor's
    distribution parameters, so the loss need not apply the actor a second time).
    """
    keys = jax.random.split(key, horizon)

    def step(state, k, split_gru=False):
        ka, ks = jax.random.split(k)
        out = policy_fn(state, ka)
        action, aux = out if with_aux else (out, ())
        nxt = img_step(state, action, ks, split_gru)
        return nxt, (nxt, action, aux)

    # The first step runs outside the scan with the GRU kernel split: the start is a constant
    # (stop-gradient) for the actor loss, so its backward pass needs the gates' gradient with
    # respect to the action's share of the GRU input only (for H_im = 2 and 8192 starts this
    # skips a 13-GFLOP product per update). Inside a scan every step would pay for it.
    state, first = step(start, keys[0], split_gru=True)
    _, rest = jax.lax.scan(step, state, keys[1:])
    states, actions, aux = jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs], 0), first, rest)
    states = jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs], 0), start, states)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    states, actions = jax.tree.map(swap, states), swap(actions)
    return (states, actions, jax.tree.map(swap, aux)) if with_aux else (states, actions)
