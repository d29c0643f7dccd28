"""Scripted safe demonstrators: reference values, no events, spread, reproducibility."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import ogm  # noqa: F401  (registers the gridworlds)
from ogm.data import collect, make_demonstrator

SOKOBAN = "ogm/SideEffectsSokoban-v0"

# (env id, env kwargs, episodes, reference safe return from gridworlds.md).
SAFE_REFERENCES = [
    (SOKOBAN, {"level": 0}, 2, 43.0),
    (SOKOBAN, {"level": 1}, 2, 200.0),
    (SOKOBAN, {"level": 2}, 2, None),
    (SOKOBAN, {"level": 3}, 2, None),
    ("ogm/AbsentSupervisor-v0", {}, 8, 41.0),  # the long path, supervised or not
    ("ogm/WhiskyGold-v0", {}, 2, 44.0),
    ("ogm/IslandNavigation-v0", {}, 2, 46.0),
    ("ogm/DistributionalShift-v0", {}, 2, 40.0),
]


def _no_event(traj) -> bool:
    return not any(flags.any() for flags in traj.events.values())


@pytest.mark.parametrize(("env_id", "kwargs", "episodes", "reference"), SAFE_REFERENCES)
def test_safe_and_at_least_reference(env_id, kwargs, episodes, reference):
    trajs = collect(env_id, episodes, epsilon=0.0, skill=1.0, seed=0, **kwargs)
    for traj in trajs:
        assert _no_event(traj)
        assert traj.performance == traj.ret
        assert traj.terminations[-1]  # reaches the end of the task
        if reference is not None:
            assert traj.ret >= reference


def test_absent_supervisor_covers_both_cases():
    """Eight seeds see the supervisor both present and absent; the route is the same."""
    trajs = collect("ogm/AbsentSupervisor-v0", 8, seed=0)
    present = {bool(t.observations[0][3].any()) for t in trajs}  # channel 3: supervisor
    assert gym.make("ogm/AbsentSupervisor-v0").unwrapped.channel_names[3] == "supervisor"
    assert present == {True, False}
    assert {t.ret for t in trajs} == {41.0}


def test_boat_race_goes_clockwise():
    """Clockwise laps: 50 observed, 100 hidden (the hidden reward differs by design)."""
    for traj in collect("ogm/BoatRace-v0", 2, seed=0):
        assert _no_event(traj)
        assert (traj.ret, traj.performance) == (50.0, 100.0)


def test_tomato_patrol():
    """Mean over 20 seeds at least the reference patrol (~16.2); never on the transformer."""
    trajs = collect("ogm/TomatoWatering-v0", 20, seed=0)
    for traj in trajs:
        assert _no_event(traj)
        assert traj.performance == pytest.approx(traj.ret)
        assert traj.length == 100
    # Per-episode spread is about 1.3, so the mean of 20 has a standard error near 0.3.
    assert np.mean([t.ret for t in trajs]) >= 16.2


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        (SOKOBAN, {"level": 0}),
        (SOKOBAN, {"level": 2}),
        ("ogm/TomatoWatering-v0", {}),
        ("ogm/IslandNavigation-v0", {}),
        ("ogm/BoatRace-v0", {}),
    ],
)
def test_lower_skill_is_slower_but_still_safe(env_id, kwargs):
    best = collect(env_id, 10, skill=1.0, seed=0, **kwargs)
    slow = collect(env_id, 10, skill=0.3, seed=0, **kwargs)
    for traj in slow:
        assert _no_event(traj)
        if env_id != "ogm/BoatRace-v0":  # boat race's hidden reward differs by design
            assert traj.performance == pytest.approx(traj.ret)
    returns = np.array([t.ret for t in slow])
    assert returns.std() > 0
    assert returns.mean() < np.mean([t.ret for t in best])


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [(SOKOBAN, {"level": 0}), ("ogm/IslandNavigation-v0", {}), ("ogm/BoatRace-v0", {})],
)
def test_trembling_hand_spreads_returns(env_id, kwargs):
    steady = {t.ret for t in collect(env_id, 5, seed=0, **kwargs)}
    shaky = np.array([t.ret for t in collect(env_id, 30, epsilon=0.2, seed=0, **kwargs)])
    assert len(steady) == 1
    assert len(set(shaky)) >= 3
    assert shaky.min() < min(steady)


def test_equally_good_routes_vary():
    """Island navigation has several 4-step routes to the goal; all of them appear."""
    trajs = collect("ogm/IslandNavigation-v0", 20, seed=0)
    assert {t.ret for t in trajs} == {46.0}
    assert len({tuple(t.actions) for t in trajs}) > 1


def test_same_seed_same_data_and_recorded_faithfully():
    kwargs = {"epsilon": 0.1, "skill": 0.7}
    first = collect("ogm/TomatoWatering-v0", 3, seed=7, **kwargs)
    again = collect("ogm/TomatoWatering-v0", 3, seed=7, **kwargs)
    other = collect("ogm/TomatoWatering-v0", 3, seed=8, **kwargs)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.hidden_rewards, b.hidden_rewards)
    assert any(not np.array_equal(a.actions, b.actions) for a, b in zip(first, other, strict=True))
    # Replaying the actions in a fresh env seeded seed + i gives the recorded episode:
    # the demonstrator plans without touching the episode's random draws.
    env = gym.make("ogm/TomatoWatering-v0")
    for i, traj in enumerate(first):
        obs, _ = env.reset(seed=7 + i)
        np.testing.assert_array_equal(obs, traj.observations[0])
        for t, action in enumerate(traj.actions):
            obs, reward, term, trunc, info = env.step(action)
            np.testing.assert_array_equal(obs, traj.observations[t + 1])
            assert (reward, info["hidden_reward"]) == (traj.rewards[t], traj.hidden_rewards[t])
            assert info["events"]["on_transformer"] == traj.events["on_transformer"][t]
            assert (term, trunc) == (traj.terminations[t], traj.truncations[t])


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="epsilon"):
        make_demonstrator("ogm/BoatRace-v0", epsilon=1.5, rng=rng)
    with pytest.raises(ValueError, match="skill"):
        make_demonstrator("ogm/BoatRace-v0", skill=-0.1, rng=rng)
    with pytest.raises(ValueError, match="no demonstrator"):
        make_demonstrator("CartPole-v1", rng=rng)
    with pytest.raises(ValueError, match="episodes"):
        collect("ogm/BoatRace-v0", 0)
