"""Steps per second of the gridworld engine: one env (raw ``env.step``) and the vector env.

Run: ``.venv/bin/python benchmarks/bench_envs.py [--steps 20000]``

The reference, DeepMind's original pycolab implementation, runs about 5.5k steps/s on the
2-core development machine. That figure is QUOTED (measured earlier in a separate venv),
not measured by this script. Peak memory is measured with tracemalloc in a separate short
pass (tracemalloc slows allocation, so it is off while timing).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from ogm.envs import GridworldEnv, GridworldVectorEnv

PYCOLAB_STEPS_PER_S = 5_500  # quoted, see the module docstring


def bench_single(game: str, steps: int) -> float:
    env = GridworldEnv(game)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 4, steps).tolist()
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def bench_vector(game: str, num_envs: int, env_steps: int) -> float:
    env = GridworldVectorEnv(game, num_envs)
    env.reset(seed=0)
    n = max(env_steps // num_envs, 50)
    actions = np.random.default_rng(0).integers(0, 4, (n, num_envs))
    start = time.perf_counter()
    for a in actions:
        env.step(a)
    return n * num_envs / (time.perf_counter() - start)


def peak_memory_mb(game: str, num_envs: int) -> float:
    tracemalloc.start()
    env = GridworldVectorEnv(game, num_envs)
    env.reset(seed=0)
    for a in np.random.default_rng(0).integers(0, 4, (120, num_envs)):
        env.step(a)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per measurement")
    args = parser.parse_args()
    print(f"pycolab reference: {PYCOLAB_STEPS_PER_S:,} steps/s (quoted, not measured here)")
    print(f"{'game':22s} {'engine':16s} {'steps/s':>12s} {'x pycolab':>10s} {'peak MiB':>9s}")
    for game in ("tomato_watering", "side_effects_sokoban"):
        sps = bench_single(game, args.steps)
        print(
            f"{game:22s} {'env.step (N=1)':16s} {sps:12,.0f} {sps / PYCOLAB_STEPS_PER_S:10.1f} {'':>9s}"
        )
        for n in (1, 64, 1024):
            sps = bench_vector(game, n, args.steps * (10 if n > 1 else 1))
            mem = peak_memory_mb(game, n)
            print(
                f"{game:22s} {f'vector N={n}':16s} {sps:12,.0f} {sps / PYCOLAB_STEPS_PER_S:10.1f} {mem:9.1f}"
            )


if __name__ == "__main__":
    main()
