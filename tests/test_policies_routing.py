"""Where each router sends a request."""

import numpy as np
import pytest

from simllm.errors import InputError
from simllm.policies import make_router


class Rep:
    def __init__(self, index, outstanding=0, kv_free=1.0, cached=0):
        self.index, self.outstanding, self.kv_free_fraction, self._cached = index, outstanding, kv_free, cached

    def cached_prefix_units(self, rid):
        return self._cached


class FakeSim:
    def __init__(self, sessions):
        self.s = sessions

    def session_key(self, rid):
        return self.s[rid]


def test_least_outstanding_alias_and_least_kv_load():
    reps = [Rep(0, 5, 0.1), Rep(1, 2, 0.5), Rep(2, 2, 0.9)]
    assert make_router("least_outstanding").route(0, reps) == 1
    assert make_router("least_outstanding_requests").route(0, reps) == 1
    assert make_router("least_kv_load").route(0, reps) == 2
    reps = [Rep(0, 3, 0.5), Rep(1, 1, 0.5)]
    assert make_router("least_kv_load").route(0, reps) == 1  # tie on KV: fewer outstanding


def test_random_is_seeded_and_plan_matches_distribution():
    reps = [Rep(i) for i in range(4)]
    a = [make_router({"policy": "random", "seed": 1}).route(i, reps) for i in range(1)]
    r1, r2 = make_router({"policy": "random", "seed": 1}), make_router({"policy": "random", "seed": 1})
    assert [r1.route(i, reps) for i in range(50)] == [r2.route(i, reps) for i in range(50)]
    p = make_router({"policy": "random", "seed": 2}).plan(4000, 4)
    assert set(np.unique(p)) == {0, 1, 2, 3} and abs(np.bincount(p).min() - 1000) < 100
    assert a


def test_session_affinity_keeps_a_session_on_its_replica():
    r = make_router("session_affinity")
    r.attach(FakeSim({0: "a", 1: "b", 2: "a", 3: None}))
    reps = [Rep(0, 0), Rep(1, 0)]
    assert r.route(0, reps) == 0  # least outstanding
    reps = [Rep(0, 3), Rep(1, 0)]
    assert r.route(1, reps) == 1
    reps = [Rep(0, 9), Rep(1, 0)]
    assert r.route(2, reps) == 0  # session a stays on 0 although it is busier
    assert r.route(3, reps) == 1  # no session: least loaded


def test_prefix_aware_longest_prefix_with_load_cap():
    r = make_router({"policy": "prefix_aware", "cap": 2.0})
    reps = [Rep(0, 2, cached=0), Rep(1, 3, cached=4), Rep(2, 1, cached=2)]
    assert r.route(0, reps) == 1  # longest cached prefix
    reps = [Rep(0, 0, cached=0), Rep(1, 9, cached=4), Rep(2, 0, cached=0)]
    assert r.route(0, reps) == 0  # 9 > 2 x mean 3: least loaded instead
    reps = [Rep(0, 4, cached=0), Rep(1, 1, cached=0)]
    assert r.route(0, reps) == 1  # nothing cached: least loaded
    with pytest.raises(InputError):
        make_router({"policy": "prefix_aware", "cap": 0})


def test_prefix_aware_on_the_simulator_beats_round_robin_hit_rate():
    from simllm.policies import make_batching
    from simllm.sim import SimConfig, Simulation
    from simllm.sim.fakes import AffineCost
    from simllm.workload import Request

    rng = np.random.default_rng(0)
    reqs = [Request(i, 0.05 * i, 2048 + int(rng.integers(0, 500)), 20,
                    prefix_blocks=tuple((i % 7, j) for j in range(5))) for i in range(160)]
    hit = {}
    for router in ("round_robin", "prefix_aware", "session_affinity"):
        sim = Simulation(reqs, cost=AffineCost(), num_blocks=3000, batching=lambda: make_batching("vllm-v0"),
                         router=make_router(router), replicas=4, config=SimConfig(prefix_caching=True))
        res = sim.run()
        hit[router] = res.prefix_hit_tokens / res.prefix_query_tokens
    assert hit["prefix_aware"] > hit["round_robin"] + 0.05
