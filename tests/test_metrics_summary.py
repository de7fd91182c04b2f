"""Metric definitions (vllm bench serve) and saturation detection."""

import numpy as np
import pytest

from simllm.metrics import requests_table, saturation, summarize
from simllm.policies import make_batching, make_router
from simllm.sim import SimConfig, Simulation
from simllm.sim.fakes import ConstantCost
from simllm.workload import Request


def _sim(reqs, step=0.01, seqs=8):
    return Simulation(reqs, cost=ConstantCost(step), num_blocks=1000,
                      batching=lambda: make_batching({"policy": "vllm-v0", "max_num_seqs": seqs}),
                      router=make_router("round_robin"), config=SimConfig(watermark=0)).run()


def test_ttft_tpot_e2e_by_hand():
    # one request alone: prefill step (10 ms) gives token 1, then 4 decode steps
    res = _sim([Request(0, 1.0, 100, 5), Request(1, 5.0, 10, 1)])
    df = requests_table(res)
    r = df.iloc[0]
    assert r.ttft_s == pytest.approx(0.01) and r.e2e_s == pytest.approx(0.05)
    assert r.tpot_s == pytest.approx(0.01)  # (e2e - ttft) / (5 - 1)
    assert r.queueing_s == 0.0
    assert np.isnan(df.iloc[1].tpot_s)  # one output token: no TPOT, as in vLLM
    s = summarize(res, slo_ttft_s=0.02, slo_tpot_s=0.005, price_per_device_hour=3.6, tdp_w=700, idle_w=100)
    assert s["completed"] == 2 and s["slo_attainment"] == 0.5  # request 0 misses TPOT; 1 has none
    assert s["itl_mean_s"] == pytest.approx(0.01)
    dur = s["duration_s"]
    assert dur == pytest.approx(4.01)
    assert s["cost_per_million_output_tokens_usd"] == pytest.approx(3.6 * dur / 3600 / 6 * 1e6)
    busy = 0.05 + 0.01
    assert s["energy_j"] == pytest.approx(100 * dur + 600 * busy)
    s2 = summarize(res, tdp_w=700, idle_w=None)
    assert s2["energy_j"] is None and "idle_power" in s2["energy_note"]


def test_saturation_detection():
    rng = np.random.default_rng(0)
    # service ~ 0.05 s, 8-way batching: capacity ~ 160 req/s per... use overload by 3x and 0.5x
    for rate, expect in ((400.0, True), (20.0, False)):
        arr = np.cumsum(rng.exponential(1 / rate, 3000))
        res = _sim([Request(i, float(a), 50, 5) for i, a in enumerate(arr)], seqs=1)
        s = summarize(res)
        assert s["saturated"] is expect, s["saturation"]


def test_saturation_helper_on_synthetic_series():
    arr = np.linspace(0, 100, 1001)
    assert saturation(arr, arr + 1.0, np.zeros(1001, bool))["saturated"] is False
    assert saturation(arr, 100 + 3 * arr, np.zeros(1001, bool))["saturated"] is True
