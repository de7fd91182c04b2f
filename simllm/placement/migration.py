"""Re-placement that moves only what pays.

Re-planning from scratch on drifting loads moves nearly every replica (a new EPLB or ILP plan
shares little with the old one). :func:`replan_that_pays` instead, per MoE layer:

1. *keep*: the previous replicas, with their token shares re-solved for the observed loads
   (an LP on the fixed replica graph: no bytes move);
2. *move*: the fresh plan of ``policy`` (moves ``expert_bytes`` per replica that lands on a
   device that did not hold that expert).

Gain of moving layer ``l`` over the next ``horizon_s`` seconds: the routed-expert time is set
by the busiest device, so it shrinks by ``(T_keep - T_move) / T_keep`` of that layer's share of
the step time: ``horizon_s * routed_fraction / layers * (T_keep - T_move) / T_keep``
(``routed_fraction``: routed experts' share of a step, from the cost model). Cost: the
migration pause, charged per layer as the busiest device's new bytes of that layer over its link
(``bandwidth``), as if layers moved one after another (an upper bound on the pause the copies
take in parallel). A layer moves when its gain beats its charge; the rest keep their replicas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .affinity import _presence_shares
from .ilp import _rebalance, _to_slots
from .placement import LayerInfo, Placement, as_layer_loads
from .registry import build_policy


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
    keep_ex, keep_sh = np.empty_like(previous.expert), np.empty_like(previous.share)
    gains, moved_dev = np.zeros(L), np.zeros((L, G))
    for l in range(L):
        tot = w[l].sum()
        wn = w[l] / tot * G if tot > 0 else np.zeros(w.shape[1])
        Tk, shk = _rebalance(wn, pres_prev[l])
        keep_ex[l], keep_sh[l] = _to_slots(pres_prev[l], shk, S)
        Tn = float((wn[:, None] * _presence_shares(fresh.expert[l], fresh.share[l], fresh.num_experts)[1]).sum(axis=0).max())
        gains[l] = horizon_s * routed_fraction / L * max(0.0, (Tk - Tn) / Tk) if Tk > 0 else 0.0
        moved_dev[l] = (pres_new[l] & ~pres_prev[l]).sum(axis=0) * expert_bytes * layer_scale
    order = np.argsort(-(gains / np.maximum(moved_dev.sum(axis=1), 1.0)), kind="stable")
    take = np.zeros(L, dtype=bool)
    best_net, dev = 0.0, np.zeros(G)
    chosen_gain = 0.0
    for l in order:
        if gains[l] <= 0:
            break
        # each layer's copy is charged as if layers moved one after another (the busiest device's
        # bytes of that layer over its link): an upper bound on the pause, so only clear gains move
        net = gains[l] - moved_dev[l].max() / bandwidth
        if net > 0:
            take[l], dev, chosen_gain, best_net = True, dev + moved_dev[l], chosen_gain + gains[l], best_net + net
    expert = np.where(take[:, None, None], fresh.expert, keep_ex)
    share = np.where(take[:, None, None], fresh.share, keep_sh)
    infos = [fresh.layer_info[l] if take[l] and l < len(fresh.layer_info) else LayerInfo(status="kept")
             for l in range(L)]
    out = Placement(expert, share, w, nodes=previous.nodes, policy=f"{fresh.policy} (moves that pay)",
                    layer_info=infos, messages=list(fresh.messages))
    figs = {"layers_moved": int(take.sum()), "gain_s": float(chosen_gain),
            "pause_s": float(dev.max() / bandwidth) if take.any() else 0.0}
    return out, figs

