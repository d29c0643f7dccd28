"""RL from scratch with Stable-Baselines3 (PPO, DQN, SAC) on the same footing as the OGM agent.

SB3's conventions stay inside this module. :class:`SB3VecEnv` adapts our Gymnasium vector
env (same-step autoreset; for gridworlds one numpy engine, no per-copy Python env) to SB3's
``VecEnv``, and collects every finished episode with its hidden reward and safety events.
:class:`RoundCallback` writes those episodes to ``episodes.csv`` (phase ``train``) and,
every ``eval_every`` environment steps, closes a *round*: a ``rounds.csv`` row, an evaluation
point of the protocol every agent shares (:mod:`ogm.train.evaluation`) and a checkpoint.

Checkpoints hold no pickle: the networks and optimisers (SB3's own list of them, from
``get_parameters``) go to safetensors + JSON, and the replay buffer of DQN / SAC to a plain
npz, with the RNG states. A resumed run continues from the last round: training steps,
optimiser and replay buffer as they were, but episodes that were under way at the
checkpoint are restarted (the env is reset), so a resumed run is not bitwise identical to
one that was never stopped.

Observations are flattened into an MLP (``net_arch``); SB3's NatureCNN needs images of at
least 36x36 pixels, which the gridworld planes are not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from ogm.baselines.common import (
    EpisodeCollector,
    EpisodeLog,
    event_names_of,
    make_env,
    mean_or_nan,
    primary_event_of,
)
from ogm.data.trajectory import Trajectory
from ogm.train import evaluation
from ogm.train.config import CommonConfig
from ogm.train.rundir import (
    RunDir,
    pack_state,
    set_torch_rng_state,
    torch_rng_state,
    unpack_state,
)

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN, "sac": SAC}

# Sizes suited to small gridworlds with 16 env copies; any key of ``hyperparams`` overrides.
DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "ent_coef": 0.01},
    "dqn": {
        "buffer_size": 100_000,
        "learning_starts": 1_000,
        "exploration_fraction": 0.3,
        "target_update_interval": 1_000,
    },
    "sac": {"buffer_size": 100_000, "learning_starts": 1_000},
}


class SB3Config(CommonConfig):
    """PPO, DQN or SAC from scratch; ``hyperparams`` go to the SB3 constructor as they are."""

    kind: Literal["sb3"] = "sb3"
    algo: Literal["ppo", "dqn", "sac"] = "ppo"
    total_timesteps: int = Field(100_000, gt=0)
    net_arch: list[int] = Field(default_factory=lambda: [64, 64])
    hyperparams: dict[str, Any] = Field(default_factory=dict)


# ----------------------------------------------------------------------------- VecEnv adapter


class SB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over one same-step-autoreset Gymnasium vector env.

    Every finished episode lands in ``finished`` (as a :class:`Trajectory`) until the
    callback takes it.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self.collector = EpisodeCollector(env.num_envs, event_names_of(env))
        self.finished: list[Trajectory] = []
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        obs, _ = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        self.collector.start(obs)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        actions = self._actions
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        self.finished += self.collector.step(actions, obs, rewards, terminated, truncated, infos)
        done = np.logical_or(terminated, truncated)
        sb3_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(done):
            sb3_infos[i] = {
                "terminal_observation": infos["final_obs"][i],
                "TimeLimit.truncated": bool(truncated[i] and not terminated[i]),
            }
        return obs, np.asarray(rewards, np.float32), done, sb3_infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise NotImplementedError("SB3VecEnv copies share one engine; set attributes on it")

    def env_method(self, method_name: str, *args, indices: VecEnvIndices = None, **kwargs):
        raise NotImplementedError("SB3VecEnv copies share one engine; call methods on it")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None):
        return [False for _ in self._get_indices(indices)]


# ----------------------------------------------------------------------------- checkpoints


def _replay_arrays(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    size = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {"replay/pos": np.array(buffer.pos), "replay/full": np.array(buffer.full)}
    for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        data = getattr(buffer, key, None)
        if data is not None:
            arrays[f"replay/{key}"] = data[:size]
    return arrays


def _load_replay(buffer: ReplayBuffer, arrays: dict[str, np.ndarray]) -> None:
    for key, data in arrays.items():
        if key.startswith("replay/") and key not in ("replay/pos", "replay/full"):
            getattr(buffer, key[len("replay/") :])[: len(data)] = data
    buffer.pos = int(arrays["replay/pos"])
    buffer.full = bool(arrays["replay/full"])


def save_model(run: RunDir, model: BaseAlgorithm, state: dict[str, Any]) -> Path:
    """Checkpoint ``model`` without pickle: networks, optimisers, counters, RNGs, replay."""
    tensors, skeleton = pack_state(model.get_parameters(), "params")
    _, variables = model._get_torch_save_params()
    for name in variables:
        tensors[f"var/{name}"] = getattr(model, name).detach().clone()
    rng_tensors, rng_skeleton = pack_state(torch_rng_state(), "rng")
    tensors.update(rng_tensors)
    arrays: dict[str, np.ndarray] = {}
    if isinstance(model, OffPolicyAlgorithm):
        arrays.update(_replay_arrays(model.replay_buffer))
    counters = {
        "num_timesteps": model.num_timesteps,
        "n_updates": model._n_updates,
        "episode_num": model._episode_num,
        "n_calls": getattr(model, "_n_calls", 0),
        "numpy_rng": _json_rng(np.random.get_state()),
        "action_space_rng": model.action_space.np_random.bit_generator.state,
    }
    return run.save_checkpoint(
        model.num_timesteps,
        tensors=tensors,
        state={**state, "params": skeleton, "torch_rng": rng_skeleton, "sb3": counters},
        arrays=arrays,
    )


def _json_rng(state: tuple) -> list:
    name, keys, pos, has_gauss, gauss = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def load_model(model: BaseAlgorithm, checkpoint) -> None:
    """Restore what :func:`save_model` wrote into a freshly built ``model``."""
    params = unpack_state(checkpoint.state["params"], checkpoint.tensors)
    model.set_parameters(params, exact_match=True, device=model.device)
    for name in model._get_torch_save_params()[1]:
        with torch.no_grad():
            getattr(model, name).copy_(checkpoint.tensors[f"var/{name}"])
    set_torch_rng_state(unpack_state(checkpoint.state["torch_rng"], checkpoint.tensors))
    counters = checkpoint.state["sb3"]
    model.num_timesteps = int(counters["num_timesteps"])
    model._n_updates = int(counters["n_updates"])
    model._episode_num = int(counters["episode_num"])
    if hasattr(model, "_n_calls"):
        model._n_calls = int(counters["n_calls"])
    name, keys, pos, has_gauss, gauss = counters["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, gauss))
    model.action_space.np_random.bit_generator.state = counters["action_space_rng"]
    if isinstance(model, OffPolicyAlgorithm):
        _load_replay(model.replay_buffer, checkpoint.arrays)


# ----------------------------------------------------------------------------- callback


class RoundCallback(BaseCallback):
    """Logs training episodes; every ``eval_every`` steps evaluates and checkpoints.

    Rounds close at the start of a rollout (after the previous update), where the model,
    its optimiser and replay buffer are consistent and no on-policy rollout is half done.
    """

    def __init__(
        self, config: SB3Config, run: RunDir, venv: SB3VecEnv, log: EpisodeLog, round: int
    ) -> None:
        super().__init__()
        self.config, self.run, self.venv, self.log = config, run, venv, log
        self.round = round
        self.round_start = time.perf_counter()
        self.round_episodes: list[Trajectory] = []
        self.final_eval: dict[str, float] = {}

    def _on_step(self) -> bool:
        if self.venv.finished:
            self.log.write(
                self.venv.finished, phase="train", round=self.round, env_steps=self.num_timesteps
            )
            self.round_episodes += self.venv.finished
            self.venv.finished = []
        return True

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= (self.round + 1) * self.config.eval_every:
            self.end_round()

    def _on_training_end(self) -> None:
        if self.num_timesteps > self.round * self.config.eval_every or self.round_episodes:
            self.end_round()

    def end_round(self) -> None:
        """Write the round's summary and eval episodes, then checkpoint."""
        config, model = self.config, self.model
        means: dict[str, float] = {}
        if config.eval_episodes:
            agent = evaluation.StatelessAgent(
                lambda obs, deterministic: model.predict(obs, deterministic=deterministic)[0]
            )
            means = evaluation.log_evaluation(
                self.log,
                evaluation.evaluate(agent, config),
                round=self.round,
                env_steps=self.num_timesteps,
            )
            self.final_eval = means
        train = self.round_episodes
        row = {
            "round": self.round,
            "env_steps": self.num_timesteps,
            "episodes": len(train),
            "return_mean": mean_or_nan([t.ret for t in train]),
            "performance_mean": mean_or_nan([t.performance for t in train]),
            **means,
            "seconds": time.perf_counter() - self.round_start,
        }
        self.run.rounds.append(row)
        writer = self.run.tensorboard()
        for key, value in row.items():
            if key not in ("round", "env_steps") and np.isfinite(value):
                writer.add_scalar(f"round/{key}", value, self.num_timesteps)
        self.round += 1
        self.round_episodes = []
        self.log.flush()
        save_model(self.run, model, {"round": self.round, "final_eval": self.final_eval})
        self.round_start = time.perf_counter()


# ----------------------------------------------------------------------------- run


def build_model(config: SB3Config, venv: VecEnv) -> BaseAlgorithm:
    """The SB3 algorithm for ``config``, with ogm's defaults under the user's hyperparams."""
    algo = ALGOS[config.algo]
    discrete = isinstance(venv.action_space, gym.spaces.Discrete)
    if config.algo == "dqn" and not discrete:
        raise ValueError(f"algo 'dqn' needs discrete actions; {config.env_id} has continuous ones")
    if config.algo == "sac" and discrete:
        raise ValueError(f"algo 'sac' needs continuous actions; {config.env_id} has discrete ones")
    hyperparams = {**DEFAULT_HYPERPARAMS[config.algo], **config.hyperparams}
    policy_kwargs = {"net_arch": list(config.net_arch), **hyperparams.pop("policy_kwargs", {})}
    try:
        return algo(
            "MlpPolicy",
            venv,
            policy_kwargs=policy_kwargs,
            seed=config.seed,
            device=config.torch_device(),
            verbose=0,
            **hyperparams,
        )
    except TypeError as err:
        raise ValueError(f"hyperparams for {config.algo}: {err}") from None


def run(config: SB3Config, run_dir: Path) -> None:
    """Train (or resume) an SB3 agent in ``run_dir``, logging as every ogm agent does."""
    run = RunDir.open_or_create(run_dir, kind="sb3", config=config, seed=config.seed)
    checkpoint = run.resume()
    venv = SB3VecEnv(make_env(config, config.num_envs, seed=config.seed))
    try:
        model = build_model(config, venv)
        model.set_logger(configure(str(run.path / "tb" / "sb3"), ["tensorboard"]))
        round = 0
        if checkpoint is not None:
            load_model(model, checkpoint)
            round = int(checkpoint.state["round"])
        log = EpisodeLog(run, venv.collector.event_names, primary_event_of(venv.env))
        callback = RoundCallback(config, run, venv, log, round)
        if checkpoint is not None:
            callback.final_eval = checkpoint.state["final_eval"]
        remaining = config.total_timesteps - model.num_timesteps
        if remaining > 0:
            model.learn(remaining, callback=callback, reset_num_timesteps=checkpoint is None)
        run.set_status(
            "done",
            env_steps=model.num_timesteps,
            final_eval=evaluation.final_summary(callback.final_eval),
        )
    except BaseException as err:
        run.set_status("failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        venv.close()
        run.close()
