"""Run the ``ogm`` command in-process through its entry point, as a shell would.

``typer.testing.CliRunner`` calls the app itself and so skips ``ogm.cli.main.main``, which
is where user errors become one line and exit code 2; tests of that behaviour use this.
"""

from __future__ import annotations

import sys
from unittest import mock

import pytest

from ogm.cli.main import main


def run_ogm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``ogm *args``: its exit code, standard output and standard error."""
    capsys.readouterr()  # what ran before is not this command's output
    with mock.patch.object(sys, "argv", ["ogm", *args]), pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err
