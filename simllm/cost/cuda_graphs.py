"""CUDA graphs as vLLM V1 runs them: a step's batch is padded to a captured size.

vLLM V1 captures CUDA graphs for a list of batch sizes (tokens per step) and replays the graph of
the smallest captured size that holds the step, padding the batch up to it (vLLM's
``CompilationConfig``: by default 1, 2, 4, then multiples of 8 below 256, then multiples of 16 up
to ``min(2 x max_num_seqs, 512)``). Decode-only steps replay a full graph (attention included);
steps with prefill replay the piecewise graphs (everything but attention) when their token count
is captured, and run eager beyond the largest size.

:class:`GraphPadded` wraps a step cost model (:class:`~simllm.cost.interface.StepCostModel`) and
prices each step at its padded size: a decode-only step of ``n`` sequences as ``pad(n)`` sequences
over the same context (the padding slots hold no KV), a step with prefill as ``pad(tokens)`` tokens,
the padding counted as prefill tokens with no attention work. Steps larger than the largest
captured size are priced as they are.

Launch costs: the wrapped model's per-kernel launch floor (``StepCost.overhead_s``, from the kernel
calibration of :mod:`simllm.cost.kernel_models`, fitted on kernels timed on the GPU) is GPU-side
time a graph replay keeps, so it stays. The host-side cost of launching (one graph launch per
decode step; per-kernel launches of an eager step) is assumed hidden behind the previous step's GPU
work (vLLM V1 schedules the next step while the current one runs); no host time is added.
"""

from __future__ import annotations

import bisect
from dataclasses import replace

from ..errors import InputError
from .interface import BatchShape, StepCost


def vllm_capture_sizes(max_num_seqs: int) -> list[int]:
    """vLLM V1's default CUDA graph capture sizes for ``max_num_seqs``."""
    top = min(2 * int(max_num_seqs), 512)
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, top + 1, 16))
    return [s for s in sizes if s <= top]


def capture_sizes(spec, max_num_seqs: int) -> list[int]:
    """``"auto"``: vLLM's default list; a list of positive integers: those sizes, sorted."""
    if spec == "auto":
        return vllm_capture_sizes(max_num_seqs)
    if not isinstance(spec, (list, tuple)) or not spec or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in spec):
        raise InputError(f"expected auto, none or a list of positive batch sizes, got {spec!r}",
                         field="deployment.cuda_graphs")
    return sorted(set(int(s) for s in spec))


class GraphPadded:
    """A step cost model whose steps are priced at their CUDA-graph padded size (see the module doc)."""

    def __init__(self, base, sizes: list[int]):
        self.base = base
        self.sizes = list(sizes)
        self.max_size = self.sizes[-1]

    def pad(self, tokens: int) -> int:
        """The captured size a step of ``tokens`` tokens replays (itself beyond the largest)."""
        if tokens > self.max_size or tokens <= 0:
            return tokens
        return self.sizes[bisect.bisect_left(self.sizes, tokens)]

    def step_time(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens,
                  decode_ctx_max=None):
        T = int(prefill_tokens) + int(decode_seqs)
        p = self.pad(T)
        if decode_ctx_max is None:
            if p != T:
                if prefill_tokens == 0:
                    return self.base.step_time(0, 0.0, 0, p, decode_ctx_tokens)
                prefill_tokens = int(prefill_tokens) + (p - T)
            return self.base.step_time(prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs,
                                       decode_ctx_tokens)
        if p != T:
            if prefill_tokens == 0:
                # the padding slots hold no context: the longest is scaled so that the padded batch's
                # excess over its mean (p x max' - ctx) is the real batch's (n x max - ctx)
                n = int(decode_seqs)
                return self.base.step_time(0, 0.0, 0, p, decode_ctx_tokens, decode_ctx_max * (n / p) if n else None)
            prefill_tokens = int(prefill_tokens) + (p - T)
        return self.base.step_time(prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens,
                                   decode_ctx_max)

    def step_cost(self, shape: BatchShape) -> StepCost:
        T = shape.prefill_tokens + shape.decode_seqs
        p = self.pad(T)
        if p != T:
            shape = (replace(shape, decode_seqs=p) if shape.prefill_tokens == 0
                     else replace(shape, prefill_tokens=shape.prefill_tokens + (p - T)))
        return self.base.step_cost(shape)

    def __getattr__(self, name):  # memory, layer ops, explain: the wrapped model's
        if name in ("base", "step_time_ranks"):  # per-rank pricing would bypass this wrapper: not offered
            raise AttributeError(name)
        return getattr(self.base, name)
