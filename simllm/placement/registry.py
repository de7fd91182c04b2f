"""Registry of expert-placement policies: ``register(name)`` and construction from a dict.

Every policy is a small frozen dataclass whose fields are its parameters and which
implements :class:`PlacementPolicy`. ``build_policy({"policy": "ilp", "time_limit": 5})``
constructs one and rejects unknown names and fields with the list of known ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError
from ..policies.registry import Registry
from .placement import Placement, as_layer_loads, moved_replicas

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


placement = Registry("placement")
"""The one registry of placement policies (same mechanism as batching and routing)."""

register = placement.register
policy_names = placement.names
get_policy_class = placement.get


def build_policy(spec: Any, *, file: Optional[str] = None) -> PlacementPolicy:
    """Build a policy from a name, a dict ``{"policy": name, **params}`` or a policy instance."""
    if isinstance(spec, PlacementPolicy) and not isinstance(spec, (str, dict)):
        return spec
    try:
        return placement.build(spec)
    except InputError as e:
        raise e.at(file=file) from None


def replan(previous: Placement, observed_loads: Any, policy: Any, *, expert_bytes: float = 0.0,
           ) -> tuple[Placement, float]:
    """Re-place from ``observed_loads`` (``[L, E]``) with ``policy``; return ``(placement, moved_bytes)``.

    ``moved_bytes`` = ``expert_bytes`` (weight bytes of one expert) x replicas that land on a
    device that did not hold that expert before. Migration-aware policies (``ilp`` with
    ``migration_weight``) receive ``previous``. Time: :func:`~simllm.placement.placement.migration_seconds`.
    (Here, beside the policies it builds: the placement module stays below the registry.)
    """
    pol = build_policy(policy)
    loads = as_layer_loads(observed_loads, name="observed_loads")
    new = pol.place(loads, previous.devices, previous.nodes, previous.slots_per_device, previous=previous)
    moved = moved_replicas(previous, new)
    return new, float(expert_bytes) * float(moved.sum())
