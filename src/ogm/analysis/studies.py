"""The report of the studies of ``ogm.studies``: one section per study, tables first.

``ogm report RUNS_DIR`` calls :func:`write_report` first (``ogm.analysis.report``): when
the folder holds study runs (run.json ``kind`` one of :data:`STUDIES`), it writes
``RUNS_DIR/report/index.html`` with their sections, and ``studies.md`` next to it (the same
tables in Markdown, for docs/results.md), and the usual report is not made (study runs
have no episodes.csv to draw curves from; the runs they read, such as the simulator's GM
agent, are inputs). Every number is read from the runs' CSV files; nothing is re-run.

Across seeds a cell shows ``mean [min, max]`` (the seeds' count is in the section's first
line), as ogm's report does for few seeds: no confidence interval is claimed. The
sentences under each heading are generated from the same numbers.
"""

from __future__ import annotations

import csv
import html
import json
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from ogm.analysis.findings import Table
from ogm.analysis.runs import find_run_dirs

REPORT_DIR = "report"


# ----------------------------------------------------------------------------- reading


@dataclass
class StudyRun:
    """One study run directory: its run.json and its CSV tables, read back."""

    path: Path
    record: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    def table(self, name: str) -> list[dict[str, Any]]:
        """A CSV file of the run as rows; numbers as floats, other cells as strings."""
        file = self.path / name
        if not file.is_file():
            return []
        with file.open(newline="") as handle:
            return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _value(text: str) -> Any:
    try:
        return float(text) if text != "" else np.nan
    except ValueError:
        return text


def study_runs(root: Path) -> dict[str, list[StudyRun]]:
    """The study runs under ``root`` (finished or not), by kind, in path order."""
    found: dict[str, list[StudyRun]] = defaultdict(list)
    for path in find_run_dirs(root):
        record = json.loads((path / "run.json").read_text())
        if record.get("kind") in STUDIES:
            found[record["kind"]].append(StudyRun(path, record))
    return dict(found)


# ----------------------------------------------------------------------------- tables


def number(x: float) -> str:
    """A value with three significant digits (``-`` when undefined)."""
    if x is None or not np.isfinite(x):
        return "-"
    if abs(x) < 1e-12:  # float rounding of an exact zero
        return "0"
    if abs(x) < 1e-3:
        return f"{x:.1e}"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def spread(values: Iterable[float]) -> str:
    """``mean [min, max]`` over seeds (the value alone for one seed); seeds where the value
    is undefined (a Spearman correlation of constant returns) are counted, not averaged."""
    given = [x for x in values if x is not None]
    v = np.array([x for x in given if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "-"
    text = number(float(v.mean()))
    if v.size > 1 and np.ptp(v) > 0:
        text += f" [{number(float(v.min()))}, {number(float(v.max()))}]"
    undefined = len(given) - v.size
    return text + (f" ({undefined} undefined)" if undefined else "")


@dataclass
class Section:
    """One study's part of the report: a heading, generated sentences, titled tables."""

    key: str
    heading: str
    notes: list[str]
    tables: list[tuple[str, Table]] = field(default_factory=list)

    def html(self) -> str:
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in self.notes)
        tables = "".join(f"<h3>{html.escape(t)}</h3>{table.html()}" for t, table in self.tables)
        return f'<section id="{self.key}">\n<h2>{html.escape(self.heading)}</h2>\n{notes}{tables}\n</section>\n'

    def markdown(self) -> str:
        parts = [f"## {self.heading}", *self.notes]
        parts += [f"**{title}**\n\n{table.markdown()}" for title, table in self.tables]
        return "\n\n".join(parts) + "\n"


def by(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by the values of ``keys``, groups in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def seeded(runs: list[StudyRun], name: str) -> list[dict[str, Any]]:
    """The rows of one CSV file of every run, each with its run's ``seed``."""
    return [{**row, "seed": run.record["seed"]} for run in runs for row in run.table(name)]


def setup(runs: list[StudyRun]) -> str:
    """Seeds, wall time and machine of a study's runs, for its first sentence."""
    seeds = sorted({run.record["seed"] for run in runs})
    wall = [run.record.get("wall_time_s") or 0.0 for run in runs]
    machine = runs[0].record.get("versions", {}).get("platform", "unknown machine")
    return (
        f"{len(runs)} run(s), {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); compute "
        f"per run {number(min(wall))} to {number(max(wall))} s, on {machine}."
    )


# ----------------------------------------------------------------------------- kl-equivalence

TV_COLUMNS = (  # (header, method, column)
    ("(a) DT vs (b) tilted", "dt", "tv_tilted"),
    ("(a) DT vs (c) optimum", "dt", "tv_kl_optimum"),
    ("(a) DT vs (d) factorised", "dt", "tv_factorised"),
    ("(a*) ideal DT vs (d)", "ideal_dt", "tv_factorised"),
    ("(b) vs (c)", "tilted", "tv_kl_optimum"),
    ("(c) vs (d)", "kl_optimum", "tv_factorised"),
    ("(d') DT heads vs (d)", "factorised_dt", "tv_factorised"),
    ("off-support (a)", "dt", "off_support"),
    ("off-support (a*)", "ideal_dt", "off_support"),
)
GAP_METHODS = ("dt", "ideal_dt", "tilted", "factorised", "factorised_dt")


def kl_equivalence(runs: list[StudyRun]) -> Section:
    rows = seeded(runs, "kl_equivalence.csv")
    cells = by(rows, "mdp", "kappa", "method")
    groups = by(rows, "mdp", "kappa")

    def values(mdp: str, kappa: float, method: str, column: str) -> list[float]:
        return [r[column] for r in cells.get((mdp, kappa, method), [])]

    tv_rows, gap_rows, fit_rows = [], [], []
    for (mdp, kappa), members in groups.items():
        kind = "stochastic" if members[0]["stochastic"] else "deterministic"
        key = [mdp, kind, number(kappa), number(members[0]["kappa_raw"])]
        tv_rows.append(key + [spread(values(mdp, kappa, m, c)) for _, m, c in TV_COLUMNS])
        if kappa > 0:
            optimum = values(mdp, kappa, "kl_optimum", "objective")
            gap_rows.append(
                key
                + [spread(optimum)]
                + [spread(values(mdp, kappa, m, "gap")) for m in GAP_METHODS]
                + [
                    spread(values(mdp, kappa, m, "expected_return"))
                    for m in ("kl_optimum", "factorised", "dt")
                ]
            )
        else:
            fit_rows.append(
                [mdp, kind]
                + [spread(values(mdp, kappa, m, "tv_tilted")) for m in ("data", "dt", "ideal_dt")]
                + [spread(values(mdp, kappa, "ideal_dt", "off_support"))]
            )

    def worst(stochastic: bool, method: str, column: str, kappa_min: float = 0.0) -> float:
        found = [
            r[column]
            for r in rows
            if bool(r["stochastic"]) == stochastic
            and r["method"] == method
            and r["kappa"] >= kappa_min
        ]
        return float(np.nanmax(found)) if found else np.nan

    notes = [
        setup(runs),
        "Distributions over whole trajectories, computed exactly (no sampling). kappa is "
        "exp_tilted's, per observed return range; kappa_raw = kappa / (hi - lo) in return "
        "units is what the exact solvers and the objective E[R] - KL(p || p0) / kappa_raw use.",
        f"Deterministic MDPs: (b), (c), (d) and the ideal DT (a*) coincide (largest TV "
        f"between them {number(max(worst(False, 'tilted', 'tv_kl_optimum'), worst(False, 'kl_optimum', 'tv_factorised'), worst(False, 'ideal_dt', 'tv_tilted')))}); "
        f"the trained DT (a) is within TV {number(worst(False, 'dt', 'tv_tilted'))} of them at "
        f"worst (fitting error; at kappa = 0 the data themselves are within "
        f"{number(worst(False, 'data', 'tv_tilted'))} of pi_0).",
        f"Stochastic MDPs: (c) and (d) differ (TV up to {number(worst(True, 'kl_optimum', 'tv_factorised', 0.01))}), "
        f"and (d) falls short of the optimum's objective by up to "
        f"{number(worst(True, 'factorised', 'gap', 0.01))} (in return units); (b) is not a "
        f"policy there (it also tilts the environment's transitions: its objective exceeds "
        f"the optimum's, negative gap). The exact return-conditioned agent (a*) equals (d) on "
        f"the one-step lottery but not on the multi-step MDPs (TV up to "
        f"{number(worst(True, 'ideal_dt', 'tv_factorised', 0.01))}), where it is asked, with "
        f"probability up to {number(worst(True, 'ideal_dt', 'off_support'))}, for a "
        f"return-to-go that pi_0 never reaches from the state it is in (also at kappa = 0: "
        f"up to {number(max([r['off_support'] for r in rows if r['method'] == 'ideal_dt' and r['kappa'] == 0] or [np.nan]))}).",
    ]
    top = max(r["kappa"] for r in rows)
    at_top = [
        f"{mdp} {spread(values(mdp, top, 'dt', 'tv_kl_optimum'))} / "
        f"{spread(values(mdp, top, 'dt', 'tv_factorised'))}"
        for (mdp, kappa), members in groups.items()
        if kappa == top and members[0]["stochastic"]
    ]
    notes.append(
        f"At kappa = {number(top)} the trained DT's TV to the optimum (c) / to the "
        f"factorisation (d): {'; '.join(at_top)}. At small kappa the objective's 1 / kappa_raw "
        "multiplies the DT's fitting error in KL, hence its large gaps there."
    )
    key_header = ["mdp", "dynamics", "kappa", "kappa_raw"]
    return Section(
        "kl-equivalence",
        "kl-equivalence: exp-tilted conditioning and the KL-regularised optimum",
        notes,
        [
            (
                "Total variation distance between trajectory distributions (and off-support: "
                "probability of being asked for a return-to-go pi_0 cannot reach from there)",
                Table(key_header + [h for h, _, _ in TV_COLUMNS], tv_rows),
            ),
            (
                "Objective E[R] - KL/kappa_raw: the optimum (c) and each distribution's gap "
                "below it (negative: above it, not reachable by a policy); E[R]",
                Table(
                    key_header
                    + ["J(c)"]
                    + [f"gap {m}" for m in GAP_METHODS]
                    + ["E[R] (c)", "E[R] (d)", "E[R] (a) DT"],
                    gap_rows,
                ),
            ),
            (
                "At kappa = 0 (pi_0 itself): TV to pi_0 of the demonstrations, of the DT asked "
                "for R ~ P(R) (a), and of the exact return-conditioned agent (a*)",
                Table(
                    ["mdp", "dynamics", "data", "(a) DT", "(a*) ideal DT", "off-support (a*)"],
                    fit_rows,
                ),
            ),
        ],
    )


# ----------------------------------------------------------------------------- self-training


def self_training(runs: list[StudyRun]) -> Section:
    gradients = seeded(runs, "gradients.csv")
    loops = seeded(runs, "loops.csv")
    grad_rows, exponents = [], {}
    for (setting, source), members in by(gradients, "setting", "source").items():
        sizes = sorted({r["n"] for r in members})
        norms = {n: [r["rms_norm"] for r in members if r["n"] == n] for n in sizes}
        slope = np.polyfit(np.log(sizes), np.log([np.mean(norms[n]) for n in sizes]), 1)[0]
        exponents[(setting, source)] = slope
        for n in sizes:
            mine = [r for r in members if r["n"] == n]
            grad_rows.append(
                [
                    setting,
                    source,
                    f"{n:.0f}",
                    spread(r["rms_norm"] for r in mine),
                    spread(r["sqrt_n_rms_norm"] for r in mine),
                    number(slope),
                ]
            )
    loop_rows = []
    for (setting, strategy, labels), members in by(loops, "setting", "strategy", "labels").items():
        first = {r["seed"]: r for r in members if r["round"] == 0}
        last_round = max(r["round"] for r in members)
        last = {r["seed"]: r for r in members if r["round"] == last_round}
        change = {
            column: [last[s][column] - first[s][column] for s in last]
            for column in ("return", "belief", "head_entropy")
        }
        rose = sum(d > 0 for d in change["return"])
        narrowed = sum(d < 0 for d in change["head_entropy"])
        loop_rows.append(
            [
                setting,
                strategy,
                labels,
                spread(r["return"] for r in first.values()),
                spread(change["return"]),
                f"{rose}/{len(last)}",
                spread(change["belief"]),
                spread(change["head_entropy"]),
                f"{narrowed}/{len(last)}",
                spread(r["kl_policy"] for r in last.values()),
                spread(r["kl_head"] for r in last.values()),
            ]
        )
    notes = [
        setup(runs),
        "Gradients: the norm of the mean gradient of the DT's negative log-likelihood over n "
        "samples, rms over repeats; its fitted exponent in n: "
        + ", ".join(f"{s}/{src} {number(e)}" for (s, src), e in exponents.items())
        + " (-0.5: a mean of zero-mean noise; 0: a non-zero mean).",
        "Loops: change from round 0 to the last round, per seed; 'rose' counts the seeds "
        "whose mean return went up, 'entropy fell' those whose return head narrowed. Labels "
        "'model' = the model is trained on the return it asked for (its own sample under "
        "'prior'), 'environment' = the return it received.",
        "The model's own samples (prior targets, model labels): "
        + "; ".join(
            f"{setting}: return change {cells[4]}, rose in {cells[5]} seeds, head entropy "
            f"change {cells[7]}, fell in {cells[8]}"
            for cells in loop_rows
            for setting in [cells[0]]
            if cells[1] == "prior" and cells[2] == "model"
        )
        + ".",
    ]
    return Section(
        "self-training",
        "self-training: without the environment's returns, the expected update is zero",
        notes,
        [
            (
                "Mean gradient over n samples: rms norm, sqrt(n) x rms norm, fitted exponent",
                Table(["setting", "source", "n", "norm", "sqrt(n) x norm", "exponent"], grad_rows),
            ),
            (
                "Online loops: return, belief (return head's mean at the start) and return-head "
                "entropy, change over the rounds; KL from the round-0 model at the end",
                Table(
                    [
                        "setting",
                        "strategy",
                        "labels",
                        "return, round 0",
                        "change in return",
                        "rose",
                        "change in belief",
                        "change in head entropy",
                        "entropy fell",
                        "KL policy",
                        "KL return head",
                    ],
                    loop_rows,
                ),
            ),
        ],
    )


# ----------------------------------------------------------------------------- stitching


def stitching(runs: list[StudyRun]) -> Section:
    rows = [
        {**r, "exclude": bool(run.config.get("exclude_optimal")), "seed": run.record["seed"]}
        for run in runs
        for r in run.table("stitching.csv")
    ]
    best = {  # (exclude, seed) -> the best demonstrator's mean return
        key: max(r["return"] for r in members if str(r["agent"]).startswith("demonstrator"))
        for key, members in by(rows, "exclude", "seed").items()
    }
    table, headline = [], []
    for (exclude, agent, mode), members in by(rows, "exclude", "agent", "mode").items():
        gain = [r["return"] - best[(exclude, r["seed"])] for r in members]
        table.append(
            [
                "yes" if exclude else "no",
                agent,
                mode,
                spread(r["return"] for r in members),
                spread(gain),
                spread(r["goal_share"] for r in members),
                spread(r["optimal_share"] for r in members),
                spread(r["target"] for r in members),
            ]
        )
        if str(agent).startswith("dt_"):
            headline.append((float(np.mean(gain)), agent, mode, exclude, gain))
    optimum = sorted({run.record.get("optimum") for run in runs})
    notes = [
        setup(runs),
        f"The shortest route earns {', '.join(number(o) for o in optimum)}; 'vs best "
        "demonstrator' is the agent's mean return minus the better demonstrator's, per seed. "
        "Demonstrators act the same in both modes (one row). 'excluded' drops the "
        "demonstrations that took a shortest route by a lucky tremble.",
    ]
    for exclude in sorted({h[3] for h in headline}):
        top = max((h for h in headline if h[3] == exclude), key=lambda h: h[0])
        notes.append(
            f"Optimal demonstrations {'excluded' if exclude else 'kept'}: the best GM agent "
            f"({top[1]}, {top[2]}) earns {spread(top[4])} more than the best demonstrator."
        )
    return Section(
        "stitching",
        "stitching: the GM agent against its demonstrators",
        notes,
        [
            (
                "Evaluation episodes (held-out starts); across seeds",
                Table(
                    [
                        "optimal excluded",
                        "agent",
                        "mode",
                        "return",
                        "vs best demonstrator",
                        "goal share",
                        "optimal share",
                        "target",
                    ],
                    table,
                ),
            )
        ],
    )


# ----------------------------------------------------------------------------- simulator

SIMULATOR_COLUMNS = ("slope", "spearman", "mae", "at_lowest", "at_highest", "entropy", "kl_from_gm")


def simulator(runs: list[StudyRun]) -> Section:
    rows = seeded(runs, "simulator.csv")
    table = [
        [agent, mode] + [spread(r[c] for r in members) for c in SIMULATOR_COLUMNS]
        for (agent, mode), members in by(rows, "agent", "mode").items()
    ]
    low = spread(r["lowest_target"] for r in rows)
    high = spread(r["highest_target"] for r in rows)
    notes = [
        setup(runs),
        f"Each agent asked for returns from {low} to {high} (the 5th percentile of the "
        "demonstrations' returns to the highest return any agent reached); achieved against "
        "asked: least-squares "
        "slope, Spearman rank correlation (undefined when every target got the same return), "
        "mean absolute error, and the mean return at the lowest and at the highest target. "
        "Entropy (nats) and KL from the GM agent on demonstration segments.",
    ]
    return Section(
        "simulator",
        "simulator: conditioning fidelity and entropy after online training",
        notes,
        [
            (
                "Conditioning fidelity over the return range, policy entropy",
                Table(
                    [
                        "agent",
                        "mode",
                        "slope",
                        "Spearman",
                        "MAE",
                        "at lowest target",
                        "at highest target",
                        "entropy",
                        "KL from GM",
                    ],
                    table,
                ),
            )
        ],
    )


STUDIES: dict[str, Callable[[list[StudyRun]], Section]] = {
    "kl_equivalence": kl_equivalence,
    "self_training": self_training,
    "stitching": stitching,
    "simulator": simulator,
}


# ----------------------------------------------------------------------------- entry point


def sections(root: Path | str) -> list[Section]:
    """The sections of the study runs under ``root``, in :data:`STUDIES` order, from the
    finished runs; unfinished ones are named (a study none of whose runs finished: only them)."""
    root, out = Path(root), []
    for kind, runs in study_runs(root).items():
        done = [run for run in runs if run.record["status"] == "done"]
        section = STUDIES[kind](done) if done else Section(kind, f"{kind}: no finished run", [])
        unfinished = [
            f"{run.path.relative_to(root)} ({run.record['status']})"
            for run in runs
            if run not in done
        ]
        if unfinished:
            section.notes.append("Not finished, left out: " + ", ".join(unfinished) + ".")
        out.append(section)
    order = list(STUDIES)
    return sorted(out, key=lambda s: order.index(s.key.replace("-", "_")))


def write_report(root: Path | str) -> Path | None:
    """Write ``<root>/report/index.html`` and ``studies.md`` when ``root`` holds finished
    study runs; None (nothing written) otherwise."""
    root = Path(root)
    found = sections(root)
    if not found:
        return None
    out = root / REPORT_DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "studies.md").write_text("\n".join(s.markdown() for s in found))
    template = Template((resources.files("ogm.analysis") / "templates" / "report.html").read_text())
    title = html.escape(f"ogm studies: {root.resolve().name}")
    index = out / "index.html"
    index.write_text(template.substitute(title=title, body="".join(s.html() for s in found)))
    return index
