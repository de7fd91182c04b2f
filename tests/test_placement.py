"""Expert placement: registry, policy validity (hypothesis), ILP bound/fallbacks, replan, CLI."""

from __future__ import annotations

import json

import numpy as np
import pulp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simllm.errors import InputError
from simllm.placement import (
    Placement,
    PlacementPolicy,
    build_policy,
    migration_seconds,
    moe_device_loads,
    policy_names,
    replan,
)
from simllm.placement.loads import expected_loads, zipf_popularity
from tests.helpers.cli import run_cli

HEURISTICS = ["contiguous", "round_robin", "greedy_replicated", "greedy_hierarchical"]


def test_registry_names_and_errors():
    assert set(HEURISTICS + ["ilp"]) <= set(policy_names())
    for n in policy_names():
        assert isinstance(build_policy(n), PlacementPolicy)
    with pytest.raises(InputError, match="unknown placement policy 'nope'; known: contiguous"):
        build_policy("nope")
    with pytest.raises(InputError, match="unknown field 'bogus'.*known: .*time_limit"):
        build_policy({"policy": "ilp", "bogus": 1})
    with pytest.raises(InputError, match="solver must be one of"):
        build_policy({"policy": "ilp", "solver": "gurobi"})


@st.composite
def instances(draw, max_experts=24, max_devices=6):
    nodes = draw(st.integers(1, 3))
    devices = nodes * draw(st.integers(1, max(1, max_devices // nodes)))
    experts = draw(st.integers(1, max_experts))
    slots = -(-experts // devices) + draw(st.integers(0, 2))
    layers = draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["zipf", "random", "zeros_some"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    if kind == "zipf":
        w = expected_loads(zipf_popularity(layers, experts, draw(st.floats(0, 2)), seed=rng), 1000, 1)
    else:
        w = rng.exponential(1.0, size=(layers, experts)) * 100
        if kind == "zeros_some":
            w[rng.random(w.shape) < 0.5] = 0
    return w, devices, nodes, slots


def _assert_valid(p: Placement, w, devices, slots):
    assert p.problems() == []
    L, E = np.asarray(w).shape
    assert p.expert.shape == (L, devices, slots)
    cnt = p.replica_counts()
    assert (cnt >= 1).all()  # every expert placed
    assert ((p.expert >= 0).sum(axis=2) <= slots).all()  # slots respected
    # token split sums to the load
    assert np.allclose(p.device_loads().sum(axis=1), np.asarray(w).sum(axis=1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.sampled_from(HEURISTICS))
def test_heuristic_placements_are_valid(inst, name):
    w, devices, nodes, slots = inst
    p = build_policy(name).place(w, devices, nodes, slots)
    _assert_valid(p, w, devices, slots)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(max_experts=10, max_devices=4), st.sampled_from(["full", "hot"]))
def test_ilp_placements_are_valid_and_not_worse_than_greedy(inst, scope):
    w, devices, nodes, slots = inst
    p = build_policy({"policy": "ilp", "time_limit": 1, "scope": scope, "always_solve": True}).place(
        w, devices, nodes, slots)
    _assert_valid(p, w, devices, slots)
    g = build_policy("greedy_replicated").place(w, devices, nodes, slots)
    a, b = p.imbalance(), g.imbalance()
    ok = ~np.isnan(b)
    assert (a[ok] <= b[ok] + 1e-6).all()
    for i in p.layer_info:
        if i.bound is not None and i.objective:
            assert i.objective >= i.bound - 1e-6


def _lp_relaxation(wn, devices, slots, budget):
    """The full model's LP relaxation (x continuous) solved with CBC."""
    E = len(wn)
    prob = pulp.LpProblem("relax", pulp.LpMinimize)
    T = pulp.LpVariable("T")
    x = {(e, g): pulp.LpVariable(f"x{e}_{g}", 0, 1) for e in range(E) for g in range(devices)}
    s = {(e, g): pulp.LpVariable(f"s{e}_{g}", 0, 1) for e in range(E) for g in range(devices)}
    prob += T
    for e in range(E):
        prob += pulp.lpSum(s[e, g] for g in range(devices)) == 1
        for g in range(devices):
            prob += s[e, g] <= x[e, g]
    for g in range(devices):
        prob += pulp.lpSum(x[e, g] for e in range(E)) <= slots
        prob += pulp.lpSum(wn[e] * s[e, g] for e in range(E)) <= T
    prob += pulp.lpSum(x.values()) <= budget
    prob.solve(pulp.PULP_CBC_CMD(msg=False))
    return pulp.value(T)


def test_reported_bound_is_the_lp_relaxation():
    w = expected_loads(zipf_popularity(1, 12, 1.2, seed=4), 1000, 1)[0]
    devices, slots = 4, 4
    wn = w / w.sum() * devices  # the ILP's units: mean device load 1
    assert _lp_relaxation(wn, devices, slots, 14) == pytest.approx(1.0, abs=1e-6)
    p = build_policy({"policy": "ilp", "scope": "full", "time_limit": 2}).place(w, devices, 1, slots)
    assert p.layer_info[0].bound == 1.0
    assert p.summary()["bound_kind"] == "lp_relaxation"


def test_ilp_mip_improves_a_small_case():
    # 5 experts, 2 devices, 3 slots each: the greedy splits evenly (max/mean 1.088), the MIP levels the devices
    w = np.array([[17.0, 8, 9, 29, 62]])
    g = build_policy("greedy_replicated").place(w, 2, 1, 3)
    p = build_policy({"policy": "ilp", "scope": "full", "forest_start": False, "time_limit": 5,
                      "always_solve": True}).place(w, 2, 1, 3)
    assert p.imbalance()[0] == pytest.approx(1.0, abs=1e-6)
    assert g.imbalance()[0] > 1.0 + 1e-3
    assert p.layer_info[0].status == "optimal"


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_ilp_solvers_agree(solver):
    from simllm.placement.ilp import highs_available

    if solver == "highs" and not highs_available():
        pytest.skip("highspy not installed")
    w = expected_loads(zipf_popularity(2, 12, 1.0, seed=1), 1000, 2)
    p = build_policy({"policy": "ilp", "solver": solver, "scope": "full", "time_limit": 3,
                      "always_solve": True}).place(w, 4, 2, 4)
    assert p.problems() == []
    assert p.imbalance().max() < 1.01


def test_ilp_falls_back_when_experts_do_not_fit():
    w = np.arange(1, 17, dtype=float)
    p = build_policy({"policy": "ilp"}).place(w, 4, 1, 3)  # 16 experts, 12 slots
    assert p.problems() == []
    assert any("ILP infeasible" in m and "fell back to greedy_replicated" in m for m in p.messages)
    g = build_policy("greedy_replicated").place(w, 4, 1, 3)
    assert np.array_equal(p.expert, g.expert) and p.slots_per_device == 4
    assert p.layer_info[0].status == "infeasible"


def test_ilp_zero_time_limit_keeps_greedy_with_message():
    w = expected_loads(zipf_popularity(2, 16, 1.0, seed=2), 1000, 2)
    p = build_policy({"policy": "ilp", "time_limit": 0}).place(w, 4, 1, 5)
    g = build_policy("greedy_replicated").place(w, 4, 1, 5)
    assert p.problems() == []
    assert all(i.status == "no_solution" for i in p.layer_info)
    assert any("time limit 0" in m and "kept the greedy" in m for m in p.messages)
    assert (p.imbalance() <= g.imbalance() + 1e-9).all()


def test_ilp_redundant_budget_respected():
    w = expected_loads(zipf_popularity(2, 12, 1.0, seed=6), 1000, 2)
    for scope in ("full", "hot"):
        p = build_policy({"policy": "ilp", "redundant": 2, "scope": scope, "time_limit": 2,
                          "always_solve": True}).place(w, 4, 1, 5)
        assert p.problems() == [] and (p.replica_counts().sum(axis=1) <= 14).all()


def test_ilp_parallel_jobs_same_result():
    w = expected_loads(zipf_popularity(4, 32, 1.0, seed=5), 4096, 8)
    a = build_policy({"policy": "ilp", "jobs": 1, "time_limit": 2}).place(w, 8, 2, 5)
    b = build_policy({"policy": "ilp", "jobs": 2, "time_limit": 2}).place(w, 8, 2, 5)
    assert np.array_equal(a.expert, b.expert) and np.allclose(a.share, b.share)


def test_deepseek_shape_ilp_within_1pct_and_not_worse_than_greedy():
    # a few layers of the benchmark case (the full 58-layer run is benchmarks/placement.py)
    w = expected_loads(zipf_popularity(4, 256, 1.0, seed=0), 4096, 8)
    g = build_policy("greedy_replicated").place(w, 32, 4, 9)
    p = build_policy({"policy": "ilp", "time_limit": 5}).place(w, 32, 4, 9)
    assert p.problems() == []
    assert (p.imbalance() <= g.imbalance() + 1e-9).all()
    s = p.summary()
    assert s["gap_worst"] <= 0.01 and s["max_mean_worst"] <= 1.01


def test_ilp_cross_node_term_keeps_groups_together():
    w = expected_loads(zipf_popularity(1, 8, 1.0, seed=3), 1000, 2)
    plain = build_policy({"policy": "ilp", "scope": "full", "time_limit": 3, "always_solve": True}).place(w, 4, 2, 3)
    p = build_policy({"policy": "ilp", "scope": "full", "time_limit": 3, "cross_node_weight": 1.0,
                      "num_groups": 2}).place(w, 4, 2, 3)
    assert p.problems() == [] and p.layer_info[0].status in ("optimal", "time_limit")

    def spread(q):  # nodes reached per group, summed
        pres = q.presence()[0]  # [E, G]
        return sum(len({g // 2 for e in range(k * 4, k * 4 + 4) for g in np.nonzero(pres[e])[0]}) for k in range(2))

    assert spread(p) <= spread(plain)


def test_hierarchical_greedy_keeps_groups_on_nodes():
    w = expected_loads(zipf_popularity(1, 32, 1.0, seed=0), 1000, 2)
    p = build_policy({"policy": "greedy_hierarchical", "num_groups": 4}).place(w, 8, 2, 5)
    nodes_of_group = {}
    for g in range(8):
        for e in p.expert[0, g]:
            if e >= 0:
                nodes_of_group.setdefault(e // 8, set()).add(g // 4)
    assert all(len(v) == 1 for v in nodes_of_group.values())


def test_moe_device_loads_and_replicas():
    w = np.array([[8.0, 4, 2, 2]])
    p = build_policy("greedy_replicated").place(w, 2, 1, 3)
    counts = np.array([10.0, 0, 0, 0])
    d = moe_device_loads(p, counts)
    assert d.shape == (1, 2) and d.sum() == pytest.approx(10.0)
    reps = p.replicas(0, 0)
    assert sum(s for _, s in reps) == pytest.approx(1.0)
    with pytest.raises(InputError, match="counts"):
        moe_device_loads(p, np.ones(5))


def test_replan_moved_bytes():
    w1 = expected_loads(zipf_popularity(2, 16, 1.0, seed=1), 1000, 2)
    w2 = expected_loads(zipf_popularity(2, 16, 1.0, seed=2), 1000, 2)
    pol = build_policy("greedy_replicated")
    p1 = pol.place(w1, 4, 2, 5)
    same, moved0 = replan(p1, w1, pol, expert_bytes=1e6)
    assert moved0 == 0.0
    new, moved = replan(p1, w2, "greedy_replicated", expert_bytes=1e6)
    assert moved > 0 and moved % 1e6 == 0 and new.problems() == []
    assert migration_seconds(moved, 50e9) == pytest.approx(moved / 50e9)
    # a migration-aware ILP moves no more replicas than the greedy re-plan
    ilp, moved_ilp = replan(p1, w2, {"policy": "ilp", "migration_weight": 5.0, "time_limit": 2}, expert_bytes=1e6)
    assert ilp.problems() == [] and moved_ilp <= moved


def test_write_json_and_csv(tmp_path):
    w = expected_loads(zipf_popularity(2, 8, 1.0, seed=1), 100, 2)
    p = build_policy("greedy_replicated").place(w, 4, 1, 3)
    jp, cp = p.write(tmp_path)
    d = json.loads(jp.read_text())
    assert d["summary"]["policy"] == "greedy_replicated" and len(d["layers"]) == 2
    import pandas as pd

    df = pd.read_csv(cp)
    assert list(df.columns) == ["layer", "device", "node", "slot", "expert", "share", "tokens"]
    assert np.allclose(df.groupby(["layer", "expert"])["share"].sum(), 1.0)


def test_cli_compare_json(capsys, tmp_path):
    code, out, err = run_cli(["place", "--experts", "16", "--layers", "2", "--devices", "4", "--nodes", "2",
                           "--redundant", "4", "--alpha", "1.0", "--compare", "--json", "--out", str(tmp_path),
                           "--time-limit", "2"], capsys)
    assert code == 0, err
    d = json.loads(out)
    names = [p["policy"] for p in d["policies"]]
    assert set(HEURISTICS + ["ilp"]) <= set(names)
    assert d["ilp_vs_greedy"]["ilp_le_greedy_every_layer"]
    assert (tmp_path / "placement_ilp.csv").is_file() and (tmp_path / "summary.json").is_file()


def test_cli_table_and_model(capsys):
    code, out, err = run_cli(["place", "--model", "deepseek-v3", "--layers", "2", "--devices", "32", "--nodes", "4",
                           "--redundant", "32", "--policy", "greedy_replicated"], capsys)
    assert code == 0, err
    assert "256 experts" in out and "greedy_replicated" in out.replace("\n", "")


@pytest.mark.parametrize("argv,match", [
    (["place", "--devices", "4"], "--experts: give --model or --experts"),
    (["place", "--experts", "8", "--devices", "3", "--nodes", "2"], "do not split"),
    (["place", "--experts", "8", "--devices", "4", "--policy", "nope"], "unknown placement policy"),
    (["place", "--experts", "8", "--devices", "4", "--set", "bogus=1"], "unknown field 'bogus'"),
    (["place", "--experts", "8", "--devices", "4", "--loads", "/nonexistent.csv"], "file not found"),
])
def test_cli_bad_input_exit_2_one_line(capsys, argv, match):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and match in err and err.count("\n") == 1
