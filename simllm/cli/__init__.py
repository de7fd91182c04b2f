"""The ``simllm`` command line.

Each verb lives in its own module (``hw``, ``model``, ``calibrate``, ``trace``, ``run``, ...)
that exposes ``register(app)``. Exit codes: 0 success, 2 bad input (one line on stderr
naming file, field and expectation), 1 internal error.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from ..errors import InputError

app = typer.Typer(
    name="simllm",
    help="Simulate LLM and MoE serving: hardware, cost model, cluster simulation, sweeps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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


def main(argv: list[str] | None = None) -> None:
    """Console entry point with the exit-code contract."""
    try:
        app(args=argv, standalone_mode=False)
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as e:  # click usage errors come as ClickException
        import click

        if isinstance(e, click.exceptions.UsageError):
            e.show()
            sys.exit(2)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("SIMLLM_DEBUG"):
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e} (set SIMLLM_DEBUG=1 for a traceback)", err=True)
        sys.exit(1)
    sys.exit(0)
