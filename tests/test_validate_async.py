"""vLLM V1's async scheduling in the engine (``deployment.async_scheduling``): every token of a request reaches
the client one engine iteration later, the iteration that emitted its first token; TPOT and the engine's own
timeline are unchanged; on by default for batching policy vllm only; refused where it cannot be honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simllm.errors import InputError
from simllm.metrics import requests_table, summarize
from simllm.policies import make_batching, make_router
from simllm.scenario import async_scheduling, load_scenario, prepare, scenario_from_dict, simulate
from simllm.sim import SimConfig, Simulation
from simllm.sim.fakes import ConstantCost
from simllm.workload import Request

REPO = Path(__file__).resolve().parent.parent


def _run(reqs, asy, policy="vllm", seqs=4):
    sim = Simulation(reqs, cost=ConstantCost(0.01), num_blocks=2000,
                     batching=lambda: make_batching({"policy": policy, "max_num_seqs": seqs,
                                                     "max_num_batched_tokens": 256}),
                     router=make_router("round_robin"),
                     config=SimConfig(watermark=0.0, api_overhead_s=0.004, async_scheduling=asy))
    return sim.run()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(1, 150), st.integers(1, 12)), min_size=1, max_size=25),
       st.sampled_from(["vllm", "vllm-v0"]))
def test_lag_is_the_iteration_that_emitted_the_first_token(rows, policy):
    reqs = [Request(i, a, p, o) for i, (a, p, o) in enumerate(sorted(rows))]
    off, on = _run(reqs, False, policy), _run(reqs, True, policy)
    np.testing.assert_array_equal(off.first_token_s, on.first_token_s)  # the engine's timeline is kept
    np.testing.assert_array_equal(off.completion_s, on.completion_s)
    assert off.async_lag_s is None
    steps = on.steps
    end = np.asarray(steps["start_s"]) + np.asarray(steps["duration_s"])
    per = np.asarray(steps["duration_s"]) / np.asarray(steps["n_steps"])
    served = np.isfinite(on.first_token_s)
    assert np.isnan(on.async_lag_s[~served]).all()
    for r in np.flatnonzero(served):  # the row that ended at the first token, and a prefill row (one iteration)
        hit = np.isclose(end, on.first_token_s[r], rtol=0, atol=1e-12) & (np.asarray(steps["prefill_tokens"]) > 0)
        assert hit.any() and np.isclose(per[hit], on.async_lag_s[r]).any()
    a, b = requests_table(off), requests_table(on)
    np.testing.assert_allclose(b["ttft_s"] - a["ttft_s"], on.async_lag_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b["e2e_s"] - a["e2e_s"], on.async_lag_s, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a["tpot_s"], b["tpot_s"])
    s = summarize(on, devices_per_replica=1)  # the summary is the table's view
    assert np.isclose(s["ttft_s"]["mean"], b["ttft_s"].mean())
    assert np.isclose(s["e2e_s"]["mean"], b["e2e_s"].mean())


def _scn(**dep):
    return scenario_from_dict({"model": "llama-3-8b", "hardware": {"accelerator": "h100-sxm"},
                               "deployment": dep,
                               "workload": {"generator": {"num_requests": 20, "arrivals": {"rate": 20.0}}}})


@pytest.mark.parametrize("dep,on", [({}, True), ({"batching": {"policy": "vllm"}}, True),
                                    ({"batching": {"policy": "vllm-v0"}}, False),
                                    ({"batching": {"policy": "vllm"}, "async_scheduling": False}, False),
                                    ({"batching": {"policy": "vllm-v0"}, "async_scheduling": True}, True)])
def test_default_follows_the_policy(dep, on):
    scn = _scn(**dep)
    assert async_scheduling(scn, prepare(scn)) is on


def test_run_gives_the_client_view_one_iteration_later():
    scn_on, scn_off = _scn(async_scheduling=True), _scn(async_scheduling=False)
    r1, s1, m1 = simulate(prepare(scn_on))
    r0, s0, m0 = simulate(prepare(scn_off))
    assert s1.equals(s0)
    lag = r1["ttft_s"] - r0["ttft_s"]
    assert (lag > 1e-4).all() and (lag < 0.5).all()
    np.testing.assert_allclose(r1["e2e_s"] - r0["e2e_s"], lag)
    assert m1["ttft_s"]["mean"] > m0["ttft_s"]["mean"] and m1["tpot_s"]["mean"] == m0["tpot_s"]["mean"]


def test_refused_with_pools():
    scn, path = load_scenario(REPO / "workloads" / "scenarios" / "llama3-70b-dgx-h100-disagg.yaml",
                              ["workload.limit=20", "deployment.async_scheduling=true"])
    with pytest.raises(InputError, match="async_scheduling") as e:
        prepare(scn, file=path)
    assert str(e.value).startswith(str(path))  # FILE: FIELD: message
    scn, path = load_scenario(REPO / "workloads" / "scenarios" / "llama3-70b-dgx-h100-disagg.yaml",
                              ["workload.limit=20"])
    assert async_scheduling(scn, prepare(scn, file=path)) is False  # vllm-v0 pools: off by default


def test_engine_refuses_data_parallel_ranks_and_several_pools():
    from simllm.sim.pools import Pool

    b = lambda: make_batching({"policy": "vllm"})  # noqa: E731
    p = Pool("a", "both", 1, ConstantCost(0.01), 100, b, make_router("round_robin"), devices=4, attn_group=2)
    with pytest.raises(ValueError, match="async_scheduling"):
        Simulation([Request(0, 0.0, 8, 2)], pools=[p], config=SimConfig(async_scheduling=True))
