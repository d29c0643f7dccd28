"""Trajectory replay buffer of the online phase (ODT): whole episodes, FIFO, fixed capacity.

In ODT the buffer starts with the best offline trajectories by return and then receives
every online episode; when full, the oldest trajectory leaves first. Initial trajectories
are stored from lowest to highest return, so the weakest demonstrations are the first to go
(as in the reference). Unlike the reference, every offline trajectory is kept when they
all fit. The online trainer fills it so only with ``demo_fraction = None`` (ODT as
published); with a set ``demo_fraction`` it starts empty and holds online episodes alone,
since demonstrations then reach a batch by their own draw. Every trajectory keeps its
``source`` tag (``demo`` or ``online``), so :meth:`ReplayBuffer.from_source` can split the
contents and a batch's real share of demonstrations can be known.

Returns-to-go are never stored: they are always computed from the rewards a trajectory
actually received (``Trajectory.returns_to_go``), which is ODT's hindsight relabelling.

The contents round-trip through plain numpy arrays (``to_arrays`` / ``from_arrays``) so a
checkpoint can hold the buffer without pickle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ogm.data.trajectory import Trajectory

SOURCES = ("demo", "online")  # always reported by ``composition``, even when absent
_EVENT_PREFIX = "event/"


class ReplayBuffer:
    """Up to ``capacity`` trajectories, oldest first."""

    def __init__(self, capacity: int, initial: Sequence[Trajectory] = ()) -> None:
        if capacity <= 0:
            raise ValueError(f"replay buffer capacity must be positive, got {capacity}")
        self.capacity = capacity
        best = sorted(initial, key=lambda traj: traj.ret)[-capacity:]
        self._trajectories: list[Trajectory] = list(best)

    def __len__(self) -> int:
        return len(self._trajectories)

    @property
    def trajectories(self) -> list[Trajectory]:
        """The stored trajectories, oldest first (a copy of the list, not of the arrays)."""
        return list(self._trajectories)

    def add(self, trajectories: Iterable[Trajectory]) -> None:
        """Append ``trajectories`` in order, evicting the oldest beyond capacity."""
        self._trajectories.extend(trajectories)
        del self._trajectories[: max(0, len(self._trajectories) - self.capacity)]

    def from_source(self, source: str) -> list[Trajectory]:
        """The stored trajectories whose ``source`` is ``source``, oldest first."""
        return [traj for traj in self._trajectories if traj.source == source]

    def composition(self) -> dict[str, int]:
        """How many stored trajectories come from each source (``demo``, ``online``)."""
        counts = Counter(traj.source for traj in self._trajectories)
        return {**dict.fromkeys(SOURCES, 0), **counts}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The contents as flat arrays (per-step arrays concatenated, plus lengths)."""
        trajs = self._trajectories
        if not trajs:
            return {"capacity": np.array(self.capacity), "lengths": np.zeros(0, np.int64)}
        arrays = {
            "capacity": np.array(self.capacity),
            "lengths": np.array([t.length for t in trajs], np.int64),
            "sources": np.array([t.source for t in trajs], dtype=np.str_),
            "observations": np.concatenate([t.observations for t in trajs]),
            "actions": np.concatenate([t.actions for t in trajs]),
            "rewards": np.concatenate([t.rewards for t in trajs]),
            "hidden_rewards": np.concatenate([t.hidden_rewards for t in trajs]),
            "terminations": np.concatenate([t.terminations for t in trajs]),
            "truncations": np.concatenate([t.truncations for t in trajs]),
        }
        for name in trajs[0].events:
            arrays[_EVENT_PREFIX + name] = np.concatenate([t.events[name] for t in trajs])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ReplayBuffer:
        """Rebuild a buffer saved by ``to_arrays`` (same order, same contents)."""
        missing = {"capacity", "lengths"} - arrays.keys()
        if missing:
            raise ValueError(f"replay buffer arrays lack {sorted(missing)}")
        buffer = cls(int(arrays["capacity"]))
        lengths = np.asarray(arrays["lengths"], np.int64)
        if len(lengths) > buffer.capacity:
            raise ValueError(f"replay buffer arrays hold {len(lengths)} > capacity trajectories")
        if len(lengths) == 0:
            return buffer
        step_ends = np.cumsum(lengths)
        step_starts = step_ends - lengths
        obs_starts = step_starts + np.arange(len(lengths))  # T + 1 observations each
        events = {
            key[len(_EVENT_PREFIX) :]: arrays[key]
            for key in arrays
            if key.startswith(_EVENT_PREFIX)
        }
        for i, (s0, s1, o0) in enumerate(zip(step_starts, step_ends, obs_starts, strict=True)):
            steps = slice(s0, s1)
            buffer._trajectories.append(
                Trajectory(
                    observations=arrays["observations"][o0 : o0 + lengths[i] + 1],
                    actions=arrays["actions"][steps],
                    rewards=arrays["rewards"][steps],
                    hidden_rewards=arrays["hidden_rewards"][steps],
                    terminations=arrays["terminations"][steps],
                    truncations=arrays["truncations"][steps],
                    events={name: flags[steps] for name, flags in events.items()},
                    source=str(arrays["sources"][i]),
                )
            )
        return buffer
