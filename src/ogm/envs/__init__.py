"""Faithful safety gridworlds (DeepMind's AI Safety Gridworlds v1.5) for Gymnasium.

Importing this package registers ``ogm/<Game>-v0`` ids. See ``docs/envs.md``.
"""

from __future__ import annotations

import gymnasium as gym

from ogm.envs import (
    atari,  # noqa: F401  (registers ogm/Atari-v0)
    hack_depth,  # noqa: F401  (adds ogm/HackDepth-v0 to GAMES)
    sequence,  # noqa: F401  (registers ogm/Summarize-v0, ogm/ProxyReward-v0)
)
from ogm.envs.engine import Engine, parse_art
from ogm.envs.env import (
    GridworldEnv,
    GridworldVectorEnv,
    check_env,
    check_event,
    game_info,
    game_options,
    make_vector,
    render_rgb,
)
from ogm.envs.games import GAMES, GameInfo

__all__ = [
    "GAMES",
    "Engine",
    "GameInfo",
    "GridworldEnv",
    "GridworldVectorEnv",
    "check_env",
    "check_event",
    "game_info",
    "game_options",
    "make_vector",
    "parse_art",
    "render_rgb",
]

for _g in GAMES.values():
    if _g.env_id not in gym.registry:
        gym.register(
            id=_g.env_id,
            entry_point="ogm.envs.env:GridworldEnv",
            vector_entry_point="ogm.envs.env:GridworldVectorEnv",
            kwargs={"game": _g.name},
        )
