"""Replay buffer: initial fill by return, FIFO order and capacity, array round trip."""

from __future__ import annotations

import numpy as np
import pytest

from ogm.data.trajectory import Trajectory
from ogm.train.replay import ReplayBuffer


def make_traj(ret: float, length: int = 3, source: str = "demo", tag: int = 0) -> Trajectory:
    """A tiny trajectory whose return is ``ret`` and whose observations carry ``tag``."""
    rewards = np.zeros(length, np.float32)
    rewards[-1] = ret
    return Trajectory(
        observations=np.full((length + 1, 2, 3, 3), tag, np.uint8),
        actions=np.arange(length, dtype=np.int64) % 4,
        rewards=rewards,
        hidden_rewards=rewards * 0.5,
        terminations=np.zeros(length, bool),
        truncations=np.eye(1, length, length - 1, dtype=bool)[0],
        events={"on_o": np.arange(length) % 2 == 0},
        source=source,
    )


def test_initial_fill_keeps_every_trajectory_when_they_fit():
    demos = [make_traj(r) for r in (3.0, 1.0, 2.0, 5.0)]
    buffer = ReplayBuffer(4, demos)
    assert len(buffer) == 4
    assert [t.ret for t in buffer.trajectories] == [1.0, 2.0, 3.0, 5.0]


def test_initial_fill_keeps_the_best_by_return_when_over_capacity():
    demos = [make_traj(r) for r in (3.0, 1.0, 2.0, 5.0, 4.0)]
    buffer = ReplayBuffer(3, demos)
    assert [t.ret for t in buffer.trajectories] == [3.0, 4.0, 5.0]


def test_fifo_evicts_the_oldest_and_holds_capacity():
    buffer = ReplayBuffer(4, [make_traj(r) for r in (1.0, 2.0, 3.0)])
    buffer.add([make_traj(10.0, source="online")])
    assert [t.ret for t in buffer.trajectories] == [1.0, 2.0, 3.0, 10.0]
    buffer.add([make_traj(11.0, source="online"), make_traj(12.0, source="online")])
    assert [t.ret for t in buffer.trajectories] == [3.0, 10.0, 11.0, 12.0]
    assert buffer.composition() == {"demo": 1, "online": 3}
    # A batch larger than the capacity keeps only its newest trajectories.
    buffer.add([make_traj(float(r), source="online") for r in range(20, 26)])
    assert [t.ret for t in buffer.trajectories] == [22.0, 23.0, 24.0, 25.0]
    assert buffer.composition() == {"demo": 0, "online": 4}


def test_array_round_trip_is_exact():
    trajs = [
        make_traj(float(i), length=i + 1, tag=i, source=("demo", "online")[i % 2]) for i in range(5)
    ]
    buffer = ReplayBuffer(6)
    buffer.add(trajs)
    arrays = buffer.to_arrays()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    restored = ReplayBuffer.from_arrays(arrays)
    assert restored.capacity == 6
    assert len(restored) == len(trajs)
    for a, b in zip(restored.trajectories, trajs, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        np.testing.assert_array_equal(a.hidden_rewards, b.hidden_rewards)
        np.testing.assert_array_equal(a.truncations, b.truncations)
        np.testing.assert_array_equal(a.events["on_o"], b.events["on_o"])
        assert a.source == b.source


def test_empty_buffer_round_trips_and_bad_capacity_is_refused():
    assert len(ReplayBuffer.from_arrays(ReplayBuffer(3).to_arrays())) == 0
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)


def test_from_source_splits_the_contents_in_order():
    buffer = ReplayBuffer(5, [make_traj(r) for r in (1.0, 2.0)])
    buffer.add([make_traj(r, source="online") for r in (10.0, 11.0)])
    buffer.add([make_traj(12.0, source="online"), make_traj(13.0, source="online")])
    assert [t.ret for t in buffer.from_source("demo")] == [2.0]  # 1.0 was evicted first
    assert [t.ret for t in buffer.from_source("online")] == [10.0, 11.0, 12.0, 13.0]
    assert buffer.from_source("elsewhere") == []
