"""What every baseline shares: episodes from a vector env, the episodes.csv log, the MLP policy.

All baselines step a Gymnasium vector env made by :func:`ogm.envs.make_vector` in
*same-step* autoreset mode: when a copy's episode ends, the observation returned is already
the first one of its next episode and the last one sits in ``infos["final_obs"]``. That is
the convention Stable-Baselines3 expects too, so one env serves SB3 and our own loops.

:class:`EpisodeCollector` turns those batched steps into finished :class:`Trajectory`
objects (observed and hidden rewards, safety events), and :class:`EpisodeLog` writes them to
``episodes.csv`` in the schema shared with the OGM agent, so that one report reads them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from pydantic import Field
from torch import nn

from ogm.analysis.episodes import EpisodeRecorder
from ogm.data.trajectory import Trajectory
from ogm.envs import game_info, make_vector
from ogm.limits import MAX_LAYERS, MAX_WIDTH
from ogm.models.decision_transformer import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    CategoricalPolicy,
    Policy,
    TanhGaussianPolicy,
)
from ogm.train.config import CommonConfig
from ogm.train.rundir import RunDir, RunDirError, episode_row, load_checkpoint

# Hidden layer widths of an MLP (``net_arch``), bounded like every size (ogm.limits).
HiddenLayers = Annotated[
    list[Annotated[int, Field(gt=0, le=MAX_WIDTH)]], Field(max_length=MAX_LAYERS)
]

# ----------------------------------------------------------------------------- environments


def mean_or_nan(values: Sequence[float]) -> float:
    """The mean, or NaN for no values (a round with no finished episode)."""
    return float(np.mean(values)) if len(values) else float("nan")


def make_env(config: CommonConfig, num_envs: int, seed: int | None) -> gym.vector.VectorEnv:
    """The config's environment as a same-step-autoreset vector env of ``num_envs`` copies."""
    try:
        game_info(config.env_id)
        vector: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}
    except ValueError:  # any other Gymnasium id: gymnasium.make_vec takes it as a vector kwarg
        vector = {
            "vectorization_mode": "sync",
            "vector_kwargs": {"autoreset_mode": AutoresetMode.SAME_STEP},
        }
    env = make_vector(config.env_id, num_envs, seed=seed, **vector, **config.env_kwargs)
    mode = env.metadata.get("autoreset_mode")
    if mode is not None and AutoresetMode(mode) != AutoresetMode.SAME_STEP:
        raise RuntimeError(f"{config.env_id}: expected a same-step autoreset env, got {mode}")
    return env


def _describers(env: gym.vector.VectorEnv) -> list[Any]:
    """Where a vector env's event names may be declared: the vector env itself, its
    unwrapped base, or (a Gymnasium ``SyncVectorEnv`` of ogm envs) its first copy."""
    base = getattr(env, "unwrapped", None)
    copies = getattr(base, "envs", None) or [None]
    return [env, base, getattr(copies[0], "unwrapped", None)]


def event_names_of(env: gym.vector.VectorEnv) -> tuple[str, ...]:
    """The safety event names of a vector env (none for envs that declare none)."""
    for source in _describers(env):
        names = getattr(source, "event_names", None)
        if names is not None:
            return tuple(names)
    return ()


def primary_event_of(env: gym.vector.VectorEnv) -> str | None:
    """The undesirable behaviour experiments track in this env, if it names one."""
    for source in _describers(env):
        name = getattr(source, "primary_event", None)
        if name is not None:
            return name
    return None


class EpisodeCollector:
    """Accumulates the steps of every copy of a vector env into finished trajectories.

    Call :meth:`start` with the observations of ``reset``, then :meth:`step` after each
    ``env.step``; it returns the trajectories that ended on that step (``source="online"``).
    """

    def __init__(self, num_envs: int, event_names: Sequence[str]) -> None:
        self.num_envs = num_envs
        self.event_names = tuple(event_names)
        self._obs: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        self._steps: list[dict[str, list]] = [self._empty() for _ in range(num_envs)]

    def _empty(self) -> dict[str, list]:
        keys = ("actions", "rewards", "hidden", "terminated", "truncated")
        return {k: [] for k in (*keys, *(f"ev_{n}" for n in self.event_names))}

    def start(self, observations: np.ndarray) -> None:
        """Begin a fresh episode in every copy (after ``env.reset``)."""
        for i in range(self.num_envs):
            self._obs[i] = [np.array(observations[i])]
            self._steps[i] = self._empty()

    def step(
        self,
        actions: np.ndarray,
        next_obs: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        infos: Mapping[str, Any],
    ) -> list[Trajectory]:
        """Record one batched step; return the episodes it finished, in copy order."""
        done = np.logical_or(terminated, truncated)
        hidden = infos.get("hidden_reward", rewards)  # the step's values, also for finished copies
        events = infos.get("events", {})
        finished = []
        for i in range(self.num_envs):
            steps = self._steps[i]
            steps["actions"].append(np.array(actions[i]))
            steps["rewards"].append(float(rewards[i]))
            steps["hidden"].append(float(hidden[i]))
            steps["terminated"].append(bool(terminated[i]))
            steps["truncated"].append(bool(truncated[i]))
            for name in self.event_names:
                steps[f"ev_{name}"].append(bool(events[name][i]) if name in events else False)
            if done[i]:
                self._obs[i].append(np.array(infos["final_obs"][i]))
                finished.append(self._trajectory(i))
                self._obs[i] = [np.array(next_obs[i])]
                self._steps[i] = self._empty()
            else:
                self._obs[i].append(np.array(next_obs[i]))
        return finished

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The episodes under way as plain arrays, for a checkpoint."""
        arrays = {}
        for i in range(self.num_envs):
            arrays[f"{i}/observations"] = np.stack(self._obs[i])
            for key, values in self._steps[i].items():
                arrays[f"{i}/{key}"] = np.asarray(values)
        return arrays

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Continue the episodes that :meth:`state_arrays` saved."""
        for i in range(self.num_envs):
            self._obs[i] = list(arrays[f"{i}/observations"])
            self._steps[i] = {key: list(arrays[f"{i}/{key}"]) for key in self._empty()}
            lengths = {len(v) for v in self._steps[i].values()}
            if lengths != {len(self._obs[i]) - 1}:
                raise ValueError(f"the partial episode of copy {i} has steps of lengths {lengths}")

    def _trajectory(self, i: int) -> Trajectory:
        steps = self._steps[i]
        return Trajectory(
            observations=np.stack(self._obs[i]),
            actions=np.stack(steps["actions"]),
            rewards=np.asarray(steps["rewards"]),
            hidden_rewards=np.asarray(steps["hidden"]),
            terminations=np.asarray(steps["terminated"]),
            truncations=np.asarray(steps["truncated"]),
            events={n: np.asarray(steps[f"ev_{n}"], bool) for n in self.event_names},
            source="online",
        )


def episode_state(
    env: gym.vector.VectorEnv, collector: EpisodeCollector, obs: np.ndarray
) -> dict[str, np.ndarray]:
    """What continuing the episodes under way needs, as checkpoint arrays: the vector env's
    exact state with its random streams, the collector's partial episodes and the current
    observations. Empty for an env whose state cannot be saved (not a gridworld): its
    episodes restart when the run resumes."""
    get_state = getattr(env, "get_state", None)
    if get_state is None:
        return {}
    return {
        **{f"env/{k}": v for k, v in get_state(rng=True).items()},
        **{f"episodes/{k}": v for k, v in collector.state_arrays().items()},
        "obs": np.asarray(obs),
    }


def restore_episode_state(
    env: gym.vector.VectorEnv, collector: EpisodeCollector, arrays: Mapping[str, np.ndarray]
) -> np.ndarray | None:
    """Restore what :func:`episode_state` saved and return the observations; None when
    it saved nothing (the caller resets the env)."""
    if "obs" not in arrays:
        return None
    env.set_state({k[4:]: v for k, v in arrays.items() if k.startswith("env/")})
    collector.load_state_arrays({k[9:]: v for k, v in arrays.items() if k.startswith("episodes/")})
    obs = np.asarray(arrays["obs"])
    if obs.shape != env.observation_space.shape:
        raise ValueError(
            f"stored observations have shape {obs.shape}, not {env.observation_space.shape}"
        )
    return obs


# ----------------------------------------------------------------------------- episodes.csv


class EpisodeLog:
    """Writes finished episodes to ``episodes.csv`` and offers them to the episode recorder.

    Episodes are numbered per (phase, mode), consecutively over the whole run; the counts
    are read back from the file, so a resumed run (whose logs ``RunDir.resume`` cut back)
    continues the numbering. The recorder keeps training episodes for the report's
    animations; agents that never train in the environment (``record_eval``) give it their
    greedy evaluation episodes instead.
    """

    def __init__(
        self,
        run: RunDir,
        event_names: Sequence[str],
        primary_event: str | None = None,
        *,
        record_eval: bool = False,
    ) -> None:
        self.event_names = tuple(event_names)
        self.csv = run.episodes(self.event_names)
        self.recorder = EpisodeRecorder(run.path, primary_event)
        self.record_eval = record_eval
        self.counts: dict[tuple[str, str], int] = {}
        for row in self.csv.read():
            key = (row["phase"], row["mode"])
            self.counts[key] = self.counts.get(key, 0) + 1

    def write(
        self,
        trajectories: Sequence[Trajectory],
        *,
        phase: str,
        mode: str = "sampled",
        round: int,
        env_steps: int | Sequence[int],
        target_returns: Sequence[float] | None = None,
        kl_to_init: Sequence[float] | None = None,
    ) -> None:
        """Append one row per trajectory; ``env_steps`` is one clock value for all, or one
        per trajectory (the training steps at each episode's end). ``target_returns`` and
        ``kl_to_init`` (summed KL(pi || pi_init)) are per trajectory, NaN when not given."""
        steps = [env_steps] * len(trajectories) if isinstance(env_steps, int) else env_steps
        record = phase == "train" or (self.record_eval and mode == "greedy")
        rows = []
        for k, traj in enumerate(trajectories):
            episode = self.counts.get((phase, mode), 0)
            self.counts[phase, mode] = episode + 1
            target = float("nan") if target_returns is None else target_returns[k]
            kl = float("nan") if kl_to_init is None else kl_to_init[k]
            rows.append(
                episode_row(
                    traj,
                    phase=phase,
                    mode=mode,
                    round=round,
                    episode=episode,
                    env_steps=int(steps[k]),
                    event_names=self.event_names,
                    target_return=target,
                    kl_to_init=kl,
                )
            )
            if record:
                self.recorder.record(traj, episode=episode, phase=phase)
        self.csv.extend(rows)

    def flush(self) -> None:
        """Write the recorder's latest episode (call at checkpoints and at the end)."""
        self.recorder.flush()


# ----------------------------------------------------------------------------- MLP policy


class MLP(nn.Module):
    """Flattened observations (normalised by frozen buffers) through tanh hidden layers."""

    def __init__(self, obs_shape: Sequence[int], out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.obs_shape = tuple(int(d) for d in obs_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(np.prod(self.obs_shape))
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("obs_mean", torch.zeros(self.obs_shape))
        self.register_buffer("obs_std", torch.ones(self.obs_shape))

    def set_obs_normalizer(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Freeze the observation mean and std (computed from the training data)."""
        self.obs_mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
        self.obs_std.copy_(torch.as_tensor(np.asarray(std, np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net((obs.float() - self.obs_mean) / self.obs_std)


class MLPPolicy(nn.Module):
    """A small stochastic policy on one observation (no memory, no return conditioning).

    Its distributions are those of the Decision Transformer (:class:`CategoricalPolicy`, or
    :class:`TanhGaussianPolicy` with a state-independent log-std, squashed into the action
    bounds), so PPO and evaluation treat both policy types alike.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_space: gym.Space,
        hidden: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete:
            bounded = isinstance(action_space, gym.spaces.Box) and action_space.is_bounded()
            if not bounded:
                raise ValueError(
                    f"MLPPolicy needs Discrete or bounded Box actions, got {action_space}"
                )
        self.action_space = action_space
        self.hidden = tuple(int(h) for h in hidden)
        self.act_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.net = MLP(obs_shape, self.act_dim, self.hidden)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(self.act_dim))
            self.register_buffer("action_low", torch.as_tensor(action_space.low).flatten().float())
            self.register_buffer(
                "action_high", torch.as_tensor(action_space.high).flatten().float()
            )

    def distribution(self, obs: torch.Tensor) -> Policy:
        """The action distribution in each observation of the batch."""
        out = self.net(obs)
        if self.discrete:
            return CategoricalPolicy(out)
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(out)
        return TanhGaussianPolicy(out, log_std, self.action_low, self.action_high)

    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions for a batch of observations: the mode, or a sample."""
        dist = self.distribution(obs)
        return dist.mode() if deterministic else dist.sample()

    def spec(self) -> dict[str, Any]:
        """JSON that :meth:`from_spec` rebuilds the (untrained) policy from."""
        space = self.action_space
        action = (
            {"n": int(space.n)}
            if self.discrete
            else {"low": space.low.tolist(), "high": space.high.tolist()}
        )
        return {
            "obs_shape": list(self.net.obs_shape),
            "action_space": action,
            "hidden": list(self.hidden),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> MLPPolicy:
        """Inverse of :meth:`spec`."""
        action = spec["action_space"]
        if "n" in action:
            space: gym.Space = gym.spaces.Discrete(int(action["n"]))
        else:
            low, high = (
                np.asarray(action["low"], np.float32),
                np.asarray(action["high"], np.float32),
            )
            space = gym.spaces.Box(low, high, dtype=np.float32)
        return cls(spec["obs_shape"], space, spec["hidden"])


def load_mlp_policy(path: Path | str) -> MLPPolicy:
    """The MLP policy stored in a checkpoint or a run directory (kinds ``bc``, ``kl_ppo``)."""
    checkpoint = load_checkpoint(Path(path))
    if "policy_spec" not in checkpoint.state:
        raise RunDirError(f"checkpoint {checkpoint.path} holds no MLP policy")
    with checkpoint.restoring():
        spec = checkpoint.state["policy_spec"]
        sizes = [*spec["obs_shape"], *spec["hidden"], len(spec["hidden"])]
        if not all(isinstance(n, int) and 0 < n <= MAX_WIDTH for n in sizes):
            raise ValueError(f"policy_spec holds sizes outside 1..{MAX_WIDTH}: {sizes}")
        policy = MLPPolicy.from_spec(spec)
        load_policy_tensors(policy, checkpoint.tensors)
    return policy


def policy_tensors(policy: nn.Module, prefix: str = "policy") -> dict[str, torch.Tensor]:
    """A module's state dict under ``prefix.`` (the layout :func:`load_mlp_policy` reads)."""
    return {f"{prefix}.{k}": v for k, v in policy.state_dict().items()}


def load_policy_tensors(
    policy: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str = "policy"
) -> None:
    """Load what :func:`policy_tensors` stored (other tensors of the checkpoint ignored)."""
    start = prefix + "."
    policy.load_state_dict({k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)})
