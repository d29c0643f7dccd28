"""ogm.agents: ways to ask for reward (conditioning strategies) and batched DT acting."""

from ogm.agents.actor import DTActor, EpisodeResult, rollout
from ogm.agents.conditioning import STRATEGIES, ConditioningStrategy, make_strategy

__all__ = [
    "STRATEGIES",
    "ConditioningStrategy",
    "DTActor",
    "EpisodeResult",
    "make_strategy",
    "rollout",
]
