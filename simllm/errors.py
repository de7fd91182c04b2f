"""Errors that carry enough context for a one-line message to the user.

Every user-facing error names *where* (file), *what* (field) and *what was expected*.
The CLI turns ``InputError`` into exit code 2 and a single line on stderr.
"""

from __future__ import annotations

from pathlib import Path


class SimllmError(Exception):
    """Base class of all simllm errors."""


class InputError(SimllmError):
    """Bad user input: a descriptor, scenario, trace or command-line value.

    ``str(err)`` is one line: ``FILE: FIELD: MESSAGE``.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        parts = [p for p in (self.file, self.field) if p]
        super().__init__(": ".join(parts + [message]))

    def at(self, *, file: str | Path | None = None, field_prefix: str | None = None) -> "InputError":
        """Return a copy of this error located in ``file`` (if not already) under ``field_prefix``."""
        field = self.field
        if field_prefix:
            field = f"{field_prefix}.{field}" if field else field_prefix
        return InputError(self.message, file=self.file or file, field=field)


class NotFoundError(InputError):
    """A name (device, model, link, node, policy) that is not known."""
