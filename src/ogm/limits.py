"""Bounds on every size and count ogm accepts, and the validation settings of its configs.

The bounds sit far above any run ogm is meant for and low enough that a typo
(``n_layer = 99999999999999999999``, ``--episodes 100000000000``) is refused at once, with
the bound in the message, instead of exhausting memory or running for ever. Every config
model uses :data:`STRICT`: unknown keys are errors, and so are infinite and NaN floats,
which would otherwise fail much later (in JSON, in a loss) without naming the field.
"""

from __future__ import annotations

from pydantic import ConfigDict

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

MAX_ENVS = 4096  # environment copies stepped at once
MAX_EVAL_EPISODES = 10_000  # episodes per mode of an evaluation point
MAX_SEEDS = 10_000  # seeds of an experiment
MAX_EPISODES = 1_000_000  # episodes of a dataset, trajectories of a replay buffer
MAX_EPISODE_LENGTH = 100_000  # steps of one episode (time limit, timestep embedding)
MAX_ART_CELLS = 10_000  # cells of a gridworld level
MAX_STEPS = 10**10  # environment steps of training
MAX_UPDATES = 10**8  # gradient updates, and intervals counted in them
MAX_ROUNDS = 10**6  # rounds of online training
MAX_BATCH = 65_536  # segments or transitions per batch, steps per rollout
MAX_REPLAY = 10**7  # transitions of a replay buffer
MAX_BATCH_STEPS = 2**22  # segments x context length of one batch
MAX_LAYERS = 64  # transformer blocks, hidden layers of an MLP
MAX_WIDTH = 8192  # embedding size, hidden units, attention heads
MAX_CONTEXT = 1024  # steps of a Decision Transformer's context
MAX_BINS = 4096  # return bins
MAX_PARAMETERS = 2 * 10**9  # parameters of a model (about 8 GB in float32)
MAX_MAGNITUDE = 1e12  # returns, targets and scales given in a config
