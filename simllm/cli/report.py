"""`simllm report`: plots and an HTML page from a sweep or a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        path: Path = typer.Argument(..., help="Sweep output folder (results.csv), a results CSV, or a run folder."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: PATH/report)."),
        title: Optional[str] = typer.Option(None, help="Page title."),
    ) -> None:
        """Write PNG and SVG plots and one HTML page (index.html)."""
        from ..report import build_report

        page = build_report(path, out, title=title)
        typer.echo(f"wrote {page}")
