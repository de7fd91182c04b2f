"""Parallel plans: PP bubble, validator, memory fit, communication per step (simllm.parallel)."""

import pytest

from simllm.errors import InputError
from simllm.hardware import load_cluster
from simllm.model import load_model
from simllm.parallel import (ParallelPlan, bubble_fraction, check_plan, comm_per_step, enumerate_plans,
                             kv_bytes_per_token_per_device, pipeline_makespan, validate_plan,
                             weight_bytes_per_device)
from simllm.topology import build_topology


@pytest.mark.parametrize("p,m", [(1, 1), (2, 1), (4, 4), (4, 16), (8, 3)])
def test_pp_bubble_matches_formula(p, m):
    t = 1e-3
    span = pipeline_makespan([t] * p, m)
    assert span == pytest.approx((m + p - 1) * t)
    busy = m * p * t
    assert 1 - busy / (p * span) == pytest.approx(bubble_fraction(p, m))
    assert bubble_fraction(p, m) == pytest.approx((p - 1) / (m + p - 1))


def test_pipeline_slowest_stage_and_p2p():
    assert pipeline_makespan([1.0, 3.0, 1.0], 4) == pytest.approx(1 + 4 * 3 + 1)
    assert pipeline_makespan([1.0, 1.0], 1, p2p_s=0.5) == pytest.approx(2.5)


def test_validator_divisibility_and_devices():
    m = load_model("llama-3-70b")
    c = load_cluster("dgx-a100")
    bad = check_plan(m, c, ParallelPlan(tp=3, pp=3, dp=1))
    text = " ".join(bad.errors)
    assert "heads" in text and "layers" in text
    assert any("devices" in e for e in check_plan(m, c, ParallelPlan(tp=8, pp=2)).errors)
    with pytest.raises(InputError, match="tp=3"):
        validate_plan(m, c, ParallelPlan(tp=3))
    with pytest.raises(InputError):
        ParallelPlan(tp=0)
    assert any("no experts" in e for e in check_plan(m, c, ParallelPlan(ep=2, dp=2)).errors)


def test_memory_fit():
    m = load_model("llama-3-70b")  # ~141 GB of bf16 weights
    c = load_cluster("dgx-a100")
    one = check_plan(m, c, ParallelPlan(tp=1))
    assert not one.ok and "GiB per device" in one.errors[0]
    four = check_plan(m, c, ParallelPlan(tp=4))
    assert four.ok
    w1 = weight_bytes_per_device(m, ParallelPlan())
    assert w1 == pytest.approx(m.weight_bytes(), rel=1e-9)
    assert weight_bytes_per_device(m, ParallelPlan(tp=4)) == pytest.approx(w1 / 4, rel=1e-4)
    # 8 KV heads: tp=8 splits them, tp beyond 8 would replicate
    assert kv_bytes_per_token_per_device(m, ParallelPlan(tp=8)) == pytest.approx(m.kv_cache_bytes_per_token() / 8)
    assert kv_bytes_per_token_per_device(m, ParallelPlan(tp=2, pp=2)) == pytest.approx(m.kv_cache_bytes_per_token() / 4)
    big_kv = check_plan(m, c, ParallelPlan(tp=4), kv_tokens=10_000_000)
    assert not big_kv.ok


def test_moe_expert_parallel_memory_and_comm():
    m = load_model("deepseek-v3")
    c = load_cluster("h800-ep")
    topo = build_topology("h800-ep")
    ep = ParallelPlan(tp=1, dp=32, ep=32)
    assert check_plan(m, c, ep).ok
    assert not check_plan(m, c, ParallelPlan(tp=8)).ok  # 671B bf16 on one node does not fit
    assert check_plan(m, c, ParallelPlan(tp=1, dp=2, ep=3)).errors
    comm = comm_per_step(m, topo, ep, tokens=4096)
    assert comm["ep_s"] > 0 and comm["tp_s"] == 0
    tp = comm_per_step(load_model("llama-3-70b"), topo, ParallelPlan(tp=8, pp=2), tokens=2048)
    assert tp["tp_s"] > 0 and tp["pp_s"] > 0


def test_enumerate_valid_first():
    m = load_model("llama-3-8b")
    plans = enumerate_plans(m, load_cluster("dgx-a100"))
    assert plans[0].ok
    assert all(p.plan.devices <= 8 for p in plans)
