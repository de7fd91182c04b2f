"""The contract between the simulator and the cost model.

The simulator never looks inside the cost model: it describes a step by a few aggregates
of its batch (DESIGN.md, Speed) and gets seconds back. ``decode_ctx_tokens`` may be a
numpy array, so that a replica can price many consecutive decode-only steps (whose only
difference is the growing context) in one vectorised call and jump over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

import numpy as np

ArrayLike = Union[float, np.ndarray]


@dataclass(frozen=True)
class BatchShape:
    """Aggregates of one iteration's batch on one replica.

    prefill_tokens:    new prompt tokens processed this step (all prefill chunks together)
    prefill_attn_work: sum over prefill chunks of chunk_len * (cached_ctx + chunk_len / 2):
                       the token-pairs attention touches (causal), used for attention FLOPs
    prefill_seqs:      number of sequences with a prefill chunk this step
    decode_seqs:       sequences generating one token this step
    decode_ctx_tokens: total context (KV tokens) those decode sequences attend to
    """

    prefill_tokens: int = 0
    prefill_attn_work: float = 0.0
    prefill_seqs: int = 0
    decode_seqs: int = 0
    decode_ctx_tokens: float = 0.0


@dataclass(frozen=True)
class StepCost:
    """Time of one step, and where it goes (seconds; FLOPs and bytes per device)."""

    total_s: float
    compute_s: float  # time of compute-bound operators
    memory_s: float  # time of memory-bound operators
    comm_s: float  # collectives (TP all-reduce, PP send/recv, EP all-to-all)
    overhead_s: float  # kernel launches and fixed per-step overheads
    flops: float
    bytes: float


class StepCostModel(Protocol):
    """What ``simllm.sim`` needs from ``simllm.cost`` for one replica."""

    def step_time(self, prefill_tokens: int, prefill_attn_work: float, prefill_seqs: int,
                  decode_seqs: int, decode_ctx_tokens: ArrayLike) -> ArrayLike:
        """Seconds for one iteration; vectorised over ``decode_ctx_tokens``. A model whose
        ``takes_ctx_max`` attribute is true also takes a sixth argument, the longest decode context of
        the batch (of ``decode_ctx_tokens``' shape), and the simulator then passes it."""
        ...

    def step_cost(self, shape: BatchShape) -> StepCost:
        """Same time, with its breakdown (for per-step records)."""
        ...

    @property
    def weight_bytes_per_device(self) -> float: ...

    @property
    def kv_bytes_per_token_per_device(self) -> float: ...
