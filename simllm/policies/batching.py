"""Batching policies: what a replica runs in its next iteration.

One Protocol, one small registered class per policy (DESIGN.md, "What a policy looks like").
A policy sees the replica's waiting queue, its running set and its KV cache and returns a
:class:`Batch`: the requests to prefill this iteration (with how many tokens each) and whether
the running sequences decode. Preemption when KV blocks run out is the replica's mechanism
(``kv.preemption``), not the policy's.

Jumping (``simllm.sim``) relies on one property every policy here has: once a policy chooses a
decode-only batch, it keeps choosing it until the batch membership changes (a completion, a
preemption) or a request arrives. Free KV blocks only shrink while decoding, so a request
that could not be admitted stays inadmissible. A policy without that property sets
``jump_safe = False`` and the replica then steps one iteration at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

from .registry import Registry

batching: Registry["BatchingPolicy"] = Registry("batching")


@dataclass
class Batch:
    """One iteration's decision: prefill these requests (global ids, token counts); decode the running set?"""

    prefill_ids: list[int] = field(default_factory=list)
    prefill_lens: list[int] = field(default_factory=list)
    decode: bool = False

    @property
    def empty(self) -> bool:
        return not self.prefill_ids and not self.decode


class WaitingQueue(Protocol):
    """FCFS queue of request ids (preempted requests are put back at its front)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterable[int]: ...
    def prefill_len(self, rid: int) -> int:
        """Tokens to (re)compute when ``rid`` is admitted: prompt plus tokens generated before a preemption."""
        ...


class RunningSet(Protocol):
    n: int  # sequences holding KV blocks and decoding


class KVCacheView(Protocol):
    block_size: int
    num_blocks: int
    free_blocks: int
    watermark_blocks: int
    def blocks_for(self, tokens: int) -> int: ...


class BatchingPolicy(Protocol):
    max_num_seqs: int
    jump_safe: bool

    def next_batch(self, queue: WaitingQueue, running: RunningSet, kv: KVCacheView) -> Batch: ...

    def max_prompt_tokens(self) -> int | None:
        """Longest prefill the policy can ever schedule (None: unlimited); longer prompts are rejected."""
        ...


@batching.register("vllm")
@dataclass(frozen=True)
class VLLMBatching:
    """vLLM v0 default scheduler: prefill-prioritised, no chunking.

    If the head of the waiting queue can be admitted (sequence slots, token budget and KV
    blocks above the watermark), the iteration is a prefill-only batch of as many waiting
    requests (FCFS, stopping at the first that does not fit) as the budget allows; otherwise
    every running sequence decodes one token.
    """

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    jump_safe: bool = field(default=True, init=False)

    def __post_init__(self):
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")

    def max_prompt_tokens(self) -> int | None:
        return self.max_num_batched_tokens

    def next_batch(self, queue, running, kv) -> Batch:
        b = Batch()
        if len(queue):
            seqs = running.n
            tokens = 0
            free = kv.free_blocks
            for rid in queue:
                n_tok = queue.prefill_len(rid)
                if seqs + 1 > self.max_num_seqs or tokens + n_tok > self.max_num_batched_tokens:
                    break
                need = kv.blocks_for(n_tok)
                if free - need < kv.watermark_blocks:
                    break
                free -= need
                seqs += 1
                tokens += n_tok
                b.prefill_ids.append(rid)
                b.prefill_lens.append(n_tok)
        if not b.prefill_ids:
            b.decode = running.n > 0
        return b


def make_batching(block) -> BatchingPolicy:
    return batching.build(block, default="vllm")
