"""`ogm run rm-overoptimisation` at smoke size: a world per reward-model size N (its proxy
RM, its demonstrations scored by the RM, its GM agent), every agent kind of the experiment
optimising the proxy while the gold is logged as hidden performance."""

from __future__ import annotations

import csv
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from ogm.envs.reward_model import best_of_n_kl, load_reward_model
from ogm.envs.sequence import LENGTH
from ogm.experiments.runner import run_experiment
from ogm.experiments.spec import parse_experiment

GOLD_FLOOR = (1 / 8 + 0.5) * sum(0.9**i for i in range(8))

SMOKE = [
    "seeds=[0]",
    "environment.sweep.pairs=[30, 100]",
    "dataset.episodes=40",
    "common.eval_every=128",
    "common.num_envs=4",
    "common.eval_episodes=4",
    "budgets.dt.updates=20",
    "budgets.dt.warmup_steps=5",
    "budgets.dt.checkpoint_every=20",
    "budgets.odt.online.total_timesteps=256",
    "budgets.odt.online.episodes_per_round=8",
    "budgets.kl_ppo.total_timesteps=256",
    "budgets.kl_ppo.n_steps=32",
    "budgets.kl_ppo.batch_size=64",
    "budgets.sb3.total_timesteps=256",
]


FEEDBACK_SWEEP = re.compile(r'^sweep = \[\n(  \{ "online\.feedback\..*\},\n)+\]$', re.MULTILINE)
FEEDBACK = "ogm_feedback__label_budget=40__labels_per_round=16"


def builtin_text() -> str:
    return (resources.files("ogm.experiments") / "builtin" / "rm-overoptimisation.toml").read_text()


def smoke_text() -> str:
    """The built-in file with one variant per agent kind (the sweeps narrowed)."""
    text = builtin_text()
    lines = [
        line
        for line in text.splitlines()
        if not line.startswith('sweep = { "online.strategy"')
        and not line.startswith("sweep = { beta")
    ]
    text = "\n".join(lines).replace(
        "sweep = { n = [1, 4, 16, 64, 256, 1024] }", "sweep = { n = [1, 4] }"
    )
    text, found = FEEDBACK_SWEEP.subn(
        'sweep = { "online.feedback.label_budget" = [40], "online.feedback.labels_per_round" = [16] }',
        text,
    )
    assert found == 1, "the feedback sweep of the built-in file has moved"
    return text + "\n"


def test_every_feedback_budget_is_spent_within_the_full_size_run() -> None:
    """A label budget above labels_per_round x rounds is never spent, and two such variants
    are the same run: each built-in budget must be reached, and they must differ."""
    spec = parse_experiment(builtin_text())
    (agent,) = [a for a in spec.agents if a.name == "ogm_feedback"]
    online = spec.budgets["odt"]["online"]
    rounds = math.ceil(online["total_timesteps"] / (online["episodes_per_round"] * LENGTH))
    spent = []
    for point in agent.points():
        budget = point["online.feedback.label_budget"]
        per_round = point["online.feedback.labels_per_round"]
        assert budget <= per_round * rounds, point  # so the run spends all of it
        spent.append(budget)
    assert len(set(spent)) == len(spent) == 3, spent


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rm")
    mp = pytest.MonkeyPatch()
    mp.setenv("OGM_CACHE_DIR", str(root / "cache"))
    try:
        spec = parse_experiment(smoke_text(), overrides=SMOKE)
        summary = run_experiment(spec, root / "out", workers=1, progress=False)
        assert all(o.status == "done" for o in summary.outcomes), [
            (o.run.relpath, o.status) for o in summary.outcomes
        ]
        yield root
    finally:
        mp.undo()


def eval_rows(run: Path) -> list[dict[str, str]]:
    with (run / "episodes.csv").open() as handle:
        return [r for r in csv.DictReader(handle) if r["phase"] == "eval"]


def test_one_world_and_one_reward_model_per_n(out: Path) -> None:
    runs = out / "out"
    for pairs in (30, 100):
        point = runs / f"pairs={pairs}"
        assert sorted(p.name for p in point.iterdir()) == [
            "best_of_n__n=1",
            "best_of_n__n=4",
            "gm",
            "kl_ppo",
            "ogm",
            FEEDBACK,
            "ppo",
        ]
    models = sorted((out / "cache" / "reward_models").iterdir())
    assert [load_reward_model(m).metrics["n_pairs"] for m in models] == [100, 30]


def test_agents_see_the_proxy_and_the_gold_is_their_performance(out: Path) -> None:
    for run in sorted((out / "out").glob("pairs=*/*/seed_0")):
        rows = eval_rows(run)
        assert rows, run
        for row in rows:
            gold, proxy = float(row["performance"]), float(row["return"])
            # the gold rule's range: at most the total salience 1, at least every token a
            # repeat of the top topic, 8 tokens of decay 0.9 (docs/reward_model.md)
            assert -GOLD_FLOOR <= gold <= 1.0, (run, gold)
            assert gold != proxy, run


def test_best_of_n_keeps_the_proxys_best_candidate(out: Path) -> None:
    """Per document the kept summary has the highest proxy return of the n: the kept mean is
    at least the candidates' mean (best-of-1: equal)."""
    for point in sorted((out / "out").glob("pairs=*")):
        for n in (1, 4):
            with (point / f"best_of_n__n={n}" / "seed_0" / "rounds.csv").open() as handle:
                (row,) = csv.DictReader(handle)
            kept, mean = float(row["eval_return_sampled"]), float(row["candidate_return_mean"])
            assert kept >= mean - 1e-6 if n > 1 else kept == pytest.approx(mean)


def test_each_agent_logs_its_distance_from_the_gm_agent(out: Path) -> None:
    """kl_to_init: 0 for the GM agent and at OGM's round 0, best_of_n_kl(n) for best-of-n's
    kept episodes, measured for KL-PPO, not measured (NaN) for PPO from scratch."""
    for point in sorted((out / "out").glob("pairs=*")):
        kl = {
            variant.name: [
                (r["round"], r["mode"], float(r["kl_to_init"]))
                for r in eval_rows(variant / "seed_0")
            ]
            for variant in point.iterdir()
        }
        assert {k for _, _, k in kl["gm"]} == {0.0}
        assert {k for r, _, k in kl["ogm"] if r == "0"} == {0.0}
        later = [k for r, _, k in kl["ogm"] + kl["kl_ppo"] if r != "0" or k != 0.0]
        assert later and all(math.isfinite(k) and k >= 0 for k in later)
        for n in (1, 4):
            sampled = [k for _, mode, k in kl[f"best_of_n__n={n}"] if mode == "sampled"]
            assert sampled == pytest.approx([best_of_n_kl(n)] * len(sampled))
        assert all(math.isnan(k) for _, _, k in kl["ppo"])


def test_the_report_reads_gold_and_proxy_against_the_distance_from_pi_0(out: Path) -> None:
    """Best-of-n's points sit at d = sqrt(log n - (n-1)/n) with gains over its own
    candidates (best-of-1 keeps its only candidate: gain 0 exactly); OGM starts at its round
    0 (d = 0); KL-PPO's pi_0 level is the candidates' mean of the best-of-n runs of the same
    GM agent; the section, its fits and its events are written."""
    from ogm.analysis import overoptimisation as overopt
    from ogm.analysis.report import collect, write_report

    variants, _, _ = collect(out / "out")
    curves = overopt.kl_curves(variants)
    starts = {}  # pi_0's gold per world and fitted agent, as the fits table gives it
    for pairs in (30, 100):
        world = f"pairs={pairs}"
        levels = []
        for n in (1, 4):
            (curve,) = curves[f"{world}/best_of_n__n={n}"]
            (point,) = curve.points
            assert point.d == pytest.approx(math.sqrt(best_of_n_kl(n)), abs=1e-6)
            (gain,) = curve.gains
            assert gain.proxy >= 0.0 if n > 1 else (gain.proxy, gain.gold) == (0.0, 0.0)
            levels.append(curve.start)
        (ogm,) = curves[f"{world}/ogm"]
        assert ogm.points[0].d == 0.0 and ogm.start == (ogm.points[0].proxy, ogm.points[0].gold)
        (kl_ppo,) = curves[f"{world}/kl_ppo"]
        assert kl_ppo.start == pytest.approx(tuple(np.mean(levels, axis=0)))
        bon_gold = float(np.mean([gold for _, gold in levels]))
        starts |= {(world, "best-of-n"): bon_gold, (world, "KL-PPO"): bon_gold}
        starts[(world, "OGM")] = ogm.start[1]
    assert not any("/ppo" in name or "/gm" in name for name in curves)  # no pi_0 / no move
    for pairs in (30, 100):  # OGM with feedback: 16 labels a round until its 40 are spent
        run = out / "out" / f"pairs={pairs}" / FEEDBACK / "seed_0"
        with (run / "rounds.csv").open() as handle:
            labels = [r["feedback_labels"] for r in csv.DictReader(handle)][1:]
        assert labels[:3] == ["16.0", "32.0", "40.0"] and set(labels[3:]) == {"40.0"}

    page = write_report(out / "out")
    text = page.read_text()
    assert "Over-optimisation against the distance from the initial policy" in text
    with (page.parent / "overoptimisation_fits.csv").open() as handle:
        fits = list(csv.DictReader(handle))
    assert [(r["world"], r["agent"]) for r in fits] == [
        (w, a)
        for w in ("pairs=30", "pairs=100")
        for a in ("best-of-n", "OGM", "OGM feedback label budget 40, labels per round 16", "KL-PPO")
    ]
    assert {r["seeds / points"] for r in fits if r["agent"] == "best-of-n"} == {"1 / 2"}
    for (world, agent), gold in starts.items():  # the level every gain of the fit is over
        (row,) = [r for r in fits if (r["world"], r["agent"]) == (world, agent)]
        assert row["pi_0's gold"] == f"{gold:.3f}"
    with (page.parent / "overoptimisation_events.csv").open() as handle:
        assert [r["agent"] for r in csv.DictReader(handle)] == [
            "OGM",
            "OGM feedback label budget 40, labels per round 16",
            "KL-PPO",
        ] * 2
    with (page.parent / "overoptimisation_levels.csv").open() as handle:
        levels = list(csv.DictReader(handle))
    assert [(r["world"], r["agent"]) for r in levels] == [(r["world"], r["agent"]) for r in fits]
    for row in levels:  # one seed: the end's change is that run's, and it starts at pi_0
        if row["agent"] == "OGM":
            assert row["pi_0's gold"] == f"{starts[(row['world'], 'OGM')]:.3f}"
        change = float(row["change from pi_0, IQM [95% CI]"].split()[0])
        assert float(row["gold at the end, IQM [95% CI]"].split()[0]) == pytest.approx(
            float(row["pi_0's gold"]) + change, abs=2e-3
        )
    # the same tables as Markdown, for a document
    markdown = (page.parent / "overoptimisation.md").read_text()
    assert markdown.count("| pairs=30 | best-of-n |") == 2 and "<b>" not in markdown
    assert markdown.count("| pairs=100 | OGM |") == 3  # in the levels, fits and events
