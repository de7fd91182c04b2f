"""Links as shared resources in the simulation: a fluid max-min fair-share model for SimPy.

A transfer is a fluid flow over a path of directed links. Whenever a flow starts or ends,
the rates of all active flows are recomputed by progressive filling (max-min fairness):
the most constrained link is saturated first, its flows frozen at its equal share, the
others continue. Two equal transfers on one link therefore each get half its bandwidth,
and a KV transfer during a collective slows both. Between changes every flow progresses
at a constant rate, so the model costs one SimPy event per flow start/end, never per byte.

Usage::

    env = simpy.Environment()
    net = FluidNetwork(env, capacities={"nvl0": 300e9})        # or FluidNetwork.from_topology(env, topo)
    done = net.transfer(["nvl0"], 1e9)                           # a SimPy event
    yield done                                                   # inside a process; done.value = seconds taken

Link ids are any hashable (``Topology`` uses directed edges ``(u, v)``); their capacity is
bytes/s per direction. ``latency`` (s) is a fixed delay before the flow joins the fluid.
``max_rate`` caps one flow (e.g. a single-stream copy engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

import simpy

from .errors import InputError
from .topology import BUS_FACTOR, collective

@dataclass(eq=False)
class Flow:
    links: tuple
    remaining: float
    event: simpy.Event
    start: float
    max_rate: float = math.inf
    rate: float = 0.0
    nbytes: float = 0.0
    tag: object = None


class FluidNetwork:
    """Max-min fair sharing of link bandwidth among concurrent transfers (SimPy-compatible)."""

    def __init__(self, env: simpy.Environment, capacities: dict[Hashable, float] | None = None):
        self.env = env
        self.capacity: dict[Hashable, float] = {}
        for k, v in (capacities or {}).items():
            self.add_link(k, v)
        self.flows: list[Flow] = []
        self._last = env.now
        self._gen = 0  # invalidates stale wake-ups
        self.bytes_by_link: dict[Hashable, float] = {}

    @classmethod
    def from_topology(cls, env: simpy.Environment, topo) -> "FluidNetwork":
        """Every directed edge of a :class:`simllm.topology.Topology`, at ``bw * eff``."""
        caps = {e: topo.edge_bw(e) for e in topo.graph.edges}
        if math.isfinite(topo.node_out_cap) and topo.num_nodes > 1:
            for n in range(topo.num_nodes):
                caps[("node_out", n)] = caps[("node_in", n)] = topo.node_out_cap
        net = cls(env, caps)
        net.topo = topo
        return net

    topo = None

    def send(self, src: int, dst: int, nbytes: float, *, tag: object = None) -> simpy.Event:
        """A point-to-point transfer between device ranks of the topology (e.g. a KV-cache
        transfer from a prefill to a decode replica): its path's links, after its latency."""
        if self.topo is None:
            raise InputError("send() needs a network built with FluidNetwork.from_topology")
        p = self.topo.path(src, dst)
        return self.transfer(self.topo.flow_links(src, dst), nbytes, latency=p.latency, tag=tag)

    def collective(self, op: str, nbytes: float, ranks: Sequence[int], *, tag: object = None) -> simpy.Event:
        """A collective among device ranks as concurrent flows on the links it uses, so that it
        shares them with whatever else is in flight.

        Traffic pattern of the algorithm :func:`simllm.topology.collective` picks: a ring over
        all ranks (NCCL's multi-channel rings: ``busbw factor x nbytes`` on each hop inside a
        node, each node crossing spread over the ``g`` rails), or hierarchical (rings inside
        nodes, then along each rail with ``factor(k) x nbytes / g``); bytes are divided by the
        calibrated collective efficiency. The flows start after a fixed delay chosen so that, alone on
        the network, the collective takes exactly :func:`simllm.topology.collective`'s time;
        contention then stretches only its bandwidth part. Event value: seconds taken."""
        if self.topo is None:
            raise InputError("collective() needs a network built with FluidNetwork.from_topology")

        if op not in BUS_FACTOR or op == "send_recv":
            raise InputError(f"collective op must be one of all_reduce, all_gather, reduce_scatter, all_to_all; "
                             f"got {op!r}", field="op")
        ranks = list(ranks)
        est = collective(self.topo, op, nbytes, ranks=ranks)
        flows = _collective_flows(self.topo, op, nbytes, ranks, est.algorithm)
        d0 = _isolated_duration(self.capacity, flows)
        delay = max(0.0, est.time_s - d0)
        done = self.env.event()
        if not flows:
            self.env.timeout(est.time_s).callbacks.append(lambda _e: done.succeed(est.time_s))
            return done
        start = self.env.now
        evs = [self.transfer(links, b, latency=delay, tag=tag) for links, b in flows]
        self.env.all_of(evs).callbacks.append(lambda _e: done.succeed(self.env.now - start))
        return done

    def add_link(self, link: Hashable, capacity: float) -> None:
        if not capacity > 0:
            raise InputError(f"link {link!r} capacity must be > 0 B/s, got {capacity}")
        self.capacity[link] = float(capacity)

    # ---- public -----------------------------------------------------------------------
    def transfer(self, links: Sequence[Hashable], nbytes: float, *, latency: float = 0.0,
                 max_rate: float = math.inf, tag: object = None) -> simpy.Event:
        """Start moving ``nbytes`` over ``links``; the returned event fires when they have arrived.

        Its value is the elapsed time in seconds (latency included)."""
        if nbytes < 0:
            raise InputError(f"transfer size must be >= 0 bytes, got {nbytes}")
        for l in links:
            if l not in self.capacity:
                raise InputError(f"unknown link {l!r}")
        ev = self.env.event()
        start = self.env.now
        links = tuple(dict.fromkeys(links))  # a link counted once per flow

        def _join(_=None):
            if nbytes <= 0 or (not links and math.isinf(max_rate)):
                ev.succeed(self.env.now - start)
                return
            self._advance()
            self.flows.append(Flow(links, float(nbytes), ev, start, max_rate, nbytes=float(nbytes), tag=tag))
            self._reschedule()

        if latency > 0:
            self.env.timeout(latency).callbacks.append(_join)
        else:
            _join()
        return ev

    def rates(self) -> dict[object, float]:
        """Current rate (B/s) of each active flow, by tag (or index when untagged)."""
        return {(f.tag if f.tag is not None else i): f.rate for i, f in enumerate(self.flows)}

    def utilisation(self) -> dict[Hashable, float]:
        """Fraction of each busy link's capacity in use now."""
        use: dict[Hashable, float] = {}
        for f in self.flows:
            for l in f.links:
                use[l] = use.get(l, 0.0) + f.rate
        return {l: u / self.capacity[l] for l, u in use.items()}

    # ---- internals --------------------------------------------------------------------
    def _advance(self) -> None:
        dt = self.env.now - self._last
        if dt > 0:
            for f in self.flows:
                moved = f.rate * dt
                f.remaining -= moved
                for l in f.links:
                    self.bytes_by_link[l] = self.bytes_by_link.get(l, 0.0) + moved
        self._last = self.env.now

    def _allocate(self) -> None:
        """Progressive filling: max-min fair rates subject to link capacities and flow caps."""
        active = list(self.flows)
        cap = self.capacity
        residual = {l: cap[l] for f in active for l in f.links}  # the links in use
        for f in active:
            f.rate = 0.0
        unfrozen = set(range(len(active)))
        while unfrozen:
            count: dict[Hashable, int] = {}
            for i in unfrozen:
                for l in active[i].links:
                    count[l] = count.get(l, 0) + 1
            share = math.inf
            for l, c in count.items():
                share = min(share, residual[l] / c)
            cap_min = min(active[i].max_rate for i in unfrozen)
            level = min(share, cap_min)
            if math.isinf(level):  # flows with no links and no cap: infinitely fast
                for i in unfrozen:
                    active[i].rate = math.inf
                break
            # freeze flows on saturated links, or at their cap
            top = level * (1 + 1e-12)
            sat = {l for l, c in count.items() if residual[l] / c <= top}
            frozen = set()
            for i in unfrozen:
                f = active[i]
                if f.max_rate <= top or not sat.isdisjoint(f.links):
                    frozen.add(i)
            for i in frozen:
                f = active[i]
                f.rate = level
                for l in f.links:
                    residual[l] = max(0.0, residual[l] - level)
            unfrozen -= frozen

    def _reschedule(self) -> None:
        self._allocate()
        self._gen += 1
        gen = self._gen
        if not self.flows:
            return
        dt = min((f.remaining / f.rate if f.rate > 0 else math.inf) for f in self.flows)
        if math.isinf(dt):
            return
        self.env.timeout(max(dt, 0.0)).callbacks.append(lambda _e, g=gen: self._wake(g))

    def _wake(self, gen: int) -> None:
        if gen != self._gen:
            return
        self._advance()
        done = [f for f in self.flows
                if f.remaining <= 1e-9 * f.nbytes or (f.rate > 0 and f.remaining / f.rate <= 1e-12)]
        if done:
            self.flows = [f for f in self.flows if f not in done]
            for f in done:
                f.event.succeed(self.env.now - f.start)
        self._reschedule()


def _collective_flows(topo, op: str, nbytes: float, ranks: Sequence[int],
                      algorithm: str = "ring") -> list[tuple[tuple, float]]:

    by_node = topo.nodes_spanned(ranks)
    nodes = sorted(by_node)
    k = len(nodes)
    n = len(ranks)
    flows = []
    nbytes = nbytes / topo.coll_eff  # reduction/protocol: a collective moves its bytes at e_coll of the rate
    if op == "all_to_all":
        for a in ranks:
            for b in ranks:
                if a != b:
                    flows.append((topo.flow_links(a, b), nbytes / n))
        return flows
    if algorithm == "hierarchical" and k > 1:
        for rs in by_node.values():  # rings inside nodes, then rings along each rail
            g = len(rs)
            for i in range(g if g > 1 else 0):
                flows.append((topo.flow_links(rs[i], rs[(i + 1) % g]), BUS_FACTOR[op](g) * nbytes))
        g = max(len(v) for v in by_node.values())
        for j in range(g):
            col = [by_node[m][j] for m in nodes if j < len(by_node[m])]
            for t in range(len(col) if len(col) > 1 else 0):
                flows.append((topo.flow_links(col[t], col[(t + 1) % len(col)]), BUS_FACTOR[op](k) * nbytes / g))
        return flows
    # one ring over all ranks (node-major), NCCL-style: one channel per NIC, so each node
    # crossing is spread over the node's rails
    f = BUS_FACTOR[op](n) * nbytes
    for m in nodes:
        rs = by_node[m]
        g = len(rs)
        hops = g if k == 1 else g - 1
        for i in range(hops if g > 1 else 0):
            flows.append((topo.flow_links(rs[i], rs[(i + 1) % g]), f))
    if k > 1:
        for t, m in enumerate(nodes):
            a, b = by_node[m], by_node[nodes[(t + 1) % k]]
            g = min(len(a), len(b))
            for j in range(g):
                flows.append((topo.flow_links(a[j], b[j]), f / g))
    return flows


def _isolated_duration(capacity: dict, flows: list[tuple[tuple, float]]) -> float:
    """How long ``flows`` take alone, under max-min sharing with rates recomputed as flows end."""
    env = simpy.Environment()
    net = FluidNetwork(env, {l: capacity[l] for links, _ in flows for l in links})
    for links, b in flows:
        net.transfer(links, b)
    env.run()
    return env.now
