"""The MAMBA meta-RL environment suite, as pure-JAX gymnax environments.

    import envs
    env, params = envs.make("point_robot")            # meta-episode wrapper, paper's N and L
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

`envs.make(name, **overrides)` accepts `num_episodes` (N), `episode_length` (L) and any field
of the inner env's params dataclass; unknown names and invalid values raise a ValueError
saying what is allowed. `envs.NAMES` lists the registered names.
"""

import dataclasses
import importlib
from typing import Any, NamedTuple

from envs.meta import MetaEpisodeWrapper, MetaParams, MetaState


class _Entry(NamedTuple):
    module: str  # module under envs/
    cls: str  # TaskEnv subclass in that module
    num_episodes: int  # N of the paper
    episode_length: int  # L of the paper
    defaults: dict  # inner-params overrides that define this variant


_REGISTRY: dict[str, _Entry] = {
    "point_robot": _Entry("point_robot", "PointRobot", 3, 100, {}),
    "point_robot_wind": _Entry("point_robot", "PointRobot", 3, 100, {"wind_std": 0.3}),
    "escape_room": _Entry("escape_room", "EscapeRoom", 2, 60, {}),
    "rooms": _Entry("rooms", "Rooms", 1, 100, {}),
    "rooms_meta": _Entry("rooms", "Rooms", 3, 100, {}),
    "reacher": _Entry("reacher", "Reacher", 3, 300, {}),
    "reacher_pixels": _Entry("reacher", "Reacher", 3, 300, {"pixels": True}),
    "humanoid_dir": _Entry("humanoid_dir", "HumanoidDir", 2, 200, {}),
    # Rooms-N with N = 2 and 4 (rooms is N = 3), for the decomposition study: one 100-step episode.
    "rooms2": _Entry("rooms", "Rooms", 1, 100, {"num_rooms": 2}),
    "rooms4": _Entry("rooms", "Rooms", 1, 100, {"num_rooms": 4}),
}

NAMES: tuple[str, ...] = tuple(_REGISTRY)
MODULES: dict[str, str] = {name: entry.module for name, entry in _REGISTRY.items()}  # name -> module under envs/


def make_inner(name: str, **overrides: Any):
    """Returns (inner TaskEnv, its params) without the meta-episode wrapper."""
    env, params = make(name, **overrides)
    return env.inner, params.env_params


def make(name: str, **overrides: Any) -> tuple[MetaEpisodeWrapper, MetaParams]:
    """Returns (env, params): the named env in the meta-episode wrapper, with the paper's N x L.

    `overrides` may set `num_episodes`, `episode_length` and any field of the inner params.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown env {name!r}; allowed: {', '.join(NAMES)}")
    entry = _REGISTRY[name]
    module = importlib.import_module(f"envs.{entry.module}")
    env = getattr(module, entry.cls)()
    num_episodes = overrides.pop("num_episodes", entry.num_episodes)
    episode_length = overrides.pop("episode_length", entry.episode_length)
    for field, value in (("num_episodes", num_episodes), ("episode_length", episode_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: invalid {field}={value!r}; allowed: an integer >= 1")
    params = env.default_params
    allowed = {f.name for f in dataclasses.fields(params)} - {"max_steps_in_episode"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(
            f"{name}: unknown parameter(s) {unknown}; allowed: num_episodes, episode_length, "
            + ", ".join(sorted(allowed))
        )
    params = params.replace(**{**entry.defaults, **overrides}, max_steps_in_episode=episode_length)
    env.check_params(params)
    return MetaEpisodeWrapper(env), MetaParams(params, num_episodes, episode_length)


__all__ = ["NAMES", "MODULES", "make", "make_inner", "MetaEpisodeWrapper", "MetaParams", "MetaState"]
