"""Small helpers shared by the CLI verbs: JSON output and rich tables."""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import typer
from rich.console import Console
from rich.table import Table

from ..jsonable import jsonable

console = Console()


_clean = jsonable  # NaN/inf -> null (simllm.jsonable)


def echo_json(obj: Any) -> None:
    """Print ``obj`` as JSON (NaN/inf become null) on stdout."""
    typer.echo(json.dumps(_clean(obj), indent=2))


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                justify_numbers: bool = True) -> None:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c, justify="right" if justify_numbers and c not in ("name", "op", "bound", "kind") else "left")
    for r in rows:
        t.add_row(*[x if isinstance(x, str) else f"{x:.4g}" if isinstance(x, float) else str(x) for x in r])
    console.print(t)
