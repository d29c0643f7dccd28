"""``online.preset = "odt"``: ODT's published settings in both config sections, its
per-environment table, LAMB, and the warm-up the online phase continues from pretraining
(facebookresearch/online-dt: one optimiser and one scheduler for both phases)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ogm.agents.conditioning import make_strategy
from ogm.data import Trajectory, write_dataset
from ogm.train import online
from ogm.train.config import ConfigError, validate_config
from ogm.train.lamb import Lamb
from ogm.train.offline import load_model, make_optimizer
from ogm.train.online import (
    Learner,
    OnlineConfig,
    OnlineSection,
    d4rl_environment,
    preset_values,
)
from ogm.train.rundir import load_checkpoint, unpack_state

# The published numbers, written out (odt.md: facebookresearch/online-dt main.py defaults,
# which are Hopper's, and its launch scripts), not read from the table under test
HOPPER_OFFLINE = {
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 512,
    "dropout": 0.1,
    "activation": "relu",
    "context_len": 20,
    "eval_context_len": 5,
    "use_timesteps": False,
    "updates": 5000,
    "batch_size": 256,
    "optimizer": "lamb",
    "learning_rate": 1e-4,
    "weight_decay": 5e-4,
    "warmup_steps": 10_000,
    "grad_clip": 0.25,
    "alpha": 0.1,
    "return_coef": 0.0,
    "reward_scale": 1e-3,
    "strategy": "fixed:3600",
}
HOPPER_ONLINE = {
    "episodes_per_round": 1,
    "updates_per_round": 300,
    "batch_size": 256,
    "optimizer": "lamb",
    "learning_rate": 1e-4,
    "weight_decay": 5e-4,
    "warmup_steps": 10_000,
    "continue_optimizer": True,
    "grad_clip": 0.25,
    "buffer_capacity": 1000,
    "strategy": "odt:2",
    "eval_strategy": "fixed:3600",
    "demo_fraction": None,
    "entropy": True,
    "init_temperature": 0.1,
    "temperature_lr": 1e-4,
    "max_kl_per_round": None,
}


def test_preset_resolves_to_odts_published_hopper_settings() -> None:
    config = OnlineConfig(env_id="Hopper-v5", online={"preset": "odt"})
    assert {k: getattr(config.offline, k) for k in HOPPER_OFFLINE} == HOPPER_OFFLINE
    assert {k: getattr(config.online, k) for k in HOPPER_ONLINE} == HOPPER_ONLINE
    # exploration at ODT's online_rtg: 7200, twice the evaluation target
    base = make_strategy(config.online.eval_strategy)
    explore = make_strategy(config.online.strategy, base=base)
    assert explore.targets(np.ones((1, 4)) / 4, np.arange(4.0), np.random.default_rng(0)) == 7200
    # the resolved config (what run.json keeps) validates back to itself
    assert OnlineConfig.model_validate(config.model_dump()) == config


@pytest.mark.parametrize(
    ("env_id", "key"),
    [
        ("Hopper-v5", "hopper"),
        ("hopper-medium-v2", "hopper"),
        ("Walker2d-v4", "walker2d"),
        ("HalfCheetah-v5", "halfcheetah"),
        ("AntMaze_UMaze-v4", "antmaze"),
        ("antmaze-umaze-v2", "antmaze"),
        ("Ant-v5", None),
        ("Pendulum-v1", None),
        ("ogm/TomatoWatering-v0", None),
    ],
)
def test_d4rl_environment_is_read_off_gymnasium_and_d4rl_ids(env_id: str, key: str | None) -> None:
    assert d4rl_environment(env_id) == key


@pytest.mark.parametrize(
    ("env_id", "dataset", "offline", "online_"),
    [
        (
            "Walker2d-v5",
            None,
            {"strategy": "fixed:5000", "updates": 10_000, "learning_rate": 1e-3},
            {"eval_strategy": "fixed:5000", "learning_rate": 1e-3, "weight_decay": 1e-3},
        ),
        (
            "HalfCheetah-v5",
            None,
            {"strategy": "fixed:6000", "updates": 5000, "reward_scale": 1e-3},
            {"eval_strategy": "fixed:6000", "learning_rate": 1e-4, "weight_decay": 5e-4},
        ),
        (
            "AntMaze_UMaze-v4",
            None,
            {"strategy": "fixed:1", "updates": 7000, "reward_scale": 1.0, "n_embd": 1024},
            {"eval_strategy": "fixed:1", "buffer_capacity": 1500, "weight_decay": 0.0},
        ),
        (
            "Hopper-v5",
            "data/hopper_medium_replay",
            {"strategy": "fixed:3600", "learning_rate": 2e-3, "weight_decay": 1e-4},
            {"learning_rate": 2e-3, "weight_decay": 1e-4},
        ),
        (
            "Hopper-v5",
            "data/hopper-medium",
            {"learning_rate": 1e-4, "weight_decay": 5e-4},
            {"learning_rate": 1e-4, "weight_decay": 5e-4},
        ),
    ],
)
def test_per_environment_and_dataset_rows(
    env_id: str, dataset: str | None, offline: dict, online_: dict
) -> None:
    values = preset_values("odt", env_id, dataset)
    assert {k: values["offline"][k] for k in offline} == offline
    assert {k: values["online"][k] for k in online_} == online_


def test_explicit_settings_override_the_preset_in_both_sections() -> None:
    config = OnlineConfig(
        env_id="Hopper-v5",
        offline={"n_layer": 2, "reward_scale": 0.01, "optimizer": "adamw"},
        online={"preset": "odt", "eval_strategy": "fixed:3000", "continue_optimizer": False},
    )
    assert (config.offline.n_layer, config.offline.reward_scale) == (2, 0.01)
    assert config.offline.optimizer == "adamw" and config.online.optimizer == "lamb"
    assert config.online.eval_strategy == "fixed:3000" and not config.online.continue_optimizer
    assert (config.offline.n_embd, config.online.updates_per_round) == (512, 300)  # the rest
    # a section given as an already validated object keeps the fields it set
    section = OnlineConfig(env_id="Hopper-v5", online=OnlineSection(preset="odt", rounds=3))
    assert section.online.rounds == 3 and section.online.episodes_per_round == 1
    assert section.offline.strategy == "fixed:3600"
    # a training context set below the preset's acting context of 5 is acted on whole
    short = OnlineConfig(env_id="Hopper-v5", offline={"context_len": 3}, online={"preset": "odt"})
    assert (short.offline.context_len, short.offline.eval_context_len) == (3, 3)


def test_other_environments_keep_data_derived_targets() -> None:
    config = OnlineConfig(env_id="Pendulum-v1", online={"preset": "odt"})
    default = OnlineConfig(env_id="Pendulum-v1")
    assert config.offline.reward_scale is None  # 1 / max |return-to-go| of the data
    assert config.offline.strategy == default.offline.strategy == "percentile:90"
    assert config.online.eval_strategy is None  # the offline section's, as without a preset
    assert config.offline.n_layer == 4 and config.online.optimizer == "lamb"  # ODT's otherwise


def test_the_preset_trains_with_lamb_and_an_unknown_optimiser_is_named() -> None:
    config = OnlineConfig(env_id="Pendulum-v1", online={"preset": "odt"})
    model = torch.nn.Linear(2, 2)
    learner = Learner(model, config, target_entropy=-1.0)  # type: ignore[arg-type]
    assert isinstance(learner.optimizer, Lamb)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 / 10_000)
    assert isinstance(make_optimizer(model, 1e-3, 0.0, 1, kind="lamb")[0], Lamb)
    with pytest.raises(
        ValueError, match=r"optimizer must be one of \['adamw', 'lamb'\], got 'sgd'"
    ):
        make_optimizer(model, 1e-3, 0.0, 1, kind="sgd")


# ----------------------------------------------------------------------------- end to end

PENDULUM = "Pendulum-v1"
OFFLINE_UPDATES, ROUNDS, UPDATES_PER_ROUND, WARMUP = 6, 2, 4, 20


@pytest.fixture(scope="module")
def pendulum_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three episodes of random actions (200 steps each, cut by the time limit)."""
    env = gym.make(PENDULUM)
    env.action_space.seed(0)
    trajectories = []
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        observations, actions, rewards = [obs], [], []
        truncated = False
        while not truncated:
            action = env.action_space.sample()
            obs, reward, _, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
        steps = len(actions)
        trajectories.append(
            Trajectory(
                observations=np.array(observations, dtype=np.float32),
                actions=np.array(actions, dtype=np.float32),
                rewards=np.array(rewards),
                terminations=np.zeros(steps, bool),
                truncations=np.arange(steps) == steps - 1,
            )
        )
    env.close()
    out = tmp_path_factory.mktemp("data") / "pendulum"
    write_dataset(trajectories, out, env_id=PENDULUM, env_kwargs={}, metadata={})
    return out


def test_preset_runs_through_lamb_and_continues_the_pretraining_warm_up(
    pendulum_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (optimiser, learning rate) of every LAMB step; holding the optimiser itself keeps the
    # first one alive, so the second cannot reuse its id()
    steps: list[tuple[Lamb, float]] = []
    step = Lamb.step

    def recorded(self: Lamb, closure: Callable[[], float] | None = None) -> float | None:
        steps.append((self, self.param_groups[0]["lr"]))
        return step(self, closure)

    monkeypatch.setattr(Lamb, "step", recorded)
    small = {"batch_size": 16, "warmup_steps": WARMUP}  # shrunk; ODT's 10k is tested above
    config = OnlineConfig(
        env_id=PENDULUM,
        dataset=str(pendulum_dataset),
        num_envs=1,
        eval_episodes=1,
        eval_every=10**6,
        device="cpu",
        precision="fp32",
        offline={
            "n_layer": 1,
            "n_embd": 32,
            "n_bins": 16,
            "updates": OFFLINE_UPDATES,
            "fidelity_targets": 0,
            **small,
        },
        online={
            "preset": "odt",
            "rounds": ROUNDS,
            "updates_per_round": UPDATES_PER_ROUND,
            "checkpoint_every": 1,
            **small,
        },
    )
    online.run(config, tmp_path / "odt")

    # two LAMB optimisers, pretraining's then the online phase's: every update used LAMB
    total = OFFLINE_UPDATES + ROUNDS * UPDATES_PER_ROUND
    assert len(steps) == total and len({id(owner) for owner, _ in steps}) == 2
    # one warm-up over both phases: update k runs at lr * (k + 1) / warm-up, the online
    # phase's first update at step OFFLINE_UPDATES (a fresh schedule would restart at 1)
    lr = 1e-4
    assert [rate for _, rate in steps] == pytest.approx(
        [lr * (k + 1) / WARMUP for k in range(total)]
    )
    latest = load_checkpoint(tmp_path / "odt")
    assert latest.step == ROUNDS and latest.state["scheduler"]["last_epoch"] == total
    # the moments carried over too: LAMB's step count runs on from pretraining's
    moments = unpack_state(latest.state["optimizer"], latest.tensors)["state"].values()
    assert {float(m["step"]) for m in moments} == {float(total)}
    # Pendulum is no D4RL environment: the reward scale stays data-derived
    largest = max(abs(t) for t in _returns_to_go(pendulum_dataset))
    assert load_model(tmp_path / "odt").config.reward_scale == pytest.approx(1 / largest)
    assert not load_model(tmp_path / "odt").config.use_timesteps  # ODT: no timestep token


def _returns_to_go(dataset: Path) -> np.ndarray:
    from ogm.data.dataset import load_trajectories

    return np.concatenate([t.returns_to_go() for t in load_trajectories(dataset)])


@pytest.mark.parametrize("sections", [{"online": 0}, {"offline": "x", "online": {"preset": "odt"}}])
def test_a_section_of_the_wrong_type_is_named_not_a_crash(sections):
    """The preset is applied before the sections are validated: a section that is not a
    table reaches its own field's validation, which names it."""
    name = next(k for k, v in sections.items() if not isinstance(v, dict))
    with pytest.raises(ConfigError, match=rf"{name}: Input should be a valid dictionary"):
        validate_config(OnlineConfig, {"env_id": "ogm/TomatoWatering-v0", **sections})
