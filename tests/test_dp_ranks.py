"""Data-parallel attention ranks inside an EP replica (simllm.sim.dp_ranks): lockstep steps priced on the
slowest rank, per-rank KV and batching limits, rank routing, and jumping == stepping (colocated and PD,
with prefix caching)."""

from pathlib import Path
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, example
from hypothesis import strategies as st

from simllm.policies import make_batching, make_router
from simllm.sim import Pool, SimConfig, Simulation, link_network
from simllm.sim.dp_ranks import DPReplica, rank_policy
from simllm.sim.fakes import AffineCost
from simllm.workload import Request

COST = AffineCost(a=1e-3, b=1e-5, c=1e-6, d=5e-5, e=1e-9)


def _pool(role, reps, blocks, dp, *, policy="vllm-v0", seqs=8, budget=4096, config=None, router="round_robin",
          dp_router=None):
    if policy == "static":
        block = {"policy": "static", "batch_size": seqs, "timeout_s": 0.05}
    elif policy == "sarathi":
        block = {"policy": policy, "max_num_seqs": seqs, "token_budget": budget}
    else:
        block = {"policy": policy, "max_num_seqs": seqs, "max_num_batched_tokens": budget}
    return Pool(role, role, reps, COST, blocks, lambda: make_batching(block), make_router(router),
                devices=2 * dp, config=config, attn_group=2,
                dp_router=make_router(dp_router) if dp_router else None)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.floats(0.0, 0.2, allow_nan=False), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 80), min_size=n, max_size=n))
    roots = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    arr = np.cumsum(gaps)

    def keys(i):
        return tuple(roots[i] * 1000 + u for u in range(prompts[i] // 32))

    return dict(
        reqs=[Request(i, float(arr[i]), prompts[i], outputs[i], prefix_blocks=keys(i), priority=i % 3)
              for i in range(n)],
        pd=draw(st.booleans()), cache=draw(st.booleans()),
        policy=draw(st.sampled_from(["vllm-v0", "sarathi", "vllm", "orca", "priority", "static"])),
        block_size=draw(st.sampled_from([1, 4, 16, 32])),
        blocks=draw(st.integers(40, 400)), dp=draw(st.integers(1, 4)), d_dp=draw(st.integers(1, 4)),
        seqs=draw(st.integers(1, 16)), budget=draw(st.sampled_from([256, 1024, 8192])),
        reps=draw(st.integers(1, 2)), preemption=draw(st.sampled_from(["recompute", "swap"])),
        dp_router=draw(st.sampled_from([None, "round_robin", "least_kv_load", "prefix_aware"])),
    )


def _run(c, jump):
    cfg = SimConfig(jump=jump, preemption=c["preemption"], block_size=c["block_size"], prefix_unit_tokens=32,
                    prefix_caching=c["cache"])
    kw = dict(policy=c["policy"], seqs=c["seqs"], budget=c["budget"], config=cfg, dp_router=c["dp_router"])
    if c["pd"]:
        pools = [_pool("prefill", c["reps"], c["blocks"], c["dp"], **kw),
                 _pool("decode", c["reps"], c["blocks"], c["d_dp"], **{**kw, "router": "least_outstanding"})]
        sim = Simulation(c["reqs"], pools=pools, network=link_network(1e8, 1e-5), config=cfg)
    else:
        sim = Simulation(c["reqs"], pools=[_pool("both", c["reps"], c["blocks"], c["dp"], **kw)], config=cfg)
    return sim, sim.run()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(
    c={'reqs': [Request(id=0,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=31,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0),
      Request(id=1,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=1),
      Request(id=2,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=2),
      Request(id=3,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0),
      Request(id=4,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=1),
      Request(id=5,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=2),
      Request(id=6,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0),
      Request(id=7,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=1),
      Request(id=8,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=2),
      Request(id=9,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0),
      Request(id=10,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=1),
      Request(id=11,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=2),
      Request(id=12,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0),
      Request(id=13,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=1),
      Request(id=14,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=2),
      Request(id=15,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0),
      Request(id=16,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=1),
      Request(id=17,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=2),
      Request(id=18,
       arrival_s=0.0,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0),
      Request(id=19,
       arrival_s=0.03125,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=1),
      Request(id=20,
       arrival_s=0.03125,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=2),
      Request(id=21,
       arrival_s=0.03125,
       prompt_tokens=1,
       output_tokens=1,
       session_id=None,
       prefix_blocks=(),
       model=None,
       priority=0)],
     'pd': False,
     'cache': False,
     'policy': 'static',
     'block_size': 4,
     'blocks': 40,
     'dp': 2,
     'd_dp': 1,
     'seqs': 4,
     'budget': 256,
     'reps': 1,
     'preemption': 'recompute',
     'dp_router': None},
).via('discovered failure')
def test_dp_ranks_invariants_and_jump_equals_step(c):
    sim, res = _run(c, jump=True)
    done = np.isfinite(res.completion_s)
    rejected = np.array([bool(r) for r in res.rejected_reason])
    assert np.all(done ^ rejected)
    assert np.array_equal(res.generated_tokens[done], res.output_tokens[done])
    for rep in sim.replicas:
        ranks = rep.ranks if isinstance(rep, DPReplica) else [rep]
        assert len(ranks) == (rep.pool.dp if isinstance(rep, DPReplica) else 1)
        for r in ranks:  # each rank holds its share of the blocks, never more, and releases everything
            kv = r.kv
            assert r.kv_peak <= kv.capacity and kv.capacity == rep.pool.num_blocks // len(ranks)
            cached = r.pc.total_blocks if r.pc is not None else 0
            assert kv.used_blocks == cached and kv.reserved == 0 and kv.partial == 0 and kv.outgoing == 0
        assert rep.kv_peak <= sum(r.kv.capacity for r in ranks)
    a, s, f, e = res.arrival_s[done], res.scheduled_s[done], res.first_token_s[done], res.completion_s[done]
    assert np.all(a <= s) and np.all(s < f) and np.all(f <= e)
    _, ref = _run(c, jump=False)
    for k in ("scheduled_s", "first_token_s", "completion_s"):
        assert np.array_equal(getattr(res, k), getattr(ref, k), equal_nan=True), k
    assert np.array_equal(res.preemptions, ref.preemptions)
    assert res.rejected_reason == ref.rejected_reason
    assert sum(res.steps["n_steps"]) == sum(ref.steps["n_steps"])
    assert (res.prefix_query_tokens, res.prefix_hit_tokens) == (ref.prefix_query_tokens, ref.prefix_hit_tokens)
    if c["pd"]:
        assert np.array_equal(res.request_columns["kv_transfer_s"], ref.request_columns["kv_transfer_s"],
                              equal_nan=True)


def test_a_rank_prefill_delays_the_other_rank_only_through_the_synchronised_step():
    # two ranks: request 0 (rank 0) decodes; request 1 arrives and prefills on rank 1 (least outstanding).
    # The step in which rank 1 prefills costs the shared part of both ranks' tokens plus the slower rank's
    # attention; request 0 still gains its token in that step.
    cost = AffineCost(a=1e-3, b=1e-4, c=1e-6, d=1e-5, e=1e-8)
    pool = Pool("c", "both", 1, cost, 1000,
                lambda: make_batching({"policy": "sarathi", "token_budget": 2048, "max_num_seqs": 8}),
                make_router("round_robin"), devices=2, attn_group=1)
    reqs = [Request(0, 0.0, 10, 50), Request(1, 0.0101, 500, 1)]
    res = Simulation(reqs, pools=[pool], config=SimConfig(block_size=16)).run()
    # request 0 alone: prefill of 10 tokens, then decode steps of one sequence
    t_pre0 = 1e-3 + 1e-5 * 10 + 1e-8 * 10 * 5.0
    assert res.first_token_s[0] == pytest.approx(t_pre0)

    def dec(ctx):
        return 1e-3 + 1e-4 + 1e-6 * ctx

    t = t_pre0
    ctx = 11
    while t < 0.0101:
        t += dec(ctx)
        ctx += 1
    # the mixed step: rank 0 decodes (ctx tokens), rank 1 prefills 500 tokens (work 500 * 250)
    mixed = 1e-3 + 1e-4 * 1 + 1e-5 * 500 + max(1e-6 * ctx, 1e-8 * 500 * 250.0)
    assert res.completion_s[1] == pytest.approx(t + mixed)
    assert res.replica[1] == 0
    alone = Simulation(reqs[:1], pools=[pool], config=SimConfig(block_size=16)).run()
    assert res.completion_s[0] - alone.completion_s[0] == pytest.approx(mixed - dec(ctx))


def test_rank_policy_divides_the_replica_limits():
    p = make_batching({"policy": "sarathi", "token_budget": 4096, "max_num_seqs": 64})
    r = rank_policy(p, 32)
    assert (r.token_budget, r.max_num_seqs) == (128, 2)
    v = rank_policy(make_batching({"policy": "vllm-v0", "max_num_seqs": 3, "max_num_batched_tokens": 100}), 8)
    assert (v.max_num_seqs, v.max_num_batched_tokens) == (1, 12)


def test_requests_stay_on_the_rank_the_rank_router_chose():
    pool = _pool("both", 1, 400, 4, policy="sarathi", dp_router="round_robin", seqs=64)
    reqs = [Request(i, 0.001 * i, 20, 5) for i in range(8)]
    sim = Simulation(reqs, pools=[pool], config=SimConfig(block_size=4))
    sim.run()
    rep = sim.replicas[0]
    assert [r.assigned for r in rep.ranks] == [2, 2, 2, 2] and [r.done for r in rep.ranks] == [2, 2, 2, 2]


def test_dp_ranks_need_a_cost_model_that_prices_ranks():
    from simllm.sim.fakes import ConstantCost

    pool = Pool("c", "both", 1, ConstantCost(), 100, lambda: make_batching("vllm-v0"), make_router("round_robin"),
                devices=4, attn_group=2)
    with pytest.raises(ValueError, match="step_time_ranks"):
        Simulation([Request(0, 0.0, 5, 5)], pools=[pool])


def test_ep_step_time_ranks_even_split_matches_step_time_and_imbalance_costs_more():
    from simllm.cost.moe_ep import make_ep_step_cost
    from simllm.hardware import load_cluster
    from simllm.model import load_model

    cl = load_cluster("h800-ep")
    c = make_ep_step_cost(load_model("deepseek-v3"), cl.accelerator, ep=16, node=cl.node, cluster=cl,
                          placement={"policy": "contiguous"}, expert_loads={"alpha": 1.0, "seed": 0},
                          moe={"samples": 2, "sample_layers": 2, "layers": 2, "grid_max": 2048, "grid_points": 24},
                          weight_dtype="fp8")
    dp = c.dp
    n = np.full(dp, 32)
    ctx = np.full(dp, 32 * 2000.0)
    z = np.zeros(dp)
    even = float(c.step_time_ranks(z, z, z, n, ctx))
    assert even == pytest.approx(float(c.step_time(0, 0.0, 0, 32 * dp, 32 * dp * 2000.0)), rel=0.02)
    skew = n.copy()
    skew[0] += 16
    skew[1] -= 16
    assert float(c.step_time_ranks(z, z, z, skew, skew * 2000.0)) > even
    # k decode steps at once: the same as one call per step
    ctx2 = np.stack([ctx, ctx + n, ctx + 2 * n])
    v = c.step_time_ranks(z, z, z, n, ctx2)
    assert [float(x) for x in v] == [float(c.step_time_ranks(z, z, z, n, row)) for row in ctx2]


@pytest.mark.parametrize("sets,field", [
    (["deployment.speculative={method: draft, draft: llama-3-8b, num_tokens: 2, acceptance: 0.7}"],
     "deployment.speculative.method"),
    (["deployment.cuda_graphs=auto"], "deployment.cuda_graphs"),
    (["deployment.host_step_s=0.001"], "deployment.host_step_s"),
])
def test_options_the_dp_rank_engine_cannot_honour_are_refused_with_their_field(sets, field, capsys):
    """The DeepSeek-V3 PD scenario runs its attention on data-parallel ranks: a draft model's speculation, CUDA-graph
    padding and host overheads (which wrap the step cost without per-rank pricing) are refused at preparation,
    one line naming the scenario file and the field, exit 2 (they were an internal error from inside the engine)."""
    from simllm.cli import main

    repo = Path(__file__).resolve().parents[1]
    scn = repo / "workloads" / "scenarios" / "deepseek-v3-h800-pd.yaml"
    argv = ["run", str(scn), "--set", "workload.generator.num_requests=10"]
    for s_ in sets:
        argv += ["--set", s_]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(err) == 1, err
    assert f"deepseek-v3-h800-pd.yaml: {field}: " in err[0] and "data-parallel attention ranks" in err[0], err[0]


def test_mtp_on_data_parallel_ranks_conserves_requests_and_tokens():
    """MTP speculation on the DeepSeek-V3 PD scenario's data-parallel ranks: every request completes with all its
    output tokens, the tokens kept per sequence-step match the acceptance (1 + 0.87 within 2%), verification steps
    are counted once per replica step (not per rank), and decoding is faster than without (DeepSeek's report: about
    1.8x at 85-90% acceptance)."""
    from simllm.scenario import load_scenario, prepare, simulate

    repo = Path(__file__).resolve().parents[1]
    scn_path = repo / "workloads" / "scenarios" / "deepseek-v3-h800-pd.yaml"
    out = {}
    for spec in (None, "{method: mtp, num_tokens: 1, acceptance: 0.87}"):
        sets = ["workload.generator.num_requests=300"] + ([f"deployment.speculative={spec}"] if spec else [])
        scn, f = load_scenario(scn_path, sets)
        req, steps, summ = simulate(prepare(scn, file=f))
        assert summ["completed"] == 300 and int(req["output_tokens"].sum()) == int(req["generated_tokens"].sum())
        out[spec is not None] = (summ, steps)
    on, steps_on = out[True]
    sp = on["speculative"]
    assert abs(sp["tokens_per_step"] - 1.87) < 0.02 * 1.87, sp
    decode_steps = steps_on[steps_on["decode_tokens"] > 0]["n_steps"].sum()
    assert sp["verification_steps"] <= decode_steps < sp["sequence_steps"], (sp, decode_steps)
    speedup = out[False][0]["tpot_s"]["mean"] / on["tpot_s"]["mean"]
    assert 1.4 < speedup < 2.0, speedup


def test_kv_tiers_on_data_parallel_ranks_conserve_units_and_hits(monkeypatch):
    """KV tiers on the DeepSeek-V3 SGLang PD scenario's data-parallel ranks (Mooncake conversations, prefix caching,
    a 20 GB host-DRAM tier, a large activation reserve so HBM evicts): every rank keeps its own tiers, exclusive of
    its HBM cache, each unit demoted is still there, loaded back, discarded or dropped; the hits found in HBM and
    in the tier add up to the prefix cache's; the replica's capacity is its ranks' together."""
    import simllm.scenario as S
    from simllm.scenario import load_scenario, prepare, simulate

    made = []

    class Kept(S.Simulation):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(S, "Simulation", Kept)
    repo = Path(__file__).resolve().parents[1]
    scn, f = load_scenario(repo / "workloads" / "scenarios" / "deepseek-v3-sglang-h100-pd.yaml", [
        "workload={trace: traces/mooncake_conversation_sample.jsonl, limit: 400}", "deployment.kv.prefix_caching=true",
        "deployment.kv.activation_reserve=0.3", "deployment.kv.tiers=[{medium: host_dram, capacity: 20GB}]"])
    req, _steps, s = simulate(prepare(scn, file=f))
    done = req["completion_s"].notna().to_numpy()
    rejected = req["rejected_reason"].fillna("").astype(bool).to_numpy()
    assert np.all(done ^ rejected)
    assert np.array_equal(req["generated_tokens"].to_numpy()[done], req["output_tokens"].to_numpy()[done])
    kt = s["kv_tiers"]
    assert kt["units_demoted"] > 0 and kt["host_dram"]["hit_tokens"] > 0
    assert kt["hbm"]["hit_tokens"] + kt["host_dram"]["hit_tokens"] == s["prefix_cache"]["hit_tokens"]
    (sim,) = made
    ranks = [rk for r in sim.replicas if hasattr(r, "ranks") for rk in r.ranks if rk.tiers is not None]
    assert ranks
    for rk in ranks:
        t, pc = rk.tiers, rk.pc
        assert not set(pc.ref) & set(t.where)
        assert t.demoted == len(t) + t.promoted + t.discarded + t.dropped
        assert all(len(lru) <= cap for lru, cap in zip(t.lru, t.cap))
    first = next(r for r in sim.replicas if hasattr(r, "ranks"))
    assert kt["host_dram"]["capacity_units_per_replica"] == sum(rk.tiers.cap[0] for rk in first.ranks)
