"""Placement that pays: what the placement sends (context-coherent EP), the assignment bound of the
affinity ILP, incremental re-placement under drift."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simllm.cost.moe_ep import EPStepCost, coherent_comm
from simllm.errors import InputError
from simllm.hardware import load_accelerator, load_cluster
from simllm.model import load_model
from simllm.placement import build_policy
from simllm.placement.affinity import (AffinityILP, _assignment_bound, _flow_bound, affinity_routes,
                                       cross_device_fraction, cross_node_fraction, device_traffic,
                                       transition_counts)
from simllm.placement.loads import zipf_popularity
from simllm.placement.migration import incremental_plan, replan_that_pays
from simllm.topology import build_topology


def _loads(r, E):
    return np.stack([np.bincount(r[l].ravel(), minlength=E) for l in range(r.shape[0])]).astype(float)


@pytest.fixture(scope="module")
def topo():
    return build_topology(load_cluster("h100-4node"))


def test_coherent_comm_prices_the_path(topo):
    G = 16
    stay = np.eye(G) / G
    assert coherent_comm(topo, stay, 4096, 1) == (0.0, 0.0)  # nothing leaves a device
    inside = np.zeros((G, G))
    across = np.zeros((G, G))
    for g in range(G):  # every copy to the next device in its node / to the same rail of the other node
        inside[g, (g // 8) * 8 + (g + 1) % 8] = 1.0 / G
        across[g, (g + 8) % G] = 1.0 / G
    a_in, b_in = coherent_comm(topo, inside, 4096, 1)
    a_out, b_out = coherent_comm(topo, across, 4096, 1)
    assert 0 < b_in < b_out  # NVLink carries a token faster than the NIC
    half = 0.5 * across + 0.5 * stay
    assert coherent_comm(topo, half, 4096, 1)[1] == pytest.approx(0.5 * b_out, rel=1e-6)


def test_device_traffic_conserves_copies_and_matches_fractions():
    E, G, L = 16, 8, 3
    r = affinity_routes(zipf_popularity(L, E, 1.0, seed=0), 2, 2000, 0.6, seed=0)
    C = transition_counts(r, E)
    p = build_policy("greedy_replicated").place(_loads(r, E), G, 2, 3)
    F = device_traffic(p, C)
    assert F.shape == (G, G) and F.min() >= 0 and F.sum() == pytest.approx(1.0)
    assert cross_device_fraction(p, C) == pytest.approx(1.0 - np.trace(F))
    assert 0 <= cross_node_fraction(p, C) <= cross_device_fraction(p, C) + 1e-12


def test_affinity_ilp_lowers_tpot_against_greedy_under_one_all_to_all(topo):
    """The same scheme (context-coherent EP, one all-to-all) for both placements, each priced on the
    copies it sends: the ILP's lower step time comes from the placement alone."""
    E, G, L = 16, 16, 4
    base = load_model("mixtral-8x7b")
    model = base.model_copy(update={"moe": base.moe.model_copy(update={"num_experts": E, "top_k": 1})})
    pop = zipf_popularity(L, E, 1.0, seed=0)
    plan, test = affinity_routes(pop, 1, 4000, 0.75, seed=0), affinity_routes(pop, 1, 4000, 0.75, seed=1)
    w, Ct = _loads(plan, E), transition_counts(test, E)
    gr = build_policy("greedy_replicated").place(w, G, 2, 2)
    af = AffinityILP(time_budget=5.0).place(w, G, 2, 2, counts=transition_counts(plan, E))
    acc = load_accelerator("h100-sxm")
    kw = dict(popularity=_loads(test, E), topology=topo, samples=2, sample_layers=2, grid_points=16)
    t = {}
    for name, p in (("greedy", gr), ("ilp", af)):
        c = EPStepCost(model, acc, ep=G, placement=p, traffic=device_traffic(p, Ct), **kw)
        t[name] = c.step_time(0, 0.0, 0, 4096, 4096.0 * 1024)
        assert c.comm_time(256) > 0
    assert cross_device_fraction(af, Ct) < 0.5 * cross_device_fraction(gr, Ct)
    assert t["ilp"] < t["greedy"]
    with pytest.raises(InputError):
        EPStepCost(model, acc, ep=G, placement=gr, traffic=np.ones((3, 3)), **kw)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_assignment_bound_bounds_every_feasible_plan(seed):
    rng = np.random.default_rng(seed)
    G, E, S = 4, 10, 3
    M = rng.random((G, E)) * (rng.random((G, E)) < 0.5)
    bnd, X = _assignment_bound(M, S, G * S)
    assert bnd <= _flow_bound(M, S) + 1e-9  # tighter than the per-device top-S bound
    assert (X.sum(axis=1) >= 1).all() and (X.sum(axis=0) <= S).all()
    assert bnd == pytest.approx(float((M.T * X).sum()))
    for _ in range(20):  # random feasible plans keep no more
        Y = np.zeros((E, G), dtype=bool)
        Y[np.arange(E), rng.permutation(np.arange(E) % G)] = True
        assert float((M.T * Y).sum()) <= bnd + 1e-9


def test_incremental_plan_moves_few_replicas_and_balances():
    E, G, S = 32, 8, 5
    w0 = zipf_popularity(1, E, 1.0, seed=0)[0] * G
    prev = build_policy("greedy_replicated").place(w0[None], G, 1, S).presence()[0]
    w1 = w0 * np.exp(0.4 * np.random.default_rng(1).standard_normal(E))
    w1 *= G / w1.sum()
    plans = incremental_plan(prev, w1, S, G * S)
    load = lambda X: (X * (w1 / X.sum(axis=1))[:, None]).sum(axis=0).max()  # noqa: E731
    for X in plans:
        assert (X.sum(axis=1) >= 1).all() and (X.sum(axis=0) <= S).all()
    assert load(plans[-1]) < load(prev)
    moved = [(X & ~prev).sum() for X in plans]
    assert moved[0] <= 6 and all(b <= a + 2 for a, b in zip(moved, moved[1:]))


def test_replan_that_pays_keeps_when_moving_costs_more_than_it_gains():
    E, G, S, L = 32, 8, 5, 3
    w0 = zipf_popularity(L, E, 1.0, seed=0) * 1e4
    prev = build_policy("greedy_replicated").place(w0, G, 1, S)
    w1 = w0 * np.exp(0.4 * np.random.default_rng(2).standard_normal(w0.shape))
    kw = dict(expert_bytes=4.4e7, bandwidth=5e10, routed_fraction=0.5)
    free, f = replan_that_pays(prev, w1, "greedy_replicated", horizon_s=1e9, **kw)
    none, f0 = replan_that_pays(prev, w1, "greedy_replicated", horizon_s=1e-9, **kw)
    assert f0["layers_moved"] == 0 and np.array_equal(none.presence(), prev.presence())
    assert f["layers_moved"] >= 1 and not free.problems()
    assert np.nanmean(free.imbalance(w1)) < np.nanmean(none.imbalance(w1))


# ---------------------------------------------------------------- offloading extras
from simllm.placement.offload import locality_routes, segment_locality, simulate_cache  # noqa: E402


def test_segment_locality_srp_sch():
    pop = zipf_popularity(2, 16, 1.0, seed=0)
    still = locality_routes(pop, 2, 3, 32, 1.0)  # every step repeats the first: one set per sequence
    assert segment_locality(still, 16, 8, 2) == pytest.approx(1.0)
    loose = locality_routes(pop, 2, 3, 32, 0.0, seed=1)
    srp = [segment_locality(loose, 16, 8, c) for c in (2, 4, 8, 16)]
    assert srp[0] < 1.0 and all(a <= b for a, b in zip(srp, srp[1:])) and srp[-1] == pytest.approx(1.0)
    assert segment_locality(locality_routes(pop, 2, 3, 32, 0.8, seed=1), 16, 8, 2) > srp[0]
    with pytest.raises(InputError):
        segment_locality(loose, 16, 64, 2)


def test_cpu_for_a_miss_when_it_beats_the_copy():
    r = locality_routes(zipf_popularity(4, 16, 1.0, seed=0), 2, 2, 40, 0.5)
    base = dict(expert_bytes=1e8, link_bw=5e10, layer_compute_s=1e-4, resident_step_s=0.01)
    copy = simulate_cache(r, 16, 4, **base)
    cpu = simulate_cache(r, 16, 4, cpu_bw=2e11, **base)  # host memory 4x the link: the CPU wins
    slow = simulate_cache(r, 16, 4, cpu_bw=1e10, **base)  # slower than the link: always copy
    assert cpu.stall_s_per_step < copy.stall_s_per_step and cpu.bytes_per_step < copy.bytes_per_step
    assert slow.stall_s_per_step == copy.stall_s_per_step and slow.bytes_per_step == copy.bytes_per_step
    with pytest.raises(InputError):
        simulate_cache(r, 16, 4, cpu_bw=-1.0, **base)


def test_sch_pooled_over_a_batch_needs_a_bigger_cache():
    r = locality_routes(zipf_popularity(2, 32, 1.0, seed=0), 2, 8, 32, 0.5, seed=3)
    per_seq = segment_locality(r, 32, 8, 4)
    pooled = segment_locality(r, 32, 8, 4, pool_batch=True)
    assert pooled < per_seq
    assert segment_locality(r[:, :, :1], 32, 8, 4, pool_batch=True) == pytest.approx(segment_locality(r[:, :, :1], 32, 8, 4))
