"""Prefix (automatic prefix caching) block cache for one replica.

A request's prompt is cut into *units* of ``unit_tokens`` tokens (512: one Mooncake
``hash_id``); equal keys mean equal prefix content (the ids are prefix-chained, as in
Mooncake and in generated sessions). Only full units of the prompt are cacheable. A unit
occupies ``unit_tokens / block_size`` KV blocks and is counted once however many running
requests share it.

A unit is *referenced* while a running (or prefilling) request uses it; unreferenced units
stay in memory, evictable, in LRU order, until the KV space is needed (vLLM's automatic
prefix caching). The replica counts every cached unit in its used blocks and tells its
batching policy that evictable blocks are free.

Cost: dictionary operations per unit at admission and completion, nothing per decode step.

``lower``: the tiers below HBM (:class:`~simllm.sim.kv_tiers.KVTiers`) or None. With tiers, evicted
units are demoted to them and a unit entering the cache leaves them (the hierarchy is exclusive).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence


class PrefixCache:
    def __init__(self, blocks_per_unit: int):
        if blocks_per_unit < 1:
            raise ValueError("blocks_per_unit must be >= 1")
        self.upb = int(blocks_per_unit)
        self.ref: dict = {}  # key -> reference count (0: evictable, then also in lru)
        self.lru: OrderedDict = OrderedDict()  # unreferenced keys, least recently used first
        self.lower = None  # KVTiers below HBM (simllm.sim.kv_tiers), or None

    # -- sizes ---------------------------------------------------------------------------
    @property
    def total_blocks(self) -> int:
        return len(self.ref) * self.upb

    @property
    def evictable_blocks(self) -> int:
        return len(self.lru) * self.upb

    def __contains__(self, key) -> bool:
        return key in self.ref

    # -- lookups -------------------------------------------------------------------------
    def match(self, keys: Sequence) -> tuple[int, int]:
        """(leading units cached, how many of them are unreferenced)."""
        ref = self.ref
        h = u = 0
        for k in keys:
            r = ref.get(k)
            if r is None:
                break
            h += 1
            if r == 0:
                u += 1
        return h, u

    def acquire(self, keys: Sequence) -> None:
        ref = self.ref
        lru = self.lru
        lower = self.lower
        for k in keys:
            r = ref.get(k)
            if r is None:
                ref[k] = 1
                if lower is not None:
                    lower.discard(k)
            else:
                if r == 0:
                    del lru[k]
                ref[k] = r + 1

    def release(self, keys: Sequence) -> None:
        """Drop one reference per key; the last units are released first, so shared roots stay longest."""
        ref = self.ref
        lru = self.lru
        for k in reversed(keys):
            r = ref[k] - 1
            ref[k] = r
            if r == 0:
                lru[k] = None

    def evict(self, blocks: int) -> int:
        """Evict least recently used unreferenced units covering ``blocks`` KV blocks; returns blocks freed."""
        if blocks <= 0:
            return 0
        units = min(-(-blocks // self.upb), len(self.lru))
        lru = self.lru
        ref = self.ref
        lower = self.lower
        for _ in range(units):
            k, _v = lru.popitem(last=False)
            del ref[k]
            if lower is not None:
                lower.demote((k,))
        return units * self.upb
