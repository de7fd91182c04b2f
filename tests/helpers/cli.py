"""Run the ``simllm`` CLI in-process, as the tests that check its exit codes and output do."""

from __future__ import annotations

import pytest


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of ``simllm <argv>``."""
    from simllm.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err
