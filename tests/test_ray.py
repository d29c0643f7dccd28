"""The Ray backend end to end, on a local Ray instance of 2 CPUs: the same rows as the
local pool, resumes after a killed driver or a killed worker, and one clear line for each
way it cannot start (an unreachable cluster, missing resources, a node that does not see
the output folder)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from ogm.experiments import runner  # noqa: E402
from ogm.experiments.runner import PROBE_FILE, RunnerError, run_experiment, run_status  # noqa: E402
from ogm.experiments.spec import ExperimentError, ExperimentSpec, parse_experiment  # noqa: E402
from ogm.train.rundir import RunDir, RunDirError, latest_checkpoint  # noqa: E402

# A built-in-style experiment at tiny budgets: per seed a GM agent, then an OGM agent that
# starts from it (two waves, an absolute "@gm" path), checkpointing every round.
EXPERIMENT = """
name = "ray-tiny"
seeds = 2

[environment]
env_id = "ogm/TomatoWatering-v0"

[dataset]
episodes = 20
epsilon = 0.05

[common]
num_envs = 4
eval_episodes = 4
eval_every = 400

[budgets.dt]
n_layer = 1
n_embd = 32
context_len = 5
updates = 30
warmup_steps = 5
checkpoint_every = 10
fidelity_targets = 0

[budgets.odt.online]
rounds = 6
updates_per_round = 10
checkpoint_every = 1

[[agents]]
name = "gm"
kind = "dt"

[[agents]]
name = "ogm"
kind = "odt"
config = { pretrained = "@gm" }
"""
RUNS = ("gm/seed_0", "gm/seed_1", "ogm/seed_0", "ogm/seed_1")
WALL_TIME_COLUMNS = {"wall_time_s", "updates_per_s", "seconds"}  # differ between any two runs


def rows(path: Path) -> list[dict[str, str]]:
    """A CSV log's rows without the columns that measure wall time."""
    with path.open() as file:
        return [
            {k: v for k, v in row.items() if k not in WALL_TIME_COLUMNS}
            for row in csv.DictReader(file)
        ]


def assert_same_rows(out: Path, reference: Path, runs: tuple[str, ...] = RUNS) -> None:
    for run in runs:
        for name in ("episodes.csv", "rounds.csv"):
            assert (out / run / name).exists(), f"{run}/{name} missing"
            assert rows(out / run / name) == rows(reference / run / name), f"{run}/{name}"


def ogm_run(folder: Path, *options: str) -> list[str]:
    """The command ``ogm run`` of the experiment (written to ``folder``) with ``options``."""
    (folder / "ray-tiny.toml").write_text(EXPERIMENT)
    return [sys.executable, "-m", "ogm.cli.main", "run", str(folder / "ray-tiny.toml"), *options]


def spec(*overrides: str) -> ExperimentSpec:
    return parse_experiment(EXPERIMENT, "ray-tiny.toml", list(overrides))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray instance (2 CPUs, no dashboard) whose workers share this test's dataset
    cache; yields its address."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OGM_CACHE_DIR", str(cache))  # workers inherit the driver's environment
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            "local",  # a new instance, even where `ray start` left one running
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            log_to_driver=False,
        )
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def pool(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experiment through the local pool: the rows every Ray run must match."""
    out = tmp_path_factory.mktemp("pool")
    summary = run_experiment(spec(), out, workers=2, progress=False)
    assert summary.count("done") == len(RUNS)
    return out


def ray_workers(name: str) -> list[int]:
    """Pids of this test's Ray workers now running the task named ``name`` (a run's
    relpath: Ray titles a worker ``ray::<task name>``)."""
    cache = f"OGM_CACHE_DIR={os.environ['OGM_CACHE_DIR']}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            if title == f"ray::{name}".encode() and cache in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


def mid_run(run_dir: Path) -> int:
    """The step of a run's latest checkpoint while it is not done, else 0."""
    try:
        if RunDir.open(run_dir).status == "done":
            return 0
        checkpoint = latest_checkpoint(run_dir / "checkpoints")
    except (OSError, RunDirError):
        return 0
    return int(checkpoint.name.removeprefix("step_")) if checkpoint else 0


def alive_nodes() -> int:
    return sum(node["Alive"] for node in ray.nodes())


def wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ----------------------------------------------------------------------------- same rows


def test_ray_runs_write_the_rows_the_pool_writes(cluster: str, pool: Path, tmp_path: Path):
    summary = run_experiment(spec(), tmp_path, backend="ray", progress=False)
    assert [o.status for o in summary.outcomes] == ["done"] * len(RUNS)
    assert_same_rows(tmp_path, pool)
    assert RunDir.open(tmp_path / "ogm/seed_0").config["pretrained"] == str(
        (tmp_path / "gm/seed_0").resolve()
    )
    assert not (tmp_path / PROBE_FILE).exists()  # the shared-folder check cleans up


def test_a_killed_driver_reruns_skip_finished_runs_and_resume_the_others(
    cluster: str, pool: Path, tmp_path: Path
):
    out = tmp_path / "out"
    shutil.copytree(pool / "gm/seed_0", out / "gm/seed_0")  # a run finished before
    options = ("--set", "seeds=[0]", "--out", str(out), "--backend", "ray", "--ray-address")
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen(ogm_run(tmp_path, *options, cluster), stdout=log, stderr=log)
    try:
        wait_for(
            lambda: driver.poll() is not None or mid_run(out / "ogm/seed_0"),
            what="the OGM run mid-way",
        )
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()
    assert run_status(out / "ogm/seed_0") == "running"
    # Ray stops a dead driver's workers; wait until they are gone before resuming their runs.
    wait_for(lambda: not ray_workers("ogm/seed_0"), what="the dead driver's worker to stop")

    again = run_experiment(spec("seeds=[0]"), out, backend="ray", progress=False)
    assert [o.status for o in again.outcomes] == ["skipped", "done"]
    assert_same_rows(out, pool, ("ogm/seed_0",))


def test_a_killed_worker_is_reported_then_resumed_never_lost(
    cluster: str, pool: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    one_seed = spec("seeds=[0]")
    victim = tmp_path / "ogm/seed_0"
    shutil.copytree(pool / "gm/seed_0", tmp_path / "gm/seed_0")  # finished: skipped

    def run_killing_once(after: int) -> int:
        """Run the experiment, killing the victim's worker once it checkpointed past
        ``after``; returns the step it was killed at."""
        killed = []

        def kill() -> None:
            wait_for(lambda: mid_run(victim) > after and ray_workers("ogm/seed_0"), what="victim")
            killed.append(mid_run(victim))
            for pid in ray_workers("ogm/seed_0"):
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill)
        killer.start()
        summaries.append(run_experiment(one_seed, tmp_path, backend="ray", progress=False))
        killer.join()
        assert killed, "the victim finished before it could be killed"
        return killed[0]

    summaries: list[runner.Summary] = []
    monkeypatch.setattr(runner, "RAY_RETRIES", 0)  # no restart: the run is reported failed
    step = run_killing_once(after=0)
    (failed,) = summaries[0].failed
    assert failed.run.relpath == "ogm/seed_0"
    assert "Ray worker was lost" in failed.detail and "run the experiment again" in failed.detail
    assert RunDir.open(victim).status == "running"  # its checkpoints are kept

    monkeypatch.setattr(runner, "RAY_RETRIES", 3)  # killed again: restarted, and it resumes
    run_killing_once(after=step)
    assert [o.status for o in summaries[1].outcomes] == ["skipped", "done"]
    assert_same_rows(tmp_path, pool, ("ogm/seed_0",))


# ----------------------------------------------------------------------------- errors


def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path: Path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        ogm_run(tmp_path, "--out", str(out), "--backend", "ray", "--ray-address", "127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach a Ray cluster at 127.0.0.1:9 (")
    assert "ray start --head" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["resources.odt.cpus=4"],
            "no node of the Ray cluster has the 4 CPU + 0 GPU that each odt run",
        ),
        (["resources.gpus=1"], "no node of the Ray cluster has the 1 CPU + 1 GPU that each dt run"),
    ],
)
def test_runs_the_cluster_cannot_place_are_one_line_before_anything_runs(
    cluster: str, tmp_path: Path, overrides: list[str], message: str
):
    with pytest.raises(RunnerError, match=re.escape(message)) as info:
        run_experiment(spec(*overrides), tmp_path / "out", backend="ray", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "ray", "workers": 2}, "--workers is for the local pool"),
        ({"ray_address": "10.0.0.1:6379"}, "--ray-address 10.0.0.1:6379 is for --backend ray"),
    ],
)
def test_options_of_the_other_backend_are_refused(tmp_path: Path, options: dict, message: str):
    with pytest.raises(RunnerError, match=message):
        run_experiment(spec(), tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_resources_merge_per_agent_kind():
    resources = spec("resources.cpus=2", "resources.odt.gpus=0.5").resources
    assert resources.for_kind("odt") == (2.0, 0.5)
    assert resources.for_kind("dt") == (2.0, 0.0)
    assert spec().resources.for_kind("odt") == (1.0, 0.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["resources.cpu=2"], r"resources: unknown key 'cpu' .*; did you mean 'cpus'\?"),
        (["resources.cpus=1.5"], r"resources\.cpus: 1\.5 must be a whole number when above 1"),
        (["resources.gpus=-1"], r"resources\.gpus: Input should be greater than or equal to 0"),
        (["resources.nope.cpus=1"], r"resources: unknown agent kind 'nope'"),
        (["resources.odt.gpu=1"], r"resources\.odt\.gpu: unknown key"),
    ],
)
def test_bad_resources_are_named(overrides: list[str], message: str):
    with pytest.raises(ExperimentError, match=message):
        spec(*overrides)


# Last: it adds a node to the cluster (and removes it again).
def test_a_node_that_does_not_see_the_output_folder_is_one_line(cluster: str, tmp_path: Path):
    """The Ray backend needs --out on a file system every node sees: a second node whose
    view of this test's folder is an empty tmpfs (its own mount namespace) is named before
    any run starts, and a run that lands on it anyway (a node that joined later) fails
    with the same reason instead of writing to that node's disk."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --mount` to give a Ray node its own view of the folder")
    own = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # its Ray files (a short socket path)
    node_script = (
        f"mount -t tmpfs none {tmp_path} && mount -t tmpfs none {own} && exec "
        f"{Path(sys.executable).parent / 'ray'} start --block --address={cluster} "
        f"--num-cpus=1 --temp-dir={own}"
    )
    node = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", node_script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    head = ray.get_runtime_context().get_node_id()
    out = tmp_path / "out"
    try:
        wait_for(lambda: node.poll() is not None or alive_nodes() == 2, what="the node")
        assert node.poll() is None, f"the node did not start: exit {node.returncode}"
        with pytest.raises(RunnerError) as info:
            run_experiment(spec(), out, backend="ray", progress=False)
        (other,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head]
        pinned = NodeAffinitySchedulingStrategy(other, soft=False)
        run = runner.expand(spec(), out=out)[0]
        late = ray.remote(runner._ray_run).options(scheduling_strategy=pinned)
        late_error = ray.get(late.remote(1, runner._task_args(run, out / run.relpath)))
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGTERM)
        node.wait()
        os.rmdir(own)
        wait_for(lambda: alive_nodes() == 1, what="the node to leave")
    message = str(info.value)
    assert "\n" not in message
    assert message.count("does not see") == 1 and f"does not see {out.resolve()}:" in message
    assert "shared file system" in message
    assert not (out / PROBE_FILE).exists()
    assert not any(out.glob("*/seed_*"))  # no run started
    assert f"does not see {out}" in late_error and "shared file system" in late_error
