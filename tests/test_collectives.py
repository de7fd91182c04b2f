"""Alpha-beta collectives (simllm.cost.collectives) and their A100 calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simllm.cost import collectives as C
from simllm.cost.calibration import CommParams, calibration_for
from simllm.errors import InputError
from simllm.hardware import load_accelerator, load_node


def test_primitives_textbook_forms():
    bw, a = 100e9, 2e-6
    S = 64e6
    assert C.ring_all_reduce(8, S, bw, a) == pytest.approx(14 * a + 2 * 7 / 8 * S / bw)
    assert C.tree_all_reduce(8, S, bw, a) == pytest.approx(6 * a + 2 * 7 / 8 * S / bw)
    assert C.ring_all_gather(4, S, bw, a) == pytest.approx(3 * a + 0.75 * S / bw)
    assert C.ring_reduce_scatter(4, S, bw, a) == C.ring_all_gather(4, S, bw, a)
    assert C.direct_reduce_scatter(4, S, bw, a) == pytest.approx(a + 0.75 * S / bw)
    assert C.send_recv(2, S, bw, a) == pytest.approx(a + S / bw)
    for f in (C.ring_all_reduce, C.tree_all_reduce, C.ring_all_gather, C.direct_all_to_all):
        assert f(1, S, bw, a) == 0.0 and f(8, 0.0, bw, a) == 0.0


def _links(comm=None):
    node = load_node("dgx-a100")
    return C.CommLinks.from_node(node, comm or CommParams())


def test_group_collectives_shape():
    L = _links()
    S = 32e6
    intra = C.all_reduce(S, 8, L, 8)
    inter = C.all_reduce(S, 16, L, 8)
    assert 0 < intra < inter  # crossing nodes is slower
    assert C.all_reduce(2 * S, 8, L, 8) > intra
    assert C.all_reduce(S, 1, L) == 0.0
    # ring/tree/hierarchical are all available; auto is never slower than ring or tree
    for alg in ("ring", "tree", "hierarchical"):
        assert C.all_reduce(S, 16, L, 8, algorithm=alg) > 0
    assert C.all_reduce(S, 16, L, 8) <= min(C.all_reduce(S, 16, L, 8, algorithm=a) for a in ("ring", "tree"))
    assert C.all_gather(S, 8, L, 8) < intra and C.reduce_scatter(S, 8, L, 8) < intra
    assert C.all_to_all(S, 16, L, 8) > C.all_to_all(S, 8, L, 8) > 0
    assert C.p2p(S, L, cross_node=True) > C.p2p(S, L, cross_node=False) > 0
    assert C.collective_time("send_recv", S, 2, L, 1) == C.p2p(S, L, cross_node=True)


def test_node_nic_aggregation_caps():
    L = _links(CommParams(scale_out_efficiency=0.5, scale_out_node_efficiency=0.25))
    one = L.node_out_bw(1)
    assert L.node_out_bw(2) == pytest.approx(2 * one)
    assert L.node_out_bw(8) == pytest.approx(8 * 25e9 * 0.25)  # capped by the node


def test_bad_groups():
    L = _links()
    with pytest.raises(InputError):
        C.all_reduce(1e6, 12, L, 8)  # 8 does not divide 12
    with pytest.raises(InputError):
        C.all_reduce(1e6, 16, L, 8, algorithm="butterfly")
    with pytest.raises(InputError):
        C.collective_time("gossip", 1e6, 8, L)


def test_link_efficiency_from_descriptor_wins():
    node = load_node("dgx-h100")
    L = C.CommLinks.from_node(node, CommParams(scale_up_efficiency=0.1))
    if node.scale_up_link.efficiency is not None:
        assert L.up_bw == pytest.approx(node.scale_up_bw * node.scale_up_link.efficiency.value)


def test_a100_collectives_error(shared_data):
    from simllm.cost.fit import comm_rows, error_stats, predict_comm

    base = shared_data / "calibration" / "vidur-a100"
    acc = load_accelerator("a100-sxm-80gb")
    cal = calibration_for(acc)
    node = load_node("dgx-a100")
    rows = comm_rows([base / "a100_dgx_all_reduce.csv", base / "a100_dgx_send_recv.csv"])
    pred = predict_comm(rows, node, cal)
    e = np.abs(pred / rows["t"] - 1)
    ar = rows["op"] == "all_reduce"
    intra = rows["g"] == rows["n"]
    figs = {"all_reduce_intra": np.median(e[ar & intra]), "all_reduce_inter": np.median(e[ar & ~intra]),
            "send_recv": np.median(e[~ar]), "send_recv_intra": np.median(e[~ar & intra]),
            "send_recv_inter": np.median(e[~ar & ~intra])}
    print({k: round(float(v), 4) for k, v in figs.items()})
    assert figs["all_reduce_intra"] <= 0.15, figs
    assert figs["all_reduce_inter"] <= 0.15, figs
    assert figs["send_recv"] <= 0.15, figs


def test_node_accepted_in_place_of_links():
    node = load_node("dgx-a100")
    L = C.links_for(node)
    assert C.all_reduce(8e6, 8, node, 8) == C.all_reduce(8e6, 8, L, 8)
    assert C.collective_time("all_gather", 8e6, 16, node, 8) == C.all_gather(8e6, 16, L, 8)
