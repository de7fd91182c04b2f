"""Fluid max-min fair-share link model (simllm.network)."""

import pytest
import simpy

from simllm.errors import InputError
from simllm.network import FluidNetwork
from simllm.topology import build_topology


def _run(net, env, jobs):
    out = {}

    def proc(name, links, nbytes, delay):
        yield env.timeout(delay)
        dt = yield net.transfer(links, nbytes, tag=name)
        out[name] = (env.now, dt)

    for name, links, nbytes, delay in jobs:
        env.process(proc(name, links, nbytes, delay))
    env.run()
    return out


def test_two_overlapping_transfers_take_twice_as_long():
    env = simpy.Environment()
    net = FluidNetwork(env, {"l": 100e9})
    env1 = simpy.Environment()
    solo = _run(FluidNetwork(env1, {"l": 100e9}), env1, [("a", ["l"], 1e9, 0.0)])["a"][1]
    both = _run(net, env, [("a", ["l"], 1e9, 0.0), ("b", ["l"], 1e9, 0.0)])
    assert solo == pytest.approx(0.01)
    assert both["a"][1] == pytest.approx(2 * solo)
    assert both["b"][1] == pytest.approx(2 * solo)


def test_late_joiner_and_max_min_fairness():
    env = simpy.Environment()
    net = FluidNetwork(env, {"a": 100.0, "b": 50.0})
    r = _run(net, env, [("x", ["a"], 100, 0.0), ("y", ["a"], 100, 0.0), ("z", ["a", "b"], 100, 0.5)])
    # 0..0.5: x, y at 50; then three at 33.3 until x, y finish at 2.75; z alone at min(100, 50)
    assert r["x"][0] == pytest.approx(2.75)
    assert r["z"][0] == pytest.approx(3.25)


def test_bottleneck_flow_frees_share_for_others():
    env = simpy.Environment()
    net = FluidNetwork(env, {"a": 100.0, "b": 10.0})
    seen = {}

    def probe():
        yield env.timeout(0.1)
        seen.update(net.rates())

    env.process(probe())
    _run(net, env, [("slow", ["a", "b"], 100, 0.0), ("fast", ["a"], 900, 0.0)])
    assert seen["slow"] == pytest.approx(10.0)
    assert seen["fast"] == pytest.approx(90.0)  # max-min: not 50/50


def test_latency_and_cap_and_empty():
    env = simpy.Environment()
    net = FluidNetwork(env, {"a": 100.0})
    ev = net.transfer(["a"], 100, latency=1.0, max_rate=50.0)
    ev0 = net.transfer([], 100)
    env.run()
    assert ev.value == pytest.approx(3.0)
    assert ev0.value == 0.0
    with pytest.raises(InputError):
        net.transfer(["nope"], 1)
    with pytest.raises(InputError):
        FluidNetwork(env, {"a": 0.0})


def test_kv_transfer_during_collective_on_topology_edges():
    topo = build_topology("a100-2node")
    env = simpy.Environment()
    net = FluidNetwork.from_topology(env, topo)
    p = topo.path(0, 8)  # across nodes, through one NIC
    out = _run(net, env, [("kv", p.edges, 1e9, 0.0), ("coll", p.edges, 1e9, 0.0)])
    solo = 1e9 / p.bottleneck_bw
    assert out["kv"][1] == pytest.approx(2 * solo, rel=1e-6)


def test_collective_alone_matches_analytic_and_slows_with_kv_transfer():
    from simllm.topology import collective

    topo = build_topology("a100-2node")
    ranks = list(range(16))
    est = collective(topo, "all_reduce", 1e9, ranks=ranks).time_s
    env = simpy.Environment()
    net = FluidNetwork.from_topology(env, topo)
    ev = net.collective("all_reduce", 1e9, ranks)
    env.run()
    assert ev.value == pytest.approx(est, rel=1e-6)

    env = simpy.Environment()
    net = FluidNetwork.from_topology(env, topo)
    coll = net.collective("all_reduce", 1e9, ranks)
    kv = net.send(0, 8, 2e9)  # shares rail 0 with the collective's inter-node hop
    env.run()
    assert coll.value > est * 1.05
    solo = topo.path(0, 8)
    assert kv.value > 2e9 / solo.bottleneck_bw + solo.latency
