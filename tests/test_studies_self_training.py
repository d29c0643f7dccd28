"""The zero-expected-gradient lemma on a Decision Transformer (``ogm.studies.self_training``).

A DT is fitted briefly to the lottery bandit's demonstrations; its own samples of
(return bin, action) at the start state must give gradients of mean zero: exactly, summed
over every bin and action, and as ``1/sqrt(n)`` for the mean over n samples. Samples whose
return is drawn by ``exp_tilted`` instead are not the model's own: their mean gradient
tends to a non-zero vector.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ogm.agents.actor import EpisodeResult
from ogm.data.trajectory import Trajectory
from ogm.studies import finite_mdp as fm
from ogm.studies import self_training as st
from ogm.studies.common import fit_dt, offline_config


@pytest.fixture(scope="module")
def bandit():
    config = st.SelfTrainingConfig(
        env_id=fm.ENV_ID,
        setting="bandit",
        num_envs=4,
        demo_episodes=500,
        sample_sizes=[16, 256, 4096],
        repeats=10,
        dt={"updates": 150},
    )
    task = st.make_task(config)
    model = fit_dt(offline_config(config, config.dt), task.demos, task.env.single_action_space)
    yield config, task, model
    task.env.close()


def test_exact_expected_self_gradient_is_zero(bandit):
    _, task, model = bandit
    exact = st.exact_self_gradient(model, task.starts[0])
    generator = torch.Generator().manual_seed(0)
    one = st.sample_first_steps(model, task.starts[:1], None, [], generator)
    single = st.mean_gradient(model, one).norm()  # one sample's gradient: the scale
    assert single > 0.1
    assert exact.norm() < 1e-5 * single


def test_mean_self_gradient_falls_as_one_over_sqrt_n(bandit):
    config, task, model = bandit
    rows = {(r["source"], r["n"]): r["rms_norm"] for r in st.gradient_rows(config, model, task)}
    # 16 -> 4096 samples: the mean of zero-mean noise shrinks 16-fold (sqrt(256))
    assert 8 < rows[("model", 16)] / rows[("model", 4096)] < 32
    # the tilted samples' mean tends to E_q[grad log p] != 0: it hardly shrinks
    assert rows[("tilted", 16)] / rows[("tilted", 4096)] < 2
    assert rows[("tilted", 4096)] > 10 * rows[("model", 4096)]


def test_model_labels_are_the_returns_the_model_was_fed():
    trajectory = Trajectory(
        observations=np.zeros((4, 1), np.float32),
        actions=np.zeros(3, np.int64),
        rewards=np.array([1.0, 0.0, 2.0]),
        terminations=np.array([False, False, True]),
        truncations=np.zeros(3, bool),
    )
    asked = st.as_asked(EpisodeResult(trajectory, target_return=7.0))
    assert np.allclose(asked.returns_to_go(), [7.0, 6.0, 6.0])  # target - rewards so far
    assert np.allclose(trajectory.returns_to_go(), [3.0, 2.0, 2.0])  # the original untouched
