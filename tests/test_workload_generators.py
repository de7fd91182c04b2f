"""Generators, transformations, WorkloadSpec validation, sessions, speed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from simllm.errors import InputError
from simllm.workload import SessionWorkload, WorkloadSpec, build_workload
from simllm.workload.generators import arrival_times, zipf_lengths

REPO = Path(__file__).resolve().parent.parent


def gaps(reqs):
    return np.diff([r.arrival_s for r in reqs])


def gen(arrivals, n=20_000, lengths=None, seed=0):
    g = {"arrivals": arrivals, "num_requests": n}
    if lengths:
        g["lengths"] = lengths
    return build_workload({"generator": g}, seed=seed)


def test_poisson_rate_and_cv():
    reqs = gen({"process": "poisson", "rate": 10.0})
    g = gaps(reqs)
    assert 1 / g.mean() == pytest.approx(10.0, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.05)
    assert [r.id for r in reqs[:3]] == [0, 1, 2] and reqs[0].arrival_s == 0.0


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_cv_within_5_percent(cv):
    g = gaps(gen({"process": "gamma", "rate": 5.0, "cv": cv}, seed=1))
    assert g.std() / g.mean() == pytest.approx(cv, rel=0.05)
    assert 1 / g.mean() == pytest.approx(5.0, rel=0.05)


def test_same_seed_identical_different_seed_differs():
    spec = {"generator": {"arrivals": {"process": "gamma", "rate": 3, "cv": 2},
                          "lengths": {"kind": "zipf", "correlation": 0.3}, "num_requests": 500}}
    assert build_workload(spec, seed=7) == build_workload(spec, seed=7)
    assert build_workload(spec, seed=7) != build_workload(spec, seed=8)
    tr = {"trace": "traces/azure2023_conv_sample.csv", "retime": {"process": "gamma", "rate": 4, "cv": 3}}
    assert build_workload(tr, seed=1) == build_workload(tr, seed=1)


def test_daily_cycle_modulates_rate():
    t = arrival_times(np.random.default_rng(0), 40_000, rate=4.0, amplitude=0.8, period_s=1000.0, process="poisson")
    assert len(t) / t[-1] == pytest.approx(4.0, rel=0.03)
    counts = np.histogram(t % 1000.0, bins=4, range=(0, 1000))[0]
    # rate(t) = 4 (1 + 0.8 sin): high in the first half period, low in the second
    assert counts[:2].sum() / counts[2:].sum() == pytest.approx((1 + 0.8 * 2 / np.pi) / (1 - 0.8 * 2 / np.pi), rel=0.05)


def test_lengths_lognormal_zipf_empirical():
    reqs = gen({"rate": 1.0}, lengths={"kind": "lognormal", "prompt_median": 512, "prompt_sigma": 0.5,
                                       "output_median": 64, "output_sigma": 0.3, "correlation": 0.8})
    p = np.array([r.prompt_tokens for r in reqs])
    o = np.array([r.output_tokens for r in reqs])
    assert np.median(p) == pytest.approx(512, rel=0.05) and np.median(o) == pytest.approx(64, rel=0.05)
    assert np.corrcoef(np.log(p), np.log(o))[0, 1] == pytest.approx(0.8, abs=0.03)
    zp, zo = zipf_lengths(np.random.default_rng(0), 20_000, prompt_theta=1.2, prompt_min=1, prompt_max=1000,
                          output_theta=1.2, output_min=1, output_max=1000, correlation=0.5)
    k = np.arange(1, 1001)
    pk = k ** -1.2 / (k ** -1.2).sum()
    assert (zp == 1).mean() == pytest.approx(pk[0], rel=0.05) and zp.max() <= 1000 and zp.min() >= 1
    assert np.corrcoef(np.log(zp), np.log(zo))[0, 1] > 0.3
    emp = gen({"rate": 1.0}, n=2000, lengths={"kind": "empirical", "trace": "traces/azure2023_code_sample.csv"})
    pairs = {(r.prompt_tokens, r.output_tokens) for r in emp}
    real = {(r.prompt_tokens, r.output_tokens)
            for r in build_workload({"trace": "traces/azure2023_code_sample.csv"}, seed=0)}
    assert pairs <= real and len(pairs) > 1000


def test_duration_generator():
    reqs = build_workload({"generator": {"arrivals": {"rate": 20}, "duration_s": 50}}, seed=3)
    assert reqs[-1].arrival_s < 50 and len(reqs) == pytest.approx(1000, rel=0.15)


# --------------------------------------------------------------------------- transformations


def test_rate_scale_halves_durations():
    base = build_workload({"trace": "traces/azure2023_conv_sample.csv"}, seed=0)
    fast = build_workload({"trace": "traces/azure2023_conv_sample.csv", "rate_scale": 2.0}, seed=0)
    assert fast[-1].arrival_s == pytest.approx(base[-1].arrival_s / 2)
    assert [r.prompt_tokens for r in fast] == [r.prompt_tokens for r in base]


def test_window_and_limit():
    base = build_workload({"trace": "traces/azure2023_conv_sample.csv"}, seed=0)
    w = build_workload({"trace": "traces/azure2023_conv_sample.csv", "window_s": [60, 120]}, seed=0)
    inside = [r for r in base if 60 <= r.arrival_s < 120]
    assert len(w) == len(inside) and w[0].arrival_s == pytest.approx(inside[0].arrival_s - 60)
    assert all(0 <= r.arrival_s < 60 for r in w) and [r.id for r in w] == list(range(len(w)))
    lim = build_workload({"trace": "traces/azure2023_conv_sample.csv", "limit": 10, "window_s": [60, 120]}, seed=0)
    assert len(lim) == 10 and lim[0].prompt_tokens == inside[0].prompt_tokens


def test_retime_keeps_lengths():
    base = build_workload({"trace": "traces/azure2023_code_sample.csv"}, seed=0)
    rt = build_workload({"trace": "traces/azure2023_code_sample.csv", "retime": {"process": "poisson", "rate": 10}},
                        seed=0)
    assert [(r.prompt_tokens, r.output_tokens) for r in rt] == [(r.prompt_tokens, r.output_tokens) for r in base]
    g = gaps(rt)
    assert 1 / g.mean() == pytest.approx(10, rel=0.1) and g.std() / g.mean() == pytest.approx(1, rel=0.1)
    # rate left out: the trace's own mean rate
    kept = build_workload({"trace": "traces/azure2023_code_sample.csv", "retime": {"process": "gamma", "cv": 2}},
                          seed=0)
    assert kept[-1].arrival_s == pytest.approx(base[-1].arrival_s, rel=0.15)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("spec, match", [
    ({}, "exactly one of trace or generator"),
    ({"generator": {"num_requests": 5}}, "arrivals.rate is required"),
    ({"generator": {"arrivals": {"rate": 1, "cv": 2}, "num_requests": 5}}, "cv applies only to process: gamma"),
    ({"generator": {"arrivals": {"rate": 1}}}, "exactly one of num_requests or duration_s"),
    ({"generator": {"arrivals": {"rate": -1}, "num_requests": 5}}, "greater than 0"),
    ({"generator": {"arrivals": {"rate": 1}, "num_requests": 5, "lengths": {"kind": "gauss"}}}, "gauss"),
    ({"generator": {"arrivals": {"rate": 1}, "num_requests": 5}, "format": "azure"}, "apply only to a trace"),
    ({"trace": "traces/azure2023_code_sample.csv", "window_s": [10, 5]}, "start < end"),
    ({"trace": "traces/azure2023_code_sample.csv", "window_s": [1e6, 2e6]}, "no requests left"),
    ({"trace": "traces/azure2023_code_sample.csv", "rate_scal": 2}, "unknown field"),
])
def test_spec_errors_are_one_line(spec, match):
    with pytest.raises(InputError, match=match) as ei:
        build_workload(spec, seed=0)
    assert "\n" not in str(ei.value)


def test_error_names_field():
    with pytest.raises(InputError) as ei:
        build_workload({"generator": {"arrivals": {"rate": 1, "amplitude": 1.5}, "num_requests": 5}}, seed=0)
    assert ei.value.field == "generator.arrivals.amplitude"
    e = ei.value.at(file="s.yaml", field_prefix="workload")
    assert str(e).startswith("s.yaml: workload.generator.arrivals.amplitude:")


def test_spec_object_accepted():
    spec = WorkloadSpec.model_validate({"generator": {"arrivals": {"rate": 2}, "num_requests": 3}})
    assert len(build_workload(spec, seed=0)) == 3


# --------------------------------------------------------------------------- sessions


def test_sessions():
    sw = build_workload({"generator": {
        "arrivals": {"process": "poisson", "rate": 0.5},
        "lengths": {"kind": "lognormal", "prompt_median": 200, "output_median": 100},
        "sessions": {"num_sessions": 200, "mean_turns": 3, "think_time": {"kind": "lognormal", "mean_s": 5, "cv": 1}},
    }}, seed=4)
    assert isinstance(sw, SessionWorkload) and len(sw.sessions) == 200
    assert sw.num_requests / 200 == pytest.approx(3, rel=0.2)
    starts = [s.start_s for s in sw.sessions]
    assert starts == sorted(starts)
    for s in sw.sessions:
        for a, b in zip(s.turns, s.turns[1:]):
            # context accumulates: next prompt = previous prompt + answer + new tokens
            assert b.prompt_tokens > a.prompt_tokens + a.output_tokens
            full = a.prompt_tokens // 512
            assert b.prefix_blocks[:full] == a.prefix_blocks[:full]
    rng = np.random.default_rng(0)
    tt = np.array([sw.think_time(rng) for _ in range(4000)])
    assert tt.mean() == pytest.approx(5, rel=0.1) and (tt > 0).all()
    r = sw.request(17, 3, 0, 12.5)
    assert r.id == 17 and r.session_id == "s3" and r.arrival_s == 12.5
    with pytest.raises(InputError, match="sessions"):
        build_workload({"generator": {"arrivals": {"rate": 1}, "sessions": {"num_sessions": 2}},
                        "limit": 5}, seed=0)


# --------------------------------------------------------------------------- speed


def test_50k_requests_under_a_second(tmp_path):
    n = 50_000
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(0.1, n))
    p = tmp_path / "big.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n" + "".join(
        f"{a:.3f},ChatGPT,{x},{y},{x + y},Conversation log\n"
        for a, x, y in zip(t, rng.integers(1, 4000, n), rng.integers(1, 500, n))))
    t0 = time.perf_counter()
    reqs = build_workload({"trace": str(p)}, seed=0)
    dt = time.perf_counter() - t0
    assert len(reqs) == n
    assert dt < 2.0, f"building 50k requests took {dt:.2f} s"  # target < 1 s; slack for a shared CI machine
    t0 = time.perf_counter()
    build_workload({"generator": {"arrivals": {"process": "gamma", "rate": 5, "cv": 2}, "num_requests": n}}, seed=0)
    assert time.perf_counter() - t0 < 2.0
