"""Test-wide settings.

One torch thread: the tests' models are tiny, for which one thread is as fast as two and
far faster on a busy 2-core machine; it also keeps float reductions, and so the numbers
the tests compare, independent of the machine's core count.

The tests run in one process per core (pytest-xdist, ``-n auto --dist loadfile`` in
pyproject.toml). Each process gets a dataset and reward-model cache of its own, so that
processes never build the same cached artefact at once and the user's cache is left alone.
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    os.environ["OGM_CACHE_DIR"] = tempfile.mkdtemp(prefix="ogm-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.pop("OGM_CACHE_DIR"), ignore_errors=True)


@pytest.fixture(scope="session")
def run_smoke_size(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], Path]:
    """Runs a built-in experiment at its ``smoke`` size, with a dataset cache of its own,
    checks that ``runs`` runs finished, and reports them; returns the folder holding
    ``cache/`` and ``runs/`` (``runs/report/``)."""

    def run(name: str, runs: int) -> Path:
        from ogm.analysis.report import write_report
        from ogm.experiments.runner import run_experiment
        from ogm.experiments.spec import load_experiment

        root = tmp_path_factory.mktemp(name)
        spec, _ = load_experiment(name, size="smoke")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OGM_CACHE_DIR", str(root / "cache"))
            summary = run_experiment(spec, root / "runs", workers=2, progress=False)
            assert summary.count("done") == runs, [o.detail for o in summary.failed]
            write_report(root / "runs")
        return root

    return run
