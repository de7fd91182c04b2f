"""What a simulation is configured with and what it returns: ``SimConfig``, ``SimResult``, step columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

NAN = float("nan")

STEP_COLUMNS = ("replica", "start_s", "duration_s", "n_steps", "batch_size", "prefill_tokens", "decode_tokens",
                "kv_blocks_used", "compute_s", "memory_s", "comm_s", "flops", "bytes")


@dataclass(frozen=True)
class SimConfig:
    """Simulation options; a pool (``simllm.sim.pools.Pool``) may carry its own for the KV fields."""

    jump: bool = True  # price decode segments at once (False: one SimPy event per iteration)
    preemption: str = "recompute"  # or "swap"
    block_size: int = 16
    watermark: float = 0.01
    max_model_len: Optional[int] = None  # prompt + output longer than this is rejected
    swap_bandwidth: float = 25e9  # B/s per device between device and host memory (swap preemption)
    record_breakdown: bool = True  # call step_cost once per step/segment for compute/memory/comm
    prefix_caching: bool = False  # share full prompt units with equal prefix keys (simllm.sim.prefix_cache)
    prefix_unit_tokens: int = 512  # tokens per prefix key (Mooncake hash_ids: 512)
    speculative: Optional[object] = None  # a simllm.speculative.SpeculativeSpec (simllm.sim.spec_decode)
    kv_tiers: tuple = ()  # simllm.sim.kv_tiers.TierLevel below HBM, first to last (needs prefix_caching)


@dataclass
class SimResult:
    """Raw outcome of a simulation (arrays indexed by request position in arrival order).

    With more than one pool (or a pool that is not of role ``both``), ``pools`` names each
    replica's pool, ``replica_devices`` / ``replica_kv_blocks`` give its size, ``request_columns``
    adds ``decode_replica``, ``pool`` (where the request completed) and ``kv_transfer_s``."""

    ids: np.ndarray
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    scheduled_s: np.ndarray
    first_token_s: np.ndarray
    completion_s: np.ndarray
    generated_tokens: np.ndarray
    preemptions: np.ndarray
    replica: np.ndarray
    rejected_reason: list  # "" when served
    steps: dict  # column -> list
    num_replicas: int
    kv_num_blocks: int
    block_size: int
    end_s: float
    kv_peak_blocks: list = field(default_factory=list)
    priority: Optional[np.ndarray] = None  # priority class per request (batching policy's rule)
    prefix_caching: bool = False
    prefix_query_tokens: int = 0  # prompt tokens looked up in the prefix cache at admission
    prefix_hit_tokens: int = 0  # of which found cached (prefill skipped)
    pools: list = field(default_factory=list)  # pool name of each replica index (several pools only)
    replica_devices: list = field(default_factory=list)
    replica_kv_blocks: list = field(default_factory=list)
    request_columns: dict = field(default_factory=dict)  # extra requests.csv columns
    kv_peak_total_blocks: list = field(default_factory=list)  # decode replicas: used + reserved for transfers
    speculative: Optional[dict] = None  # speculative decoding counters (simllm.sim.spec_decode.speculative_summary)
    kv_tiers: Optional[dict] = None  # per-tier prefix hits (simllm.sim.kv_tiers.tiers_summary)
