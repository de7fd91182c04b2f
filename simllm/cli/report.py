"""`simllm report`: plots and an HTML page from a sweep or a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _check_results(path: Path) -> None:
    """A results CSV must be a sweep's table (one row per point, keyed by config_hash)."""
    if path.suffix != ".csv" or not path.is_file():
        return
    import pandas as pd

    from ..errors import InputError

    try:
        head = pd.read_csv(path, nrows=5)
    except pd.errors.EmptyDataError:
        raise InputError("empty file: expected a sweep's results table", file=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable CSV: {str(e).strip().splitlines()[-1] if str(e).strip() else e}",
                         file=path) from None
    missing = [c for c in ("config_hash", "status") if c not in head.columns]
    if missing:
        raise InputError(f"not a sweep results table: no column {', '.join(missing)} "
                         f"(found {', '.join(map(str, head.columns[:8]))})", file=path)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        path: Path = typer.Argument(..., help="Sweep output folder (results.csv), a results CSV, or a run folder."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: PATH/report)."),
        title: Optional[str] = typer.Option(None, help="Page title."),
    ) -> None:
        """Write PNG and SVG plots and one HTML page (index.html)."""
        from ..report import build_report

        _check_results(path / "results.csv" if path.is_dir() and (path / "results.csv").exists() else path)
        page = build_report(path, out, title=title)
        typer.echo(f"wrote {page}")
