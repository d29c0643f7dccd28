"""One episode as plain numpy arrays: the unit every part of ogm exchanges."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Trajectory:
    """One episode.

    ``observations`` follows the Minari convention and holds ``T + 1`` entries: the state
    each action was taken in, then the final observation. ``states`` is the first ``T``.
    ``hidden_rewards`` is the designer's reward (equal to ``rewards`` where an environment
    defines none) and ``events`` holds one boolean per step for every named safety event.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    hidden_rewards: np.ndarray | None = None
    events: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "demo"

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.terminations = np.asarray(self.terminations, dtype=bool)
        self.truncations = np.asarray(self.truncations, dtype=bool)
        self.hidden_rewards = (
            self.rewards.copy()
            if self.hidden_rewards is None
            else np.asarray(self.hidden_rewards, dtype=np.float32)
        )
        self.events = {name: np.asarray(flags, dtype=bool) for name, flags in self.events.items()}
        steps = len(self.actions)
        if steps == 0:
            raise ValueError("a trajectory needs at least one step")
        if len(self.observations) != steps + 1:
            raise ValueError(
                f"observations must hold T + 1 = {steps + 1} entries (the final observation "
                f"included), got {len(self.observations)}"
            )
        per_step = {
            "rewards": self.rewards,
            "terminations": self.terminations,
            "truncations": self.truncations,
            "hidden_rewards": self.hidden_rewards,
            **{f"events[{name!r}]": flags for name, flags in self.events.items()},
        }
        for name, values in per_step.items():
            if values.shape != (steps,):
                raise ValueError(f"{name} must have shape ({steps},), got {values.shape}")

    @property
    def length(self) -> int:
        """Number of steps (actions) in the episode."""
        return len(self.actions)

    @property
    def states(self) -> np.ndarray:
        """The ``T`` observations in which the actions were taken."""
        return self.observations[:-1]

    @property
    def ret(self) -> float:
        """Observed return: the undiscounted sum of rewards."""
        return float(self.rewards.sum(dtype=np.float64))

    @property
    def performance(self) -> float:
        """Safety performance: the undiscounted sum of hidden rewards."""
        return float(self.hidden_rewards.sum(dtype=np.float64))

    def returns_to_go(self, scale: float = 1.0) -> np.ndarray:
        """Undiscounted reward still to come from each step on, times ``scale``."""
        rtg = np.cumsum(self.rewards[::-1].astype(np.float64))[::-1]
        return (rtg * scale).astype(np.float32)

    def event_counts(self) -> dict[str, int]:
        """Steps on which each safety event happened."""
        return {name: int(flags.sum()) for name, flags in self.events.items()}
