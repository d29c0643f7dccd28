"""`ogm train-online`, `ogm train`, `ogm resume`: the OGM agent (online ODT) and resuming runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ogm.cli.paths import resolved
from ogm.cli.summary import run_summary

ConfigOption = Annotated[Path | None, typer.Option(help="TOML config (OnlineConfig).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set online.rounds=20 (repeatable)."),
]
OutOption = Annotated[Path, typer.Option(help="Run directory to create or resume.")]


def _run_record(path: Path) -> dict[str, Any] | None:
    """The run.json of the run that ``path`` (a run directory or a checkpoint in one) is in."""
    from ogm.train.rundir import RunDir

    for candidate in (path, path.parent.parent):
        if (candidate / "run.json").is_file():
            return RunDir.open(candidate).record  # checked: a damaged one is named
    return None


def _online_config(
    config: Path | None, overrides: list[str] | None, defaults: dict[str, Any], source: str
):
    """An OnlineConfig from file and ``--set``, with ``defaults`` for keys the user left unset."""
    from ogm.train.config import load_config, validate_config
    from ogm.train.online import OnlineConfig

    cfg = load_config(OnlineConfig, config, overrides or [])
    data = cfg.model_dump(mode="json")
    data.update({k: v for k, v in defaults.items() if k not in cfg.model_fields_set})
    return validate_config(OnlineConfig, data, source)


def _start(cfg_factory, out: Path) -> None:
    from ogm.data.dataset import DatasetError
    from ogm.train.config import ConfigError
    from ogm.train.online import run
    from ogm.train.rundir import RunDirError

    try:
        cfg = cfg_factory()
    except (ConfigError, DatasetError, RunDirError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    run(resolved(cfg), out)
    typer.echo(run_summary(out))


def train_online(
    pretrained: Annotated[
        Path, typer.Option(help="Run directory or checkpoint holding a Decision Transformer.")
    ],
    out: OutOption,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Finetune a pretrained Decision Transformer online (ODT with the essay's controls).

    Environment and demonstrations default to those of the pretrained run.
    """

    def make():
        from ogm.train.rundir import RunDirError

        if not pretrained.exists():
            raise RunDirError(f"--pretrained {pretrained} does not exist")
        record = _run_record(pretrained) or {"config": {}}
        inherited = {
            k: record["config"][k]
            for k in ("env_id", "env_kwargs", "dataset")
            if k in record["config"]
        }
        return _online_config(
            config, set_, {**inherited, "pretrained": str(pretrained)}, "train-online options"
        )

    _start(make, out)


def train(
    dataset: Annotated[Path, typer.Option(help="Minari dataset directory of demonstrations.")],
    out: OutOption,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Pretrain a Decision Transformer offline on a dataset, then finetune it online.

    The environment defaults to the one the dataset was collected in.
    """

    def make():
        from ogm.data.dataset import METADATA_KEY, dataset_metadata

        meta = dataset_metadata(dataset).get(METADATA_KEY, {})
        defaults = {k: meta[k] for k in ("env_id", "env_kwargs") if k in meta}
        return _online_config(config, set_, {**defaults, "dataset": str(dataset)}, "train options")

    _start(make, out)


def resume(run_dir: Annotated[Path, typer.Argument(help="Run directory to continue.")]) -> None:
    """Continue a run (any agent kind) from its latest checkpoint, with its stored config.

    The resumed run writes the same rows as a run that was never interrupted (on CPU).
    """
    from ogm.experiments.registry import UnknownKindError, get
    from ogm.train.config import ConfigError, validate_config
    from ogm.train.rundir import RunDir, RunDirError

    try:
        record = RunDir.open(run_dir)
        config_cls, run = get(record.kind).load()
        cfg = validate_config(config_cls, record.config, f"{run_dir}/run.json")
    except (ConfigError, RunDirError, UnknownKindError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if record.status == "done":
        typer.echo(f"{run_dir} is already done")
        typer.echo(run_summary(run_dir))
        return
    run(cfg, run_dir)
    typer.echo(run_summary(run_dir))


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("train-online")(train_online)
    app.command("train")(train)
    app.command("resume")(resume)
