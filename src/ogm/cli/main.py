"""Entry point of the ``ogm`` command.

Each command group lives in its own module and adds its commands through ``register``.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    app()
