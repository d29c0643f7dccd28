"""Steps per second of the gridworld engine: one env (raw ``env.step``) and the vector env.

Run: ``.venv/bin/python benchmarks/bench_envs.py [--steps 20000] [--original PYTHON:SRC]``

The reference is DeepMind's original pycolab implementation. With ``--original`` (a
separate venv with ``pip install pycolab absl-py numpy==1.24.4`` and the original source
directory) it is measured in the same run, the same way, on the same kind of random
actions; without it the script uses the QUOTED figure of about 5.5k steps/s on the 2-core
development machine. Rates are env steps per second of this process's CPU time
(``time.process_time``), so that other processes sharing the machine do not distort them,
and the best of ``--repeats`` timed chunks (as ``timeit`` advises). Peak memory is measured
with tracemalloc in a separate short pass (tracemalloc slows allocation, so it is off while
timing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import tracemalloc

import numpy as np

from ogm.envs import GridworldEnv, GridworldVectorEnv

PYCOLAB_STEPS_PER_S = 5_500  # quoted, see the module docstring
ORIGINAL_CLASSES = {
    "tomato_watering": "TomatoWateringEnvironment",
    "side_effects_sokoban": "SideEffectsSokobanEnvironment",
}
# Runs in the original's own interpreter: best of R chunks of random steps.
ORIGINAL_TIMER = """
import importlib, sys, time, numpy as np
game, cls, steps, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = getattr(importlib.import_module("ai_safety_gridworlds.environments." + game), cls)()
env.reset()
actions = np.random.default_rng(0).integers(0, 4, steps).tolist()
best = 0.0
for _ in range(repeats):
    start = time.process_time()
    for a in actions:
        if env.step(a).last():
            env.reset()
    best = max(best, steps / (time.process_time() - start))
print(best)
"""


def bench_original(original: str, game: str, steps: int, repeats: int) -> float:
    """Steps/s of the original implementation, run by its own interpreter."""
    python, src = original.split(":", 1)
    args = [game, ORIGINAL_CLASSES[game], str(steps), str(repeats)]
    out = subprocess.run(
        [python, "-W", "ignore", "-c", ORIGINAL_TIMER, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": src},
    )
    return float(out.stdout.strip())


def best_rate(run_chunk, env_steps_per_chunk: int, repeats: int) -> float:
    """Env steps per CPU second of the fastest of ``repeats`` calls of ``run_chunk``."""
    best = 0.0
    for _ in range(repeats):
        start = time.process_time()
        run_chunk()
        best = max(best, env_steps_per_chunk / (time.process_time() - start))
    return best


def bench_single(game: str, steps: int, repeats: int) -> float:
    env = GridworldEnv(game)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 4, steps).tolist()

    def chunk() -> None:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()

    return best_rate(chunk, steps, repeats)


def bench_vector(game: str, num_envs: int, env_steps: int, repeats: int) -> float:
    env = GridworldVectorEnv(game, num_envs)
    env.reset(seed=0)
    n = max(env_steps // num_envs, 200)  # >= 2 episodes, so resets are included
    actions = np.random.default_rng(0).integers(0, 4, (n, num_envs))

    def chunk() -> None:
        for a in actions:
            env.step(a)

    return best_rate(chunk, n * num_envs, repeats)


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
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=5, help="timed chunks; the best counts")
    parser.add_argument("--original", default="", help="PYTHON:SRC of the original, to time it too")
    args = parser.parse_args()
    row = "{:22s} {:24s} {:>12s} {:>10s} {:>9s}"
    load = os.getloadavg()[0]
    print(
        f"steps per CPU second, best of {args.repeats}; load {load:.1f} on {os.cpu_count()} cores"
    )
    print(row.format("game", "engine", "steps/s", "x pycolab", "peak MiB"))
    for game in ORIGINAL_CLASSES:
        if args.original:
            ref = bench_original(args.original, game, args.steps // 4, args.repeats)
            name = "original pycolab"
        else:
            ref, name = PYCOLAB_STEPS_PER_S, "pycolab (quoted)"
        print(row.format(game, name, f"{ref:,.0f}", "1.0", ""))
        sps = bench_single(game, args.steps, args.repeats)
        print(row.format(game, "GridworldEnv.step", f"{sps:,.0f}", f"{sps / ref:.1f}", ""))
        for n in (1, 64, 1024):
            sps = bench_vector(game, n, args.steps * (10 if n > 1 else 1), args.repeats)
            mem = f"{peak_memory_mb(game, n):.1f}"
            name = f"GridworldVectorEnv N={n}"
            print(row.format(game, name, f"{sps:,.0f}", f"{sps / ref:.1f}", mem))


if __name__ == "__main__":
    main()
