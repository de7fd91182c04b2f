"""Invariants and jumping == stepping for every batching policy, with and without prefix caching."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simllm.policies import make_batching, make_router
from simllm.sim import SimConfig, Simulation
from simllm.sim.fakes import AffineCost
from simllm.workload import Request

UNIT = 64  # prefix unit tokens in these tests (Mooncake: 512)


@st.composite
def cases(draw):
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.floats(0.0, 0.3, allow_nan=False), min_size=n, max_size=n))
    prompts = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    outputs = draw(st.lists(st.integers(1, 100), min_size=n, max_size=n))
    prios = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    groups = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    arr = np.cumsum(gaps)
    # requests of one group share their prefix keys (prefix-chained ids: group, unit index)
    reqs = [Request(i, float(arr[i]), prompts[i], outputs[i], priority=prios[i],
                    prefix_blocks=tuple((groups[i], j) for j in range(-(-prompts[i] // UNIT))))
            for i in range(n)]
    policy = draw(st.sampled_from(["orca", "sarathi", "static", "priority", "priority_len", "vllm", "vllm_v1",
                                   "sglang"]))
    max_seqs = draw(st.integers(1, 8))
    budget = draw(st.sampled_from([64, 256, 4096]))
    if policy == "orca":
        block = {"policy": "orca", "max_num_seqs": max_seqs, "max_num_batched_tokens": budget}
    elif policy == "sarathi":
        block = {"policy": "sarathi", "max_num_seqs": max_seqs, "token_budget": draw(st.sampled_from([8, 64, 512]))}
    elif policy == "static":
        block = {"policy": "static", "batch_size": max_seqs, "timeout_s": draw(st.sampled_from([0.0, 0.05, 1.0]))}
    elif policy == "vllm":
        block = {"policy": "vllm-v0", "max_num_seqs": max_seqs, "max_num_batched_tokens": budget}
    elif policy == "vllm_v1":
        block = {"policy": "vllm", "max_num_seqs": max_seqs, "max_num_batched_tokens": budget,
                 "long_prefill_token_threshold": draw(st.sampled_from([0, 16, 100]))}
    elif policy == "sglang":
        block = {"policy": "sglang", "max_running_requests": max_seqs,
                 "chunked_prefill_size": draw(st.sampled_from([8, 64, 512])), "max_prefill_tokens": budget,
                 "new_token_ratio": draw(st.sampled_from([0.0, 0.1, 0.7, 1.0]))}
    else:
        block = {"policy": "priority", "max_num_seqs": max_seqs, "max_num_batched_tokens": budget,
                 "rule": "prompt_length" if policy == "priority_len" else "trace", "short_prompt_tokens": 100}
    return dict(
        reqs=reqs, block=block,
        block_size=draw(st.sampled_from([1, 4, 16])),
        num_blocks=draw(st.integers(8, 120)),
        replicas=draw(st.integers(1, 3)),
        preemption=draw(st.sampled_from(["recompute", "swap"])),
        router=draw(st.sampled_from(["round_robin", "least_outstanding", "least_kv_load", "prefix_aware",
                                     "session_affinity", "random"])),
        prefix_caching=draw(st.booleans()),
    )


def _run(c, jump):
    cfg = SimConfig(jump=jump, preemption=c["preemption"], block_size=c["block_size"],
                    prefix_caching=c["prefix_caching"], prefix_unit_tokens=UNIT)
    sim = Simulation(c["reqs"], cost=AffineCost(a=1e-3, c=1e-6), num_blocks=c["num_blocks"],
                     batching=lambda: make_batching(c["block"]), router=make_router(c["router"]),
                     replicas=c["replicas"], config=cfg)
    return sim.run()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_policy_invariants_and_jump_equals_step(c):
    res = _run(c, jump=True)
    rejected = np.array([bool(r) for r in res.rejected_reason])
    done = np.isfinite(res.completion_s)
    assert np.all(done ^ rejected)
    assert np.array_equal(res.generated_tokens[done], res.output_tokens[done])
    assert max(res.kv_peak_blocks) <= c["num_blocks"]
    assert max(res.steps["kv_blocks_used"], default=0) <= c["num_blocks"]
    a, s, f, e = res.arrival_s[done], res.scheduled_s[done], res.first_token_s[done], res.completion_s[done]
    assert np.all(a <= s) and np.all(s < f) and np.all(f <= e)
    assert 0 <= res.prefix_hit_tokens <= res.prefix_query_tokens
    ref = _run(c, jump=False)
    for k in ("scheduled_s", "first_token_s", "completion_s"):
        assert np.array_equal(getattr(res, k), getattr(ref, k), equal_nan=True), k
    assert np.array_equal(res.preemptions, ref.preemptions)
    assert res.rejected_reason == ref.rejected_reason
    assert res.prefix_hit_tokens == ref.prefix_hit_tokens
    assert sum(res.steps["n_steps"]) == sum(ref.steps["n_steps"])


def test_closed_loop_sessions_with_prefix_caching_jump_equals_step():
    from simllm.workload import build_workload

    wl = build_workload({"generator": {
        "arrivals": {"process": "poisson", "rate": 4.0},
        "lengths": {"kind": "lognormal", "prompt_median": 400, "prompt_sigma": 0.5, "output_median": 60,
                    "output_sigma": 0.5},
        "sessions": {"num_sessions": 30, "mean_turns": 3, "think_time": {"kind": "exponential", "mean_s": 1.0}},
    }}, seed=2)
    for block, router in ((("sarathi", {"token_budget": 256}), "session_affinity"),
                          (("priority", {"rule": "prompt_length", "short_prompt_tokens": 800}), "prefix_aware")):
        out = {}
        for jump in (True, False):
            sim = Simulation(wl, cost=AffineCost(), num_blocks=400,
                             batching=lambda: make_batching({"policy": block[0], **block[1]}),
                             router=make_router(router), replicas=2,
                             config=SimConfig(jump=jump, prefix_caching=True), seed=3)
            out[jump] = sim.run()
        a, b = out[True], out[False]
        assert np.isfinite(a.completion_s).all() and np.array_equal(a.completion_s, b.completion_s)
        assert a.prefix_hit_tokens == b.prefix_hit_tokens > 0  # later turns hit their session's earlier turns


def test_swap_in_with_prefix_caching_respects_capacity():
    """Regression (found by the property test above): with prefix caching on, swap-in recounted used
    blocks before the swapped-in sequence was running, so the next one saw its blocks as free."""
    outs = [1] * 9 + [13, 14, 10, 7] + [1] * 7
    reqs = [Request(i, 0.0, 1, o, None, ((0, 0),), None, 0) for i, o in enumerate(outs)]
    c = {"reqs": reqs, "block": {"policy": "orca", "max_num_seqs": 4, "max_num_batched_tokens": 64},
         "block_size": 1, "num_blocks": 27, "replicas": 1, "preemption": "swap", "router": "round_robin",
         "prefix_caching": True}
    for jump in (True, False):
        assert max(_run(c, jump).kv_peak_blocks) <= 27


def test_priority_preemption_never_credits_prefix_blocks_the_newcomer_reuses():
    # Found by the property test: request 0 (64 tokens, class 1) holds prefix unit (0, 0); request 3
    # (109 tokens, class 0) hits that unit, so its need (computed while request 0 references the unit)
    # leaves the unit's 16 blocks out; preempting request 0 used to be credited with all its blocks, the
    # unit's included, and request 3 was admitted into 40 of the 29 blocks. A victim is now credited with
    # its private blocks only (PolicyKVView.freed_blocks).
    def keys(p):
        return tuple((0, j) for j in range(-(-p // UNIT)))

    reqs = [Request(0, 0.0, 64, 49, priority=1, prefix_blocks=keys(64)),
            Request(1, 0.0, 1, 60, priority=1, prefix_blocks=keys(1)),
            Request(2, 0.0, 1, 60, priority=1, prefix_blocks=keys(1)),
            Request(3, 0.05, 109, 5, priority=0, prefix_blocks=keys(109))]
    block = {"policy": "priority", "max_num_seqs": 3, "max_num_batched_tokens": 256, "rule": "trace"}
    c = dict(reqs=reqs, block=block, block_size=4, num_blocks=29, replicas=1, preemption="recompute",
             router="round_robin", prefix_caching=True)
    for jump in (True, False):
        res = _run(c, jump)
        assert max(res.kv_peak_blocks) <= 29 and max(res.steps["kv_blocks_used"]) <= 29
        assert np.isfinite(res.completion_s).all() and res.preemptions[0] >= 1


def test_jump_equals_step_when_a_swapped_sequence_waits_on_prefix_cache_evictions():
    """Found by the property above: a sequence swapped out under static batching waits for blocks; the
    one left decoding grows into the full cache, its growth evicts a cached prefix unit of several blocks
    and the swapped sequence fits again. Stepping brings it back at the next boundary; a decode jump
    over that step must not keep it out until the jump ends (it did: 1 ms late)."""
    from simllm.workload.request import Request

    def r(i, p, o, pb):
        return Request(id=i, arrival_s=0.0, prompt_tokens=p, output_tokens=o, prefix_blocks=pb)

    reqs = [r(i, 1, 1, ((0, 0),)) for i in range(8)] + [r(8, 128, 2, ((0, 0), (0, 1))), r(9, 99, 24, ((1, 0), (1, 1))),
                                                        r(10, 20, 2, ((0, 0),))] + \
        [r(i, 1, 1, ((0, 0),)) for i in (11, 12, 13)]
    c = {"reqs": reqs, "block": {"policy": "static", "batch_size": 4, "timeout_s": 0.0}, "block_size": 4,
         "num_blocks": 62, "replicas": 1, "preemption": "swap", "router": "round_robin", "prefix_caching": True}
    a, b = _run(c, jump=True), _run(c, jump=False)
    assert sum(a.preemptions) > 0  # the case: a sequence was swapped out
    for k in ("scheduled_s", "first_token_s", "completion_s"):
        assert np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True), k
