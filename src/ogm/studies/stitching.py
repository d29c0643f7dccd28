"""Study ``stitching``: can imitation beat its demonstrators?

Gwern's comment in the discussion of "Safety considerations for online generative
modeling": an imitator can exceed its experts, by executing their policy without their
trembling hands, and by stitching together experts with different strengths ("good at the
opening but fails in the endgame and vice versa"). This study builds that dataset and asks
whether the GM agent beats the best demonstrator, and by how much.

The task: a gridworld of two rooms joined by a door (the experiment's level, an
``ogm/IslandNavigation-v0`` art: -1 per step, +50 at the goal; ``split_column`` is the
wall between the rooms). Two scripted demonstrators each know the way in one room only:
there they take a shortest step towards the goal; in the other room they take a detour,
a shortest step in ``detour_art`` (the level with extra walls that only they believe
in). Both have a trembling hand (a random action with probability ``epsilon``). Half of
the ``episodes`` demonstrations come from each. With the built-in level the left
expert's detour costs 4 steps and the right expert's 6: the left expert is the best
demonstrator (return 30 without trembles; the shortest route earns 34).

Compared on the same held-out evaluation starts (``ogm.train.evaluation``: greedy and
sampled actions): each demonstrator (it acts the same in both modes), BC on all the
demonstrations, filtered BC (the top ``top_fraction`` by return, ``ogm.baselines.bc``),
and the GM agent (a Decision Transformer trained on all of them) asked for each target of
``strategies`` (``percentile:100`` = the best return in the data; ``optimum`` = the
shortest route's return). ``optimal_share`` (episodes that took a shortest route) tells
whether an agent joined the two experts' good rooms. A few demonstrations take a shortest
route by the luck of a tremble; an agent could copy those instead of stitching (filtered
BC selects them), so ``exclude_optimal`` drops them: then no demonstration shows the
optimum, and an agent that reaches it has stitched.

The DT has context 1 and no timestep embedding: the position is the state, and a longer
context or the clock would tell the model which demonstrator it is imitating (the right
expert reaches the door later), which is what stitching must ignore.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from ogm.agents.actor import ConditionedDT, EpisodeResult
from ogm.agents.conditioning import check_spec, make_strategy
from ogm.baselines.bc import bc_loss, filter_top, training_arrays
from ogm.baselines.common import MLPPolicy
from ogm.data.trajectory import Trajectory
from ogm.studies.common import Row, dt_section, fit_dt, offline_config, study_run, write_table
from ogm.train import evaluation
from ogm.train.config import CommonConfig
from ogm.train.segments import observation_stats

RESULTS = "stitching.csv"
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right (the action ids)
FAR = 10**9  # distance of a cell the goal cannot be reached from (walls)

DT_DEFAULTS = {
    "context_len": 1,  # the position is the state (module doc)
    "use_timesteps": False,
    "n_layer": 2,
    "n_head": 1,
    "n_embd": 64,
    "dropout": 0.0,
    "n_bins": 64,
    "updates": 1500,
    "batch_size": 128,
    "learning_rate": 3e-3,
    "warmup_steps": 100,
    "fidelity_targets": 0,
}
DTSection = dt_section(DT_DEFAULTS)


class StitchingConfig(CommonConfig):
    """The GM agent against demonstrators that are each good on one half of the task."""

    kind: Literal["stitching"] = "stitching"
    split_column: int = Field(6, gt=0)  # columns left of it are the left room
    detour_art: list[str]  # the level with the walls a demonstrator believes in its weak room
    episodes: int = Field(1000, gt=1)  # demonstrations, half from each demonstrator
    # Drop the demonstrations that took a shortest route (lucky trembles): then no
    # demonstration shows the optimum, and only stitching can reach it
    exclude_optimal: bool = False
    epsilon: float = Field(0.1, ge=0.0, le=1.0)  # trembling hand
    strategies: list[str] = Field(
        default_factory=lambda: ["percentile:50", "percentile:100", "optimum"]
    )
    top_fraction: float = Field(0.1, gt=0.0, le=1.0)  # filtered BC
    bc_updates: int = Field(2000, gt=0)
    dt: DTSection  # the GM agent: DT_DEFAULTS, then the config's values

    @field_validator("strategies")
    @classmethod
    def _known(cls, specs: list[str]) -> list[str]:
        return [spec if spec == "optimum" else check_spec(spec) for spec in specs]

    @model_validator(mode="after")
    def _two_levels(self) -> StitchingConfig:
        art = self.env_kwargs.get("art")
        if not isinstance(art, list) or [len(r) for r in art] != [len(r) for r in self.detour_art]:
            raise ValueError(
                "stitching needs the level as env_kwargs.art (a list of rows) and a "
                "detour_art of the same shape"
            )
        return self


# ----------------------------------------------------------------------------- the level


def walls(art: list[str]) -> np.ndarray:
    return np.array([[ch == "#" for ch in row] for row in art])


def goal_distances(art: list[str]) -> np.ndarray:
    """Steps from every cell of ``art`` to its goal ``G`` (breadth first; FAR for walls)."""
    wall = walls(art)
    dist = np.full(wall.shape, FAR)
    queue = deque(map(tuple, np.argwhere(np.array([list(row) for row in art]) == "G")))
    for cell in queue:
        dist[cell] = 0
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            n = (r + dr, c + dc)
            if not wall[n] and dist[n] > dist[r, c] + 1:
                dist[n] = dist[r, c] + 1
                queue.append(n)
    return dist


class HalfExpert:
    """A scripted demonstrator that knows the way in one room only (module doc).

    Acts in N copies at once (``act(obs (N, C, H, W), deterministic)``, the interface of
    ``ogm.train.evaluation.StatelessAgent``); ``deterministic`` is ignored: a demonstrator
    acts as it acts.
    """

    def __init__(
        self,
        room: Literal["left", "right"],
        config: StitchingConfig,
        agent_channel: int,
        rng: np.random.Generator,
    ) -> None:
        self.room, self.agent_channel, self.rng = room, agent_channel, rng
        self.split, self.epsilon = config.split_column, config.epsilon
        self.true = goal_distances(config.env_kwargs["art"])
        self.detour = goal_distances(config.detour_art)

    def act_one(self, obs: np.ndarray) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(len(MOVES)))
        r, c = np.argwhere(obs[self.agent_channel])[0]
        knows = (c < self.split) == (self.room == "left")
        dist = self.true if knows else self.detour
        after = [min(dist[r + dr, c + dc], dist[r, c]) for dr, dc in MOVES]  # a wall: stay
        return int(self.rng.choice([a for a, d in enumerate(after) if d == min(after)]))

    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return np.array([self.act_one(o) for o in obs])


def collect(
    config: StitchingConfig, demonstrator: HalfExpert, episodes: int, first_seed: int
) -> list[Trajectory]:
    """``episodes`` episodes of a demonstrator, in waves of ``num_envs`` copies."""
    agent = evaluation.StatelessAgent(demonstrator.act)
    out: list[Trajectory] = []
    while len(out) < episodes:
        seeds = range(first_seed + len(out), first_seed + min(episodes, len(out) + config.num_envs))
        results = evaluation.first_episodes(agent, config, list(seeds), deterministic=False)
        out += [r.trajectory for r in results]
    return out


# ----------------------------------------------------------------------------- agents


def train_bc(
    config: StitchingConfig, trajectories: list[Trajectory], action_space: gym.Space
) -> MLPPolicy:
    """Behaviour cloning as ``ogm.baselines.bc`` does it (same policy, loss, optimiser)."""
    torch.manual_seed(config.seed)
    policy = MLPPolicy(trajectories[0].states.shape[1:], action_space)
    policy.net.set_obs_normalizer(*observation_stats(trajectories))
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    states, actions = training_arrays(trajectories)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.bc_updates):
        index = torch.randint(len(states), (256,), generator=generator)
        loss = bc_loss(policy, states[index], actions[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return policy.eval()


def mlp_agent(policy: MLPPolicy) -> evaluation.StatelessAgent:
    @torch.no_grad()
    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return policy.act(torch.as_tensor(obs), deterministic).numpy()

    return evaluation.StatelessAgent(act)


def summarise(agent: str, mode: str, results: list[EpisodeResult], shortest: int) -> Row:
    """Mean return (and its spread) of one agent's evaluation episodes in one mode."""
    returns = np.array([r.trajectory.ret for r in results])
    lengths = np.array([r.trajectory.length for r in results])
    goal = np.array([bool(r.trajectory.terminations[-1]) for r in results])
    return {
        "agent": agent,
        "mode": mode,
        "episodes": len(results),
        "return": float(returns.mean()),
        "return_std": float(returns.std()),
        "goal_share": float(goal.mean()),
        "optimal_share": float(np.mean(goal & (lengths == shortest))),
        "target": float(np.mean([r.target_return for r in results])),
    }


def run(config: StitchingConfig, run_dir: Path) -> None:
    """Collect the demonstrations, train BC, filtered BC and the GM agent, evaluate all."""
    with study_run(run_dir, "stitching", config) as run:
        env = gym.make(config.env_id, **config.env_kwargs)
        agent_channel, action_space = env.unwrapped.channel_names.index("agent"), env.action_space
        env.close()
        art = np.array([list(row) for row in config.env_kwargs["art"]])
        shortest = int(goal_distances(config.env_kwargs["art"])[tuple(np.argwhere(art == "A")[0])])
        optimum = 50.0 - shortest  # -1 per step, +50 on the goal step
        rng = np.random.default_rng([config.seed, 0])
        experts = {room: HalfExpert(room, config, agent_channel, rng) for room in ("left", "right")}
        half = config.episodes // 2
        demos = {
            room: collect(config, expert, half, config.seed * 10**6 + i * half)
            for i, (room, expert) in enumerate(experts.items())
        }
        collected = demos["left"] + demos["right"]
        lucky = [bool(t.terminations[-1]) and t.length == shortest for t in collected]
        data = [t for t, optimal in zip(collected, lucky, strict=True) if not optimal]
        data = data if config.exclude_optimal else collected

        agents: dict[str, evaluation.Agent] = {
            f"demonstrator_{room}": evaluation.StatelessAgent(expert.act)
            for room, expert in experts.items()
        }
        agents["bc"] = mlp_agent(train_bc(config, data, action_space))
        best = filter_top(data, config.top_fraction)
        agents["filtered_bc"] = mlp_agent(train_bc(config, best, action_space))
        model = fit_dt(offline_config(config, config.dt), data, action_space)
        for spec in config.strategies:
            strategy = make_strategy(f"fixed:{optimum}" if spec == "optimum" else spec)
            strategy.observe([t.ret for t in data])
            agents[f"dt_{spec}"] = ConditionedDT(model, strategy)

        rows = [  # the demonstrations as collected (before exclude_optimal)
            {
                "agent": "data",
                "mode": "sampled",
                "episodes": len(collected),
                "return": float(np.mean([t.ret for t in collected])),
                "return_std": float(np.std([t.ret for t in collected])),
                "goal_share": float(np.mean([t.terminations[-1] for t in collected])),
                "optimal_share": float(np.mean(lucky)),
                "target": float("nan"),
            }
        ]
        for name, agent in agents.items():
            for mode, results in evaluation.evaluate(agent, config).items():
                if not (name.startswith("demonstrator") and mode == "greedy"):  # same as sampled
                    rows.append(summarise(name, mode, results, shortest))
        write_table(run.path / RESULTS, rows)
        run.set_status(
            "running",
            optimum=optimum,
            best_in_data=max(t.ret for t in data),
            demonstrations=len(data),
            kept_by_filtered_bc=len(best),
        )
