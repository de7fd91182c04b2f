"""The prefix block cache, and prefix caching in the simulator."""

import numpy as np

from simllm.policies import make_batching, make_router
from simllm.sim import SimConfig, Simulation
from simllm.sim.fakes import AffineCost
from simllm.sim.prefix_cache import PrefixCache
from simllm.workload import Request


def test_refcounts_lru_and_eviction():
    c = PrefixCache(blocks_per_unit=4)
    c.acquire(["a", "b", "c"])
    assert c.total_blocks == 12 and c.evictable_blocks == 0
    assert c.match(["a", "b", "x"]) == (2, 0)
    c.acquire(["a", "b"])  # shared: counted once
    assert c.total_blocks == 12
    c.release(["a", "b", "c"])
    assert c.match(["a", "b", "c"]) == (3, 1) and c.evictable_blocks == 4
    c.release(["a", "b"])  # released last-first: b before a, so a is the most recently used
    assert list(c.lru) == ["c", "b", "a"]
    assert c.evict(5) == 8  # two units, least recently used first
    assert c.match(["a", "b"]) == (1, 1) and "c" not in c
    c.acquire(["a"])
    assert c.evict(100) == 0 and c.total_blocks == 4  # referenced units are never evicted


def _reqs(shared: bool):
    # 20 requests of 2100 tokens sharing a 2048-token prefix (4 units of 512), one at a time
    return [Request(i, 1.0 * i, 2100, 10, prefix_blocks=(tuple(range(4)) if shared else tuple(range(4 * i, 4 * i + 4)))
                    + (1000 + i,)) for i in range(20)]


def _run(reqs, caching, **kw):
    sim = Simulation(reqs, cost=AffineCost(), num_blocks=2000, batching=lambda: make_batching(kw.get("batching", "vllm-v0")),
                     router=make_router("round_robin"), config=SimConfig(prefix_caching=caching))
    return sim.run()


def test_cached_prefix_skips_prefill_and_is_counted_once():
    base = _run(_reqs(True), False)
    res = _run(_reqs(True), True)
    # the first request misses, the 19 others hit 2048 of 2100 prompt tokens
    assert res.prefix_query_tokens == 20 * 2100
    assert res.prefix_hit_tokens == 19 * 2048
    assert res.steps["prefill_tokens"][0] == 2100
    assert sorted(set(res.steps["prefill_tokens"]) - {0}) == [52, 2100]
    ttft_b = (base.first_token_s - base.arrival_s)[1:]
    ttft_c = (res.first_token_s - res.arrival_s)[1:]
    assert np.all(ttft_c < ttft_b)
    # cached blocks stay resident (evictable) after completion
    assert res.kv_peak_blocks[0] >= 132
    no_share = _run(_reqs(False), True)
    assert no_share.prefix_hit_tokens == 0


def test_concurrent_sharers_hold_the_prefix_once():
    reqs = [Request(i, 0.0 + 1e-3 * i, 2100, 200, prefix_blocks=(0, 1, 2, 3, 50 + i)) for i in range(10)]
    a = _run(reqs, False)
    b = _run(reqs, True, batching="sarathi")
    assert max(b.steps["kv_blocks_used"]) < max(a.steps["kv_blocks_used"]) / 2


def test_eviction_under_pressure_keeps_capacity():
    rng = np.random.default_rng(0)
    reqs = [Request(i, 0.02 * i, int(rng.integers(600, 3000)), int(rng.integers(5, 100)),
                    prefix_blocks=tuple((i % 5, j) for j in range(6))) for i in range(200)]
    sim = Simulation(reqs, cost=AffineCost(), num_blocks=600, batching=lambda: make_batching("sarathi"),
                     router=make_router("round_robin"), config=SimConfig(prefix_caching=True))
    res = sim.run()
    assert np.isfinite(res.completion_s).all()
    assert max(res.kv_peak_blocks) <= 600
    assert 0 < res.prefix_hit_tokens < res.prefix_query_tokens
