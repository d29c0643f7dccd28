"""D4RL-style datasets for any Gymnasium environment, recorded from an SB3 agent's training.

D4RL (Fu et al. 2020) cannot be downloaded here, so ``collect_rl`` makes the same kinds of
dataset: it trains a standard Stable-Baselines3 agent (SAC for continuous actions, DQN for
Atari, PPO for other discrete actions), keeps ``snapshots`` policy snapshots along the way
(safetensors of the SB3 policy's ``state_dict``, no pickle), evaluates each greedily on
held-out starts, and records four Minari datasets with :func:`ogm.data.dataset.write_dataset`:

``random``         uniformly random actions (D4RL rolled out a randomly initialised policy,
                   which is close to uniform for SAC's tanh-Gaussian);
``medium``         the snapshot whose evaluation return is closest to one third of the way
                   from the random return to the expert's (D4RL: "about 1/3 of the expert";
                   the way from random keeps the rule meaningful for negative returns);
``medium-replay``  every training episode finished up to the medium snapshot: the replay
                   buffer up to that point, cut into episodes;
``expert``         the snapshot with the best evaluation return (normally the last one).

Dataset rollouts sample actions from the policy (SB3's ``deterministic=False``; DQN's
policy is greedy there). Every dataset's metadata (``"ogm"`` key) holds its D4RL-style
name, the snapshot it came from and the normalisation constants ``ref_min_score`` /
``ref_max_score``: D4RL's reference scores for Hopper, HalfCheetah and Walker2d, so that
normalised scores compare with published tables; the random and human scores of the
literature for Breakout and Q*bert (human-normalised scores); elsewhere the mean returns of
our own ``random`` and ``expert`` datasets (what D4RL's constants are, for its own policies).

The output directory is a run directory (:class:`ogm.train.rundir.RunDir`)::

    OUT/run.json, rounds.csv (one row per snapshot), checkpoints/ (SB3 state, replay buffer)
    OUT/policies/step_<n>.safetensors     policy snapshots
    OUT/episodes/step_<n>.npz             training episodes finished since the last snapshot
    OUT/datasets/{random,medium,medium-replay,expert}/   Minari datasets

Rerunning on a killed directory continues from the last snapshot's checkpoint with the
same files as an uninterrupted run. For that, the training env is reset (seeded from the
run's seed and the snapshot) at every snapshot, in every run: an env outside ogm's
gridworlds cannot save the episodes under way, so they are cut there, and such partial
episodes are left out of ``medium-replay``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from ogm.baselines.common import make_env
from ogm.baselines.sb3 import (
    ProgressCallback,
    SB3Config,
    SB3VecEnv,
    build_model,
    is_image_space,
    load_model,
    save_model,
)
from ogm.data.dataset import dataset_metadata, load_trajectories, write_dataset
from ogm.data.recipe import QUALITIES, RLDatasetRecipe, dataset_base_name
from ogm.data.trajectory import Trajectory
from ogm.envs.atari import ATARI_ENV_ID
from ogm.limits import MAX_EPISODES, MAX_EVAL_EPISODES, MAX_ROUNDS
from ogm.train.evaluation import EVAL_SEED_BASE, StatelessAgent, first_episodes
from ogm.train.rundir import RunDir

KINDS = QUALITIES

# D4RL's reference returns for normalised scores (100 * (R - min) / (max - min)): the random
# policy's and the expert SAC policy's, REF_MIN_SCORE / REF_MAX_SCORE in d4rl/infos.py
# (github.com/Farama-Foundation/D4RL), the same for all versions of these tasks' datasets.
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}
# Human-normalised Atari scores: the random and human reference returns of DeepMind's
# dqn_zoo (atari_data.py; from Mnih et al. 2015 and van Hasselt et al. 2016, episodes from
# up to 30 no-op starts). ALE v5 adds sticky actions, which make a game a little harder.
ATARI_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "breakout": (1.7, 30.5),
    "qbert": (163.9, 13455.0),
}


def resolve_rl_env(env_id: str) -> tuple[str, dict[str, Any]]:
    """The env id and options ``collect_rl`` trains on: an ALE id (``ALE/Breakout-v5``)
    becomes the preprocessed :data:`ATARI_ENV_ID` with that ``game``; others pass as they are."""
    if env_id.startswith("ALE/"):
        return ATARI_ENV_ID, {"game": env_id}
    return env_id, {}


class CollectRLConfig(SB3Config):
    """Train an SB3 agent and record D4RL-style datasets from it (module doc)."""

    kind: Literal["collect-rl"] = "collect-rl"  # type: ignore[assignment]
    # auto: SAC for continuous actions, DQN for image observations, PPO otherwise
    algo: Literal["auto", "ppo", "dqn", "sac"] = "auto"  # type: ignore[assignment]
    net_arch: list[int] = Field(default_factory=lambda: [256, 256])  # SAC's, for MuJoCo
    num_envs: int = Field(1, gt=0, le=64)  # training copies (D4RL's SAC: one)
    snapshots: int = Field(10, gt=0, le=MAX_ROUNDS)  # policy snapshots after step 0
    episodes: int = Field(100, gt=0, le=MAX_EPISODES)  # per dataset (D4RL: 1M steps)
    rollout_envs: int = Field(8, gt=0, le=MAX_EVAL_EPISODES)  # copies for dataset rollouts
    eval_episodes: int = Field(10, gt=0, le=MAX_EVAL_EPISODES)  # per snapshot, greedy

    def snapshot_step(self, k: int) -> int:
        """Environment steps at which snapshot ``k`` (1..snapshots) is due."""
        return round(k * self.total_timesteps / self.snapshots)


def resolved_algo(config: CollectRLConfig, env: gym.vector.VectorEnv) -> str:
    """The algorithm ``config.algo`` names, ``auto`` chosen from the spaces."""
    if config.algo != "auto":
        return config.algo
    if isinstance(env.single_action_space, gym.spaces.Box):
        return "sac"
    return "dqn" if is_image_space(env.single_observation_space) else "ppo"


def default_hyperparams(algo: str, total_timesteps: int) -> dict[str, Any]:
    """SB3's defaults, except buffers no larger than the run, and DQN's Atari settings
    (rl-baselines3-zoo): replay 100k, learning starts 100k, exploration over 10 %."""
    if algo == "sac":
        return {"buffer_size": min(1_000_000, total_timesteps)}
    if algo == "dqn":
        return {
            "buffer_size": min(100_000, total_timesteps),
            "learning_starts": min(100_000, total_timesteps // 10),
            "learning_rate": 1e-4,
            "batch_size": 32,
            "train_freq": 4,
            "target_update_interval": 1_000,
            "exploration_fraction": 0.1,
            "exploration_final_eps": 0.01,
        }
    return {}


# ----------------------------------------------------------------------------- files


def _atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path``: the file appears whole or not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_episodes(path: Path, trajectories: Sequence[Trajectory]) -> None:
    """Episodes as one npz of concatenated plain arrays (no pickle) with their lengths."""
    arrays: dict[str, np.ndarray] = {"lengths": np.array([t.length for t in trajectories])}
    if trajectories:
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            arrays[key] = np.concatenate([getattr(t, key) for t in trajectories])
    _atomic(path, lambda tmp: np.savez(tmp, **arrays))


def load_episodes(path: Path) -> list[Trajectory]:
    """The episodes :func:`save_episodes` wrote."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    trajectories, step, obs = [], 0, 0
    for length in arrays["lengths"].tolist():
        per_step = slice(step, step + length)
        trajectories.append(
            Trajectory(
                observations=arrays["observations"][obs : obs + length + 1],
                actions=arrays["actions"][per_step],
                rewards=arrays["rewards"][per_step],
                terminations=arrays["terminations"][per_step],
                truncations=arrays["truncations"][per_step],
            )
        )
        step, obs = step + length, obs + length + 1
    return trajectories


def snapshot_name(step: int) -> str:
    return f"step_{step:09d}"


def load_policy(model: BaseAlgorithm, path: Path) -> None:
    """Load a policy snapshot (safetensors of ``model.policy.state_dict()``) into ``model``."""
    from safetensors.torch import load_file

    model.policy.load_state_dict(load_file(path, device=str(model.device)))


# ----------------------------------------------------------------------------- training


class SnapshotCallback(BaseCallback):
    """Takes the policy snapshots: at the start of the first rollout past each snapshot's
    step (after the previous update, where SB3's state is consistent) and at the end."""

    def __init__(self, collection: Collection) -> None:
        super().__init__()
        self.collection = collection

    def _on_step(self) -> bool:
        venv = self.collection.venv
        self.collection.pending += venv.finished
        venv.finished = []
        return True

    def _on_rollout_start(self) -> None:
        c = self.collection
        if c.index <= c.config.snapshots and self.num_timesteps >= c.config.snapshot_step(c.index):
            c.snapshot()

    def _on_training_end(self) -> None:
        if self.collection.index <= self.collection.config.snapshots:
            self.collection.snapshot()


@dataclasses.dataclass
class Collection:
    """The state of one ``collect_rl`` run while it trains."""

    config: CollectRLConfig
    run: RunDir
    venv: SB3VecEnv
    model: BaseAlgorithm
    index: int = 0  # snapshots taken so far (snapshot 0: the untrained policy)
    pending: list[Trajectory] = dataclasses.field(default_factory=list)

    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return self.model.predict(obs, deterministic=deterministic)[0]

    def snapshot(self) -> None:
        """Save the policy and the episodes since the last snapshot, evaluate the policy,
        restart the training episodes from a seeded reset, then checkpoint."""
        from safetensors.torch import save_file

        step, name = self.model.num_timesteps, snapshot_name(self.model.num_timesteps)
        state = {
            k: v.detach().cpu().contiguous() for k, v in self.model.policy.state_dict().items()
        }
        _atomic(self.run.path / "policies" / f"{name}.safetensors", lambda t: save_file(state, t))
        save_episodes(self.run.path / "episodes" / f"{name}.npz", self.pending)
        seeds = [EVAL_SEED_BASE + k for k in range(self.config.eval_episodes)]
        evaluation = first_episodes(
            StatelessAgent(self.act), self.config, seeds, deterministic=True
        )
        self.run.rounds.append(
            {
                "snapshot": self.index,
                "env_steps": step,
                "train_episodes": len(self.pending),
                "train_return": float(np.mean([t.ret for t in self.pending]))
                if self.pending
                else float("nan"),
                "eval_return": float(np.mean([r.trajectory.ret for r in evaluation])),
            }
        )
        self.pending = []
        self.index += 1
        self.restart_episodes()
        save_model(self.run, self.model, {"index": self.index})

    def restart_episodes(self) -> None:
        """Reset the training env with the seed of the current snapshot index."""
        self.venv.seed(
            int(np.random.SeedSequence([self.config.seed, self.index]).generate_state(1)[0])
        )
        self.model._last_obs = self.venv.reset()
        self.model._last_episode_starts = np.ones(self.venv.num_envs, dtype=bool)


def start(config: CollectRLConfig, out: Path) -> Collection:
    """Build the agent (SB3 checks the hyperparameters) and open the run directory."""
    venv = SB3VecEnv(make_env(config, config.num_envs, seed=config.seed))
    try:
        algo = resolved_algo(config, venv.env)
        model = build_model(
            config, venv, algo=algo, defaults=default_hyperparams(algo, config.total_timesteps)
        )
        run = RunDir.open_or_create(out, kind="collect-rl", config=config, seed=config.seed)
    except BaseException:
        venv.close()
        raise
    return Collection(config, run, venv, model)


def train(collection: Collection) -> None:
    """Train (or continue training) the agent, taking the snapshots."""
    model, config = collection.model, collection.config
    checkpoint = collection.run.resume()
    if checkpoint is None:
        collection.snapshot()  # the untrained policy
    else:
        load_model(model, checkpoint)
        with checkpoint.restoring():
            collection.index = int(checkpoint.state["index"])
        if model._last_obs is None:  # an env that cannot save its episodes: restart them
            collection.restart_episodes()
    remaining = config.total_timesteps - model.num_timesteps
    if remaining > 0:
        algo = f"collect-rl {resolved_algo(config, collection.venv.env)}"
        progress = ProgressCallback(algo, config.total_timesteps, model.num_timesteps)
        model.learn(
            remaining,
            callback=CallbackList([SnapshotCallback(collection), progress]),
            reset_num_timesteps=False,
        )


# ----------------------------------------------------------------------------- datasets


def _rollouts(config: CollectRLConfig, act: Any, episodes: int, stream: int) -> list[Trajectory]:
    """``episodes`` episodes of ``act(obs, deterministic=False)`` from starts seeded by
    ``(seed, stream)``, in waves of ``rollout_envs`` copies; torch sampling seeded too."""
    seeds = np.random.SeedSequence([config.seed, 1000 + stream]).generate_state(episodes)
    agent = StatelessAgent(act)
    trajectories: list[Trajectory] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeds[0]))
        for start in range(0, episodes, config.rollout_envs):
            wave = [int(s) for s in seeds[start : start + config.rollout_envs]]
            results = first_episodes(agent, config, wave, deterministic=False)
            trajectories += [dataclasses.replace(r.trajectory, source="demo") for r in results]
    return trajectories


def _random_actions(space: gym.Space, seed: int) -> Any:
    """An action function drawing uniformly from ``space`` with its own seeded stream."""
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        n = len(obs)
        if isinstance(space, gym.spaces.Discrete):
            return space.start + rng.integers(space.n, size=n)
        return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)

    return act


def choose_snapshots(rows: list[dict[str, str]], random_return: float) -> dict[str, dict]:
    """The expert (best evaluation return after step 0) and medium (evaluation return
    closest to ``random + (expert - random) / 3``, no later than the expert) snapshots."""
    snaps = [
        {"index": int(r["snapshot"]), "step": int(r["env_steps"]), "eval": float(r["eval_return"])}
        for r in rows
    ]
    trained = [s for s in snaps if s["step"] > 0] or snaps
    expert = max(trained, key=lambda s: s["eval"])
    target = random_return + (expert["eval"] - random_return) / 3
    candidates = [s for s in trained if s["step"] <= expert["step"]]
    medium = min(candidates, key=lambda s: (abs(s["eval"] - target), s["step"]))
    return {"expert": expert, "medium": medium, "medium_target": target}


def reference_scores(path: str | os.PathLike) -> tuple[float, float]:
    """The normalisation constants ``(ref_min_score, ref_max_score)`` of the dataset at
    ``path`` (module doc); ValueError when it records none."""
    meta = dataset_metadata(path).get("ogm", {})
    if "ref_min_score" not in meta:
        raise ValueError(f"{path}: the dataset records no normalisation constants")
    return float(meta["ref_min_score"]), float(meta["ref_max_score"])


def normalised(ret: float, scores: tuple[float, float]) -> float:
    """D4RL's normalised score of return ``ret``: ``100 (ret - min) / (max - min)``."""
    low, high = scores
    return 100.0 * (ret - low) / (high - low)


def normalised_score(ret: float, path: str | os.PathLike) -> float:
    """The normalised score of return ``ret`` with the constants of the dataset at ``path``."""
    return normalised(ret, reference_scores(path))


def write_datasets(collection: Collection) -> dict[str, Path]:
    """Record the four datasets (a dataset already written is kept: it is deterministic)."""
    config, run, model = collection.config, collection.run, collection.model
    out = run.path / "datasets"
    base = dataset_base_name(config.env_id, config.env_kwargs)
    algo = resolved_algo(config, collection.venv.env)
    rows = run.rounds.read()
    paths = {kind: out / kind for kind in KINDS}

    def done(kind: str) -> bool:
        return (paths[kind] / "data" / "metadata.json").is_file()

    trajectories: dict[str, list[Trajectory]] = {}
    if done("random"):
        trajectories["random"] = load_trajectories(paths["random"])
    else:
        act = _random_actions(collection.venv.action_space, config.seed)
        trajectories["random"] = _rollouts(config, act, config.episodes, KINDS.index("random"))
    random_return = float(np.mean([t.ret for t in trajectories["random"]]))
    chosen = choose_snapshots(rows, random_return)
    for kind in ("expert", "medium"):
        if not done(kind):
            load_policy(
                model, run.path / "policies" / f"{snapshot_name(chosen[kind]['step'])}.safetensors"
            )
            trajectories[kind] = _rollouts(
                config, collection.act, config.episodes, KINDS.index(kind)
            )
    if not done("medium-replay"):
        steps = [
            int(r["env_steps"]) for r in rows if int(r["env_steps"]) <= chosen["medium"]["step"]
        ]
        trajectories["medium-replay"] = [
            dataclasses.replace(t, source="demo")
            for step in steps
            for t in load_episodes(run.path / "episodes" / f"{snapshot_name(step)}.npz")
        ]
        if not trajectories["medium-replay"]:
            raise ValueError(
                f"no training episode finished by the medium snapshot (step "
                f"{chosen['medium']['step']}): raise total_timesteps={config.total_timesteps}"
            )
    expert_return = (
        float(np.mean([t.ret for t in trajectories["expert"]]))
        if "expert" in trajectories
        else float(dataset_metadata(paths["expert"])["ogm"]["dataset_return"])
    )
    reference = {**D4RL_REFERENCE_SCORES, **ATARI_REFERENCE_SCORES}
    low, high = reference.get(base, (random_return, expert_return))
    for kind in KINDS:
        if done(kind):
            continue
        snap = chosen.get(kind.removesuffix("-replay"), {})
        write_dataset(
            trajectories[kind],
            paths[kind],
            env_id=config.env_id,
            env_kwargs=config.env_kwargs,
            overwrite=True,
            metadata={
                "algorithm": f"sb3-{algo}",
                "description": f"D4RL-style {kind} dataset for {base}, recorded by ogm collect-rl",
                "dataset_id": f"ogm/{base}/{kind}-v0",
                "d4rl_name": f"{base}-{kind}",
                "kind": kind,
                "policy_step": snap.get("step") if kind != "random" else None,
                "policy_eval_return": snap.get("eval") if kind != "random" else None,
                "medium_target": chosen["medium_target"],
                "dataset_return": float(np.mean([t.ret for t in trajectories[kind]])),
                "random_return": random_return,
                "expert_return": expert_return,
                "ref_min_score": low,
                "ref_max_score": high,
                "normalisation": "d4rl"
                if base in D4RL_REFERENCE_SCORES
                else "human"
                if base in ATARI_REFERENCE_SCORES
                else "measured",
                "collect_rl": config.model_dump(mode="json"),
            },
        )
    return paths


def collect_rl(config: CollectRLConfig, out: str | os.PathLike) -> dict[str, Path]:
    """Train, snapshot and record the datasets in ``out`` (resuming a killed run there);
    returns the dataset directories by kind."""
    collection = start(config, Path(out))
    try:
        train(collection)
        paths = write_datasets(collection)
        collection.run.set_status("done", env_steps=collection.model.num_timesteps)
        return paths
    except BaseException as err:
        collection.run.record_failure(err)
        raise
    finally:
        collection.venv.close()
        collection.run.close()


def build_rl_dataset(recipe: RLDatasetRecipe, cache_dir: str | os.PathLike) -> Path:
    """The dataset ``recipe`` names, its collection run in the dataset cache once (and
    resumed there when a run was killed)."""
    path = recipe.path(cache_dir)
    out = recipe.collection_dir(cache_dir)
    if (path / "data" / "metadata.json").is_file() and RunDir.open(out).status == "done":
        return path
    return collect_rl(CollectRLConfig.model_validate(recipe.collect_config()), out)[recipe.quality]
