"""Host (CPU) time per engine step that the GPU's time does not hide.

A serving engine spends CPU time on every step: scheduling, preparing the inputs, sampling
bookkeeping, detokenizing and streaming the new tokens. When that time is not overlapped with the
GPU's work it adds to the step: ``per_step_s + per_seq_s x (sequences in the step)``.
:class:`HostOverhead` wraps a step cost model (:class:`~simllm.cost.interface.StepCostModel`) and
adds it to every non-empty step (``StepCost.overhead_s`` carries it in the breakdown).

vLLM V1 (0.15) schedules step N+1 while step N runs on the GPU and detokenizes in its front-end
process, so on the GPUs of ``../shared/data/e2e/`` the fit is about zero (see
``benchmarks/e2e_validation.py --fit-overhead``); both parameters default to 0.
"""

from __future__ import annotations

from dataclasses import replace

from .interface import BatchShape, StepCost


class HostOverhead:
    """A step cost model plus ``per_step_s + per_seq_s x sequences`` seconds of host time per step."""

    def __init__(self, base, per_step_s: float = 0.0, per_seq_s: float = 0.0):
        self.base = base
        self.per_step_s = float(per_step_s)
        self.per_seq_s = float(per_seq_s)

    def _extra(self, prefill_tokens, prefill_seqs, decode_seqs) -> float:
        if prefill_tokens <= 0 and decode_seqs <= 0:
            return 0.0
        return self.per_step_s + self.per_seq_s * (int(prefill_seqs) + int(decode_seqs))

    def step_time(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens,
                  decode_ctx_max=None):
        if decode_ctx_max is None:
            t = self.base.step_time(prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens)
        else:
            t = self.base.step_time(prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens,
                                    decode_ctx_max)
        return t + self._extra(prefill_tokens, prefill_seqs, decode_seqs)

    def step_cost(self, shape: BatchShape) -> StepCost:
        c = self.base.step_cost(shape)
        x = self._extra(shape.prefill_tokens, shape.prefill_seqs, shape.decode_seqs)
        return replace(c, total_s=c.total_s + x, overhead_s=c.overhead_s + x)

    def __getattr__(self, name):  # memory, layer ops, explain: the wrapped model's
        if name in ("base", "step_time_ranks"):  # per-rank pricing would bypass this wrapper: not offered
            raise AttributeError(name)
        return getattr(self.base, name)
