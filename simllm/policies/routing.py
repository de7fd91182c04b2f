"""Routing policies: which replica serves an arriving request.

One Protocol, one small registered class per policy. ``route`` sees the request id and the
replicas (each exposes ``index``, ``outstanding`` (requests waiting or running),
``kv_free_fraction`` and ``cached_prefix_units(rid)``) and returns a replica index. A router
with an ``attach(sim)`` method is given the simulation (for ``sim.session_key(rid)``).
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

    @property
    def kv_free_fraction(self) -> float: ...

    def cached_prefix_units(self, rid: int) -> int: ...


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


# the name the issue uses; same class
routing.register("least_outstanding_requests")(type("LeastOutstandingRequests", (LeastOutstanding,), {}))


def _least_outstanding(replicas) -> int:
    return min(replicas, key=lambda r: r.outstanding).index  # ties: the first, i.e. the lowest index


@routing.register("random")
@dataclass
class RandomRouter:
    """A uniformly random replica per request, from its own generator seeded with ``seed``."""

    seed: int = 0
    _rng: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        import numpy as np

        self._rng = np.random.default_rng(self.seed)

    def route(self, rid: int, replicas) -> int:
        return int(self._rng.integers(len(replicas)))

    def plan(self, n_requests: int, n_replicas: int):
        return self._rng.integers(n_replicas, size=n_requests)


@routing.register("least_kv_load")
@dataclass
class LeastKVLoad:
    """The replica with the most free KV cache (evictable prefix blocks count as free); ties: fewest
    outstanding requests, then lowest index."""

    def route(self, rid: int, replicas) -> int:
        return min(replicas, key=lambda r: (-r.kv_free_fraction, r.outstanding)).index


@routing.register("session_affinity")
@dataclass
class SessionAffinity:
    """A session's turns go to the replica that served its first turn (chosen by fewest outstanding
    requests); requests without a session go to the least loaded replica."""

    _home: dict = field(default_factory=dict, init=False, repr=False)
    _sim: object = field(default=None, init=False, repr=False)

    def attach(self, sim) -> None:
        self._sim = sim

    def route(self, rid: int, replicas) -> int:
        s = self._sim.session_key(rid) if self._sim is not None else None
        if s is None:
            return _least_outstanding(replicas)
        i = self._home.get(s)
        if i is None or i >= len(replicas):
            i = self._home[s] = _least_outstanding(replicas)
        return i


@routing.register("prefix_aware")
@dataclass
class PrefixAware:
    """The replica holding the longest cached prefix of the request (``cached_prefix_units``; ties:
    fewest outstanding), unless it has more than ``cap`` x the mean outstanding requests, or
    nothing is cached anywhere: then the least loaded replica."""

    cap: float = 2.0

    def __post_init__(self):
        if self.cap <= 0:
            raise ValueError("cap must be > 0")

    def route(self, rid: int, replicas) -> int:
        best, key, best_r = 0, None, None
        total = 0
        for r in replicas:
            total += r.outstanding
            k = (-r.cached_prefix_units(rid), r.outstanding)
            if key is None or k < key:
                best, key, best_r = r.index, k, r
        if key is None or key[0] == 0 or best_r.outstanding > self.cap * total / len(replicas):
            return _least_outstanding(replicas)
        return best


def make_router(block) -> RoutingPolicy:
    return routing.build(block, default="round_robin")
