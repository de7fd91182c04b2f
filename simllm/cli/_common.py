"""Small helpers shared by the CLI verbs: JSON output, rich tables, and the exit-code contract's
translation of exceptions into one-line ``FILE: FIELD: message`` errors."""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ..jsonable import jsonable

console = Console()


def usage_message(e: BaseException) -> str | None:
    """A click/typer usage error (unknown option, bad value, missing argument) as one line, else None.

    Typer bundles its own copy of click, so the classes are matched by name, not identity."""
    names = {c.__name__ for c in type(e).__mro__}
    if "ClickException" not in names:
        return None
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None and getattr(ctx, "command_path", None) else "simllm"
    param = getattr(e, "param", None)
    field = None
    if param is not None:
        opts = list(getattr(param, "opts", None) or [])
        field = (max(opts, key=len) if opts else None) or (getattr(param, "name", None) or "").upper() or None
    field = field or getattr(e, "option_name", None) or getattr(e, "param_hint", None)
    if isinstance(field, (list, tuple)):
        field = "/".join(field)
    if "NoArgsIsHelpError" in names:
        return e.format_message()
    msg = getattr(e, "message", None) or e.format_message()
    if "MissingParameter" in names:
        msg = "required " + ("option" if getattr(param, "param_type_name", "") == "option" else "argument") + \
              " is missing"
    msg = " ".join(str(msg).split())
    msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    return "error: " + ": ".join(str(p) for p in (where, field, msg) if p) + f" (see {where} --help)"


def input_error_of(e: BaseException) -> InputError | None:
    """The bad-input reading of an exception: InputError as is; OS errors on a user's path and
    undecodable text as an InputError naming the file; anything else None (an internal error)."""
    if isinstance(e, InputError):
        return e
    if isinstance(e, UnicodeDecodeError):
        return InputError(f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})")
    if isinstance(e, OSError) and getattr(e, "filename", None):
        return InputError(e.strerror or type(e).__name__, file=e.filename)
    return None


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
