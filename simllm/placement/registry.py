"""Registry of expert-placement policies: ``register(name)`` and construction from a dict.

Every policy is a small frozen dataclass whose fields are its parameters and which
implements :class:`PlacementPolicy`. ``build_policy({"policy": "ilp", "time_limit": 5})``
constructs one and rejects unknown names and fields with the list of known ones.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError, NotFoundError

if TYPE_CHECKING:
    from .placement import Placement

_POLICIES: dict[str, type] = {}


@runtime_checkable
class PlacementPolicy(Protocol):
    """Place the replicas of every expert of every MoE layer onto devices.

    ``loads`` is ``[L, E]`` (or ``[E]`` for one layer): tokens (or any non-negative weight)
    per expert. ``devices`` devices in ``nodes`` equal nodes, ``slots_per_device`` expert
    slots each (``devices * slots_per_device - E`` of them are redundant replicas).
    ``previous`` is the placement in force (for migration-aware policies).
    """

    def place(self, loads: np.ndarray, devices: int, nodes: int, slots_per_device: int, *,
              previous: Optional["Placement"] = None) -> "Placement":
        ...


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register a placement policy under ``name``."""

    def deco(cls: type) -> type:
        if name in _POLICIES and _POLICIES[name] is not cls:
            raise ValueError(f"placement policy {name!r} registered twice")
        _POLICIES[name] = cls
        cls.policy_name = name
        return cls

    return deco


def policy_names() -> list[str]:
    return sorted(_POLICIES)


def get_policy_class(name: str) -> type:
    try:
        return _POLICIES[name]
    except KeyError:
        raise NotFoundError(f"unknown placement policy {name!r}; known: {', '.join(policy_names())}",
                            field="policy") from None


def build_policy(spec: Any, *, file: Optional[str] = None) -> PlacementPolicy:
    """Build a policy from a name, a dict ``{"policy": name, **params}`` or a policy instance."""
    if isinstance(spec, PlacementPolicy) and not isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, dict) or "policy" not in spec:
        raise InputError(f"expected a policy name or {{policy: NAME, ...params}}, got {spec!r}",
                         file=file, field="placement")
    params = dict(spec)
    cls = get_policy_class(str(params.pop("policy")))
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in params if k not in fields]
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} for placement policy {cls.policy_name!r}; "
                         f"known: {', '.join(fields) or '(none)'}", file=file, field=f"placement.{unknown[0]}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise InputError(str(e), file=file, field=f"placement.{cls.policy_name}") from None
