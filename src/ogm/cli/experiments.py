"""`ogm run`, `ogm report`, `ogm demo` and `ogm experiments`: experiments and their report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

DEMO = "tomato-watering-quick"
Workers = Annotated[
    int | None, typer.Option(min=1, help="runs at a time [default: the number of CPU cores]")
]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _run(
    experiment: str,
    out: Path | None,
    workers: int | None,
    backend: str,
    overrides: list[str] | None = None,
    ray_address: str | None = None,
    size: str | None = None,
) -> Path:
    from ogm.experiments.runner import RunnerError, run_experiment
    from ogm.experiments.spec import ExperimentError, load_experiment

    try:
        spec, text = load_experiment(experiment, overrides, size)
        out = out or default_out(spec.name, size)
        summary = run_experiment(
            spec,
            out,
            text=text,
            source=" ".join(
                [
                    experiment,
                    *([f"--size {size}"] if size else []),
                    *(f"--set {o}" for o in overrides or []),
                ]
            ),
            workers=workers,
            backend=backend,
            ray_address=ray_address,
        )
    except (ExperimentError, RunnerError) as err:
        _fail(str(err))
    from ogm.cli.summary import experiment_summary

    typer.echo(experiment_summary(out, [o.run.relpath for o in summary.outcomes]))
    typer.echo(
        f"{spec.name}: {summary.count('done')} done, {summary.count('skipped')} already done, "
        f"{summary.count('failed')} failed -> {out}"
    )
    for outcome in summary.failed:
        typer.echo(f"  failed {outcome.run.relpath}: {outcome.detail}", err=True)
    if summary.failed:
        typer.echo("run the same command again to retry or resume them", err=True)
        raise typer.Exit(1)
    return out


def default_out(name: str, size: str | None) -> Path:
    """``runs/<name>``, or ``runs/<name>-<size>`` at a size other than the file's own."""
    return Path("runs") / (f"{name}-{size}" if size else name)


def _duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _dry_run(
    experiment: str,
    out: Path | None,
    workers: int | None,
    overrides: list[str] | None,
    size: str | None = None,
) -> None:
    """Print the runs ``ogm run`` would start and their estimated cost; run nothing."""
    from ogm.cli.summary import table
    from ogm.experiments.runner import Rate, RunnerError, plan_experiment
    from ogm.experiments.spec import ExperimentError, load_experiment
    from ogm.train.config import torch_threads

    try:
        spec, _ = load_experiment(experiment, overrides, size)
        out = out or default_out(spec.name, size)
        typer.echo(f"{spec.name}: timing each agent that has no finished runs in {out} ...")
        plan = plan_experiment(spec, out, source=experiment, workers=workers)
    except (ExperimentError, RunnerError) as err:
        _fail(str(err))
    rows = [["run", "kind", "budget", "estimate"]]
    for e in plan.estimates:
        budget = f"{e.budget:,.0f} {e.unit}" if e.budget is not None else "?"
        cost = "done" if e.done else (_duration(e.seconds) if e.seconds is not None else "?")
        rows.append([e.run.relpath, e.run.kind, budget, cost])
    typer.echo(table(rows))
    todo, threads = sum(not e.done for e in plan.estimates), torch_threads()
    typer.echo(
        f"{todo} of {len(plan.estimates)} runs to do: about {_duration(plan.seconds)} of run "
        f"time, {_duration(plan.wall_seconds)} with {plan.workers} at a time "
        f"({threads} torch thread{'s' if threads > 1 else ''} each)"
    )
    typer.echo("rates (seconds = fixed + per unit x budget), measured from:")
    for agent, rate in plan.rates.items():
        if isinstance(rate, Rate):
            typer.echo(
                f"  {agent}: {rate.fixed:.1f} s + {rate.per_unit:.3g} s per unit ({rate.source})"
            )
        else:
            typer.echo(f"  {agent}: no estimate, {rate}")
    typer.echo(f"nothing was run and nothing written to {out}")


def _report(runs_dir: Path, event: str | None) -> Path:
    from ogm.analysis.report import ReportError, write_report

    try:
        return write_report(runs_dir, event=event)
    except (ReportError, FileNotFoundError) as err:
        _fail(str(err))


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""

    @app.command("run")
    def run(
        experiment: Annotated[
            str, typer.Argument(help="experiment file, or a built-in name (ogm experiments)")
        ],
        out: Annotated[
            Path | None,
            typer.Option(help="output folder [default: runs/<name>, runs/<name>-<size>]"),
        ] = None,
        workers: Workers = None,
        size: Annotated[
            str | None,
            typer.Option(
                help="a size the experiment file defines ([sizes.<name>]), e.g. smoke "
                "[default: the file as written, its full size]"
            ),
        ] = None,
        backend: Annotated[str, typer.Option(help="local (process pool) or ray")] = "local",
        ray_address: Annotated[
            str | None,
            typer.Option(
                help="Ray cluster of --backend ray: host:port of its head node "
                "[default: $RAY_ADDRESS, else a local Ray instance]",
            ),
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                help="override a value of the experiment file, e.g. seeds=2 or "
                "budgets.odt.online.rounds=20 (repeatable)",
            ),
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                help="list the runs and estimate their cost (from finished runs in --out, "
                "else by timing each agent at two tiny budgets), then stop",
            ),
        ] = False,
    ) -> None:
        """Run every variant x seed of an experiment; finished runs are skipped, killed ones resumed."""
        if dry_run:
            _dry_run(experiment, out, workers, set_, size)
            return
        out = _run(experiment, out, workers, backend, set_, ray_address, size)
        typer.echo(f"report: ogm report {out}")

    @app.command("report")
    def report(
        runs_dir: Annotated[Path, typer.Argument(help="folder holding run directories")],
        event: Annotated[
            str | None,
            typer.Option(help="safety event to track [default: the game's primary event]"),
        ] = None,
    ) -> None:
        """Write a static HTML report (learning curves, emergence, frontier, episodes, configs)."""
        typer.echo(_report(runs_dir, event))

    @app.command("demo")
    def demo(
        out: Annotated[Path, typer.Option(help="output folder")] = Path("runs") / DEMO,
        workers: Workers = None,
    ) -> None:
        """The main job: run the quick tomato-watering experiment end to end and report it."""
        _run(DEMO, out, workers, "local")
        typer.echo(_report(out, None))

    @app.command("experiments")
    def experiments() -> None:
        """List the built-in experiments."""
        from ogm.experiments.spec import builtin_names, load_experiment

        for name in builtin_names():
            spec, _ = load_experiment(name)
            typer.echo(f"{name:24s} {spec.description}")
