"""Running an experiment's grid: one run directory per variant and seed, many at a time.

Layout of an experiment's output folder::

    experiment.json         the validated spec, its source and the list of runs
    experiment.toml         the experiment file as given
    <variant>/seed_<n>/     one run directory per run (see ogm.train.rundir)
        error.txt           the traceback of the last failure, if the run failed

Runs whose ``run.json`` says ``done`` are skipped; any other run is started, which resumes it
from its latest checkpoint when it has one (every agent's ``run`` does this). Each run is a
child process of its own, so a failing or killed run is reported and the others go on.
Every run gets the same number of torch threads (``ogm.train.config.torch_threads``, one
by default), whether it runs alone or in a pool, so a restarted run computes exactly what
it would have. Backends: ``local`` (a pool of ``workers`` spawned processes) and ``ray`` (one Ray task per run on a cluster; the output folder must
be on a file system every node sees).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Literal

from ogm.analysis.runs import EXPERIMENT_FILE
from ogm.experiments import registry
from ogm.experiments.spec import ExperimentSpec, RunSpec, expand
from ogm.train.config import torch_threads
from ogm.train.rundir import RUN_FILE, RunDir, RunDirError, atomic_write_text

ERROR_FILE = "error.txt"
Backend = Literal["local", "ray"]


class RunnerError(RuntimeError):
    """The runner cannot start (a missing backend, an unusable output folder)."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one run: ``done``, ``skipped`` (done before) or ``failed``."""

    run: RunSpec
    path: Path
    status: Literal["done", "skipped", "failed"]
    detail: str = ""


@dataclass
class Summary:
    """Outcomes of every run of one ``run_experiment`` call."""

    out: Path
    outcomes: list[Outcome]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_status(path: Path) -> str | None:
    """The ``status`` in a run directory's run.json, or None when it has none (yet)."""
    if not (path / RUN_FILE).exists():
        return None
    try:
        return RunDir.open(path).status
    except RunDirError:
        return None


def execute_run(
    module: str, config_name: str, run_name: str, config: dict, run_dir: str
) -> str | None:
    """Run (or resume) one run in this process; None on success, else the error's last line.

    The traceback goes to ``<run_dir>/error.txt`` and run.json is marked ``failed``.
    """
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / ERROR_FILE).unlink(missing_ok=True)
    try:
        config_cls, run = registry.AgentKind(module, config_name, run_name).load()
        run(config_cls.model_validate(config), path)
        if (path / RUN_FILE).exists():
            record = RunDir.open(path)
            if record.status != "done":
                record.set_status("done")
        return None
    except Exception:
        text = traceback.format_exc()
        atomic_write_text(path / ERROR_FILE, text)
        last = text.strip().splitlines()[-1]
        if (path / RUN_FILE).exists():
            RunDir.open(path).set_status("failed", error=last)
        return last


def run_in_worker(threads: int, args: tuple) -> str | None:
    """``execute_run(*args)`` with ``threads`` torch threads (in a pool or Ray worker)."""
    import torch

    torch.set_num_threads(threads)
    return execute_run(*args)


def _child(threads: int, args: tuple) -> None:
    raise SystemExit(0 if run_in_worker(threads, args) is None else 1)


def _task_args(run: RunSpec, path: Path) -> tuple:
    entry = registry.get(run.kind)
    return (entry.module, entry.config, entry.run, run.config, str(path))


def _exit_detail(path: Path, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"killed by {name}; run the experiment again to resume it"
    error = path / ERROR_FILE
    if error.exists():
        return error.read_text().strip().splitlines()[-1] + f" (traceback in {error})"
    return f"exited with code {exitcode}"


def _run_local(
    todo: list[tuple[RunSpec, Path]], workers: int, report: Callable[[Outcome], None]
) -> None:
    context = mp.get_context("spawn")
    threads = torch_threads()
    pending = deque(todo)
    active: dict[int, tuple[mp.process.BaseProcess, RunSpec, Path]] = {}
    try:
        while pending or active:
            while pending and len(active) < workers:
                run, path = pending.popleft()
                process = context.Process(
                    target=_child, args=(threads, _task_args(run, path)), name=run.relpath
                )
                process.start()
                active[process.sentinel] = (process, run, path)
            for sentinel in wait(list(active)):
                process, run, path = active.pop(sentinel)
                process.join()
                if process.exitcode == 0:
                    report(Outcome(run, path, "done"))
                else:
                    report(Outcome(run, path, "failed", _exit_detail(path, process.exitcode)))
    finally:
        for process, _, _ in active.values():  # interrupted: stop the runs, they will resume
            process.terminate()
            process.join()


def _run_ray(todo: list[tuple[RunSpec, Path]], report: Callable[[Outcome], None]) -> None:
    try:
        import ray
    except ImportError:
        raise RunnerError(
            "--backend ray needs Ray: pip install 'ogm[ray]' (or use --backend local)"
        ) from None
    if not ray.is_initialized():
        ray.init()  # a cluster when RAY_ADDRESS is set, else a local one
    task = ray.remote(num_cpus=1, max_retries=0)(run_in_worker)
    threads = torch_threads()
    refs = {task.remote(threads, _task_args(run, path)): (run, path) for run, path in todo}
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            run, path = refs.pop(ref)
            try:
                error = ray.get(ref)
            except Exception as err:  # the worker died
                error = f"ray task died: {err}"
            report(Outcome(run, path, "failed", error) if error else Outcome(run, path, "done"))


def write_experiment_record(
    spec: ExperimentSpec, text: str, source: str, runs: list[RunSpec], out: Path
) -> None:
    """Store the experiment next to its runs (``experiment.json`` and ``experiment.toml``)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "name": spec.name,
        "source": source,
        "spec": spec.model_dump(mode="json"),
        "runs": [{**asdict(run), "path": run.relpath} for run in runs],
    }
    atomic_write_text(out / EXPERIMENT_FILE, json.dumps(record, indent=1))
    atomic_write_text(out / "experiment.toml", text)


def prepare_datasets(runs: list[RunSpec], progress: bool = True) -> None:
    """Collect every demonstration dataset the runs name, once, before any run starts.

    Runs would otherwise build the same cached dataset at the same time in several processes.
    """
    from ogm.data.dataset import build_dataset
    from ogm.data.recipe import DatasetRecipe
    from ogm.train.offline import dataset_cache_dir

    recipes = {
        json.dumps(run.config["dataset"], sort_keys=True): run.config["dataset"]
        for run in runs
        if isinstance(run.config.get("dataset"), dict)
    }
    for recipe in recipes.values():
        recipe = DatasetRecipe.model_validate(recipe)
        if progress:
            print(
                f"dataset: {recipe.episodes} episodes of {recipe.env_id} (cached after the first time)"
            )
        build_dataset(recipe, dataset_cache_dir())


def run_experiment(
    spec: ExperimentSpec,
    out: Path,
    *,
    text: str = "",
    source: str = "<experiment>",
    workers: int | None = None,
    backend: Backend = "local",
    progress: bool = True,
) -> Summary:
    """Expand ``spec`` and run every run not yet done under ``out``; failures do not stop it."""
    from tqdm import tqdm

    out = Path(out)
    runs = expand(spec, source, out)
    if backend not in ("local", "ray"):
        raise RunnerError(f"unknown backend {backend!r}; use 'local' or 'ray'")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise RunnerError(f"workers must be >= 1, got {workers}")
    write_experiment_record(spec, text, source, runs, out)

    outcomes: list[Outcome] = []
    todo: list[tuple[RunSpec, Path]] = []
    for run in runs:
        path = out / run.relpath
        if run_status(path) == "done":
            outcomes.append(Outcome(run, path, "skipped"))
        else:
            todo.append((run, path))
    if backend == "local" and todo:
        prepare_datasets([run for run, _ in todo], progress)
    bar = tqdm(
        total=len(runs), initial=len(outcomes), desc=spec.name, unit="run", disable=not progress
    )

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        bar.update(1)
        failed = sum(o.status == "failed" for o in outcomes)
        bar.set_postfix(failed=failed, refresh=True)
        if outcome.status == "failed":
            bar.write(f"FAILED {outcome.run.relpath}: {outcome.detail}")

    # Two waves: runs that others read (``"@agent"`` references, one level deep) come first.
    try:
        for wave in ([t for t in todo if not t[0].needs], [t for t in todo if t[0].needs]):
            finished = {o.run.relpath for o in outcomes if o.status != "failed"}
            ready = []
            for run, path in wave:
                missing = [need for need in run.needs if need not in finished]
                if missing:
                    report(Outcome(run, path, "failed", f"needs {missing}, which did not finish"))
                else:
                    ready.append((run, path))
            if ready and backend == "ray":
                _run_ray(ready, report)
            elif ready:
                _run_local(ready, min(workers, len(ready)), report)
    finally:
        bar.close()
    order = {run.relpath: i for i, run in enumerate(runs)}
    outcomes.sort(key=lambda o: order[o.run.relpath])
    return Summary(out=out, outcomes=outcomes)
