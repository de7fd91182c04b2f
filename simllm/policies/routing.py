"""Routing policies: which replica serves an arriving request.

One Protocol, one small registered class per policy. ``route`` sees the request id and the
replicas (each exposes ``index``, ``outstanding`` (requests waiting or running) and
``kv_free_fraction``) and returns a replica index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from .registry import Registry

routing: Registry["RoutingPolicy"] = Registry("router")


class ReplicaView(Protocol):
    index: int

    @property
    def outstanding(self) -> int: ...


class RoutingPolicy(Protocol):
    def route(self, rid: int, replicas: Sequence[ReplicaView]) -> int: ...

    # Optional: a policy whose choice does not depend on the replicas' state may define
    # ``plan(n_requests, n_replicas) -> array of replica indices`` for requests in arrival
    # order. Replicas then know their future arrivals and end decode jumps at them instead of
    # being interrupted (fewer SimPy events, same timestamps).


@routing.register("round_robin")
@dataclass
class RoundRobin:
    """Replica 0, 1, ..., n-1, 0, ... in arrival order."""

    _next: int = field(default=0, init=False, repr=False)

    def route(self, rid: int, replicas) -> int:
        i = self._next % len(replicas)
        self._next = i + 1
        return i

    def plan(self, n_requests: int, n_replicas: int):
        import numpy as np

        out = (np.arange(n_requests, dtype=np.int64) + self._next) % n_replicas
        self._next = int((self._next + n_requests) % n_replicas)
        return out


@routing.register("least_outstanding")
@dataclass
class LeastOutstanding:
    """The replica with the fewest requests waiting or running (lowest index on ties)."""

    def route(self, rid: int, replicas) -> int:
        best, best_n = 0, None
        for r in replicas:
            n = r.outstanding
            if best_n is None or n < best_n:
                best, best_n = r.index, n
        return best


def make_router(block) -> RoutingPolicy:
    return routing.build(block, default="round_robin")
