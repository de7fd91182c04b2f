"""Collectives: alpha-beta times, the one place where these formulas live.

Two layers:

1. Primitives ``f(n, nbytes, bw, alpha) -> seconds`` over one tier of links (``bw``: usable
   per-direction bandwidth each rank gets, B/s; ``alpha``: latency per step, s). nccl-tests
   conventions for ``nbytes``: the all-reduce buffer, the all-gather output, the
   reduce-scatter input, the all-to-all send buffer per rank, one send/recv message.
   ``simllm.topology`` calls these with the bandwidth its graph gives a group.

   ===================  ====================================================
   ring all-reduce      2(n-1) alpha + 2(n-1)/n * S / bw
   tree all-reduce      2 ceil(log2 n) alpha + 2(n-1)/n * S / bw  (double binary tree, pipelined)
   ring all-gather      (n-1) alpha + (n-1)/n * S / bw  (reduce-scatter the same)
   direct reduce-scat.  alpha + (n-1)/n * S / bw  (all peers at once over a full mesh)
   all-to-all           alpha + (n-1)/n * S / bw
   send/recv            alpha + S / bw
   ===================  ====================================================

2. Calibrated group collectives on a node descriptor (:class:`CommLinks` + ``all_reduce``,
   ``all_gather``, ``reduce_scatter``, ``all_to_all``, ``send_recv``): a group of ``n`` ranks
   with ``g`` of them on each node. Point to point, the scale-up link gives
   ``Node.scale_up_bw * e_up`` and one device's NIC ``Node.scale_out_bw * e_out``; the ``g``
   devices of a node together get ``min(g * scale_out_bw * e_out, devices * scale_out_bw * e_node)``
   across nodes (the node's NICs, PCIe switches and fabric rarely deliver their sum: the A100
   tables show about 3.5 NICs' worth for 8 devices). Collectives run at ``e_coll`` of those
   bandwidths (reduction and protocol cost), latencies are the descriptors' ``alpha`` times a
   fitted scale. A group spanning nodes runs a flat ring or tree whose bottleneck is the
   slower of the scale-up link and the node's share of NIC bandwidth (what NCCL does, and what
   the measured DGX A100 tables follow); ``algorithm="hierarchical"`` prices reduce-scatter in
   the node, all-reduce across nodes on 1/g of the data and all-gather in the node. Every call
   adds a fixed launch overhead. All factors are fractions of the links' nominal bandwidths or
   multiples of their latencies, so an A100 fit transfers to other links; a link's own
   measured ``efficiency`` replaces the transferred point-to-point fraction.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from dataclasses import dataclass

from ..errors import InputError
from .calibration import CommParams


# --------------------------------------------------------------------------- primitives
def ring_all_reduce(n: int, nbytes: float, bw: float, alpha: float) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (n - 1) * alpha + 2.0 * (n - 1) / n * nbytes / bw


def tree_all_reduce(n: int, nbytes: float, bw: float, alpha: float) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * math.ceil(math.log2(n)) * alpha + 2.0 * (n - 1) / n * nbytes / bw


def ring_all_gather(n: int, nbytes: float, bw: float, alpha: float) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return (n - 1) * alpha + (n - 1) / n * nbytes / bw


ring_reduce_scatter = ring_all_gather


def direct_reduce_scatter(n: int, nbytes: float, bw: float, alpha: float) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return alpha + (n - 1) / n * nbytes / bw


def direct_all_to_all(n: int, nbytes: float, bw: float, alpha: float) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return alpha + (n - 1) / n * nbytes / bw


def send_recv(n: int, nbytes: float, bw: float, alpha: float) -> float:
    if nbytes <= 0:
        return 0.0
    return alpha + nbytes / bw


# --------------------------------------------------------------------------- calibrated groups
@dataclass(frozen=True)
class CommLinks:
    """Usable bandwidths and latencies of one node type, with calibration applied."""

    up_bw: float  # point-to-point, per device, per direction, B/s
    up_alpha: float
    out_bw: float  # point-to-point through one device's NIC(s), B/s (0: no scale-out)
    out_alpha: float
    devices_per_node: int
    node_out_cap: float = float("inf")  # what all devices of a node reach together across nodes, B/s
    coll_eff: float = 1.0  # collectives' bandwidth relative to point-to-point
    launch: float = 0.0
    p2p_launch: float = 0.0
    intra: "IntraLink | None" = None  # the node's scale-up link for the kernel-level model (tp_all_reduce)

    @classmethod
    def from_node(cls, node, comm: CommParams) -> "CommLinks":
        up = node.scale_up_link
        e_up = up.efficiency.value if up.efficiency is not None else comm.scale_up_efficiency
        out = node.scale_out_link
        cap = float("inf")
        if out is not None and node.scale_out_bw > 0:
            e_out = out.efficiency.value if out.efficiency is not None else comm.scale_out_efficiency
            out_bw, out_alpha = node.scale_out_bw * e_out, out.alpha * comm.scale_out_alpha_scale
            cap = node.devices * node.scale_out_bw * comm.scale_out_node_efficiency
        else:
            out_bw, out_alpha = 0.0, 0.0
        return cls(up_bw=node.scale_up_bw * e_up, up_alpha=up.alpha * comm.scale_up_alpha_scale,
                   out_bw=out_bw, out_alpha=out_alpha, devices_per_node=node.devices, node_out_cap=cap,
                   coll_eff=comm.collective_efficiency, launch=comm.launch_overhead_s,
                   p2p_launch=comm.p2p_overhead_s, intra=IntraLink.from_node(node))

    def node_out_bw(self, g: int) -> float:
        """Point-to-point scale-out bandwidth the ``g`` group members of one node get together."""
        if self.out_bw <= 0:
            raise InputError("the group spans nodes but the node has no scale-out link", field="node.scale_out")
        return min(max(g, 1) * self.out_bw, self.node_out_cap)


def links_for(node, calibration=None) -> CommLinks:
    """:class:`CommLinks` of a node descriptor with its accelerator's calibration (or the one given)."""
    from .calibration import calibration_for

    return CommLinks.from_node(node, calibration_for(node.accelerator, calibration).comm)


def _as_links(links) -> CommLinks:
    return links if isinstance(links, CommLinks) else links_for(links)


def _split(n: int, g: int | None, links: CommLinks) -> tuple[int, int]:
    if n < 1:
        raise InputError(f"group size must be >= 1, got {n}")
    g = min(n, links.devices_per_node) if g is None else int(g)
    if g < 1 or g > n or n % g:
        raise InputError(f"devices per node {g} must divide the group size {n}")
    return g, n // g


def all_reduce(nbytes: float, n: int, links: CommLinks, devices_per_node: int | None = None,
               algorithm: str = "auto") -> float:
    """All-reduce of an ``nbytes`` buffer over ``n`` ranks, ``devices_per_node`` of them per node."""
    links = _as_links(links)
    if n <= 1 or nbytes <= 0:
        return 0.0
    g, k = _split(n, devices_per_node, links)
    e = links.coll_eff
    cands = {}
    if k == 1:
        cands["ring"] = ring_all_reduce(n, nbytes, links.up_bw * e, links.up_alpha)
        cands["tree"] = tree_all_reduce(n, nbytes, links.up_bw * e, links.up_alpha)
        auto = ("ring", "tree")
    else:
        node_bw = links.node_out_bw(g) * e
        bw = min(links.up_bw * e, node_bw) if g > 1 else node_bw
        alpha = max(links.up_alpha, links.out_alpha)
        cands["ring"] = ring_all_reduce(n, nbytes, bw, alpha)
        cands["tree"] = tree_all_reduce(n, nbytes, bw, alpha)
        intra = 2 * ring_reduce_scatter(g, nbytes, links.up_bw * e, links.up_alpha)
        # k nodes exchange the 1/g shard each device holds; the node's g shards share its NICs
        inter = ring_all_reduce(k, nbytes / g, node_bw / g, links.out_alpha)
        cands["hierarchical"] = intra + inter
        auto = ("ring", "tree")  # NCCL's choices; the measured A100 multi-node tables follow them
    if algorithm != "auto":
        if algorithm not in cands:
            raise InputError(f"unknown all-reduce algorithm {algorithm!r} for this group "
                             f"(expected one of: auto, {', '.join(cands)})")
        return cands[algorithm] + links.launch
    return min(cands[a] for a in auto) + links.launch


def _gather_like(nbytes: float, n: int, links: CommLinks, devices_per_node: int | None) -> float:
    links = _as_links(links)
    if n <= 1 or nbytes <= 0:
        return 0.0
    g, k = _split(n, devices_per_node, links)
    e = links.coll_eff
    if k == 1:
        return ring_all_gather(n, nbytes, links.up_bw * e, links.up_alpha) + links.launch
    node_bw = links.node_out_bw(g) * e
    flat = ring_all_gather(n, nbytes, min(links.up_bw * e, node_bw) if g > 1 else node_bw,
                           max(links.up_alpha, links.out_alpha))
    return flat + links.launch


def all_gather(nbytes: float, n: int, links: CommLinks, devices_per_node: int | None = None) -> float:
    """All-gather producing an ``nbytes`` output on each of ``n`` ranks."""
    return _gather_like(nbytes, n, links, devices_per_node)


def reduce_scatter(nbytes: float, n: int, links: CommLinks, devices_per_node: int | None = None) -> float:
    """Reduce-scatter of an ``nbytes`` input per rank over ``n`` ranks."""
    return _gather_like(nbytes, n, links, devices_per_node)


def all_to_all(nbytes: float, n: int, links: CommLinks, devices_per_node: int | None = None) -> float:
    """All-to-all, ``nbytes`` send buffer per rank split evenly among the ``n`` ranks: the
    intra-node share rides the scale-up link, the off-node share the node's NICs, in parallel."""
    links = _as_links(links)
    if n <= 1 or nbytes <= 0:
        return 0.0
    g, k = _split(n, devices_per_node, links)
    t_up = direct_all_to_all(g, nbytes * g / n, links.up_bw, links.up_alpha) if g > 1 else 0.0
    if k == 1:
        return t_up + links.launch
    off = nbytes * (n - g) / n  # bytes each rank sends off its node
    t_out = links.out_alpha + off / (links.node_out_bw(g) / g)
    return max(t_up, t_out) + links.launch  # point-to-point traffic: no reduction, p2p efficiencies


def p2p(nbytes: float, links: CommLinks, *, cross_node: bool) -> float:
    """One send/recv of ``nbytes`` between two devices (pipeline stages, KV transfer)."""
    links = _as_links(links)
    if nbytes <= 0:
        return 0.0
    if cross_node:
        return send_recv(2, nbytes, links.node_out_bw(1), links.out_alpha) + links.p2p_launch
    return send_recv(2, nbytes, links.up_bw, links.up_alpha) + links.p2p_launch


def collective_time(op: str, nbytes: float, n: int, links: CommLinks, devices_per_node: int | None = None) -> float:
    """Dispatch by name: all_reduce, all_gather, reduce_scatter, all_to_all, send_recv."""
    links = _as_links(links)
    if op == "all_reduce":
        return all_reduce(nbytes, n, links, devices_per_node)
    if op == "all_gather":
        return all_gather(nbytes, n, links, devices_per_node)
    if op == "reduce_scatter":
        return reduce_scatter(nbytes, n, links, devices_per_node)
    if op == "all_to_all":
        return all_to_all(nbytes, n, links, devices_per_node)
    if op == "send_recv":
        g = links.devices_per_node if devices_per_node is None else devices_per_node
        return p2p(nbytes, links, cross_node=n > g)
    raise InputError(f"unknown collective {op!r} (expected all_reduce, all_gather, reduce_scatter, all_to_all, "
                     "send_recv)")


# =========================================================================== kernel-level physics
# What one collective *kernel* costs inside a node, as the measured NCCL and framework
# all-reduce tables (AIConfigurator: nccl-tests style back-to-back calls, frameworks' custom
# all-reduce in CUDA-graph and eager mode) see it. The group functions above are fitted on
# Vidur's A100 tables, which time an eager ``torch.distributed`` call from the host (their
# fitted ~53 us ``launch_overhead_s`` is that host-side call, not the kernel); the serving step
# cost runs under CUDA graphs and uses the functions below.
#
# NCCL (``nccl_time``). NCCL's tuner prices every (algorithm, protocol) pair as a base latency,
# a per-step hardware latency and a bandwidth, and runs the cheapest; so does this model:
#
#     t = launch + steps(alg, n) * alpha_link * a_p + F(op, n) * S / (bw_link * e_p * share(n))
#
# protocols p = LL (low latency, flag-per-8-bytes: half the bandwidth at best), LL128, Simple;
# ring steps 2(n-1) for all-reduce, n-1 for all-gather / reduce-scatter, one for all-to-all
# (every peer at once: the measured small all-to-alls take 6.5 / 6.5 / 7.4 us on 2 / 4 / 8 H100s);
# F = 2(n-1)/n (all-reduce), (n-1)/n (the others, nccl-tests' bus factors). NVLS (NVLink SHARP,
# in-switch reduction on third-generation NVSwitch, H100-class and later): an all-reduce moves
# about S in and S out of each GPU whatever n, in 2 steps: ``t = launch + 2 a_nvls alpha +
# S / (bw e_nvls)``. ``share(n)``: 1 on a switched fabric; on PCIe without NVLink the ranks share
# the host's root complex and socket link, per-rank bandwidth ``(2 / n) ** host_share_exp``.
# Every protocol also streams the buffer through the GPU's own memory once (input reads, output
# writes, the reduction): ``+ S / (hbm_bw * local_eff)``. Evidence: at 128 MB the A100 all-gather
# takes 496 / 578 / 660 us on 2 / 4 / 8 GPUs, linear in F = (n-1)/n with slope 1 / (307 GB/s),
# the NVLink-3 nominal 300 GB/s, and intercept S / (485 GB/s), a quarter of HBM bandwidth (H100:
# 845 GB/s of 3.35 TB/s); without it the 2-GPU and 8-GPU rows cannot both fit.
# ``alpha_link``, ``bw_link``: the scale-up link descriptor's per-step latency and nominal
# per-direction bandwidth, so the fitted multipliers and fractions transfer to other links.
#
# Frameworks' custom all-reduce (``custom_allreduce_time``; vLLM, SGLang, TensorRT-LLM): peer
# buffers mapped over NVLink/PCIe P2P, flags as barriers. One-shot: one barrier, every rank reads
# the n-1 peers' full buffers (``(n-1) S`` through its link); two-shot: reduce-scatter then
# all-gather, two barriers, ``2 (n-1)/n S``. Above their size limits the frameworks call NCCL, so
# the kernel time is the cheapest of one-shot, two-shot and NCCL's all-reduce. Launch: under a
# CUDA graph the kernel alone; eager adds the host call and a copy of the input into the
# registered buffer (read + write of S at HBM bandwidth): measured eager - graph gaps at 1 GiB
# are 1.16 ms on A100 (2.1 GB at 1.85 TB/s) and 0.74 ms on H100 (2.9 TB/s).

DTYPE_SIZE = {"half": 2, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2, "int8": 1, "fp8": 1, "float": 4,
              "float32": 4, "fp32": 4}
NVLS_LINKS = ("nvlink4", "nvlink4-h800", "nvlink5")  # NVSwitch gen 3+ (NVLink SHARP); gen 2 (A100) has none
NCCL_OPS = {"all_reduce": "nccl_all_reduce", "all_gather": "nccl_all_gather",
            "reduce_scatter": "nccl_reduce_scatter", "alltoall": "nccl_alltoall"}
PROTOCOLS = ("ll", "ll128", "simple")


@dataclass(frozen=True)
class IntraLink:
    """What the kernel-level model needs from one node: its scale-up link's nominal
    per-direction bandwidth (B/s) and per-step latency (s), whether ranks talk through a switch
    (NVSwitch) or share a PCIe host, whether the switch reduces (NVLS), and HBM bandwidth."""

    name: str
    bw: float
    alpha: float
    switched: bool
    nvls: bool
    hbm_bw: float

    @classmethod
    def from_node(cls, node) -> "IntraLink":
        up = node.scale_up_link
        switched = up.kind != "pcie"
        return cls(name=up.name, bw=float(node.scale_up_bw), alpha=float(up.alpha), switched=switched,
                   nvls=switched and node.spec.scale_up.topology == "switch" and up.name in NVLS_LINKS,
                   hbm_bw=float(node.accelerator.hbm_bw))


@dataclass(frozen=True)
class NcclParams:
    """Dimensionless multipliers of the link's latency (``*_alpha``) and fractions of its
    bandwidth (``*_eff``) per protocol, NVLS's pair, the PCIe sharing exponent, and the fixed
    seconds of one NCCL kernel call (``launch_s``)."""

    launch_s: float = 4.0e-6
    ll_alpha: float = 1.0
    ll_eff: float = 0.3
    ll128_alpha: float = 3.0
    ll128_eff: float = 0.6
    simple_alpha: float = 6.0
    simple_eff: float = 0.75
    nvls_alpha: float = 4.0
    nvls_eff: float = 0.5
    host_share_exp: float = 1.0
    local_eff: float = 0.25

    def vector(self) -> list:
        return [self.launch_s * 1e6, self.ll_alpha, self.ll_eff, self.ll128_alpha, self.ll128_eff, self.simple_alpha,
                self.simple_eff, self.nvls_alpha, self.nvls_eff, self.host_share_exp, self.local_eff]

    @classmethod
    def from_vector(cls, x) -> "NcclParams":
        x = [float(v) for v in x]
        return cls(x[0] * 1e-6, *x[1:])


@dataclass(frozen=True)
class CustomARParams:
    """A framework's own all-reduce: fixed kernel seconds under a CUDA graph (``launch_graph_s``)
    and the extra seconds of an eager call (``launch_eager_s``, host launch and buffer
    registration), the barrier latency as a multiple of the link's step latency, the fraction of
    the link bandwidth peer reads reach, the fraction of HBM bandwidth the eager input copy
    reaches.

    Over PCIe without a switch fabric (``link.switched`` False) the peer reads of more ranks than
    share one PCIe switch (:data:`PCIE_SWITCH_GPUS`) cross the host root complex: there the link
    bandwidth is scaled by ``cross_eff * (PCIE_SWITCH_GPUS / n) ** cross_exp`` (``n`` ranks' reads
    share the host's lanes), while ranks under one switch read each other at the link's rate.
    Evidence (L40S, vLLM custom all-reduce, 512 MiB, CUDA graph): 56 ms on 2 GPUs (9.6 GB/s), 431
    ms on 4 (7.7x) and 961 ms on 8 (2.2x the 4-GPU time): a break between 2 and 4 ranks that no
    single power law of ``n`` has (NCCL's host share fitted 4 -> 8 overpredicts 8 GPUs by 50% and
    underpredicts 4 by 28%). The barrier's flags to ranks beyond the switch cost ``cross_alpha``
    times a flag under it (CUDA graph, 128 bytes: 5.4 / 13.3 / 25.0 us on 2 / 4 / 8 GPUs, not the
    1 : 3 : 7 of equal flags).

    Eager calls: ``max(launch_eager_s, graph time + input copy)``. The tables time eager calls back to
    back, so the host's issue time (Python, the framework's dispatch, the launch) overlaps the previous
    call's kernel, and a call costs the slower of the two. Evidence (L40S, vLLM 0.22 eager rows): 2 GPUs
    stay at 43 us from 16 Ki to 256 Ki elements while the graph rows grow 7 -> 32 us, then follow the graph
    rows plus the copy (512 Ki: 66 vs 60 us, 1 Mi: 124 vs 117 us); 4 GPUs 57 us up to 32 Ki elements, then
    64 vs 60 us at 64 Ki. The earlier sum ``graph + launch_eager_s + copy`` priced the 2-GPU 256 Ki row at
    79 us (1.84x) and 64 Ki on 4 GPUs at 109 us (1.71x). The serving step prices eager all-reduces as
    the graph kernel plus the copy (:func:`_kernel_all_reduce_many`): in a forward pass the host runs
    ahead of the GPU, so the issue time is hidden there. Over PCIe, an eager call over ranks beyond one
    switch issues in ``cross_eager`` x ``launch_eager_s`` (the host-side synchronisation of the eager path
    crosses the root complex, as the barrier's flags do): L40S eager floors 43 / 57 / 60 us on 2 / 4 / 8
    GPUs for vLLM 0.22 and 40 / 85 / 90 us for SGLang 0.5.14, a break between 2 and 4 ranks, not a growth
    with the rank count (one floor priced SGLang's 2-GPU eager rows 2.0-2.1x). Fitted per framework on
    PCIe tables only (1 elsewhere: no NVLink row can tell it)."""

    launch_graph_s: float = 3.0e-6
    launch_eager_s: float = 2.0e-5
    barrier_alpha: float = 2.0
    eff: float = 0.7
    copy_eff: float = 0.9
    cross_eff: float = 0.5
    cross_exp: float = 1.0
    cross_alpha: float = 3.0
    cross_eager: float = 1.0

    def vector(self) -> list:
        return [self.launch_graph_s * 1e6, self.launch_eager_s * 1e6, self.barrier_alpha, self.eff, self.copy_eff,
                self.cross_eff, self.cross_exp, self.cross_alpha, self.cross_eager]

    @classmethod
    def from_vector(cls, x) -> "CustomARParams":
        x = [float(v) for v in x]
        return cls(x[0] * 1e-6, x[1] * 1e-6, x[2], x[3], x[4], *x[5:9])


#: GPUs under one PCIe switch in a PCIe-only server (assumption: the common 8-GPU PCIe layout of
#: two GPUs per switch, two switches per CPU socket; the L40S custom all-reduce tables show the
#: break between 2 and 4 ranks that this layout implies)
PCIE_SWITCH_GPUS = 2.0


def _share(n, link: IntraLink, p: NcclParams):
    n = np.asarray(n, dtype=float)
    return np.ones_like(n) if link.switched else (2.0 / np.maximum(n, 2.0)) ** p.host_share_exp


def nccl_time(op: str, nbytes, n, link: IntraLink, p: NcclParams, *, with_algorithm: bool = False):
    """Seconds of one NCCL ``op`` (all_reduce, all_gather, reduce_scatter, alltoall) of ``nbytes``
    (nccl-tests size) over ``n`` ranks of one node; vectorised over ``nbytes`` and ``n``."""
    S = np.asarray(nbytes, dtype=float)
    n = np.asarray(n, dtype=float)
    if op not in NCCL_OPS:
        raise InputError(f"unknown NCCL op {op!r} (expected one of {', '.join(NCCL_OPS)})", field="op_name")
    ar = op == "all_reduce"
    steps = 2 * (n - 1) if ar else (np.ones_like(n) if op == "alltoall" else (n - 1))
    fac = (2 * (n - 1) / n) if ar else ((n - 1) / n)
    bw = link.bw * _share(n, link, p)
    loc = S / (link.hbm_bw * p.local_eff)
    cands = {pr: steps * link.alpha * getattr(p, f"{pr}_alpha") + fac * S / (bw * getattr(p, f"{pr}_eff")) + loc
             for pr in PROTOCOLS}
    if ar and link.nvls:
        cands["nvls"] = np.where(n > 2, 2 * link.alpha * p.nvls_alpha + S / (link.bw * p.nvls_eff) + loc, np.inf)
    names = list(cands)
    stack = np.stack([np.broadcast_to(cands[k], np.broadcast(S, n).shape) for k in names])
    t = stack.min(axis=0) + p.launch_s
    t = np.where((n <= 1) | (S <= 0), 0.0, t)
    if with_algorithm:
        return t, np.array(names, dtype=object)[stack.argmin(axis=0)]
    return t


def custom_allreduce_time(nbytes, n, link: IntraLink, p: CustomARParams, nccl: NcclParams, *,
                          graph=True):
    """Seconds of a framework's custom all-reduce of ``nbytes`` over ``n`` ranks of one node
    (``graph``: True for a CUDA-graph replay, False for an eager call; may be an array)."""
    S = np.asarray(nbytes, dtype=float)
    n = np.asarray(n, dtype=float)
    g = np.asarray(graph, dtype=bool)
    if link.switched:
        bw = link.bw * np.ones_like(n)
    else:  # PCIe: full rate under one switch, the host's shared lanes beyond it
        bw = link.bw * np.where(n <= PCIE_SWITCH_GPUS, 1.0,
                                p.cross_eff * (PCIE_SWITCH_GPUS / np.maximum(n, 1.0)) ** p.cross_exp)
    # a barrier: flags to every peer; through a switch at once, over a shared PCIe host one by one
    if link.switched:
        bar = link.alpha * p.barrier_alpha * np.ones_like(n)
    else:  # one by one: the peers under this rank's switch, then those across the host
        near = np.clip(n - 1, 1.0, PCIE_SWITCH_GPUS - 1)
        bar = link.alpha * p.barrier_alpha * (near + np.maximum(n - PCIE_SWITCH_GPUS, 0.0) * p.cross_alpha)
    one = bar + (n - 1) * S / (bw * p.eff)
    two = 2 * bar + 2 * (n - 1) / n * S / (bw * p.eff)
    t = np.minimum(one, two)
    if link.switched:  # over NVLink the framework hands large messages to NCCL's kernel when it is faster
        t = np.minimum(t, nccl_time("all_reduce", S, n, link, nccl) - nccl.launch_s)
    # over PCIe the tables time the custom kernel itself at every size (L40S, 4 GPUs, 512 MiB:
    # 431 ms against NCCL's 312 ms): no NCCL fallback
    t = t + p.launch_graph_s
    # eager: the input copy into the registered buffer joins the kernel, and back-to-back eager calls
    # are paced by the slower of the host's issue time and the device's work (the host issues the next
    # call while the GPU runs this one): max, not sum (see CustomARParams)
    issue = p.launch_eager_s * (np.where(n > PCIE_SWITCH_GPUS, p.cross_eager, 1.0) if not link.switched else 1.0)
    t = np.where(g, t, np.maximum(issue, t + 2 * S / (link.hbm_bw * p.copy_eff)))
    return np.where((n <= 1) | (S <= 0), 0.0, t)


# --------------------------------------------------------------------------- serving: the TP all-reduce
#: batches up to this many tokens replay a captured CUDA graph (vLLM's CompilationConfig
#: ``max_cudagraph_capture_size`` default, 512); assumed the same for SGLang and TensorRT-LLM
GRAPH_MAX_TOKENS = 512
#: world sizes vLLM's custom all-reduce supports (vllm/distributed/device_communicators/custom_all_reduce.py)
CUSTOM_AR_WORLD_SIZES = (2, 4, 6, 8)


def kernel_sections(cal) -> tuple:
    """(NcclParams or None, CustomARParams or None) of a calibration's ``kernels`` sections."""
    key = id(cal)
    hit = _SECTIONS.get(key)
    if hit is not None and hit[0] is cal:
        return hit[1]
    out = _kernel_sections(cal)
    if len(_SECTIONS) > 256:
        _SECTIONS.clear()
    _SECTIONS[key] = (cal, out)
    return out


_SECTIONS: dict = {}


def _kernel_sections(cal) -> tuple:
    k = getattr(cal, "kernels", None) or {}
    nc = k.get("nccl_all_reduce")
    ca = k.get("custom_allreduce")
    return (NcclParams(**{a: float(v) for a, v in nc.items()}) if nc else None,
            CustomARParams(**{a: float(v) for a, v in ca.items()}) if ca else None)


def tp_all_reduce(nbytes: float, n: int, links: CommLinks, devices_per_node: int | None, cal,
                  tokens: float | None = None) -> float:
    """Seconds of a serving step's tensor-parallel all-reduce of ``nbytes`` over ``n`` ranks.

    Inside one node, with the calibration's kernel sections: the framework's custom all-reduce
    where it runs one (a ``custom_allreduce`` section, ranks on NVLink through a switch, world size
    2/4/6/8: vLLM's rule), NCCL's kernel (``nccl_all_reduce``) otherwise. A step of ``tokens`` <=
    :data:`GRAPH_MAX_TOKENS` replays a CUDA graph; a larger one is eager: the custom all-reduce
    then also copies its input into the registered buffer, while the host call itself overlaps
    the GPU work of such a step (the host runs ahead), so it is not charged. Across nodes, or
    without kernel sections, the group model :func:`all_reduce` (Vidur's eager host-timed fit)."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    nc, ca = kernel_sections(cal)
    g = n if devices_per_node is None else devices_per_node
    intra = links.intra
    if nc is None or intra is None or g < n:
        return all_reduce(nbytes, n, links, devices_per_node)
    graph = tokens is None or tokens <= GRAPH_MAX_TOKENS
    return _kernel_all_reduce(float(nbytes), int(n), intra, nc, ca, graph)


@lru_cache(maxsize=65536)
def _kernel_all_reduce(nbytes: float, n: int, intra: IntraLink, nc: NcclParams, ca, graph: bool) -> float:
    return float(_kernel_all_reduce_many(np.array([nbytes]), n, intra, nc, ca, np.array([graph]))[0])


def _kernel_all_reduce_many(S: np.ndarray, n: int, intra: IntraLink, nc: NcclParams, ca, graph: np.ndarray):
    """:func:`tp_all_reduce`'s in-node kernel choice for an array of sizes (``graph`` per size)."""
    t = nccl_time("all_reduce", S, n, intra, nc)
    if ca is not None and intra.switched and n in CUSTOM_AR_WORLD_SIZES:
        c = custom_allreduce_time(S, n, intra, ca, nc, graph=True)
        c = c + np.where(graph, 0.0, 2 * S / (intra.hbm_bw * ca.copy_eff))
        t = np.minimum(t, c)
    return t


def tp_all_reduce_tokens(tokens: int, hidden: float, act_bytes: float, n: int, links: CommLinks,
                         devices_per_node: int | None, cal):
    """:func:`tp_all_reduce` of ``tokens * hidden * act_bytes`` bytes (a step of ``tokens`` tokens) for
    every token count 0 .. ``tokens`` at once (an array; the same numbers as the scalar calls), or
    None where the all-reduce is not the in-node kernel path (the group model prices it per call)."""
    nc, ca = kernel_sections(cal)
    g = n if devices_per_node is None else devices_per_node
    if n <= 1 or nc is None or links.intra is None or g < n:
        return None
    T = np.arange(tokens + 1, dtype=float)
    S = T * hidden * act_bytes
    t = _kernel_all_reduce_many(S, int(n), links.intra, nc, ca, T <= GRAPH_MAX_TOKENS)
    return np.where(S <= 0, 0.0, t)


# --------------------------------------------------------------------------- DeepEP low-latency kernels
# DeepEP's low-latency dispatch/combine (decode): no per-node deduplication and no NVLink
# forwarding stage, every (token, chosen expert) pair is written straight into the destination
# rank's buffer (over NVLink inside a node, RDMA across nodes), in fp8 with one fp32 scale per 128
# values for dispatch and bf16 for combine (which also sums the k returned copies). Per rank:
#
#     t = launch + max(pairs_nvl * tb / (bw_up * nvl_eff), pairs_rdma * tb / (bw_nic * rdma_eff))
#
# with ``pairs = tokens * topk`` split by where the destination expert lives (uniform routing:
# ``(g - 1) / n`` on the own node's other ranks, ``(n - g) / n`` off the node, ``1 / n`` local).
# Measured (SGLang 0.5.12, 8 x H100, hidden 7168, top-8): 13-15 us for one token, 224 / 489 us for
# 1,024 tokens dispatch / combine: about 270 / 240 GB/s of NVLink-4's 450.


@dataclass(frozen=True)
class DeepEPLLParams:
    """Seconds of one call (``*_launch_s``: kernel, flag polling) and fractions of the NVLink /
    NIC per-direction bandwidth the low-latency kernels reach, per op; and the warp groups' own pace
    (``*_token_s``: seconds one warp group spends per token of its share, ``*_wg_bw``: bytes per second
    it moves per (token, expert) copy).

    Warp groups: DeepEP's low-latency kernels run one warp group per expert (``num_warp_groups =
    ceil(E / SMs)`` per SM, ``ceil(E / num_warp_groups)`` SMs), and those warp groups also cast and
    send the rank's tokens; with few experts few SMs run the kernel and it is bound by them, not by
    the links. Evidence (H100 SGLang ``wideep_deepep_ll_perf``, one node): dispatch of 1,024 tokens
    takes 321 us with 8 experts (top-2, hidden 4096: 27 GB/s a rank) and 154 us with 16 (top-1, hidden
    5120) where the link model gives 42 and 31 us (ratios 0.13-0.25); 128+ experts run at 150-270 GB/s,
    on the NVLink line. Combine: 8-16 experts 0.71-0.87 of the measured time."""

    dispatch_launch_s: float = 1.3e-5
    combine_launch_s: float = 1.3e-5
    dispatch_nvl_eff: float = 0.6
    combine_nvl_eff: float = 0.55
    rdma_eff: float = 0.7
    dispatch_token_s: float = 0.0
    dispatch_wg_bw: float = 1.0e12
    combine_token_s: float = 0.0
    combine_wg_bw: float = 1.0e12

    def vector(self):
        return [self.dispatch_launch_s * 1e6, self.combine_launch_s * 1e6, self.dispatch_nvl_eff,
                self.combine_nvl_eff, self.rdma_eff, self.dispatch_token_s * 1e6, self.dispatch_wg_bw / 1e9,
                self.combine_token_s * 1e6, self.combine_wg_bw / 1e9]

    @classmethod
    def from_vector(cls, x):
        x = [float(v) for v in x]
        return cls(x[0] * 1e-6, x[1] * 1e-6, x[2], x[3], x[4], x[5] * 1e-6, x[6] * 1e9, x[7] * 1e-6, x[8] * 1e9)


def ll_warp_groups(num_experts, sms: float):
    """Warp groups a DeepEP low-latency kernel runs: ``ceil(E / ceil(E / SMs)) x ceil(E / SMs)`` (one per
    expert, packed ``ceil(E / SMs)`` to an SM; DeepEP ``internode_ll.cu``)."""
    E = np.maximum(np.asarray(num_experts, float), 1.0)
    wg = np.ceil(E / max(float(sms), 1.0))
    return np.ceil(E / wg) * wg


def ll_token_bytes(hidden, op: str) -> float:
    """Bytes of one (token, expert) copy: fp8 + fp32 scale per 128 (dispatch), bf16 (combine)."""
    return np.asarray(hidden, float) * ((1.0 + 4.0 / 128.0) if op == "dispatch" else 2.0)


def deepep_ll_time(op: str, tokens, hidden, topk, n, g, up_bw: float, nic_bw: float, p: DeepEPLLParams,
                   num_experts=None, sms: float | None = None):
    """Seconds of one DeepEP low-latency ``op`` (dispatch / combine) with ``tokens`` per rank over
    ``n`` ranks, ``g`` per node (vectorised): the slowest of the NVLink share, the RDMA share and, given
    ``num_experts`` (expert slots over the EP group) and the device's ``sms``, the warp groups' pace
    (:class:`DeepEPLLParams`)."""
    if op not in ("dispatch", "combine"):
        raise InputError(f"op must be dispatch or combine, got {op!r}", field="op")
    T = np.asarray(tokens, float)
    n = np.asarray(n, float)
    g = np.minimum(np.asarray(g, float), n)
    pairs = T * np.asarray(topk, float)
    tb = ll_token_bytes(hidden, op)
    eff = p.dispatch_nvl_eff if op == "dispatch" else p.combine_nvl_eff
    t_nvl = pairs * (g - 1) / n * tb / (up_bw * eff)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_rdma = np.where(n > g, pairs * (n - g) / n * tb / (max(nic_bw, 1e-30) * p.rdma_eff), 0.0)
    launch = p.dispatch_launch_s if op == "dispatch" else p.combine_launch_s
    t = np.maximum(t_nvl, t_rdma)
    if num_experts is not None and sms:
        tok_s, wg_bw = (p.dispatch_token_s, p.dispatch_wg_bw) if op == "dispatch" else (p.combine_token_s,
                                                                                       p.combine_wg_bw)
        per_wg = T / ll_warp_groups(num_experts, sms)
        t = np.maximum(t, per_wg * (tok_s + np.asarray(topk, float) * tb / max(wg_bw, 1.0)))
    return np.where(T > 0, launch + t, 0.0)
