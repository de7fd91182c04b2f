"""Periodic expert re-placement during a simulation (expert-parallel MoE replicas).

Simulated time is cut into intervals of ``every_s`` seconds. Interval ``i`` (``[i N, (i+1) N)``)
serves the expert popularity ``pop[i]``: ``pop[0]`` is the scenario's ``expert_loads`` and each
boundary takes a seeded random-walk step of the log-popularity (std ``drift`` per expert and
layer). A replica meets boundary ``i N`` at its first decision point (step boundary) at or after
it - the same point whether it jumps over decode steps or steps one at a time, since jumps end
at change points (:meth:`next_change`). There its cost model becomes
``EPStepCost(placement, pop[i])`` (a stale placement gets slower), and, when ``replan`` is on,
the placement is first re-planned with the scenario's placement policy from the loads observed
in the interval just ended (``pop[i-1]``; the replica's tokens served there only scale them),
the replica pauses for the migration (:meth:`EPStepCost.migration`: the busiest device's new
expert bytes over its NIC) and continues with the new placement. Cost models are shared between
replicas that reach the same (placement, interval).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..cost.moe_ep import EPStepCost
from ..placement import replan
from ..placement.migration import replan_that_pays


class PeriodicReplacement:
    def __init__(self, cost, *, every_s: float, drift: float = 0.0, replan: bool = False, policy: Any = None,
                 seed: int = 0, migrate: str = "all"):
        if not (every_s > 0 and math.isfinite(every_s)):
            raise ValueError(f"every_s must be a positive number, got {every_s}")
        self.every_s = float(every_s)
        self.drift = float(drift)
        self.replan = bool(replan)
        self.policy = policy
        self.migrate = migrate  # "pays": simllm.placement.migration.replan_that_pays; "all": every replica
        self.base = cost
        self._rng = np.random.default_rng([int(seed), 0xD21F7])
        self._pops = [np.asarray(cost.popularity, dtype=float)]
        self._memo: dict = {(id(cost), 0): (cost, None)}
        self._keep = [cost]  # keeps ids in the memo valid
        self.events: list[dict] = []

    def boundary(self, i: int) -> float:
        return i * self.every_s

    def popularity(self, i: int) -> np.ndarray:
        while len(self._pops) <= i:
            p = self._pops[-1]
            if self.drift > 0:
                p = p * np.exp(self.drift * self._rng.standard_normal(p.shape))
                p = p / p.sum(axis=1, keepdims=True)
            self._pops.append(p)
        return self._pops[i]

    def interval_of(self, t: float) -> int:
        """Index of the last boundary at or before ``t``."""
        i = int(t // self.every_s)
        while self.boundary(i + 1) <= t:
            i += 1
        while i > 0 and self.boundary(i) > t:
            i -= 1
        return i

    def apply(self, replica: int, cost, i: int, t: float, tokens: int) -> tuple[Any, float]:
        """The cost model serving interval ``i`` for a replica whose cost was ``cost``, and the pause."""
        key = (id(cost), i)
        hit = self._memo.get(key)
        if hit is None:
            pop = self.popularity(i)
            ev: dict = {"interval": i, "boundary_s": self.boundary(i)}
            if self.replan:
                obs = self.popularity(i - 1) * 1e4
                if self.migrate == "pays":
                    new, _ = replan_that_pays(cost.placement, obs, self.policy, expert_bytes=cost.expert_bytes,
                                              bandwidth=float(cost.topo.node.scale_out_bw), horizon_s=self.every_s,
                                              routed_fraction=cost.routed_fraction(),
                                              layer_scale=cost.n_moe / cost.placement.num_layers)
                else:
                    new, _ = replan(cost.placement, obs, self.policy, expert_bytes=cost.expert_bytes)
                mig = cost.migration(new)
                ev.update(moved_bytes=mig["moved_bytes"], moved_replicas=mig["moved_replicas"],
                          max_device_bytes=mig["max_device_bytes"], migration_s=mig["migration_s"],
                          max_mean_before=float(np.nanmean(cost.placement.imbalance(obs))),
                          max_mean_after=float(np.nanmean(new.imbalance(obs))))
                placement = new
            else:
                placement = cost.placement
            nc = EPStepCost(cost.model, cost.acc, ep=cost.ep, placement=placement, popularity=pop,
                            topology=cost.topo, **cost._kw)
            ev["max_mean_served"] = float(np.nanmean(placement.imbalance(pop)))
            self._keep.append(nc)
            hit = self._memo[key] = (nc, ev)
        nc, ev = hit
        pause = float(ev.get("migration_s", 0.0)) if ev else 0.0
        self.events.append({**(ev or {}), "replica": int(replica), "time_s": float(t), "tokens_served": int(tokens)})
        return nc, pause

    def summary(self) -> dict:
        ev = sorted(self.events, key=lambda e: (e["time_s"], e["replica"]))
        return {"every_s": self.every_s, "drift": self.drift, "replan": self.replan, "count": len(ev),
                "moved_bytes": float(sum(e.get("moved_bytes", 0.0) for e in ev)),
                "migration_s": float(sum(e.get("migration_s", 0.0) for e in ev)), "events": ev}
