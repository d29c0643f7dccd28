"""`ogm train-offline`: train the GM agent (an offline Decision Transformer) and evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ogm.cli.paths import resolved
from ogm.cli.summary import run_summary


def train_offline(
    out: Annotated[Path, typer.Option(help="Run directory to create or resume.")],
    dataset: Annotated[
        Path | None,
        typer.Option(help="Minari dataset directory (default: the config's dataset)."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config (OfflineConfig).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set updates=500 (repeatable)."),
    ] = None,
) -> None:
    """Train a Decision Transformer on demonstrations, then evaluate it (greedy and sampled, held-out starts).

    The environment defaults to the one the dataset was collected in.
    """
    from ogm.data.dataset import METADATA_KEY, dataset_metadata
    from ogm.train.config import ConfigError, load_config, validate_config
    from ogm.train.offline import OfflineConfig, run

    try:
        cfg = load_config(OfflineConfig, config, set_ or [])
        if dataset is not None:
            data = cfg.model_dump(mode="json", exclude_unset=False)
            data["dataset"] = str(dataset)
            meta = dataset_metadata(dataset).get(METADATA_KEY, {})
            if "env_id" not in cfg.model_fields_set and "env_id" in meta:
                data["env_id"] = meta["env_id"]
                if "env_kwargs" not in cfg.model_fields_set:
                    data["env_kwargs"] = meta.get("env_kwargs", {})
            cfg = validate_config(OfflineConfig, data, "train-offline options")
    except (ConfigError, ValueError, RuntimeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    run(resolved(cfg), out)
    typer.echo(run_summary(out))


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("train-offline")(train_offline)
