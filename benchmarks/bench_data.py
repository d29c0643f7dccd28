"""Speed of demonstration collection and of dataset writing / loading.

Collection is compared with stepping the same env with uniformly random actions (the
env's own cost, so the ratio is the demonstrator's overhead, planning included); loading
with reading the same file through Minari's own ``MinariDataset.iterate_episodes``, and a
second load in the same process (``ogm.cache``) with the first.

    .venv/bin/python benchmarks/bench_data.py [--episodes 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np

import ogm  # noqa: F401  (registers the gridworlds)
from ogm.data import collect, load_trajectories, write_dataset

GAMES = [
    ("ogm/SideEffectsSokoban-v0", {"level": 0}),
    ("ogm/SideEffectsSokoban-v0", {"level": 1}),
    ("ogm/TomatoWatering-v0", {}),
    ("ogm/AbsentSupervisor-v0", {}),
    ("ogm/BoatRace-v0", {}),
]


def random_steps_per_second(env_id: str, kwargs: dict, steps: int) -> float:
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--epsilon", type=float, default=0.05)
    args = parser.parse_args()

    print(f"collection: {args.episodes} episodes, epsilon {args.epsilon}, skill 0.8")
    print(f"{'game':34} {'episodes/s':>10} {'steps/s':>9} {'random steps/s':>14} {'ratio':>6}")
    for env_id, kwargs in GAMES:
        start = time.perf_counter()
        trajs = collect(env_id, args.episodes, epsilon=args.epsilon, skill=0.8, seed=0, **kwargs)
        elapsed = time.perf_counter() - start
        steps = sum(t.length for t in trajs)
        reference = random_steps_per_second(env_id, kwargs, steps)
        name = env_id.split("/")[1] + "".join(f" {k}={v}" for k, v in kwargs.items())
        print(
            f"{name:34} {args.episodes / elapsed:10.1f} {steps / elapsed:9.0f} "
            f"{reference:14.0f} {reference / (steps / elapsed):5.1f}x"
        )

    trajs = collect("ogm/TomatoWatering-v0", args.episodes, epsilon=0.1, seed=0)
    steps = sum(t.length for t in trajs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tomato"
        start = time.perf_counter()
        write_dataset(trajs, path, env_id="ogm/TomatoWatering-v0")
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        load_trajectories(path)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        load_trajectories(path)  # read once per process: a private copy of what was read
        again_s = time.perf_counter() - start
        start = time.perf_counter()
        dataset = minari.MinariDataset(path / "data")
        for _ in dataset.iterate_episodes():
            pass
        minari_s = time.perf_counter() - start
        size = (path / "data" / "main_data.hdf5").stat().st_size
    print(f"\ndataset: {len(trajs)} tomato episodes, {steps} steps, {size / 1e6:.1f} MB")
    print(f"write_dataset      {steps / write_s:10.0f} steps/s")
    print(f"load_trajectories  {steps / load_s:10.0f} steps/s (checked)")
    print(f"  again, same process {steps / again_s:7.0f} steps/s (a copy); {load_s / again_s:.0f}x")
    print(
        f"minari iterate     {steps / minari_s:10.0f} steps/s (reference); ratio {load_s / minari_s:.2f}"
    )


if __name__ == "__main__":
    main()
