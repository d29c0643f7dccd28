"""Does bfloat16 change what the GM agent learns? float32 against bfloat16 on real data.

Trains the GM agent of the built-in ``tomato-watering`` experiment (its model, budget and
demonstration recipe, read from the experiment file) once per precision and seed on the
same demonstrations, then compares:

- the training loss curve (logged every ``log_every`` updates), as the largest gap between
  the two precisions' seed-mean curves after warm-up;
- the held-out loss: the DT loss (``ogm.train.segments.dt_loss``, dropout off, computed in
  float32 for both) on segments of demonstrations the runs never trained on;
- the evaluation protocol's greedy and sampled return and performance (``eval_episodes``
  per mode, the held-out starts of ``ogm.train.evaluation``).

It also prints the updates per second each precision trained at (wall time of the run's
own log, one torch thread).

    python benchmarks/precision_curves.py                 # 3 seeds, about 10 minutes
    python benchmarks/precision_curves.py --seeds 0 --updates 300   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from ogm.data.dataset import build_dataset, load_trajectories
from ogm.data.recipe import DatasetRecipe
from ogm.experiments.spec import load_experiment
from ogm.train.offline import OfflineConfig, load_model, run
from ogm.train.segments import TrajectoryPool, dt_loss

PRECISIONS = ("fp32", "bf16")


def held_out_loss(model, pool: TrajectoryPool, context_len: int, batches: int = 20) -> float:
    """Mean DT loss over fixed batches of held-out segments, float32, dropout off."""
    model.eval().set_precision("fp32")
    rng = np.random.default_rng(12345)
    with torch.no_grad():
        losses = [
            dt_loss(model, pool.sample(64, context_len, rng))[0].item() for _ in range(batches)
        ]
    return float(np.mean(losses))


def read_run(run_dir: Path) -> dict:
    info = json.loads((run_dir / "run.json").read_text())
    rows = list(csv.DictReader((run_dir / "rounds.csv").open()))
    return {
        "final": info["final_eval"],
        "loss": {int(r["step"]): float(r["loss"]) for r in rows},
        "updates_per_s": statistics.median(float(r["updates_per_s"]) for r in rows[1:] or rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec, _ = load_experiment("tomato-watering")
    gm = dict(spec.budgets["dt"])
    if args.updates:
        gm.update(updates=args.updates, checkpoint_every=args.updates)
    env_id = spec.environment.env_id
    recipe = DatasetRecipe(env_id=env_id, **spec.dataset.model_dump())
    out = args.out or Path(tempfile.mkdtemp(prefix="precision_"))
    data = build_dataset(recipe, out / "data")
    held_out = recipe.model_copy(update={"episodes": 50, "seed": 10**6})
    pool = TrajectoryPool(load_trajectories(build_dataset(held_out, out / "data")))

    results: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    for seed in args.seeds:
        for precision in PRECISIONS:
            run_dir = out / f"{precision}_seed{seed}"
            config = OfflineConfig(
                env_id=env_id,
                dataset=str(data),
                seed=seed,
                precision=precision,
                fidelity_targets=0,
                eval_episodes=spec.common.get("eval_episodes", 16),
                **gm,
            )
            run(config, run_dir)
            measured = read_run(run_dir)
            model = load_model(run_dir)
            measured["held_out"] = held_out_loss(model, pool, config.context_len)
            results[precision].append(measured)
            final = measured["final"]
            print(
                f"seed {seed} {precision}: held-out loss {measured['held_out']:.4f}, greedy "
                f"return {final['greedy']['return']:.2f} performance "
                f"{final['greedy']['performance']:.2f}, sampled return "
                f"{final['sampled']['return']:.2f}, {measured['updates_per_s']:.1f} updates/s",
                flush=True,
            )

    steps = sorted(results["fp32"][0]["loss"])
    warm = [s for s in steps if s > gm.get("warmup_steps", 0)]
    curve = {p: {s: np.mean([r["loss"][s] for r in results[p]]) for s in warm} for p in PRECISIONS}
    gap = max(abs(curve["bf16"][s] - curve["fp32"][s]) for s in warm)
    print(f"\n{len(args.seeds)} seeds, {gm['updates']} updates, runs in {out}")
    print(f"largest gap between the seed-mean training loss curves after warm-up: {gap:.4f}")
    for precision in PRECISIONS:
        rs = results[precision]

        def mean(key: str, mode: str | None = None, rs=rs) -> str:
            values = [r["final"][mode][key] if mode else r[key] for r in rs]
            spread = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
            return f"{np.mean(values):.3f}{spread}"

        print(
            f"{precision}: held-out loss {mean('held_out')}, final training loss "
            f"{np.mean([r['loss'][steps[-1]] for r in rs]):.4f}, greedy return "
            f"{mean('return', 'greedy')}, greedy performance {mean('performance', 'greedy')}, "
            f"sampled return {mean('return', 'sampled')}, updates/s {mean('updates_per_s')}"
        )


if __name__ == "__main__":
    main()
