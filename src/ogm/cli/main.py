"""Entry point of the ``ogm`` command.

Each command group lives in its own module and adds its commands through ``register``.
Errors a user can fix (a bad config, a missing or corrupt dataset or checkpoint, a wrong
value) end the command with their message and exit code 2; set ``OGM_DEBUG=1`` to see
the traceback as well.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ogm.cli import baselines, data, envs, experiments, offline, online
from ogm.train.config import THREADS_VARIABLE, torch_threads

app = typer.Typer(
    name="ogm",
    help="ogm: online generative-modeling agents and the experiments that measure their safety.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (envs, data, offline, online, baselines, experiments):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"ogm {version('ogm')}")
        raise typer.Exit()


@app.callback()
def _options(
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1024,
            help="Torch threads per run (default 1, or $OGM_THREADS): one thread is fastest "
            "for ogm's small models on a shared CPU; raise it for big models on many cores. "
            "`ogm run` gives every run this many, however many run at once.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """ogm: online generative-modeling agents and the experiments that measure their safety."""
    if threads is not None:
        os.environ[THREADS_VARIABLE] = str(threads)
    import torch

    torch.set_num_threads(torch_threads())


def main() -> None:
    """Run the ``ogm`` command, turning user errors into one clear line."""
    try:
        app()
    except (ValueError, OSError, RuntimeError) as err:
        if os.environ.get("OGM_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
