"""Topology graph, paths, bottlenecks and collectives over it (simllm.topology)."""

import pytest

from simllm.errors import InputError
from simllm.hardware import load_cluster, load_node
from simllm.topology import build_topology, collective, send_recv, with_nodes


def test_nvswitch_node_is_a_star():
    topo = build_topology("dgx-a100", calibration=False)
    node = load_node("dgx-a100")
    assert topo.num_devices == 8
    p = topo.path(0, 5)
    assert [e[1] for e in p.edges] == [("sw", 0), ("dev", 0, 5)]
    assert p.bottleneck_bw == pytest.approx(node.scale_up_bw * (node.scale_up_link.efficiency.value
                                                                 if node.scale_up_link.efficiency else 1.0))
    assert p.tier == "scale_up"


def test_full_mesh_has_direct_per_link_edges():
    topo = build_topology("atlas-800-910b")
    node = load_node("atlas-800-910b")
    assert not any(v[0] == "sw" for v in topo.graph)
    p = topo.path(0, 7)
    assert len(p.edges) == 1
    assert topo.graph.edges[p.edges[0]]["bw"] == pytest.approx(node.scale_up_link.bw)
    # all-reduce over the mesh uses all 7 links at once and beats a ring over one link each
    e = collective(topo, "all_reduce", 256e6, 8)
    assert e.algorithm == "direct"
    assert e.candidates["ring"] > 3 * e.candidates["direct"]


def test_torus_wraparound():
    topo = build_topology("tpu-v5p-slice")
    assert topo.num_devices == 64
    # 6 neighbours per chip in a 4x4x4 torus; (0,0,0) and (0,0,3) are neighbours by wraparound
    assert topo.graph.out_degree(("dev", 0, 0)) == 6
    assert topo.graph.has_edge(("dev", 0, 0), ("dev", 0, 3))
    assert len(topo.path(0, 63).edges) == 3  # (0,0,0)->(3,3,3): one wrap hop per dimension


def test_rail_optimised_fabric_and_oversubscription():
    topo = build_topology("a100-2node", calibration=False)
    same_rail = topo.path(0, 8)
    assert ("spine",) not in {v for e in same_rail.edges for v in e}
    assert same_rail.tier == "scale_out"
    assert same_rail.bottleneck_bw == pytest.approx(topo.node.scale_out_bw *
                                                    (topo.node.scale_out_link.efficiency.value
                                                     if topo.node.scale_out_link.efficiency else 1.0))
    # eight rails at once do not share a link: full rate each
    bw, _ = topo.shared_bottleneck([(i, 8 + i) for i in range(8)])
    assert bw == pytest.approx(same_rail.bottleneck_bw)
    # two transfers on one NIC share it
    bw2, _ = topo.shared_bottleneck([(0, 8), (0, 9)])
    assert bw2 == pytest.approx(same_rail.bottleneck_bw / 2)


def test_fat_tree_oversubscription_limits_uplinks():
    from simllm.hardware import Cluster, ClusterSpec, Fabric
    from simllm.topology import Topology

    c = load_cluster("h800-ep")
    spec = ClusterSpec(name="x", node=c.node.name, num_nodes=2, fabric=Fabric(topology="fat_tree", oversubscription=4))
    topo = Topology(Cluster(spec, c.node))
    nic = topo.path(0, 8).bottleneck_bw
    bw, _ = topo.shared_bottleneck([(i, 8 + i) for i in range(8)])
    assert bw == pytest.approx(nic / 4)


def test_collective_candidates_and_bus_bandwidth():
    topo = build_topology("h800-ep")
    e = collective(topo, "all_reduce", 1 << 30, 8)
    assert e.nodes == 1 and e.algorithm in e.candidates
    assert e.time_s == pytest.approx(min(e.candidates.values()))
    assert e.busbw == pytest.approx(e.algbw * 2 * 7 / 8)
    e16 = collective(topo, "all_reduce", 1 << 30, 16)
    assert e16.nodes == 2 and "hierarchical" in e16.candidates
    assert e16.time_s > e.time_s
    ag = collective(topo, "all_gather", 1 << 30, 8)
    assert ag.busbw == pytest.approx(ag.algbw * 7 / 8)
    small = collective(topo, "all_reduce", 1024, 16)
    assert small.time_s < 1e-3
    p = send_recv(topo, 1 << 30, 0, 8)
    assert p.busbw == pytest.approx(p.algbw)
    assert p.busbw < send_recv(topo, 1 << 30, 0, 1).busbw


def test_bad_input():
    topo = build_topology("dgx-a100")
    with pytest.raises(InputError):
        collective(topo, "all_reduce", 1e6, 9)
    with pytest.raises(InputError):
        collective(topo, "broadcastx", 1e6, 2)
    with pytest.raises(InputError):
        collective(topo, "all_reduce", -1, 2)
    with pytest.raises(InputError):
        collective(topo, "all_reduce", 1e6, 8, algorithm="hierarchical")


def test_with_nodes_keeps_fabric():
    t = with_nodes("h800-ep", 2)
    assert t.num_devices == 16 and t.cluster.spec.fabric.topology == "fat_tree"


def test_shared_nic_when_fewer_nics_than_devices():
    from simllm.hardware import Cluster, ClusterSpec, Node
    from simllm.topology import Topology

    base = load_node("dgx-a100")
    spec = base.spec.model_copy(update={"scale_out": base.spec.scale_out.model_copy(update={"nics_per_device": 0.125})})
    node = Node(spec, base.accelerator, base.scale_up_link, base.scale_out_link)
    topo = Topology(Cluster(ClusterSpec(name="x", node="dgx-a100", num_nodes=2), node), calibration=False)
    assert topo.nics_per_node == 1
    one = topo.path(0, 8).bottleneck_bw
    assert one == pytest.approx(base.scale_out_link.bw * (base.scale_out_link.efficiency.value
                                                          if base.scale_out_link.efficiency else 1.0))
    bw, _ = topo.shared_bottleneck([(i, 8 + i) for i in range(8)])  # eight devices, one NIC
    assert bw == pytest.approx(one / 8)


def test_calibration_sets_unmeasured_link_efficiency():
    from simllm.cost.calibration import Calibration, CommParams

    cal = Calibration(comm=CommParams(scale_up_efficiency=0.5, scale_out_efficiency=0.25,
                                      scale_up_alpha_scale=2.0, launch_overhead_s=1e-5))
    topo = build_topology("a100-2node", calibration=cal)
    node = load_node("dgx-a100")
    assert node.scale_up_link.efficiency is None  # nvlink3 carries no measured efficiency
    assert topo.path(0, 1).bottleneck_bw == pytest.approx(0.5 * node.scale_up_bw)
    assert topo.path(0, 1).latency == pytest.approx(2.0 * node.scale_up_link.alpha)
    assert topo.path(0, 8).bottleneck_bw == pytest.approx(0.25 * node.scale_out_bw)
    assert send_recv(topo, 0.0, 0, 1).time_s == 0.0
    assert send_recv(topo, 1.0, 0, 1).time_s > 1e-5
    # a link's own measured efficiency wins over the transferred fraction
    h800 = build_topology("h800-ep", calibration=cal)
    assert h800.path(0, 1).bottleneck_bw == pytest.approx(
        h800.node.scale_up_bw * h800.node.scale_up_link.efficiency.value)


def test_topology_matches_cost_model_group_collectives_on_switch_nodes():
    """Two places price collectives (the graph here, the node-level groups in simllm.cost.collectives);
    on NVSwitch nodes with one NIC per device they must agree."""
    from simllm.cost import collectives as C
    from simllm.cost.calibration import calibration_for

    node = load_node("dgx-a100")
    links = C.CommLinks.from_node(node, calibration_for(node.accelerator).comm)
    for nodes, g in ((1, 2), (1, 8), (2, 8), (2, 4), (4, 8)):
        topo = with_nodes("a100-2node", nodes)
        ranks = [n * 8 + i for n in range(nodes) for i in range(g)]
        # (all_gather across nodes differs on purpose: the in-node step moves the whole output,
        # (g-1)/g * S per device, whichever order the two steps take)
        for op, f in (("all_reduce", C.all_reduce), ("all_gather", C.all_gather)):
            if op == "all_gather" and nodes > 1:
                continue
            for size in (1e4, 1e7, 1e9):
                mine = collective(topo, op, size, ranks=ranks).time_s
                theirs = f(size, len(ranks), links, g)
                assert mine == pytest.approx(theirs, rel=1e-6), (op, nodes, g, size)
