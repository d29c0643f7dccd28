"""Throughput of the Decision Transformer: training updates/s, rollout env-steps/s, FLOP/s.

Two sizes:
- gridworld: 2 layers, 64 wide, context 20, tomato_watering observations (C x 7 x 9 planes),
  4 discrete actions, batch 64;
- mujoco: ODT's size, 4 layers, 4 heads, 512 wide, context 20, batch 256, 11-dim
  observations, 3-dim tanh-Gaussian actions.

Achieved FLOP/s of a training update: the FLOPs of one update (forward and backward) as
counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention),
times updates/s, compared with a plain 2048^3 float32 matmul timed in the same run. Rollouts step ``--envs`` copies at once with
:class:`ogm.agents.DTActor`; for comparison the reference way (one env at a time, the whole
context re-encoded from Python lists every step) is timed on the same model.
The mujoco-size rollout uses a synthetic 11-dim environment (MuJoCo is an optional
dependency), so it measures the agent's side.

    python benchmarks/bench_model.py            # full
    python benchmarks/bench_model.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch.utils.flop_counter import FlopCounterMode

from ogm.agents import ConditionedDT, make_strategy, rollout
from ogm.data.trajectory import Trajectory
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for
from ogm.train.offline import make_optimizer, update
from ogm.train.segments import SegmentBatch, TrajectoryPool, dt_loss


class SyntheticEnv(gym.Env):
    """11-dim observations, 3-dim actions in [-1, 1], 100-step episodes; trivial dynamics."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (11,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, self.np_random.normal(size=11).astype(np.float32)
        return self.x, {}

    def step(self, action):
        self.t += 1
        self.x = 0.99 * self.x + 0.01 * np.resize(action, 11).astype(np.float32)
        return self.x, float(action.sum()), False, self.t >= 100, {}


SIZES = {
    "gridworld": {"n_layer": 2, "n_head": 2, "n_embd": 64, "batch": 64},
    "mujoco": {"n_layer": 4, "n_head": 4, "n_embd": 512, "batch": 256},
}


def matmul_flops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_setup(size: str, device: torch.device):
    """Model, fake demonstrations and a vector env for one size."""
    rng = np.random.default_rng(0)
    if size == "gridworld":
        from ogm.envs import make_vector

        probe = make_vector("ogm/TomatoWatering-v0", 1)
        obs_shape, act = probe.single_observation_space.shape, {"act_dim": 4, "discrete": True}
        probe.close()
        make_env = lambda n: make_vector(  # noqa: E731
            "ogm/TomatoWatering-v0", n, autoreset_mode=AutoresetMode.DISABLED
        )
        fake_obs = lambda n: rng.integers(0, 2, (n, *obs_shape)).astype(np.uint8)  # noqa: E731
        fake_act = lambda n: rng.integers(0, 4, n)  # noqa: E731
    else:
        obs_shape = (11,)
        act = {
            "act_dim": 3,
            "discrete": False,
            "action_low": (-1.0,) * 3,
            "action_high": (1.0,) * 3,
        }
        make_env = lambda n: gym.vector.SyncVectorEnv(  # noqa: E731
            [SyntheticEnv] * n, autoreset_mode=AutoresetMode.DISABLED
        )
        fake_obs = lambda n: rng.normal(size=(n, 11)).astype(np.float32)  # noqa: E731
        fake_act = lambda n: rng.uniform(-1, 1, (n, 3)).astype(np.float32)  # noqa: E731
    s = SIZES[size]
    torch.manual_seed(0)
    config = DTConfig(
        obs_shape=obs_shape,
        return_bin_edges=return_bin_edges_for(0.0, 100.0, 64),
        context_len=20,
        n_layer=s["n_layer"],
        n_head=s["n_head"],
        n_embd=s["n_embd"],
        **act,
    )
    model = DecisionTransformer(config).to(device)
    trajectories = [
        Trajectory(
            observations=fake_obs(101),
            actions=fake_act(100),
            rewards=rng.uniform(0, 1, 100),
            terminations=np.zeros(100, bool),
            truncations=np.arange(100) == 99,
        )
        for _ in range(50)
    ]
    return model, TrajectoryPool(trajectories), make_env


def update_flops(model: DecisionTransformer, batch: SegmentBatch) -> float:
    """FLOPs of one forward + backward pass of the DT loss on ``batch``."""
    with FlopCounterMode(display=False) as counter:
        dt_loss(model, batch)[0].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_training(model, pool, batch: int, updates: int, device) -> tuple[float, float]:
    """Updates/s and FLOPs per update."""
    optimizer, scheduler = make_optimizer(model, 1e-4, 5e-4, 10)
    rng = np.random.default_rng(0)
    batches = [pool.sample(batch, model.config.context_len, rng).to(device) for _ in range(4)]
    flops = update_flops(model, batches[0])
    for i in range(3):
        update(model, batches[i % 4], optimizer, scheduler)
    sync(device)
    t = time.perf_counter()
    for i in range(updates):
        update(model, batches[i % 4], optimizer, scheduler)
    sync(device)
    return updates / (time.perf_counter() - t), flops


def bench_rollout(model, make_env, n_envs: int, episodes: int, device) -> float:
    env = make_env(n_envs)
    agent = ConditionedDT(model, make_strategy("fixed:50"))
    rollout(agent, env, n_envs, seed=0, deterministic=False)  # warm-up
    t = time.perf_counter()
    results = rollout(agent, env, episodes, seed=1, deterministic=False)
    steps = sum(r.trajectory.length for r in results)
    env.close()
    return steps / (time.perf_counter() - t)


@torch.no_grad()
def bench_reference_rollout(model, make_env, steps: int, device) -> float:
    """The reference way: one env, Python lists, the whole context re-encoded every step."""
    model.eval()
    env = make_env(1)
    cfg = model.config
    obs, _ = env.reset(seed=0)
    history = {"rtg": [], "obs": [], "act": [], "t": []}
    target, t0 = 50.0, time.perf_counter()
    for step in range(steps):
        history["obs"].append(torch.as_tensor(obs[0], dtype=torch.float32))
        history["rtg"].append(torch.tensor([target]))
        history["act"].append(torch.zeros(()) if cfg.discrete else torch.zeros(cfg.act_dim))
        history["t"].append(torch.tensor(step))
        K = cfg.context_len
        window = {k: torch.stack(v[-K:])[None].to(device) for k, v in history.items()}
        out = model(
            window["rtg"],
            window["obs"],
            window["act"].long() if cfg.discrete else window["act"],
            window["t"],
        )
        action = out.policy[:, -1].sample()
        history["act"][-1] = action[0].float().cpu() if cfg.discrete else action[0].cpu()
        obs, reward, terminated, truncated, _ = env.step(action.cpu().numpy())
        target -= float(reward[0])
        if terminated[0] or truncated[0]:
            obs, _ = env.reset(options={"reset_mask": np.ones(1, bool)})
            history = {k: [] for k in history}
    env.close()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--envs", type=int, default=16, help="copies stepped at once")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_flops(device, reps=3 if args.quick else 10)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"reference matmul 2048^3 float32: {peak / 1e9:8.1f} GFLOP/s")
    for size in args.sizes:
        model, pool, make_env = make_setup(size, device)
        batch = SIZES[size]["batch"]
        slow = size == "mujoco" and device.type == "cpu"  # ~1 TFLOP per update
        updates = 1 if args.quick else (3 if slow else 100)
        ups, flops_per_update = bench_training(model, pool, batch, updates, device)
        flops = ups * flops_per_update
        episodes = args.envs if size == "mujoco" else 4 * args.envs
        if args.quick:
            episodes = args.envs
        steps_s = bench_rollout(model, make_env, args.envs, episodes, device)
        # whole episodes (100 steps), like the batched rollout
        ref_s = bench_reference_rollout(model, make_env, 100 if args.quick or slow else 300, device)
        print(
            f"{size:9} {model.num_params() / 1e6:6.2f}M params  batch {batch:3}  K 20 | "
            f"train {ups:8.2f} updates/s  {flops / 1e9:7.1f} GFLOP/s "
            f"({100 * flops / peak:5.1f}% of matmul) | "
            f"rollout {steps_s:8.0f} env-steps/s with {args.envs} envs, "
            f"reference one-env re-encode {ref_s:6.0f} ({steps_s / ref_s:5.1f}x)"
        )


if __name__ == "__main__":
    main()
