"""Re-placement that moves only what pays.

Re-planning from scratch on drifting loads moves nearly every replica (a new EPLB or ILP plan
shares little with the old one). :func:`replan_that_pays` instead, per MoE layer:

1. *keep*: the previous replicas, with their token shares re-solved for the observed loads
   (an LP on the fixed replica graph: no bytes move);
2. *move*: the fresh plan of ``policy`` (moves ``expert_bytes`` per replica that lands on a
   device that did not hold that expert).

3. *incremental* (:func:`incremental_plan`): the previous replicas with replica counts set to
   the EPLB counts of the observed loads (surplus replicas dropped where devices are busiest,
   missing ones into the freed slots of the least-loaded devices), then swaps of two replicas
   that lower the busiest device, one at a time: plans that move a few replicas each, from
   the one with the fewest moves up.

Gain of moving layer ``l`` over the next ``horizon_s`` seconds: the routed-expert time is set
by the busiest device, so it shrinks by ``(T_keep - T_move) / T_keep`` of that layer's share of
the step time: ``horizon_s * routed_fraction / layers * (T_keep - T_move) / T_keep``
(``routed_fraction``: routed experts' share of a step, from the cost model). Cost: the
migration pause, charged per layer as the busiest device's new bytes of that layer over its link
(``bandwidth``), as if layers moved one after another (an upper bound on the pause the copies
take in parallel). Each layer takes the plan (keep, one of the incremental ones, or the fresh
one) of largest gain minus charge; keep when none pays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .affinity import _presence_shares
from .ilp import _rebalance, _to_slots
from .placement import LayerInfo, Placement, as_layer_loads
from .policies import replicate_experts
from .registry import build_policy


def _even_loads(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (X * (w / np.maximum(X.sum(axis=1), 1))[:, None]).sum(axis=0)


def incremental_plan(prev: np.ndarray, w: np.ndarray, S: int, budget: int, max_swaps: int = 16
                     ) -> list[np.ndarray]:
    """Replica graphs ``[E, G]`` that move few replicas from ``prev`` towards balance for loads
    ``w`` (see the module doc): the first has the EPLB replica counts of ``w``; each next one
    adds the swap of two replicas that lowers the busiest device's load most (even shares).
    Each graph keeps every expert on at least one device and at most ``S`` per device."""
    X = prev.copy()
    E, G = X.shape
    n = int(min(budget, G * S))
    cnt_new = replicate_experts(w, n) if n >= E else np.ones(E, dtype=np.int64)
    cnt = X.sum(axis=1)
    load = _even_loads(X, w)
    for j in np.nonzero(cnt > cnt_new)[0]:  # surplus replicas leave the busiest devices
        gs = np.nonzero(X[j])[0]
        for g in gs[np.argsort(-load[gs], kind="stable")][: int(cnt[j] - cnt_new[j])]:
            X[j, g] = False
    load = _even_loads(X, w)
    miss = np.maximum(cnt_new - X.sum(axis=1), 0)
    for j in np.argsort(-(w / np.maximum(cnt_new, 1)), kind="stable"):  # heaviest replica first
        for _ in range(int(miss[j])):
            room = (X.sum(axis=0) < S) & ~X[j]
            if not room.any():
                break
            g = int(np.argmin(np.where(room, load, np.inf)))
            X[j, g] = True
            load = _even_loads(X, w)
    out = [X.copy()]
    per = w / np.maximum(X.sum(axis=1), 1)
    for _ in range(max_swaps):
        load = (X * per[:, None]).sum(axis=0)
        g = int(np.argmax(load))
        js = np.nonzero(X[:, g])[0]
        ri, rh = np.nonzero(X)
        keep = rh != g
        ri, rh = ri[keep], rh[keep]
        d = per[js][:, None] - per[ri][None, :]  # what g sheds, h takes
        ok = (d > 1e-12) & ~X[js][:, rh] & ~X[ri, g][None, :]
        new_max = np.maximum(load[g] - d, load[rh][None, :] + d)
        new_max = np.where(ok, new_max, np.inf)
        a, b = np.unravel_index(int(np.argmin(new_max)), new_max.shape)
        if not new_max[a, b] < load[g] - 1e-9:
            break
        X[js[a], g], X[js[a], rh[b]] = False, True
        X[ri[b], rh[b]], X[ri[b], g] = False, True
        out.append(X.copy())
    return out


def replan_that_pays(previous: Placement, observed_loads: Any, policy: Any, *, expert_bytes: float,
                     bandwidth: float, horizon_s: float, routed_fraction: float, layer_scale: float = 1.0
                     ) -> tuple[Placement, dict]:
    """``(placement, figures)``: each layer kept (shares re-solved) or moved, whichever pays.

    ``layer_scale``: model MoE layers per placed layer (bytes and pause scale with it).
    ``figures``: ``layers_moved``, ``moved_replicas`` (placed layers), ``gain_s``, ``pause_s``.
    """
    w = as_layer_loads(observed_loads, name="observed_loads")
    L, G, S = previous.expert.shape
    fresh = build_policy(policy).place(w, G, previous.nodes, S, previous=previous)
    pres_prev, pres_new = previous.presence(), fresh.presence()
    budget = int(pres_prev.sum(axis=(1, 2)).max())
    expert, share = np.empty_like(previous.expert), np.empty_like(previous.share)
    infos: list[LayerInfo] = []
    moved_dev = np.zeros(G)
    gain_sum = 0.0
    moved_layers = 0
    per_layer_s = horizon_s * routed_fraction / L  # routed-expert seconds of one layer over the horizon
    for l in range(L):
        tot = w[l].sum()
        wn = w[l] / tot * G if tot > 0 else np.zeros(w.shape[1])
        Tk, shk = _rebalance(wn, pres_prev[l])
        best = (0.0, "kept", pres_prev[l], shk, np.zeros(G))
        if Tk > 0:
            fresh_sh = _presence_shares(fresh.expert[l], fresh.share[l], fresh.num_experts)[1]
            cands = [(pres_new[l], fresh_sh, "fresh")]
            cands += [(X, None, f"incremental ({(X & ~pres_prev[l]).sum()} replicas)")
                      for X in incremental_plan(pres_prev[l], wn, S, budget)]
            for X, sh, name in cands:
                if sh is None:
                    if (X & ~pres_prev[l]).sum() == 0:
                        continue
                    T = float(_even_loads(X, wn).max())  # even shares (an upper bound on the LP's)
                else:
                    T = float((wn[:, None] * sh).sum(axis=0).max())
                dev = (X & ~pres_prev[l]).sum(axis=0) * expert_bytes * layer_scale
                # the pause is charged per layer (busiest device's bytes of the layer over its
                # link), as if layers moved one after another: only clear gains move
                net = per_layer_s * max(0.0, (Tk - T) / Tk) - dev.max() / bandwidth
                if net > best[0]:
                    best = (net, name, X, sh, dev)
        net, name, X, sh, dev = best
        if name != "kept":
            moved_layers += 1
            moved_dev += dev
            gain_sum += net + dev.max() / bandwidth
            if sh is None:
                sh = _rebalance(wn, X)[1]
        expert[l], share[l] = _to_slots(X, sh, S)
        infos.append(fresh.layer_info[l] if name == "fresh" and l < len(fresh.layer_info)
                     else LayerInfo(status=name))
    out = Placement(expert, share, w, nodes=previous.nodes, policy=f"{fresh.policy} (moves that pay)",
                    layer_info=infos, messages=list(fresh.messages))
    figs = {"layers_moved": moved_layers, "gain_s": float(gain_sum),
            "pause_s": float(moved_dev.max() / bandwidth) if moved_layers else 0.0}
    return out, figs

