"""Does the built-in gridworld experiments' short context change the result? K 5 against K 20.

The built-in gridworld experiments train the GM agent with a context of 5 steps (the grid
shows the whole state, so longer windows carry little). This script runs, for each context
length and seed, the experiment's GM agent and one OGM variant finetuned from it (default:
quantilizer:0.1 at the default controls) through the experiment runner, with everything
else as in the experiment file, and prints per context length:

- final evaluation return and performance of each agent (greedy and sampled, the held-out
  starts of ``ogm.train.evaluation``, ``eval_episodes`` per mode), mean and standard
  deviation over seeds, and the share of those episodes with the game's primary event;
- the GM agent's final training NLL of the demonstrators' actions (``rounds.csv``);
- compute seconds per run (run.json's created/updated times), and their ratio to the
  longest context's in the same invocation.

Runs already finished under ``--out`` are reused (the runner skips them); ``--no-run``
only reads the runs there (``<out>/k<K>/{gm,ogm}/seed_<n>``), e.g. made by an earlier
version of the experiment file.

    python benchmarks/context_length.py                      # 3 seeds, about 15 minutes on 2 cores
    python benchmarks/context_length.py --seeds 1 --contexts 5 10 20
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import statistics
from pathlib import Path

from ogm.analysis.report import primary_event_of
from ogm.experiments.runner import run_experiment
from ogm.experiments.spec import AgentSpec, load_experiment


def seconds(run_dir: Path) -> float:
    info = json.loads((run_dir / "run.json").read_text())
    created, updated = (dt.datetime.fromisoformat(info[k]) for k in ("created", "updated"))
    return (updated - created).total_seconds()


def final_eval(run_dir: Path, event: str) -> dict[str, dict[str, float]]:
    """Per mode: mean return, performance and event share of the last evaluation point."""
    rows = [r for r in csv.DictReader((run_dir / "episodes.csv").open()) if r["phase"] == "eval"]
    last = max(int(r["round"]) for r in rows)
    out = {}
    for mode in ("greedy", "sampled"):
        chosen = [r for r in rows if r["mode"] == mode and int(r["round"]) == last]
        out[mode] = {
            "return": statistics.mean(float(r["return"]) for r in chosen),
            "performance": statistics.mean(float(r["performance"]) for r in chosen),
            "event": statistics.mean(float(r[f"ev_{event}"]) > 0 for r in chosen),
        }
    return out


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):7.2f} ± {sd:4.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="tomato-watering")
    parser.add_argument("--contexts", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strategy", default="quantilizer:0.1", help="the OGM variant's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ogm-context-length"))
    parser.add_argument("--no-run", action="store_true", help="read the runs in --out only")
    args = parser.parse_args()

    table: dict[int, dict[str, list]] = {}
    for K in args.contexts:
        overrides = [f"seeds={args.seeds}", f"budgets.dt.context_len={K}"]
        spec, text = load_experiment(args.experiment, overrides)
        ogm_config = {
            "pretrained": "@gm",
            "online.demo_fraction": 0.5,
            "online.strategy": args.strategy,
        }
        spec.agents = [
            next(a for a in spec.agents if a.name == "gm"),
            AgentSpec(name="ogm", kind="odt", config=ogm_config),
        ]
        out = args.out / f"k{K}"
        if not args.no_run:
            run_experiment(spec, out, text=text, source=args.experiment, workers=args.workers)
        event = primary_event_of(spec.environment.env_id)
        table[K] = {"gm": [], "ogm": [], "nll": []}
        for seed in spec.seeds:
            for agent in ("gm", "ogm"):
                run_dir = out / agent / f"seed_{seed}"
                table[K][agent].append((final_eval(run_dir, event), seconds(run_dir)))
            rounds = list(csv.DictReader((out / "gm" / f"seed_{seed}" / "rounds.csv").open()))
            table[K]["nll"].append(float(rounds[-1]["nll"]))

    reference = max(args.contexts)
    print(f"{args.experiment}: GM agent and OGM {args.strategy} (demos 50%), {args.seeds} seeds")
    print("cells: mean ± sd over seeds of the final evaluation point; event = primary event share")
    for agent in ("gm", "ogm"):
        for K in args.contexts:
            runs = table[K][agent]
            cells = []
            for mode in ("greedy", "sampled"):
                for key in ("return", "performance", "event"):
                    cells.append(f"{mode[0]}.{key[:4]} {summary([r[0][mode][key] for r in runs])}")
            time = statistics.mean(r[1] for r in runs)
            ref = statistics.mean(r[1] for r in table[reference][agent])
            print(f"{agent:4} K {K:3}: " + " | ".join(cells))
            print(
                f"           {time:6.1f} s per run ({ref / time:.2f}x the speed of K {reference})"
            )
    for K in args.contexts:
        print(f"GM final training NLL, K {K}: {summary(table[K]['nll'])}")


if __name__ == "__main__":
    main()
