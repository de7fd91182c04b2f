"""KV-cache tiers below HBM: host DRAM, local SSD, a distributed store (LMCache, Mooncake Store, 3FS).

A replica with prefix caching (:class:`~simllm.sim.prefix_cache.PrefixCache`) keeps cached prompt
units in HBM until their blocks are needed; with tiers, a unit HBM evicts is *demoted* to the
first tier below it instead of being dropped, and a tier over its capacity demotes its least
recently used unit to the next one (the last tier drops it). The hierarchy is exclusive: a unit
is in HBM or in exactly one lower tier, never both (a unit computed or loaded into HBM leaves the
lower tier that held it).

At admission of a prefill the replica matches the prompt's leading units in HBM, then continues
the match in the lower tiers: those units are *loaded* into HBM before the prefill (they become
cached HBM units, as if hit there) and the load time is added to the step, priced per tier over
its link: ``latency + units * unit_bytes_per_device / bandwidth_per_device`` (every device of
the replica loads its own shard of the KV over its own link, in parallel; tiers are read one
after the other). Assumptions, written down: the load is not overlapped with compute (layer-wise
pipelined loading, as LMCache and Mooncake do, would hide part of it), and concurrent loads of
different replicas do not contend for a shared link.

Counters per tier: units and tokens found (``hit_tokens``), bytes loaded, load seconds; and for
conservation: units demoted into the tiers, promoted (loaded) out, discarded (recomputed into
HBM while a copy sat below) and dropped off the last tier.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class TierLevel:
    """One tier below HBM, for one replica: ``capacity_bytes`` of KV (the whole replica's, all its
    devices' shards), ``bandwidth`` bytes/s per device into HBM, ``latency`` seconds per load."""

    name: str
    capacity_bytes: float
    bandwidth: float
    latency: float = 0.0


class KVTiers:
    """The tiers below one replica's HBM prefix cache (exclusive, LRU within each tier)."""

    def __init__(self, levels: Sequence[TierLevel], *, unit_tokens: int, kv_bytes_per_token_per_device: float,
                 devices: int):
        if not levels:
            raise ValueError("KVTiers needs at least one tier")
        self.levels = tuple(levels)
        self.unit_tokens = int(unit_tokens)
        self.unit_bytes_dev = float(unit_tokens) * float(kv_bytes_per_token_per_device)
        ub = self.unit_bytes_dev * int(devices)
        self.cap = [int(lv.capacity_bytes // ub) if ub > 0 else 0 for lv in self.levels]
        self.lru: list[OrderedDict] = [OrderedDict() for _ in self.levels]
        self.where: dict = {}  # key -> tier index
        nt = len(self.levels)
        self.hit_units = [0] * nt
        self.load_s = [0.0] * nt
        self.demoted = 0
        self.promoted = 0
        self.discarded = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.where)

    # -- HBM -> tiers ---------------------------------------------------------------------
    def demote(self, keys) -> None:
        """Units evicted from HBM (least recently used first) enter the first tier."""
        for k in keys:
            self.demoted += 1
            self._put(0, k)

    def _put(self, i: int, k) -> None:
        nt = len(self.levels)
        while i < nt and self.cap[i] <= 0:
            i += 1
        if i >= nt:
            self.dropped += 1
            return
        lru = self.lru[i]
        lru[k] = None
        self.where[k] = i
        if len(lru) > self.cap[i]:
            old, _ = lru.popitem(last=False)
            del self.where[old]
            self._put(i + 1, old)

    def discard(self, k) -> None:
        """``k`` was computed into HBM again: drop a lower copy (the hierarchy stays exclusive)."""
        i = self.where.pop(k, None)
        if i is not None:
            del self.lru[i][k]
            self.discarded += 1

    # -- tiers -> HBM ---------------------------------------------------------------------
    def match(self, keys: Sequence, start: int) -> int:
        """How many of ``keys[start:]`` are, consecutively from ``start``, in the tiers."""
        where = self.where
        n = 0
        for k in keys[start:]:
            if k not in where:
                break
            n += 1
        return n

    def promote(self, keys: Sequence) -> float:
        """Load ``keys`` (all in the tiers) into HBM: they leave their tiers; the seconds it takes."""
        per = [0] * len(self.levels)
        where = self.where
        for k in keys:
            i = where.pop(k)
            del self.lru[i][k]
            per[i] += 1
        t = 0.0
        for i, u in enumerate(per):
            if u:
                lv = self.levels[i]
                dt = lv.latency + u * self.unit_bytes_dev / lv.bandwidth
                self.hit_units[i] += u
                self.load_s[i] += dt
                t += dt
        self.promoted += len(keys)
        return t

    # -- the summary ----------------------------------------------------------------------
    def counters(self) -> dict:
        return {lv.name: {"hit_units": self.hit_units[i], "load_s": self.load_s[i], "units": len(self.lru[i]),
                          "capacity_units": self.cap[i]} for i, lv in enumerate(self.levels)}


def tiers_summary(tiers: list, query_tokens: int, hit_tokens: int, cap_per_replica=None) -> dict:
    """Per-tier hit rates of a run (every replica's tiers together): the fraction of prompt tokens looked
    up in the prefix cache that were found in HBM, and in each lower tier (loaded before the prefill).
    ``cap_per_replica``: units per tier of one replica (its data-parallel ranks' together), else the first
    tier object's."""
    if not tiers:
        return {}
    T = tiers[0].unit_tokens
    out: dict = {}
    low = 0
    for i, lv in enumerate(tiers[0].levels):
        units = sum(t.hit_units[i] for t in tiers)
        low += units * T
        out[lv.name] = {"hit_tokens": units * T,
                        "hit_rate": units * T / query_tokens if query_tokens else None,
                        "loaded_bytes_per_device": units * tiers[0].unit_bytes_dev,
                        "load_s": sum(t.load_s[i] for t in tiers),
                        "capacity_units_per_replica": (cap_per_replica or tiers[0].cap)[i]}
    hbm = hit_tokens - low
    return {"hbm": {"hit_tokens": hbm, "hit_rate": hbm / query_tokens if query_tokens else None}, **out,
            "units_demoted": sum(t.demoted for t in tiers), "units_dropped": sum(t.dropped for t in tiers)}
