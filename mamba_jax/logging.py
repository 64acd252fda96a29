"""Host-side logging of a run: a progress line per chunk, LOGDIR/metrics.jsonl, TensorBoard.

    logger = Logger(logdir, total_steps, start_steps=0)
    logger.log({"env_steps": 4000, "wall_seconds": 12.5, "eval/return": 3.2, ...})
    logger.close()

* metrics.jsonl: one JSON object per log point (one per chunk), always with `env_steps` and
  `wall_seconds`; `eval/return`, `eval/return_episode_1..N` on evaluation chunks; training
  summaries `train/*` (means over the chunk and over seeds); `.../per_seed` lists.
* TensorBoard: every scalar of the row at step = env_steps (tensorboardX event files in LOGDIR).
* On resume (`start_steps` > 0) rows after `start_steps` (written after the checkpoint that is
  resumed) are dropped from metrics.jsonl and purged from TensorBoard, so the files read as
  one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Callable

METRICS_FILE = "metrics.jsonl"


def read_metrics(logdir: str) -> list[dict]:
    """The rows of LOGDIR/metrics.jsonl (empty list if absent)."""
    path = os.path.join(logdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(logdir: str, max_env_steps: int) -> None:
    """Keeps only the rows with env_steps <= max_env_steps (atomically rewritten)."""
    path = os.path.join(logdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    rows = [r for r in read_metrics(logdir) if r.get("env_steps", 0) <= max_env_steps]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(row: dict, total_steps: int, steps_per_second: float) -> str:
    """The progress line, e.g.

    `[  12000/1000000  1.2%] 850 steps/s | train 1.23 | eval 4.56 (ep 1.0 2.0 1.5; >0 in 40/55/60%) | wm/loss 3.2 ... | ETA 0:19:23`

    (">0 in": the fraction of evaluation tasks whose episode-i return was positive.)
    """
    steps = int(row["env_steps"])
    parts = [f"[{steps:>9d}/{total_steps} {100.0 * steps / max(total_steps, 1):5.1f}%] {steps_per_second:8.1f} steps/s"]
    if "train/return" in row:
        parts.append(f"train {row['train/return']:.3g}")
    if "eval/return" in row:
        episodes = []
        i = 1
        while f"eval/return_episode_{i}" in row:
            episodes.append(f"{row[f'eval/return_episode_{i}']:.3g}")
            i += 1
        positive = [row[f"eval/positive_episode_{j}"] for j in range(1, i) if f"eval/positive_episode_{j}" in row]
        text = f"eval {row['eval/return']:.3g}"
        if episodes:
            text += f" (ep {' '.join(episodes)}"
            if len(positive) == len(episodes):  # fraction of tasks with a positive return, per episode
                text += f"; >0 in {'/'.join(f'{100 * p:.0f}' for p in positive)}%"
            text += ")"
        if "eval/return_vs_bayes" in row:
            text += f" = {100 * row['eval/return_vs_bayes']:.0f}% bayes"
        parts.append(text)
    losses = [k for k in row if k.startswith("train/") and "loss" in k and "/per_seed" not in k]
    for key in sorted(losses)[:4]:
        parts.append(f"{key[len('train/'):]} {row[key]:.3g}")
    remaining = (total_steps - steps) / steps_per_second if steps_per_second > 0 else float("nan")
    parts.append(f"ETA {format_duration(remaining)}")
    return " | ".join(parts)


class Logger:
    """Writes rows to metrics.jsonl and TensorBoard and prints a progress line."""

    def __init__(self, logdir: str, total_steps: int, start_steps: int = 0, tensorboard: bool = True,
                 print_fn: Callable[[str], None] | None = None):
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self.total_steps = int(total_steps)
        self._print = print_fn or (lambda s: print(s, file=sys.stdout, flush=True))
        self._last = None  # (env_steps, wall_seconds) of the previous row, for steps/s
        if start_steps:
            truncate_metrics(logdir, start_steps)
        else:
            open(os.path.join(logdir, METRICS_FILE), "w").close()
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir, purge_step=start_steps + 1 if start_steps else None)

    def log(self, row: dict) -> None:
        shown = {k: float(v) for k, v in row.items() if _is_scalar(v)}
        row = {k: _jsonable(v) for k, v in row.items()}
        steps, wall = row["env_steps"], row["wall_seconds"]
        if self._last is not None and wall > self._last[1]:
            speed = (steps - self._last[0]) / (wall - self._last[1])
        else:
            speed = steps / wall if wall > 0 else 0.0
        self._last = (steps, wall)
        with open(os.path.join(self.logdir, METRICS_FILE), "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if key != "env_steps" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, global_step=steps)
            self._writer.flush()
        self._print(progress_line(shown, self.total_steps, speed))

    def write_json(self, name: str, data: dict) -> None:
        """Writes LOGDIR/name atomically (e.g. final_test.json, config.json)."""
        path = os.path.join(self.logdir, name)
        with open(path + ".tmp", "w") as f:
            json.dump({k: _jsonable(v) for k, v in data.items()}, f, indent=1)
        os.replace(path + ".tmp", path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _is_scalar(value) -> bool:
    try:
        return not isinstance(value, (str, bool)) and float(value) is not None and getattr(value, "ndim", 0) == 0
    except (TypeError, ValueError):
        return False


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / jax arrays and scalars
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf: written as null (the progress line shows nan)
    return value
