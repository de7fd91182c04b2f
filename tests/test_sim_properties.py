"""Property-based tests of the simulator, and jumping == stepping one iteration at a time."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simllm.policies import make_batching, make_router
from simllm.sim import SimConfig, Simulation
from simllm.sim.fakes import AffineCost
from simllm.workload import Request


@st.composite
def cases(draw):
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    arr = np.cumsum(gaps)
    reqs = [Request(i, float(arr[i]), prompts[i], outputs[i]) for i in range(n)]
    return dict(
        reqs=reqs,
        block_size=draw(st.sampled_from([1, 4, 16])),
        num_blocks=draw(st.integers(8, 120)),
        max_seqs=draw(st.integers(1, 8)),
        budget=draw(st.sampled_from([64, 256, 4096])),
        replicas=draw(st.integers(1, 3)),
        preemption=draw(st.sampled_from(["recompute", "swap"])),
        router=draw(st.sampled_from(["round_robin", "least_outstanding"])),
    )


def _run(c, jump):
    cfg = SimConfig(jump=jump, preemption=c["preemption"], block_size=c["block_size"])
    sim = Simulation(c["reqs"], cost=AffineCost(a=1e-3, c=1e-6), num_blocks=c["num_blocks"],
                     batching=lambda: make_batching({"policy": "vllm-v0", "max_num_seqs": c["max_seqs"],
                                                     "max_num_batched_tokens": c["budget"]}),
                     router=make_router(c["router"]), replicas=c["replicas"], config=cfg)
    return sim.run()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_invariants_and_jump_equals_step(c):
    res = _run(c, jump=True)
    rejected = np.array([bool(r) for r in res.rejected_reason])
    done = np.isfinite(res.completion_s)
    # every request completes or is rejected with a reason, never both, never neither
    assert np.all(done ^ rejected)
    # completed requests generated exactly the requested tokens
    assert np.array_equal(res.generated_tokens[done], res.output_tokens[done])
    # KV blocks never exceed capacity
    assert max(res.kv_peak_blocks) <= c["num_blocks"]
    assert max(res.steps["kv_blocks_used"], default=0) <= c["num_blocks"]
    # monotone timestamps
    a, s, f, e = res.arrival_s[done], res.scheduled_s[done], res.first_token_s[done], res.completion_s[done]
    assert np.all(a <= s) and np.all(s < f) and np.all(f <= e)
    # jumping gives the timestamps of stepping one iteration at a time, bit for bit
    ref = _run(c, jump=False)
    for k in ("scheduled_s", "first_token_s", "completion_s"):
        assert np.array_equal(getattr(res, k), getattr(ref, k), equal_nan=True), k
    assert np.array_equal(res.preemptions, ref.preemptions)
    assert res.rejected_reason == ref.rejected_reason
    assert sum(res.steps["n_steps"]) == sum(ref.steps["n_steps"])


def test_rejects_prompt_that_can_never_fit():
    reqs = [Request(0, 0.0, 100, 10), Request(1, 0.1, 5000, 10), Request(2, 0.2, 50, 5)]
    sim = Simulation(reqs, cost=AffineCost(), num_blocks=20,
                     batching=lambda: make_batching({"policy": "vllm-v0", "max_num_batched_tokens": 8192}),
                     router=make_router("round_robin"), config=SimConfig(block_size=16))
    res = sim.run()
    assert res.rejected_reason[1].startswith("needs 314 KV blocks")
    assert res.rejected_reason[0] == res.rejected_reason[2] == ""
    assert np.isfinite(res.completion_s[[0, 2]]).all()
    sim = Simulation(reqs, cost=AffineCost(), num_blocks=2000,
                     batching=lambda: make_batching({"policy": "vllm-v0", "max_num_batched_tokens": 1024}),
                     router=make_router("round_robin"))
    assert "token budget" in sim.run().rejected_reason[1]


def test_preemption_recompute_and_swap_are_recorded():
    rng = np.random.default_rng(0)
    reqs = [Request(i, 0.01 * i, int(rng.integers(50, 200)), 150) for i in range(40)]
    for mode in ("recompute", "swap"):
        sim = Simulation(reqs, cost=AffineCost(), num_blocks=60,
                         batching=lambda: make_batching({"policy": "vllm-v0", "max_num_seqs": 16}),
                         router=make_router("round_robin"), config=SimConfig(preemption=mode))
        res = sim.run()
        assert res.preemptions.sum() > 0
        assert np.isfinite(res.completion_s).all()
        assert np.array_equal(res.generated_tokens, res.output_tokens)


def test_jumping_uses_fewer_events():
    rng = np.random.default_rng(1)
    arr = np.cumsum(rng.exponential(0.05, 500))
    reqs = [Request(i, float(a), int(rng.integers(10, 500)), int(rng.integers(1, 200))) for i, a in enumerate(arr)]
    rows = {}
    for jump in (True, False):
        sim = Simulation(reqs, cost=AffineCost(), num_blocks=5000, batching=lambda: make_batching("vllm-v0"),
                         router=make_router("round_robin"), config=SimConfig(jump=jump))
        r = sim.run()
        rows[jump] = (len(r.steps["n_steps"]), r.completion_s)
    assert rows[True][0] * 3 < rows[False][0]
    assert np.array_equal(rows[True][1], rows[False][1])


def test_unknown_policy_and_field_are_rejected():
    from simllm.errors import InputError

    with pytest.raises(InputError, match="known: .*vllm"):
        make_batching({"policy": "nope"})
    with pytest.raises(InputError, match="unknown field 'max_seqs'.*known: .*max_num_seqs"):
        make_batching({"policy": "vllm-v0", "max_seqs": 3})
    with pytest.raises(InputError, match="round_robin"):
        make_router({"policy": "no_such_router"})


def test_closed_loop_sessions_jump_equals_step():
    from simllm.workload import build_workload

    wl = build_workload({"generator": {
        "arrivals": {"process": "poisson", "rate": 2.0},
        "lengths": {"kind": "lognormal", "prompt_median": 200, "prompt_sigma": 0.5, "output_median": 60,
                    "output_sigma": 0.5},
        "sessions": {"num_sessions": 40, "mean_turns": 3, "think_time": {"kind": "exponential", "mean_s": 2.0}},
    }}, seed=1)
    out = {}
    for jump in (True, False):
        for router in ("round_robin", "least_outstanding"):
            sim = Simulation(wl, cost=AffineCost(), num_blocks=3000, batching=lambda: make_batching("vllm-v0"),
                             router=make_router(router), replicas=2, config=SimConfig(jump=jump), seed=7)
            out[jump, router] = sim.run()
    for router in ("round_robin", "least_outstanding"):
        a, b = out[True, router], out[False, router]
        assert a.arrival_s.shape == (wl.num_requests,)
        assert np.isfinite(a.completion_s).all()
        assert np.array_equal(a.completion_s, b.completion_s) and np.array_equal(a.arrival_s, b.arrival_s)
    # a session's next turn arrives after the previous answer completed
    sim = Simulation(wl, cost=AffineCost(), num_blocks=3000, batching=lambda: make_batching("vllm-v0"),
                     router=make_router("round_robin"), replicas=2, seed=7)
    r = sim.run()
    last_done = {}
    for rid in np.argsort(r.arrival_s, kind="stable"):
        s = int(sim.session_of[rid])
        if s in last_done:
            assert r.arrival_s[rid] > last_done[s]
        last_done[s] = r.completion_s[rid]
    assert len(last_done) == 40


def test_progress_callback_does_not_change_results():
    rng = np.random.default_rng(2)
    arr = np.cumsum(rng.exponential(0.05, 300))
    reqs = [Request(i, float(a), int(rng.integers(10, 500)), int(rng.integers(1, 100))) for i, a in enumerate(arr)]
    seen = []
    res = {}
    for prog in (None, lambda t, n: seen.append((t, n))):
        sim = Simulation(reqs, cost=AffineCost(), num_blocks=5000, batching=lambda: make_batching("vllm-v0"),
                         router=make_router("least_outstanding"), replicas=2)
        res[prog is None] = sim.run(progress=prog)
    assert np.array_equal(res[True].completion_s, res[False].completion_s)
    assert seen and seen[-1][1] == 300


def test_recompute_never_exceeds_the_token_budget():
    # prompt fits the budget but prompt + generated tokens would not: rejected up front, not stuck
    reqs = [Request(0, 0.0, 60, 100), Request(1, 0.0, 30, 20)]
    sim = Simulation(reqs, cost=AffineCost(), num_blocks=100,
                     batching=lambda: make_batching({"policy": "vllm-v0", "max_num_batched_tokens": 64}),
                     router=make_router("round_robin"))
    res = sim.run()
    assert "recomputed" in res.rejected_reason[0] and res.rejected_reason[1] == ""
