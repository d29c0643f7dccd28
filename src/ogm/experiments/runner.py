"""Running an experiment's grid: one run directory per variant and seed, many at a time.

Layout of an experiment's output folder::

    experiment.json         the validated spec, its source and the list of runs (each with
                            its variant, agent, seed, config and environment point)
    experiment.toml         the experiment file as given
    <variant>/seed_<n>/     one run directory per run (see ogm.train.rundir)
        error.txt           the traceback of the last failure, if the run failed

With an environment sweep, each variant folder lies in the folder of its environment point:
``k=3/<variant>/seed_<n>/``.

Runs whose ``run.json`` says ``done`` are skipped; any other run is started, which resumes it
from its latest checkpoint when it has one (every agent's ``run`` does this). Runs go to a
pool of worker processes that live for the whole grid (imports are paid once per worker,
not once per run); a run that fails is reported and the others go on, and a worker that
dies (killed, out of memory) fails its run and is replaced.
Every run gets the same number of torch threads (``ogm.train.config.torch_threads``, one
by default), whether it runs alone or in a pool, so a restarted run computes exactly what
it would have. Backends: ``local`` (a pool of ``workers`` spawned processes) and ``ray``
(one Ray task per run, reserving the experiment's ``[resources]``, on a cluster or a local
Ray instance; workers write the runs, so the output folder must be on a file system every
node sees, which is checked on every node before any run starts: docs/cluster.md).

Nothing is written before every check passes (the spec, the backend, the runs already in
the folder; with Ray, the cluster and its resources), so a command that fails to start
leaves ``out`` as it was (but for ``experiment.json`` when a Ray node cannot see ``out``).
A run directory whose stored config differs from the experiment's is restarted when it holds
no checkpoint (a start that failed: nothing to keep), and is an error naming what to do
otherwise.

``plan_experiment`` is ``ogm run --dry-run``: the runs, and their cost estimated from
measured rates (finished runs in ``out``, or a calibration at two tiny budgets).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import tempfile
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

from ogm.analysis.runs import EXPERIMENT_FILE
from ogm.experiments import registry
from ogm.experiments.spec import ExperimentSpec, ResourcesSpec, RunSpec, expand
from ogm.train.config import torch_threads
from ogm.train.progress import PROGRESS_VARIABLE
from ogm.train.rundir import RUN_FILE, RunDir, RunDirError, atomic_write_text, latest_checkpoint

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
    """``execute_run(*args)`` with ``threads`` torch threads (in a pool or Ray worker), its
    own progress bars off (the runner shows one over runs)."""
    import torch

    os.environ[PROGRESS_VARIABLE] = "0"
    torch.set_num_threads(threads)
    return execute_run(*args)


def _serve(threads: int, tasks: Connection) -> None:
    """A pool worker: runs the tasks it is sent one after another, so its imports are paid
    once, answering each with ``execute_run``'s result, until it is sent ``None``."""
    while (args := tasks.recv()) is not None:
        tasks.send(run_in_worker(threads, args))


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


@dataclass
class _Worker:
    """A process of the local pool, the pipe it takes tasks on, and its current run."""

    process: mp.process.BaseProcess
    tasks: Connection
    run: tuple[RunSpec, Path] | None = None


def _run_local(
    todo: list[tuple[RunSpec, Path]], workers: int, report: Callable[[Outcome], None]
) -> None:
    """Runs ``todo`` on a pool of ``workers`` spawned processes that live for the whole
    grid. A worker that dies (killed, out of memory) fails its run and is replaced."""
    context = mp.get_context("spawn")
    threads = torch_threads()
    pending = deque(todo)
    pool: list[_Worker] = []

    def start_worker() -> _Worker:
        tasks, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(threads, theirs), name="ogm-worker")
        process.start()
        theirs.close()
        return _Worker(process, tasks)

    try:
        while pending or any(w.run for w in pool):
            while pending and len(pool) < workers:
                pool.append(start_worker())
            for worker in pool:
                if worker.run is None and pending:
                    worker.run = pending.popleft()
                    worker.tasks.send(_task_args(*worker.run))
            busy = [w for w in pool if w.run is not None]
            ready = set(wait([w.tasks for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.tasks not in ready and worker.process.sentinel not in ready:
                    continue
                run, path = worker.run
                worker.run = None
                try:
                    error = worker.tasks.recv()
                except (EOFError, OSError):  # the worker died with the run
                    worker.process.join()
                    report(
                        Outcome(run, path, "failed", _exit_detail(path, worker.process.exitcode))
                    )
                    pool.remove(worker)
                    continue
                if error is None:
                    report(Outcome(run, path, "done"))
                else:
                    report(Outcome(run, path, "failed", _exit_detail(path, 1)))
        for worker in pool:
            worker.tasks.send(None)
        for worker in pool:
            worker.process.join()
    finally:
        for worker in pool:  # interrupted: stop the runs, they will resume
            if worker.process.is_alive():
                worker.process.terminate()
            worker.process.join()


# ----------------------------------------------------------------------------- Ray backend

RAY_RETRIES = 3  # a run whose Ray worker dies is started again this often; it resumes
PROBE_FILE = ".ray-probe"  # written by the driver, read on every node: is ``out`` shared?
LOCAL_ADDRESSES = ("auto", "local")  # Ray's names for a cluster on this machine


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RunnerError(
            "--backend ray needs Ray: pip install 'ogm[ray]' (or use --backend local)"
        ) from None


def _last_line(error: BaseException) -> str:
    """The last non-empty line of an error's message (Ray's hold whole tracebacks)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _check_reachable(address: str) -> None:
    """Fail fast on an address nothing listens on: Ray itself retries for many minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RunnerError(f"Ray address {address!r} must look like host:port (or ray://host:port)")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise RunnerError(
            f"cannot reach a Ray cluster at {address} ({err.strerror or err}): start it "
            "(ray start --head) or correct --ray-address / RAY_ADDRESS"
        ) from None


def connect_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (default ``$RAY_ADDRESS``, as ``ray job submit``
    sets it; else the one ``ray start`` started on this machine), or start a local Ray
    instance on this machine's cores; nothing when this process has joined one already (as
    a test or a notebook may have)."""
    _require_ray()
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None and address not in LOCAL_ADDRESSES:
        _check_reachable(address)
    try:
        ray.init(address=address)
    except Exception as err:  # ConnectionError, a wrong token, another Ray version, ...
        what = f"join the Ray cluster at {address}" if address else "start or join Ray here"
        raise RunnerError(f"cannot {what}: {_last_line(err)}") from None


def _alive_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes that can run a run (with CPUs), as ``ray.nodes()`` has them."""
    import ray

    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]


def check_cluster(runs: list[RunSpec], resources: ResourcesSpec) -> None:
    """Every run fits on some live node (its ``[resources]``); else a ``RunnerError``
    saying what the runs reserve and what the nodes have (Ray would keep a run that fits
    on no node waiting forever)."""
    nodes = _alive_nodes()
    have = sorted({(n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0)) for n in nodes})
    for run in runs:
        cpus, gpus = resources.for_kind(run.kind)
        if not any(cpu >= cpus and gpu >= gpus for cpu, gpu in have):
            nodes_text = ", ".join(f"{cpu:g} CPU + {gpu:g} GPU" for cpu, gpu in have) or "none"
            raise RunnerError(
                f"no node of the Ray cluster has the {cpus:g} CPU + {gpus:g} GPU that each "
                f"{run.kind} run reserves ([resources] of the experiment file); its nodes "
                f"with CPUs: {nodes_text}"
            )


def _prepare_node(out: str, token: str, runs: list[RunSpec]) -> bool:
    """On one Ray node: whether it sees ``out`` as the driver does (the token the driver
    wrote there); if so, its dataset cache then holds every dataset the runs name."""
    try:
        seen = (Path(out) / PROBE_FILE).read_text()
    except OSError:
        return False
    if seen != token:
        return False
    prepare_datasets(runs, progress=False)
    return True


def prepare_ray_nodes(out: Path, runs: list[RunSpec]) -> None:
    """Check that every live node sees the output folder (the workers write the runs there:
    the Ray backend needs a file system every node mounts) and build the runs' datasets on
    each node, one node after another (so that a shared cache is built once)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    out = out.resolve()
    token = uuid.uuid4().hex
    atomic_write_text(out / PROBE_FILE, token)
    task = ray.remote(num_cpus=0)(_prepare_node)
    problems = []
    try:
        for node in _alive_nodes():
            name = f"node {node['NodeManagerAddress']}"
            pinned = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            try:
                ref = task.options(scheduling_strategy=pinned).remote(str(out), token, runs)
                if not ray.get(ref):
                    problems.append(f"{name} does not see {out}")
            except ray.exceptions.RayError as err:  # e.g. ogm is not installed there
                problems.append(f"{name} failed: {_last_line(err)}")
    finally:
        (out / PROBE_FILE).unlink(missing_ok=True)
    if problems:
        raise RunnerError(
            "; ".join(problems) + ": the Ray backend writes each run in --out from the node "
            "that runs it, so every node needs that folder at the same path (a shared file "
            "system such as NFS) and the same ogm installed"
        )


def _ray_run(threads: int, args: tuple) -> str | None:
    """``run_in_worker`` in a Ray worker, on CPU unless Ray gave this task a GPU (Ray leaves
    ``CUDA_VISIBLE_DEVICES`` as it is for tasks that reserve none, so device ``auto`` would
    take a GPU another run reserved). The driver made the run directory before submitting
    the task (``_run_ray``), so a worker that does not find it does not see ``out``."""
    import ray

    if not ray.get_gpu_ids():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    run_dir = Path(args[-1])
    if not run_dir.is_dir():  # a node that joined after the check
        node = ray.util.get_node_ip_address()
        return f"node {node} does not see {run_dir} (the Ray backend needs a shared file system)"
    return run_in_worker(threads, args)


def _run_ray(
    todo: list[tuple[RunSpec, Path]], report: Callable[[Outcome], None], resources: ResourcesSpec
) -> None:
    """One Ray task per run with its ``[resources]``, each in a fresh worker process (as
    the pool's child; it also frees a GPU's memory). A run whose worker dies (killed, out
    of memory, node lost) is started again, ``RAY_RETRIES`` times, and resumes from its
    latest checkpoint; after that it is reported failed, to be resumed by a re-run."""
    import ray

    threads = torch_threads()
    task = ray.remote(max_calls=1, max_retries=RAY_RETRIES)(_ray_run)
    refs = {}
    for run, path in todo:
        path.mkdir(parents=True, exist_ok=True)  # what the worker looks for (``_ray_run``)
        cpus, gpus = resources.for_kind(run.kind)
        options = task.options(num_cpus=cpus, num_gpus=gpus, name=run.relpath)
        refs[options.remote(threads, _task_args(run, path.resolve()))] = (run, path)
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                run, path = refs.pop(ref)
                try:
                    error = ray.get(ref)
                    if error and (path / ERROR_FILE).exists():
                        error += f" (traceback in {path / ERROR_FILE})"
                except ray.exceptions.RayTaskError as err:
                    error = f"failed in its Ray worker: {_last_line(err)}"
                except ray.exceptions.RayError as err:
                    error = (
                        f"its Ray worker was lost ({type(err).__name__}), also after "
                        f"{RAY_RETRIES} restarts; run the experiment again to resume it"
                    )
                report(Outcome(run, path, "failed", error) if error else Outcome(run, path, "done"))
    finally:
        for ref in refs:  # interrupted: stop the runs, they will resume
            ray.cancel(ref, force=True)


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
    from pydantic import TypeAdapter

    from ogm.data.dataset import build_dataset
    from ogm.data.recipe import Recipe, RLDatasetRecipe
    from ogm.train.offline import dataset_cache_dir

    recipes = {
        json.dumps(run.config["dataset"], sort_keys=True): run.config["dataset"]
        for run in runs
        if isinstance(run.config.get("dataset"), dict)
    }
    cache = dataset_cache_dir()
    for values in recipes.values():
        recipe = TypeAdapter(Recipe).validate_python(values)
        if progress and isinstance(recipe, RLDatasetRecipe):
            print(
                f"dataset: {recipe.quality} of {recipe.env_id}, recorded by collect-rl over "
                f"{recipe.total_timesteps} steps of training (once; a killed collection "
                f"resumes in {recipe.collection_dir(cache)})"
            )
        elif progress:
            print(
                f"dataset: {recipe.episodes} episodes of {recipe.env_id} (cached after the first time)"
            )
        build_dataset(recipe, cache)


def stored_difference(path: Path, run: RunSpec) -> list[str] | None:
    """Config keys in which the run stored at ``path`` differs from ``run`` (``["kind"]``
    for another kind, ``["run.json"]`` when unreadable); None when there is no run there
    yet or it is the same run."""
    if not (path / RUN_FILE).exists():
        return None
    try:
        stored = RunDir.open(path)
    except RunDirError:
        return [RUN_FILE]
    if stored.kind != run.kind:
        return ["kind"]
    keys = set(stored.config) | set(run.config)
    changed = sorted(k for k in keys if stored.config.get(k) != run.config.get(k))
    return changed or None


def _has_progress(path: Path) -> bool:
    """Whether a run directory holds anything to keep: a checkpoint, or a finished run."""
    try:
        return latest_checkpoint(path / "checkpoints") is not None or run_status(path) == "done"
    except RunDirError:
        return True


def check_existing_runs(runs: list[RunSpec], out: Path) -> list[Path]:
    """Run directories under ``out`` that hold another config and nothing to keep (to be
    started afresh); a differing run with progress is a ``RunnerError`` saying what to do."""
    restart, conflicts = [], {}
    for run in runs:
        path = out / run.relpath
        changed = stored_difference(path, run)
        if changed is None:
            continue
        if _has_progress(path):
            conflicts[path] = f"  {run.relpath}: differs in {', '.join(changed)}"
        else:
            restart.append(path)
    if conflicts:
        raise RunnerError(
            f"{out} holds runs made with another config, which cannot continue with this "
            "one:\n" + "\n".join(conflicts.values()) + "\nRun the original command to finish "
            "them, choose another --out, or delete them to start again: rm -r "
            + " ".join(str(path) for path in conflicts)
        )
    return restart


def run_experiment(
    spec: ExperimentSpec,
    out: Path,
    *,
    text: str = "",
    source: str = "<experiment>",
    workers: int | None = None,
    backend: Backend = "local",
    progress: bool = True,
    ray_address: str | None = None,
) -> Summary:
    """Expand ``spec`` and run every run not yet done under ``out``; failures do not stop it.

    ``workers``: runs at a time of the local pool. ``ray_address``: the Ray cluster of
    ``backend="ray"`` (see ``connect_ray``).
    """
    from tqdm import tqdm

    out = Path(out)
    runs = expand(spec, source, out)
    if backend not in ("local", "ray"):
        raise RunnerError(f"unknown backend {backend!r}; use 'local' or 'ray'")
    if backend == "ray":
        if workers is not None:
            raise RunnerError(
                "--workers is for the local pool; on Ray, the experiment's [resources] "
                "decide how many runs share a node (docs/cluster.md)"
            )
        connect_ray(ray_address)
        check_cluster(runs, spec.resources)
    elif ray_address is not None:
        raise RunnerError(f"--ray-address {ray_address} is for --backend ray (add it)")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise RunnerError(f"workers must be >= 1, got {workers}")
    for path in check_existing_runs(runs, out):
        shutil.rmtree(path)  # a start that failed under another config: nothing to keep
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
    elif todo:
        prepare_ray_nodes(out, [run for run, _ in todo])
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
                _run_ray(ready, report, spec.resources)
            elif ready:
                _run_local(ready, min(workers, len(ready)), report)
    finally:
        bar.close()
    order = {run.relpath: i for i, run in enumerate(runs)}
    outcomes.sort(key=lambda o: order[o.run.relpath])
    return Summary(out=out, outcomes=outcomes)


# ----------------------------------------------------------------------------- cost estimates

# Per agent kind: the config values that set a run's budget (dotted paths, the first one
# that is set wins) and their units.
BUDGET_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "dt": (("updates", "updates"),),
    "odt": (("online.total_timesteps", "env steps"), ("online.rounds", "rounds")),
    "sb3": (("total_timesteps", "env steps"),),
    "kl_ppo": (("total_timesteps", "env steps"),),
    "bc": (("updates", "updates"),),
    "best_of_n": (("eval_episodes", "episodes"),),
}
# Per agent kind: a config value the cost grows in proportion to besides the budget
# (best-of-n plays n candidate episodes for every episode it keeps); its budget is then
# counted in units of both (candidate episodes)
COST_SCALES: dict[str, tuple[str, str]] = {"best_of_n": ("n", "candidate episodes")}
CALIBRATION_SHARES = (100, 10)  # calibration runs do about 1/100 and 1/10 of a budget


@dataclass(frozen=True)
class Rate:
    """Wall seconds of one run of an agent: ``fixed + per_unit * budget`` (one torch
    thread per run), and how that was measured."""

    fixed: float
    per_unit: float
    source: str

    def seconds(self, budget: float) -> float:
        return self.fixed + self.per_unit * budget


@dataclass(frozen=True)
class Estimate:
    """One run of a plan: its budget, whether it is done, and its estimated wall seconds."""

    run: RunSpec
    done: bool
    budget: float | None
    unit: str
    seconds: float | None


@dataclass
class Plan:
    """What ``ogm run`` would do (``--dry-run``): every run with its estimated cost."""

    out: Path
    estimates: list[Estimate]
    rates: dict[str, Rate | str]  # per agent: its rate, or why there is none
    workers: int

    @property
    def seconds(self) -> float:
        """Estimated run time of the runs still to do, added up."""
        return sum(e.seconds or 0.0 for e in self.estimates if not e.done)

    @property
    def wall_seconds(self) -> float:
        """Estimated wall time with ``workers`` runs at a time: runs that others read
        first, then the rest; each wave takes its share per worker, at least its longest run."""
        total = 0.0
        for needs in (False, True):
            wave = [
                e.seconds or 0.0
                for e in self.estimates
                if not e.done and bool(e.run.needs) == needs
            ]
            if wave:
                total += max(sum(wave) / self.workers, max(wave))
        return total


def _get(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


def _with(config: dict, dotted: str, value: Any) -> dict:
    """A copy of ``config`` with the value at ``dotted`` replaced."""
    head, _, rest = dotted.partition(".")
    return {**config, head: _with(config[head], rest, value) if rest else value}


def budget_key(run: RunSpec) -> tuple[str, str] | None:
    """The config value that sets a run's budget, and its unit (None for a kind without a
    known budget key)."""
    keys = BUDGET_KEYS.get(run.kind, ())
    if run.kind == "odt" and _get(run.config, "online.rounds") == 0:
        keys = (("offline.updates", "updates"),)  # a GM agent: pretraining is all it does
    return next(((key, unit) for key, unit in keys if _get(run.config, key) is not None), None)


def cost_scale(run: RunSpec) -> tuple[float, str | None]:
    """What a run's budget is multiplied by for its cost (``COST_SCALES``), and the unit of
    the product (None: the budget's own)."""
    key, unit = COST_SCALES.get(run.kind, (None, None))
    return (1.0, None) if key is None else (float(_get(run.config, key)), unit)


def budget_of(run: RunSpec) -> tuple[float, str] | None:
    """A run's budget and its unit, in units its cost is proportional to (best-of-n:
    candidate episodes); None for a kind without a known budget key."""
    key = budget_key(run)
    if key is None:
        return None
    scale, unit = cost_scale(run)
    return float(_get(run.config, key[0])) * scale, unit or key[1]


def rates_from_finished(runs: list[RunSpec], out: Path) -> dict[str, Rate]:
    """Per agent with finished runs under ``out``: seconds per budget unit, the median over
    those runs of their wall time (run.json ``created`` to ``updated``) over their budget."""
    per_agent: dict[str, list[float]] = {}
    for run in runs:
        path, budget = out / run.relpath, budget_of(run)
        if budget is None or not budget[0] or run_status(path) != "done":
            continue
        record = RunDir.open(path).record
        try:
            seconds = (
                datetime.fromisoformat(record["updated"])
                - datetime.fromisoformat(record["created"])
            ).total_seconds()
        except (KeyError, ValueError):
            continue
        per_agent.setdefault(run.agent, []).append(seconds / budget[0])
    return {
        agent: Rate(0.0, statistics.median(values), f"{len(values)} finished runs in {out}")
        for agent, values in per_agent.items()
    }


def _replace(value: Any, old: str, new: str) -> Any:
    """``value`` with every string equal to ``old`` replaced by ``new`` (nested)."""
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return new if value == old else value


def calibrate(runs: list[RunSpec], out: Path, folder: Path) -> dict[str, Rate | str]:
    """Per agent: time its first run (of those with the largest ``cost_scale``: best-of-n's
    largest n, the costliest run; its candidates are batched, so a small n costs more per
    candidate than the estimate says, but little in all) at about 1/100 and 1/10 of its
    budget in ``folder`` (in
    this process, modules imported beforehand) and fit ``fixed + per_unit * budget``; an
    agent whose calibration run fails gets the error instead. Runs that read another
    agent's run read its calibration run (or the finished run itself)."""
    first: dict[str, RunSpec] = {}  # per agent its costliest run per budget unit
    for run in runs:
        if run.agent not in first or cost_scale(run)[0] > cost_scale(first[run.agent])[0]:
            first[run.agent] = run
    rates: dict[str, Rate | str] = {}
    calibrated: dict[str, Path] = {}  # agent -> its larger calibration run
    owner = {run.relpath: run.agent for run in runs}
    previous = os.environ.get(PROGRESS_VARIABLE)
    os.environ[PROGRESS_VARIABLE] = "0"
    try:
        for run in sorted(first.values(), key=lambda r: bool(r.needs)):
            key, unit = budget_key(run)
            full = int(_get(run.config, key))
            small = max(1, full // CALIBRATION_SHARES[0])
            large = max(min(full, 3 * small), full // CALIBRATION_SHARES[1])
            entry = registry.get(run.kind)
            entry.load()  # imports (torch, SB3, ...) are not part of a run's cost
            config = run.config
            for need in run.needs:  # read the calibration run, or the finished run itself
                agent = owner.get(need, need)
                if agent in calibrated:
                    config = _replace(config, str((out / need).resolve()), str(calibrated[agent]))
                elif run_status(out / need) != "done":
                    rates[run.agent] = f"needs {agent}, whose calibration failed"
                    break
            else:
                points = []
                for budget in sorted({small, large}):
                    path = folder / run.agent / f"budget_{budget}"
                    start = time.perf_counter()
                    error = execute_run(
                        entry.module, entry.config, entry.run, _with(config, key, budget), str(path)
                    )
                    if error is not None:
                        rates[run.agent] = f"its calibration run failed: {error}"
                        break
                    seconds = time.perf_counter() - start
                    if unit == "env steps":  # whole rollouts: the steps it took
                        budget = RunDir.open(path).record.get("env_steps", budget)
                    scale = cost_scale(run)[0]
                    points.append((budget * scale if scale != 1 else budget, seconds))
                    calibrated[run.agent] = path
                else:
                    rates[run.agent] = _fit(points)
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_VARIABLE)
        else:
            os.environ[PROGRESS_VARIABLE] = previous
    return rates


def _fit(points: list[tuple[int, float]]) -> Rate:
    """``fixed + per_unit * budget`` through the calibration points (one or two)."""
    source = "calibrated here at budgets " + " and ".join(f"{b:,}" for b, _ in points)
    (b1, t1), (b2, t2) = points[0], points[-1]
    per_unit = (t2 - t1) / (b2 - b1) if b2 > b1 else 0.0
    if per_unit <= 0:  # one point, or timing noise: all of it per unit
        return Rate(0.0, t2 / max(b2, 1), source)
    return Rate(max(0.0, t1 - per_unit * b1), per_unit, source)


def plan_experiment(
    spec: ExperimentSpec,
    out: Path,
    *,
    source: str = "<experiment>",
    workers: int | None = None,
) -> Plan:
    """The runs ``run_experiment`` would start and their estimated cost; writes nothing
    under ``out``. Rates come from finished runs of the same agent under ``out`` when there
    are some, else from timing the agent at two tiny budgets (``calibrate``)."""
    out = Path(out)
    runs = expand(spec, source, out)
    check_existing_runs(runs, out)
    rates: dict[str, Rate | str] = dict(rates_from_finished(runs, out))
    todo = [r for r in runs if run_status(out / r.relpath) != "done"]
    unknown = {r.agent for r in todo if r.kind not in BUDGET_KEYS}
    rates |= {agent: "no budget key known for its kind" for agent in unknown}
    missing = [r for r in todo if r.agent not in rates]
    # agents whose runs the missing ones read, and that are not finished: calibrated too
    owner = {r.relpath: r.agent for r in runs}
    needed = {owner[n] for r in missing for n in r.needs if run_status(out / n) != "done"}
    missing += [r for r in runs if r.agent in needed and r not in missing]
    if missing:
        prepare_datasets(missing, progress=False)
        with tempfile.TemporaryDirectory(prefix="ogm-calibration-") as folder:
            rates = calibrate(missing, out, Path(folder)) | rates
    estimates = []
    for run in runs:
        budget = budget_of(run)
        rate = rates.get(run.agent)
        seconds = rate.seconds(budget[0]) if isinstance(rate, Rate) and budget else None
        estimates.append(
            Estimate(
                run,
                done=run_status(out / run.relpath) == "done",
                budget=budget[0] if budget else None,
                unit=budget[1] if budget else "",
                seconds=seconds,
            )
        )
    return Plan(out, estimates, rates, workers or os.cpu_count() or 1)
