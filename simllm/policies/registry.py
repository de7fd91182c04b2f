"""A registry of policy classes by name, built from their YAML block.

``registry.build({"policy": "vllm", "max_num_seqs": 128})`` returns an instance of the class
registered as ``vllm``; unknown names and unknown fields raise :class:`InputError` listing
what is known.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Generic, TypeVar

from ..errors import InputError

T = TypeVar("T")


def _type_error(annotation: Any, v: Any) -> str | None:
    """What a policy field of a plain type (``int``, ``float``, ``bool``, ``str``, optionally ``| None``)
    expects when ``v`` is not that, else None (fields of other types are the class's to check)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kinds = {t.strip() for t in text.replace("Optional[", "").rstrip("]").split("|")}
    if v is None and "None" in kinds:
        return None
    kinds.discard("None")
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    if kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
        return "expected an integer"
    if kind == "float" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        return "expected a finite number"
    if kind == "bool" and not isinstance(v, bool):
        return "expected true or false"
    if kind == "str" and not isinstance(v, str):
        return "expected a string"
    return None


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            if name in self._classes:
                raise ValueError(f"{self.kind} policy {name!r} registered twice")
            self._classes[name] = cls
            cls.policy_name = name
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type:
        if name not in self._classes:
            raise InputError(f"unknown {self.kind} policy {name!r}; known: {', '.join(self.names())}",
                             field=f"{self.kind}.policy")
        return self._classes[name]

    def build(self, block: dict[str, Any] | str | None, *, default: str | None = None) -> T:
        """Construct a policy from ``{policy: NAME, **fields}`` (or just ``NAME``)."""
        if block is None:
            block = {}
        if isinstance(block, str):
            block = {"policy": block}
        if not isinstance(block, dict):
            raise InputError(f"expected a mapping with 'policy', got {block!r}", field=self.kind)
        params = dict(block)
        name = params.pop("policy", default)
        if name is None:
            raise InputError(f"'policy' is required; known: {', '.join(self.names())}", field=f"{self.kind}.policy")
        cls = self.get(str(name))
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r} for {self.kind} policy {name!r}; "
                             f"known: {', '.join(sorted(fields)) or '(none)'}", field=f"{self.kind}.{unknown[0]}")
        for k, v in params.items():
            bad = _type_error(fields[k].type, v)
            if bad:
                raise InputError(f"{bad}, got {v!r}", field=f"{self.kind}.{k}")
        try:
            return cls(**params)
        except (TypeError, ValueError) as e:
            raise InputError(str(e), field=self.kind) from None

    def check_block(self, block: Any, default: str) -> dict:
        """Validate a YAML policy block for a pydantic validator: returns it with ``policy`` filled in,
        raises ValueError (one line, listing what is known) if the name or a field is unknown."""
        if isinstance(block, str):
            block = {"policy": block}
        if not isinstance(block, dict):
            raise ValueError(f"expected a mapping like {{policy: {default}, ...}}, got {block!r}")
        block = {"policy": default, **block}
        try:
            self.build(block)
        except InputError as e:
            sub = (e.field or "").split(".", 1)[1:]  # the field inside the block (pydantic gives the block's path)
            raise ValueError(f"{sub[0]}: {e.message}" if sub and sub[0] != "policy" else e.message) from None
        return block
