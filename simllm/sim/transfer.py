"""KV-cache transfers between pools, over fluid links (:class:`simllm.network.FluidNetwork`).

``bytes = kv_bytes_per_token_per_device x devices`` of the prefill replica's cost model ``x prompt
tokens``. A request's KV lives on one attention group of a replica (all its devices without
data-parallel attention; under expert parallelism the ``tp`` devices of the data-parallel rank the
rank router put the request on, :mod:`simllm.sim.dp_ranks`). The bytes are
split evenly over ``max(Gs, Gd)`` flows between the source and destination groups' devices
(device pairs ``(j mod Gs, j mod Gd)``). With ``kv_link: auto`` the flows run over the topology
of the scenario's node or cluster (same node: scale-up links; different nodes: NICs and fabric),
so overlapping transfers share bandwidth max-min fairly. With an explicit link every replica has
one link of that bandwidth (a prefill replica's outgoing, a decode replica's incoming).
Replicas take device ranks in order: pools in the order given, replicas in order.

A network is a function ``(env, ranks) -> (FluidNetwork, send)`` with
``send(src_devices, dst_devices, nbytes) -> event``.
"""

from __future__ import annotations

from ..errors import InputError
from ..network import FluidNetwork


def pairs(src: list, dst: list) -> list:
    n = max(len(src), len(dst))
    return [(src[j % len(src)], dst[j % len(dst)]) for j in range(n)]


def link_network(bandwidth: float, latency: float = 0.0):
    """Dedicated KV links: one per replica (a prefill replica's outgoing, a decode replica's incoming)."""

    def build(env, ranks):
        owner = {d: i for i, r in enumerate(ranks) for d in r}
        net = FluidNetwork(env, {("kv", i): bandwidth for i in range(len(ranks))})

        def send(src, dst, nbytes):
            return net.transfer([("kv", owner[src[0]]), ("kv", owner[dst[0]])], nbytes, latency=latency)

        return net, send

    return build


def topology_network(topo):
    """KV flows over a :class:`simllm.topology.Topology` (device ranks as laid out by the simulation)."""

    def build(env, ranks):
        need = sum(len(r) for r in ranks)
        if need > topo.num_devices:
            raise InputError(f"the pools need {need} devices, {topo.cluster.name} has {topo.num_devices}; "
                             f"use a cluster with more nodes", field="deployment")
        net = FluidNetwork.from_topology(env, topo)

        def send(src, dst, nbytes):
            ps = pairs(src, dst)
            evs = [net.send(a, b, nbytes / len(ps)) for a, b in ps]
            return evs[0] if len(evs) == 1 else env.all_of(evs)

        return net, send

    return build
