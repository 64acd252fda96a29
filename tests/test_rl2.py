"""RL^2 (mamba_jax/rl2.py): GAE and the PPO loss by hand, the recurrent state across episode and
meta-episode boundaries, jit == no-jit, and learning a two-armed bandit that must be remembered."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

from mamba_jax import config as mamba_config
from mamba_jax import evaluate as ev
from mamba_jax import rl2


def bandit_config(num_episodes, episode_length=1, **overrides):
    base = dict(name="bandit", num_episodes=num_episodes, episode_length=episode_length, num_envs=4,
                num_minibatches=2, update_epochs=2, embed_units=8, gru_units=8, head_units=8)
    base.update(overrides)
    base.setdefault("total_env_steps", base["num_envs"] * num_episodes * episode_length)
    return dataclasses.replace(rl2.RL2Config(), **base).validate()


# ------------------------------------------------------------------ GAE and the PPO loss by hand
def test_gae_by_hand_with_an_episode_end():
    # gamma 0.9, lambda 0.8 (gamma * lambda = 0.72); the transition at t = 1 ends an episode.
    rewards = jnp.array([1.0, 0.0, 2.0, 1.0])
    values = jnp.array([0.5, 1.0, 0.2, 0.4])
    dones = jnp.array([False, True, False, False])
    adv, target = rl2.gae(rewards, values, dones, jnp.float32(0.3), 0.9, 0.8)
    # t=3: delta = 1 + 0.9 * 0.3 - 0.4 = 0.87                       A = 0.87
    # t=2: delta = 2 + 0.9 * 0.4 - 0.2 = 2.16                        A = 2.16 + 0.72 * 0.87 = 2.7864
    # t=1: done, so no bootstrap: delta = 0 - 1.0 = -1.0             A = -1.0 (nothing from t=2)
    # t=0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4                         A = 1.4 + 0.72 * (-1.0) = 0.68
    np.testing.assert_allclose(adv, [0.68, -1.0, 2.7864, 0.87], rtol=1e-6)
    np.testing.assert_allclose(target, [1.18, 0.0, 2.9864, 1.27], rtol=1e-6, atol=1e-7)


def test_ppo_loss_by_hand():
    # Entry 0: ratio 1.5, A = 2 -> min(3.0, 1.2 * 2) = 2.4, loss -2.4.
    # Entry 1: ratio 0.5, A = -1 -> min(-0.5, 0.8 * -1) = -0.8, loss 0.8.   policy = mean = -0.8
    # Entry 2: masked out (huge numbers that would dominate otherwise).
    old_logp = jnp.array([-1.0, -2.0, 0.0])
    logp = old_logp + jnp.log(jnp.array([1.5, 0.5, 50.0]))
    adv = jnp.array([2.0, -1.0, 1e3])
    # Entry 0: V = 1.0, V_old = 0.5, G = 2: clipped V = 0.5 + 0.2 = 0.7; 0.5 * max(1.0, 1.69) = 0.845.
    # Entry 1: V = 0.1, V_old = 0.0, G = -1: within the clip; 0.5 * 1.21 = 0.605.  value = 0.725
    values, old_values = jnp.array([1.0, 0.1, 9.0]), jnp.array([0.5, 0.0, 0.0])
    targets = jnp.array([2.0, -1.0, -9.0])
    entropy, mask = jnp.array([1.0, 0.6, 100.0]), jnp.array([1.0, 1.0, 0.0])
    total, m = rl2.ppo_loss(logp, old_logp, adv, values, old_values, targets, entropy, mask,
                            clip_eps=0.2, vf_coef=0.5, ent_coef=0.01)
    np.testing.assert_allclose(m["policy_loss"], -0.8, rtol=1e-6)
    np.testing.assert_allclose(m["value_loss"], 0.725, rtol=1e-6)
    np.testing.assert_allclose(m["entropy"], 0.8, rtol=1e-6)
    np.testing.assert_allclose(total, -0.8 + 0.5 * 0.725 - 0.01 * 0.8, rtol=1e-6)  # -0.4455
    np.testing.assert_allclose(m["clip_frac"], 1.0)  # both unmasked ratios are outside [0.8, 1.2]
    # Advantage normalisation over the unmasked entries: [1, 3] -> mean 2, std 1 -> [-1, 1].
    norm = rl2.normalize_advantages(jnp.array([1.0, 3.0, 100.0]), mask)
    np.testing.assert_allclose(norm[:2], [-1.0, 1.0], rtol=1e-6)


def test_clipped_gaussian_log_prob_entropy_and_env_action():
    config = bandit_config(2)
    box = spaces.Box(-1.0, 1.0, (2,), jnp.float32)
    obs_space = spaces.Dict({"obs": spaces.Box(0.0, 0.0, (3,), jnp.float32)})
    policy = rl2.make_policy(config, obs_space, box)
    assert (policy.action_dim, policy.input_dim, policy.discrete) == (2, 3 + 2 + 2, False)
    mean, log_std = jnp.array([[0.5, -0.2]]), jnp.log(jnp.array([0.5, 2.0]))
    raw = jnp.array([[1.5, -0.2]])  # z = (2, 0)
    expected = -0.5 * 4 - math.log(0.5) - math.log(2.0) - math.log(2 * math.pi)
    np.testing.assert_allclose(policy.log_prob(mean, log_std, raw), [expected], rtol=1e-6)
    np.testing.assert_allclose(policy.entropy(mean, log_std), [1 + math.log(2 * math.pi)], rtol=1e-6)
    np.testing.assert_array_equal(policy.to_env(raw), np.array([[1.0, -0.2]], np.float32))  # the env gets the clipped action


# ------------------------------------------------------------------ the recurrent state
def test_hidden_state_carries_across_episodes_and_resets_at_meta_episode_starts(two_armed_bandit):
    N, L = 3, 2  # episodes start at t = 0, 2, 4 of a meta-episode of T = 6
    env, env_params = two_armed_bandit(N, L)
    config = bandit_config(N, L)
    trainer = rl2.make_train(config, env, env_params)
    params = trainer.init(jax.random.PRNGKey(0)).params
    collect = jax.jit(trainer.collect)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    traj_a, _ = collect(params, jax.random.PRNGKey(2), keys[:2])
    traj_b, _ = collect(params, jax.random.PRNGKey(3), keys[2:])
    T = N * L
    np.testing.assert_array_equal(traj_a["is_first"][:, 0], [True] + [False] * (T - 1))
    # The input's time column is t / T: the rows at t = 2, 4 are the first of episodes 2 and 3.
    np.testing.assert_allclose(traj_a["x"][:, 0, 2], np.arange(T) / T, rtol=1e-6)

    xs = jnp.concatenate([traj_a["x"], traj_b["x"]])  # two meta-episodes back to back, [2T, 2, I]
    firsts = jnp.concatenate([traj_a["is_first"], traj_b["is_first"]])
    h0 = jnp.full((2, config.gru_units), 0.7)  # a non-zero start: the reset at t = 0 must clear it
    hs, _, _, values = rl2.unroll(trainer.policy, params, h0, xs, firsts)
    step = lambda h, x: trainer.policy.net.apply(params, h, x)[0]
    zeros = jnp.zeros((2, config.gru_units))
    np.testing.assert_allclose(hs[0], step(zeros, xs[0]), rtol=1e-6)
    for t in (L, 2 * L):  # an episode boundary: h comes from the previous step, not from zeros
        np.testing.assert_allclose(hs[t], step(hs[t - 1], xs[t]), rtol=1e-6)
        assert np.abs(np.asarray(hs[t] - step(zeros, xs[t]))).max() > 1e-3
    # A meta-episode start: h restarts from zeros (as if a fresh unroll of the second meta-episode).
    np.testing.assert_allclose(hs[T], step(zeros, xs[T]), rtol=1e-6)
    assert np.abs(np.asarray(hs[T] - step(hs[T - 1], xs[T]))).max() > 1e-3
    fresh, _, _, fresh_values = rl2.unroll(trainer.policy, params, zeros, traj_b["x"], traj_b["is_first"])
    np.testing.assert_allclose(hs[T:], fresh, rtol=1e-5, atol=1e-6)
    # The values the PPO loss re-unrolls equal those recorded while collecting.
    np.testing.assert_allclose(values[:T], traj_a["value"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ jit == no-jit
def test_update_step_jit_equals_no_jit(two_armed_bandit):
    env, env_params = two_armed_bandit(2, 1)  # tiny: the eager run dispatches (and compiles) every op by itself
    trainer = rl2.make_train(bandit_config(2, 1, num_envs=2, num_minibatches=1, update_epochs=1), env, env_params)
    state = trainer.init(jax.random.PRNGKey(0))
    jitted, m_jit = jax.jit(trainer.update_step)(state)
    with jax.disable_jit():
        eager, m_eager = trainer.update_step(state)
    # Float32 within rtol 1e-5 / atol 1e-6 (XLA fuses the jitted graph; the eager one runs op by op).
    for a, b in zip(jax.tree.leaves((jitted, m_jit)), jax.tree.leaves((eager, m_eager))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert int(jitted.updates) == 1 and int(jitted.env_steps) == 2 * 2
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), jitted.params, state.params))
    assert max(float(x) for x in moved) > 1e-4  # the update changed the params


def test_train_equals_chunks_composed(two_armed_bandit):
    env, env_params = two_armed_bandit(2, 1)
    config = bandit_config(2, 1, num_envs=2, num_minibatches=1, update_epochs=1, total_env_steps=4 * 2 * 2)
    trainer = rl2.make_train(config, env, env_params, chunk_updates=2)
    assert (trainer.num_updates, trainer.chunk_updates) == (4, 2)
    whole, m_whole = jax.jit(trainer)(jax.random.PRNGKey(0))
    chunk = jax.jit(trainer.train_chunk)
    state, m1 = chunk(trainer.init(jax.random.PRNGKey(0)))
    state, m2 = chunk(state)
    assert int(state.updates) == 4 and int(state.env_steps) == 4 * 2 * 2
    chunked = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), m1, m2)
    for a, b in zip(jax.tree.leaves((whole, m_whole)), jax.tree.leaves((state, chunked))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(m_whole["env_steps"], [4, 8, 12, 16])


# ------------------------------------------------------------------ config
def test_config_validation_and_presets(two_armed_bandit):
    for name in ("point_robot", "escape_room", "rooms"):
        cfg, mamba = rl2.get_rl2_config(name), mamba_config.PRESETS[name]
        assert (cfg.env, cfg.num_episodes, cfg.episode_length) == (mamba.env, mamba.protocol.num_episodes, mamba.protocol.episode_length)
    assert (rl2.get_rl2_config("rooms").num_episodes, rl2.get_rl2_config("rooms").episode_length) == (1, 100)
    assert hash(rl2.get_rl2_config("debug")) == hash(rl2.get_rl2_config("debug"))
    with pytest.raises(ValueError, match="num_minibatches=3: allowed: a divisor of num_envs=4"):
        rl2.get_rl2_config("debug", num_minibatches=3)
    with pytest.raises(ValueError, match="gamma"):
        rl2.get_rl2_config("debug", gamma=1.5)
    with pytest.raises(ValueError, match="total_env_steps=10: allowed: >= num_envs"):
        rl2.get_rl2_config("debug", total_env_steps=10)
    with pytest.raises(ValueError, match="allowed: point_robot"):
        rl2.get_rl2_config("debug", env="nope")
    with pytest.raises(ValueError, match="unknown RL2Config field"):
        rl2.get_rl2_config("debug", lr_typo=1.0)
    with pytest.raises(ValueError, match="allowed: point_robot, escape_room, rooms, debug"):
        rl2.get_rl2_config("cartpole")
    with pytest.raises(ValueError, match="N x L = 2 x 2"):
        rl2.make_train(bandit_config(3, 2), *two_armed_bandit(2, 2))
    with pytest.raises(ValueError, match="chunk_updates=0: allowed: an integer >= 1"):
        rl2.make_train(bandit_config(2, 2), *two_armed_bandit(2, 2), chunk_updates=0)


# ------------------------------------------------------------------ learning
def test_learns_to_remember_the_good_arm(two_armed_bandit):
    """N = 4 one-step episodes per task: after episode 1 the agent knows the good arm (it pulled an
    arm and saw its reward), so episodes 2..4 can pay 1 each; a policy without memory gets 0.5."""
    N = 4
    env, env_params = two_armed_bandit(N)
    config = bandit_config(N, num_envs=32, num_minibatches=4, update_epochs=4, total_env_steps=32 * N * 100,
                           lr=3e-3, ent_coef=0.01, gru_units=16, embed_units=16, head_units=16)
    trainer = rl2.make_train(config, env, env_params)
    state, metrics = jax.jit(trainer)(jax.random.PRNGKey(0))
    reset_keys = ev.eval_reset_keys(state.eval_key, 200)
    evaluate = jax.jit(trainer.evaluate)
    before = ev.summarize(evaluate(trainer.init(jax.random.PRNGKey(0)).params, reset_keys, jax.random.PRNGKey(1)),
                          "eval")
    after = ev.summarize(evaluate(state.params, reset_keys, jax.random.PRNGKey(1)), "eval")
    later = lambda s: np.mean([s[f"eval/return_episode_{i}"] for i in range(2, N + 1)])
    print(f"episodes 2..{N}: untrained {later(before):.3f}, trained {later(after):.3f}; "
          f"train return first/last update {metrics['return'][0]:.3f}/{metrics['return'][-1]:.3f}")
    assert later(after) > 0.8
    assert later(after) > later(before) + 0.2
    # the module-level evaluate (config static) gives the same per-task returns
    same = rl2.evaluate(state.params, config, reset_keys, jax.random.PRNGKey(1), env, env_params)
    np.testing.assert_allclose(same["return"], evaluate(state.params, reset_keys, jax.random.PRNGKey(1))["return"])
