"""OGM with feedback: the proxy reward model learns from gold labels of the agent's own
episodes during online training (``online.feedback``, ogm.train.feedback)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ogm.data import collect, write_dataset
from ogm.data.dataset import load_trajectories
from ogm.envs.reward_model import proxy_reward_model, trajectory_features
from ogm.envs.sequence import ENV_ID as SUMMARIZE
from ogm.envs.sequence import PROXY_ENV_ID
from ogm.train.feedback import Feedback, FeedbackSection
from ogm.train.online import OnlineConfig, run
from ogm.train.replay import ReplayBuffer
from ogm.train.rundir import RunDir

WORLD = {"task": SUMMARIZE, "pairs": 30, "rm_seed": 0, "rm_steps": 200}
FEEDBACK = {"label_budget": 20, "labels_per_round": 8, "rm_steps": 20}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("OGM_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def dataset(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    demos = collect(PROXY_ENV_ID, 24, epsilon=0.2, skill=0.5, seed=0, **WORLD)
    out = tmp_path_factory.mktemp("data") / "summaries"
    return str(write_dataset(demos, out, env_id=PROXY_ENV_ID, env_kwargs=WORLD))


def config(dataset: str, **online) -> OnlineConfig:
    return OnlineConfig(
        env_id=PROXY_ENV_ID,
        env_kwargs=WORLD,
        dataset=dataset,
        num_envs=4,
        eval_episodes=4,
        eval_every=64,
        device="cpu",
        offline={
            "n_layer": 1,
            "n_embd": 16,
            "context_len": 8,
            "n_bins": 16,
            "return_range": [-20.0, 20.0],
            "updates": 10,
            "batch_size": 8,
            "warmup_steps": 2,
            "checkpoint_every": 10,
            "fidelity_targets": 0,
        },
        online={
            "rounds": 4,
            "episodes_per_round": 8,
            "updates_per_round": 4,
            "batch_size": 8,
            "probe_segments": 8,
            "demo_fraction": 0.5,
            "checkpoint_every": 1,
            "feedback": FEEDBACK,
            **online,
        },
    )


def test_feedback_needs_a_proxy_reward_world(dataset):
    with pytest.raises(ValueError, match=r"online\.feedback retrains a proxy reward model"):
        OnlineConfig(env_id="ogm/TomatoWatering-v0", online={"feedback": FEEDBACK})
    with pytest.raises(ValueError, match="label_budget"):
        config(dataset, feedback={"labels_per_round": 8})


def test_the_proxy_learns_the_labels_of_the_agents_episodes(dataset, tmp_path):
    """Labels arrive labels_per_round a round until the budget is spent, the proxy moves
    away from the frozen one only while they do, and every episode the agent learns from is
    scored by the final proxy."""
    run(config(dataset), tmp_path)
    with (tmp_path / "rounds.csv").open() as handle:
        rounds = list(csv.DictReader(handle))
    assert [r["feedback_labels"] for r in rounds] == ["nan", "8.0", "16.0", "20.0", "20.0"]
    losses = [r["rm_loss"] for r in rounds[1:]]
    assert all(math.isfinite(float(v)) for v in losses[:3]) and losses[3] == "nan"
    agreement = [float(r["rm_agreement_new"]) for r in rounds[1:4]]
    assert all(0.0 <= a <= 1.0 for a in agreement)

    checkpoint = RunDir.open(tmp_path).resume()
    frozen = proxy_reward_model(WORLD)
    learned = {
        k[len("reward_model.") :]: v
        for k, v in checkpoint.tensors.items()
        if k.startswith("reward_model.")
    }
    assert not torch.equal(learned["net.0.weight"], frozen.state_dict()["net.0.weight"])
    assert len(checkpoint.arrays["feedback.y"]) == 20
    frozen.load_state_dict(learned)
    buffer = ReplayBuffer.from_arrays(
        {k[7:]: v for k, v in checkpoint.arrays.items() if k.startswith("buffer.")}
    ).trajectories
    scores = frozen.score(trajectory_features(buffer, frozen.features))
    np.testing.assert_allclose([t.ret for t in buffer], scores, rtol=1e-5, atol=1e-5)


def test_labels_follow_the_gold_and_a_spent_budget_stops_learning(cache, dataset):
    """The labeller of a noise-free world prefers the higher gold; each label trains the
    model and counts against the budget."""
    demos = load_trajectories(dataset)[:8]
    feedback = Feedback(
        FeedbackSection(label_budget=10, labels_per_round=6), PROXY_ENV_ID, WORLD, 0
    )
    assert len(feedback.first[2]) == WORLD["pairs"]  # the comparisons it was trained on
    before = feedback.score(demos)
    out = feedback.learn(demos, round_=1)
    a, b, y = feedback.new
    gold = {tuple(trajectory_features([t], "final")[0]): t.performance for t in demos}
    for fa, fb, label in zip(a, b, y, strict=True):
        ga, gb = gold[tuple(fa)], gold[tuple(fb)]
        assert label == (1.0 if ga > gb else 0.0 if ga < gb else 0.5)
    assert out["feedback_labels"] == 6 and math.isfinite(out["rm_loss"])
    assert not np.allclose(feedback.score(demos), before)
    assert feedback.learn(demos, round_=2)["feedback_labels"] == 10
    spent = feedback.learn(demos, round_=3)
    assert spent["feedback_labels"] == 10 and math.isnan(spent["rm_loss"])


def test_a_feedback_run_killed_after_a_checkpoint_resumes_to_the_same_rows(
    dataset, tmp_path, capsys
):
    """The proxy's weights and the labels are in every checkpoint, and each round's pairs and
    minibatches come from (seed, round): a resumed run writes the uninterrupted run's rows."""
    from entrypoint import run_ogm
    from test_resume_all import rows, stop_after_previous_checkpoint

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run(config(dataset), whole)
    run(config(dataset), stopped)
    stop_after_previous_checkpoint(stopped)
    code, _, err = run_ogm(capsys, "resume", str(stopped))
    assert code == 0, err
    assert (stopped / "episodes.csv").read_bytes() == (whole / "episodes.csv").read_bytes()
    assert rows(stopped / "rounds.csv") == rows(whole / "rounds.csv")
