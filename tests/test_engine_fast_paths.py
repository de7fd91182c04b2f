"""The engine's fast paths give the numbers of the general ones, bit for bit.

* ``ReplicaStepCost.decode_step_times`` (a few decode steps priced in plain floats) equals ``step_time``
  over the array of the same contexts, whichever of the two grows the decode-attention table first;
* a simulation that prices its short decode segments that way (``simllm.sim.replica._SHORT``) gives
  the same timestamps and step rows as one that prices every segment with numpy arrays.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simllm.sim.replica as replica_mod
from simllm.cost import make_step_cost
from simllm.hardware import load_accelerator, load_node
from simllm.model import load_model
from simllm.policies import make_batching, make_router
from simllm.policies.batching import batching as batching_registry
from simllm.sim import SimConfig, Simulation
from simllm.workload import Request

_COSTS = {}
SHORT = replica_mod._SHORT


def _cost(name: str):
    if name not in _COSTS:
        model, acc, tp = {"8b": ("llama-3-8b", "h100-sxm", 1), "70b-tp4": ("llama-3-70b", "h100-sxm", 4),
                          "mixtral-a100": ("mixtral-8x7b", "a100-sxm-80gb", 2),
                          "dsv3-mla": ("deepseek-v3", "h800-sxm", 8)}[name]
        _COSTS[name] = make_step_cost(load_model(model), load_accelerator(acc), tp=tp)
    return _COSTS[name]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["8b", "70b-tp4", "mixtral-a100", "dsv3-mla"]), st.integers(1, 1024),
       st.integers(1, 200_000), st.integers(1, 16), st.booleans(), st.one_of(st.none(), st.integers(0, 4000)))
def test_decode_step_times_equal_step_time(name, n, t0, k, list_first, excess):
    """Also with the batch's longest context (``excess`` tokens above the mean, as the engine passes it)."""
    cost = _cost(name)
    ctxs = [float(t0 + n + j * n) for j in range(k)]
    arr = np.arange(k, dtype=np.float64) * n + (t0 + n)
    if excess is None:
        maxs = amax = None
    else:
        m0 = -(-(t0 + n) // n) + excess
        maxs = [float(m0 + j) for j in range(k)]
        amax = np.arange(k, dtype=np.float64) + float(m0)
    if list_first:  # the table grows in whichever form prices first; the other must agree with it
        fast = cost.decode_step_times(n, ctxs, maxs)
        ref = cost.step_time(0, 0.0, 0, n, arr, amax).tolist()
    else:
        ref = cost.step_time(0, 0.0, 0, n, arr, amax).tolist()
        fast = cost.decode_step_times(n, ctxs, maxs)
    assert fast == ref


def test_decode_step_times_not_offered_with_pipeline_stages():
    cost = make_step_cost(load_model("llama-3-70b"), load_accelerator("h100-sxm"), tp=2, pp=2,
                          node=load_node("dgx-h100"))
    assert cost.decode_step_times(8, [100.0, 108.0]) is None


def _run(short: int, monkeypatch, policy: str, n_req: int = 400, seed: int = 3):
    monkeypatch.setattr(replica_mod, "_SHORT", short)
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(0.01, n_req))
    reqs = [Request(i, float(arr[i]), int(rng.integers(20, 3000)), int(rng.integers(1, 400))) for i in range(n_req)]
    sim = Simulation(reqs, cost=_cost("8b"), num_blocks=700,
                     batching=lambda: make_batching({"policy": policy, "max_num_seqs": 64,
                                                     "max_num_batched_tokens": 4096}),
                     router=make_router("round_robin"), replicas=2, config=SimConfig(max_model_len=8192))
    return sim.run()


@pytest.mark.parametrize("policy", ["vllm-v0", "vllm"])
def test_short_segments_in_floats_same_run(policy, monkeypatch):
    a = _run(0, monkeypatch, policy)  # every segment priced with arrays
    b = _run(SHORT, monkeypatch, policy)
    for x, y in ((a.completion_s, b.completion_s), (a.first_token_s, b.first_token_s),
                 (a.scheduled_s, b.scheduled_s)):
        assert np.array_equal(x, y, equal_nan=True)
    assert a.preemptions.sum() > 0  # the small KV cache preempts: segments cut short, recomputed prefills
    for c in a.steps:
        assert np.array_equal(a.steps[c], b.steps[c], equal_nan=True), c


class _Queue(list):
    pass


class _Running:
    def __init__(self, n):
        self.n = n
        self.n_prefilling = 0
        self.clock = 0.0

    def running(self):
        return [(i, 100 + i) for i in range(self.n)]


class _KV:
    block_size = 16
    num_blocks = 1000
    free_blocks = 500
    watermark_blocks = 10

    def blocks_for(self, t):
        return -(-t // 16)

    def freed_blocks(self, rid, t):
        return self.blocks_for(t)


@pytest.mark.parametrize("name", sorted(batching_registry.names()))
@pytest.mark.parametrize("n", [1, 7])
def test_shipped_policies_decode_only_when_nothing_waits(name, n):
    """The replica skips the policy when the waiting queue is empty (Replica._run: ``plain``): every policy of
    simllm.policies.batching must then choose exactly a decode-only batch of the running set."""
    pol = make_batching({"policy": name})
    assert type(pol).__module__ == "simllm.policies.batching"
    b = pol.next_batch(_Queue(), _Running(n), _KV())
    assert b.decode and not b.prefill_ids and not b.prefill_lens and not b.preempt and b.wait_until is None


def test_admission_mask_matches_reject_reason():
    rng = np.random.default_rng(0)
    n = 300
    reqs = [Request(i, float(i) * 0.01, int(rng.integers(1, 9000)), int(rng.integers(1, 9000))) for i in range(n)]
    sim = Simulation(reqs, cost=_cost("8b"), num_blocks=500,
                     batching=lambda: make_batching({"policy": "vllm-v0", "max_num_batched_tokens": 4096}),
                     router=make_router("round_robin"), replicas=2, config=SimConfig(max_model_len=10000))
    res = sim.run()
    rep = sim.replicas[0]
    ok = rep._admissible_mask()
    assert 0 < sum(ok) < n
    for rid in range(n):
        assert ok[rid] == (rep._reject_reason(rid) == "")
        assert bool(res.rejected_reason[rid]) == (not ok[rid])
