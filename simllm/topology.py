"""The cluster network as a graph: devices, scale-up domains, NICs and the scale-out fabric.

:func:`build_topology` turns a :class:`~simllm.hardware.Cluster` (or a node: a one-node
cluster) into a :class:`Topology`, a ``networkx.DiGraph`` whose edges are *directed* links
(full duplex: each direction has its own bandwidth, as descriptors store it). Vertices:

``("dev", n, i)``     device ``i`` of node ``n`` (global rank ``n * devices_per_node + i``)
``("sw", n)``         the scale-up switch of node ``n`` (NVSwitch, Unified Bus switch), only for
                      ``topology: switch``
``("nic", n, j)``     NIC ``j`` of node ``n``: with ``nics_per_device >= 1`` one per device (its
                      ports' bandwidth added up, link x nics_per_device); below 1, ``g x nics_per_device``
                      NICs shared by the devices (device ``i`` on NIC ``i * nics // g``)
``("leaf", r)``       the leaf switch of rail ``r`` = NIC ``r`` of every node (rail-optimised) or of
                      node ``r`` (fat tree)
``("spine",)``        the spine layer, aggregated into one vertex; leaf<->spine uplinks carry
                      ``downlink bandwidth / oversubscription``

Scale-up shapes (``node.spec.scale_up.topology``):

- ``switch``: each device to the switch with ``Node.scale_up_bw`` (link x links_per_device).
- ``full_mesh`` (HCCS, Infinity Fabric, no switch): one edge per device pair, each with
  ``scale_up_bw / (devices - 1)``: the per-peer link, so a point-to-point transfer sees one link.
- ``torus`` (TPU ICI): neighbours along each dimension with wraparound, one link each
  (``scale_up_link.bw``); a dimension of size 2 gives two parallel links to the same neighbour.
- ``ring``: neighbours i-1, i+1 (wraparound), one link each.

Every edge has ``bw`` (nominal per direction, B/s), ``eff`` (the link descriptor's measured
achievable fraction; else the cost model's calibrated fraction for the tier, transferred from
the A100 fit by ``simllm.cost.calibration``; 1.0 with ``calibration=False``), ``latency`` (s,
the descriptor's, times the calibrated scale), ``tier`` (``scale_up`` | ``nic`` | ``fabric``).
The usable bandwidth of an edge is ``bw * eff``. Paths are hop-shortest (deterministic), cached.
"""

from __future__ import annotations

import math as _math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional, Sequence

import networkx as nx
import numpy as _np

from .cost import collectives as C  # one place for each formula
from .cost.calibration import calibration_for
from .errors import InputError
from .hardware import DTYPE_BYTES, Cluster, ClusterSpec, Link, Node, load_cluster

Vertex = tuple
Edge = tuple  # (u, v) directed


@dataclass(frozen=True)
class PathInfo:
    """A route between two devices and what limits it."""

    edges: tuple[Edge, ...]
    bottleneck_bw: float  # min over edges of bw * eff (B/s, per direction)
    latency: float  # sum of edge latencies (s)
    tier: str  # "local" (same device), "scale_up", "scale_out"


def _comm_params(accelerator, calibration):
    """The cost model's communication calibration (``simllm.cost.calibration``) for a device:
    ``False`` for none (nominal links), ``None`` for the device's own or the reference file."""
    if calibration is False:
        return None
    return calibration_for(accelerator, calibration).comm


class Topology:
    """A directed graph of one cluster's network, with paths and their bottlenecks."""

    def __init__(self, cluster: Cluster, overrides: dict | None = None, calibration=None):
        self.cluster = cluster
        self.comm = _comm_params(cluster.accelerator, calibration)
        self.node: Node = cluster.node
        self.num_nodes = cluster.num_nodes
        self.devices_per_node = self.node.devices
        self.num_devices = self.num_nodes * self.devices_per_node
        self.graph = nx.DiGraph()
        self._build()
        if overrides:
            self._override(overrides)
        self._paths: dict[tuple[int, int], PathInfo] = {}
        self._intra: dict[int, nx.DiGraph] = {}

    # ---- construction -------------------------------------------------------------------
    def _eff(self, link: Link, tier: str) -> float:
        """Usable fraction of a link: its own measured efficiency, else the calibration's
        transferred fraction for its tier, else 1 (nominal)."""
        if link.efficiency is not None:
            return float(link.efficiency.value)
        if self.comm is None:
            return 1.0
        return self.comm.scale_up_efficiency if tier == "scale_up" else self.comm.scale_out_efficiency

    def _lat(self, link: Link, tier: str) -> float:
        if self.comm is None:
            return link.alpha
        return link.alpha * (self.comm.scale_up_alpha_scale if tier == "scale_up" else self.comm.scale_out_alpha_scale)

    @property
    def launch_overhead(self) -> float:
        """Fixed time per collective call (calibration's ``launch_overhead_s``; 0 uncalibrated)."""
        return self.comm.launch_overhead_s if self.comm is not None else 0.0

    def _cget(self, name: str, default: float) -> float:
        return float(getattr(self.comm, name, default)) if self.comm is not None else default

    @property
    def p2p_overhead(self) -> float:
        """Fixed time per send/recv (calibration's ``p2p_overhead_s``; 0 uncalibrated)."""
        return self._cget("p2p_overhead_s", 0.0)

    @property
    def coll_eff(self) -> float:
        """Ring/tree collectives' bandwidth relative to point-to-point (reduction, protocol)."""
        return self._cget("collective_efficiency", 1.0)

    @property
    def node_out_cap(self) -> float:
        """What all devices of a node get together across nodes (B/s per direction): the
        calibration's ``scale_out_node_efficiency`` of the node's NICs' total. A scale-out link
        with its own measured efficiency (measured with every NIC busy, as DeepEP's was) is not
        capped further."""
        ol = self.node.scale_out_link
        if self.comm is None or ol is None or ol.efficiency is not None:
            return _math.inf
        e = self._cget("scale_out_node_efficiency", _math.inf)
        return self.devices_per_node * self.node.scale_out_bw * e

    def _add(self, u, v, bw: float, eff: float, latency: float, tier: str, link: str) -> None:
        """A full-duplex link: two directed edges with the same per-direction bandwidth."""
        for a, b in ((u, v), (v, u)):
            if self.graph.has_edge(a, b):  # parallel links (torus dim of size 2): bandwidth adds
                self.graph.edges[a, b]["bw"] += bw
            else:
                self.graph.add_edge(a, b, bw=bw, eff=eff, latency=latency, tier=tier, link=link)

    def _build(self) -> None:
        node, g = self.node, self.devices_per_node
        up = node.spec.scale_up
        ul = node.scale_up_link
        for n in range(self.num_nodes):
            for i in range(g):
                self.graph.add_node(("dev", n, i), kind="dev")
            if g > 1:
                if up.topology == "switch":
                    for i in range(g):
                        self._add(("dev", n, i), ("sw", n), node.scale_up_bw, self._eff(ul, "scale_up"), self._lat(ul, "scale_up") / 2, "scale_up", ul.name)
                elif up.topology == "full_mesh":
                    per_peer = node.scale_up_bw / (g - 1)
                    for i in range(g):
                        for j in range(i + 1, g):
                            self._add(("dev", n, i), ("dev", n, j), per_peer, self._eff(ul, "scale_up"), self._lat(ul, "scale_up"), "scale_up", ul.name)
                elif up.topology == "ring":
                    for i in range(g):
                        j = (i + 1) % g
                        if j != i and not (g == 2 and i == 1):
                            self._add(("dev", n, i), ("dev", n, j), ul.bw, self._eff(ul, "scale_up"), self._lat(ul, "scale_up"), "scale_up", ul.name)
                elif up.topology == "torus":
                    dims = list(up.torus_dims or [g])
                    for i in range(g):
                        coord = _unravel(i, dims)
                        for d, size in enumerate(dims):
                            if size < 2:
                                continue
                            c2 = list(coord)
                            c2[d] = (coord[d] + 1) % size
                            j = _ravel(c2, dims)
                            self._add(("dev", n, i), ("dev", n, j), ul.bw, self._eff(ul, "scale_up"), self._lat(ul, "scale_up"), "scale_up", ul.name)
                else:  # pragma: no cover - schema forbids it
                    raise InputError(f"unknown scale-up topology {up.topology!r}", field="scale_up.topology")
        if self.num_nodes > 1:
            self._build_fabric()

    def _build_fabric(self) -> None:
        node, g = self.node, self.devices_per_node
        ol = node.scale_out_link
        if ol is None or node.scale_out_bw <= 0:
            raise InputError(f"node {node.name} has no scale_out link, cannot join {self.num_nodes} nodes",
                             field="scale_out")
        fab = self.cluster.spec.fabric
        per_dev = node.spec.scale_out.nics_per_device
        if per_dev >= 1:  # one NIC vertex per device, its ports' bandwidth added up
            nics, nic_bw = g, node.scale_out_bw
        else:  # fewer NICs than devices: devices share them (device i on NIC i * nics // g)
            nics, nic_bw = max(1, round(g * per_dev)), ol.bw
        self.nics_per_node = nics
        over = fab.oversubscription
        half = self._lat(ol, "scale_out") / 2
        for n in range(self.num_nodes):
            for i in range(g):
                self._add(("dev", n, i), ("nic", n, i * nics // g), nic_bw, self._eff(ol, "scale_out"), 0.0, "nic", ol.name)
        if fab.topology == "rail_optimized":
            # rail r = NIC r of every node, on leaf r; cross-rail goes through the spine
            for r in range(nics):
                for n in range(self.num_nodes):
                    self._add(("nic", n, r), ("leaf", r), nic_bw, self._eff(ol, "scale_out"), half, "fabric", ol.name)
                if nics > 1:
                    self._add(("leaf", r), ("spine",), nic_bw * self.num_nodes / over, self._eff(ol, "scale_out"), 0.0, "fabric", ol.name)
        else:  # fat_tree / none: one leaf per node, all uplinks to the spine
            for n in range(self.num_nodes):
                for r in range(nics):
                    self._add(("nic", n, r), ("leaf", n), nic_bw, self._eff(ol, "scale_out"), half, "fabric", ol.name)
                self._add(("leaf", n), ("spine",), nic_bw * nics / over, self._eff(ol, "scale_out"), 0.0, "fabric", ol.name)

    def _override(self, overrides: dict) -> None:
        """Calibrated figures per tier: ``{"scale_up" | "nic" | "fabric": {"bw": B/s usable per
        edge, "latency": s per edge}}``; ``bw`` replaces ``bw * eff`` (eff becomes 1)."""
        tiers = {"scale_up", "nic", "fabric"}
        for tier, vals in overrides.items():
            if tier not in tiers:
                raise InputError(f"unknown tier {tier!r}; expected one of {', '.join(sorted(tiers))}",
                                 field="overrides")
            bad = set(vals) - {"bw", "latency"}
            if bad:
                raise InputError(f"unknown override {sorted(bad)[0]!r} for {tier}; expected bw, latency",
                                 field=f"overrides.{tier}")
            for _, _, d in self.graph.edges(data=True):
                if d["tier"] != tier:
                    continue
                if "bw" in vals:
                    if not vals["bw"] > 0:
                        raise InputError(f"bandwidth must be > 0, got {vals['bw']}", field=f"overrides.{tier}.bw")
                    d["bw"], d["eff"] = float(vals["bw"]), 1.0
                if "latency" in vals:
                    d["latency"] = float(vals["latency"])

    # ---- queries ------------------------------------------------------------------------
    def device(self, rank: int) -> Vertex:
        if not 0 <= rank < self.num_devices:
            raise InputError(f"device rank {rank} out of range 0..{self.num_devices - 1}", field="devices")
        return ("dev", rank // self.devices_per_node, rank % self.devices_per_node)

    def node_of(self, rank: int) -> int:
        return rank // self.devices_per_node

    def edge_bw(self, e: Edge) -> float:
        """Usable per-direction bandwidth of a directed edge (B/s)."""
        d = self.graph.edges[e]
        return d["bw"] * d["eff"]

    def path(self, src: int, dst: int) -> PathInfo:
        """Route between device ranks: hop-shortest path, its bottleneck bandwidth and latency.

        Between two devices of one node the route never leaves the scale-up domain, even where
        the graph would allow a detour through NICs."""
        key = (src, dst)
        p = self._paths.get(key)
        if p is not None:
            return p
        a, b = self.device(src), self.device(dst)
        if a == b:
            p = PathInfo((), float("inf"), 0.0, "local")
        else:
            same_node = a[1] == b[1]
            shape = self.node.spec.scale_up.topology
            if same_node and shape == "switch":
                vs = [a, ("sw", a[1]), b]
            elif same_node and shape == "full_mesh":
                vs = [a, b]
            elif same_node and shape == "torus":
                vs = self._torus_route(a, b)
            elif same_node and self.devices_per_node > 1:
                g = self._intra.get(a[1])
                if g is None:
                    g = self._intra[a[1]] = nx.DiGraph(self.graph.subgraph(
                        [v for v in self.graph if v[0] in ("dev", "sw") and v[1] == a[1]]))
                vs = nx.shortest_path(g, a, b)
            else:
                vs = nx.shortest_path(self.graph, a, b)
            edges = tuple(zip(vs[:-1], vs[1:]))
            bw = min(self.edge_bw(e) for e in edges)
            lat = sum(self.graph.edges[e]["latency"] for e in edges)
            tier = "scale_up" if same_node else "scale_out"
            p = PathInfo(edges, bw, lat, tier)
        self._paths[key] = p
        return p

    def _torus_route(self, a: Vertex, b: Vertex) -> list:
        """Dimension-ordered routing (as torus interconnects do): fix dimension 0 first, the
        shorter way round (ties: increasing coordinate), then dimension 1, ..."""
        dims = list(self.node.spec.scale_up.torus_dims or [self.devices_per_node])
        cur = _unravel(a[2], dims)
        dst = _unravel(b[2], dims)
        vs = [a]
        for d, size in enumerate(dims):
            fwd = (dst[d] - cur[d]) % size
            step = 1 if fwd <= size - fwd else -1
            while cur[d] != dst[d]:
                cur[d] = (cur[d] + step) % size
                vs.append(("dev", a[1], _ravel(cur, dims)))
        return vs

    def flow_links(self, src: int, dst: int) -> tuple:
        """Links a transfer occupies in a fluid simulation: its path's edges, plus the virtual
        per-node scale-out caps (``("node_out", n)``, ``("node_in", n)``) when calibrated."""
        p = self.path(src, dst)
        if p.tier == "scale_out" and _math.isfinite(self.node_out_cap):
            return p.edges + (("node_out", self.node_of(src)), ("node_in", self.node_of(dst)))
        return p.edges

    def shared_bottleneck(self, pairs: Iterable[tuple[int, int]]) -> tuple[float, float]:
        """Concurrent transfers ``src -> dst``, equal sizes: the slowest one's bandwidth and latency.

        Every directed edge is shared equally by the transfers crossing it (each gets
        ``bw * eff / load``); a transfer runs at the minimum of its edges' shares. Returns
        ``(min over transfers of that rate, max latency)``: what bounds one step of a ring or
        of a pairwise exchange where everyone moves the same amount."""
        load: dict[Edge, int] = {}
        paths = [self.path(s, d) for s, d in pairs if s != d]
        if not paths:
            return float("inf"), 0.0
        for p in paths:
            for e in p.edges:
                load[e] = load.get(e, 0) + 1
        rate = min(min(self.edge_bw(e) / load[e] for e in p.edges) for p in paths)
        lat = max(p.latency for p in paths)
        return rate, lat

    def group(self, n: int, *, ranks: Sequence[int] | None = None) -> list[int]:
        """Ranks of an ``n``-device group: given ones, or the first ``n`` filling nodes in order."""
        if ranks is not None:
            ranks = list(ranks)
            if len(set(ranks)) != len(ranks):
                raise InputError("device ranks repeat", field="devices")
            for r in ranks:
                self.device(r)
            return ranks
        if n < 1:
            raise InputError(f"need at least 1 device, got {n}", field="devices")
        if n > self.num_devices:
            raise InputError(f"{n} devices requested, cluster {self.cluster.name} has {self.num_devices}",
                             field="devices")
        return list(range(n))

    def nodes_spanned(self, ranks: Sequence[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for r in ranks:
            out.setdefault(self.node_of(r), []).append(r)
        return out

    def __repr__(self) -> str:
        return (f"Topology({self.cluster.name!r}: {self.num_nodes} x {self.devices_per_node} devices, "
                f"{self.graph.number_of_nodes()} vertices, {self.graph.number_of_edges()} directed links)")


def _unravel(i: int, dims: Sequence[int]) -> list[int]:
    c = []
    for d in reversed(dims):
        c.append(i % d)
        i //= d
    return list(reversed(c))


def _ravel(c: Sequence[int], dims: Sequence[int]) -> int:
    i = 0
    for x, d in zip(c, dims):
        i = i * d + x
    return i


def build_topology(cluster: Cluster | Node | str, overrides: dict | None = None, calibration=None) -> Topology:
    """Topology of a cluster, a node (one-node cluster), or a descriptor name/path; ``overrides``
    replace the usable bandwidth / latency of a tier's edges (see :meth:`Topology._override`);
    ``calibration``: ``None`` the device's calibration (``simllm.cost.calibration_for``), a
    :class:`~simllm.cost.Calibration` or file, or ``False`` for the links' nominal figures."""
    if isinstance(cluster, str) and not overrides and calibration is None:
        return _cached(cluster)
    if isinstance(cluster, str):
        cluster = load_cluster(cluster)
    if isinstance(cluster, Node):
        cluster = Cluster(ClusterSpec(name=cluster.name, node=cluster.name, num_nodes=1), cluster)
    return Topology(cluster, overrides, calibration)


@lru_cache(maxsize=32)
def _cached(name: str) -> Topology:
    return Topology(load_cluster(name))


def clear_cache() -> None:
    """Forget cached topologies (after descriptors or calibration files change)."""
    _cached.cache_clear()


def with_nodes(topo_or_cluster: Cluster | str, num_nodes: int, overrides: dict | None = None,
               calibration=None) -> Topology:
    """The same node type and fabric with ``num_nodes`` nodes (for sizing a group)."""
    c = load_cluster(topo_or_cluster) if isinstance(topo_or_cluster, str) else topo_or_cluster
    spec = ClusterSpec(name=f"{c.node.name}x{num_nodes}", node=c.node.name, num_nodes=num_nodes,
                       fabric=c.spec.fabric)
    return Topology(Cluster(spec, c.node), overrides, calibration)


# =====================================================================================
# Collectives over the topology
# =====================================================================================
#
# The topology layer decides *which* links a collective crosses, the bandwidth each
# participant gets on them (slowest link on the path, divided among the transfers sharing
# it) and which algorithm applies; the alpha-beta formulas themselves are the cost model's
# (``simllm.cost.collectives``), called through :func:`_formula`.

OPS = ("all_reduce", "all_gather", "reduce_scatter", "send_recv", "all_to_all", "dispatch", "combine")

# nccl-tests (doc/PERFORMANCE.md): busbw = algbw * factor
BUS_FACTOR = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "send_recv": lambda n: 1.0,
}


@dataclass(frozen=True)
class CommEstimate:
    """Predicted time of one collective and the bandwidths nccl-tests would print.

    ``nbytes`` is the nccl-tests ``size``: the all-reduce buffer, the all-gather output,
    the reduce-scatter input, the all-to-all send buffer per rank, the message of a send/recv.
    ``algbw = nbytes / time``; ``busbw = algbw * factor(op, n)`` (nccl-tests PERFORMANCE.md)."""

    op: str
    algorithm: str
    devices: int
    nodes: int
    nbytes: float
    time_s: float
    algbw: float
    busbw: float
    bottleneck: str
    candidates: dict = None  # algorithm -> seconds, for the ones considered
    extra: dict = None  # op-specific figures (dispatch/combine: DeepEP-defined bandwidths)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("op", "algorithm", "devices", "nodes", "nbytes", "time_s", "algbw",
                                           "busbw", "bottleneck")}
        d["candidates_s"] = dict(self.candidates or {})
        d.update(self.extra or {})
        return d


@dataclass(frozen=True)
class Tier:
    """What one participant gets in one tier: bandwidth (B/s, per direction), latency per step (s)."""

    bw: float
    alpha: float
    what: str


def _formula(name: str):
    """The cost model's alpha-beta formula ``name(n, nbytes, bw, alpha) -> seconds``."""
    return getattr(C, name)


class _Group:
    """The tiers a group of ranks sees on a topology."""

    def __init__(self, topo: Topology, ranks: Sequence[int], coll_eff: float = 1.0):
        self.topo = topo
        self.ranks = list(ranks)
        self.n = len(self.ranks)
        self.by_node = topo.nodes_spanned(self.ranks)
        self.k = len(self.by_node)
        sizes = {len(v) for v in self.by_node.values()}
        self.g = max(sizes)
        self.uniform = len(sizes) == 1
        node = topo.node
        up = node.spec.scale_up

        # intra-node ring: consecutive local ranks, all nodes' rings at once
        pairs = []
        for rs in self.by_node.values():
            if len(rs) > 1:
                pairs += [(rs[j], rs[(j + 1) % len(rs)]) for j in range(len(rs))]
        bw, lat = topo.shared_bottleneck(pairs) if pairs else (_math.inf, 0.0)
        self.up_ring = Tier(bw * coll_eff, lat, f"{node.scale_up_link.name} ring")
        # intra-node direct (all of a device's scale-up links at once: full mesh, torus)
        dims = [d for d in (up.torus_dims or []) if d > 1]
        if pairs and up.topology == "torus" and self.k == 1 and self.g == topo.devices_per_node:
            # whole torus: bidirectional rings along every dimension at once, each carrying a
            # share of the data (TPU-style multi-dimensional all-reduce): all links busy, and
            # sum(size_d - 1) latency steps instead of n - 1
            out = sum(topo.edge_bw(e) for e in topo.graph.out_edges(topo.device(self.ranks[0]))
                      if topo.graph.edges[e]["tier"] == "scale_up")
            steps = sum(d - 1 for d in dims)
            self.up_direct = Tier(out * coll_eff, topo._lat(node.scale_up_link, "scale_up") * steps / max(1, self.g - 1),
                                  f"{node.scale_up_link.name} torus rings")
            self.direct_formula = "ring"
        elif pairs and up.topology in ("full_mesh", "torus"):
            allp = [(a, b) for rs in self.by_node.values() for a in rs for b in rs if a != b]
            bw1, lat1 = topo.shared_bottleneck(allp)
            m = self.g - 1
            self.up_direct = Tier(bw1 * m * coll_eff, lat1, f"{node.scale_up_link.name} {up.topology}")
            self.direct_formula = "direct"
        else:
            self.up_direct = None
            self.direct_formula = None
        # inter-node: each device on its own rail, all rails at once
        if self.k > 1:
            nodes = sorted(self.by_node)
            rails = []
            for j in range(self.g):
                col = [self.by_node[n][j] for n in nodes if j < len(self.by_node[n])]
                rails += [(col[t], col[(t + 1) % len(col)]) for t in range(len(col))]
            bw2, lat2 = topo.shared_bottleneck(rails)
            # calibrated node cap: the g members of a node share what the node delivers
            bw2 = min(bw2, topo.node_out_cap / self.g)
            self.out = Tier(bw2 * coll_eff, lat2, f"{node.scale_out_link.name} rail")
        else:
            self.out = None

    def flat_ring(self) -> Tier:
        """One ring over all ranks (NCCL: one channel per NIC, the node crossings spread over the
        node's NICs): per rank, the slower of the intra-node hop and the node's NICs shared by its
        g ring positions' crossings."""
        if self.k == 1:
            return self.up_ring
        if self.g == 1:
            return self.out
        bw = min(self.up_ring.bw, self.out.bw * self.g / 1.0)
        return Tier(bw, max(self.up_ring.alpha, self.out.alpha), f"ring over {self.k} nodes")


def _bytes_factor(op: str, n: int) -> float:
    return BUS_FACTOR[op](n)


def collective(topo: Topology, op: str, nbytes: float, n: int | None = None, *,
               ranks: Sequence[int] | None = None, algorithm: str = "auto") -> CommEstimate:
    """Time of ``op`` over ``n`` devices (the first ``n`` ranks, nodes filled in order) of ``topo``.

    Algorithms considered (``auto`` picks the fastest of ring, tree and direct, as NCCL's tuner
    does with its own cost model and HCCL between ring and mesh; ``hierarchical`` only when
    asked, since NCCL does not run it and the measured DGX A100 tables follow the flat ring/tree):

    - ``ring``: one ring over all ranks (multi-channel: node crossings spread over the NICs);
    - ``tree``: NCCL double binary tree (all-reduce; log-depth latency);
    - ``direct``: full mesh or whole torus inside a node, every link at once;
    - ``hierarchical``: reduce-scatter inside nodes, the op across nodes on each rail with
      ``1/g`` of the data, all-gather inside nodes.

    Bandwidths: each tier's slowest link on the path and its share (:meth:`Topology.shared_bottleneck`),
    times the calibrated collective efficiency; across nodes at most the node cap shared by the
    group's ``g`` members of a node. A fixed launch overhead is added per call.
    """
    if op not in OPS:
        raise InputError(f"unknown collective {op!r}; expected one of {', '.join(OPS)}", field="op")
    if not (nbytes >= 0 and _math.isfinite(nbytes)):
        raise InputError(f"message size must be a finite number >= 0 bytes, got {nbytes}", field="bytes")
    rs = topo.group(n if n is not None else (len(ranks) if ranks else 2), ranks=ranks)
    if op == "send_recv":
        if len(rs) < 2:
            raise InputError("send_recv needs 2 devices", field="devices")
        return send_recv(topo, nbytes, rs[0], rs[-1])
    if op in ("all_to_all",):
        return all_to_all(topo, nbytes, ranks=rs)
    if op in ("dispatch", "combine"):
        raise InputError(f"{op} takes tokens, hidden and top-k: use ep_dispatch()", field="op")
    G = _Group(topo, rs, coll_eff=topo.coll_eff)
    nn = G.n
    if nn == 1 or nbytes <= 0:
        return _estimate(op, "none", G, nbytes, 0.0, "single device" if nn == 1 else "nothing to move", {})
    cands: dict[str, tuple[float, str]] = {}
    ring = G.flat_ring()
    if op == "all_reduce":
        cands["ring"] = (_formula("ring_all_reduce")(nn, nbytes, ring.bw, ring.alpha), ring.what)
        cands["tree"] = (_formula("tree_all_reduce")(nn, nbytes, ring.bw, ring.alpha), ring.what)
    else:
        f = _formula(f"ring_{op}")
        cands["ring"] = (f(nn, nbytes, ring.bw, ring.alpha), ring.what)
    if G.up_direct is not None and G.k == 1:
        d = G.up_direct
        if G.direct_formula == "ring":
            t = _formula("ring_all_reduce" if op == "all_reduce" else f"ring_{op}")(nn, nbytes, d.bw, d.alpha)
        elif op == "all_reduce":
            t = 2 * _formula("direct_reduce_scatter")(nn, nbytes, d.bw, d.alpha)
        else:
            t = _formula("direct_reduce_scatter")(nn, nbytes, d.bw, d.alpha)
        cands["direct"] = (t, d.what)
    if G.k > 1 and G.g > 1 and G.uniform:
        up = G.up_direct or G.up_ring
        g, k = G.g, G.k
        rs_f = _formula("direct_reduce_scatter" if G.up_direct else "ring_reduce_scatter")
        if op == "all_reduce":
            inter = _formula("ring_all_reduce")(k, nbytes / g, G.out.bw, G.out.alpha)
            t = 2 * rs_f(g, nbytes, up.bw, up.alpha) + inter
        else:  # all_gather / reduce_scatter: node-level step over rails, then inside nodes
            inter = _formula(f"ring_{op}")(k, nbytes / g, G.out.bw, G.out.alpha)
            t = rs_f(g, nbytes, up.bw, up.alpha) + inter
        cands["hierarchical"] = (t, f"{up.what} + {G.out.what}")
    if topo.launch_overhead:
        cands = {a: (t + topo.launch_overhead, w) for a, (t, w) in cands.items()}
    if algorithm != "auto":
        if algorithm not in cands:
            raise InputError(f"algorithm {algorithm!r} does not apply here; candidates: {', '.join(cands)}",
                             field="algorithm")
        name = algorithm
    else:  # NCCL's own choices (ring, tree; direct over a mesh/torus); hierarchical only on request
        name = min((a for a in cands if a != "hierarchical"), key=lambda a: cands[a][0])
    t, what = cands[name]
    return _estimate(op, name, G, nbytes, t, what, {a: v[0] for a, v in cands.items()})


def _estimate(op, alg, G, nbytes, t, what, cands, extra=None) -> CommEstimate:
    algbw = nbytes / t if t > 0 else _math.inf
    busbw = algbw * _bytes_factor(op, G.n) if op in BUS_FACTOR and G.n > 1 else algbw
    return CommEstimate(op, alg, G.n, G.k, float(nbytes), float(t), float(algbw), float(busbw), what, cands,
                        extra or {})


def send_recv(topo: Topology, nbytes: float, src: int = 0, dst: int = 1) -> CommEstimate:
    """Point-to-point: latency of the path plus bytes over its slowest link."""
    p = topo.path(src, dst)
    G = _Group(topo, [src, dst])
    bw = p.bottleneck_bw
    if p.tier == "scale_out":
        bw = min(bw, topo.node_out_cap)
    t = _formula("send_recv")(2, nbytes, bw, p.latency) + (topo.p2p_overhead if nbytes > 0 else 0.0)
    what = "local copy" if p.tier == "local" else " > ".join(sorted({topo.graph.edges[e]["link"] for e in p.edges}))
    return _estimate("send_recv", "p2p", G, nbytes, t, f"{p.tier}: {what}", {"p2p": t})


def edge_loads(topo: Topology, traffic: _np.ndarray, ranks: Sequence[int]) -> dict:
    """Bytes each directed edge carries when rank ``ranks[s]`` sends ``traffic[s, d]`` to ``ranks[d]``."""
    load: dict = {}
    R = len(ranks)
    for s in range(R):
        for d in range(R):
            b = float(traffic[s, d])
            if b <= 0 or s == d:
                continue
            for e in topo.path(ranks[s], ranks[d]).edges:
                load[e] = load.get(e, 0.0) + b
    return load


def traffic_time(topo: Topology, traffic: _np.ndarray, ranks: Sequence[int] | None = None, *,
                 endpoint_bytes: _np.ndarray | None = None) -> tuple[float, str, float]:
    """Time of an all-to-all style exchange given a traffic matrix (bytes, ``[src, dst]``).

    Every pair sends at once; each directed link is busy for ``bytes on it / (bw * eff)``
    (the busiest endpoint's max(TX, RX) on its scale-up and its NIC links, the fabric's
    uplinks), all links in parallel; the exchange lasts as long as the busiest link, plus the
    startup latency of the longest path. ``endpoint_bytes[r]`` optionally adds what rank ``r``
    moves through its own scale-up port regardless of destination (a kernel that stages
    every token, local ones included, in the same buffers). Returns (seconds, bottleneck, latency)."""
    traffic = _np.asarray(traffic, dtype=float)
    ranks = list(range(traffic.shape[0])) if ranks is None else list(ranks)
    if traffic.shape != (len(ranks), len(ranks)):
        raise InputError(f"traffic matrix must be {len(ranks)}x{len(ranks)}, got {traffic.shape}", field="traffic")
    load = edge_loads(topo, traffic, ranks)
    worst, what = 0.0, "none"
    for e, b in load.items():
        t = b / topo.edge_bw(e)
        if t > worst:
            worst, what = t, f"{topo.graph.edges[e]['link']} ({topo.graph.edges[e]['tier']})"
    cap = topo.node_out_cap
    if _math.isfinite(cap):  # what a node's NICs deliver together, each direction
        nodes = _np.array([topo.node_of(r) for r in ranks])
        cross = traffic * (nodes[:, None] != nodes[None, :])
        for nd in set(nodes.tolist()):
            m = nodes == nd
            t = max(cross[m].sum(), cross[:, m].sum()) / cap
            if t > worst:
                worst, what = t, f"{topo.node.scale_out_link.name} (node NICs together)"
    if endpoint_bytes is not None:
        up = _endpoint_bw(topo)
        for r, b in zip(ranks, endpoint_bytes):
            t = float(b) / up
            if t > worst:
                worst, what = t, f"{topo.node.scale_up_link.name} (device port)"
    lat = 0.0
    nz = _np.argwhere(traffic > 0)
    seen = set()
    for s, d in nz:
        key = (topo.node_of(ranks[s]) == topo.node_of(ranks[d]))
        if key in seen:
            continue
        seen.add(key)
        lat = max(lat, topo.path(ranks[s], ranks[d]).latency)
    return worst + lat, what, lat


def _endpoint_bw(topo: Topology) -> float:
    """A device's total usable scale-up bandwidth per direction (all its scale-up links)."""
    dev = ("dev", 0, 0)
    bws = [topo.edge_bw(e) for e in topo.graph.out_edges(dev) if topo.graph.edges[e]["tier"] == "scale_up"]
    return sum(bws) if bws else _math.inf


def all_to_all(topo: Topology, nbytes: float, n: int | None = None, *, ranks: Sequence[int] | None = None,
               traffic: _np.ndarray | None = None) -> CommEstimate:
    """All-to-all: ``nbytes`` per rank split evenly (nccl-tests), or an explicit traffic matrix."""
    rs = topo.group(n if n is not None else len(ranks), ranks=ranks)
    R = len(rs)
    if traffic is None:
        traffic = _np.full((R, R), nbytes / R)
    else:
        nbytes = float(_np.asarray(traffic).sum(axis=1).max())
    t, what, _ = traffic_time(topo, traffic, rs)
    t += topo.launch_overhead if R > 1 and nbytes > 0 else 0.0
    G = _Group(topo, rs)
    return _estimate("all_to_all", "direct", G, nbytes, t, what, {"direct": t})


# ---- expert-parallel dispatch / combine --------------------------------------------------

def token_bytes(hidden: int, dtype: str) -> float:
    """Bytes of one token's hidden state on the wire; fp8 carries one fp32 scale per 128 values
    (DeepEP's ``fp8_factor = (1 + 4/128) / 2`` of bf16)."""
    if dtype not in DTYPE_BYTES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPE_BYTES)}", field="dtype")
    if dtype in ("fp8", "int8"):
        return hidden * (1.0 + 4.0 / 128.0)
    return hidden * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class EPRouting:
    """Expected per-rank token counts of one dispatch under uniform random top-k routing.

    Experts are placed contiguously (``experts / ranks`` per rank); with ``topk_groups`` the
    gate first keeps the ``topk_groups`` nodes with the highest expert score (DeepSeek-V3's
    group-limited gating, as DeepEP's tests do), then the top-k experts among them.
    Per source rank (equal for all by symmetry):

    ``rank_deliveries``  (token, destination rank) pairs, own rank included
    ``node_deliveries``  (token, destination node) pairs, own node included (DeepEP's RDMA count)
    ``remote_node_deliveries``  the same without the own node (what crosses the NIC)
    ``local_rank_deliveries``  (token, rank) pairs on the own node, own rank excluded
    """

    tokens: int
    rank_deliveries: float
    node_deliveries: float
    remote_node_deliveries: float
    local_rank_deliveries: float


def ep_routing(tokens: int, experts: int, topk: int, ranks: int, ranks_per_node: int,
               topk_groups: int | None = None, seed: int = 0) -> EPRouting:
    if tokens < 1 or experts < 1 or topk < 1:
        raise InputError("tokens, experts and top-k must be >= 1", field="tokens")
    if topk > experts:
        raise InputError(f"top-k {topk} exceeds {experts} experts", field="topk")
    if experts % ranks:
        raise InputError(f"{experts} experts do not divide over {ranks} devices", field="experts")
    nodes = max(1, ranks // ranks_per_node)
    rng = _np.random.default_rng(seed)
    scores = _np.abs(rng.standard_normal((tokens, experts), dtype=_np.float32)) + 1.0
    if topk_groups and nodes > 1 and topk_groups < nodes:
        gs = scores.reshape(tokens, nodes, -1).max(axis=2)
        keep = _np.argsort(-gs, axis=1)[:, :topk_groups]
        mask = _np.zeros((tokens, nodes), dtype=bool)
        _np.put_along_axis(mask, keep, True, axis=1)
        scores = _np.where(_np.repeat(mask, experts // nodes, axis=1), scores, 0.0)
    top = _np.argpartition(-scores, topk - 1, axis=1)[:, :topk]
    rank_of = top // (experts // ranks)
    node_of = rank_of // ranks_per_node
    hit_r = _np.zeros((tokens, ranks), dtype=bool)
    _np.put_along_axis(hit_r, rank_of, True, axis=1)
    hit_n = _np.zeros((tokens, nodes), dtype=bool)
    _np.put_along_axis(hit_n, node_of, True, axis=1)
    # the source is rank 0 on node 0 (any rank is equivalent under uniform routing)
    return EPRouting(tokens, float(hit_r.sum()), float(hit_n.sum()), float(hit_n[:, 1:].sum()),
                     float(hit_r[:, 1:ranks_per_node].sum()))


def ep_dispatch(topo: Topology, tokens: int, hidden: int, topk: int, n: int, *, experts: int = 256,
                topk_groups: int | None = None, dtype: str = "fp8", op: str = "dispatch",
                seed: int = 0, device_loads: Sequence[float] | None = None) -> CommEstimate:
    """Expert-parallel dispatch (or combine) of ``tokens`` per rank over ``n`` ranks, as DeepEP's
    normal kernels do it: inside a node straight over the scale-up links; across nodes each token
    crosses the fabric once per destination node, on its own rail (to the same local index),
    and is forwarded over the scale-up links there. NVLink and network legs run in parallel;
    the time is the busiest link's (endpoint's max(TX, RX)) plus the paths' startup latency.

    DeepEP's kernels stage every received token (own rank's too) through the same buffers,
    so a device's scale-up port is charged with all the tokens it receives (or, for combine,
    sends back). ``extra`` has DeepEP's reported bandwidths: ``nvl_bw`` = received tokens'
    bytes / time, ``rdma_bw`` = (token, node) pairs' bytes / time (own node counted, as in its
    test_internode.py), and ``deepep_bw``: rdma_bw across nodes, nvl_bw inside one.

    ``device_loads`` (one number per rank, e.g. the tokens ``simllm.placement`` routes to each
    device's experts) skews what each rank receives (sends back, for combine) in proportion to
    its load; uniform when omitted. The busiest rank then sets the time."""
    if op not in ("dispatch", "combine"):
        raise InputError(f"op must be dispatch or combine, got {op!r}", field="op")
    rs = topo.group(n)
    G = _Group(topo, rs)
    g = G.g if G.k > 1 else len(rs)
    if G.k > 1 and not G.uniform:
        raise InputError(f"{n} devices do not fill whole nodes of {topo.devices_per_node}", field="devices")
    if topk_groups is None:
        topk_groups = min(G.k, 4) if G.k > 1 else None
    rt = ep_routing(tokens, experts, topk, len(rs), g, topk_groups, seed)
    tb = token_bytes(hidden, dtype)
    R = len(rs)
    # per-rank physical traffic; by symmetry every rank sends and receives the same
    if G.k == 1:
        per_peer = rt.local_rank_deliveries / max(1, R - 1) * tb
        traffic = _np.full((R, R), per_peer)
        _np.fill_diagonal(traffic, 0.0)
    else:
        traffic = _np.zeros((R, R))
        per_node = rt.remote_node_deliveries / (G.k - 1) * tb  # to the same rail on each other node
        for s in range(R):
            for d in range(R):
                if s % g == d % g and s // g != d // g:
                    traffic[s, d] = per_node
    staged = _np.full(R, rt.rank_deliveries * tb)  # received tokens (own rank's included) through the port
    if device_loads is not None:
        w = _np.asarray(device_loads, dtype=float)
        if w.shape != (R,) or not _np.all(_np.isfinite(w)) or _np.any(w < 0) or w.sum() <= 0:
            raise InputError(f"device_loads must be {R} finite non-negative numbers, not all zero",
                             field="device_loads")
        w = w / w.mean()
        traffic = traffic * w[None, :]
        staged = staged * w
    if op == "combine":
        traffic = traffic.T.copy()  # the reverse exchange: receivers send back
    # NIC legs through ``traffic``; the forwarding inside the destination node (rail receiver
    # to each target rank) and the local deliveries through ``staged``
    t, what, lat = traffic_time(topo, traffic, rs, endpoint_bytes=staged)
    nvl_bytes = rt.rank_deliveries * tb
    rdma_bytes = rt.node_deliveries * tb
    extra = {"tokens_per_rank": tokens, "hidden": hidden, "topk": topk, "experts": experts,
             "topk_groups": topk_groups, "dtype": dtype, "token_bytes": tb,
             "recv_tokens_per_rank": rt.rank_deliveries, "rdma_tokens_per_rank": rt.node_deliveries,
             "nvl_bw": nvl_bytes / t, "rdma_bw": rdma_bytes / t if G.k > 1 else None,
             "deepep_bw": rdma_bytes / t if G.k > 1 else nvl_bytes / t,
             "deepep_domain": "RDMA" if G.k > 1 else "NVLink", "startup_latency_s": lat}
    send = rt.rank_deliveries * tb  # what each rank sends (tokens x destination ranks)
    return _estimate(op, "deepep-normal" if G.k > 1 else "deepep-intranode", G, send, t, what,
                     {"direct": t}, extra)


def ep_dispatch_ll(topo: Topology, tokens: int, hidden: int, topk: int, n: int, *, op: str = "dispatch",
                   calibration=None, experts: Optional[int] = None) -> CommEstimate:
    """DeepEP's low-latency dispatch (or combine) of ``tokens`` per rank over ``n`` ranks (the
    kernels decode uses): every (token, expert) copy straight to its rank, NVLink inside a node,
    RDMA across (:func:`simllm.cost.collectives.deepep_ll_time`, calibration section
    ``deepep_ll``); given ``experts`` (expert slots over the group), also the pace of the kernel's
    warp groups (one per local expert, on the device's SMs), as the expert-parallel step cost
    prices it. ``extra``: DeepEP's own test figure, bytes of all copies / time."""
    if op not in ("dispatch", "combine"):
        raise InputError(f"op must be dispatch or combine, got {op!r}", field="op")
    if tokens < 1 or topk < 1 or hidden < 1:
        raise InputError("tokens, hidden and top-k must be >= 1", field="tokens")
    rs = topo.group(n)
    G = _Group(topo, rs)
    if G.k > 1 and not G.uniform:
        raise InputError(f"{n} devices do not fill whole nodes of {topo.devices_per_node}", field="devices")
    g = G.g if G.k > 1 else len(rs)
    cal = calibration_for(topo.cluster.accelerator, calibration if calibration is not False else None)
    d = dict((cal.kernels or {}).get("deepep_ll") or {})
    p = C.DeepEPLLParams(**{k: float(v) for k, v in d.items()})
    node = topo.node
    if experts is not None and experts < 1:
        raise InputError(f"experts must be >= 1, got {experts}", field="experts")
    t = float(C.deepep_ll_time(op, tokens, hidden, topk, len(rs), g, node.scale_up_bw, node.scale_out_bw, p,
                               num_experts=experts,
                               sms=float(topo.cluster.accelerator.compute_units.value) if experts else None))
    nbytes = tokens * topk * float(C.ll_token_bytes(hidden, op))
    what = f"{node.scale_out_link.name} RDMA" if G.k > 1 and node.scale_out_link is not None else \
        f"{node.scale_up_link.name}"
    extra = {"tokens_per_rank": tokens, "hidden": hidden, "topk": topk, "deepep_bw": nbytes / t,
             "deepep_domain": "RDMA" if G.k > 1 else "NVLink", "kernel": "low_latency"}
    return _estimate(op, "deepep-low-latency", G, nbytes, t, what, {"low_latency": t}, extra)
