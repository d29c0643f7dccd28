"""`ogm baseline sb3|bc|kl-ppo`: train (or resume) a baseline in a run directory.

Each command takes ``--config FILE.toml`` and repeated ``--set key=value`` overrides, e.g.::

    ogm baseline sb3 --out runs/ppo --set algo=ppo --set total_timesteps=100000
    ogm baseline bc --out runs/fbc --set top_fraction=0.1 --set dataset.env_id=ogm/TomatoWatering-v0
    ogm baseline kl-ppo --out runs/klppo --set policy=dt --set init=runs/dt --set beta=0.1

Running a command again on the same ``--out`` with the same config resumes the run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from ogm.cli.paths import resolved
from ogm.cli.summary import run_summary

# command name -> (module, config class); the module is imported only when the command runs
KINDS = {
    "sb3": (
        "ogm.baselines.sb3",
        "SB3Config",
        "RL from scratch with Stable-Baselines3: PPO, DQN or SAC.",
    ),
    "bc": (
        "ogm.baselines.bc",
        "BCConfig",
        "Behaviour cloning; filtered BC with --set top_fraction=x.",
    ),
    "kl-ppo": (
        "ogm.baselines.kl_ppo",
        "KLPPOConfig",
        "KL-regularised PPO finetuning of a pretrained DT or BC policy (--set beta=...).",
    ),
    "best-of-n": (
        "ogm.baselines.best_of_n",
        "BestOfNConfig",
        "Best of n sampled episodes of a pretrained DT or BC policy, by observed return.",
    ),
}


def _command(module_name: str, config_name: str, help_text: str):
    def command(
        out: Annotated[Path, typer.Option(help="Run directory to create or resume.")],
        config: Annotated[
            Path | None, typer.Option(help="TOML config file (fields of the kind's config class).")
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="Override a config key, e.g. --set seed=1 (repeatable)."),
        ] = None,
    ) -> None:
        from ogm.train.config import ConfigError, load_config

        module = importlib.import_module(module_name)
        try:
            cfg = load_config(getattr(module, config_name), config, set_ or [])
        except ConfigError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        module.run(resolved(cfg), out)
        typer.echo(run_summary(out))

    command.__doc__ = help_text
    return command


def register(app: typer.Typer) -> None:
    """Add ``ogm baseline ...`` to the root app."""
    group = typer.Typer(help="Baselines: RL from scratch, (filtered) BC, KL-regularised PPO.")
    for name, (module_name, config_name, help_text) in KINDS.items():
        group.command(name)(_command(module_name, config_name, help_text))
    app.add_typer(group, name="baseline")
