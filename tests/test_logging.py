"""The progress line's content (mamba_jax.logging.progress_line), on a hand-written row."""

from mamba_jax.logging import progress_line


def test_progress_line_shows_returns_positive_fractions_losses_and_eta():
    row = {"env_steps": 12000, "train/return": 1.234, "eval/return": 4.56, "eval/return_episode_1": 1.0,
           "eval/return_episode_2": 2.0, "eval/positive_episode_1": 0.4, "eval/positive_episode_2": 0.55,
           "eval/return_vs_bayes": 0.25, "train/wm/loss": 3.2, "train/wm/loss/per_seed": [3.0, 3.4]}
    line = progress_line(row, total_steps=1_000_000, steps_per_second=850.0)
    assert line.startswith("[    12000/1000000   1.2%]    850.0 steps/s")
    assert "| train 1.23 |" in line
    assert "| eval 4.56 (ep 1 2; >0 in 40/55%) = 25% bayes |" in line
    assert "| wm/loss 3.2 |" in line and "per_seed" not in line
    assert line.endswith("ETA 0:19:22")  # 988000 steps at 850 steps/s = 1162 s


def test_progress_line_without_positive_fractions():
    row = {"env_steps": 300, "eval/return": 1.0, "eval/return_episode_1": 1.0}
    assert "eval 1 (ep 1) |" in progress_line(row, total_steps=600, steps_per_second=0.0)
