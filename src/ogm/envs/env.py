"""Gymnasium faces of the engine: the single env, the vector env, ``make_vector``, rendering."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from ogm.envs.atari import ATARI_ENV_ID, DEFAULT_GAME, EXPLOIT_DETECTORS, atari_event_names
from ogm.envs.engine import Engine
from ogm.envs.games import GAMES, GameInfo

RENDER_MODES = ["rgb_array", "ansi"]
CELL_PIXELS = 8
FLOOR_COLOUR = (219, 219, 219)
# One clear colour per object kind (channel name).
COLOURS = {
    "wall": (153, 153, 153),
    "agent": (0, 120, 255),
    "box": (150, 90, 30),
    "coin": (230, 200, 0),
    "goal": (0, 200, 60),
    "dry_tomato": (230, 200, 0),
    "watered_tomato": (0, 128, 0),
    "transformer": (0, 230, 230),
    "punishment": (240, 240, 40),
    "supervisor": (230, 40, 40),
    "arrow_right": (250, 170, 0),
    "arrow_down": (220, 150, 0),
    "arrow_left": (190, 130, 0),
    "arrow_up": (160, 110, 0),
    "whisky": (160, 60, 200),
    "water": (40, 90, 220),
    "lava": (220, 60, 0),
    "interruption": (230, 110, 200),
    "button": (200, 0, 120),
    "object": (120, 60, 160),
    "belt": (120, 120, 90),
    "belt_end": (60, 60, 40),
    "rock": (110, 80, 60),
    "diamond": (80, 230, 240),
    "rock_switch_low": (255, 160, 160),
    "rock_switch_high": (200, 30, 30),
    "diamond_switch_low": (160, 200, 255),
    "diamond_switch_high": (30, 60, 200),
    "goal_area": (150, 230, 150),
    "reward_shown": (0, 230, 0),
    "empty_shown": (230, 0, 0),
    "friend_floor": (170, 250, 120),
    "neutral_floor": (220, 215, 170),
    "adversary_floor": (250, 160, 120),
    "lock": (240, 120, 40),
}


def game_info(env_id_or_game: str) -> GameInfo:
    """The :class:`GameInfo` for a game name (``"tomato_watering"``) or id (``"ogm/TomatoWatering-v0"``)."""
    if env_id_or_game in GAMES:
        return GAMES[env_id_or_game]
    for g in GAMES.values():
        if g.env_id == env_id_or_game:
            return g
    known = ", ".join(sorted(GAMES))
    raise ValueError(f"unknown gridworld {env_id_or_game!r}; known games: {known}")


def render_rgb(
    env_id_or_game: str, observation: np.ndarray, scale: int = CELL_PIXELS
) -> np.ndarray:
    """Render a stored observation ``(C, H, W)`` (or a stack ``(T, C, H, W)``) as RGB.

    Returns ``(H*scale, W*scale, 3) uint8`` (or ``(T, H*scale, W*scale, 3)``), without
    replaying the episode: used to animate datasets.
    """
    info = game_info(env_id_or_game)
    names = info.engine.kinds()
    obs = np.asarray(observation)
    if obs.ndim not in (3, 4) or obs.shape[-3] != len(names):
        raise ValueError(
            f"{info.name} observations have shape (C={len(names)}, H, W) or (T, C, H, W), "
            f"got {obs.shape}"
        )
    palette = np.array([FLOOR_COLOUR, *(COLOURS[n] for n in names)], dtype=np.uint8)
    # Observations are one-hot over kinds (floor: no channel), so the kind index is a sum.
    kind = np.tensordot(np.arange(1, len(names) + 1), obs != 0, axes=([0], [obs.ndim - 3]))
    img = palette[kind]
    return img.repeat(scale, axis=-3).repeat(scale, axis=-2)


def game_options(game: str) -> tuple[str, ...]:
    """The options (keyword arguments) a game accepts: ``render_mode`` and its engine's."""
    options = ["render_mode"]
    for cls in game_info(game).engine.__mro__:
        if "__init__" in vars(cls):
            for param in inspect.signature(cls.__init__).parameters.values():
                if param.kind is param.KEYWORD_ONLY and param.name not in options:
                    options.append(param.name)
    return tuple(options)


def check_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
    """Raise ``ValueError`` unless ``env_id`` names an environment (a gridworld, or a
    registered Gymnasium id) and, for a gridworld, ``env_kwargs`` build a level of it.

    Configs call this, so that an unknown id, option or bad level is refused where it is
    written, with the valid choices, and never inside a run. Other Gymnasium envs check
    their own options when they are made (:func:`make_vector`).
    """
    try:
        info = game_info(env_id)
    except ValueError:
        if ":" in env_id or env_id in gym.registry:  # "module:Id" imports its module first
            return
        ids = ", ".join(g.env_id for g in GAMES.values())
        raise ValueError(
            f"unknown env id {env_id!r}: neither an ogm gridworld ({ids}) nor a registered "
            "Gymnasium id"
        ) from None
    GridworldEnv(info.name, **dict(env_kwargs or {})).close()


def check_event(env_id: str, event: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
    """Raise ``ValueError`` unless ``event`` is a safety event of ``env_id`` made with
    ``env_kwargs`` (a choice of the event to track, such as an experiment's
    ``primary_event``), listing the events."""
    if env_id == ATARI_ENV_ID:
        game = dict(env_kwargs or {}).get("game", DEFAULT_GAME)
        names = atari_event_names(game)
        if event not in names:
            raise ValueError(
                f"{env_id} with game {game} has no event {event!r}; "
                + (f"its events: {', '.join(names)}" if names else "it reports no events")
            )
        return
    try:
        info = game_info(env_id)
    except ValueError:
        raise ValueError(
            f"{env_id} is not an ogm gridworld, so it has no safety event {event!r} to track"
        ) from None
    if event not in info.event_names:
        raise ValueError(
            f"{info.env_id} has no event {event!r}; its events: {', '.join(info.event_names)}"
        )


def _make_engine(
    game: str, num_envs: int, level, art, max_steps, render_mode, game_kwargs
) -> tuple[GameInfo, Engine]:
    """The game's metadata and an engine of ``num_envs`` copies, after checking the options."""
    if render_mode not in (None, *RENDER_MODES):
        raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")
    info = game_info(game)
    options = game_options(game)
    unknown = sorted(set(game_kwargs) - set(options))
    if unknown:
        raise ValueError(
            f"{info.env_id} has no option {', '.join(map(repr, unknown))}; its options: "
            + ", ".join(options)
        )
    try:
        engine = info.engine(num_envs, level=level, art=art, max_steps=max_steps, **game_kwargs)
    except (TypeError, IndexError, KeyError) as err:  # an option of the wrong type
        raise ValueError(f"{info.env_id}: bad option value ({err})") from err
    return info, engine


def _new_key(rng: np.random.Generator) -> np.uint64:
    return rng.integers(0, 2**63, dtype=np.uint64)


class GridworldEnv(gym.Env):
    """One copy of a safety gridworld (the batched engine with N = 1).

    ``info`` after every step holds ``hidden_reward`` and ``events``, and
    ``performance`` (sum of hidden rewards) once the episode has ended.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": RENDER_MODES, "render_fps": 8}

    def __init__(
        self,
        game: str,
        *,
        level: int | None = None,
        art: str | list[str] | None = None,
        render_mode: str | None = None,
        max_steps: int = 100,
        **game_kwargs: Any,
    ) -> None:
        self.info, self.engine = _make_engine(
            game, 1, level, art, max_steps, render_mode, game_kwargs
        )
        eng = self.engine
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 1, (len(eng.channel_codes), eng.H, eng.W), np.uint8)
        self.action_space = spaces.Discrete(eng.num_actions)
        self.channel_names = eng.channel_names
        self.event_names = self.info.event_names
        self.primary_event = self.engine.primary_event
        self._action = np.zeros(1, dtype=np.int64)
        self._keyed = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._keyed:
            self.engine.seed(np.zeros(1, np.int64), _new_key(self.np_random))
            self._keyed = True
        self.engine.reset(np.zeros(1, np.int64))
        return self.engine.observe()[0], {}

    def step(self, action):
        a = int(action)
        if not 0 <= a < self.engine.num_actions:
            raise ValueError(f"action {action!r} is not in 0..{self.engine.num_actions - 1}")
        self._action[0] = a
        r, h, term, trunc, ev = self.engine.step(self._action)
        terminated, truncated = bool(term[0]), bool(trunc[0])
        info = {"hidden_reward": float(h[0]), "events": {k: bool(v[0]) for k, v in ev.items()}}
        if terminated or truncated:
            info["performance"] = float(self.engine.perf[0])
        return self.engine.observe()[0], float(r[0]), terminated, truncated, info

    def render(self):
        if self.render_mode == "ansi":
            return self.engine.ansi(0)
        if self.render_mode == "rgb_array":
            return render_rgb(self.info.name, self.engine.observe()[0])
        return None

    def get_state(self, *, rng: bool = False) -> dict[str, np.ndarray]:
        """An exact copy of the episode state (arrays with a leading axis of 1); with
        ``rng`` also the random stream (see :meth:`Engine.get_state`)."""
        return self.engine.get_state(rng=rng)

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state from :meth:`get_state`."""
        self.engine.set_state(state)
        self._keyed = self._keyed or "key" in state


class GridworldVectorEnv(VectorEnv):
    """N copies of a safety gridworld stepped at once in numpy.

    Copy i behaves exactly like a :class:`GridworldEnv` seeded ``seed + i``. Infos:
    ``hidden_reward (N,)``, ``events {name: (N,) bool}``, ``performance (N,)`` with mask
    ``_performance`` (copies whose episode ended this step). In ``SAME_STEP`` mode also
    ``final_obs``/``final_info`` as Gymnasium's ``SyncVectorEnv``. In ``DISABLED`` mode a
    finished copy stays unchanged (zero reward, both flags False) until
    ``reset(options={"reset_mask": mask})``.
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        level: int | None = None,
        art: str | list[str] | None = None,
        render_mode: str | None = None,
        max_steps: int = 100,
        **game_kwargs: Any,
    ) -> None:
        self.info, self.engine = _make_engine(
            game, num_envs, level, art, max_steps, render_mode, game_kwargs
        )
        eng = self.engine
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {"render_modes": RENDER_MODES, "autoreset_mode": self.autoreset_mode}
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = spaces.Box(
            0, 1, (len(eng.channel_codes), eng.H, eng.W), np.uint8
        )
        self.single_action_space = spaces.Discrete(eng.num_actions)
        self.observation_space = spaces.Box(
            0, 1, (num_envs, *self.single_observation_space.shape), np.uint8
        )
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, eng.num_actions))
        self.channel_names = eng.channel_names
        self.event_names = self.info.event_names
        self.primary_event = self.engine.primary_event
        self.default_seed: int | None = None
        self._keyed = False
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        n = self.num_envs
        if seed is None and not self._keyed:
            seed = self.default_seed
        if seed is not None or not self._keyed:
            seeds = (
                [None] * n
                if seed is None
                else [seed + i for i in range(n)]
                if isinstance(seed, int)
                else list(seed)
            )
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} seeds for {n} copies")
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
            keys = np.array([_new_key(seeding.np_random(s)[0]) for s in seeds], dtype=np.uint64)
            self.engine.seed(np.arange(n), keys)
            self._keyed = True
        mask = (options or {}).get("reset_mask")
        if mask is None:
            idx = np.arange(n)
        else:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != bool:
                raise ValueError(
                    f"reset_mask must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}"
                )
            idx = np.flatnonzero(mask)
        self.engine.reset(idx)
        self._autoreset[idx] = False
        return self.engine.observe(), {}

    def step(self, actions):
        eng = self.engine
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"actions must be {self.num_envs} integers, got {a.dtype} array of shape {a.shape}"
            )
        if a.min() < 0 or a.max() >= eng.num_actions:
            raise ValueError(
                f"actions must be in 0..{eng.num_actions - 1}, got {a.min()}..{a.max()}"
            )
        to_reset = self._autoreset if self.autoreset_mode == AutoresetMode.NEXT_STEP else None
        reward, hidden, terminated, truncated, events = eng.step(a.astype(np.int64, copy=False))
        ended = terminated | truncated
        infos: dict[str, Any] = {
            "hidden_reward": hidden,
            "events": events,
            "performance": np.where(ended, eng.perf, 0.0),
            "_performance": ended,
        }
        if to_reset is not None:
            if to_reset.any():
                eng.reset(np.flatnonzero(to_reset))
            self._autoreset = ended
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and ended.any():
            final = eng.observe()
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(ended):
                final_obs[i] = final[i]
            infos["final_obs"], infos["_final_obs"] = final_obs, ended
            infos["final_info"] = {k: v for k, v in infos.items() if not k.startswith("final")}
            infos["_final_info"] = ended
            eng.reset(np.flatnonzero(ended))
        return eng.observe(), reward, terminated, truncated, infos

    def render(self):
        if self.render_mode == "ansi":
            return tuple(self.engine.ansi(i) for i in range(self.num_envs))
        if self.render_mode == "rgb_array":
            return tuple(render_rgb(self.info.name, self.engine.observe()))
        return None

    def get_state(self, *, rng: bool = False) -> dict[str, np.ndarray]:
        """An exact copy of every copy's episode state; with ``rng`` also the random
        streams and pending autoresets, so that the restored env steps on exactly as this
        one would (what a checkpoint needs)."""
        state = self.engine.get_state(rng=rng)
        if rng:
            state["autoreset"] = self._autoreset.copy()
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state from :meth:`get_state`."""
        self.engine.set_state(state)
        if "autoreset" in state:
            autoreset = np.asarray(state["autoreset"])
            if autoreset.shape != self._autoreset.shape:
                raise ValueError(
                    f"state['autoreset'] has shape {autoreset.shape}, expected "
                    f"{self._autoreset.shape}"
                )
            self._autoreset[...] = autoreset
        self._keyed = self._keyed or "key" in state


class _SafetyInfo(gym.vector.VectorWrapper):
    """Adds ``hidden_reward`` and ``events`` to a non-gridworld vector env: an env's own
    ``info["hidden_reward"]`` and ``info["events"]`` where it reports them (the summary task,
    the proxy-reward wrapper), else ``hidden_reward`` = reward and no events. Under
    same-step autoreset a finished copy's step info is read from ``final_info``."""

    def __init__(
        self, env: VectorEnv, seed: int | None, detector: type[gym.Wrapper] | None = None
    ) -> None:
        super().__init__(env)
        self.default_seed = seed
        self._seeded = False
        if detector is not None:  # the copies' exploit detector names their events
            self.event_names, self.primary_event = detector.event_names, detector.primary_event

    def reset(self, *, seed=None, options=None):
        if seed is None and not self._seeded:
            seed = self.default_seed
        self._seeded = True
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, reward, terminated, truncated, infos = self.env.step(actions)
        infos = dict(infos)
        hidden = np.asarray(reward, dtype=np.float64).copy()
        events: dict[str, np.ndarray] = {}
        final = infos.get("final_info", {})
        sources = [(infos, np.ones(len(hidden), bool))]
        if final:
            sources.append((final, np.asarray(infos["_final_info"], bool)))
        for source, rows in sources:
            if "hidden_reward" in source:
                mask = rows & np.asarray(source["_hidden_reward"], bool)
                hidden[mask] = np.asarray(source["hidden_reward"], np.float64)[mask]
            for name, flags in source.get("events", {}).items():
                if not name.startswith("_"):
                    mask = rows & np.asarray(source["events"][f"_{name}"], bool)
                    column = events.setdefault(name, np.zeros(len(hidden), bool))
                    column[mask] = np.asarray(flags, bool)[mask]
        infos["hidden_reward"] = hidden
        infos["events"] = events
        return obs, reward, terminated, truncated, infos


def make_vector(env_id: str, num_envs: int, *, seed: int | None = None, **kwargs: Any) -> VectorEnv:
    """A vector env for any id with the gridworld info keys.

    Gridworld ids give a :class:`GridworldVectorEnv`; any other Gymnasium id gives
    ``gymnasium.make_vec`` with ``hidden_reward`` = reward and ``events`` = {}. ``seed``
    seeds the first ``reset()`` (copy i with ``seed + i``).
    """
    try:
        info = game_info(env_id)
    except ValueError:
        info = None
    if info is not None:
        env = GridworldVectorEnv(info.name, num_envs, **kwargs)
        env.default_seed = seed
        return env
    # gym.make_vec takes the autoreset mode through the vector env's own kwargs.
    mode = kwargs.pop("autoreset_mode", None)
    if mode is not None:
        kwargs.setdefault("vectorization_mode", "sync")
        kwargs["vector_kwargs"] = {**kwargs.get("vector_kwargs", {}), "autoreset_mode": mode}
    try:
        env = gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    except (gym.error.Error, TypeError) as err:  # an unknown id, or options it does not take
        raise ValueError(f"{env_id} cannot be made with these options: {err}") from err
    detector = (
        EXPLOIT_DETECTORS.get(kwargs.get("game", DEFAULT_GAME)) if env_id == ATARI_ENV_ID else None
    )
    return _SafetyInfo(env, seed, detector)
