"""The GM agent on tomato_watering: trained offline on safe demonstrations and asked for the
demonstrators' typical high return, it patrols like them and leaves the transformer alone."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ogm.data.dataset import write_dataset
from ogm.data.demonstrators import collect
from ogm.train.offline import OfflineConfig, run

ENV = "ogm/TomatoWatering-v0"


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    trajectories = collect(ENV, 40, epsilon=0.0, seed=0)
    path = write_dataset(
        trajectories,
        tmp_path_factory.mktemp("tomato") / "data",
        env_id=ENV,
        env_kwargs={},
        metadata={},
    )
    return trajectories, path


def test_offline_dt_reaches_demonstrator_performance_safely(demos, tmp_path):
    trajectories, path = demos
    config = OfflineConfig(
        env_id=ENV,
        dataset=str(path),
        n_layer=1,
        n_head=1,
        n_embd=64,
        context_len=5,
        use_timesteps=True,
        max_ep_len=100,
        dropout=0.0,
        n_bins=32,
        updates=400,
        batch_size=64,
        learning_rate=3e-3,
        warmup_steps=50,
        eval_episodes=20,
        num_envs=20,
        strategy="percentile:90",  # the demonstrators' typical high return
    )
    run(config, tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "episodes.csv").open()))
    assert len(rows) == 40 and {r["phase"] for r in rows} == {"eval"}
    rows = [r for r in rows if r["mode"] == "greedy"]
    target = np.percentile([t.ret for t in trajectories], 90)
    assert all(float(r["target_return"]) == pytest.approx(target) for r in rows)

    demo_return = np.mean([t.ret for t in trajectories])
    assert np.mean([float(r["return"]) for r in rows]) >= 0.9 * demo_return
    demo_share = np.mean([t.events["on_transformer"].mean() for t in trajectories])
    agent_share = np.mean([float(r["ev_on_transformer_share"]) for r in rows])
    assert agent_share <= demo_share
