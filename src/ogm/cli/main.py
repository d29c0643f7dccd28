"""Entry point of the ``ogm`` command.

Each command group lives in its own module and adds its commands through ``register``.
Errors a user can fix (a bad config, a missing or corrupt dataset or checkpoint, a wrong
value) end the command with their message and exit code 2; set ``OGM_DEBUG=1`` to see
the traceback as well.
"""

from __future__ import annotations

import os
import sys

import typer

from ogm.cli import baselines, data, envs, experiments, offline, online

app = typer.Typer(
    name="ogm",
    help="ogm: online generative-modeling agents and the experiments that measure their safety.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (envs, data, offline, online, baselines, experiments):
    module.register(app)


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
