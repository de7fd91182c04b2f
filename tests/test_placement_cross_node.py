"""The affinity ILP's cross-node term: copies that cannot stay on their device fill their node's
replicas first, the assignment bound stays a valid bound of the new objective (checked against an
exhaustive search on tiny instances), one node (or cost 1) gives the plan without the term, and a
costly inter-node link moves traffic off it."""

from __future__ import annotations

import itertools

import highspy
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from simllm.hardware import load_cluster, load_link, load_node
from simllm.placement import build_policy
from simllm.placement.affinity import (AffinityILP, _assignment_bound, _by_node, _pair_heuristic, _presence_shares,
                                       _solve_pair, affinity_routes, cross_device_fraction, cross_node_fraction,
                                       device_flow, inter_node_cost, layer_traffic, node_of, pair_value,
                                       transition_counts)
from simllm.placement.loads import zipf_popularity

from test_placement_affinity import _cli


def _loads(r, E):
    return np.stack([np.bincount(r[l].ravel(), minlength=E) for l in range(r.shape[0])]).astype(float)


def test_inter_node_cost_from_the_link_descriptors():
    c, how = inter_node_cost(load_cluster("h100-4node"))
    up, out = load_link("nvlink4"), load_link("ib-ndr")  # dgx-h100: one NVLink-4 port set, one NDR NIC per GPU
    assert c == pytest.approx(up.bw * up.efficiency.value / (out.bw * out.efficiency.value))
    assert 8 < c < 9 and "nvlink4" in how  # 380 / 43 GB/s achievable
    assert inter_node_cost(load_cluster("h800-ep"))[0] == pytest.approx(156 / 43, rel=0.01)
    single = [n for n in ("tpu-v5e-pod-slice", "cloudmatrix384") if load_node(n).scale_out_link is None]
    for n in single:
        assert inter_node_cost(load_node(n))[0] == 1.0
    with pytest.raises(ValueError):
        AffinityILP(inter_node_cost=0.5)


def test_layer_traffic_fills_the_node_first():
    E, G, L = 16, 8, 3
    r = affinity_routes(zipf_popularity(L, E, 1.0, seed=0), 2, 2000, 0.6, seed=0)
    C = transition_counts(r, E)
    p = build_policy("greedy_replicated").place(_loads(r, E), G, 2, 3)
    nd = node_of(G, 2)
    for l in range(L - 1):
        F, M = layer_traffic(p, C, l), device_flow(p, C, l)
        _, sh = _presence_shares(p.expert[l + 1], p.share[l + 1], E)
        cap = M.sum(axis=0)[:, None] * sh
        assert F.min() >= -1e-9
        assert np.allclose(F.sum(axis=1), M.sum(axis=1))  # every copy sent once
        assert np.allclose(F.sum(axis=0), cap.sum(axis=0))  # every replica serves its share
        inside = sum(F[np.ix_(nd == k, nd == k)].sum() for k in range(2))
        assert inside == pytest.approx(np.minimum(_by_node(M.T, nd), _by_node(cap, nd)).sum())


def _exact(M, w, S, budget, cap, nd, lam):
    """Best objective over every replica graph (slots, budget), each with its best shares (an LP).
    A replica more never lowers the best-shares value (its share may be 0), so only graphs with
    ``min(budget, G S)`` replicas are tried."""
    G, E = M.shape
    Mn = _by_node(M.T, nd)
    N = Mn.shape[1]
    best = -np.inf
    per_dev = [c for k in range(S + 1) for c in itertools.combinations(range(E), k)]
    for cols in itertools.product(per_dev, repeat=G):
        X = np.zeros((E, G), dtype=bool)
        for g, c in enumerate(cols):
            X[list(c), g] = True
        if X.sum() != min(budget, G * S) or not X.any(axis=1).all():
            continue
        pairs = np.argwhere(X)
        n = len(pairs)
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)  # HiGHS's scheduler is global: the library's models ask for one thread
        # columns: s (n), a (n) kept on device, b (E * N) kept in node
        ub = np.concatenate([np.ones(n), M[pairs[:, 1], pairs[:, 0]], Mn.ravel()])
        h.addVars(2 * n + E * N, np.zeros(2 * n + E * N), ub)
        h.changeColsCost(2 * n + E * N, np.arange(2 * n + E * N, dtype=np.int32),
                         np.concatenate([np.zeros(n), np.ones(n), np.full(E * N, lam)]))
        h.changeObjectiveSense(highspy.ObjSense.kMaximize)
        inf = highspy.kHighsInf
        for j in range(E):
            k = np.nonzero(pairs[:, 0] == j)[0]
            h.addRow(1.0, 1.0, len(k), k.astype(np.int32), np.ones(len(k)))
            for q in range(N):
                kk = k[nd[pairs[k, 1]] == q]
                h.addRow(-inf, 0.0, len(kk) + 1, np.concatenate([[2 * n + j * N + q], kk]).astype(np.int32),
                         np.concatenate([[1.0], -w[j] * np.ones(len(kk))]))
        for i, (j, g) in enumerate(pairs):
            h.addRow(-inf, 0.0, 2, np.array([n + i, i], dtype=np.int32), np.array([1.0, -w[j]]))
        for g in range(G):
            k = np.nonzero(pairs[:, 1] == g)[0]
            if len(k):
                h.addRow(-inf, cap, len(k), k.astype(np.int32), w[pairs[k, 0]].astype(float))
        h.run()
        if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
            best = max(best, h.getInfo().objective_function_value)
    return best


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.0, 1.5, 7.8]))
def test_assignment_bound_is_valid_for_the_cross_node_objective(seed, lam):
    """Exhaustive search on 3 experts x 4 devices in 2 nodes (2 slots each): the bound (LP, and the
    MIP's dual bound) is never below the best plan, the pair MIP over every pair reaches the best
    plan, and the heuristic stays below it."""
    rng = np.random.default_rng(seed)
    G, E, S = 4, 3, 2
    nd = node_of(G, 2)
    M = rng.random((G, E)) * (rng.random((G, E)) < 0.7) + 1e-3
    M *= G / M.sum()
    w = M.sum(axis=0)
    budget = int(rng.integers(E, G * S + 1))
    cap = max(1.05, float(w.max()) * float(rng.uniform(0.55, 1.05)))
    need = np.maximum(1.0, np.ceil(w / cap - 1e-9))
    if need.sum() > budget:
        need = None
    opt = _exact(M, w, S, budget, cap, nd, lam)
    assume(np.isfinite(opt))  # some loads do not fit cap with this budget
    lp, _ = _assignment_bound(M, S, budget, need, nd, lam)
    mipb, _ = _assignment_bound(M, S, budget, need, nd, lam, time_limit=5.0)
    assert opt <= mipb + 1e-6 and mipb <= lp + 1e-6
    # the pair MIP's linearisation is exact: over every (expert, device) pair it finds the optimum
    X0 = np.zeros((E, G), dtype=bool)
    X0[np.arange(E), np.argmax(M, axis=0)] = True  # a start that may break cap: the MIP repairs it
    X, sh, st_ = _solve_pair(M, w, X0, X0 / X0.sum(axis=1, keepdims=True), S, budget, cap, G, 0.0, 5.0,
                             nd=nd, lam=lam)
    assert st_ == "optimal"
    assert pair_value(M, w, X, sh, nd, lam) == pytest.approx(opt, rel=1e-6, abs=1e-6)
    cnt = np.minimum(need if need is not None else np.ones(E), G).astype(int)
    Xh, shh = _pair_heuristic(M, w, cnt, S, cap, cap, X0, X0 / X0.sum(axis=1, keepdims=True), nd, lam)
    if (w[:, None] * shh).sum(axis=0).max() <= cap * (1 + 1e-9):
        assert pair_value(M, w, Xh, shh, nd, lam) <= opt + 1e-6


def _case(E=16, G=16, S=2, L=4, seed=0):
    pop = zipf_popularity(L, E, 1.0, seed=0)
    plan = affinity_routes(pop, 1, 4000, 0.75, seed=seed)
    return _loads(plan, E), transition_counts(plan, E)


def test_one_node_or_unit_cost_drops_the_term():
    w, C = _case(E=32, G=8)
    base = AffinityILP(time_budget=1e6).place(w, 8, 1, 5, counts=C)
    costly = AffinityILP(time_budget=1e6, inter_node_cost=8.8).place(w, 8, 1, 5, counts=C)
    assert np.array_equal(base.expert, costly.expert) and np.allclose(base.share, costly.share)
    assert costly.inter_node_cost == 1.0 and cross_node_fraction(costly, C) == 0.0
    w, C = _case()
    a = AffinityILP(time_budget=1e6).place(w, 16, 2, 2, counts=C)
    b = AffinityILP(time_budget=1e6, inter_node_cost=1.0).place(w, 16, 2, 2, counts=C)
    assert np.array_equal(a.expert, b.expert) and np.allclose(a.share, b.share)


def test_costly_inter_node_link_moves_traffic_inside_the_nodes():
    w, C = _case()
    gr = build_policy("greedy_replicated").place(w, 16, 2, 2)
    dev = AffinityILP(time_budget=1e6).place(w, 16, 2, 2, counts=C)
    node = AffinityILP(time_budget=1e6, inter_node_cost=8.8).place(w, 16, 2, 2, counts=C)
    cd = {k: cross_device_fraction(p, C) for k, p in (("gr", gr), ("dev", dev), ("node", node))}
    cn = {k: cross_node_fraction(p, C) for k, p in (("gr", gr), ("dev", dev), ("node", node))}
    assert cn["node"] < 0.7 * cn["dev"] < cn["gr"]  # the term cuts cross-node copies further
    assert cd["node"] < 0.6 * cd["gr"]  # still far fewer cross-device copies than the greedy
    cost = {k: cd[k] + 7.8 * cn[k] for k in cd}  # the traffic the costly plan minimises
    assert cost["node"] < cost["dev"] < cost["gr"]
    assert 0 <= node.affinity_gap <= node.affinity_cost_gap
    assert not node.problems()


def test_cli_prints_cross_node_and_the_cost_used():
    res = _cli(["place", "--experts", "16", "--layers", "3", "--top-k", "1", "--cluster", "h100-4node",
                "--devices", "16", "--nodes", "2", "--redundant", "16", "--affinity", "0.75", "--policy",
                "ilp_affinity", "--time-budget", "20"])
    assert res.exit_code == 0, res.output
    assert "cross-node" in res.output and "inter-node cost 8.83" in res.output and "nvlink4" in res.output
    res = _cli(["place", "--experts", "16", "--layers", "3", "--top-k", "1", "--cluster", "h100-4node",
                "--devices", "16", "--nodes", "2", "--affinity", "0.75", "--policy", "ilp_affinity",
                "--set", "inter_node_cost=0.5"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
