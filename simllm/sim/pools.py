"""Pools of replicas and their roles: a deployment is a list of pools.

A colocated deployment is one pool of role ``both``. Prefill/decode disaggregation (DistServe,
Splitwise, Mooncake, DeepSeek's deployment) is a ``prefill`` pool, which receives the arrivals,
and one or more ``decode`` pools. Every pool is a full deployment: its replicas, their cost model
(TP / PP / EP with a placement and expert loads), KV cache (with prefix caching), batching
policy and router, and its own :class:`~simllm.sim.records.SimConfig` for the KV options.

A request goes to a prefill replica (the prefill pool's router), which computes its prompt with
the one iteration of :class:`~simllm.sim.replica.Replica` (chunked, over a cached prefix, ...)
and produces the first token there (TTFT ends there). Its KV cache then moves to a decode
replica (the first decode pool's router over the replicas of all decode pools, seen with their
positions in that list) and the remaining tokens are generated there (TPOT is measured on the
decode pool; it includes the transfer and any wait for decode memory). Transfers run over
:mod:`simllm.sim.transfer`.

The roles differ from a colocated replica only in the hooks of ``Replica``:

- :class:`PrefillReplica`: a finished prefill with tokens left keeps its blocks (``outgoing``)
  and is handed to a decode replica (``_continue``); when every admissible request waits for
  blocks held by transfers the replica waits for a release (``_blocked``).
- :class:`DecodeReplica`: transferred KV is admitted at step boundaries (``_on_boundary``).

Decode memory admission (the choice documented here): **a request waits for decode KV blocks
before its transfer starts.** The prefill replica keeps the request's blocks until the transfer
has completed. The decode replica starts transfers from its inbox (FCFS) at its step boundaries
(at once when idle) while (a) a sequence slot is free counting in-flight transfers, (b) the
prompt's blocks fit above the watermark, and (c) the largest final footprint (prompt + output
blocks) of any request on the replica plus all reserved blocks plus the watermark fits its
capacity, so that any one sequence can always run to completion (vLLM's guarantee) even while
transfers hold blocks. The blocks are reserved in the KV cache when the transfer starts
(:meth:`KVCache.reserve`) and become the sequence's own when it joins the running batch at the
first step boundary after its transfer completes (:meth:`KVCache.claim`). A request preempted
on the decode pool is recomputed (``preemption: recompute``) or swapped there, as on a
colocated replica; with prefix caching on the decode pool a landed sequence shares the prompt
units the cache already holds (counted once) and a recomputation can hit them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .records import SimConfig
from .replica import Replica

ROLES = ("both", "prefill", "decode")


@dataclass
class Pool:
    """One pool of identical replicas (the simulation's view; ``simllm.scenario`` builds it from YAML)."""

    name: str
    role: str  # both | prefill | decode
    replicas: int
    cost: Any  # a StepCostModel, or one per replica
    num_blocks: int  # KV blocks per replica
    batching: Callable[[], Any]  # a factory of fresh batching policies
    router: Any
    devices: int = 1  # per replica
    config: Optional[SimConfig] = None  # KV options of this pool (default: the simulation's)
    changes: Any = None  # periodic cost changes of this pool (simllm.sim.replacement)
    attn_group: Optional[int] = None  # devices of one attention data-parallel rank (EP: its tp); None: all
    dp_router: Any = None  # routes a replica's requests to its attention ranks (simllm.sim.dp_ranks)

    @property
    def dp(self) -> int:
        """Data-parallel attention ranks per replica (``devices / attn_group``; 1 without)."""
        g = self.attn_group
        return self.devices // g if g and g < self.devices else 1

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"pool {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.replicas < 1:
            raise ValueError(f"pool {self.name!r}: replicas must be >= 1")


class PositionView:
    """A replica as a router sees it, with ``index`` its position in the router's list."""

    def __init__(self, rep, index: int):
        self.__dict__["_rep"] = rep
        self.__dict__["index"] = index

    @property
    def outstanding(self) -> int:  # what every router reads: no __getattr__ detour
        return self._rep.outstanding

    def __getattr__(self, name):
        return getattr(self._rep, name)


class PrefillReplica(Replica):
    """Prefill only: computes prompts, produces the first token, holds the KV until it has moved."""

    role = "prefill"

    def __init__(self, sim, index, pool, cost, policy):
        super().__init__(sim, index, pool, cost, policy)
        self.holding = 0  # requests whose KV waits here for (or is in) its transfer
        self.layer_wise = bool(getattr(self.cfg, "kv_layer_wise", False))
        self._finishing: list = []

    def _announce(self, end: float) -> None:
        """Layer-wise KV: a prefill that ends with this step (and has tokens left to decode) is handed to its
        decode replica now, so its transfer can start while the step runs (``Simulation.start_transfer``)."""
        sim = self.sim
        now = self.env.now
        for rid, L in self._finishing:
            if int(sim.out[rid]) - int(sim.gen[rid]) - 1 > 0:
                sim.announce(rid, L, self, now, end)
        self._finishing = []

    def _continue(self, rid: int, L: int, rem: int, end: float) -> None:
        self.kv.outgoing += self.kv.blocks_for(L)
        self.holding += 1
        self.sim.handoff(rid, L, self, end)

    def _blocked(self) -> bool:
        return self.holding > 0

    def release(self, rid: int, L: int, t: float) -> None:
        """``rid``'s transfer from here completed: free its blocks, wake the replica if it waits for them."""
        kv = self.kv
        b = kv.blocks_for(L)
        kv.outgoing -= b
        if self.pc is not None:
            kv.unshare(self._keys(rid))
            self._refresh_used()
        else:  # also right while a short-path prefill (blocks counted, not yet outgoing) is under way
            kv.used_blocks -= b
        self.holding -= 1
        self.done += 1
        if self.waiting:
            self._poke(t, cut=False)


class DecodeReplica(Replica):
    """Decode only: receives prefilled requests' KV, then decodes them (the colocated decode loop)."""

    role = "decode"

    def __init__(self, sim, index, pool, cost, policy):
        super().__init__(sim, index, pool, cost, policy)
        self.inbox: deque = deque()  # (rid, prompt tokens, prefill replica) waiting for their transfer to start
        self.inflight = 0
        self.landed: deque = deque()  # (rid, tokens, reserved blocks): transferred, join at the next boundary
        self.members: dict[int, int] = {}  # rid -> final footprint beyond its reservation, transferring or landed
        self.peak_total = 0  # max of used + reserved blocks

    def receive(self, rid: int, L: int, src: PrefillReplica, t: float) -> None:
        self.assigned += 1
        first = not self.inbox
        self.inbox.append((rid, L, src))
        if first and self._fits(rid, L):
            self._poke(t)

    def _final_max(self) -> int:
        sim = self.sim
        B = self.B
        m = 0
        if self.n:
            ids = np.fromiter(self.run, dtype=np.int64, count=self.n)
            m = int((-(-(sim.prompt[ids] + sim.out[ids]) // B)).max())
        if self.members:
            m = max(m, max(self.members.values()))
        for rid in self.waiting:
            m = max(m, -(-int(sim.prompt[rid] + sim.out[rid]) // B))
        for rid, _t, _rem in self.swapped:
            m = max(m, -(-int(sim.prompt[rid] + sim.out[rid]) // B))
        return m

    def _fits(self, rid: int, L: int) -> bool:
        kv = self.kv
        if self.n + self.inflight + len(self.landed) + 1 > self.max_seqs:
            return False
        need = kv.blocks_for(L)
        if kv.free_blocks + kv.evictable_blocks - need < kv.watermark_blocks:  # cached prefixes can be evicted
            return False
        final = kv.blocks_for(int(self.sim.prompt[rid] + self.sim.out[rid]))
        # (c): whichever request ends up alone can grow to its final size next to all reservations
        return max(self._final_max(), final - need) + kv.reserved + need + kv.watermark_blocks <= kv.capacity

    def landed_at(self, rid: int, L: int, need: int, t: float) -> None:
        self.inflight -= 1
        self.landed.append((rid, L, need))
        self._poke(t)

    def _on_boundary(self) -> None:
        sim = self.sim
        kv = self.kv
        joined = False
        while self.landed and self.n < self.max_seqs:
            rid, L, need = self.landed.popleft()
            del self.members[rid]
            kv.claim(need)
            self._continue(rid, L, int(sim.out[rid]) - int(sim.gen[rid]), self.clock)
            if self.pc is not None:
                kv.share(self._keys(rid))
            joined = True
        if joined:
            self._refresh_used()
        while self.inbox:
            rid, L, src = self.inbox[0]
            if not self._fits(rid, L):
                break
            self.inbox.popleft()
            need = kv.blocks_for(L)
            kv.reserve(need)
            self.inflight += 1
            self.members[rid] = kv.blocks_for(int(sim.prompt[rid] + sim.out[rid])) - need  # beyond its reservation
            sim.start_transfer(rid, L, src, self, need, self.clock)
            if self.pc is not None:  # the reservation may need cached prefix blocks: evict them now
                self._refresh_used()
        tot = kv.used_blocks + kv.reserved
        if tot > self.peak_total:
            self.peak_total = tot


REPLICA_CLASS = {"both": Replica, "prefill": PrefillReplica, "decode": DecodeReplica}
