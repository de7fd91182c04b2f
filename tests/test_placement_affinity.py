"""Inter-layer affinity placement (ExFlow), routing traces, the ILP's time budget."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simllm.errors import InputError
from simllm.placement import build_policy
from simllm.placement.affinity import (AffinityILP, affinity_lift, affinity_routes, conditional,
                                       cross_device_fraction, top_successor_probability, transition_counts)
from simllm.placement.loads import zipf_popularity
from simllm.placement.routing_trace import read_routing_trace, write_routing_trace

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "traces" / "routing" / "generated_mixtral_like_affinity.csv"


def _loads(r, E):
    return np.stack([np.bincount(r[l].ravel(), minlength=E) for l in range(r.shape[0])]).astype(float)


def test_transition_counts_by_hand():
    # 2 tokens, 2 layers, top-2 of 4 experts (rank order)
    r = np.array([[[0, 1], [2, 3]], [[1, 0], [3, 2]]])
    C = transition_counts(r, 4)
    assert C.shape == (1, 4, 4)
    assert C[0, 0, 1] == 1 and C[0, 1, 0] == 1 and C[0, 2, 3] == 1 and C[0, 3, 2] == 1 and C.sum() == 4
    assert np.allclose(conditional(C).sum(axis=-1), 1.0)
    assert top_successor_probability(C) == 1.0


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 16), st.integers(1, 3), st.floats(0, 1), st.integers(0, 100))
def test_generated_routes_are_valid_and_follow(E, K, follow, seed):
    K = min(K, E)
    r = affinity_routes(zipf_popularity(3, E, 1.0, seed=seed), K, 200, follow, seed=seed)
    assert r.shape == (3, 200, K) and r.min() >= 0 and r.max() < E
    s = np.sort(r, axis=2)
    assert not (s[:, :, 1:] == s[:, :, :-1]).any()  # distinct experts per token
    # column sums of the transition counts are the next layer's loads
    C = transition_counts(r, E)
    assert np.allclose(C.sum(axis=1), _loads(r, E)[1:])


def test_measured_affinity_tracks_follow():
    pop = zipf_popularity(4, 32, 1.0, seed=0)
    p0 = top_successor_probability(transition_counts(affinity_routes(pop, 1, 4000, 0.0, seed=0), 32))
    p7 = top_successor_probability(transition_counts(affinity_routes(pop, 1, 4000, 0.75, seed=0), 32))
    assert p7 > 0.75 > p0
    assert (affinity_lift(transition_counts(affinity_routes(pop, 1, 4000, 0.0, seed=0), 32)) < 0.05).all()


def test_affinity_ilp_halves_cross_device_traffic_on_held_out_routes():
    E, G, L = 32, 8, 4
    pop = zipf_popularity(L, E, 1.0, seed=0)
    plan = affinity_routes(pop, 1, 4000, 0.75, seed=0)
    test = affinity_routes(pop, 1, 4000, 0.75, seed=1)
    w = _loads(plan, E)
    gr = build_policy("greedy_replicated").place(w, G, 1, 5)
    af = AffinityILP(time_budget=10).place(w, G, 1, 5, counts=transition_counts(plan, E))
    assert not af.problems()
    Ct = transition_counts(test, E)
    assert cross_device_fraction(af, Ct) <= 0.5 * cross_device_fraction(gr, Ct)
    assert np.nanmean(af.imbalance(w)) <= 1.06 * np.nanmean(gr.imbalance(w)) + 1e-9


def test_no_affinity_gives_the_greedy():
    E, G, L = 16, 4, 4
    r = affinity_routes(zipf_popularity(L, E, 1.0, seed=0), 2, 3000, 0.0, seed=0)
    w = _loads(r, E)
    gr = build_policy("greedy_replicated").place(w, G, 1, 5)
    af = AffinityILP(top_k=2).place(w, G, 1, 5, counts=transition_counts(r, E))
    assert np.array_equal(af.expert, gr.expert) and np.allclose(af.share, gr.share)


def test_cross_device_fraction_one_device_and_contiguous():
    r = affinity_routes(zipf_popularity(3, 8, 1.0, seed=0), 1, 500, 0.5, seed=0)
    C = transition_counts(r, 8)
    one = build_policy("contiguous").place(_loads(r, 8), 1, 1, 8)
    assert cross_device_fraction(one, C) == pytest.approx(0.0)
    # contiguous on 8 devices with no replicas: a copy stays only when its next expert is the same id
    c8 = build_policy("contiguous").place(_loads(r, 8), 8, 1, 1)
    same = sum(C[l].trace() for l in range(C.shape[0])) / C.sum()
    assert cross_device_fraction(c8, C) == pytest.approx(1 - same)


def test_routing_trace_roundtrip_and_sample(tmp_path):
    r = affinity_routes(zipf_popularity(2, 6, 1.0), 2, 10, 0.5)
    for name in ("t.csv", "t.parquet"):
        p = write_routing_trace(r, tmp_path / name)
        assert np.array_equal(read_routing_trace(p, 6), r)
    s = read_routing_trace(SAMPLE, 8)
    assert s.shape == (8, 256, 2)


@pytest.mark.parametrize("body,msg", [
    ("token,layer,rank,expert\n0,0,0,9\n", "expert 9 out of range"),
    ("token,layer,rank\n0,0,0\n", "missing column 'expert'"),
    ("token,layer,rank,expert\n0,0,0,x\n", "non-negative integer"),
    ("token,layer,rank,expert\n0,0,0,1\n0,0,1,1\n", "same expert twice"),
    ("token,layer,rank,expert\n0,0,0,1\n1,0,1,1\n", "rows, expected"),
])
def test_routing_trace_bad_input(tmp_path, body, msg):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(InputError, match=msg):
        read_routing_trace(p, 8)


class _Res:
    def __init__(self, code, output):
        self.exit_code, self.output = code, output


def _cli(args):
    import contextlib
    import io

    from simllm.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), pytest.raises(SystemExit) as e:
        main(args)
    return _Res(e.value.code, buf.getvalue())


def test_cli_bad_routing_trace_exits_2(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("token,layer,rank,expert\n0,0,0,9\n")
    res = _cli(["place", "--experts", "8", "--devices", "8", "--routing-trace", str(p)])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "expert 9 out of range" in res.output, res.output
    for args in (["--affinity", "1.5"], ["--affinity", "-0.1"], ["--time-budget", "-1"]):
        res = _cli(["place", "--experts", "8", "--devices", "8", *args])
        assert res.exit_code == 2, (args, res.output)


def test_cli_affinity_policy_reports_cross_device():
    res = _cli(["place", "--routing-trace", str(SAMPLE), "--experts", "8", "--devices", "8", "--redundant", "2",
                "--policy", "ilp_affinity", "--json"])
    assert res.exit_code == 0, res.output
    assert '"cross_device_fraction"' in res.output and '"top_successor_probability"' in res.output


def test_ilp_one_slot_per_device_is_trivial_and_fast():
    # 8 experts on 32 devices (Mixtral-8x7B EP32): solved exactly by the greedy apportionment
    w = zipf_popularity(32, 8, 1.0, seed=0) * 1e4
    t0 = time.perf_counter()
    p = build_policy({"policy": "ilp", "time_limit": 10}).place(w, 32, 1, 1)
    assert time.perf_counter() - t0 < 10
    assert all(i.status == "optimal_trivial" for i in p.layer_info)
    assert p.summary()["gap_worst"] <= 1e-9


def test_ilp_time_budget_bounds_the_whole_call():
    w = zipf_popularity(6, 64, 1.0, seed=0) * 1e4
    t0 = time.perf_counter()
    p = build_policy({"policy": "ilp", "time_budget": 2.0, "always_solve": True, "time_limit": 30}).place(w, 8, 1, 9)
    assert time.perf_counter() - t0 < 8.0
    assert not p.problems()


# ---------------------------------------------------------------- expert offloading
from simllm.placement.offload import locality_routes, simulate_cache  # noqa: E402


def _sim(r, E, c, **kw):
    base = dict(expert_bytes=1e8, link_bw=5e10, layer_compute_s=1e-4, resident_step_s=0.01)
    return simulate_cache(r, E, c, **{**base, **kw})


def test_cache_holding_every_expert_never_misses_and_smaller_caches_miss_more():
    r = locality_routes(zipf_popularity(4, 16, 1.0, seed=0), 2, 2, 40, 0.5)
    full = _sim(r, 16, 16)
    assert full.hit_rate == 1.0 and full.stall_s_per_step == 0.0 and full.tpot_s == 0.01
    hits = [_sim(r, 16, c).hit_rate for c in (2, 4, 8, 12)]
    assert all(a <= b + 1e-12 for a, b in zip(hits, hits[1:]))
    # a miss stalls expert_bytes / link_bw unless predicted and hidden: perfect prediction stalls less
    lru, pf = _sim(r, 16, 4), _sim(r, 16, 4, policy="prefetch", accuracy=1.0, layer_compute_s=1.0)
    assert pf.hit_rate == lru.hit_rate and pf.stall_s_per_step == 0.0 < lru.stall_s_per_step
    assert lru.stall_s_per_step == pytest.approx(lru.bytes_per_step / 5e10)


def test_locality_one_repeats_the_previous_step():
    r = locality_routes(zipf_popularity(2, 8, 1.0), 2, 3, 5, 1.0)
    assert all(np.array_equal(np.sort(r[t], axis=-1), np.sort(r[0], axis=-1)) for t in range(5))


@pytest.mark.parametrize("args,field", [
    (["--cache-experts", "256", "--accelerator", "h100-sxm"], "--cache-experts"),
    (["--cache-experts", "4", "--accuracy", "1.5"], "--accuracy"),
    (["--cache-experts", "4", "--accuracy", "-0.1"], "--accuracy"),
    (["--cache-experts", "300"], "--cache-experts"),
    (["--cache-experts", "4", "--policy", "fifo"], "--policy"),
    (["--cache-experts", "4", "--cpu-mem-bw", "-5"], "--cpu-mem-bw"),
])
def test_offload_cli_bad_input_exits_2(args, field):
    res = _cli(["offload", "--model", "deepseek-v3", *args])
    assert res.exit_code == 2, res.output
    assert field in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_follow_reproduces_exflows_published_mixtral_placement():
    # ExFlow's repository publishes its Mixtral-8x7B placement on 4 GPUs: 5.83 cross-GPU hops per token per
    # forward. The generator strength the benchmarks use (follow 0.75) gives the same with this ILP, within 5%;
    # without affinity the EPLB greedy makes about three times as many.
    from simllm.placement.affinity import exflow_mixtral_hops

    r = exflow_mixtral_hops(0.75)
    assert abs(r["hops_per_forward"] - r["published_hops_per_forward"]) / r["published_hops_per_forward"] < 0.05
    assert r["greedy_hops_per_forward"] > 2.5 * r["hops_per_forward"]
