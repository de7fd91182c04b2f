"""Prefill/decode pools (simllm.sim.pools): invariants, jumping == stepping, KV transfers, prefix caching."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simllm.policies import make_batching, make_router
from simllm.sim import Pool, SimConfig, Simulation, link_network
from simllm.sim.fakes import AffineCost
from simllm.workload import Request


def _pool(n, blocks, max_seqs=256, budget=4096, router="round_robin", cost=None, devices=1, policy="vllm-v0",
          config=None, role="prefill"):
    extra = {"token_budget": budget} if policy == "sarathi" else {"max_num_batched_tokens": budget}
    return Pool(role, role, n, cost or AffineCost(a=1e-3, c=1e-6), blocks,
                lambda: make_batching({"policy": policy, "max_num_seqs": max_seqs, **extra}),
                make_router(router), devices=devices, config=config)


def DisaggSimulation(reqs, *, prefill, decode, network, config=SimConfig()):
    decode.role = decode.name = "decode"
    return Simulation(reqs, pools=[prefill, decode], network=network, config=config)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    roots = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))  # three shared prompt roots
    arr = np.cumsum(gaps)
    unit = 32  # prefix unit tokens in these cases

    def keys(i):  # prefix-chained ids: equal root, equal leading units
        return tuple(roots[i] * 1000 + u for u in range(prompts[i] // unit))

    return dict(
        reqs=[Request(i, float(arr[i]), prompts[i], outputs[i], prefix_blocks=keys(i)) for i in range(n)],
        p_cache=draw(st.booleans()), d_cache=draw(st.booleans()),
        p_policy=draw(st.sampled_from(["vllm-v0", "sarathi", "vllm"])),
        block_size=draw(st.sampled_from([1, 4, 16, 32])),
        p_blocks=draw(st.integers(8, 120)), d_blocks=draw(st.integers(8, 120)),
        p_seqs=draw(st.integers(1, 8)), d_seqs=draw(st.integers(1, 8)),
        budget=draw(st.sampled_from([64, 256, 4096])),
        p_reps=draw(st.integers(1, 3)), d_reps=draw(st.integers(1, 3)),
        preemption=draw(st.sampled_from(["recompute", "swap"])),
        router=draw(st.sampled_from(["round_robin", "least_outstanding"])),
        bw=draw(st.sampled_from([1e5, 1e7, 1e9])),
    )


def _run(c, jump):
    cfg = SimConfig(jump=jump, preemption=c["preemption"], block_size=c["block_size"], prefix_unit_tokens=32)
    pcfg = SimConfig(jump=jump, preemption=c["preemption"], block_size=c["block_size"], prefix_unit_tokens=32,
                     prefix_caching=c["p_cache"])
    dcfg = SimConfig(jump=jump, preemption=c["preemption"], block_size=c["block_size"], prefix_unit_tokens=32,
                     prefix_caching=c["d_cache"])
    sim = DisaggSimulation(
        c["reqs"], prefill=_pool(c["p_reps"], c["p_blocks"], c["p_seqs"], c["budget"], c["router"],
                                 policy=c["p_policy"], config=pcfg),
        decode=_pool(c["d_reps"], c["d_blocks"], c["d_seqs"], c["budget"], c["router"], config=dcfg),
        network=link_network(c["bw"], 1e-5), config=cfg)
    return sim, sim.run()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_invariants_and_jump_equals_step(c):
    sim, res = _run(c, jump=True)
    rejected = np.array([bool(r) for r in res.rejected_reason])
    done = np.isfinite(res.completion_s)
    assert np.all(done ^ rejected)  # completed or rejected with a reason, never both or neither
    assert np.array_equal(res.generated_tokens[done], res.output_tokens[done])
    # KV never over capacity: prefill replicas, decode replicas counting blocks reserved for transfers
    for r in sim.replicas:
        kv = r.kv
        assert r.kv_peak <= kv.capacity
        # everything released at the end (cached prefix units stay, unreferenced)
        cached = r.pc.total_blocks if r.pc is not None else 0
        assert kv.used_blocks == cached and kv.num_blocks == kv.capacity and kv.reserved == 0
        assert kv.partial == 0 and kv.outgoing == 0 and kv.shared_units == 0
        if r.pc is not None:
            assert r.pc.evictable_blocks == cached
    for r in sim.decode:
        assert r.peak_total <= r.kv.capacity
    for rep, used in zip(res.steps["replica"], res.steps["kv_blocks_used"]):
        assert used <= res.replica_kv_blocks[rep]
    a, s, f, e = res.arrival_s[done], res.scheduled_s[done], res.first_token_s[done], res.completion_s[done]
    assert np.all(a <= s) and np.all(s < f) and np.all(f <= e)
    # requests with more than one token moved their KV to a decode replica, after their first token
    cols = res.request_columns
    moved = done & (res.output_tokens > 1)
    assert np.all(cols["kv_transfer_s"][moved] > 0) and np.all(np.isnan(cols["kv_transfer_s"][done & ~moved]))
    assert set(cols["pool"][moved]) <= {"decode"} and set(cols["pool"][done & ~moved]) <= {"prefill"}
    assert np.all(f[moved[done]] + cols["kv_transfer_s"][moved] <= e[moved[done]])
    dec = cols["decode_replica"][moved]
    assert np.all(np.array(res.pools)[dec] == "decode")
    _, ref = _run(c, jump=False)
    for k in ("scheduled_s", "first_token_s", "completion_s"):
        assert np.array_equal(getattr(res, k), getattr(ref, k), equal_nan=True), k
    assert np.array_equal(cols["kv_transfer_s"], ref.request_columns["kv_transfer_s"], equal_nan=True)
    assert np.array_equal(res.preemptions, ref.preemptions)
    assert res.rejected_reason == ref.rejected_reason
    assert sum(res.steps["n_steps"]) == sum(ref.steps["n_steps"])
    assert (res.prefix_query_tokens, res.prefix_hit_tokens) == (ref.prefix_query_tokens, ref.prefix_hit_tokens)


def test_transfer_time_and_shared_link():
    # one prefill replica with a 1 GB/s link: a 1000-token prompt at 1 MB/token takes 1 s alone
    cost = AffineCost(kv_bytes_per_token_per_device=1e6)
    reqs = [Request(0, 0.0, 1000, 5)]
    sim = DisaggSimulation(reqs, prefill=_pool(1, 1000, cost=cost), decode=_pool(1, 1000, cost=cost),
                           network=link_network(1e9, 0.0))
    res = sim.run()
    assert res.request_columns["kv_transfer_s"][0] == pytest.approx(1.0)
    # two prefill replicas finishing together into one decode replica share its incoming link: 2 s each
    reqs = [Request(0, 0.0, 1000, 5), Request(1, 0.0, 1000, 5)]
    sim = DisaggSimulation(reqs, prefill=_pool(2, 1000, cost=cost), decode=_pool(1, 1000, cost=cost),
                           network=link_network(1e9, 0.0))
    res = sim.run()
    np.testing.assert_allclose(res.request_columns["kv_transfer_s"], [2.0, 2.0])
    # TTFT ends at the prefill; the decode starts after the transfer
    assert np.all(res.completion_s - res.first_token_s > 2.0)


def test_decode_memory_gates_transfers():
    # the decode replica holds 2 prompts' worth of blocks: the third transfer waits for a completion
    reqs = [Request(i, 0.0, 160, 40) for i in range(3)]
    sim = DisaggSimulation(reqs, prefill=_pool(3, 100), decode=_pool(1, 30),
                           network=link_network(1e9, 0.0), config=SimConfig(watermark=0.0))
    res = sim.run()
    assert np.isfinite(res.completion_s).all()
    assert sim.decode[0].peak_total <= 30
    # the first two transfers share the link; the third starts only after they landed, alone on it
    x = res.request_columns["kv_transfer_s"]
    np.testing.assert_allclose(x, [x[2] * 2, x[2] * 2, 160 * 131072.0 / 1e9])
