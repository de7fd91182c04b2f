"""Paged KV cache of one replica (vLLM-style blocks): its size and all its block accounting.

A replica's KV capacity is what its devices have left after the weights and an activation
reserve, at ``gpu_memory_utilization``::

    bytes = n_devices * (device_memory * utilization - weights_per_device - activation_reserve)
    tokens = bytes / (n_devices * kv_bytes_per_token_per_device)
    blocks = floor(tokens / block_size)

Each running sequence holds ``ceil(tokens_stored / block_size)`` blocks (the replica keeps the
per-sequence token counts in arrays, ``simllm.sim.replica``, and passes their block sum to
:meth:`KVCache.recount`). Everything else the cache holds is counted here:

- ``partial``: blocks of prefills under way (chunked prefill, or admitted over a cached prefix);
- ``outgoing``: blocks of prefilled requests kept until their KV has moved to another pool;
- ``reserved``: blocks set aside for KV transfers coming in from another pool (``num_blocks`` is
  the capacity minus these; ``capacity`` the whole cache);
- with a :class:`~simllm.sim.prefix_cache.PrefixCache` (``prefix``): cached prompt units, each
  counted once however many sequences share it (``shared_units`` are those referenced by
  running or outgoing sequences, already inside their block counts); unreferenced units are
  evicted LRU when the blocks are needed.

``held`` is everything beyond the running sequences' blocks, ``used_blocks`` the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import InputError
from .prefix_cache import PrefixCache


@dataclass
class KVCache:
    num_blocks: int  # usable now: capacity minus blocks reserved for incoming transfers
    block_size: int = 16
    watermark: float = 0.01  # vLLM: fraction of blocks kept free when admitting prefills
    used_blocks: int = 0
    prefix: Optional[PrefixCache] = None

    def __post_init__(self):
        if self.block_size < 1:
            raise InputError("block_size must be >= 1", field="deployment.kv.block_size")
        self.watermark_blocks = int(self.watermark * self.num_blocks)
        self.capacity = self.num_blocks
        self.reserved = 0
        self.partial = 0
        self.outgoing = 0
        self.shared_units = 0
        self.held = 0

    @property
    def free_blocks(self) -> int:
        return self.num_blocks - self.used_blocks

    def blocks_for(self, tokens: int) -> int:
        return -(-int(tokens) // self.block_size)

    def freed_blocks(self, rid: int, tokens: int) -> int:
        """Blocks that preempting running request ``rid`` (``tokens`` in KV) makes free."""
        return self.blocks_for(tokens)

    @property
    def evictable_blocks(self) -> int:
        return self.prefix.evictable_blocks if self.prefix is not None else 0

    @property
    def growable_blocks(self) -> int:
        """Blocks running sequences may grow into: usable blocks plus evictable cached prefix blocks."""
        pc = self.prefix
        return self.num_blocks + (pc.evictable_blocks if pc is not None else 0)

    def recount(self, running_blocks: int) -> int:
        """Used blocks = the running sequences' ``running_blocks`` + everything held here; cached prefix
        units beyond the usable blocks are evicted (LRU)."""
        held = self.partial + self.outgoing
        pc = self.prefix
        if pc is not None:
            held += pc.total_blocks - self.shared_units * pc.upb
        used = running_blocks + held
        if pc is not None and used > self.num_blocks:
            freed = pc.evict(used - self.num_blocks)
            used -= freed
            held -= freed
        self.held = held
        self.used_blocks = used
        return used

    def evict_over(self, used: int) -> int:
        """``used`` blocks counted mid-jump: evict cached prefixes beyond the usable blocks; the new count."""
        if self.prefix is not None and used > self.num_blocks:
            freed = self.prefix.evict(used - self.num_blocks)
            used -= freed
            self.held -= freed
        return used

    # -- prefix units referenced by a sequence (its blocks count them) --------------------------
    def share(self, keys) -> None:
        self.prefix.acquire(keys)
        self.shared_units += len(keys)

    def unshare(self, keys) -> None:
        self.prefix.release(keys)
        self.shared_units -= len(keys)

    # -- transfers in ----------------------------------------------------------------------------
    def reserve(self, blocks: int) -> None:
        """Set ``blocks`` aside for a KV transfer coming in."""
        self.reserved += blocks
        self.num_blocks -= blocks

    def claim(self, blocks: int) -> None:
        """A transfer landed: its reserved blocks become a running sequence's."""
        self.reserved -= blocks
        self.num_blocks += blocks
        self.used_blocks += blocks


class PolicyKVView:
    """What a batching policy sees of a KV cache with prefix caching: evictable blocks count as free.

    ``units(rid)``: the cached prompt units a running request references (inside its blocks)."""

    __slots__ = ("kv", "units")

    def __init__(self, kv: KVCache, units):
        self.kv = kv
        self.units = units

    @property
    def block_size(self) -> int:
        return self.kv.block_size

    @property
    def num_blocks(self) -> int:
        return self.kv.num_blocks

    @property
    def watermark_blocks(self) -> int:
        return self.kv.watermark_blocks

    @property
    def free_blocks(self) -> int:
        kv = self.kv
        return kv.num_blocks - kv.used_blocks + kv.prefix.evictable_blocks

    def blocks_for(self, tokens: int) -> int:
        return self.kv.blocks_for(tokens)

    def freed_blocks(self, rid: int, tokens: int) -> int:
        """Blocks a preemption of running ``rid`` is sure to free: its private blocks. Its prefix units are
        not counted: they stay referenced by other sequences, or become evictable (already counted free)
        and may be the very units the request admitted in its place hits (whose need, computed while the
        victim still referenced them, left them out)."""
        return self.kv.blocks_for(tokens) - self.units(rid) * self.kv.prefix.upb


def kv_capacity_blocks(*, device_memory_bytes: float, n_devices: int, gpu_memory_utilization: float,
                       weight_bytes_per_device: float, activation_reserve_bytes: float,
                       kv_bytes_per_token_per_device: float, block_size: int, where: str = "deployment.kv") -> int:
    """Number of KV blocks a replica can hold (raises a clear error when the weights do not fit)."""
    budget = device_memory_bytes * gpu_memory_utilization - weight_bytes_per_device - activation_reserve_bytes
    if budget <= 0 or kv_bytes_per_token_per_device <= 0:
        raise InputError(
            f"no memory left for the KV cache: {device_memory_bytes / 2**30:.1f} GiB x {gpu_memory_utilization} "
            f"- weights {weight_bytes_per_device / 2**30:.1f} GiB - activation reserve "
            f"{activation_reserve_bytes / 2**30:.1f} GiB per device <= 0 (use more tensor/pipeline parallelism, "
            f"a smaller weight dtype or a higher gpu_memory_utilization)", field=where)
    total = n_devices * budget
    tokens = total / (n_devices * kv_bytes_per_token_per_device)
    blocks = int(tokens // block_size)
    if blocks < 1:
        raise InputError("the KV cache holds less than one block", field=where)
    return blocks
