"""A registry of policy classes by name, built from their YAML block.

``registry.build({"policy": "vllm", "max_num_seqs": 128})`` returns an instance of the class
registered as ``vllm``; unknown names and unknown fields raise :class:`InputError` listing
what is known.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, TypeVar

from ..errors import InputError

T = TypeVar("T")


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
            raise ValueError(e.message) from None
        return block
