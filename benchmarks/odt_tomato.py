"""Online finetuning at work: tomato_watering, safe demonstrations, a percentile strategy.

Collects safe demonstrations (the scripted demonstrator patrols the tomato rows), trains a
Decision Transformer on them offline, then finetunes it online with ODT (exploration target:
the 95th percentile of the returns observed so far). Prints the evaluation episodes from round
0 (after offline training alone) to the end of the online phase: observed return,
hidden performance, and the share of steps spent on the observation transformer (the
reward-tampering event), greedy and sampled, at every evaluation point of the protocol every
agent shares (``ogm.train.evaluation``), and the training episodes. Every metric per
episode is in ``<out>/run/episodes.csv``.

    .venv/bin/python benchmarks/odt_tomato.py --out /tmp/odt_tomato
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ogm.data import DatasetRecipe
from ogm.train.online import OnlineConfig, run


def summarise(rows: list[dict[str, str]]) -> str:
    def mean(key: str) -> float:
        return float(np.mean([float(r[key]) for r in rows]))

    return (
        f"return {mean('return'):6.2f}  performance {mean('performance'):6.2f}  "
        f"on_transformer share {mean('ev_on_transformer_share'):.3f}  "
        f"target {mean('target_return'):6.2f}  ({len(rows)} episodes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/odt_tomato"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()

    config = OnlineConfig(
        env_id="ogm/TomatoWatering-v0",
        dataset=DatasetRecipe(env_id="ogm/TomatoWatering-v0", episodes=200, epsilon=0.05),
        seed=args.seed,
        device="cpu",
        num_envs=16,
        eval_episodes=32,
        offline={
            "n_layer": 2,
            "n_head": 2,
            "n_embd": 64,
            "context_len": 10,
            "n_bins": 32,
            "updates": 1500,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "warmup_steps": 100,
            "checkpoint_every": 500,
            "strategy": "percentile:90",
        },
        online={
            "rounds": args.rounds,
            "episodes_per_round": 16,
            "updates_per_round": 100,
            "batch_size": 32,
            "learning_rate": 1e-4,
            "strategy": "percentile:95",
            "checkpoint_every": 10,
        },
    )
    start = time.perf_counter()
    run_dir = args.out / "run"
    os.environ.setdefault("OGM_CACHE_DIR", str(args.out / "cache"))
    run(config, run_dir)
    print(f"wall time {time.perf_counter() - start:.0f} s; run directory {run_dir}")

    with (run_dir / "episodes.csv").open(newline="") as handle:
        episodes = list(csv.DictReader(handle))
    evals: dict[tuple[str, int], list[dict[str, str]]] = defaultdict(list)
    for row in episodes:
        if row["phase"] == "eval":
            evals[row["mode"], int(row["round"])].append(row)
    train = [r for r in episodes if r["phase"] == "train"]
    points = sorted({point for _, point in evals})
    print("evaluation points (the same 32 held-out starts at every point, both modes):")
    for mode in ("greedy", "sampled"):
        for point in points:
            steps = evals[mode, point][0]["env_steps"]
            print(
                f"  {mode:7s} round {point:3d} ({steps:>6s} env steps): {summarise(evals[mode, point])}"
            )
    tenth = max(1, len(train) // 10)
    print(f"training episodes (sampled), first tenth: {summarise(train[:tenth])}")
    print(f"training episodes (sampled), last tenth:  {summarise(train[-tenth:])}")


if __name__ == "__main__":
    main()
