"""KV-cache tiers below HBM: the LRU hierarchy, loads priced over the tier's link, hits and TTFT in the
simulator, conservation, and bad tier blocks through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simllm.cli import run_cli
from simllm.policies import make_batching, make_router
from simllm.sim import SimConfig, Simulation
from simllm.sim.fakes import AffineCost
from simllm.sim.kv_tiers import KVTiers, TierLevel
from simllm.workload import Request

REPO = Path(__file__).resolve().parent.parent
SCN = REPO / "workloads" / "scenarios" / "mixtral-dgx-h100-kv-tiers.yaml"
LINE = re.compile(r"^error: [^:]+: [^:]+: .+")
KV_TOK = 131072.0  # AffineCost's KV bytes per token per device
UNIT = 512


def _tiers(caps_units, bws=(25e9, 5e9), lat=(1e-5, 1e-4)):
    ub = UNIT * KV_TOK
    return [TierLevel(f"t{i}", c * ub, bws[i], lat[i]) for i, c in enumerate(caps_units)]


def test_lru_cascade_and_exclusive_hierarchy():
    t = KVTiers(_tiers([2, 3]), unit_tokens=UNIT, kv_bytes_per_token_per_device=KV_TOK, devices=1)
    t.demote(["a", "b", "c"])  # a is pushed down to t1
    assert t.where == {"a": 1, "b": 0, "c": 0}
    t.demote(["d", "e", "f", "g"])  # t0 keeps f, g; t1 keeps the 3 most recent of a, b, c, d, e
    assert sorted(k for k, i in t.where.items() if i == 0) == ["f", "g"]
    assert sorted(k for k, i in t.where.items() if i == 1) == ["c", "d", "e"]
    assert t.dropped == 2
    assert t.match(["f", "c", "x", "g"], 0) == 2 and t.match(["x", "f"], 1) == 1
    s = t.promote(["f", "c"])
    ub = UNIT * KV_TOK
    assert s == pytest.approx(1e-5 + ub / 25e9 + 1e-4 + ub / 5e9)
    t.discard("g")
    assert t.where == {"d": 1, "e": 1}
    assert t.demoted == len(t) + t.promoted + t.discarded + t.dropped


def _reqs(units=4, gap=0.3):
    """120 requests: even ones cycle over 8 prefixes ("a"), odd ones over 30 ("b"), 4 units each."""
    out = []
    for i in range(120):
        p = ("a", (i // 2) % 8) if i % 2 == 0 else ("b", (i // 2) % 30)
        out.append(Request(i, gap * i, units * UNIT + 64, 16,
                           prefix_blocks=tuple((p, j) for j in range(units)) + (("own", i),)))
    return out


def _sim(reqs, tiers=(), blocks=600, cost=None):
    cfg = SimConfig(prefix_caching=True, kv_tiers=tuple(tiers))
    sim = Simulation(reqs, cost=cost or AffineCost(), num_blocks=blocks, config=cfg,
                     batching=lambda: make_batching("vllm-v0"), router=make_router("round_robin"))
    return sim, sim.run()


def test_prefixes_larger_than_hbm_hit_lower_tiers_and_lower_ttft():
    # HBM holds 600 blocks = 18 units; an "a" prefix comes back after 16 prefixes (64 units), within
    # HBM + t0 (18 + 100 units); a "b" prefix after 60 (240 units), beyond it, within t1
    reqs = _reqs()
    _s0, base = _sim(reqs)
    sim, res = _sim(reqs, _tiers([100, 400]))
    assert base.prefix_hit_tokens == 0  # HBM alone never keeps a prefix until its next turn
    tiers = res.kv_tiers
    assert tiers["hbm"]["hit_tokens"] == 0
    assert tiers["t0"]["hit_tokens"] == (60 - 8) * 4 * UNIT  # every "a" turn after the first
    assert tiers["t1"]["hit_tokens"] == (60 - 30) * 4 * UNIT  # every "b" turn after the first
    assert np.mean(res.first_token_s - res.arrival_s) < 0.8 * np.mean(base.first_token_s - base.arrival_s)
    t = sim.replicas[0].tiers
    pc = sim.replicas[0].pc
    assert not set(pc.ref) & set(t.where)  # each unit in exactly one tier
    assert t.demoted == len(t) + t.promoted + t.discarded + t.dropped
    assert all(len(lru) <= c for lru, c in zip(t.lru, t.cap))


def test_a_lower_tier_hit_costs_its_load_not_its_prefill():
    """Request 2 repeats request 1's 4-unit prefix after request "x" has pushed it out of HBM: its TTFT is
    the load over the tier's link plus the prefill of the rest, against the whole prefill without tiers."""
    cost = AffineCost()
    pre = tuple(("p", j) for j in range(4))
    reqs = [Request(0, 0.0, 4 * UNIT + 64, 2, prefix_blocks=pre + ("a",)),
            Request(1, 5.0, 4 * UNIT + 64, 2, prefix_blocks=tuple(("x", j) for j in range(4)) + ("b",)),
            Request(2, 10.0, 4 * UNIT + 64, 2, prefix_blocks=pre + ("c",))]
    lv = _tiers([10, 10])
    _s, res = _sim(reqs, lv, blocks=150, cost=cost)  # 150 blocks: one prompt's units (128 blocks) at a time
    _s, base = _sim(reqs, blocks=150, cost=cost)
    L = 4 * UNIT + 64
    full = cost.step_time(L, L * L / 2.0, 1, 0, 0.0)
    rest = cost.step_time(64, 64 * (4 * UNIT + 32), 1, 0, 0.0)
    load = 1e-5 + 4 * UNIT * KV_TOK / 25e9
    assert base.first_token_s[2] - 10.0 == pytest.approx(full)
    assert res.first_token_s[2] - 10.0 == pytest.approx(rest + load)
    assert res.kv_tiers["t0"]["hit_tokens"] == 4 * UNIT


@st.composite
def cases(draw):
    n = draw(st.integers(1, 40))
    P = draw(st.integers(1, 8))
    rows = []
    t = 0.0
    for i in range(n):
        t += draw(st.floats(0, 0.5))
        p = draw(st.integers(0, P - 1))
        units = draw(st.integers(0, 4))
        extra = draw(st.integers(1, 300))
        rows.append(Request(i, t, units * UNIT + extra, draw(st.integers(1, 40)),
                            prefix_blocks=tuple((p, j) for j in range(units)) + (("own", i),)))
    return dict(reqs=rows, blocks=draw(st.integers(70, 400)),
                caps=draw(st.lists(st.integers(0, 12), min_size=1, max_size=2)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_properties_conservation_no_loss_kv_within_capacity(c):
    sim, res = _sim(c["reqs"], _tiers(c["caps"]), blocks=c["blocks"])
    done = np.isfinite(res.completion_s)
    rejected = np.array([bool(r) for r in res.rejected_reason])
    assert np.all(done ^ rejected)
    assert np.array_equal(res.generated_tokens[done], res.output_tokens[done])
    assert max(res.kv_peak_blocks) <= c["blocks"]
    rep = sim.replicas[0]
    t, pc = rep.tiers, rep.pc
    assert not set(pc.ref) & set(t.where)
    assert t.demoted == len(t) + t.promoted + t.discarded + t.dropped
    assert all(len(lru) <= cap for lru, cap in zip(t.lru, t.cap))
    assert sum(len(lru) for lru in t.lru) == len(t.where)


def test_example_scenario_runs_with_tier_hits(tmp_path):
    assert run_cli(["run", str(SCN), "-o", str(tmp_path / "o")]) == 0
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    kt = s["kv_tiers"]
    assert set(kt) >= {"hbm", "host_dram", "ssd"}
    assert kt["host_dram"]["hit_tokens"] + kt["ssd"]["hit_tokens"] > 0
    assert sum(kt[k]["hit_tokens"] for k in ("hbm", "host_dram", "ssd")) == s["prefix_cache"]["hit_tokens"]


BAD = [
    ("tier_larger_than_host", {"tiers": [{"medium": "host_dram", "capacity": "600 GB"}]},
     "deployment.kv.tiers.0.capacity", "exceeds the host"),
    ("two_tiers_larger_than_host", {"tiers": [{"name": "a", "medium": "host_dram", "capacity": "300 GB"},
                                              {"name": "b", "medium": "host_dram", "capacity": "300 GB"}]},
     "deployment.kv.tiers.1.capacity", "exceeds the host"),
    ("ssd_larger_than_disks", {"tiers": [{"medium": "ssd", "capacity": "10 TB", "bandwidth": "7 GB/s"}]},
     "deployment.kv.tiers.0.capacity", "local storage"),
    ("ssd_without_bandwidth", {"tiers": [{"medium": "ssd", "capacity": "1 TB"}]},
     "deployment.kv.tiers.0.bandwidth", "give bandwidth"),
    ("without_prefix_caching", {"prefix_caching": False}, "deployment.kv.tiers", "prefix_caching: true"),
    ("unknown_medium", {"tiers": [{"medium": "tape", "capacity": "1 TB"}]}, "deployment.kv.tiers.0.medium", "'host_dram'"),
    ("bad_capacity", {"tiers": [{"medium": "host_dram", "capacity": "lots"}]}, "deployment.kv.tiers.0.capacity", ""),
    ("same_names", {"tiers": [{"medium": "host_dram", "capacity": "1 GB"}, {"medium": "host_dram",
                                                                            "capacity": "1 GB"}]},
     "deployment.kv.tiers", "names must differ"),
]


@pytest.mark.parametrize("kv,field,msg", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_tier_block_exits_2_with_one_line(tmp_path, capsys, kv, field, msg):
    data = yaml.safe_load(SCN.read_text())
    data["workload"]["limit"] = 5
    data["deployment"]["kv"].update(kv)
    f = tmp_path / "scn.yaml"
    f.write_text(yaml.safe_dump(data))
    rc = run_cli(["run", str(f), "-o", str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1, err
    assert LINE.match(err[0]), err[0]
    assert err[0].startswith(f"error: {f}: {field}: "), err[0]
    assert msg in err[0], err[0]


def test_host_tier_needs_a_node_that_describes_its_host(tmp_path, capsys):
    data = yaml.safe_load(SCN.read_text())
    data["workload"]["limit"] = 5
    data["hardware"] = {"accelerator": "h100-sxm"}
    f = tmp_path / "scn.yaml"
    f.write_text(yaml.safe_dump(data))
    assert run_cli(["run", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {f}: deployment.kv.tiers.0.medium: a host_dram tier needs"), err
