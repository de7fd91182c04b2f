"""Small stand-in cost models for tests and examples (they implement ``StepCostModel``).

``ConstantCost``: every iteration takes ``step_s`` (M/D/1-style validation).
``AffineCost``: ``a + b*decode_seqs + c*decode_ctx_tokens + d*prefill_tokens + e*prefill_attn_work``,
a crude roofline-shaped model with a known closed form; ``AffineCost.step_time_ranks`` prices
data-parallel attention ranks (``simllm.sim.dp_ranks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cost.interface import BatchShape, StepCost


@dataclass(frozen=True)
class ConstantCost:
    step_s: float = 0.01
    weight_bytes_per_device: float = 0.0
    kv_bytes_per_token_per_device: float = 1.0

    def step_time(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens):
        if isinstance(decode_ctx_tokens, np.ndarray):
            return np.full(decode_ctx_tokens.shape, self.step_s)
        return self.step_s

    def step_cost(self, s: BatchShape) -> StepCost:
        return StepCost(self.step_s, self.step_s, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class AffineCost:
    a: float = 5e-3
    b: float = 1e-5
    c: float = 2e-8
    d: float = 5e-5
    e: float = 1e-10
    weight_bytes_per_device: float = 16e9
    kv_bytes_per_token_per_device: float = 131072.0
    num_layers: int = 0  # the model's layers, for layer-wise KV transfer (0: unknown)
    flops_per_s: float = 1e15
    bytes_per_s: float = 3e12

    def step_time(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens):
        base = self.a + self.b * decode_seqs + self.d * prefill_tokens + self.e * prefill_attn_work
        return base + self.c * decode_ctx_tokens

    def step_time_ranks(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens):
        """Data-parallel ranks: the shared ``a + b*seqs + d*prefill_tokens`` of all ranks plus the slowest
        rank's ``e*prefill_attn_work + c*decode_ctx_tokens`` (``decode_ctx_tokens`` ``[R]`` or ``[k, R]``)."""
        shared = self.a + self.b * float(np.sum(decode_seqs)) + self.d * float(np.sum(prefill_tokens))
        per = self.e * np.asarray(prefill_attn_work, dtype=float) + self.c * np.asarray(decode_ctx_tokens, dtype=float)
        return shared + per.max(axis=-1)

    def step_cost(self, s: BatchShape) -> StepCost:
        t = float(self.step_time(s.prefill_tokens, s.prefill_attn_work, s.prefill_seqs, s.decode_seqs,
                                 s.decode_ctx_tokens))
        comp = self.d * s.prefill_tokens + self.e * s.prefill_attn_work
        mem = t - comp
        return StepCost(t, comp, mem, 0.0, 0.0, comp * self.flops_per_s, mem * self.bytes_per_s)
