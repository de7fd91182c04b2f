"""Expert-parallel dispatch/combine against DeepEP's published H800 figures.

DeepEP README (legacy normal kernels; H800, NVLink ~160 GB/s, CX7 IB 400 Gb/s; 4096 tokens per
rank, hidden 7168, top-4 groups, top-8 of 256 experts, FP8 dispatch and BF16 combine). Its
tests/test_internode.py reports RDMA bandwidth = (token, node) pairs x hidden x bytes / time,
own node included; test_intranode.py reports received tokens x hidden x bytes / time over NVLink.
"""

import pytest

from simllm.topology import ep_dispatch, with_nodes

DEEPEP = {  # EP: (dispatch GB/s, combine GB/s)
    8: (153, 158),
    16: (43, 43),
    32: (58, 57),
    64: (51, 50),
}


@pytest.mark.parametrize("ep", sorted(DEEPEP))
def test_deepep_normal_kernels_within_20pct(ep):
    topo = with_nodes("h800-ep", ep // 8)
    for op, dtype, ref in (("dispatch", "fp8", DEEPEP[ep][0]), ("combine", "bf16", DEEPEP[ep][1])):
        e = ep_dispatch(topo, 4096, 7168, 8, ep, experts=256, dtype=dtype, op=op)
        got = e.extra["deepep_bw"] / 1e9
        assert got == pytest.approx(ref, rel=0.20), (ep, op, got, ref)


def test_dispatch_scales_with_tokens_and_has_startup_latency():
    topo = with_nodes("h800-ep", 2)
    a = ep_dispatch(topo, 4096, 7168, 8, 16)
    b = ep_dispatch(topo, 8192, 7168, 8, 16)
    assert b.time_s == pytest.approx(2 * a.time_s, rel=0.05)
    tiny = ep_dispatch(topo, 1, 7168, 8, 16)
    assert tiny.time_s >= tiny.extra["startup_latency_s"] > 0


def test_skewed_expert_loads_slow_dispatch():
    from simllm.topology import build_topology

    topo = build_topology("h800-ep")
    even = ep_dispatch(topo, 4096, 7168, 8, 8)
    loads = [1.0] * 8
    loads[3] = 2.0
    skew = ep_dispatch(topo, 4096, 7168, 8, 8, device_loads=loads)
    assert skew.time_s > 1.5 * even.time_s
