"""RL from scratch with Stable-Baselines3 (PPO, DQN, SAC) on the same footing as the OGM agent.

SB3's conventions stay inside this module. :class:`SB3VecEnv` adapts our Gymnasium vector
env (same-step autoreset; for gridworlds one numpy engine, no per-copy Python env) to SB3's
``VecEnv``, and collects every finished episode with its hidden reward and safety events.
:class:`RoundCallback` writes those episodes to ``episodes.csv`` (phase ``train``) and,
every ``eval_every`` environment steps, closes a *round*: a ``rounds.csv`` row, an evaluation
point of the protocol every agent shares (:mod:`ogm.train.evaluation`) and a checkpoint.

Checkpoints hold no pickle: the networks and optimisers (SB3's own list of them, from
``get_parameters``) go to safetensors + JSON, and the replay buffer of DQN / SAC to a plain
npz, with the RNG states, SB3's counters and schedule values, and the episodes under way:
the gridworld vector env's exact state, the partial episodes and SB3's last observations.
A resumed run continues from the last round with the same rows as a run never stopped.
(A Gymnasium env outside ogm's gridworlds cannot save its state: there the episodes under
way at the checkpoint restart.)

Observations are flattened into an MLP (``net_arch``); SB3's NatureCNN needs images of at
least 36x36 pixels, which the gridworld planes are not.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common import preprocessing
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from ogm.baselines.common import (
    EpisodeCollector,
    EpisodeLog,
    HiddenLayers,
    episode_state,
    event_names_of,
    make_env,
    mean_or_nan,
    primary_event_of,
    restore_episode_state,
)
from ogm.data.trajectory import Trajectory
from ogm.limits import MAX_BATCH, MAX_BATCH_STEPS, MAX_REPLAY, MAX_STEPS, MAX_UPDATES
from ogm.models.decision_transformer import MIN_FRAME
from ogm.train import evaluation
from ogm.train.config import CommonConfig
from ogm.train.progress import Progress
from ogm.train.rundir import (
    Checkpoint,
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


# Bounds of SB3's size hyperparameters (ogm.limits)
SIZE_BOUNDS = {
    "n_steps": MAX_BATCH,
    "batch_size": MAX_BATCH,
    "n_epochs": MAX_UPDATES,
    "buffer_size": MAX_REPLAY,
    "learning_starts": MAX_STEPS,
    "train_freq": MAX_UPDATES,
    "gradient_steps": MAX_UPDATES,
    "target_update_interval": MAX_UPDATES,
}


def _finite(value: Any) -> bool:
    """Whether every number inside ``value`` (lists and tables too) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


class SB3Config(CommonConfig):
    """PPO, DQN or SAC from scratch; ``hyperparams`` go to the SB3 constructor as they are."""

    kind: Literal["sb3"] = "sb3"
    algo: Literal["ppo", "dqn", "sac"] = "ppo"
    total_timesteps: int = Field(100_000, gt=0, le=MAX_STEPS)
    net_arch: HiddenLayers = Field(default_factory=lambda: [64, 64])
    hyperparams: dict[str, Any] = Field(default_factory=dict)

    @field_validator("hyperparams")
    @classmethod
    def _bounded(cls, hyperparams: dict[str, Any]) -> dict[str, Any]:
        """Sizes within :data:`SIZE_BOUNDS` and finite numbers; SB3 checks the rest when
        the model is built, before the run directory is made (``build_model``)."""
        for key, bound in SIZE_BOUNDS.items():
            value = hyperparams.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > bound:
                raise ValueError(f"{key}={value} is above the bound of {bound}")
        bad = [key for key, value in hyperparams.items() if not _finite(value)]
        if bad:
            raise ValueError(f"{', '.join(bad)} hold NaN or infinite values")
        return hyperparams

    @model_validator(mode="after")
    def _rollout_fits(self) -> SB3Config:
        steps = self.hyperparams.get("n_steps", 0)
        if isinstance(steps, int) and steps * self.num_envs > MAX_BATCH_STEPS:
            raise ValueError(
                f"hyperparams.n_steps={steps} x num_envs={self.num_envs} steps a rollout is "
                f"above the bound of {MAX_BATCH_STEPS}"
            )
        return self


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


REPLAY_ARRAYS = ("actions", "rewards", "dones", "timeouts")
CHUNK = 4096  # rows compared at a time: the comparison's temporaries stay small


def _rows_match(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(rows, envs) mask: True where ``left[row, env]`` equals ``right[row, env]`` entirely."""
    match = np.empty(left.shape[:2], bool)
    for start in range(0, len(left), CHUNK):
        a, b = left[start : start + CHUNK], right[start : start + CHUNK]
        match[start : start + len(a)] = (a == b).reshape(*a.shape[:2], -1).all(-1)
    return match


def _restore_stacks(
    obs: np.ndarray, shifted: np.ndarray, whole: np.ndarray, newest: np.ndarray
) -> None:
    """Fill ``obs`` (rows, envs, stack, ...) from :func:`_replay_arrays`' parts. Per env, the
    frames form one sequence to which a whole row adds its ``stack`` frames and a shifted row
    its newest one; a row's observation is the last ``stack`` frames of the sequence there."""
    if len(shifted) and shifted[0].any():
        raise ValueError("replay/obs_shifted marks a first row as one frame on from nothing")
    obs[~shifted] = whole
    stack, whole_env, newest_env = obs.shape[2], np.nonzero(~shifted)[1], np.nonzero(shifted)[1]
    for env in np.flatnonzero(shifted.any(0)):
        mask = shifted[:, env]
        end = np.cumsum(np.where(mask, 1, stack))  # the sequence's length after each row
        sequence = np.empty((end[-1], *obs.shape[3:]), obs.dtype)
        sequence[(end[~mask] - stack)[:, None] + np.arange(stack)] = whole[whole_env == env]
        sequence[end[mask] - 1] = newest[newest_env == env]
        obs[mask, env] = sequence[(end[mask] - stack)[:, None] + np.arange(stack)]


def _replay_arrays(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """The filled part of ``buffer``, each frame once: Atari's replay rows hold stacks of
    the last 4 frames and a next observation that is the next row's observation, so stored
    as SB3 keeps them a 100k buffer would write 5.6 GB per checkpoint. A row whose stack is
    the previous row's one frame on keeps only its newest frame, a next observation equal to
    the next row's observation is left out; everything else is stored whole. Lossless for
    any observation (rows that do not match are simply whole)."""
    size = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {"replay/pos": np.array(buffer.pos), "replay/full": np.array(buffer.full)}
    for key in REPLAY_ARRAYS:
        data = getattr(buffer, key, None)
        if data is not None:
            arrays[f"replay/{key}"] = data[:size]
    obs = buffer.observations[:size]
    shifted = np.zeros(obs.shape[:2], bool)  # row 0 and flat observations: stored whole
    if obs.ndim >= 4:  # a stack one frame on: the previous row's frames 1.. are its frames ..-1
        shifted[1:] = _rows_match(obs[1:, :, :-1], obs[:-1, :, 1:])
    arrays["replay/obs_shifted"] = shifted
    arrays["replay/obs_whole"] = obs[~shifted]
    arrays["replay/obs_newest"] = obs[:, :, -1][shifted]
    if buffer.next_observations is not None:  # None under SB3's optimize_memory_usage
        next_obs = buffer.next_observations[:size]
        same = np.zeros(obs.shape[:2], bool)  # the last row has no next row
        same[:-1] = _rows_match(next_obs[:-1], obs[1:])
        arrays["replay/next_same"] = same
        arrays["replay/next_whole"] = next_obs[~same]
    return arrays


def _load_replay(buffer: ReplayBuffer, arrays: dict[str, np.ndarray]) -> None:
    for key in REPLAY_ARRAYS:
        if f"replay/{key}" in arrays:
            data = arrays[f"replay/{key}"]
            getattr(buffer, key)[: len(data)] = data
    obs = buffer.observations[: len(arrays["replay/obs_shifted"])]
    _restore_stacks(
        obs, arrays["replay/obs_shifted"], arrays["replay/obs_whole"], arrays["replay/obs_newest"]
    )
    if buffer.next_observations is not None:
        same = arrays["replay/next_same"]
        next_obs = buffer.next_observations[: len(same)]
        next_obs[~same] = arrays["replay/next_whole"]
        next_obs[:-1][same[:-1]] = obs[1:][same[:-1]]
    buffer.pos = int(arrays["replay/pos"])
    buffer.full = bool(arrays["replay/full"])


# Counters and schedule values of an SB3 algorithm that its next steps read (DQN's
# exploration rate, for one, is only recomputed after a step).
COUNTERS = (
    "num_timesteps",
    "_n_updates",
    "_episode_num",
    "_n_calls",
    "exploration_rate",
    "_current_progress_remaining",
)


def save_model(run: RunDir, model: BaseAlgorithm, state: dict[str, Any]) -> Path:
    """Checkpoint ``model`` without pickle: networks, optimisers, counters, RNGs, replay,
    and (for a gridworld :class:`SB3VecEnv`) the episodes under way, so that a resumed
    run continues them exactly."""
    tensors, skeleton = pack_state(model.get_parameters(), "params")
    _, variables = model._get_torch_save_params()
    for name in variables:
        tensors[f"var/{name}"] = getattr(model, name).detach().clone()
    rng_tensors, rng_skeleton = pack_state(torch_rng_state(), "rng")
    tensors.update(rng_tensors)
    arrays: dict[str, np.ndarray] = {}
    if isinstance(model, OffPolicyAlgorithm):
        arrays.update(_replay_arrays(model.replay_buffer))
    venv = model.get_env()
    if isinstance(venv, SB3VecEnv) and model._last_obs is not None:
        arrays.update(episode_state(venv.env, venv.collector, model._last_obs))
        arrays["episode_starts"] = np.asarray(model._last_episode_starts)
    counters = {
        **{name: getattr(model, name) for name in COUNTERS if hasattr(model, name)},
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


def load_model(model: BaseAlgorithm, checkpoint: Checkpoint) -> None:
    """Restore what :func:`save_model` wrote into a freshly built ``model``."""
    with checkpoint.restoring():
        params = unpack_state(checkpoint.state["params"], checkpoint.tensors)
        model.set_parameters(params, exact_match=True, device=model.device)
        for name in model._get_torch_save_params()[1]:
            with torch.no_grad():
                getattr(model, name).copy_(checkpoint.tensors[f"var/{name}"])
        set_torch_rng_state(unpack_state(checkpoint.state["torch_rng"], checkpoint.tensors))
        counters = checkpoint.state["sb3"]
        for name in COUNTERS:
            if hasattr(model, name):
                setattr(model, name, type(getattr(model, name))(counters[name]))
        name, keys, pos, has_gauss, gauss = counters["numpy_rng"]
        np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, gauss))
        model.action_space.np_random.bit_generator.state = counters["action_space_rng"]
        if isinstance(model, OffPolicyAlgorithm):
            _load_replay(model.replay_buffer, checkpoint.arrays)
        venv = model.get_env()
        if isinstance(venv, SB3VecEnv):
            obs = restore_episode_state(venv.env, venv.collector, checkpoint.arrays)
            if obs is not None:  # else SB3 resets the env: the episodes under way restart
                model._last_obs = obs
                model._last_episode_starts = np.asarray(checkpoint.arrays["episode_starts"], bool)


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


class ProgressCallback(BaseCallback):
    """Shows the run's progress in environment steps (``ogm.train.progress``)."""

    def __init__(self, algo: str, total: int, initial: int) -> None:
        super().__init__()
        self.progress = Progress(total, desc=algo.upper(), unit="env steps", initial=initial)

    def _on_step(self) -> bool:
        self.progress.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.progress.close()


# ----------------------------------------------------------------------------- run


def is_image_space(space: gym.Space) -> bool:
    """Whether observations are image frames (uint8 pixels 0-255, channels first, at least
    36x36) for SB3's ``CnnPolicy``; a gridworld's 0/1 planes are not."""
    return (
        preprocessing.is_image_space(space, check_channels=False)
        and min(space.shape[1:]) >= MIN_FRAME
    )


def build_model(
    config: SB3Config,
    venv: VecEnv,
    *,
    algo: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> BaseAlgorithm:
    """The SB3 algorithm ``algo`` (default ``config.algo``) with ``defaults`` (default ogm's
    ``DEFAULT_HYPERPARAMS``) under the user's hyperparams: ``CnnPolicy`` (the Nature CNN)
    on image frames, else an MLP of ``net_arch``."""
    name = algo or config.algo
    discrete = isinstance(venv.action_space, gym.spaces.Discrete)
    if name == "dqn" and not discrete:
        raise ValueError(f"algo 'dqn' needs discrete actions; {config.env_id} has continuous ones")
    if name == "sac" and discrete:
        raise ValueError(f"algo 'sac' needs continuous actions; {config.env_id} has discrete ones")
    defaults = DEFAULT_HYPERPARAMS[name] if defaults is None else defaults
    hyperparams = {**defaults, **config.hyperparams}
    image = is_image_space(venv.observation_space)
    # SB3's advice on a model it then refuses would only bury the error: its warnings are
    # shown once the model is built
    with warnings.catch_warnings(record=True) as advice:
        warnings.simplefilter("always")
        try:
            policy_kwargs = {} if image else {"net_arch": list(config.net_arch)}
            policy_kwargs.update(hyperparams.pop("policy_kwargs", {}))
            model = ALGOS[name](
                "CnnPolicy" if image else "MlpPolicy",
                venv,
                policy_kwargs=policy_kwargs,
                seed=config.seed,
                device=config.torch_device(),
                verbose=0,
                **hyperparams,
            )
        except (TypeError, ValueError, AssertionError, KeyError) as err:  # what SB3 raises
            raise ValueError(f"hyperparams for {name} are refused by SB3: {err}") from None
    # silent until a run gives it a folder: SB3's default logger makes one in /tmp per learn()
    model.set_logger(Logger(None, []))
    for warning in advice:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return model


def run(config: SB3Config, run_dir: Path) -> None:
    """Train (or resume) an SB3 agent in ``run_dir``, logging as every ogm agent does.

    The model is built (SB3 checks the hyperparameters) before the run directory is
    made, so bad input leaves nothing behind.
    """
    venv = SB3VecEnv(make_env(config, config.num_envs, seed=config.seed))
    try:
        model = build_model(config, venv)
    except BaseException:
        venv.close()
        raise
    run = RunDir.open_or_create(run_dir, kind="sb3", config=config, seed=config.seed)
    try:
        checkpoint = run.resume()
        model.set_logger(configure(str(run.path / "tb" / "sb3"), ["tensorboard"]))
        round = 0
        if checkpoint is not None:
            load_model(model, checkpoint)
            with checkpoint.restoring():
                round = int(checkpoint.state["round"])
        log = EpisodeLog(run, venv.collector.event_names, primary_event_of(venv.env))
        callback = RoundCallback(config, run, venv, log, round)
        if checkpoint is not None:
            with checkpoint.restoring():
                callback.final_eval = {
                    k: float(v) for k, v in checkpoint.state["final_eval"].items()
                }
        remaining = config.total_timesteps - model.num_timesteps
        if remaining > 0:
            progress = ProgressCallback(config.algo, config.total_timesteps, model.num_timesteps)
            model.learn(
                remaining,
                callback=CallbackList([callback, progress]),
                reset_num_timesteps=checkpoint is None,
            )
        run.set_status(
            "done",
            env_steps=model.num_timesteps,
            final_eval=evaluation.final_summary(callback.final_eval),
        )
    except BaseException as err:
        run.record_failure(err)
        raise
    finally:
        venv.close()
        run.close()
