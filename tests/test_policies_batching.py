"""Decisions of each batching policy on small hand-made queues."""

import numpy as np
import pytest

from simllm.errors import InputError
from simllm.policies import make_batching


class Q(list):
    """A waiting queue: rid -> (tokens to compute, started, arrival, priority)."""

    def __init__(self, items, block=16):
        super().__init__(r for r, *_ in items)
        self.info = {r: rest for r, *rest in items}
        self.block = block

    def prefill_len(self, rid):
        return self.info[rid][0]

    def new_blocks(self, rid):
        return 0 if self.started(rid) else -(-self.info[rid][0] // self.block)

    def started(self, rid):
        return len(self.info[rid]) > 1 and self.info[rid][1]

    def arrival_s(self, rid):
        return self.info[rid][2] if len(self.info[rid]) > 2 else 0.0

    def priority(self, rid):
        return self.info[rid][3] if len(self.info[rid]) > 3 else 0


class R:
    def __init__(self, run=(), n_prefilling=0, clock=0.0, prio=None, rem=()):
        self._run = list(run)
        self._rem = list(rem)
        self.n = len(self._run)
        self.n_prefilling = n_prefilling
        self.clock = clock

    def running(self):
        return self._run

    def reserved_blocks(self, ratio):  # (rid, KV tokens, tokens left) entries; blocks of 16
        return sum(-(-int(t + ratio * rem) // 16) - (-(-t // 16)) for _r, t, rem in self._rem) if self._rem else 0


class KV:
    def __init__(self, free=1000, num=1000, block=16, wm=0):
        self.free_blocks, self.num_blocks, self.block_size, self.watermark_blocks = free, num, block, wm

    def blocks_for(self, t):
        return -(-t // self.block_size)

    def freed_blocks(self, rid, t):
        return self.blocks_for(t)


def test_static_waits_for_a_full_batch_or_the_timeout():
    p = make_batching({"policy": "static", "batch_size": 3, "timeout_s": 1.0})
    q = Q([(1, 100, False, 0.5), (2, 50, False, 0.7)])
    b = p.next_batch(q, R(clock=0.9), KV())
    assert b.empty and b.wait_until == pytest.approx(1.5)
    b = p.next_batch(q, R(clock=1.5), KV())  # timed out: run what is there
    assert b.prefill_ids == [1, 2] and b.prefill_lens == [100, 50] and not b.decode
    q = Q([(1, 100), (2, 50), (3, 20), (4, 10)])
    b = p.next_batch(q, R(), KV())  # a full batch at once, no more than batch_size
    assert b.prefill_ids == [1, 2, 3]
    b = p.next_batch(q, R(run=[(9, 30)]), KV())  # a batch is running: no admission until it is done
    assert b.prefill_ids == [] and b.decode


def test_orca_mixes_prefill_and_decode_within_budget_and_slots():
    p = make_batching({"policy": "orca", "max_num_seqs": 3, "max_num_batched_tokens": 200})
    q = Q([(1, 100), (2, 90), (3, 10)])
    b = p.next_batch(q, R(run=[(7, 40), (8, 50)]), KV())
    # 2 decode tokens + 100 fit, + 90 would exceed 200 tokens; FCFS stops there
    assert b.decode and b.prefill_ids == [1] and b.prefill_lens == [100]
    b = p.next_batch(q, R(run=[(7, 40), (8, 50), (9, 5)]), KV())  # no sequence slot left
    assert b.decode and b.prefill_ids == []
    b = p.next_batch(q, R(run=[(7, 40)]), KV(free=7))  # KV: 7 blocks needed, one kept for the running sequence
    assert b.prefill_ids == [] and b.decode


def test_sarathi_decodes_first_then_chunks_fill_the_budget():
    p = make_batching({"policy": "sarathi", "token_budget": 64, "max_num_seqs": 8})
    q = Q([(1, 40, True), (2, 500), (3, 10)])  # 1: a prefill under way with 40 tokens left
    b = p.next_batch(q, R(run=[(7, 40), (8, 50), (9, 5), (10, 3)], n_prefilling=1), KV())
    assert b.decode
    assert b.prefill_ids == [1, 2] and b.prefill_lens == [40, 20]  # 4 decode + 40 + 20 = 64
    b = p.next_batch(Q([(2, 500)]), R(), KV())
    assert b.prefill_ids == [2] and b.prefill_lens == [64] and not b.decode
    b = p.next_batch(Q([(2, 500)]), R(run=[(i, 5) for i in range(64)]), KV())
    assert b.decode and b.prefill_ids == []  # the budget is all decode
    assert p.max_prompt_tokens() is None


def test_priority_admits_higher_class_first_and_preempts_lower():
    p = make_batching({"policy": "priority", "max_num_seqs": 2, "max_num_batched_tokens": 1000})
    # queue in FCFS order; 2 has class 0 (higher), 1 class 1
    q = Q([(1, 100, False, 0.0, 1), (2, 100, False, 0.1, 0)])
    b = p.next_batch(q, R(), KV())
    assert b.prefill_ids == [2, 1]
    # both slots taken by class 1 (5) and class 0 (6): the class-0 arrival preempts the class-1 one
    q = Q([(3, 100, False, 0.2, 0), (4, 100, False, 0.3, 1)])
    q.info.update({5: (0, False, 0, 1), 6: (0, False, 0, 0)})
    b = p.next_batch(q, R(run=[(5, 64), (6, 64)]), KV())
    assert b.preempt == [5] and b.prefill_ids == [3] and b.decode
    # a class-1 request never preempts class 0 or its own class
    q = Q([(4, 100, False, 0.3, 1)])
    q.info.update({5: (0, False, 0, 1), 6: (0, False, 0, 0)})
    b = p.next_batch(q, R(run=[(5, 64), (6, 64)]), KV())
    assert b.preempt == [] and b.prefill_ids == [] and b.decode


def test_priority_rule_by_prompt_length():
    p = make_batching({"policy": "priority", "rule": "prompt_length", "short_prompt_tokens": 100})
    assert p.classify(np.array([50, 100, 101]), np.array([5, 5, 5])).tolist() == [0, 0, 1]
    assert make_batching("priority").classify(np.array([50]), np.array([3])).tolist() == [3]


def test_bad_fields_are_rejected():
    with pytest.raises(InputError, match="token_budget"):
        make_batching({"policy": "sarathi", "token_budget": 0})
    with pytest.raises(InputError, match="rule"):
        make_batching({"policy": "priority", "rule": "nope"})
    with pytest.raises(InputError, match="unknown field"):
        make_batching({"policy": "static", "max_num_seqs": 4})


def test_sglang_prefill_first_chunks_and_reserves_kv_for_running_requests():
    p = make_batching({"policy": "sglang", "chunked_prefill_size": 1000, "max_prefill_tokens": 16384})
    assert (p.chunked_prefill_size, p.max_prefill_tokens, p.max_running_requests, p.new_token_ratio) == \
        (1000, 16384, 4096, 0.1)
    # a waiting request that fits: a prefill-only iteration (the running sequence does not decode)
    b = p.next_batch(Q([(7, 600), (8, 700)]), R(run=[(1, 100)], rem=[(1, 100, 50)]), KV(free=1000))
    assert b.prefill_ids == [7, 8] and b.prefill_lens == [600, 400] and not b.decode  # 8 cut at the chunk
    # the chunk under way continues first, alone when it fills the chunk
    b = p.next_batch(Q([(8, 1500, True), (9, 10)]), R(n_prefilling=1), KV())
    assert b.prefill_ids == [8] and b.prefill_lens == [1000]
    b = p.next_batch(Q([(8, 300, True), (9, 10)]), R(n_prefilling=1), KV())
    assert b.prefill_ids == [8, 9] and b.prefill_lens == [300, 10]
    # KV reserve: 10 running sequences of 16 tokens, 1600 tokens left each: at ratio 0.1 160 tokens = 10 blocks
    # each, 100 in all; 140 free blocks leave 40: a 48-block prompt waits, the batch decodes
    run = [(i, 16) for i in range(10)]
    rem = [(i, 16, 1600) for i in range(10)]
    b = p.next_batch(Q([(7, 48 * 16)]), R(run=run, rem=rem), KV(free=140))
    assert not b.prefill_ids and b.decode
    b = p.next_batch(Q([(7, 40 * 16)]), R(run=run, rem=rem), KV(free=140))
    assert b.prefill_ids == [7]
    q = make_batching({"policy": "sglang", "new_token_ratio": 0.0})
    assert q.next_batch(Q([(7, 48 * 16)]), R(run=run, rem=rem), KV(free=140)).prefill_ids == [7]
    # sequence cap: running + prefilling
    c = make_batching({"policy": "sglang", "max_running_requests": 2})
    assert c.next_batch(Q([(5, 10), (6, 10)]), R(run=[(1, 10)], rem=[(1, 10, 5)]), KV()).prefill_ids == [5]
    for bad in ({"new_token_ratio": 1.5}, {"chunked_prefill_size": 0}, {"max_running_requests": 0}):
        with pytest.raises((InputError, ValueError)):
            make_batching({"policy": "sglang", **bad})
