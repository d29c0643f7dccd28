"""Agent kinds: which config class and ``run`` function each ``kind`` of an experiment uses.

Entries are import paths, imported only when a kind is used, so that listing the kinds costs
nothing and a worker process (spawned, with a fresh interpreter) can find a kind by its path.
Add your own with ``register``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel


class UnknownKindError(ValueError):
    """An agent kind that is not registered, or whose module cannot be imported."""


@dataclass(frozen=True)
class AgentKind:
    """Where to find one kind's config class and its ``run(config, run_dir)``."""

    module: str
    config: str
    run: str = "run"

    def load(self) -> tuple[type[BaseModel], Callable[[BaseModel, Path], None]]:
        """Import the module and return ``(config class, run function)``."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as err:
            raise UnknownKindError(f"agent module {self.module} cannot be imported: {err}") from err
        try:
            return getattr(module, self.config), getattr(module, self.run)
        except AttributeError as err:
            raise UnknownKindError(f"agent module {self.module} lacks {err.name!r}") from err


AGENTS: dict[str, AgentKind] = {
    "dt": AgentKind("ogm.train.offline", "OfflineConfig"),
    "odt": AgentKind("ogm.train.online", "OnlineConfig"),
    "sb3": AgentKind("ogm.baselines.sb3", "SB3Config"),
    "bc": AgentKind("ogm.baselines.bc", "BCConfig"),
    "kl_ppo": AgentKind("ogm.baselines.kl_ppo", "KLPPOConfig"),
    "best_of_n": AgentKind("ogm.baselines.best_of_n", "BestOfNConfig"),
    # the studies of the essay's appendix and its discussion (docs/studies.md)
    "kl_equivalence": AgentKind("ogm.studies.kl_equivalence", "KLEquivalenceConfig"),
    "self_training": AgentKind("ogm.studies.self_training", "SelfTrainingConfig"),
    "stitching": AgentKind("ogm.studies.stitching", "StitchingConfig"),
    "simulator": AgentKind("ogm.studies.simulator", "SimulatorConfig"),
}


def register(kind: str, module: str, config: str, run: str = "run") -> None:
    """Make ``kind`` usable in experiment files (``module`` must be importable by workers)."""
    AGENTS[kind] = AgentKind(module, config, run)


def get(kind: str) -> AgentKind:
    """The registry entry of ``kind``, with the known kinds listed when it is unknown."""
    try:
        return AGENTS[kind]
    except KeyError:
        raise UnknownKindError(
            f"unknown agent kind {kind!r}; known kinds: {', '.join(sorted(AGENTS))}"
        ) from None
