"""Expert-parallel step cost (simllm.cost.moe_ep) and the scenario's deployment.ep block."""

from __future__ import annotations

import time

import numpy as np
import pytest

from simllm.cost import BatchShape
from simllm.cost.moe_ep import EPStepCost, make_ep_step_cost
from simllm.errors import InputError
from simllm.hardware import load_cluster
from simllm.model import load_model
from simllm.scenario import prepare, scenario_from_dict, simulate

SMALL = {"samples": 2, "sample_layers": 2, "layers": 2, "grid_max": 2048, "grid_points": 24}


@pytest.fixture(scope="module")
def env():
    return load_model("deepseek-v3"), load_cluster("h800-ep")


@pytest.fixture(scope="module")
def costs(env):
    m, cl = env
    out = {}
    for pol in ("ilp", "greedy_replicated", "contiguous"):
        out[pol] = make_ep_step_cost(m, cl.accelerator, ep=16, node=cl.node, cluster=cl,
                                     placement={"policy": pol, "redundant": 16}, expert_loads={"alpha": 1.0, "seed": 0},
                                     moe=SMALL, weight_dtype="fp8")
    return out


def test_step_time_vectorised_matches_scalar_and_is_fast(costs):
    c = costs["greedy_replicated"]
    ctx = np.array([0.0, 1e4, 5e5, 2e6])
    v = c.step_time(0, 0.0, 0, 512, ctx)
    s = [c.step_time(0, 0.0, 0, 512, float(x)) for x in ctx]
    assert np.array_equal(v, np.array(s))
    assert np.all(np.diff(v) > 0)  # longer context, longer step
    assert c.step_time(0, 0.0, 0, 0, 0.0) == 0.0
    mixed = c.step_time(2048, 2048 * 1024.0, 2, 300, 3e5)
    assert mixed > c.step_time(0, 0.0, 0, 300, 3e5)
    for T in range(1, 50):  # warm up
        c.step_time(0, 0.0, 0, T, T * 1000.0)
    t0 = time.perf_counter()
    n = 5000
    for i in range(n):
        c.step_time(0, 0.0, 0, 1 + i % 49, 1000.0 * (1 + i % 49))
    assert (time.perf_counter() - t0) / n < 20e-6
    sc = c.step_cost(BatchShape(decode_seqs=512, decode_ctx_tokens=5e5))
    assert sc.total_s == pytest.approx(c.step_time(0, 0.0, 0, 512, 5e5))
    assert sc.comm_s > 0 and sc.flops > 0


def test_placement_orders_routed_expert_time(costs):
    T = 2048
    r = {p: c.routed_time(T) for p, c in costs.items()}
    assert r["contiguous"] > 1.2 * r["greedy_replicated"]
    assert r["ilp"] <= 1.05 * r["greedy_replicated"]
    # dispatch/combine: a skewed placement overloads the hot devices' ports
    assert costs["contiguous"].comm_time(T / 16) > costs["greedy_replicated"].comm_time(T / 16)
    for c in costs.values():  # expectation table is non-decreasing in tokens; beyond it, continuous and at most
        # linear (the busiest device's slots scale with T, its weights are read once: larger GEMM rows pay less)
        assert np.all(np.diff(c._t_exp) >= -1e-12)
        g = int(c.grid[-1])
        assert c.routed_time(g + 1) == pytest.approx(c.routed_time(g), rel=1e-3)
        assert c.routed_time(g) < c.routed_time(2 * g) <= 2 * c.routed_time(g) * (1 + 1e-9)


def test_redundant_experts_take_memory(costs):
    g, c = costs["greedy_replicated"], costs["contiguous"]
    assert g.slots_used == 17 and c.slots_used == 16  # (256 + 16) / 16 slots vs 256 / 16 experts
    assert g.weight_bytes_per_device - c.weight_bytes_per_device == pytest.approx(g.n_moe * g.expert_bytes)
    assert g.kv_bytes_per_token_per_device == pytest.approx(g.ops.kv_per_tok * 61 / 16)


def test_overlap_hides_communication(env, costs):
    m, cl = env
    ov = make_ep_step_cost(m, cl.accelerator, ep=16, node=cl.node, cluster=cl,
                           placement={"policy": "greedy_replicated", "redundant": 16},
                           expert_loads={"alpha": 1.0, "seed": 0}, moe={**SMALL, "overlap": True}, weight_dtype="fp8")
    base = costs["greedy_replicated"]
    gains = []
    for T in (16, 256, 1024, 4096, 16384):
        t0, t1 = base.step_time(0, 0.0, 0, T, 0.0), ov.step_time(0, 0.0, 0, T, 0.0)
        assert t1 <= t0  # two micro-batches only where they pay
        comp, routed, comm = base._moe_parts(T)
        assert t1 > base.n_moe * max(comp[0] + routed, comm)  # never below the larger of compute and comm
        gains.append(t0 - t1)
    assert gains[0] == 0.0 and gains[-1] > 0


def test_expert_loads_from_csv(tmp_path, env):
    m, cl = env
    rows = ["layer,expert,tokens"] + [f"{l},{e},{(e + 1) ** -1.0 * 1000:.3f}" for l in range(3) for e in range(256)]
    (tmp_path / "loads.csv").write_text("\n".join(rows) + "\n")
    c = make_ep_step_cost(m, cl.accelerator, ep=8, node=cl.node, cluster=cl, placement={"policy": "contiguous"},
                          expert_loads={"csv": "loads.csv"}, moe=SMALL, weight_dtype="fp8", base_dir=tmp_path)
    assert isinstance(c, EPStepCost) and c.placement.num_layers == 2
    assert c.placement.imbalance().mean() > 3  # the hottest experts sit together on device 0
    with pytest.raises(InputError, match="csv or alpha"):
        make_ep_step_cost(m, cl.accelerator, ep=8, cluster=cl, expert_loads={"csv": "x.csv", "alpha": 1},
                          moe=SMALL)


def _scn(policy: str, **dep) -> dict:
    d = {"name": "ep-test", "model": "deepseek-v3", "hardware": {"cluster": "h800-ep"},
         "deployment": {"ep": 16, "weight_dtype": "fp8", "placement": {"policy": policy, "redundant": 16},
                        "expert_loads": {"alpha": 1.0, "seed": 0}, "moe": dict(SMALL),
                        # replica-wide limits, divided over the 16 attention ranks (simllm.sim.dp_ranks)
                        "batching": {"policy": "vllm-v0", "max_num_seqs": 1024, "max_num_batched_tokens": 131072},
                        "kv": {"block_size": 64}},
         "workload": {"generator": {"arrivals": {"process": "poisson", "rate": 200},
                                    "lengths": {"kind": "lognormal", "prompt_median": 256, "prompt_sigma": 0.5,
                                                "output_median": 128, "output_sigma": 0.5},
                                    "num_requests": 300}},
         "seed": 0}
    d["deployment"].update(dep)
    return d


def test_scenario_placement_orders_tpot():
    tpot, blocks = {}, {}
    for pol in ("ilp", "greedy_replicated", "contiguous"):
        prep = prepare(scenario_from_dict(_scn(pol)))
        _, _, s = simulate(prep)
        assert s["completed"] == 300 and s["devices"] == 16
        # mean and p90: with DP attention ranks a rank's prefill pauses only its own sequences, so the
        # median request's TPOT is mostly decode steps, where placements differ least (small batches)
        tpot[pol] = (s["tpot_s"]["p90"], s["tpot_s"]["mean"])
        blocks[pol] = prep.num_blocks
    for i in range(2):
        assert tpot["ilp"][i] <= tpot["greedy_replicated"][i] * 1.01
        assert tpot["greedy_replicated"][i] < tpot["contiguous"][i] * 0.97
    assert blocks["greedy_replicated"] < blocks["contiguous"]  # redundant replicas shrink the KV cache


@pytest.mark.parametrize("dep,match", [
    ({"pp": 2}, "pp = 1"),
    ({"ep": 1}, "expert parallelism"),
    ({"moe": {"bogus": 1}}, "bogus"),
    ({"placement": {"policy": "nope"}}, "nope"),
    ({"ep": 128}, "exceed|ep 128"),
])
def test_scenario_ep_errors(dep, match):
    with pytest.raises(InputError, match=match):
        prepare(scenario_from_dict(_scn("contiguous", **dep)))


def test_stale_placement_and_replan(env, costs):
    m, cl = env
    stale = make_ep_step_cost(m, cl.accelerator, ep=16, node=cl.node, cluster=cl,
                              placement={"policy": "greedy_replicated", "redundant": 16,
                                         "plan_loads": {"alpha": 1.0, "seed": 1}},
                              expert_loads={"alpha": 1.0, "seed": 0}, moe=SMALL, weight_dtype="fp8")
    fresh = costs["greedy_replicated"]
    T = 2048
    assert stale.routed_time(T) > 1.2 * fresh.routed_time(T)
    new, mig = stale.replan(stale.popularity * 1e4, "greedy_replicated")
    assert new.routed_time(T) == pytest.approx(fresh.routed_time(T), rel=1e-9)
    assert mig["moved_replicas"] > 0 and mig["moved_bytes"] >= mig["max_device_bytes"] > 0
    assert mig["migration_s"] == pytest.approx(mig["max_device_bytes"] / cl.node.scale_out_bw)
    assert fresh.migration(fresh.placement)["moved_bytes"] == 0.0


# ---------------------------------------------------------------------- prompt-correlated routing (issue 14)
@pytest.fixture(scope="module")
def corr_pair(env):
    m, cl = env
    kw = dict(ep=16, node=cl.node, cluster=cl, placement={"policy": "greedy_replicated", "redundant": 16},
              expert_loads={"alpha": 0.6, "seed": 0}, weight_dtype="fp8")
    return (make_ep_step_cost(m, cl.accelerator, moe={**SMALL, "overlap": True}, **kw),
            make_ep_step_cost(m, cl.accelerator, moe={**SMALL, "overlap": True, "prompt_draws": 1}, **kw))


def test_prompt_draws_effective_draws_is_the_variance_formula(corr_pair):
    _, c = corr_pair
    # 8 prompts of 4,096 tokens, one draw each: T^2 / (P c / u) = 32768^2 / (32768 * 4096) = 8
    assert c.effective_draws(8 * 4096, 8, 0) == 8
    # decode tokens are independent draws: 1,000 decode + 2 prompts of 500 -> 2000^2 / (1000 + 1000 * 500)
    assert c.effective_draws(1000, 2, 1000) == round(2000 ** 2 / (1000 + 1000 * 500))
    # chunks no longer than prompt_draws, pure decode, or no prompt_draws: independent (None)
    assert c.effective_draws(0, 0, 512) is None and corr_pair[0].effective_draws(8 * 4096, 8, 0) is None


def test_prompt_draws_slow_long_prompts_more_and_leave_decode_alone(corr_pair):
    """Same tokens per step: the fewer (longer) the prompts, the fewer independent draws and the busier the
    hottest device (routed experts and its dispatch); decode steps and the default (independent) are
    unchanged."""
    ind, cor = corr_pair
    T = 16 * 8192
    r = []
    for L in (1024, 4096, 16384):
        S = T // L
        w = S * L * (L + 1) / 2.0
        a, b = ind.step_time(T, w, S, 0, 0.0), cor.step_time(T, w, S, 0, 0.0)
        assert b > a
        r.append(b / a)
    assert r[0] < r[1] < r[2]
    assert cor.step_time(0, 0.0, 0, 2048, 2048 * 4096.0) == ind.step_time(0, 0.0, 0, 2048, 2048 * 4096.0)
    fr, fc = cor.correlated_factors(float(T), 8.0)
    assert fr > 1.0 and fc > 1.0 and cor.correlated_factors(float(T), None) == (1.0, 1.0)


def test_prompt_draws_bad_value_names_the_field(env):
    m, cl = env
    for bad in (0, -1.0, "one", True):
        with pytest.raises(InputError) as e:
            make_ep_step_cost(m, cl.accelerator, ep=16, node=cl.node, cluster=cl, placement={"policy": "contiguous"},
                              moe={**SMALL, "prompt_draws": bad})
        assert e.value.field == "moe.prompt_draws"
