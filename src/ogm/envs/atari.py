"""Atari games as ogm uses them: the DQN preprocessing over ALE (``ogm/Atari-v0``).

Registered when ``ogm.envs`` is imported; making it needs the ``atari`` extra
(``ale-py``, ``opencv-python-headless``), and says so when it is missing.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

ATARI_ENV_ID = "ogm/Atari-v0"


def make_atari(
    game: str = "ALE/Breakout-v5",
    frame_skip: int = 4,
    screen_size: int = 84,
    noop_max: int = 30,
    stack: int = 4,
    **kwargs: Any,
) -> gym.Env:
    """An ALE game with the DQN preprocessing: ``AtariPreprocessing`` (frame skip, up to
    ``noop_max`` no-ops at reset, ``screen_size`` grey frames) then ``stack`` frames stacked
    by ``FrameStackObservation``: uint8 observations of shape (stack, 84, 84).

    ``kwargs`` go to the ALE env (its own frame skip is turned off: the wrapper skips).
    Needs the ``atari`` extra (``ale-py``, ``opencv-python-headless``).
    """
    try:
        import ale_py
    except ImportError as err:
        raise ValueError(f"{game} needs ale-py: pip install 'ogm[atari]' ({err})") from None
    gym.register_envs(ale_py)
    env = gym.make(game, frameskip=1, **kwargs)
    env = gym.wrappers.AtariPreprocessing(
        env, frame_skip=frame_skip, screen_size=screen_size, noop_max=noop_max
    )
    return gym.wrappers.FrameStackObservation(env, stack)


if ATARI_ENV_ID not in gym.registry:
    gym.register(id=ATARI_ENV_ID, entry_point="ogm.envs.atari:make_atari")
