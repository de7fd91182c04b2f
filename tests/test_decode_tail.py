"""Decode attention of a mixed-length batch: the longest sequences pace the kernel when few work items
share an SM (simllm.cost.kernel_models.decode_tail_share), and the engine hands the batch's longest
context to the cost models that take it.

Against things this code did not choose: the e2e runs of ../shared/data (vLLM v0.15.1, H100), whose
decode steps at 128 sequences of 1,083-2,531 tokens (inter-token p75) the equal-length pricing misses
by 12-13% for Llama-2-70B TP4 and CodeLlama-34B TP2; a Monte Carlo of list scheduling (the GPU's block scheduler)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simllm.cost import make_step_cost
from simllm.cost.cuda_graphs import GraphPadded
from simllm.cost.host_overhead import HostOverhead
from simllm.cost.kernel_models import decode_tail_share
from simllm.hardware import load_accelerator
from simllm.model import load_model
from simllm.policies.batching import make_batching
from simllm.policies.routing import make_router
from simllm.sim.fakes import AffineCost
from simllm.sim.simulation import Simulation
from simllm.workload.request import Request

_COST = {}


def _cost(tp=4):
    if tp not in _COST:
        _COST[tp] = make_step_cost(load_model("llama-3-70b"), load_accelerator("h100-sxm"), tp=tp)
    return _COST[tp]


@given(st.floats(1.0, 1e6), st.floats(1.0, 1e6), st.sampled_from([16.0, 108.0, 132.0, 170.0]))
@settings(max_examples=60, deadline=None)
def test_tail_share_bounded_and_falls_with_items_per_sm(a, b, cus):
    lo, hi = sorted((a, b))
    f_lo, f_hi = float(decode_tail_share(lo, cus)), float(decode_tail_share(hi, cus))
    assert 0.0 < f_hi <= f_lo <= 1.0


def test_tail_share_is_list_scheduling_of_uniform_lengths():
    """Monte Carlo of the block scheduler: w x m items of lengths uniform up to the longest handed in turn
    to whichever of m SMs frees first; the kernel's excess over the mean load, as a share of
    w (max - mean), against decode_tail_share."""
    import heapq
    m = 132
    rng = np.random.default_rng(0)
    for w in (4.0, 8.0, 16.0):
        shares = []
        for _ in range(60):
            p = rng.uniform(0.0, 1.0, int(w * m))
            h = [0.0] * m
            for x in p:
                heapq.heappush(h, heapq.heappop(h) + x)
            shares.append((max(h) - p.sum() / m) / (w * 0.5))
        mc = float(np.mean(shares))
        assert abs(float(decode_tail_share(w * m, m)) - mc) < 0.05 * mc + 0.005, (w, mc)
    assert float(decode_tail_share(m, m)) == 1.0  # one item per SM: the longest sets the pace
    assert float(decode_tail_share(0.5 * m, m)) == 1.0  # split KV: the longest sequence's splits


def test_equal_lengths_price_as_before_and_spread_costs_more():
    c = _cost()
    for b, ctx in ((1, 700.0), (37, 700.0), (128, 1807.0)):
        t0 = c.step_time(0, 0.0, 0, b, b * ctx)
        assert c.step_time(0, 0.0, 0, b, b * ctx, ctx) == t0  # longest = mean: the tables' case
        assert c.step_time(0, 0.0, 0, b, b * ctx, 1.4 * ctx) > t0
    # scalar and array forms agree (the engine's jumps price arrays)
    C = 128 * 1807.0 + 128 * np.arange(5.0)
    M = 2531.0 + np.arange(5.0)
    arr = c.step_time(0, 0.0, 0, 128, C, M)
    one = [c.step_time(0, 0.0, 0, 128, float(x), float(y)) for x, y in zip(C, M)]
    assert np.allclose(arr, one, rtol=1e-12, atol=0)


def test_reasoning_batch_closer_to_measured_step():
    """Llama-2-70B-shaped TP4 (64 heads, 8 KV heads, like Llama-3-70B) at 128 sequences spread over
    1,083-2,531 tokens: measured 29.6 ms per step (../shared/data/e2e, 70B reasoning run, inter-token
    p75); the equal-length price is >10% lower, the mixed-length price within 6% and not above it (2026-12-02:
    28.0 ms, 5.5% low). (Llama-3-70B's larger vocabulary adds ~0.1 ms of LM head.)"""
    c = _cost()
    b, mean, top = 128, 1807.0, 2531.0
    eq = c.step_time(0, 0.0, 0, b, b * mean)
    mixed = c.step_time(0, 0.0, 0, b, b * mean, top)
    assert eq < 0.9 * 29.64e-3
    assert 0.94 < mixed / 29.64e-3 <= 1.0


def test_wrappers_forward_the_longest_context():
    c = _cost()
    g = GraphPadded(c, [8, 16, 32])
    assert g.takes_ctx_max and HostOverhead(g, 1e-4).takes_ctx_max
    # decode-only, padded 13 -> 16: padding slots hold no context, the real batch's excess is kept
    b, C, M = 13, 13 * 900.0, 1500.0
    assert g.step_time(0, 0.0, 0, b, C, M) == c.step_time(0, 0.0, 0, 16, C, M * b / 16)
    assert g.step_time(0, 0.0, 0, b, C, M) > g.step_time(0, 0.0, 0, b, C)
    h = HostOverhead(c, 1e-4, 2e-6)
    assert math.isclose(h.step_time(0, 0.0, 0, b, C, M), c.step_time(0, 0.0, 0, b, C, M) + 1e-4 + b * 2e-6)


@dataclass(frozen=True)
class _Recording(AffineCost):
    """AffineCost that takes the longest context and records what the engine passed."""

    takes_ctx_max = True
    seen: list = None

    def step_time(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens,
                  decode_ctx_max=None):
        if decode_seqs and decode_ctx_max is not None:  # (step_cost, for the records, prices without it)
            self.seen.append((decode_seqs, np.atleast_1d(decode_ctx_tokens).copy(),
                              np.atleast_1d(decode_ctx_max).copy()))
        return super().step_time(prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens)


def test_engine_passes_the_longest_context():
    """Two sequences of different prompts decoding together: every priced step gets the longer one's
    context, one more per step, and never less than the mean."""
    seen = []
    cost = _Recording(seen=seen)
    reqs = [Request(0, 0.0, 100, 50), Request(1, 0.0, 400, 50)]
    sim = Simulation(reqs, cost=cost, num_blocks=1000, batching=lambda: make_batching({"policy": "vllm-v0"}),
                     router=make_router("round_robin"), replicas=1)
    sim.run()
    assert seen
    two = [(C, M) for n, C, M in seen if n == 2]
    assert two
    for C, M in two:
        assert np.all(M * 2 >= C) and np.all(np.diff(M) == 1)
        # the longer prompt: 400 + generated tokens + the one being produced; the shorter 300 behind
        assert np.allclose(2 * M - C, 300.0)


def test_mla_decode_is_not_paced_by_lengths():
    """FlashMLA splits the batch's whole KV evenly over the SMs: the longest context changes nothing."""
    c = make_step_cost(load_model("deepseek-v3"), load_accelerator("h100-sxm"), tp=8)
    b, ctx = 64, 2000.0
    assert c.step_time(0, 0.0, 0, b, b * ctx, 4000.0) == c.step_time(0, 0.0, 0, b, b * ctx)
