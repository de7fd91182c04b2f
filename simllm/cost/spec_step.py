"""The step cost of a replica that decodes speculatively (``simllm.speculative``).

:class:`SpeculativeStepCost` wraps the target's :class:`~simllm.cost.interface.StepCostModel` and
keeps its interface: ``step_time(P, W, m, n, ctx)`` is the time of an iteration in which the ``n``
decoding sequences each draft ``k`` tokens and the target verifies them, with the prefill work
``P, W, m`` of the same iteration. ``ctx`` is, as everywhere, the decoding sequences' total context
including the token each would decode without speculation.

Verification: the target runs ``n (k + 1)`` query tokens. It is priced as a decode step of
``n (k + 1)`` rows whose total context is ``ctx + n k`` (each sequence's KV, read once, plus the
drafted tokens' own KV): the GEMMs, MoE and collectives see ``n (k + 1)`` tokens, the LM head
``n (k + 1)`` rows, attention one pass over the cached context (what verification kernels such as
FlashMLA or FlashInfer's multi-query decode do). An approximation of the attention kernel's
occupancy: the ``k + 1`` queries of a sequence are seen as ``k + 1`` short sequences sharing its
context.

Drafting, added to the verification:

- ``mtp``: ``k`` sequential passes of the MTP module over the ``n`` sequences (plus one pass over
  the iteration's prefill tokens, which build the module's KV). The module is ``mtp_layers``
  Transformer blocks of the target; each pass is priced as that share (``mtp_layers / L``) of the
  target's step for the same tokens. Assumption: the embedding and LM head the module shares with
  the target are spread over the layers in that share, not priced in full per pass. Its weights
  and per-token KV are the same share of the target's (DeepSeek-V3: 1/61, i.e. 11 B of 671 B
  parameters, where the report gives 14 B for the MTP module).
- ``draft``: the draft model's own step cost (its descriptor, the same accelerator, dtypes and
  ``draft_tp``): ``k`` decode steps over the ``n`` sequences with context growing by one token per
  draft, and its prefill of the iteration's prefill tokens. Its weights and KV per token are added
  to the replica's memory.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..speculative import SpeculativeSpec
from .interface import BatchShape, StepCost


def _add(a: StepCost, b: StepCost, scale: float = 1.0) -> StepCost:
    return StepCost(total_s=a.total_s + scale * b.total_s, compute_s=a.compute_s + scale * b.compute_s,
                    memory_s=a.memory_s + scale * b.memory_s, comm_s=a.comm_s + scale * b.comm_s,
                    overhead_s=a.overhead_s + scale * b.overhead_s, flops=a.flops + scale * b.flops,
                    bytes=a.bytes + scale * b.bytes)


class SpeculativeStepCost:
    """A target step cost with ``spec``'s drafting and verification; ``draft`` is the draft model's
    step cost (method ``draft``), ``num_layers`` the target's layers (method ``mtp``)."""

    takes_ctx_max = False  # its step_time has the five-argument form, whatever the target's

    def __init__(self, target: Any, spec: SpeculativeSpec, *, draft: Any = None, num_layers: Optional[int] = None):
        self.target = target
        self.spec = spec
        self.k = int(spec.num_tokens)
        self.draft = draft
        if spec.method == "draft" and draft is None:
            raise ValueError("method draft needs the draft model's step cost")
        if spec.method == "mtp":
            if not num_layers or num_layers < 1:
                raise ValueError("method mtp needs the target's number of layers")
            self.frac = min(1.0, spec.mtp_layers / float(num_layers))
        else:
            self.frac = 0.0
        # the target's attention FLOPs of k + 1 queries per sequence beyond its one-query form, where
        # it prices them (simllm.cost.moe_ep.EPStepCost.verify_attention_extra)
        self._mq = getattr(target, "verify_attention_extra", None)

    def __getattr__(self, name):  # everything else is the target's (placement, loads, explain, ...)
        if name in ("target", "step_time_ranks", "_step_time_ranks"):  # not the target's: see step_time_ranks
            raise AttributeError(name)
        return getattr(self.target, name)

    @property
    def step_time_ranks(self):
        """Per-rank pricing (``simllm.sim.dp_ranks``) where the target offers it (the expert-parallel step cost)
        and the drafting is the model's own MTP module; AttributeError otherwise (a draft model's step cost
        prices no ranks), so data-parallel ranks refuse the wrapper."""
        if self.spec.method != "mtp" or not hasattr(self.target, "step_time_ranks"):
            raise AttributeError("step_time_ranks")
        return self._step_time_ranks

    def _step_time_ranks(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens):
        """:meth:`step_time` per data-parallel rank (per-rank arrays, one step): every rank's ``n`` decoding
        sequences verify ``k + 1`` tokens over ``ctx + n k`` context tokens, the slowest rank's multi-query
        attention extra added (:meth:`~simllm.cost.moe_ep.EPStepCost.verify_attention_extra`, for one rank's
        share of the replica), plus the MTP module's passes priced as ``mtp_layers / L`` of the target's
        per-rank step for the same tokens."""
        tg = self.target
        n = np.asarray(decode_seqs, dtype=float)
        ctx = np.asarray(decode_ctx_tokens, dtype=float)
        k = self.k
        # the MTP module's first pass sees the step's own tokens: the verification step itself without decodes
        first = tg.step_time_ranks(prefill_tokens, prefill_attn_work, prefill_seqs, n, ctx)
        if not n.any():
            return first * (1.0 + self.frac)
        v = tg.step_time_ranks(prefill_tokens, prefill_attn_work, prefill_seqs, n * (k + 1), ctx + n * k)
        if self._mq is not None:  # the busiest rank's: verify_attention_extra prices a 1 / dp share
            dp = float(getattr(tg, "dp", 1))
            v = v + max(float(self._mq(int(a), float(b) + a * k, k + 1)) * dp for a, b in zip(n, ctx))
        rest = 0.0
        if k > 1:
            z = np.zeros(len(n))
            rest = (k - 1) * tg.step_time_ranks(z, z, z, n, ctx)
        return v + self.frac * (first + rest)

    # ------------------------------------------------------------------ StepCostModel
    def step_time(self, prefill_tokens: int, prefill_attn_work: float, prefill_seqs: int, decode_seqs: int,
                  decode_ctx_tokens):
        tg = self.target
        n = int(decode_seqs)
        k = self.k
        if n <= 0:
            v = tg.step_time(prefill_tokens, prefill_attn_work, prefill_seqs, 0, decode_ctx_tokens)
        else:
            v = tg.step_time(prefill_tokens, prefill_attn_work, prefill_seqs, n * (k + 1), decode_ctx_tokens + n * k)
            if self._mq is not None:
                v = v + self._mq(n, decode_ctx_tokens + n * k, k + 1)
        return v + self._draft_time(prefill_tokens, prefill_attn_work, prefill_seqs, n, decode_ctx_tokens)

    def _draft_time(self, P, W, m, n, ctx):
        if self.spec.method == "mtp":
            tg = self.target
            first = tg.step_time(P, W, m, n, ctx)
            rest = (self.k - 1) * tg.step_time(0, 0.0, 0, n, ctx) if n > 0 and self.k > 1 else 0.0
            return self.frac * (first + rest)
        d = self.draft
        t = d.step_time(P, W, m, n, ctx)
        for i in range(1, self.k if n > 0 else 1):
            t = t + d.step_time(0, 0.0, 0, n, ctx + n * i)
        return t

    def step_cost(self, shape: BatchShape) -> StepCost:
        tg = self.target
        n, k = int(shape.decode_seqs), self.k
        P, W, m, ctx = shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs, float(shape.decode_ctx_tokens)
        v = tg.step_cost(BatchShape(P, W, m, n * (k + 1), ctx + n * k) if n > 0 else shape)
        if self.spec.method == "mtp":
            v = _add(v, tg.step_cost(BatchShape(P, W, m, n, ctx)), self.frac)
            if n > 0 and k > 1:
                v = _add(v, tg.step_cost(BatchShape(0, 0.0, 0, n, ctx)), self.frac * (k - 1))
            return v
        d = self.draft
        v = _add(v, d.step_cost(BatchShape(P, W, m, n, ctx)))
        for i in range(1, k if n > 0 else 1):
            v = _add(v, d.step_cost(BatchShape(0, 0.0, 0, n, ctx + n * i)))
        return v

    @property
    def weight_bytes_per_device(self) -> float:
        w = float(self.target.weight_bytes_per_device)
        if self.spec.method == "mtp":
            return w * (1.0 + self.frac)
        return w + float(self.draft.weight_bytes_per_device)

    @property
    def kv_bytes_per_token_per_device(self) -> float:
        kv = float(self.target.kv_bytes_per_token_per_device)
        if self.spec.method == "mtp":
            return kv * (1.0 + self.frac)
        return kv + float(self.draft.kv_bytes_per_token_per_device)


def speculative_cost(target: Any, spec: Optional[SpeculativeSpec], *, draft: Any = None,
                     num_layers: Optional[int] = None) -> Any:
    """``target`` itself without speculation, else wrapped (see :class:`SpeculativeStepCost`)."""
    if spec is None:
        return target
    return SpeculativeStepCost(target, spec, draft=draft, num_layers=num_layers)


__all__ = ["SpeculativeStepCost", "speculative_cost"]
