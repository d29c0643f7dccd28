"""ogm.agents: ways to ask for reward (conditioning strategies) and batched DT acting."""

from ogm.agents.actor import ConditionedDT, DTActor, EpisodeResult, rollout
from ogm.agents.conditioning import STRATEGIES, ConditioningStrategy, make_strategy

__all__ = [
    "STRATEGIES",
    "ConditionedDT",
    "ConditioningStrategy",
    "DTActor",
    "EpisodeResult",
    "make_strategy",
    "rollout",
]
