"""Client timeouts (``SimConfig.request_timeout_s``: the server aborts what its client gave up on); CUDA graphs.

Checked against an exact reference (one sequence at a time, constant step time: a single-server
queue with reneging at the deadline, aborts at step boundaries) and for bookkeeping under the V1
scheduler with prefix caching and KV pressure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from simllm.metrics import requests_table, summarize
from simllm.policies import make_batching, make_router
from simllm.sim import SimConfig, Simulation
from simllm.sim.fakes import ConstantCost
from simllm.workload import Request


def _reference(arr, out, step, timeout):
    """Completion and abort times of a one-at-a-time server with constant steps: a request starts at a step
    boundary (or its arrival when the server is idle), is dropped unserved if its deadline has passed by
    then, and is aborted at the first step boundary at or after its deadline unless its last step ends there."""
    free = 0.0
    comp = np.full(len(arr), np.nan)
    ab = np.full(len(arr), np.nan)
    for i, a in enumerate(arr):
        d = a + timeout
        s = max(a, free)
        if d <= s:
            ab[i] = s if free > a else a
            continue
        k = math.ceil((d - s) / step - 1e-12)  # first boundary at or after the deadline: s + k step
        if k >= out:
            comp[i] = s + out * step
            free = comp[i]
        else:
            ab[i] = s + k * step
            free = ab[i]
    return comp, ab


def _sim(arr, out, step, timeout, jump=True, policy="vllm-v0", seqs=1, blocks=1000, prefix=False, prompt=8):
    reqs = [Request(i, float(a), prompt, out, prefix_blocks=(i % 3, i) if prefix else ()) for i, a in enumerate(arr)]
    cfg = SimConfig(watermark=0.0, jump=jump, request_timeout_s=timeout, prefix_caching=prefix,
                    prefix_unit_tokens=16 if prefix else 512)
    sim = Simulation(reqs, cost=ConstantCost(step), num_blocks=blocks,
                     batching=lambda: make_batching({"policy": policy, "max_num_seqs": seqs}),
                     router=make_router("round_robin"), config=cfg)
    return sim.run()


@pytest.mark.parametrize("jump", [True, False])
def test_aborts_match_single_server_reference(jump):
    """Overloaded (rho = 1.5): the engine's completions and aborts equal the reference's exactly."""
    rng = np.random.default_rng(3)
    step, out, timeout = 0.01, 20, 1.0
    arr = np.cumsum(rng.exponential(step * out / 1.5, 400))
    res = _sim(arr, out, step, timeout, jump=jump)
    comp, ab = _reference(arr, out, step, timeout)
    np.testing.assert_array_equal(np.isnan(res.completion_s), np.isnan(comp))
    np.testing.assert_allclose(res.completion_s[~np.isnan(comp)], comp[~np.isnan(comp)], atol=1e-9)
    np.testing.assert_allclose(res.aborted_s[~np.isnan(ab)], ab[~np.isnan(ab)], atol=1e-9)
    assert 0.2 < np.isfinite(ab).mean() < 0.6  # the overload makes aborts common, not universal


def test_no_timeout_no_aborts_and_same_timeline():
    rng = np.random.default_rng(0)
    arr = np.cumsum(rng.exponential(0.3, 200))
    a = _sim(arr, 20, 0.01, None)
    b = _sim(arr, 20, 0.01, 1e6)
    assert a.aborted_s is None and np.isnan(b.aborted_s).all()
    np.testing.assert_array_equal(a.completion_s, b.completion_s)


def test_v1_prefix_caching_overload_frees_everything():
    """V1 scheduler, prefix caching, a small KV cache (preemption by recompute) and timeouts: every request
    completes or is aborted exactly once, the summary counts the aborts and flags the overload, and the
    KV cache never holds more than it has."""
    rng = np.random.default_rng(1)
    arr = np.cumsum(rng.exponential(0.006, 600))  # 2.5x what 16 sequences of 60 steps of 4 ms serve
    res = _sim(arr, 60, 0.004, 1.0, policy="vllm", seqs=16, blocks=100, prefix=True, prompt=64)
    done = np.isfinite(res.completion_s)
    ab = np.isfinite(res.aborted_s)
    assert not (done & ab).any() and (done | ab).all() and ab.sum() > 50
    assert (res.aborted_s[ab] - res.arrival_s[ab] >= 1.0 - 1e-9).all()  # never before the deadline
    assert max(res.kv_peak_blocks) <= 100 and res.preemptions.sum() > 0
    df = requests_table(res)
    s = summarize(res)
    assert s["aborted"] == int(ab.sum()) and s["completed"] == int(done.sum()) and s["saturated"]


def test_timeout_rejected_for_disaggregated_pools():
    from simllm.sim import Pool

    reqs = [Request(0, 0.0, 8, 4)]
    pools = [Pool("p", "prefill", 1, ConstantCost(0.01), 100, lambda: make_batching({"policy": "vllm"}),
                  make_router("round_robin")),
             Pool("d", "decode", 1, ConstantCost(0.01), 100, lambda: make_batching({"policy": "vllm"}),
                  make_router("round_robin"))]
    with pytest.raises(ValueError, match="colocated"):
        Simulation(reqs, pools=pools, network=lambda env, ranks: (None, None),
                   config=SimConfig(request_timeout_s=1.0))


# -- CUDA graph padding (simllm.cost.cuda_graphs) -------------------------------------------------------------

def test_vllm_capture_sizes_and_padding():
    from simllm.cost.cuda_graphs import GraphPadded, vllm_capture_sizes

    s = vllm_capture_sizes(128)  # max size min(2 x 128, 512) = 256
    assert s[:5] == [1, 2, 4, 8, 16] and s[-2:] == [248, 256] and len(s) == 3 + 31 + 1
    assert vllm_capture_sizes(1024)[-1] == 512 and vllm_capture_sizes(1024)[-2] == 496
    g = GraphPadded(ConstantCost(0.01), s)
    assert [g.pad(n) for n in (1, 3, 5, 125, 129, 256, 257)] == [1, 4, 8, 128, 136, 256, 257]


def test_graph_padded_prices_the_padded_batch():
    from simllm.cost.cuda_graphs import GraphPadded, vllm_capture_sizes
    from simllm.sim.fakes import AffineCost

    base = AffineCost()
    g = GraphPadded(base, vllm_capture_sizes(128))
    ctx = np.array([1000.0, 1100.0])
    np.testing.assert_array_equal(g.step_time(0, 0.0, 0, 125, ctx), base.step_time(0, 0.0, 0, 128, ctx))
    assert g.step_time(100, 5000.0, 1, 21, 3000.0) == base.step_time(107, 5000.0, 1, 21, 3000.0)  # 121 -> 128
    assert g.step_time(100, 5000.0, 1, 20, 3000.0) == base.step_time(100, 5000.0, 1, 20, 3000.0)  # 120 captured
    assert g.step_time(2000, 5e5, 1, 20, 3000.0) == base.step_time(2000, 5e5, 1, 20, 3000.0)  # eager: as is


def test_bad_cuda_graphs_option_is_one_line_error(tmp_path):
    from simllm.errors import InputError
    from simllm.scenario import prepare, scenario_from_dict

    scn = scenario_from_dict({"model": "llama-3-8b", "hardware": {"accelerator": "h100-sxm"},
                              "deployment": {"cuda_graphs": [0, 8]},
                              "workload": {"generator": {"num_requests": 1, "arrivals": {"rate": 1.0}}}})
    with pytest.raises(InputError, match="cuda_graphs"):
        prepare(scn)


def test_api_overhead_in_client_latencies_and_deadline():
    """The front end's time is in TTFT and E2E, not in the engine's timeline; the engine aborts at the client's
    timeout less it (the client would see the last token that much later)."""
    rng = np.random.default_rng(5)
    arr = np.cumsum(rng.exponential(0.2, 300))
    reqs = [Request(i, float(a), 8, 20) for i, a in enumerate(arr)]

    def run(api, timeout):
        sim = Simulation(reqs, cost=ConstantCost(0.01), num_blocks=1000,
                         batching=lambda: make_batching({"policy": "vllm-v0", "max_num_seqs": 1}),
                         router=make_router("round_robin"),
                         config=SimConfig(watermark=0.0, api_overhead_s=api, request_timeout_s=timeout))
        return sim.run()

    a, b = run(0.0, 1.0), run(0.05, 1.05)
    np.testing.assert_array_equal(a.completion_s, b.completion_s)  # same engine timeline and aborts
    np.testing.assert_array_equal(a.aborted_s, b.aborted_s)
    ta, tb = requests_table(a), requests_table(b)
    ft, ok = np.isfinite(ta["ttft_s"]), np.isfinite(ta["e2e_s"])
    assert ok.sum() > 100 and (~ok).sum() > 10  # some complete, some are aborted
    np.testing.assert_allclose((tb["ttft_s"] - ta["ttft_s"])[ft], 0.05)
    np.testing.assert_allclose((tb["e2e_s"] - ta["e2e_s"])[ok], 0.05)
    np.testing.assert_allclose(tb["tpot_s"], ta["tpot_s"], equal_nan=True)
    assert summarize(b)["ttft_s"]["mean"] == pytest.approx(summarize(a)["ttft_s"]["mean"]
                                                                        + 0.05)


def test_host_overhead_adds_per_step_and_per_sequence_time():
    from simllm.cost.host_overhead import HostOverhead
    from simllm.cost.interface import BatchShape
    from simllm.sim.fakes import AffineCost

    base = AffineCost()
    h = HostOverhead(base, 1e-4, 2e-6)
    ctx = np.array([1000.0, 2000.0])
    np.testing.assert_allclose(h.step_time(0, 0.0, 0, 10, ctx), base.step_time(0, 0.0, 0, 10, ctx) + 1e-4 + 10 * 2e-6)
    assert h.step_time(50, 100.0, 2, 3, 300.0) == pytest.approx(
        base.step_time(50, 100.0, 2, 3, 300.0) + 1e-4 + 5 * 2e-6)
    assert h.step_time(0, 0.0, 0, 0, 0.0) == base.step_time(0, 0.0, 0, 0, 0.0)  # an empty step costs nothing
    c = h.step_cost(BatchShape(decode_seqs=4, decode_ctx_tokens=400.0))
    assert c.total_s == pytest.approx(float(base.step_time(0, 0.0, 0, 4, 400.0)) + 1e-4 + 4 * 2e-6)
    assert c.overhead_s == pytest.approx(1e-4 + 4 * 2e-6)
