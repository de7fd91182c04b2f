"""Paged KV cache accounting for one replica (vLLM-style blocks).

A replica's KV capacity is what its devices have left after the weights and an activation
reserve, at ``gpu_memory_utilization``::

    bytes = n_devices * (device_memory * utilization - weights_per_device - activation_reserve)
    tokens = bytes / (n_devices * kv_bytes_per_token_per_device)
    blocks = floor(tokens / block_size)

Each running sequence holds ``ceil(tokens_stored / block_size)`` blocks; a block is allocated
when the sequence's next token would not fit. The per-sequence arrays live in the replica
(``simllm.sim.engine``); this object holds the totals and the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass
class KVCache:
    num_blocks: int
    block_size: int = 16
    watermark: float = 0.01  # vLLM: fraction of blocks kept free when admitting prefills
    used_blocks: int = 0

    def __post_init__(self):
        if self.block_size < 1:
            raise InputError("block_size must be >= 1", field="deployment.kv.block_size")
        self.watermark_blocks = int(self.watermark * self.num_blocks)

    @property
    def free_blocks(self) -> int:
        return self.num_blocks - self.used_blocks

    def blocks_for(self, tokens: int) -> int:
        return -(-int(tokens) // self.block_size)


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
