"""Rollout throughput: ogm's batched DTActor on a vector env against the reference loop.

The reference (online-dt / decision-transformer evaluation code) plays one environment at
a time and, at every step, concatenates the new step onto growing history tensors, slices
the last K steps, left-pads them and re-encodes that context with a batch of one. ogm's
``rollout`` keeps one preallocated rolling context per copy and runs one forward pass per
step for all copies of a ``GridworldVectorEnv``. Both sample actions from the same
(randomly initialised, ODT-sized) Decision Transformer; the figure is environment steps
per second, measured in the same process.

``--precision``: the same rollout of the built-in gridworld experiments' DT (2 layers x 64,
context 5) acting in fp32 against bfloat16 autocast, at 16 to 256 copies (best of three
alternating repeats each): where acting in fp32 pays, which sets
``ogm.agents.actor.FP32_ACTING_BELOW``.

    .venv/bin/python benchmarks/bench_rollout.py [--episodes 8] [--threads 1] [--precision]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode

import ogm  # noqa: F401  (registers the gridworlds)
from ogm.agents import ConditionedDT, actor, make_strategy, rollout
from ogm.envs import make_vector
from ogm.models import DecisionTransformer, DTConfig, return_bin_edges_for

ENV_ID = "ogm/TomatoWatering-v0"
TARGET = 20.0


@torch.no_grad()
def reference_rollout(model: DecisionTransformer, n_episodes: int, seed: int) -> int:
    """The reference's loop: one env, full K-step context re-encoded each step. Env steps."""
    K = model.config.context_len
    env = gym.make(ENV_ID)
    steps = 0
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        states = torch.as_tensor(obs, dtype=torch.float32)[None]
        actions = torch.zeros(0, dtype=torch.long)
        rtg = torch.tensor([[TARGET]])
        timesteps = torch.zeros(1, dtype=torch.long)
        done = False
        while not done:
            actions = torch.cat([actions, torch.zeros(1, dtype=torch.long)])
            n = min(K, len(states))
            pad = K - n
            s = torch.cat([torch.zeros(pad, *states.shape[1:]), states[-n:]])
            a = torch.cat([torch.zeros(pad, dtype=torch.long), actions[-n:]])
            r = torch.cat([torch.zeros(pad, 1), rtg[-n:]])
            t = torch.cat([torch.zeros(pad, dtype=torch.long), timesteps[-n:]])
            mask = torch.cat([torch.zeros(pad, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
            out = model(r[None], s[None], a[None], t[None], mask[None])
            action = out.policy[:, -1].sample()
            actions[-1] = action[0]
            obs, reward, terminated, truncated, _ = env.step(int(action[0]))
            steps += 1
            done = terminated or truncated
            states = torch.cat([states, torch.as_tensor(obs, dtype=torch.float32)[None]])
            rtg = torch.cat([rtg, rtg[-1:] - reward])
            timesteps = torch.cat([timesteps, timesteps[-1:] + 1])
    env.close()
    return steps


def ogm_rollout(model: DecisionTransformer, num_envs: int, n_episodes: int, seed: int) -> int:
    """ogm's batched rollout over ``num_envs`` copies. Env steps."""
    env = make_vector(ENV_ID, num_envs, autoreset_mode=AutoresetMode.DISABLED)
    agent = ConditionedDT(model, make_strategy(f"fixed:{TARGET}"))
    results = rollout(agent, env, n_episodes, seed=seed, deterministic=False)
    env.close()
    return sum(r.trajectory.length for r in results)


def timed(fn, *args) -> float:
    """Env steps per second of one call."""
    start = time.perf_counter()
    steps = fn(*args)
    return steps / (time.perf_counter() - start)


def tomato_model(n_layer: int, n_embd: int, context_len: int) -> DecisionTransformer:
    """A randomly initialised DT for tomato watering (seed 0), in eval mode."""
    torch.manual_seed(0)
    obs_shape = gym.make(ENV_ID).observation_space.shape
    return DecisionTransformer(
        DTConfig(
            obs_shape=obs_shape,
            act_dim=4,
            discrete=True,
            return_bin_edges=return_bin_edges_for(0.0, 60.0, 64),
            context_len=context_len,
            n_layer=n_layer,
            n_head=1,
            n_embd=n_embd,
        )
    ).eval()


def bench(n_layer: int, n_embd: int, context_len: int, episodes: int) -> None:
    """Print steps per second of the reference loop and of ogm's rollout for one model size."""
    model = tomato_model(n_layer, n_embd, context_len)
    print(f"\nDT {n_layer} layer(s) x {n_embd}, K={context_len}, {model.num_params():,} parameters")
    ogm_rollout(model, 4, 4, 0)  # warm-up
    reference = timed(reference_rollout, model, episodes, 0)
    print(f"{'reference loop (1 env, re-encode, cat)':44} {reference:9.0f} steps/s   1.00x")
    for num_envs in (1, 16, 64):
        rate = timed(ogm_rollout, model, num_envs, max(episodes, num_envs), 0)
        label = f"ogm rollout, vector env x {num_envs}"
        print(f"{label:44} {rate:9.0f} steps/s {rate / reference:6.2f}x")


def bench_precision(repeats: int = 3) -> None:
    """Rollout steps per second acting in fp32 and in bf16 autocast, per number of copies."""
    model = tomato_model(n_layer=2, n_embd=64, context_len=5)
    actor.FP32_ACTING_BELOW = 0  # act in the model's own precision, whatever the batch
    print(f"\nDT 2 layers x 64, K=5: acting in fp32 against bf16 autocast (best of {repeats})")
    ogm_rollout(model, 4, 4, 0)  # warm-up
    for num_envs in (16, 32, 64, 128, 256):
        best = {"fp32": 0.0, "bf16": 0.0}
        for _ in range(repeats):
            for precision in best:
                model.set_precision(precision)
                rate = timed(ogm_rollout, model, num_envs, num_envs, 0)
                best[precision] = max(best[precision], rate)
        ratio = best["fp32"] / best["bf16"]
        print(
            f"x {num_envs:3}: fp32 {best['fp32']:7.0f} steps/s, bf16 {best['bf16']:7.0f} steps/s,"
            f" fp32/bf16 {ratio:4.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8, help="episodes for the reference")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", action="store_true", help="fp32 against bf16 acting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{ENV_ID}, 100-step episodes, torch threads {args.threads}, CPU")
    if args.precision:
        bench_precision()
        return
    # a gridworld-sized model, then DT's gym size with ODT's training context
    for n_layer, n_embd, context_len in ((1, 64, 10), (3, 128, 20)):
        bench(n_layer, n_embd, context_len, args.episodes)


if __name__ == "__main__":
    main()
