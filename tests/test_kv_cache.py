"""KV cache sizing and block accounting."""

import pytest

from simllm.errors import InputError
from simllm.sim import KVCache, kv_capacity_blocks


def test_capacity_formula():
    # Llama-3-8B-like on one 80 GB device: (80e9*0.9 - 16e9 - 1.6e9) / 131072 B/token / 16 tokens
    blocks = kv_capacity_blocks(device_memory_bytes=80e9, n_devices=1, gpu_memory_utilization=0.9,
                                weight_bytes_per_device=16e9, activation_reserve_bytes=1.6e9,
                                kv_bytes_per_token_per_device=131072.0, block_size=16)
    assert blocks == int((80e9 * 0.9 - 16e9 - 1.6e9) / 131072 // 16)
    # TP4: each device holds a quarter of the weights and of each token's KV: 4x the budget / 4x the bytes
    b4 = kv_capacity_blocks(device_memory_bytes=80e9, n_devices=4, gpu_memory_utilization=0.9,
                            weight_bytes_per_device=35e9, activation_reserve_bytes=1.6e9,
                            kv_bytes_per_token_per_device=81920.0, block_size=16)
    assert b4 == int(4 * (72e9 - 35e9 - 1.6e9) / (4 * 81920) // 16)


def test_weights_that_do_not_fit_are_a_clear_error():
    with pytest.raises(InputError, match="no memory left for the KV cache"):
        kv_capacity_blocks(device_memory_bytes=80e9, n_devices=1, gpu_memory_utilization=0.9,
                           weight_bytes_per_device=141e9, activation_reserve_bytes=0,
                           kv_bytes_per_token_per_device=1.0, block_size=16)


def test_blocks_for_and_watermark():
    kv = KVCache(num_blocks=1000, block_size=16, watermark=0.01)
    assert [kv.blocks_for(t) for t in (1, 16, 17, 32, 33)] == [1, 1, 2, 2, 3]
    assert kv.watermark_blocks == 10 and kv.free_blocks == 1000
