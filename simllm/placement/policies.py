"""Placement policies: ``contiguous``, ``round_robin``, ``greedy_replicated`` (EPLB), ``greedy_hierarchical``.

The ILP lives in :mod:`simllm.placement.ilp`. Every policy returns a valid :class:`Placement`;
when the experts do not fit the slots (``devices * slots_per_device < experts``) the slots per
device are raised to the minimum that fits and a message says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
import numpy as np

from ..errors import InputError
from .placement import LayerInfo, Placement, as_layer_loads
from .registry import register


def check_shape(loads, devices: int, nodes: int, slots_per_device: int) -> tuple[np.ndarray, int, list[str]]:
    """Validate the arguments of ``place``; return (loads [L, E], usable slots per device, messages)."""
    w = as_layer_loads(loads)
    for name, v in (("devices", devices), ("nodes", nodes), ("slots_per_device", slots_per_device)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"must be a positive integer, got {v!r}", field=name)
    if devices % nodes:
        raise InputError(f"{devices} devices do not split into {nodes} equal nodes", field="nodes")
    E = w.shape[1]
    msgs = []
    need = -(-E // devices)
    if slots_per_device < need:
        msgs.append(f"{E} experts do not fit {devices} devices x {slots_per_device} slots; "
                    f"slots_per_device raised to {need}")
        slots_per_device = need
    return w, int(slots_per_device), msgs


def _single(w: np.ndarray, device_of: np.ndarray, devices: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """One replica per expert, expert ``e`` on ``device_of[e]``."""
    E = w.shape[1]
    L = w.shape[0]
    expert = np.full((L, devices, slots), -1, dtype=np.int32)
    share = np.zeros((L, devices, slots))
    fill = np.zeros(devices, dtype=np.int64)
    for e in range(E):
        g = int(device_of[e])
        expert[:, g, fill[g]] = e
        share[:, g, fill[g]] = 1.0
        fill[g] += 1
    return expert, share


@register("contiguous")
@dataclass(frozen=True)
class Contiguous:
    """Default expert-parallel sharding: device ``g`` holds experts ``[g*E/G, (g+1)*E/G)``; no replicas."""

    def place(self, loads, devices, nodes, slots_per_device, *, previous=None) -> Placement:
        t0 = time.perf_counter()
        w, S, msgs = check_shape(loads, devices, nodes, slots_per_device)
        E = w.shape[1]
        dev = (np.arange(E) * devices) // E
        ex, sh = _single(w, dev, devices, S)
        return Placement(ex, sh, w, nodes=nodes, policy="contiguous", messages=msgs,
                         layer_info=[LayerInfo(status="heuristic") for _ in range(w.shape[0])],
                         solve_s=time.perf_counter() - t0)


@register("round_robin")
@dataclass(frozen=True)
class RoundRobin:
    """Expert ``e`` on device ``e mod G``; no replicas."""

    def place(self, loads, devices, nodes, slots_per_device, *, previous=None) -> Placement:
        t0 = time.perf_counter()
        w, S, msgs = check_shape(loads, devices, nodes, slots_per_device)
        dev = np.arange(w.shape[1]) % devices
        ex, sh = _single(w, dev, devices, S)
        return Placement(ex, sh, w, nodes=nodes, policy="round_robin", messages=msgs,
                         layer_info=[LayerInfo(status="heuristic") for _ in range(w.shape[0])],
                         solve_s=time.perf_counter() - t0)


# -- EPLB (DeepSeek's expert-parallel load balancer) -----------------------------------------
def replicate_experts(w: np.ndarray, num_physical: int) -> np.ndarray:
    """Replica counts: start at 1 each, repeatedly add one to the expert of max load per replica."""
    E = w.shape[0]
    cnt = np.ones(E, dtype=np.int64)
    for _ in range(num_physical - E):
        cnt[int(np.argmax(w / cnt))] += 1
    return cnt


def balanced_packing(items: np.ndarray, labels: np.ndarray, packs: int, per_pack: int,
                     distinct: bool = True) -> np.ndarray:
    """Heaviest item first onto the least-loaded pack with room (``per_pack`` items each).

    With ``distinct``, a pack already holding an item of the same label (a replica of the same
    expert) is avoided when another pack has room.
    """
    n = items.shape[0]
    if n > packs * per_pack:
        raise ValueError("more items than pack slots")
    order = np.argsort(-items, kind="stable")
    load = np.zeros(packs)
    fill = np.zeros(packs, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    held: dict[int, set] = {}
    big = np.inf
    for i in order:
        key = np.where(fill < per_pack, load, big)
        if distinct:
            h = held.setdefault(int(labels[i]), set())
            if h:
                k2 = key.copy()
                k2[list(h)] = big
                if np.isfinite(k2).any():
                    key = k2
            p = int(np.argmin(key))
            h.add(p)
        else:
            p = int(np.argmin(key))
        out[i] = p
        load[p] += items[i]
        fill[p] += 1
    return out


def _pack_layer(w: np.ndarray, experts: np.ndarray, devices: np.ndarray, slots: int, distinct: bool,
                expert_out: np.ndarray, share_out: np.ndarray) -> None:
    """Replicate ``experts`` (ids) into ``len(devices) * slots`` slots and pack them onto ``devices``."""
    n_slots = len(devices) * slots
    cnt = replicate_experts(w[experts], n_slots)
    phy = np.repeat(np.arange(len(experts)), cnt)
    per = w[experts][phy] / cnt[phy]
    asg = balanced_packing(per, phy, len(devices), slots, distinct)
    fill = np.zeros(len(devices), dtype=np.int64)
    for i in np.argsort(asg, kind="stable"):
        d = asg[i]
        g = devices[d]
        expert_out[g, fill[d]] = experts[phy[i]]
        share_out[g, fill[d]] = 1.0 / cnt[phy[i]]
        fill[d] += 1


def eplb_layer(w: np.ndarray, devices: int, nodes: int, slots: int, num_groups: int = 1,
               hierarchical: bool = False, distinct: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """EPLB for one layer: ``(expert [G, S], share [G, S])``.

    Global: replicate over all ``G*S`` slots, pack onto all devices. Hierarchical (DeepSeek
    prefill): pack expert groups onto nodes, replicate within each node, pack onto its devices.
    """
    E = w.shape[0]
    expert = np.full((devices, slots), -1, dtype=np.int32)
    share = np.zeros((devices, slots))
    if not hierarchical:
        _pack_layer(w, np.arange(E), np.arange(devices), slots, distinct, expert, share)
        return expert, share
    gsize = E // num_groups
    gw = w.reshape(num_groups, gsize).sum(axis=1)
    node_of_group = balanced_packing(gw, np.arange(num_groups), nodes, num_groups // nodes, distinct=False)
    dpn = devices // nodes
    for n in range(nodes):
        groups = np.nonzero(node_of_group == n)[0]
        ex = (groups[:, None] * gsize + np.arange(gsize)[None, :]).ravel()
        _pack_layer(w, ex, np.arange(n * dpn, (n + 1) * dpn), slots, distinct, expert, share)
    return expert, share


@register("greedy_replicated")
@dataclass(frozen=True)
class GreedyReplicated:
    """DeepSeek EPLB: replicate the hottest experts into the redundant slots, pack replicas onto devices.

    ``hierarchical``: first pack ``num_groups`` expert groups onto nodes (needs
    ``num_groups % nodes == 0``) and replicate within a node; otherwise one global pass.
    Tokens split evenly over an expert's replicas. ``distinct_devices`` keeps two replicas of
    one expert off the same device where possible.
    """

    hierarchical: bool = False
    num_groups: int = 0  # 0: one group per node
    distinct_devices: bool = True

    def place(self, loads, devices, nodes, slots_per_device, *, previous=None) -> Placement:
        t0 = time.perf_counter()
        w, S, msgs = check_shape(loads, devices, nodes, slots_per_device)
        L, E = w.shape
        hier = self.hierarchical
        groups = self.num_groups or nodes
        if hier:
            why = None
            if E % groups:
                why = f"{E} experts do not split into {groups} groups"
            elif groups % nodes:
                why = f"{groups} groups do not split over {nodes} nodes"
            elif E // nodes > (devices // nodes) * S:
                why = f"{E // nodes} experts per node exceed {(devices // nodes) * S} slots per node"
            if why:
                msgs.append(f"greedy_replicated: hierarchical packing impossible ({why}); used the global variant")
                hier = False
        expert = np.empty((L, devices, S), dtype=np.int32)
        share = np.empty((L, devices, S))
        for l in range(L):
            expert[l], share[l] = eplb_layer(w[l], devices, nodes, S, groups, hier, self.distinct_devices)
        name = type(self).policy_name
        return Placement(expert, share, w, nodes=nodes, policy=name, messages=msgs,
                         layer_info=[LayerInfo(status="heuristic") for _ in range(L)],
                         solve_s=time.perf_counter() - t0)


@register("greedy_hierarchical")
@dataclass(frozen=True)
class GreedyHierarchical(GreedyReplicated):
    """EPLB's hierarchical variant (groups to nodes, replicas within a node)."""

    hierarchical: bool = True
