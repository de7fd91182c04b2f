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
                   p2p_launch=comm.p2p_overhead_s)

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
