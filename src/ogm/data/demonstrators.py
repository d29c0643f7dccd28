"""Scripted safe "human" demonstrators for the gridworlds, and collecting their episodes.

A demonstrator does the task the way the designer wants. For the deterministic games it
plans: ``SafePlanner`` explores the game's state graph through a private copy of the
environment (``get_state`` / ``set_state``) and picks moves that maximise the *hidden*
reward over the steps left in the episode (finite-horizon dynamic programming over the
explored graph), each unsafe step costing ``EVENT_COST``, so events are avoided whenever
a route without one exists. Small games are explored whole; side_effects_sokoban, whose
box positions multiply the states, is searched with A* towards its end (all coins or the
goal) through safe moves only. For tomato_watering (and tomato_crmdp), whose tomatoes dry
at random, ``TomatoPatrol`` walks to the nearest dry tomato and never steps on the
transformer. For hack_depth, ``LockSlipper`` walks right to the goal and, on a lock cell,
makes that lock's move with the environment's probability ``slip`` (never a plan to open
the lock: ``slip`` is the experiment's dial for how unusual the exploit's moves are).

What counts as unsafe is a game's :class:`Intent`: by default every event, but some
events are what the designer wants (conveyor_belt vase: taking the vase off the belt;
sushi: the sushi being eaten; safe_interruptibility: being interrupted), and some games
need a stricter rule (the vase, once off the belt, is left alone; rocks_diamonds: rocks
are never moved) or a different view of the state (safe_interruptibility plans as if
the episode could not be interrupted, so it neither seeks nor avoids interruption).

Knobs, so that a dataset has a spread of returns like human data:

- ``epsilon``: trembling hand; with this probability a step's action is a uniformly
  random *safe slip* (``Demonstrator.slips``; none safe: no slip that step), so the
  demonstrations never show an unsafe event. How each demonstrator knows its safe slips:
  ``SafePlanner`` (every planned game) allows an action when it is not unsafe per the
  game's ``Intent`` and the planner's best plan after it needs no unsafe step either
  (a second dynamic programme over the explored graph with unsafe moves forbidden). So
  a slip never pushes a sokoban box into a corner, steps on absent_supervisor's
  punishment cell, drinks the whisky, enters the water, flips a rocks_diamonds switch or
  steps onto a switch or button (whose next move would raise the event), and never
  turns boat_race's boat against the current or bumps it into a wall often enough that
  every later arrow reward would come "without progress". Best moves and detours keep
  to such actions too, whenever one of them is among the best. ``TomatoPatrol``'s slips
  are its four moves less any that ends on the transformer; ``LockSlipper``'s are the
  moves that enter no digit of the lock (on a lock cell: not up or down).
- ``skill`` in [0, 1]: with probability ``DETOUR_RATE * (1 - skill)`` a step takes a
  detour: a random safe move that is not the best one (a slower route, or waiting)
  and gives up at most ``MAX_DETOUR_LOSS`` hidden return, never one whose hidden reward
  is below its observed reward (a cost the designer cares about).
- variety: ties between equally good moves are broken at random, so equally good safe
  routes all appear.

All randomness comes from the numpy ``Generator`` the caller passes.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from ogm.data.trajectory import Trajectory
from ogm.envs import GAMES
from ogm.envs.sequence import PROXY_ENV_ID

DETOUR_RATE = 0.5
MAX_PLAN_NODES = 50_000
SLACK = 2  # extra steps over the shortest safe route that A* still explores (for detours)
MAX_GRAPHS = 8  # explored graphs kept (least recently used dropped first)
EVENT_COST = 50.0  # hidden reward a demonstrator gives up to avoid one safety event
MAX_DETOUR_LOSS = 3.0  # a detour gives up at most this much hidden return
_TOL = 1e-6
_FAR = 10**6  # distance to somewhere unreachable
# Deterministic games (given the start of the episode), so a planner may search them.
PLANNED_GAMES = (
    "side_effects_sokoban",
    "absent_supervisor",
    "boat_race",
    "whisky_gold",
    "island_navigation",
    "distributional_shift",
    "conveyor_belt",
    "rocks_diamonds",
    "safe_interruptibility",
)
# Games whose tomatoes dry at random, patrolled by ``TomatoPatrol`` (tomato_crmdp has
# tomato_watering's board, rules and channels: only what the agent is shown on O differs).
PATROLLED_GAMES = ("tomato_watering", "tomato_crmdp")
DEMONSTRATED = (*PATROLLED_GAMES, "hack_depth", *PLANNED_GAMES)


class Demonstrator:
    """Base class: trembling hand and detours around a game-specific safe policy."""

    def __init__(self, env: gym.Env, *, epsilon: float, skill: float, rng: np.random.Generator):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if not 0.0 <= skill <= 1.0:
            raise ValueError(f"skill must be in [0, 1], got {skill}")
        self.env = env.unwrapped
        self.epsilon = epsilon
        self.skill = skill
        self.rng = rng
        self.num_actions = int(env.action_space.n)

    def act(self, obs: np.ndarray, steps_left: int) -> int:
        """The action to take in the environment's current state (``obs`` observed).

        With probability ``epsilon`` the hand slips: a uniformly random choice among the
        safe slips (none: no slip this step).
        """
        if self.rng.random() < self.epsilon:
            slips = self.slips(obs, steps_left)
            if slips:
                return int(self.rng.choice(slips))
        best, detours = self.choices(obs, steps_left)
        if detours and self.rng.random() < DETOUR_RATE * (1.0 - self.skill):
            return int(self.rng.choice(detours))
        return int(self.rng.choice(best))

    def choices(self, obs: np.ndarray, steps_left: int) -> tuple[list[int], list[int]]:
        """The best actions now, and the safe detours (both lists of action ids)."""
        raise NotImplementedError

    def slips(self, obs: np.ndarray, steps_left: int) -> list[int]:
        """The actions a trembling hand may take now: those after which no unsafe step follows."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- planner

# Parts of an engine state that count the episode rather than describe the board.
_COUNTERS = frozenset({"t", "ret", "perf", "done"})


def state_key(state: dict[str, np.ndarray]) -> bytes:
    """What identifies a planning node: the board and game state, not the step counters."""
    return b"".join(state[k].tobytes() for k in sorted(state) if k not in _COUNTERS)


def _restart_clock(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``state`` at step 0 or 1, so one planning step never meets the step limit.

    Step 0 stays 0 (conveyor_belt's sushi_goal charges its hidden -50 on the first step);
    any later step counts as step 1.
    """
    return {**state, "t": np.minimum(state["t"], 1), "done": np.zeros_like(state["done"])}


Heuristic = Callable[[np.ndarray], float]
State = dict[str, np.ndarray]


@dataclass(frozen=True)
class Intent:
    """What a game's designer wants beyond its hidden reward, as the planner uses it.

    A step is unsafe when it raises an event not in ``allowed``, or when ``forbids``
    (given the state before and after the step) says so. ``view`` is how the demonstrator
    sees a state when it plans (None: as it is). With ``safe_moves_only`` the search never
    follows an unsafe move (for games whose states multiply otherwise). ``step_cost`` is
    charged per step in planning only, so that a game whose rewards do not say "be quick"
    is still not dawdled through.
    """

    allowed: frozenset[str] = frozenset()
    forbids: Callable[[State, State], bool] | None = None
    view: Callable[[State], State] | None = None
    safe_moves_only: bool = False
    step_cost: float = 0.0

    def unsafe(self, events: dict[str, bool], before: State, after: State) -> bool:
        """Whether a step with these events, from ``before`` to ``after``, is unsafe."""
        if any(flag for name, flag in events.items() if name not in self.allowed):
            return True
        return self.forbids is not None and self.forbids(before, after)


EVERY_EVENT_UNSAFE = Intent()


@dataclass
class _Graph:
    """Part of a game's state graph, explored from one root state, with values.

    Row ``i`` of each (N, A) array describes action ``a`` from node ``i``: the next node
    (-1 when the move ends the episode or was not followed), its hidden and observed
    reward, whether it was unsafe, and its ``gain`` (hidden reward less the planning
    costs). ``depth`` is the fewest steps from the root; nodes deeper than ``reach`` were
    not explored.
    """

    index: dict[bytes, int]
    depth: np.ndarray
    reach: int
    child: np.ndarray
    hidden: np.ndarray
    observed: np.ndarray
    event: np.ndarray
    gain: np.ndarray
    values: np.ndarray  # (reach + 1, N) float32: best penalised hidden return, h steps left

    def q_values(self, node: int, steps_left: int) -> np.ndarray:
        """Penalised hidden return of each action from ``node`` with ``steps_left`` to go."""
        future = np.where(self.child[node] >= 0, self.values[steps_left - 1][self.child[node]], 0)
        return self.gain[node] + future

    def covers(self, node: int | None, steps_left: int) -> bool:
        """Whether the values of ``node`` are exact for ``steps_left`` remaining steps."""
        return (
            node is not None
            and self.depth[node] + steps_left <= self.reach
            and bool(np.isfinite(self.values[steps_left][node]))
        )


def explore(
    env: Any,
    root_state: dict[str, np.ndarray],
    root_obs: np.ndarray,
    reach: int,
    heuristic: Heuristic | None = None,
    slack: int = 0,
    intent: Intent = EVERY_EVENT_UNSAFE,
) -> _Graph:
    """Explore the states reachable from ``root_state`` within ``reach`` steps; value them.

    ``env`` is an unwrapped gridworld used only for planning (its state is overwritten).
    Without a heuristic every reachable state is expanded (up to ``MAX_PLAN_NODES``),
    breadth first, the states after an unsafe move included unless
    ``intent.safe_moves_only``. With a heuristic (a lower bound on
    the steps to the end of the episode, from an observation) the search is A* over
    safe moves: it finds the fewest steps ``g*`` to a safe end and expands every
    state that may lie on a route of at most ``g* + slack`` steps. Then ``values[h]`` is
    filled by finite-horizon dynamic programming on the hidden reward, each unsafe move
    (see ``intent``) costing ``EVENT_COST``; unexplored nodes are worth -inf.
    """
    num_actions = int(env.action_space.n)
    prune = heuristic is not None or intent.safe_moves_only
    index = {state_key(root_state): 0}
    states, depth = [_restart_clock(root_state)], [0]
    rows: dict[int, list[tuple[int, float, float, bool]]] = {}
    tie = 0
    heap = [(heuristic(root_obs) if heuristic else 0.0, 0, tie, 0)]
    bound = np.inf
    while heap and len(rows) < MAX_PLAN_NODES:
        f, g, _, node = heapq.heappop(heap)
        if f > bound:
            break
        if node < 0:  # a safe end of the episode, g steps from the root
            bound = min(bound, g + slack)
            continue
        if g > depth[node] or g >= reach:
            continue  # reached by a shorter route already, or too deep to matter
        row = []
        for action in range(num_actions):
            env.set_state(states[node])
            obs, reward, terminated, _, info = env.step(action)
            state = env.get_state()
            event = intent.unsafe(info["events"], states[node], state)
            child = -1
            if heuristic and terminated and not event:
                tie += 1
                heapq.heappush(heap, (g + 1, g + 1, tie, -1))
            elif not terminated and not (prune and event):
                key = state_key(state)
                child = index.get(key, -1)
                if child < 0:
                    child = index[key] = len(states)
                    states.append(_restart_clock(state))
                    depth.append(reach + 1)
                if g + 1 < depth[child]:
                    depth[child] = g + 1
                    tie += 1
                    h = heuristic(obs) if heuristic else 0.0
                    heapq.heappush(heap, (g + 1 + h, g + 1, tie, child))
            row.append((child, float(info["hidden_reward"]), float(reward), event))
        rows[node] = row
    n = len(states)
    child = np.full((n, num_actions), -1, np.int64)
    hidden = np.zeros((n, num_actions))
    observed = np.zeros((n, num_actions))
    event = np.zeros((n, num_actions), bool)
    expanded = np.zeros(n, bool)
    for i, row in rows.items():
        expanded[i] = True
        for a, (c, h, o, e) in enumerate(row):
            child[i, a], hidden[i, a], observed[i, a], event[i, a] = c, h, o, e
    gain = hidden - EVENT_COST * event - intent.step_cost
    values = np.empty((reach + 1, n), np.float32)
    values[0] = 0.0
    for h in range(1, reach + 1):
        future = np.where(child >= 0, values[h - 1][child], 0.0)
        values[h] = np.where(expanded, (gain + future).max(axis=1), -np.inf)
    return _Graph(index, np.array(depth), reach, child, hidden, observed, event, gain, values)


class SafePlanner(Demonstrator):
    """Plans on the hidden reward, avoiding safety events (deterministic games).

    The most recently used explored graphs are kept, so an episode that starts where an
    earlier one did, or passes a state planned before, needs no new search.

    Safe slips and detours: an action is *clean* when it is not unsafe itself and the
    planner's best plan after it needs no unsafe step either (``_clean_plans``). Slips are
    drawn among clean actions only, and when a clean action is among the best, best moves
    and detours are kept to clean ones; so an episode that starts clean stays event-free
    whatever the hand does (a boat-race slip against the current, after which every
    rewarded arrow would be "reward without progress", is never taken).
    """

    def __init__(
        self,
        env: gym.Env,
        planning_env: gym.Env,
        heuristic: Heuristic | None = None,
        intent: Intent = EVERY_EVENT_UNSAFE,
        **knobs: Any,
    ):
        super().__init__(env, **knobs)
        self.planning_env = planning_env.unwrapped
        self.heuristic = heuristic
        self.intent = intent
        self.graphs: list[tuple[_Graph, np.ndarray]] = []  # (graph, its _clean_plans)

    @staticmethod
    def _clean_plans(graph: _Graph) -> np.ndarray:
        """(reach + 1, N) bool: with ``h`` steps left from node ``n``, a best plan has no unsafe step.

        A second dynamic programme over the same graph with unsafe moves forbidden; where
        its value reaches the planner's, an optimal plan is event-free. Unexplored nodes
        count as clean: the planner searches again from them when it gets there.
        """
        expanded = np.isfinite(graph.values[min(1, graph.reach)])
        allowed = np.where(graph.event, -np.inf, graph.gain)
        free = np.empty_like(graph.values)
        free[0] = 0.0
        for h in range(1, graph.reach + 1):
            future = np.where(graph.child >= 0, free[h - 1][graph.child], 0.0)
            free[h] = np.where(expanded, (allowed + future).max(axis=1), -np.inf)
        # float32 sums of equally good plans may differ in their last bits
        return free >= graph.values - 1e-3

    def _locate(self, obs: np.ndarray, steps_left: int) -> tuple[_Graph, np.ndarray, int]:
        state = self.env.get_state()
        if self.intent.view is not None:
            state = self.intent.view(state)
        key = state_key(state)
        for i, (graph, clean) in enumerate(self.graphs):
            node = graph.index.get(key)
            if graph.covers(node, steps_left):
                self.graphs.append(self.graphs.pop(i))  # most recently used last
                return graph, clean, node
        graph = explore(
            self.planning_env, state, obs, steps_left, self.heuristic, SLACK, self.intent
        )
        clean = self._clean_plans(graph)
        self.graphs = [*self.graphs[-MAX_GRAPHS + 1 :], (graph, clean)]
        return graph, clean, 0

    def _options(
        self, obs: np.ndarray, steps_left: int
    ) -> tuple[_Graph, int, np.ndarray, np.ndarray]:
        """The located graph and node, each action's value, and which actions are clean."""
        graph, clean, node = self._locate(obs, steps_left)
        child = graph.child[node]
        after = np.where(child >= 0, clean[steps_left - 1][child], True)
        return graph, node, graph.q_values(node, steps_left), ~graph.event[node] & after

    def choices(self, obs: np.ndarray, steps_left: int) -> tuple[list[int], list[int]]:
        graph, node, q, clean = self._options(obs, steps_left)
        if not np.isfinite(q.max()):  # nothing explored leads anywhere: any move will do
            return list(range(self.num_actions)), []
        if (clean & (q >= q.max() - _TOL)).any():  # an optimal plan is event-free: keep to those
            q = np.where(clean, q, -np.inf)
        best = np.flatnonzero(q >= q.max() - _TOL)
        fine = ~graph.event[node] & (graph.hidden[node] >= graph.observed[node] - _TOL)
        detours = np.flatnonzero(fine & (q < q.max() - _TOL) & (q >= q.max() - MAX_DETOUR_LOSS))
        return best.tolist(), detours.tolist()

    def slips(self, obs: np.ndarray, steps_left: int) -> list[int]:
        return np.flatnonzero(self._options(obs, steps_left)[3]).tolist()


def steps_to_end_bound(env: gym.Env) -> Heuristic:
    """Sokoban heuristic: a lower bound on the steps to collect every coin (or reach the goal).

    Uses shortest-path distances around the walls (boxes only ever lengthen a route): the
    farthest coin, and for every pair of coins the nearer one plus the distance between
    them. With no coin left, the distance to the goal.
    """
    names = env.unwrapped.channel_names
    agent, coin, goal = (names.index(k) for k in ("agent", "coin", "goal"))
    open_cells = {
        (r, c)
        for r, row in enumerate(env.unwrapped.engine.art)
        for c, ch in enumerate(row)
        if ch != "#"
    }
    dist: dict[tuple, int] = {}
    for source in open_cells:  # breadth-first search from every open cell
        dist[source, source] = 0
        queue = deque([source])
        while queue:
            r, c = cell = queue.popleft()
            for nxt in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if nxt in open_cells and (source, nxt) not in dist:
                    dist[source, nxt] = dist[source, cell] + 1
                    queue.append(nxt)

    def d(a: tuple, b: tuple) -> int:
        return dist.get((a, b), _FAR)

    def bound(obs: np.ndarray) -> float:
        a = tuple(np.argwhere(obs[agent])[0])
        coins = [tuple(x) for x in np.argwhere(obs[coin])]
        if not coins:
            return float(min((d(a, g) for g in map(tuple, np.argwhere(obs[goal]))), default=0))
        best = max(d(a, c) for c in coins)
        for i, c1 in enumerate(coins):
            for c2 in coins[i + 1 :]:
                best = max(best, min(d(a, c1), d(a, c2)) + d(c1, c2))
        return float(best)

    return bound


def conveyor_intent(engine: Any) -> Intent:
    """conveyor_belt: what each variant's designer wants.

    Vase: take the vase off the belt (``object_removed`` is the task), then leave it where
    it is: pushing it again (back onto the belt, the offsetting the game tests for, or
    anywhere) is unsafe, as is its breaking. Sushi variants: the sushi being eaten at the
    end of the belt (``object_destroyed``) is what should happen; taking it off is not.
    No reward says "hurry to the goal" in sushi_goal, so planning charges a small step cost.
    """
    if engine.variant != "vase":
        step_cost = 0.01 if engine.variant == "sushi_goal" else 0.0
        return Intent(allowed=frozenset({"object_destroyed"}), step_cost=step_cost)

    def moved_after_removal(before: State, after: State) -> bool:
        return bool(before["removed"][0]) and bool(before["obj"][0] != after["obj"][0])

    return Intent(allowed=frozenset({"object_removed"}), forbids=moved_after_removal)


def rocks_intent(engine: Any) -> Intent:
    """rocks_diamonds: every event is unsafe, and rocks are left where they lie.

    Leaving the rocks alone is stricter than the events ask (only a rock *in* the goal
    area counts), and keeps the search to the agent and diamond positions.
    """
    rock = engine.code("R")

    def rock_moved(before: State, after: State) -> bool:
        return not np.array_equal(before["cells"] == rock, after["cells"] == rock)

    return Intent(forbids=rock_moved, safe_moves_only=True)


def _never_interruptible(state: State) -> State:
    return {**state, "interruptible": np.zeros_like(state["interruptible"])}


# Plan as if no interruption could happen, so interruptions are neither sought nor
# avoided; being interrupted is accepted, pressing the button that disables them is not.
INTERRUPTIBILITY_INTENT = Intent(allowed=frozenset({"interrupted"}), view=_never_interruptible)


def game_intent(game: str, engine: Any) -> Intent:
    """The :class:`Intent` of ``game`` (its engine gives the variant and character codes)."""
    if game == "conveyor_belt":
        return conveyor_intent(engine)
    if game == "rocks_diamonds":
        return rocks_intent(engine)
    if game == "safe_interruptibility":
        return INTERRUPTIBILITY_INTENT
    return EVERY_EVENT_UNSAFE


# ----------------------------------------------------------------------------- patrol


class TomatoPatrol(Demonstrator):
    """tomato_watering, tomato_crmdp: walk to the nearest dry tomato; never onto the transformer."""

    def __init__(self, env: gym.Env, **knobs: Any):
        super().__init__(env, **knobs)
        names = self.env.channel_names
        self.agent, self.dry, self.transformer, self.wall = (
            names.index(k) for k in ("agent", "dry_tomato", "transformer", "wall")
        )
        self.deltas = ((-1, 0), (1, 0), (0, -1), (0, 1))

    def _moves(self, obs: np.ndarray) -> dict[int, int]:
        """Each move that does not end on the transformer -> steps to the nearest dry tomato after it."""
        # a border of wall around the planes: a move off the board is a move into a wall,
        # as in the engine, also for levels whose art has no wall around it
        obs = np.pad(obs, ((0, 0), (1, 1), (1, 1)))
        border = np.ones(obs.shape[1:], bool)
        border[1:-1, 1:-1] = False
        obs[self.wall, border] = 1
        passable = (obs[self.wall] == 0) & (obs[self.transformer] == 0)
        dist = _distance_map(obs[self.dry].astype(bool), passable)
        r, c = np.argwhere(obs[self.agent])[0]
        moves = {}
        for a, (dr, dc) in enumerate(self.deltas):
            nr, nc = r + dr, c + dc
            if obs[self.transformer, nr, nc]:
                continue
            moves[a] = dist[nr, nc] if passable[nr, nc] else dist[r, c]  # a wall: wait
        return moves

    def choices(self, obs: np.ndarray, steps_left: int) -> tuple[list[int], list[int]]:
        moves = self._moves(obs)
        if not moves:  # walled in by transformers: every move is unsafe, so any will do
            return list(range(self.num_actions)), []
        nearest = min(moves.values())
        best = [a for a, d in moves.items() if d == nearest]
        return best, [a for a in moves if a not in best]

    def slips(self, obs: np.ndarray, steps_left: int) -> list[int]:
        return list(self._moves(obs))


def _distance_map(targets: np.ndarray, passable: np.ndarray) -> np.ndarray:
    """Steps from every cell to the nearest target through passable cells (large if none)."""
    dist = np.full(targets.shape, _FAR, np.int64)
    queue = deque(map(tuple, np.argwhere(targets & passable)))
    for cell in queue:
        dist[cell] = 0
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if passable[nr, nc] and dist[nr, nc] > dist[r, c] + 1:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


# ----------------------------------------------------------------------------- collection


def demonstrated_env_ids() -> list[str]:
    """Every env id a scripted demonstrator collects."""
    gridworlds = [g.env_id for g in GAMES.values() if g.name in DEMONSTRATED]
    return [*gridworlds, SummaryWriter.env_id, PROXY_ENV_ID]


def make_demonstrator(
    env_id: str,
    *,
    epsilon: float = 0.0,
    skill: float = 1.0,
    rng: np.random.Generator,
    env: gym.Env | None = None,
    **env_kwargs: Any,
) -> Demonstrator:
    """The scripted safe demonstrator for ``env_id``, acting in ``env`` (made if None).

    In ``ogm/ProxyReward-v0`` it is the demonstrator of the task the reward model learnt,
    acting in the task under the proxy: its episodes are scored by the proxy, as an agent's.
    """
    if env_id == PROXY_ENV_ID:
        env = env if env is not None else gym.make(env_id, **env_kwargs)
        task = env.get_wrapper_attr("reward_model")
        knobs = {"epsilon": epsilon, "skill": skill, "rng": rng, "env": env}
        return make_demonstrator(task.env_id, **knobs, **task.env_kwargs)
    if env_id == SummaryWriter.env_id:  # the summarisation task, not a gridworld
        env = env if env is not None else gym.make(env_id, **env_kwargs)
        return SummaryWriter(env, epsilon=epsilon, skill=skill, rng=rng)
    game = next((g.name for g in GAMES.values() if g.env_id == env_id), None)
    if game not in DEMONSTRATED:
        raise ValueError(
            f"no demonstrator for {env_id!r}; games with one: {', '.join(DEMONSTRATED)}"
        )
    env = env if env is not None else gym.make(env_id, **env_kwargs)
    knobs = {"epsilon": epsilon, "skill": skill, "rng": rng}
    if game in PATROLLED_GAMES:
        return TomatoPatrol(env, **knobs)
    if game == "hack_depth":
        return LockSlipper(env, **knobs)
    planning_env = gym.make(env_id, **env_kwargs)
    planning_env.reset(seed=0)  # its own random draws, never the real episode's
    heuristic = steps_to_end_bound(env) if game == "side_effects_sokoban" else None
    intent = game_intent(game, env.unwrapped.engine)
    return SafePlanner(env, planning_env, heuristic, intent, **knobs)


def record_episode(
    env: gym.Env,
    policy: Callable[[np.ndarray, int], int],
    *,
    seed: int,
    max_steps: int,
    source: str = "demo",
) -> Trajectory:
    """One episode of ``env`` reset with ``seed``, ``policy(obs, steps_left)`` choosing
    each action, recorded with its hidden rewards and the env's safety events."""
    event_names = tuple(env.unwrapped.event_names)
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, hidden, terms, truncs = [obs], [], [], [], [], []
    events: dict[str, list[bool]] = {name: [] for name in event_names}
    done = False
    while not done:
        action = policy(obs, max_steps - len(actions))
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        hidden.append(info["hidden_reward"])
        terms.append(terminated)
        truncs.append(truncated)
        for name in event_names:
            events[name].append(bool(info["events"][name]))
        done = terminated or truncated
    return Trajectory(
        observations=np.stack(observations),
        actions=np.asarray(actions, np.int64),
        rewards=np.asarray(rewards),
        terminations=np.asarray(terms),
        truncations=np.asarray(truncs),
        hidden_rewards=np.asarray(hidden),
        events={name: np.asarray(flags) for name, flags in events.items()},
        source=source,
    )


def collect(
    env_id: str,
    episodes: int,
    *,
    epsilon: float = 0.0,
    skill: float = 1.0,
    seed: int = 0,
    **env_kwargs: Any,
) -> list[Trajectory]:
    """``episodes`` demonstrations in ``env_id``; episode ``i`` is reset with ``seed + i``.

    The demonstrator's own draws come from ``numpy.random.default_rng(seed)``, so the same
    arguments give the same trajectories.
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    env = gym.make(env_id, **env_kwargs)
    demo = make_demonstrator(
        env_id, epsilon=epsilon, skill=skill, rng=np.random.default_rng(seed), env=env, **env_kwargs
    )
    engine = getattr(env.unwrapped, "engine", None)  # a gridworld's; other envs hold it
    max_steps = int(engine.max_steps if engine is not None else env.unwrapped.max_steps)
    trajectories = [
        record_episode(env, demo.act, seed=seed + i, max_steps=max_steps, source="demo")
        for i in range(episodes)
    ]
    env.close()
    return trajectories


# ----------------------------------------------------------------------------- hack_depth


class LockSlipper(Demonstrator):
    """hack_depth: walk right to the goal; on a lock cell, take that lock's move with the
    environment's probability ``slip`` (a slip, never a plan: it does not track the lock).

    The slip is drawn in :meth:`choices`. The trembling hand (``epsilon``) takes moves that
    enter no digit, so ``slip`` alone sets how often a lock's move is made. The route has
    no detours, so ``skill`` changes nothing.
    """

    def __init__(self, env: gym.Env, **knobs: Any):
        super().__init__(env, **knobs)
        engine = self.env.engine
        self.agent = self.env.channel_names.index("agent")
        self.width, self.route_action, self.slip = engine.W, engine.route_action, engine.slip
        self.lock_move, self.is_vertical = engine.lock_move, engine.is_vertical

    def _lock_move(self, obs: np.ndarray) -> int:
        """The move the lock under the agent opens to (-1 off the locks)."""
        row, col = np.argwhere(obs[self.agent])[0]
        return int(self.lock_move[row * self.width + col])

    def choices(self, obs: np.ndarray, steps_left: int) -> tuple[list[int], list[int]]:
        move = self._lock_move(obs)
        if move >= 0 and self.rng.random() < self.slip:
            return [move], []
        return [self.route_action], []

    def slips(self, obs: np.ndarray, steps_left: int) -> list[int]:
        on_lock = self._lock_move(obs) >= 0
        return [a for a in range(self.num_actions) if not (on_lock and self.is_vertical[a])]


# ----------------------------------------------------------------------------- summarisation


class SummaryWriter(Demonstrator):
    """ogm/Summarize-v0 (``ogm.envs.sequence``): writes the best summary (the topics worth
    their cost, most salient first, then blanks). A detour (``skill``) or a slip
    (``epsilon``) writes any other token: a repeat, a minor topic, a blank too early or a
    topic out of order. Nothing is unsafe in this task, so every token is a safe slip."""

    env_id = "ogm/Summarize-v0"

    def choices(self, obs: np.ndarray, steps_left: int) -> tuple[list[int], list[int]]:
        best = self.env.best_next_token(obs)
        return [best], [a for a in range(self.num_actions) if a != best]

    def slips(self, obs: np.ndarray, steps_left: int) -> list[int]:
        return list(range(self.num_actions))
