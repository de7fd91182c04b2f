"""Batching policies: what a replica runs in its next iteration.

One Protocol, one small registered class per policy (DESIGN.md, "What a policy looks like").
A policy sees the replica's waiting queue, its running set and its KV cache and returns a
:class:`Batch`: the requests to prefill this iteration (with how many tokens each) and whether
the running sequences decode. Preemption when KV blocks run out is the replica's mechanism
(``kv.preemption``), not the policy's.

Jumping (``simllm.sim``) relies on one property every policy here has: once a policy chooses a
decode-only batch, it keeps choosing it until the batch membership changes (a completion, a
preemption) or a request arrives. Free KV blocks only shrink while decoding, so a request
that could not be admitted stays inadmissible. A new policy must have it too (the jump == step
property tests check every registered policy).

Policies: ``vllm`` (vLLM's V1 scheduler: running requests first, then waiting ones, one token budget,
chunked prefill always on), ``vllm-v0`` (vLLM's V0 default: prefill-only or decode-only iterations), ``orca`` (decode and whole prefills
in one iteration), ``sarathi`` (decode first, prefill chunks fill a token budget), ``static``
(fixed batches run to completion), ``priority`` (classes, preemption of lower classes), ``sglang``
(SGLang's scheduler: prefill-first chunked batches, a KV reserve for running requests). All keep
the property above and are checked by ``tests/test_policies_properties.py`` (jump == step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Optional, Protocol

import numpy as np

from .registry import Registry

batching: Registry["BatchingPolicy"] = Registry("batching")


@dataclass
class Batch:
    """One iteration's decision: prefill these requests (global ids, token counts); decode the running set?"""

    prefill_ids: list[int] = field(default_factory=list)
    prefill_lens: list[int] = field(default_factory=list)  # tokens computed this iteration (a chunk may be less)
    decode: bool = False
    preempt: list[int] = field(default_factory=list)  # running requests to preempt before this iteration
    wait_until: Optional[float] = None  # nothing to run: sleep until this time (or an arrival)

    @property
    def empty(self) -> bool:
        return not self.prefill_ids and not self.decode


class WaitingQueue(Protocol):
    """FCFS queue of request ids (preempted requests are put back at its front).

    A request whose prefill is under way (chunked prefill) stays in the queue until its last
    chunk; ``started`` tells it, ``prefill_len`` is then what is left.
    """

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterable[int]: ...
    def prefill_len(self, rid: int) -> int:
        """Tokens still to compute for ``rid``: prompt plus tokens generated before a preemption, less cached
        prefix tokens and chunks already done."""
        ...
    def new_blocks(self, rid: int) -> int:
        """KV blocks admitting ``rid`` takes from ``kv.free_blocks`` (0 once its prefill started)."""
        ...
    def started(self, rid: int) -> bool: ...
    def arrival_s(self, rid: int) -> float: ...
    def priority(self, rid: int) -> int: ...


class RunningSet(Protocol):
    n: int  # sequences holding KV blocks and decoding
    n_prefilling: int  # requests whose chunked prefill is under way (they are in the queue, hold KV blocks)
    clock: float  # simulated time of this decision

    def running(self) -> list[tuple[int, int]]:
        """(request id, KV tokens) of the decoding sequences, oldest first."""
        ...

    def reserved_blocks(self, ratio: float) -> int:
        """KV blocks the decoding sequences would still take if each generated ``ratio`` of its remaining
        output (the ``sglang`` policy's admission reserve)."""
        ...


class KVCacheView(Protocol):
    block_size: int
    num_blocks: int
    free_blocks: int
    watermark_blocks: int
    def blocks_for(self, tokens: int) -> int: ...

    def freed_blocks(self, rid: int, tokens: int) -> int: ...  # blocks preempting running rid surely frees


class BatchingPolicy(Protocol):
    max_num_seqs: int
    # class attributes (defaults in the replica when absent):
    # general: True -> the replica runs batches through its general step (prefill and decode in one
    #   iteration, chunks, preemptions, waits); False -> vLLM's prefill-only / decode-only steps.
    # fcfs: True -> a request arriving behind a blocked queue head cannot be scheduled before it, so an
    #   arrival only interrupts a decode jump when the queue was empty; False -> every arrival does.

    def next_batch(self, queue: WaitingQueue, running: RunningSet, kv: KVCacheView) -> Batch: ...

    def max_prompt_tokens(self) -> int | None:
        """Longest prefill the policy can ever schedule (None: unlimited); longer prompts are rejected."""
        ...


@batching.register("vllm-v0")
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

    def __post_init__(self):
        _check_budget(self.max_num_seqs, self.max_num_batched_tokens)

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
                need = queue.new_blocks(rid)
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


@batching.register("vllm")
@dataclass(frozen=True)
class VLLMV1Batching:
    """vLLM's V1 scheduler (the engine of vLLM >= 0.8; ``vllm/v1/core/sched/scheduler.py``).

    One token budget per step (``max_num_batched_tokens``). Running requests are scheduled first:
    every decoding sequence one token, then prefills under way (chunked prefill is always on)
    continue; waiting requests (FCFS) are admitted after them while sequence slots
    (``max_num_seqs``, counting running and partially prefilled requests), budget and KV blocks
    last. ``long_prefill_token_threshold`` (> 0) caps the tokens one request prefills in a step
    (vLLM: 0, off, unless several partial prefills are allowed). Prefix caching is on by default in
    V1 (block hashes of the prompt content); here it is still the scenario's ``kv.prefix_caching``
    that turns it on (``simllm validate`` does; not yet automatic for this policy), with requests
    carrying ``prefix_blocks`` keys. Preemption when blocks run out is by recompute (``kv.preemption``),
    newest first, as V1 does; V1 keeps no free-block watermark, so it admits down to the last block
    (the replica's ``kv.watermark`` still applies when set).

    Defaults are those of ``vllm serve`` on a GPU with >= 70 GiB that is not an A100 (H100, H200,
    MI300X: 8192 tokens, 1024 sequences, ``vllm/engine/arg_utils.py`` get_batch_defaults); smaller
    GPUs and A100 default to 2048 tokens and 256 sequences there (:func:`vllm_server_defaults`).
    """

    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 1024
    long_prefill_token_threshold: int = 0
    general: ClassVar[bool] = True

    def __post_init__(self):
        _check_budget(self.max_num_seqs, self.max_num_batched_tokens)
        if self.long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be >= 0 (0: no cap)")

    def max_prompt_tokens(self) -> int | None:
        return None

    def next_batch(self, queue, running, kv) -> Batch:
        n = running.n
        b = Batch(decode=n > 0)
        left = self.max_num_batched_tokens - n
        if left <= 0 or not len(queue):
            return b
        cap = self.long_prefill_token_threshold
        seqs = n + running.n_prefilling
        free = kv.free_blocks - n
        started = []
        k = running.n_prefilling
        if k:  # the prefills under way, in queue order (they sit near the head: stop once all are found)
            for rid in queue:
                if queue.started(rid):
                    started.append(rid)
                    if len(started) == k:
                        break
        # prefills under way are V1 "running" requests: they continue before anything waiting is admitted
        for rid in started:
            left = _chunk(b, queue, rid, cap, left)
            if left <= 0:
                return b
        for rid in queue:
            if queue.started(rid):
                continue
            need = queue.new_blocks(rid)
            if seqs + 1 > self.max_num_seqs or free - need < kv.watermark_blocks:
                break
            free -= need
            seqs += 1
            left = _chunk(b, queue, rid, cap, left)
            if left <= 0:
                break
        return b


@batching.register("sglang")
@dataclass(frozen=True)
class SGLangBatching:
    """SGLang's scheduler (``python/sglang/srt/managers/scheduler.py`` ``get_next_batch_to_run`` and
    ``schedule_policy.py`` ``PrefillAdder``), FCFS (its default ``--schedule-policy fcfs``), no mixed chunks
    (``--enable-mixed-chunk`` is off by default).

    Prefill first: whenever a waiting request can be admitted, the iteration is a prefill-only batch and
    the running sequences wait (decode ITL stalls behind prefills, as in SGLang); otherwise every running
    sequence decodes one token. A prefill under way (SGLang's one ``chunked_req``) continues first. A batch
    holds at most ``chunked_prefill_size`` prompt tokens (the request that does not fit whole is cut there
    and continues next iteration) and ``max_prefill_tokens`` in all, and admits requests while the
    running ones (decoding and being prefilled) stay within ``max_running_requests``.

    KV admission: a request is admitted only if its prompt's blocks fit in the free blocks left after the
    running sequences' reserve, the blocks they would still take if each generated ``new_token_ratio`` of
    its remaining output (SGLang's ``rem_total_tokens``: ``(max_new_tokens - generated) x new_token_ratio``
    per running request; here the remaining tokens are the request's own output length, as in a benchmark
    that sets ``max_tokens``). SGLang starts the ratio at 0.7 and decays it by 0.001 a decode step to 0.1,
    raising it again after a retraction; ASSUMPTION: one constant ratio, default its floor 0.1 (what a
    server that runs for more than ~600 decode steps without retraction uses; a constant keeps a blocked
    queue blocked while the batch decodes, the property the engine's decode jumps rely on). The admitted
    request's own output reserve is not counted (the queue does not tell it). Running out of blocks while
    decoding preempts by the replica's ``kv.preemption`` (SGLang retracts by recompute). SGLang's KV pool
    is token-granular (page size 1): ``kv.block_size: 1`` matches it.

    Defaults are SGLang's on an 80 GB GPU (``server_args.py`` ``_handle_gpu_memory_settings``:
    ``chunked_prefill_size`` 2048 below 35 GB, 4096 below 60 GB, 8192 below 160 GB (H100, A100 80 GB, H200),
    16384 above (B200, MI300X); ``max_prefill_tokens`` 16384); ``max_running_requests`` 4096, SGLang's cap
    (``model_runner``: ``min(max(KV tokens / context length x 512, 2048), 4096)``, 4096 unless the context
    is long against the KV pool). Under DP attention SGLang divides ``max_running_requests`` and
    ``chunked_prefill_size`` by the DP size (the engine's per-rank policy does the same,
    ``simllm.sim.dp_ranks``) and scales its ratios by 0.3 (``schedule_conservativeness``): set
    ``new_token_ratio: 0.03`` there.
    """

    chunked_prefill_size: int = 8192
    max_prefill_tokens: int = 16384
    max_running_requests: int = 4096
    new_token_ratio: float = 0.1
    general: ClassVar[bool] = True

    def __post_init__(self):
        if self.chunked_prefill_size < 1 or self.max_prefill_tokens < 1:
            raise ValueError("chunked_prefill_size and max_prefill_tokens must be >= 1")
        if self.max_running_requests < 1:
            raise ValueError("max_running_requests must be >= 1")
        if not 0.0 <= self.new_token_ratio <= 1.0:
            raise ValueError("new_token_ratio must be in [0, 1]")

    @property
    def max_num_seqs(self) -> int:
        return self.max_running_requests

    def max_prompt_tokens(self) -> int | None:
        return None

    def next_batch(self, queue, running, kv) -> Batch:
        b = Batch()
        if len(queue):
            reserve = running.reserved_blocks(self.new_token_ratio) if running.n else 0
            free = kv.free_blocks - reserve
            left = min(self.chunked_prefill_size, self.max_prefill_tokens)
            seqs = running.n + running.n_prefilling
            k = running.n_prefilling
            for rid in queue:  # the prefill under way continues first (it holds its blocks)
                if not k or left <= 0:
                    break
                if queue.started(rid):
                    k -= 1
                    c = queue.prefill_len(rid)
                    b.prefill_ids.append(rid)
                    b.prefill_lens.append(min(c, left))
                    left -= c
            for rid in queue:
                if left <= 0:
                    break
                if queue.started(rid):
                    continue
                need = queue.new_blocks(rid)
                if seqs + 1 > self.max_running_requests or free - need < kv.watermark_blocks:
                    break
                free -= need
                seqs += 1
                c = queue.prefill_len(rid)
                b.prefill_ids.append(rid)
                b.prefill_lens.append(min(c, left))
                left -= c
        if not b.prefill_ids:
            b.decode = running.n > 0
        return b


def _chunk(b: Batch, queue, rid: int, cap: int, left: int) -> int:
    """Schedule ``rid``'s next prefill chunk (at most ``cap`` tokens when set, and what is ``left`` of the
    budget); the budget left after it."""
    c = queue.prefill_len(rid)
    if cap:
        c = min(c, cap)
    c = min(c, left)
    b.prefill_ids.append(rid)
    b.prefill_lens.append(c)
    return left - c


def vllm_server_defaults(device_memory_bytes: float, device_name: str) -> dict:
    """``vllm serve``'s max_num_batched_tokens / max_num_seqs for a GPU (vLLM's get_batch_defaults):
    8192 / 1024 with >= 70 GiB and not an A100, else 2048 / 256."""
    if device_memory_bytes >= 70 * 2**30 and "a100" not in device_name.lower():
        return {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
    return {"max_num_batched_tokens": 2048, "max_num_seqs": 256}


def _check_seqs(max_num_seqs):
    if max_num_seqs < 1:
        raise ValueError("max_num_seqs must be >= 1")


def _check_budget(max_num_seqs, max_num_batched_tokens):
    _check_seqs(max_num_seqs)
    if max_num_batched_tokens < 1:
        raise ValueError("max_num_batched_tokens must be >= 1")


@batching.register("static")
@dataclass(frozen=True)
class StaticBatching:
    """Static (request-level) batching: wait for ``batch_size`` requests, or until the oldest has waited
    ``timeout_s`` seconds of simulated time, prefill them in one iteration and decode the batch to
    completion; nothing is admitted until the whole batch is done."""

    batch_size: int = 32
    timeout_s: float = 1.0
    general: ClassVar[bool] = True
    # an arrival can complete a waiting batch (admission depends on the queue's length, not only on its
    # head): every arrival re-decides, inside a decode jump too (DP ranks jump together while one waits)
    fcfs: ClassVar[bool] = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.timeout_s < 0:
            raise ValueError("timeout_s must be >= 0")

    @property
    def max_num_seqs(self) -> int:
        return self.batch_size

    def max_prompt_tokens(self) -> int | None:
        return None

    def next_batch(self, queue, running, kv) -> Batch:
        b = Batch()
        if running.n > 0:
            b.decode = True
            return b
        if not len(queue):
            return b
        head = next(iter(queue))
        if len(queue) < self.batch_size and running.clock < queue.arrival_s(head) + self.timeout_s:
            b.wait_until = queue.arrival_s(head) + self.timeout_s
            return b
        free = kv.free_blocks
        for rid in queue:
            need = queue.new_blocks(rid)
            # the first always fits a colocated replica with nothing running; a prefill replica may still hold
            # blocks of earlier prefills waiting for their transfer: then it waits (nothing scheduled, blocked)
            if len(b.prefill_ids) >= self.batch_size or free - need < (kv.watermark_blocks if b.prefill_ids else 0):
                break
            free -= need
            b.prefill_ids.append(rid)
            b.prefill_lens.append(queue.prefill_len(rid))
        return b


def _admit_whole(b: Batch, queue, kv, free: int, seqs: int, tokens: int, max_seqs: int, max_tokens: int,
                 order: Iterable[int]) -> tuple[int, int, int]:
    """Admit whole prefills FCFS in ``order`` until one does not fit; returns (free, seqs, tokens)."""
    for rid in order:
        n_tok = queue.prefill_len(rid)
        if seqs + 1 > max_seqs or tokens + n_tok > max_tokens:
            break
        need = queue.new_blocks(rid)
        if free - need < kv.watermark_blocks:
            break
        free -= need
        seqs += 1
        tokens += n_tok
        b.prefill_ids.append(rid)
        b.prefill_lens.append(n_tok)
    return free, seqs, tokens


@batching.register("orca")
@dataclass(frozen=True)
class OrcaBatching:
    """Orca iteration-level batching, no chunking: each iteration decodes every running sequence and
    prefills whole prompts of waiting requests (FCFS) in the same iteration, within ``max_num_seqs``
    and ``max_num_batched_tokens`` (decode tokens count one each). One KV block per running
    sequence is kept for its next token."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    general: ClassVar[bool] = True

    def __post_init__(self):
        _check_budget(self.max_num_seqs, self.max_num_batched_tokens)

    def max_prompt_tokens(self) -> int | None:
        return self.max_num_batched_tokens

    def next_batch(self, queue, running, kv) -> Batch:
        b = Batch(decode=running.n > 0)
        if len(queue):
            _admit_whole(b, queue, kv, kv.free_blocks - running.n, running.n, running.n, self.max_num_seqs,
                         self.max_num_batched_tokens, queue)
        return b


@batching.register("sarathi")
@dataclass(frozen=True)
class ChunkedPrefill:
    """Sarathi-Serve / Dynamic SplitFuse: each iteration decodes every running sequence first, then fills
    the rest of ``token_budget`` with prefill chunks (FCFS; a prefill under way continues first),
    within ``max_num_seqs``. A prompt of any length is prefilled over several iterations."""

    token_budget: int = 512
    max_num_seqs: int = 256
    general: ClassVar[bool] = True

    def __post_init__(self):
        _check_seqs(self.max_num_seqs)
        if self.token_budget < 1:
            raise ValueError("token_budget must be >= 1")

    def max_prompt_tokens(self) -> int | None:
        return None

    def next_batch(self, queue, running, kv) -> Batch:
        b = Batch(decode=running.n > 0)
        left = self.token_budget - running.n
        if left <= 0 or not len(queue):
            return b
        seqs = running.n + running.n_prefilling
        free = kv.free_blocks - running.n
        for rid in queue:
            if not queue.started(rid):
                need = queue.new_blocks(rid)
                if seqs + 1 > self.max_num_seqs or free - need < kv.watermark_blocks:
                    break
                free -= need
                seqs += 1
            c = min(queue.prefill_len(rid), left)
            b.prefill_ids.append(rid)
            b.prefill_lens.append(c)
            left -= c
            if left <= 0:
                break
        return b


@batching.register("priority")
@dataclass(frozen=True)
class PriorityBatching:
    """Priority classes with preemption (lower class number first, FCFS within a class).

    The class is ``Request.priority`` (``rule: trace``) or, with ``rule: prompt_length``, 0 for prompts
    of at most ``short_prompt_tokens`` and 1 for longer ones. Each iteration decodes the running
    set and prefills whole prompts in class order (Orca-style, no chunking); when the best waiting
    request does not fit (KV blocks or sequence slots), running requests of strictly lower classes
    are preempted (newest first, by ``kv.preemption``: swap or recompute) to make room.
    """

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    rule: str = "trace"
    short_prompt_tokens: int = 1024
    general: ClassVar[bool] = True
    fcfs: ClassVar[bool] = False

    def __post_init__(self):
        _check_budget(self.max_num_seqs, self.max_num_batched_tokens)
        if self.rule not in ("trace", "prompt_length"):
            raise ValueError(f"rule must be trace or prompt_length, got {self.rule!r}")

    def max_prompt_tokens(self) -> int | None:
        return self.max_num_batched_tokens

    def classify(self, prompt_tokens: np.ndarray, priority: np.ndarray) -> np.ndarray:
        if self.rule == "prompt_length":
            return (np.asarray(prompt_tokens) > self.short_prompt_tokens).astype(np.int64)
        return np.asarray(priority, dtype=np.int64)

    def next_batch(self, queue, running, kv) -> Batch:
        b = Batch()
        n = running.n
        if len(queue):
            order = sorted(queue, key=queue.priority)  # stable: FCFS within a class
            free = kv.free_blocks - n
            seqs = tokens = n
            victims = None
            for rid in order:
                n_tok = queue.prefill_len(rid)
                if tokens + n_tok > self.max_num_batched_tokens:
                    break
                need = queue.new_blocks(rid)
                if seqs + 1 > self.max_num_seqs or free - need < kv.watermark_blocks:
                    # preempt running requests of lower classes, newest first, if that makes room
                    if victims is None:
                        victims = [(r, t) for r, t in reversed(running.running()) if r not in b.preempt]
                    cls = queue.priority(rid)
                    f, s, tk, chosen = free, seqs, tokens, []
                    for r, t in victims:
                        if s + 1 <= self.max_num_seqs and f - need >= kv.watermark_blocks:
                            break
                        if queue.priority(r) <= cls:
                            continue
                        chosen.append(r)
                        f += kv.freed_blocks(r, t) + 1
                        s -= 1
                        tk -= 1
                    if s + 1 > self.max_num_seqs or f - need < kv.watermark_blocks:
                        break
                    b.preempt.extend(chosen)
                    victims = [v for v in victims if v[0] not in chosen]
                    free, seqs, tokens = f, s, tk
                free -= need
                seqs += 1
                tokens += n_tok
                b.prefill_ids.append(rid)
                b.prefill_lens.append(n_tok)
        b.decode = n - len(b.preempt) > 0
        return b


def make_batching(block) -> BatchingPolicy:
    return batching.build(block, default="vllm")
