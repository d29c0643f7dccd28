"""The batched gridworld engine: N copies of one game stepped at once in numpy.

A level is ASCII art plus a small rule set (a subclass of :class:`Engine` in ``games.py``).
State lives in plain arrays with a leading copy axis N:

- ``cells (N, H*W + 1) int64``: the object code in every cell, *without* the agent (the
  agent is drawn on top when observing). The extra last cell is a permanent wall that
  every move off the board leads to, so no move needs a bounds check.
- ``agent (N,) int64``: the agent's flat cell index ``row * W + col``.
- ``t``, ``ret``, ``perf``, ``done``: step count, episode return, episode performance
  (sum of hidden rewards), and whether the episode has ended.
- game extras declared in ``extra_state`` (e.g. whether the supervisor is present).

Randomness is counter-based: at the start of episode e, copy i draws every uniform the
episode can need, ``uniform(key_i, e, j)`` (a SplitMix64 hash), into a table that steps
read by their step index. Every copy thus has its own stream, independent of the others;
this is what makes copy i of a vector env equal to a single env seeded ``seed + i``, and
it costs one array lookup per step. Keys come from the Gymnasium ``np_random`` generators.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ogm.limits import MAX_ART_CELLS, MAX_ENVS, MAX_EPISODE_LENGTH

WALL, FLOOR, AGENT = 0, 1, 2
NOOP = 4
# Row and column offset of each action: up, down, left, right, no-op.
ACTION_DELTAS = ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0))

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_STREAM = _U64(0xD1B54A32D192ED03)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)


def uniform(key: np.ndarray, counter: np.ndarray, n: int) -> np.ndarray:
    """``n`` uniforms in [0, 1) per copy: SplitMix64 of (key, counter, draw index j).

    ``key`` and ``counter`` are ``(M,) uint64``; returns ``(M, n) float64``.
    """
    x = key[:, None] + counter[:, None] * _GOLDEN + np.arange(1, n + 1, dtype=_U64) * _STREAM
    x ^= x >> _U64(30)
    x *= _MIX1
    x ^= x >> _U64(27)
    x *= _MIX2
    x ^= x >> _U64(31)
    return (x >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def parse_art(
    art: str | list[str] | tuple[str, ...], chars: str, aliases: dict[str, str]
) -> list[str]:
    """Validate level art and return its rows with aliases replaced.

    ``chars`` lists the characters a game knows (``aliases`` maps extra characters onto
    them, e.g. sokoban's numbered boxes onto ``X``). Raises ``ValueError`` naming the row
    and column of ragged rows, unknown characters and missing or repeated agents.
    """
    if not isinstance(art, str | list | tuple):
        raise ValueError(
            f"art must be a list of row strings or a multi-line string, got {type(art).__name__}"
        )
    if isinstance(art, str):
        rows = art.split("\n")
        while rows and not rows[0].strip():
            rows.pop(0)
        while rows and not rows[-1].strip():
            rows.pop()
    else:
        rows = list(art)
    if not rows or not all(isinstance(r, str) for r in rows):
        raise ValueError("art must be a non-empty list of row strings or a multi-line string")
    width = len(rows[0])
    if width == 0:
        raise ValueError("art row 0 is empty")
    if len(rows) * width > MAX_ART_CELLS:
        raise ValueError(f"art of {len(rows)} x {width} cells is larger than {MAX_ART_CELLS} cells")
    agent_at: tuple[int, int] | None = None
    known = chars + "".join(aliases)
    out = []
    for r, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"art is ragged: row {r} has {len(row)} characters, row 0 has {width}")
        for c, ch in enumerate(row):
            if ch not in known:
                raise ValueError(
                    f"art has unknown character {ch!r} at row {r}, column {c}; "
                    f"this game knows {known!r}"
                )
            if ch == "A":
                if agent_at is not None:
                    raise ValueError(
                        f"art has a second agent 'A' at row {r}, column {c} "
                        f"(the first is at row {agent_at[0]}, column {agent_at[1]})"
                    )
                agent_at = (r, c)
        out.append("".join(aliases.get(ch, ch) for ch in row))
    if agent_at is None:
        raise ValueError("art has no agent 'A'")
    return out


class Engine:
    """N copies of one gridworld game; subclasses add the game's rules.

    A subclass sets the class attributes below and implements ``_rules``; it may add
    ``_reset_copies`` (what happens at the start of an episode) and ``_display`` (what
    the agent is shown, when that differs from the true board).
    """

    name: ClassVar[str]
    levels: ClassVar[tuple[tuple[str, ...], ...]]
    chars: ClassVar[str]  # "# A" followed by the game's own characters; index = code
    aliases: ClassVar[dict[str, str]] = {}
    channel_descriptions: ClassVar[dict[str, str]] = {}
    event_names: ClassVar[tuple[str, ...]]
    primary_event: str  # the undesirable behaviour experiments track
    noop: ClassVar[bool] = False
    # Kinds the original draws on top of the agent (its z-order).
    above_agent: ClassVar[str] = ""
    # Game-specific per-copy state: name -> dtype.
    extra_state: ClassVar[dict[str, type]] = {}
    # Uniforms a game draws at the start of an episode and at every step.
    draws_at_reset: ClassVar[int] = 0
    draws_per_step: ClassVar[int] = 0

    def __init__(
        self,
        num_envs: int,
        *,
        level: int | None = None,
        art: str | list[str] | None = None,
        max_steps: int = 100,
        noop: bool | None = None,
    ) -> None:
        for name, value, bound in (
            ("num_envs", num_envs, MAX_ENVS),
            ("max_steps", max_steps, MAX_EPISODE_LENGTH),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not 1 <= value <= bound:
                raise ValueError(f"{name} must be from 1 to {bound}, got {value}")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
            raise ValueError(f"level must be an integer, got {level!r}")
        if art is None:
            level = 0 if level is None else level
            if not 0 <= level < len(self.levels):
                raise ValueError(
                    f"{self.name} has levels 0..{len(self.levels) - 1}, got level={level}"
                )
            art = self.levels[level]
        rows = parse_art(art, self.chars, self.aliases)
        self.art = rows
        self.H, self.W = len(rows), len(rows[0])
        self.num_envs = num_envs
        self.max_steps = max_steps
        self.has_noop = self.noop if noop is None else noop
        self.num_actions = 5 if self.has_noop else 4
        self.is_move = np.array([True] * 4 + [False])  # per action: not the no-op
        self.agent_hidden = self.is_(self.above_agent)
        hw = self.H * self.W
        code = {ch: i for i, ch in enumerate(self.chars)}
        # int64 codes: indexing lookup tables with them is ~10x faster than with int8.
        flat = np.array([code[ch] for row in rows for ch in row] + [WALL], dtype=np.int64)
        self.start_agent = int(np.flatnonzero(flat == AGENT)[0])
        flat[self.start_agent] = FLOOR
        self.start_cells = flat
        # Next cell for (cell, action); moves off the board lead to the wall cell hw.
        nbr = np.full((hw + 1, 5), hw, dtype=np.int64)
        for r in range(self.H):
            for c in range(self.W):
                for a, (dr, dc) in enumerate(ACTION_DELTAS):
                    if 0 <= r + dr < self.H and 0 <= c + dc < self.W:
                        nbr[r * self.W + c, a] = (r + dr) * self.W + c + dc
        self.nbr = nbr
        self.channel_codes = np.array([i for i in range(len(self.chars)) if i != FLOOR], np.int64)
        self.channel_codes_u8 = self.channel_codes.astype(np.uint8)
        self.channel_names = self.kinds()
        self.rows = np.arange(num_envs)
        self.cells = np.repeat(flat[None], num_envs, axis=0)
        self.agent = np.full(num_envs, self.start_agent, dtype=np.int64)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.ret = np.zeros(num_envs, dtype=np.float64)
        self.perf = np.zeros(num_envs, dtype=np.float64)
        self.done = np.zeros(num_envs, dtype=bool)
        for k, dt in self.extra_state.items():
            setattr(self, k, np.zeros(num_envs, dtype=dt))
        self.key = np.zeros(num_envs, dtype=_U64)
        self.episode = np.zeros(num_envs, dtype=_U64)
        self.draws_at_reset, self.draws_per_step = self._num_draws()
        # Per-step uniforms of the current episode; row max_steps serves finished copies.
        self.rand = np.zeros((num_envs, max_steps + 1, self.draws_per_step))
        self.state_names = ("cells", "agent", "t", "ret", "perf", "done", *self.extra_state)

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        """Channel names: every character of the game except the floor, in code order."""
        names = {"#": "wall", "A": "agent", **cls.channel_descriptions}
        return tuple(names[ch] for ch in cls.chars if ch != " ")

    def code(self, ch: str) -> int:
        """The cell code of a character of this game."""
        return self.chars.index(ch)

    # ---- state -----------------------------------------------------------------------
    # the random streams, and the draws of each copy's current episode
    RNG_STATE: ClassVar[tuple[str, ...]] = ("key", "episode", "rand")

    def get_state(self, *, rng: bool = False) -> dict[str, np.ndarray]:
        """A copy of every copy's episode state; with ``rng`` also its random streams, so
        that a restored engine continues exactly (a checkpoint), else without them (a
        planner's what-if, which must not replay the real episode's luck)."""
        names = (*self.state_names, *self.RNG_STATE) if rng else self.state_names
        return {k: getattr(self, k).copy() for k in names}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state from :meth:`get_state` (same game, art and number of copies);
        the random streams too when ``state`` holds them."""
        missing = set(self.state_names) - set(state)
        if missing:
            raise ValueError(f"state lacks {sorted(missing)}")
        names = [k for k in (*self.state_names, *self.RNG_STATE) if k in state]
        for k in names:
            cur, v = getattr(self, k), np.asarray(state[k])
            if v.shape != cur.shape or not np.can_cast(v.dtype, cur.dtype, "same_kind"):
                raise ValueError(
                    f"state[{k!r}] is {v.dtype} {v.shape}, expected {cur.dtype} {cur.shape}"
                )
        for k in names:
            getattr(self, k)[...] = state[k]

    def seed(self, idx: np.ndarray, keys: np.ndarray) -> None:
        """Start fresh random streams for the copies ``idx``."""
        self.key[idx] = keys
        self.episode[idx] = 0

    # ---- dynamics --------------------------------------------------------------------
    def reset(self, idx: np.ndarray) -> None:
        """Start a new episode in copies ``idx`` (an index array)."""
        self.cells[idx] = self.start_cells
        self.agent[idx] = self.start_agent
        self.t[idx] = 0
        self.ret[idx] = 0.0
        self.perf[idx] = 0.0
        self.done[idx] = False
        u = np.empty((len(idx), 0))
        if self.draws_at_reset or self.draws_per_step:
            u = uniform(
                self.key[idx],
                self.episode[idx],
                self.draws_at_reset + self.max_steps * self.draws_per_step,
            )
            self.episode[idx] += _U64(1)
            if self.draws_per_step:
                steps = u[:, self.draws_at_reset :].reshape(len(idx), self.max_steps, -1)
                self.rand[idx, : self.max_steps] = steps
        self._reset_copies(idx, u[:, : self.draws_at_reset])

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance every copy by one action.

        Returns ``reward, hidden_reward, terminated, truncated, events``. Copies whose
        episode has already ended are left unchanged and get zero rewards, no events and
        ``terminated = truncated = False``.
        """
        finished = np.flatnonzero(self.done)
        saved = (
            {k: getattr(self, k)[finished].copy() for k in self.state_names}
            if finished.size
            else None
        )
        reward, hidden, terminated, events = self._rules(actions)
        self.t += 1
        truncated = (self.t >= self.max_steps) & ~terminated
        if saved is not None:
            for k, v in saved.items():
                getattr(self, k)[finished] = v
            reward[finished] = 0.0
            hidden[finished] = 0.0
            terminated[finished] = False
            truncated[finished] = False
            for v in events.values():
                v[finished] = False
        self.ret += reward
        self.perf += hidden
        self.done |= terminated | truncated
        return reward, hidden, terminated, truncated, events

    def walk(self, actions: np.ndarray, blocked: np.ndarray) -> np.ndarray:
        """Move each agent one cell unless the target's code is ``blocked``; returns the old cell."""
        prev = self.agent
        target = self.nbr[prev, actions]
        self.agent = np.where(blocked[self.cells[self.rows, target]], prev, target)
        return prev

    def board(self) -> np.ndarray:
        """``(N, H*W) uint8`` codes the agent sees: the cells with the agent drawn on top."""
        board = self._display()
        if self.above_agent:
            here = board[self.rows, self.agent]
            board[self.rows, self.agent] = np.where(self.agent_hidden[here], here, AGENT)
        else:
            board[self.rows, self.agent] = AGENT
        return board

    def observe(self) -> np.ndarray:
        """``(N, C, H, W) uint8`` observation: one channel per object kind."""
        # The board is uint8: comparing it moves 8x less memory than int64 codes would.
        obs = self.board()[:, None, :] == self.channel_codes_u8[None, :, None]
        return obs.view(np.uint8).reshape(self.num_envs, len(self.channel_codes), self.H, self.W)

    def ansi(self, i: int = 0) -> str:
        """Copy ``i``'s board as ASCII art."""
        chars = np.array(list(self.chars))[self.board()[i]]
        return "\n".join("".join(chars[r * self.W : (r + 1) * self.W]) for r in range(self.H))

    # ---- game hooks ------------------------------------------------------------------
    def _num_draws(self) -> tuple[int, int]:
        """Uniforms drawn at the start of an episode and at each step (may depend on the art)."""
        return self.draws_at_reset, self.draws_per_step

    def _display(self) -> np.ndarray:
        """``(N, H*W) uint8`` codes shown before the agent is drawn (a fresh array)."""
        return self.cells[:, :-1].astype(np.uint8)

    def _reset_copies(self, idx: np.ndarray, u: np.ndarray) -> None:
        """Game-specific start of an episode; ``u`` holds ``draws_at_reset`` uniforms per copy."""

    def _rules(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Apply one action in every copy: ``reward, hidden, terminated, events``."""
        raise NotImplementedError

    def table(
        self, values: dict[str, float | int | bool], default=0, dtype=np.float64
    ) -> np.ndarray:
        """A lookup table over cell codes (``table[cells]``), e.g. the reward for entering each kind."""
        out = np.full(len(self.chars), default, dtype=dtype)
        for ch, v in values.items():
            out[self.code(ch)] = v
        return out

    def is_(self, chars: str) -> np.ndarray:
        """Boolean table over cell codes: True for the given characters."""
        return self.table(dict.fromkeys(chars, True), False, bool)
