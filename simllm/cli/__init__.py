"""The ``simllm`` command line.

Each verb lives in its own module (``hw``, ``model``, ``calibrate``, ``trace``, ``run``, ...)
that exposes ``register(app)``. Exit codes: 0 success, 2 bad input (one line on stderr
naming file, field and expectation; usage errors, unreadable or unwritable user paths and
undecodable files included), 1 internal error.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

import typer

from .. import __version__
from ._common import input_error_of, usage_message

app = typer.Typer(
    name="simllm",
    help="Simulate LLM and MoE serving: hardware, cost model, cluster simulation, sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"simllm {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")) -> None:
    """Simulate LLM and MoE serving: hardware, cost model, cluster simulation, sweeps."""


# verb modules, in the order they appear in --help
_VERBS = ("run", "trace", "hw", "model", "calibrate", "comm", "plan", "place", "sweep", "report", "validate")


def _register_all() -> None:
    for name in _VERBS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # verb not built yet
            raise
        mod.register(app)


_register_all()


def run_cli(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 success, 2 bad input, 1 internal error)."""
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="simllm")
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as e:
        usage = usage_message(e)
        if usage is not None:
            typer.echo(usage, err=True)
            return 2
        err = input_error_of(e)
        if err is not None:
            typer.echo(f"error: {err}", err=True)
            return 2
        if os.environ.get("SIMLLM_DEBUG"):
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e} (set SIMLLM_DEBUG=1 for a traceback)", err=True)
        return 1
    return rc if isinstance(rc, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point with the exit-code contract."""
    sys.exit(run_cli(argv))
