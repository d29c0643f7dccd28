"""Entry point of the ``ogm`` command.

Each command group lives in its own module and adds its commands through ``register``.
Errors a user can fix (a bad config, a missing or corrupt dataset or checkpoint, a wrong
value, a full disk) end the command with their message on one line and exit code 2; set
``OGM_DEBUG=1`` to see the traceback as well.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from ogm.cli import baselines, data, envs, experiments, offline, online
from ogm.train.config import THREADS_VARIABLE, describe_errors, torch_threads

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


# What bad input raises: a value, file or run directory that cannot be used, a full disk,
# sizes beyond the memory, numbers beyond a float
USER_ERRORS = (ValueError, OSError, RuntimeError, MemoryError, ArithmeticError)
# The click that typer parses the command line with (recent typers carry their own copy)
_click = sys.modules[typer.BadParameter.__module__]


def main() -> None:
    """Run the ``ogm`` command, turning every user error into one line and exit code 2.

    A bad command line, config, dataset, checkpoint or run directory, a full disk: each ends
    the command with ``error: <message naming the file or field>`` on one line, without a
    traceback. ``OGM_DEBUG=1`` shows the traceback instead, also of an error that a
    command caught itself.
    """
    if os.environ.get("OGM_DEBUG"):
        _debug()
    warnings.formatwarning = _one_line_warning
    try:
        code = app(standalone_mode=False)
    except _click.ClickException as err:  # the command line itself
        if type(err).__name__ == "NoArgsIsHelpError":  # `ogm` or a group alone: its help
            err.show()
            sys.exit(err.exit_code)
        where = f"{err.ctx.command_path}: " if getattr(err, "ctx", None) else ""
        _fail(where + err.format_message(), err.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except USER_ERRORS as err:
        _fail(_describe(err), 2)
    except Exception as err:  # a bug, not bad input: still one line, and how to see more
        _fail(f"unexpected {type(err).__name__}: {err} (OGM_DEBUG=1 shows the traceback)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _describe(err: BaseException) -> str:
    """The message of a user error (a pydantic error listing each field on one line)."""
    if isinstance(err, ValidationError):
        return f"invalid {err.title}: {describe_errors(err)}"
    if isinstance(err, MemoryError):
        return f"out of memory ({err or 'an allocation failed'}): lower the sizes in the config"
    return str(err) or type(err).__name__


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning as one line, ``warning: <message>`` (not the source line it came from)."""
    return f"warning: {' '.join(str(message).split())}\n"


def _fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    typer.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(code)


def _debug() -> NoReturn:
    """``ogm`` as typer runs it, plus the traceback of an error that a command caught and
    turned into an exit code (found in the chain of exceptions behind the exit)."""
    try:
        app()
    except SystemExit as exit_:
        caught = exit_.__context__
        while isinstance(caught, typer.Exit | _click.ClickException):
            caught = caught.__cause__ or caught.__context__
        if caught is not None:
            traceback.print_exception(caught)
        raise
    sys.exit(0)


if __name__ == "__main__":
    main()
