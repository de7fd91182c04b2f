"""Inter-layer expert affinity (ExFlow) and the placement that exploits it.

**Affinity.** From routes ``[L, B, K]`` (the experts each of ``B`` tokens chose at each of
``L`` MoE layers; :class:`~simllm.placement.loads.RoutingSampler` or a routing trace,
:mod:`simllm.placement.routing_trace`), :func:`transition_counts` gives ``C[l, i, j]``: token
flow from expert ``i`` at layer ``l`` to expert ``j`` at layer ``l + 1``, along *rank paths*:
a token's ``k``-th choice at layer ``l`` (routes list a token's experts in rank order, highest
gate score first) leads to its ``k``-th choice at ``l + 1``, so ``sum_i C[l, i, j]`` is expert
``j``'s load at layer ``l + 1``; for top-1 routing (ExFlow's GPT MoE) it is the token's path.
For top-k this is an assumption: the copy of a token that expert ``i`` processed continues
to the next expert of the same rank. :func:`conditional` is
``P(j at l+1 | i at l)`` (the fraction of ``i``'s tokens that choose ``j`` next, ExFlow's
conditional routing probability); :func:`top_successor_probability` the load-weighted mean over
``i`` of ``max_j P(j | i)`` (about ``K/E`` without affinity, 1 when every expert has one successor).

**Context-coherent expert parallelism** (ExFlow): a token stays on the device of its current
expert, so the next layer's dispatch is the only all-to-all, and a copy whose next expert has
a replica on that device does not cross the network. :func:`cross_device_fraction` is the
fraction of next-layer copies that do cross, for a :class:`~simllm.placement.Placement`: the
token flow at device ``g`` is ``M[g, j] = sum_i C[i, j] share[i, g]`` and a copy is local when
``j`` has a replica on ``g`` (its tokens are served there first). A copy that cannot stay goes
first to ``j``'s replicas elsewhere in its node, then across nodes (:func:`layer_traffic`), so
the flow of node ``n`` that stays in ``n`` is ``min(M_n[n, j], w_j sum_{g in n} s[j, g])``;
:func:`cross_node_fraction` is the fraction that leaves its node.

**The affinity ILP** (:class:`AffinityILP`, policy ``ilp_affinity``): layer 0 is placed by the
EPLB greedy; then each layer ``l + 1`` is solved given layer ``l`` (a rolling window of one
layer pair, in order). Model of a pair: binaries ``x[j, g]`` (replica of ``j`` on ``g``),
shares ``s[j, g]`` and credited local flow ``y[j, g] <= x[j, g]`` with
``M[g, j] y[j, g] <= w_j s[j, g]`` (a replica serves at least the tokens credited to it);
node-kept flow ``z[j, n] <= M_n[n, j]`` with ``z[j, n] <= w_j sum_{g in n} s[j, g]`` (devices
grouped into the ``nodes`` of the placement, ``G / nodes`` each); slots ``sum_j x <= S``,
replica budget ``sum x <= E + R``, load balance ``sum_j w_j s[j, g] <= cap = (1 +
balance_tolerance) T_greedy`` (the EPLB greedy's makespan of that layer); objective
``max sum M[g, j] y[j, g] + lam sum z[j, n]`` with ``lam = inter_node_cost - 1``
(:func:`pair_value`). The pair's flow is fixed, so this minimises intra-node cross-device copies
plus ``inter_node_cost`` times cross-node copies: ``inter_node_cost`` is what one copy over the
nodes' NICs costs against one over the scale-up links, by default the ratio of their achievable
per-device bandwidths in the cluster's descriptors (:func:`inter_node_cost`: 8.83 for DGX H100,
3.63 for HGX H800), 1 (no node term, cross-device traffic only) without a cluster or with one node.

Solving a pair: (1) a heuristic that always meets ``cap`` (:func:`_pair_heuristic`: the
affinity greedy, moves/swaps until under ``cap``, then best-improvement swaps that add to the
objective, each scoring the node term exactly for even shares); (2) the *assignment bound*
(:func:`_assignment_bound`): the same objective over 0/1 ``x`` with every expert on at least
``ceil(w_j / cap)`` devices (a device carries at most ``cap``), ``S`` per device and the replica
budget, shares relaxed, node-kept flow ``M_n[n, j] u[j, n]`` with ``u[j, n] <= sum_{g in n}
x[j, g]``: without the node term a bipartite b-matching whose LP is integral (totally
unimodular), solved exactly by HiGHS in a fraction of a second, and tighter than the per-device
top-``S`` bound (which drops the coverage rows); with it its LP relaxation, still a valid bound
(``bound_time > 0`` branches on it and takes the MIP's dual bound); (3) the MIP (HiGHS through
highspy) over the heuristic's pairs, the assignment plan's pairs and each expert's ``candidates``
devices of most flow, warm-started by the heuristic, stopping at ``gap`` or at the pair's share
of what is left of ``time_budget``. The better of (1) and (3) is kept; a pair that does not
gain ``min_gain`` over the greedy keeps the greedy.

Gap: ``(sum of the pairs' assignment bounds - sum of objectives) / sum of bounds`` over the
``L - 1`` pairs (``affinity_gap``), and the same slack over the weighted cross traffic that is
left (``affinity_cost_gap``: (cost - lower bound) / cost, larger since the cost is the smaller
number). Each bound is valid for its pair's whole problem (no candidate restriction) given the
previous layer as placed; it is not a bound of the joint ``L``-layer problem (which would let
layer ``l`` move for layer ``l + 1``'s sake).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..hardware import load_cluster
from .ilp import _quiet_highs_banner, _rebalance, _to_slots
from .placement import LayerInfo, Placement
from .policies import check_shape, eplb_layer, replicate_experts
from .registry import get_policy_class, register


def as_routes(routes: Any, num_experts: Optional[int] = None) -> np.ndarray:
    """Validate routes ``[L, B, K]`` of expert ids (``0 <= id < num_experts``)."""
    r = np.asarray(routes)
    if r.ndim != 3 or r.shape[0] < 1 or r.shape[2] < 1:
        raise InputError(f"routes must have shape [layers, tokens, top_k], got {r.shape}", field="routes")
    if not np.issubdtype(r.dtype, np.integer):
        raise InputError("routes must hold integer expert ids", field="routes")
    if r.size and (r.min() < 0 or (num_experts is not None and r.max() >= num_experts)):
        raise InputError(f"expert ids must be in [0, {num_experts}), got {int(r.min())}..{int(r.max())}",
                         field="routes")
    return r.astype(np.int64, copy=False)


def affinity_routes(popularity: Any, top_k: int, num_tokens: int, follow: float, seed: int = 0,
                    structure_seed: int = 0) -> np.ndarray:
    """Routes ``[L, B, K]`` with a set inter-layer affinity (a generator; no model's real routing).

    Every layer ``l`` has a seeded successor permutation ``perm_l``. Each of a token's ``K``
    choices at layer ``l + 1`` is, with probability ``follow``, the successor ``perm_l(i)`` of its
    ``k``-th choice ``i`` at layer ``l`` (rank paths); the rest are drawn without replacement in proportion to
    the layer's ``popularity`` (Gumbel top-k). So ``P(perm_l(i) at l+1 | i at l)`` is about
    ``follow + (1 - follow) K / E`` (:func:`top_successor_probability` measures it). The
    permutations come from ``structure_seed`` (the model), the tokens from ``seed`` (the traffic).
    """
    p = np.asarray(popularity, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1 or not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InputError("popularity must be finite, non-negative, of shape [L, E]", field="popularity")
    if not 0.0 <= follow <= 1.0:
        raise InputError(f"must be in [0, 1], got {follow}", field="follow")
    L, E = p.shape
    K, B = int(top_k), int(num_tokens)
    if not 1 <= K <= E or B < 0:
        raise InputError(f"top_k must be in [1, {E}] and num_tokens >= 0", field="top_k")
    prng = np.random.default_rng([int(structure_seed), 0xAFF])
    perms = [prng.permutation(E) for _ in range(L - 1)]
    rng = np.random.default_rng([int(seed), 0xAFE])
    with np.errstate(divide="ignore"):
        logp = np.log(p / p.sum(axis=1, keepdims=True))
    out = np.empty((L, B, K), dtype=np.int64)
    prev = None
    rows = np.repeat(np.arange(B), K)
    for l in range(L):
        # Gumbel noise in float32 (half the memory traffic of float64; ties are as rare as needed)
        with np.errstate(divide="ignore"):
            gum = -np.log(-np.log(rng.random((B, E), dtype=np.float32)))
        sc = gum + np.where(np.isfinite(logp[l]), logp[l], -1e30).astype(np.float32)[None, :]
        take = None
        if prev is not None and follow > 0:
            take = rng.random((B, K)) < follow
            tgt = np.where(take, perms[l - 1][prev], -1)
            sc[rows[take.ravel()], tgt.ravel()[take.ravel()]] = np.float32(1e30)
        chosen = np.argpartition(-sc, K - 1, axis=1)[:, :K] if K < E else np.tile(np.arange(E), (B, 1))
        chosen = np.take_along_axis(chosen, np.argsort(-np.take_along_axis(sc, chosen, axis=1), axis=1,
                                                       kind="stable"), axis=1)  # rank order
        if take is not None:  # a followed successor keeps its predecessor's rank
            res = np.where(take, tgt, -1)
            rest = ~(chosen[:, :, None] == tgt[:, None, :]).any(axis=2)
            rem = np.take_along_axis(chosen, np.argsort(~rest, axis=1, kind="stable"), axis=1)
            free = np.argsort(take, axis=1, kind="stable")
            nfree = (~take).sum(axis=1)
            b = np.arange(B)
            for q in range(K):
                ok = q < nfree
                res[b[ok], free[ok, q]] = rem[ok, q]
            chosen = res
        prev = chosen
        out[l] = prev
    return out


def transition_counts(routes: Any, num_experts: int) -> np.ndarray:
    """``C[l, i, j]`` ``[L-1, E, E]``: token flow from ``i`` at layer ``l`` to ``j`` at ``l + 1``."""
    r = as_routes(routes, num_experts)
    L, B, K = r.shape
    E = int(num_experts)
    out = np.zeros((max(L - 1, 0), E, E))
    for l in range(L - 1):  # the k-th choice at l to the k-th choice at l+1 (rank paths)
        out[l] = np.bincount((r[l] * E + r[l + 1]).ravel(), minlength=E * E).reshape(E, E)
    return out


def conditional(counts: np.ndarray, top_k: int = 1) -> np.ndarray:
    """``P(j at l+1 | i at l)`` along rank paths (rows sum to 1; unused experts' rows are 0)."""
    tot = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, tot, out=np.zeros_like(counts), where=tot > 0)


def top_successor_probability(counts: np.ndarray, top_k: int = 1) -> float:
    """Load-weighted mean over source experts of ``max_j P(j | i)`` (all layer pairs)."""
    w = counts.sum(axis=-1)
    if w.sum() <= 0:
        return 0.0
    return float((conditional(counts, top_k).max(axis=-1) * w).sum() / w.sum())


def affinity_lift(counts: np.ndarray, top_k: int = 1) -> np.ndarray:
    """``[L-1]`` per layer pair: :func:`top_successor_probability` minus what independent routing
    gives (``max_j P(j) K``, the next layer's most popular expert). About 0 without affinity."""
    out = np.zeros(counts.shape[0])
    for l in range(counts.shape[0]):
        nxt = counts[l].sum(axis=0)
        if nxt.sum() <= 0:
            continue
        out[l] = top_successor_probability(counts[l][None], top_k) - nxt.max() / nxt.sum()
    return out


def device_flow(placement: Placement, counts: np.ndarray, layer: int) -> np.ndarray:
    """``M[g, j]``: flow at device ``g`` (after layer ``layer``) towards expert ``j`` at ``layer + 1``."""
    L, G, S = placement.expert.shape
    E = placement.num_experts
    sh = np.zeros((E, G))
    e = placement.expert[layer]
    g_idx, s_idx = np.nonzero(e >= 0)
    np.add.at(sh, (e[g_idx, s_idx], g_idx), placement.share[layer, g_idx, s_idx])
    return sh.T @ counts[layer]


def node_of(devices: int, nodes: int) -> np.ndarray:
    """``[G]`` node index of each device (devices numbered node by node, ``G / nodes`` per node)."""
    return np.arange(devices) // max(1, devices // max(1, nodes))


def layer_traffic(placement: Placement, counts: np.ndarray, layer: int) -> np.ndarray:
    """``F[g, h]``: token copies sent from device ``g`` to device ``h`` for layer ``layer + 1``'s
    experts under context-coherent EP (diagonal: copies that stay). Each replica of expert ``j`` on
    ``h`` serves its share of ``j``'s load, ``c = w_j s[j, h]``, filled nearest first: (1) a copy at
    ``g`` bound for ``j`` stays on ``g`` when ``g`` holds a replica, up to its share
    (``min(M[g, j], c)``); (2) what is left goes to ``j``'s replicas on other devices of ``g``'s node,
    up to what their own devices left of their shares; (3) the rest crosses nodes, to the replicas
    with share left. Within steps (2) and (3) senders and receivers pair in proportion. So the flow
    of node ``n`` towards ``j`` that stays in ``n`` is exactly ``min(M_n[n, j], w_j sum_{g in n}
    s[j, g])`` (``M_n``: ``M`` summed over the node's devices), the term the affinity ILP maximises.
    Units: those of ``counts`` (token copies)."""
    M = device_flow(placement, counts, layer)  # [G, E]
    _, sh = _presence_shares(placement.expert[layer + 1], placement.share[layer + 1], placement.num_experts)
    G = M.shape[0]
    nd = node_of(G, placement.nodes)
    N = int(nd.max()) + 1
    w = M.sum(axis=0)  # [E] next-layer load
    cap = (w[:, None] * sh).T  # [G, E] what each replica serves (0 where g holds none)
    local = np.minimum(M, cap)
    D, R = M - local, cap - local  # demand left at g, share left on h (never both > 0 at one g, j)
    Dn, Rn = np.zeros((N, M.shape[1])), np.zeros((N, M.shape[1]))
    np.add.at(Dn, nd, D)
    np.add.at(Rn, nd, R)
    served = np.minimum(Dn, Rn)  # [N, E] served inside the node, past the devices themselves
    fd = np.divide(served, Dn, out=np.zeros_like(Dn), where=Dn > 0)
    fr = np.divide(served, Rn, out=np.zeros_like(Rn), where=Rn > 0)
    inv = np.divide(1.0, Rn, out=np.zeros_like(Rn), where=Rn > 0)
    same = nd[:, None] == nd[None, :]
    F = np.where(same, (D * fd[nd] * inv[nd]) @ R.T, 0.0)  # step (2)
    Dl, Rl = D * (1.0 - fd[nd]), R * (1.0 - fr[nd])  # left after each node served its own
    tot = Rl.sum(axis=0)
    F += np.divide(Dl, tot, out=np.zeros_like(Dl), where=tot > 0) @ Rl.T  # step (3)
    np.fill_diagonal(F, 0.0)
    F[np.diag_indices_from(F)] = local.sum(axis=1)
    return F


def device_traffic(placement: Placement, counts: np.ndarray) -> np.ndarray:
    """``[G, G]``: fraction of a layer's routed token copies sent from device ``g`` to ``h``
    (:func:`layer_traffic` over every layer pair, normalised to sum 1; the diagonal stays).
    What :class:`~simllm.cost.moe_ep.EPStepCost` prices with ``traffic=`` (one all-to-all)."""
    L = placement.num_layers
    if counts.shape[0] != L - 1 or counts.shape[1] != placement.num_experts:
        raise InputError(f"transition counts of shape {counts.shape} do not match the placement "
                         f"({L} layers, {placement.num_experts} experts)", field="routes")
    G = placement.devices
    tot = np.zeros((G, G))
    for l in range(L - 1):
        tot += layer_traffic(placement, counts, l)
    s = tot.sum()
    return tot / s if s > 0 else np.eye(G) / G


def cross_device_fraction(placement: Placement, counts: np.ndarray) -> float:
    """Fraction of next-layer token copies that leave their device under context-coherent EP
    (over all ``L - 1`` layer pairs of ``counts``, which must match the placement's layers;
    :func:`layer_traffic`'s accounting)."""
    if placement.num_layers < 2:
        if counts.shape[0] != 0:
            raise InputError(f"transition counts of shape {counts.shape} do not match the placement "
                             f"(1 layer)", field="routes")
        return 0.0
    F = device_traffic(placement, counts)
    return float(1.0 - np.trace(F))


def cross_node_fraction(placement: Placement, counts: np.ndarray) -> float:
    """Fraction of next-layer token copies that leave their node (context-coherent EP)."""
    if placement.num_layers < 2:
        return 0.0
    F = device_traffic(placement, counts)
    nd = node_of(placement.devices, placement.nodes)
    return float(F[nd[:, None] != nd[None, :]].sum())


def inter_node_cost(hardware: Any) -> tuple[float, str]:
    """Cost of one token copy across nodes relative to one between two devices of a node, from a
    cluster's (or node's) descriptors: the per-device scale-up bandwidth over the per-device
    scale-out bandwidth (each link's achievable bandwidth, peak times its measured ``efficiency``
    where the descriptor has one). Returns (ratio, how it was derived); 1 (no cross-node term) for a
    node without scale-out links. The affinity ILP's objective counts a cross-node copy this many
    times an intra-node one (:class:`AffinityILP` ``inter_node_cost``)."""
    node = getattr(hardware, "node", hardware)
    up, out = node.scale_up_link, node.scale_out_link
    if out is None or node.scale_out_bw <= 0:
        return 1.0, f"{node.name}: no scale-out link, cross-node term off"

    def eff(link):
        return link.efficiency.value if link.efficiency is not None else 1.0

    b_up = node.scale_up_bw * eff(up)
    b_out = node.scale_out_bw * eff(out)
    ratio = max(1.0, b_up / b_out)
    return ratio, (f"{node.name}: {up.name} {b_up / 1e9:.0f} GB/s / {out.name} {b_out / 1e9:.0f} GB/s per device "
                   f"(achievable: peak x measured efficiency) = {b_up / b_out:.2f}")


def pair_value(M: np.ndarray, w: np.ndarray, X: np.ndarray, sh: np.ndarray, nd: Optional[np.ndarray] = None,
               lam: float = 0.0) -> float:
    """The affinity ILP's objective for one layer pair: flow kept on its device,
    ``sum min(M[g, j], w_j s[j, g])``, plus ``lam`` times flow kept in its node,
    ``sum min(M_n[n, j], w_j sum_{g in n} s[j, g])`` (:func:`layer_traffic`'s accounting;
    ``lam = inter_node_cost - 1``). Maximising it minimises intra-node cross-device copies plus
    ``inter_node_cost`` times cross-node copies (the pair's flow is a constant)."""
    cap = w[:, None] * sh  # [E, G]
    v = float(np.minimum(M.T * X, cap).sum())
    if lam > 0 and nd is not None and nd.max() > 0:
        Mn, Cn = _by_node(M.T, nd), _by_node(cap, nd)
        v += lam * float(np.minimum(Mn, Cn).sum())
    return v


def _by_node(A: np.ndarray, nd: np.ndarray) -> np.ndarray:
    """``[E, G]`` -> ``[E, N]``: summed over each node's devices."""
    return A @ (nd[:, None] == np.arange(int(nd.max()) + 1)[None, :])


def _flow_bound(M: np.ndarray, S: int) -> float:
    """At most ``S`` experts are local on a device: sum over devices of the S largest flows."""
    k = min(S, M.shape[1])
    return float(-np.sort(-M, axis=1)[:, :k].sum())


def _assignment_bound(M: np.ndarray, S: int, budget: int, min_replicas: Optional[np.ndarray] = None,
                      nd: Optional[np.ndarray] = None, lam: float = 0.0, time_limit: float = 0.0
                      ) -> tuple[float, np.ndarray]:
    """Assignment bound of one layer pair and its plan: ``max sum M[g, j] x[j, g] + lam sum
    M_n[n, j] u[j, n]`` over 0/1 ``x`` with every expert ``j`` on at least ``min_replicas[j]``
    devices (default 1), at most ``S`` per device and ``budget`` in all, and ``u[j, n] <=
    sum_{g in n} x[j, g]``, ``u <= 1`` (``j`` has a replica in node ``n``; ``nd`` gives each
    device's node). Every placement meeting those constraints keeps at most ``M[g, j]`` on a
    replica and at most ``M_n[n, j]`` in a node holding ``j``, so this bounds the pair's objective
    (:func:`pair_value`; shares relaxed). The load cap enters through ``min_replicas``: an expert
    of load ``w_j`` needs at least ``ceil(w_j / cap)`` replicas when no device may carry more than
    ``cap``. Without the node term (``lam = 0`` or one node) the constraint matrix is a bipartite
    b-matching's (totally unimodular), so HiGHS's LP optimum is already 0/1 and the bound is exact
    for the relaxed problem, at least as tight as :func:`_flow_bound`. With it the LP relaxation
    (fractional ``x``) is still a valid bound; ``time_limit > 0`` then branches on ``x`` for that
    long and returns the MIP's dual bound (valid when stopped early, tighter than the LP). Returns
    (bound, x [E, G] bool: the solution's ``x > 0.5``, a plan when the LP is integral)."""
    import highspy

    G, E = M.shape
    n = E * G  # column j * G + g
    node_term = lam > 0 and nd is not None and int(nd.max()) > 0
    N = int(nd.max()) + 1 if node_term else 0
    nu = E * N  # columns n + j * N + k
    _quiet_highs_banner()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.addVars(n + nu, np.zeros(n + nu), np.ones(n + nu))
    cost = M.T.ravel().astype(np.float64)
    if node_term:
        cost = np.concatenate([cost, lam * _by_node(M.T, nd).ravel()])
    h.changeColsCost(n + nu, np.arange(n + nu, dtype=np.int32), cost)
    h.changeObjectiveSense(highspy.ObjSense.kMaximize)
    cols = np.arange(n).reshape(E, G)
    idx = np.concatenate([cols.ravel(), cols.T.ravel(), np.arange(n)]).astype(np.int32)
    starts = np.concatenate([np.arange(E) * G, n + np.arange(G) * E, [2 * n]]).astype(np.int32)
    inf = highspy.kHighsInf
    r = np.ones(E) if min_replicas is None else np.minimum(np.asarray(min_replicas, dtype=float), G)
    lo = np.concatenate([r, np.full(G + 1, -inf)])
    hi = np.concatenate([np.full(E, inf), np.full(G, float(S)), [float(budget)]])
    val = np.ones(len(idx))
    if node_term:  # u[j, k] - sum_{g in k} x[j, g] <= 0
        ui, ux, us = [], [], []
        for j in range(E):
            for k in range(N):
                us.append(len(idx) + len(ui))
                devs = cols[j, nd == k]
                ui.extend([n + j * N + k] + devs.tolist())
                ux.extend([1.0] + [-1.0] * len(devs))
        starts = np.concatenate([starts, np.array(us, dtype=np.int32)])
        idx = np.concatenate([idx, np.array(ui, dtype=np.int32)])
        val = np.concatenate([val, np.array(ux)])
        lo = np.concatenate([lo, np.full(nu, -inf)])
        hi = np.concatenate([hi, np.zeros(nu)])
        if time_limit > 0:
            h.changeColsIntegrality(n, np.arange(n, dtype=np.int32),
                                    np.array([highspy.HighsVarType.kInteger] * n))
            h.setOptionValue("time_limit", float(time_limit))
            h.setOptionValue("mip_rel_gap", 1e-4)
    h.addRows(len(lo), lo, hi, len(idx), starts, idx, val)
    h.run()
    st = h.getModelStatus()
    if node_term and time_limit > 0 and st in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit):
        bound = float(h.getInfo().mip_dual_bound)
        if st == highspy.HighsModelStatus.kOptimal:  # within mip_rel_gap of the incumbent
            bound = max(bound, float(h.getInfo().objective_function_value))
        if np.isfinite(bound):
            x = np.asarray(h.getSolution().col_value)[:n].reshape(E, G)
            return bound, x > 0.5
    if st != highspy.HighsModelStatus.kOptimal:
        fb = _flow_bound(M, S) + (lam * float(_by_node(M.T, nd).sum()) if node_term else 0.0)
        return fb, np.zeros((E, G), dtype=bool)
    x = np.asarray(h.getSolution().col_value)[:n].reshape(E, G)
    return float(h.getInfo().objective_function_value), x > 0.5


def _node_gains(X: np.ndarray, Mn: Optional[np.ndarray], nd: Optional[np.ndarray], per: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Node term of a replica graph ``X`` [E, G] with even shares ``per`` [E] a replica, per
    (expert, node) ``[E, N]``: what one more replica of ``j`` in node ``n`` adds to
    ``min(M_n[n, j], per_j k[j, n])`` and what one fewer loses (``k``: replicas of ``j`` in ``n``)."""
    if Mn is None:
        return np.zeros((X.shape[0], 1)), np.zeros((X.shape[0], 1))
    k = _by_node(X.astype(float), nd)
    p = per[:, None]
    f = np.minimum(Mn, p * k)
    return np.minimum(Mn, p * (k + 1)) - f, np.where(k > 0, f - np.minimum(Mn, p * np.maximum(k - 1, 0)), 0.0)


def _affinity_greedy(M: np.ndarray, w: np.ndarray, cnt: np.ndarray, S: int, cap: float,
                     Mn: Optional[np.ndarray] = None, nd: Optional[np.ndarray] = None, lam: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Warm start: replicas (``cnt`` per expert, even shares) heaviest first (as the EPLB greedy),
    each to the device with most flow towards its expert (plus ``lam`` times what the replica adds
    to its node's kept flow, with ``Mn`` [E, N] the flow per node and ``nd`` each device's node)
    among those with a free slot that stay under ``cap``; when none stays under it, to the
    least-loaded device with room."""
    G, E = M.shape
    X = np.zeros((E, G), dtype=bool)
    load = np.zeros(G)
    fill = np.zeros(G, dtype=np.int64)
    per = w / np.maximum(cnt, 1)
    kn = np.zeros(Mn.shape) if lam > 0 and Mn is not None else None
    for j in np.argsort(-per, kind="stable"):
        for _ in range(int(cnt[j])):
            room = (fill < S) & ~X[j]
            if not room.any():
                break
            ok = room & (load + per[j] <= cap)
            if ok.any():
                key = M[:, j]
                if kn is not None:
                    kj = kn[j]
                    add = np.minimum(Mn[j], per[j] * (kj + 1)) - np.minimum(Mn[j], per[j] * kj)
                    key = key + lam * add[nd]
                key = np.where(ok, key - 1e-9 * load, -np.inf)
                g = int(np.argmax(key))
            else:
                g = int(np.argmin(np.where(room, load, np.inf)))
            X[j, g] = True
            load[g] += per[j]
            fill[g] += 1
            if kn is not None:
                kn[j, nd[g]] += 1
    sh = X / np.maximum(X.sum(axis=1, keepdims=True), 1)
    return X, sh


def _repair(X: np.ndarray, M: np.ndarray, w: np.ndarray, S: int, cap: float, max_iter: int = 400,
            Mn: Optional[np.ndarray] = None, nd: Optional[np.ndarray] = None, lam: float = 0.0) -> np.ndarray:
    """Local search that brings a replica graph ``X`` [E, G] (even shares) under ``cap``: while a
    device is over it, move one of its replicas to a device with a free slot, or swap it with a
    lighter replica on another device, whichever lowers the busiest of the two below the
    overloaded device's load and loses the least objective (kept flow ``min(M[g, j], w_j /
    replicas)`` per replica, plus ``lam`` times the node term, :func:`_node_gains`). Keeps the
    replica count of every expert. Returns the new ``X`` (it may still be over ``cap`` when no
    move helps)."""
    X = X.copy()
    E, G = X.shape
    cnt = np.maximum(X.sum(axis=1), 1)
    per = w / cnt
    kv = np.minimum(M.T, per[:, None])  # [E, G] kept flow of a replica of j on g
    node = lam > 0 and Mn is not None
    for _ in range(max_iter):
        load = (X * per[:, None]).sum(axis=0)
        g = int(np.argmax(load))
        if load[g] <= cap * (1 + 1e-9):
            break
        fill = X.sum(axis=0)
        js = np.nonzero(X[:, g])[0]
        if node:
            ga, lo = _node_gains(X, Mn, nd, per)
            dn = np.where(nd[None, :] != nd[g], ga[js][:, nd] - lo[js, nd[g]][:, None], 0.0)  # [js, G]
        best, choice = -np.inf, None
        # moves: j from g to h (free slot, h not holding j), h stays below g's load
        ok = (~X[js]) & (fill < S)[None, :] & (load[None, :] + per[js, None] < load[g] - 1e-12)
        ok[:, g] = False
        if ok.any():
            score = kv[js] - kv[js, g][:, None] - 1e-6 * (load[None, :] + per[js, None])
            if node:
                score = score + lam * dn
            score = np.where(ok, score, -np.inf)
            a, h = np.unravel_index(int(np.argmax(score)), score.shape)
            best, choice = score[a, h], (js[a], h, None)
        # swaps: j (on g) with a lighter replica (i on h), i not on g and j not on h
        ri, rh = np.nonzero(X)
        keep = rh != g
        ri, rh = ri[keep], rh[keep]
        d = per[js][:, None] - per[ri][None, :]  # what g loses and h gains
        ok = (d > 1e-12) & (load[rh][None, :] + d < load[g] - 1e-12) & ~X[js][:, rh] & ~X[ri, g][None, :]
        if ok.any():
            gain = kv[js][:, rh] + kv[ri, g][None, :] - kv[js, g][:, None] - kv[ri, rh][None, :]
            if node:  # i moves from h to g
                di = np.where(nd[rh] != nd[g], ga[ri, nd[g]] - lo[ri, nd[rh]], 0.0)
                gain = gain + lam * (dn[:, rh] + di[None, :])
            score = np.where(ok, gain - 1e-6 * (load[rh][None, :] + d), -np.inf)
            a, b2 = np.unravel_index(int(np.argmax(score)), score.shape)
            if score[a, b2] > best:
                best, choice = score[a, b2], (js[a], rh[b2], ri[b2])
        if choice is None:
            break
        j, h, i = choice
        X[j, g], X[j, h] = False, True
        if i is not None:
            X[i, h], X[i, g] = False, True
    return X


def _improve(X: np.ndarray, M: np.ndarray, w: np.ndarray, S: int, cap: float, max_iter: int = 300,
             Mn: Optional[np.ndarray] = None, nd: Optional[np.ndarray] = None, lam: float = 0.0) -> np.ndarray:
    """Best-improvement local search on a replica graph under ``cap`` (even shares, replica
    counts kept): each step applies the swap of two replicas on different devices (or the move
    of one to a free slot) that adds the most objective (kept flow, plus ``lam`` times the node
    term, :func:`_node_gains`) and leaves both devices under ``cap``; several swaps at once when
    they touch disjoint devices (and, with the node term, disjoint experts, so their gains add).
    Stops when no step adds to the objective."""
    X = X.copy()
    E, G = X.shape
    cnt = np.maximum(X.sum(axis=1), 1)
    per = w / cnt
    kv = np.minimum(M.T, per[:, None])  # [E, G]
    node = lam > 0 and Mn is not None
    for _ in range(max_iter):
        load = (X * per[:, None]).sum(axis=0)
        j, g = np.nonzero(X)  # replicas
        # swap replica a=(j[a], g[a]) with b=(j[b], g[b])
        gain = kv[j[:, None], g[None, :]] + kv[j[None, :], g[:, None]] - kv[j, g][:, None] - kv[j, g][None, :]
        if node:
            ga, lo = _node_gains(X, Mn, nd, per)
            ng = nd[g]
            ta = np.where(ng[:, None] != ng[None, :], ga[j][:, ng] - lo[j, ng][:, None], 0.0)  # a moves to g[b]
            gain = gain + lam * (ta + ta.T)
        d = per[j][:, None] - per[j][None, :]  # what g[a] loses (and g[b] gains)
        ok = (g[:, None] != g[None, :]) & ~X[j[:, None], g[None, :]] & ~X[j[None, :], g[:, None]]
        ok &= (load[g][:, None] - d <= cap) & (load[g][None, :] + d <= cap)
        gain = np.where(ok, gain, -np.inf)
        # moves of a replica to a device with a free slot
        fill = X.sum(axis=0)
        mv = (fill < S)[None, :] & ~X[j] & (load[None, :] + per[j][:, None] <= cap)
        if mv.any():
            mgain = kv[j] - kv[j, g][:, None]
            if node:
                mgain = mgain + lam * np.where(nd[None, :] != nd[g][:, None], ga[j][:, nd] - lo[j, nd[g]][:, None], 0.0)
            mgain = np.where(mv, mgain, -np.inf)
            ma, mh = np.unravel_index(int(np.argmax(mgain)), mgain.shape)
            if mgain[ma, mh] > max(gain.max(), 1e-12):
                X[j[ma], g[ma]], X[j[ma], mh] = False, True
                continue
        # apply the best swaps that touch disjoint devices (each stays valid on its own)
        flat = np.argsort(-gain, axis=None)[:4 * G]
        used = np.zeros(G, dtype=bool)
        used_e = np.zeros(E, dtype=bool)
        done = 0
        for f in flat:
            a, b = divmod(int(f), gain.shape[1])
            if not gain[a, b] > 1e-12:
                break
            if used[g[a]] or used[g[b]] or (node and (used_e[j[a]] or used_e[j[b]])):
                continue
            X[j[a], g[a]], X[j[a], g[b]] = False, True
            X[j[b], g[b]], X[j[b], g[a]] = False, True
            used[g[a]] = used[g[b]] = True
            used_e[j[a]] = used_e[j[b]] = True
            done += 1
        if not done:
            break
    return X


def _solve_pair(M: np.ndarray, w: np.ndarray, X0: np.ndarray, s0: np.ndarray, S: int, budget: int, cap: float,
                candidates: int, gap: float, time_limit: float, extra: Optional[np.ndarray] = None,
                nd: Optional[np.ndarray] = None, lam: float = 0.0) -> tuple[np.ndarray, np.ndarray, str]:
    """One layer given the previous one: (presence [E, G], shares [E, G], status). Binaries exist
    for the warm start's pairs, each expert's ``candidates`` devices of most flow and ``extra``.
    With ``lam > 0`` and several nodes (``nd``: each device's node) the objective adds ``lam``
    times the flow kept in its node: a column ``z[j, n] <= M_n[n, j]`` per expert and node with a
    candidate device, ``z[j, n] <= w_j sum_{g in n} s[j, g]`` (exact: :func:`pair_value`)."""
    import highspy

    E, G = X0.shape
    cand = X0.copy() if extra is None else (X0 | extra)
    if candidates > 0:
        top = np.argsort(-M, axis=0, kind="stable")[:min(candidates, G)]  # [c, E] devices per expert
        cand[np.arange(E)[None, :], top] = True
    pairs = np.argwhere(cand)  # (j, g)
    n = len(pairs)
    jj, gg = pairs[:, 0], pairs[:, 1]
    mflow = M[gg, jj]
    _quiet_highs_banner()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("time_limit", float(max(time_limit, 0.05)))
    inf = highspy.kHighsInf
    # columns: x (n, binary), s (n), y (n)
    node_term = lam > 0 and nd is not None and int(nd.max()) > 0
    zj = zk = np.zeros(0, dtype=np.int64)
    if node_term:
        jn = np.unique(jj * (int(nd.max()) + 1) + nd[gg])
        zj, zk = np.divmod(jn, int(nd.max()) + 1)
    nz = len(zj)
    Mn = _by_node(M.T, nd) if node_term else None
    zub = Mn[zj, zk] if node_term else np.zeros(0)
    cost = np.concatenate([np.zeros(2 * n), mflow, np.full(nz, float(lam))])
    h.addVars(3 * n + nz, np.zeros(3 * n + nz), np.concatenate([np.ones(3 * n), zub]))
    h.changeColsCost(3 * n + nz, np.arange(3 * n + nz, dtype=np.int32), cost)
    h.changeColsIntegrality(n, np.arange(n, dtype=np.int32), np.array([highspy.HighsVarType.kInteger] * n))
    h.changeObjectiveSense(highspy.ObjSense.kMaximize)
    rows_lo, rows_hi, starts, idx, val = [], [], [], [], []

    def row(lo, hi, ii, vv):
        starts.append(len(idx))
        rows_lo.append(lo)
        rows_hi.append(hi)
        idx.extend(ii)
        val.extend(vv)

    ar = np.arange(n)
    for j in range(E):  # shares sum to 1
        k = ar[jj == j]
        row(1.0, 1.0, (n + k).tolist(), [1.0] * len(k))
    for k in range(n):
        row(-inf, 0.0, [n + k, k], [1.0, -1.0])  # s <= x
        row(-inf, 0.0, [2 * n + k, k], [1.0, -1.0])  # y <= x
        if mflow[k] > 0:
            row(-inf, 0.0, [2 * n + k, n + k], [float(mflow[k]), -float(w[jj[k]])])  # M y <= w s
    for g in range(G):
        k = ar[gg == g]
        row(-inf, float(S), k.tolist(), [1.0] * len(k))  # slots
        row(-inf, float(cap), (n + k).tolist(), w[jj[k]].astype(float).tolist())  # load
    row(-inf, float(budget), ar.tolist(), [1.0] * n)  # replica budget
    for q in range(nz):  # node-kept flow: z <= w_j * (shares of j in the node)
        k = ar[(jj == zj[q]) & (nd[gg] == zk[q])]
        row(-inf, 0.0, [3 * n + q] + (n + k).tolist(), [1.0] + [-float(w[zj[q]])] * len(k))
    h.addRows(len(rows_lo), np.array(rows_lo), np.array(rows_hi), len(idx), np.array(starts, dtype=np.int32),
              np.array(idx, dtype=np.int32), np.array(val, dtype=np.float64))
    # warm start: the greedy placement, crediting what its shares allow
    x0 = X0[jj, gg].astype(float)
    sv = s0[jj, gg]
    y0 = np.where(x0 > 0, np.minimum(1.0, np.divide(w[jj] * sv, mflow, out=np.ones(n), where=mflow > 0)), 0.0)
    sol = highspy.HighsSolution()
    z0 = np.zeros(nz)
    if node_term:
        z0 = np.minimum(zub, w[zj] * _by_node(np.where(X0, s0, 0.0), nd)[zj, zk])
    sol.col_value = np.concatenate([x0, sv, y0, z0]).tolist()
    sol.value_valid = True
    h.setSolution(sol)
    h.run()
    status = h.getModelStatus().name
    v = np.asarray(h.getSolution().col_value)
    if v.size != 3 * n + nz or h.getInfo().primal_solution_status == 0:
        return X0, s0, f"kept_greedy ({status})"
    X = np.zeros((E, G), dtype=bool)
    sh = np.zeros((E, G))
    on = v[:n] > 0.5
    X[jj[on], gg[on]] = True
    sh[jj[on], gg[on]] = np.maximum(v[n:2 * n][on], 0.0)
    tot = sh.sum(axis=1, keepdims=True)
    if (X.sum(axis=1) == 0).any() or (X.sum(axis=0) > S).any():
        return X0, s0, f"kept_greedy (bad solution, {status})"
    sh = np.where(X, np.divide(sh, tot, out=np.zeros_like(sh), where=tot > 0), 0.0)
    zero = (tot[:, 0] <= 0)
    if zero.any():
        sh[zero] = X[zero] / X[zero].sum(axis=1, keepdims=True)
    st = {"kOptimal": "optimal", "kTimeLimit": "time_limit"}.get(status, status)
    return X, sh, st


def _presence_shares(expert: np.ndarray, share: np.ndarray, E: int) -> tuple[np.ndarray, np.ndarray]:
    G, S = expert.shape
    X = np.zeros((E, G), dtype=bool)
    sh = np.zeros((E, G))
    g, s = np.nonzero(expert >= 0)
    X[expert[g, s], g] = True
    np.add.at(sh, (expert[g, s], g), share[g, s])
    return X, sh


@register("ilp_affinity")
@dataclass(frozen=True)
class AffinityILP:
    """ExFlow-style placement: per layer pair, keep the most token traffic on-device and in-node,
    a cross-node copy weighed ``inter_node_cost`` intra-node ones (see module doc).

    Needs transition counts (:meth:`with_counts` or ``counts`` in :meth:`place`); without them
    (or with no layer pairs) it is the EPLB greedy.
    """

    balance_tolerance: float = 0.05
    candidates: int = 0  # extra MIP devices per expert beyond the heuristic's and the assignment plan's
    gap: float = 0.01
    time_budget: float = 30.0
    redundant: Optional[int] = None
    min_gain: float = 0.1  # leave the greedy only for >= 10 % more on-device flow in a layer pair
    min_lift: float = 0.1  # ... and only where the affinity lift (affinity_lift) is at least this
    top_k: int = 1  # experts per token (to read the lift)
    # one cross-node copy costs this many intra-node cross-device copies (>= 1; 1: no node term);
    # None: from ``cluster``'s link descriptors (inter_node_cost()), or 1 without a cluster
    inter_node_cost: Optional[float] = None
    cluster: Optional[str] = None  # cluster descriptor the inter-node cost is derived from
    bound_time: float = 0.0  # seconds per pair to branch on the bound's MIP (node term only; 0: its LP)

    def __post_init__(self):
        if not self.balance_tolerance >= 0:
            raise ValueError(f"balance_tolerance must be >= 0, got {self.balance_tolerance}")
        if self.candidates < 0 or not self.gap >= 0 or not self.time_budget >= 0 or not self.bound_time >= 0:
            raise ValueError("candidates, gap, time_budget and bound_time must be >= 0")
        if self.inter_node_cost is not None and not (np.isfinite(self.inter_node_cost) and self.inter_node_cost >= 1):
            raise ValueError(f"inter_node_cost must be >= 1 (a cross-node copy also crosses devices), "
                             f"got {self.inter_node_cost}")

    def node_cost(self) -> tuple[float, str]:
        """(inter-node cost used, where it came from)."""
        if self.inter_node_cost is not None:
            return float(self.inter_node_cost), "given"
        if self.cluster:
            return inter_node_cost(load_cluster(self.cluster))
        return 1.0, "no cluster given: cross-node term off"

    def place(self, loads, devices, nodes, slots_per_device, *, previous=None, counts: Optional[np.ndarray] = None,
              progress=None) -> Placement:
        t0 = time.perf_counter()
        w, S, msgs = check_shape(loads, devices, nodes, slots_per_device)
        L, E = w.shape
        G = devices
        budget = min(G * S, E + (G * S - E if self.redundant is None else int(self.redundant)))
        expert = np.full((L, G, S), -1, dtype=np.int32)
        share = np.zeros((L, G, S))
        infos: list[LayerInfo] = []
        if counts is not None and counts.shape != (L - 1, E, E):
            raise InputError(f"transition counts of shape {counts.shape} do not match {L} layers x {E} experts",
                             field="routes")
        kept_sum = bound_sum = flow_sum = 0.0
        cost, how = self.node_cost()
        nd = node_of(G, nodes)
        lam = cost - 1.0 if nodes > 1 else 0.0
        if counts is not None and nodes > 1:
            msgs.append(f"inter-node cost {cost:.2f} ({how}): objective = cross-device copies + "
                        f"{lam:.2f} x cross-node copies")
        for l in range(L):
            t1 = time.perf_counter()
            tot = float(w[l].sum())
            wn = w[l] / tot * G if tot > 0 else np.zeros(E)
            if budget < G * S:
                cnt = replicate_experts(wn, budget)
                ex_g, sh_g = _greedy_counts(wn, cnt, G, S)
            else:
                ex_g, sh_g = eplb_layer(wn, G, nodes, S, distinct=True)
            X0, s0 = _presence_shares(ex_g, sh_g, E)
            info = LayerInfo(status="greedy")
            lift = float(affinity_lift(counts[l - 1][None], self.top_k)[0]) if l > 0 and counts is not None else 0.0
            if l > 0 and counts is not None and tot > 0 and lift < self.min_lift:
                info = LayerInfo(status="greedy (no affinity)")
            elif l > 0 and counts is not None and tot > 0:
                Ml = np.zeros((G, E))
                # flow at each device of layer l (placed already) towards layer l+1's experts
                Xp, sp = _presence_shares(expert[l - 1], share[l - 1], E)
                Ml = sp.T @ counts[l - 1]
                Ml = Ml / max(Ml.sum(), 1e-300) * G  # same units as wn (mean device load 1)
                T_g = float((wn[:, None] * s0).sum(axis=0).max())
                cap = (1 + self.balance_tolerance) * T_g
                Xh, shh = _pair_heuristic(Ml, wn, np.maximum(X0.sum(axis=1), 1), S, T_g, cap, X0, s0, nd, lam)
                need = np.maximum(1.0, np.ceil(wn / cap - 1e-9))  # replicas each expert needs under cap
                bnd, Xbm = _assignment_bound(Ml, S, budget, need if need.sum() <= budget else None, nd, lam,
                                             self.bound_time)
                # the solver gets this layer's share of what is left, less what the heuristic took
                left = self.time_budget - (time.perf_counter() - t0)
                lim = 0.9 * left / (L - l) - (time.perf_counter() - t1)
                kept_h = pair_value(Ml, wn, Xh, shh, nd, lam)
                if bnd - kept_h <= self.gap * bnd:
                    X, sh, st = Xh, shh, "heuristic_within_gap"
                elif lim > 0.05:
                    X, sh, st = _solve_pair(Ml, wn, Xh, shh, S, budget, cap, self.candidates, self.gap, lim,
                                            extra=Xbm, nd=nd, lam=lam)
                else:
                    X, sh, st = Xh, shh, "heuristic (time budget spent)"
                kept = pair_value(Ml, wn, X, sh, nd, lam)
                if kept < kept_h:
                    X, sh, kept, st = Xh, shh, kept_h, "heuristic"
                kept0 = pair_value(Ml, wn, X0, s0, nd, lam)
                if kept < kept0 * (1 + self.min_gain):  # no affinity worth the imbalance: the greedy
                    X, sh, kept, st = X0, s0, kept0, "greedy (no gain)"
                kept_sum += kept
                bound_sum += bnd
                flow_sum += G * (1.0 + lam)  # the pair's flow (normalised to G), counted once per term
                # objective: flow kept on-device (+ lam x kept in-node), per unit of the pair's flow; its
                # bound is in the message (not a makespan bound, so not in ``bound``, which summaries read as one)
                info = LayerInfo(status=st, objective=kept / G, gap=(bnd - kept) / bnd if bnd > 0 else 0.0,
                                 message=f"kept flow (on-device + {lam:.2f} x in-node) {kept / G:.4f}, bound "
                                         f"{bnd / G:.4f} (heuristic {kept_h / G:.4f}, greedy {kept0 / G:.4f})")
                X0, s0 = X, sh
            expert[l], share[l] = _to_slots(X0, s0, S)
            info.solve_s = time.perf_counter() - t1
            infos.append(info)
            if progress is not None:
                progress(l + 1, L, info)
        if counts is None:
            msgs.append("ilp_affinity: no routing samples or trace; used the EPLB greedy on every layer")
        p = Placement(expert, share, w, nodes=nodes, policy="ilp_affinity", layer_info=infos, messages=msgs,
                      solve_s=time.perf_counter() - t0)
        p.affinity_gap = (bound_sum - kept_sum) / bound_sum if bound_sum > 0 else 0.0  # type: ignore[attr-defined]
        # the same gap on the traffic cost minimised (flow - kept): (cost - lower bound) / cost
        c_sum = flow_sum - kept_sum
        p.affinity_cost_gap = (bound_sum - kept_sum) / c_sum if c_sum > 0 else 0.0  # type: ignore[attr-defined]
        p.inter_node_cost = cost if nodes > 1 else 1.0  # type: ignore[attr-defined]
        return p


def _pair_heuristic(M: np.ndarray, w: np.ndarray, cnt: np.ndarray, S: int, T_g: float, cap: float,
                    X0: np.ndarray, s0: np.ndarray, nd: Optional[np.ndarray] = None, lam: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """A layer's plan without the solver: the affinity greedy (:func:`_affinity_greedy`, the EPLB
    replica counts ``cnt``), brought under ``cap`` by :func:`_repair`, then :func:`_improve`;
    even shares (re-split by :func:`_rebalance` when that alone meets ``cap``). Falls back to
    the greedy plan ``(X0, s0)`` when nothing meets ``cap``. Every step scores the pair's
    objective (:func:`pair_value`: ``lam`` times the node term when ``nd`` has several nodes)."""
    def over(sh):
        return (w[:, None] * sh).sum(axis=0).max() > cap * (1 + 1e-9)

    kw: dict = {}
    if lam > 0 and nd is not None and int(nd.max()) > 0:
        kw = dict(Mn=_by_node(M.T, nd), nd=nd, lam=lam)
    X, sh = _affinity_greedy(M, w, cnt, S, cap, **kw)
    if over(sh):
        X = _repair(X, M, w, S, cap, **kw)
        sh = X / np.maximum(X.sum(axis=1, keepdims=True), 1)
    if over(sh):
        sh = _rebalance(w, X)[1]
        if over(sh):
            return X0, s0
    Xi = _improve(X, M, w, S, cap, **kw)
    shi = Xi / np.maximum(Xi.sum(axis=1, keepdims=True), 1)
    if not over(shi):
        return Xi, shi
    return X, sh


def _greedy_counts(wn: np.ndarray, cnt: np.ndarray, G: int, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicas (counts ``cnt``) heaviest first onto the least-loaded device with room."""
    from .policies import balanced_packing

    phy = np.repeat(np.arange(wn.shape[0]), cnt)
    per = wn[phy] / cnt[phy]
    dev = balanced_packing(per, phy, G, S, distinct=True)
    ex = np.full((G, S), -1, dtype=np.int32)
    sh = np.zeros((G, S))
    fill = np.zeros(G, dtype=np.int64)
    for i, g in enumerate(dev):
        ex[g, fill[g]] = phy[i]
        sh[g, fill[g]] = 1.0 / cnt[phy[i]]
        fill[g] += 1
    return ex, sh


# --------------------------------------------------------------------------- ExFlow's published placement
#: ExFlow's repository (the code of arXiv 2401.08383) ships its Mixtral-8x7B expert placement for one node of
#: 4 GPUs, named solution_intra4_inter1_cost17.495..._cintra5.83..._cinter0: in every forward a token makes
#: 5.83 cross-GPU hops on average (its README). Over Mixtral's 31 layer-to-layer transitions that is 0.188 of
#: them (an assumption: the hops count layer transitions, not the first dispatch).
EXFLOW_MIXTRAL = {"hops_per_forward": 5.83, "gpus": 4, "nodes": 1, "experts": 8, "layers": 32,
                  "source": "ExFlow repository README (arXiv 2401.08383), Mixtral-8x7B solution "
                            "solution_intra4_inter1_cost17.50_cintra5.83_cinter0.csv"}


def exflow_mixtral_hops(follow: float, *, tokens: int = 8192, seed: int = 0, time_budget: float = 20.0) -> dict:
    """Cross-GPU hops per token per forward of the affinity ILP's placement for routes of strength ``follow``
    (:func:`affinity_routes`, top-1, uniform popularity) in ExFlow's published Mixtral-8x7B set-up
    (:data:`EXFLOW_MIXTRAL`: 8 experts, 32 layers, 4 GPUs, 2 experts each), on routes it was not planned on;
    with the EPLB greedy's for comparison. The ``follow`` that reproduces ExFlow's 5.83 is the affinity
    strength ExFlow measured on Mixtral."""
    L, E, G = EXFLOW_MIXTRAL["layers"], EXFLOW_MIXTRAL["experts"], EXFLOW_MIXTRAL["gpus"]
    S = E // G
    pop = np.full((L, E), 1.0 / E)
    plan, test = affinity_routes(pop, 1, tokens, follow, seed=seed), affinity_routes(pop, 1, tokens, follow, seed=seed + 1)
    C, Ct = transition_counts(plan, E), transition_counts(test, E)
    w = np.stack([np.bincount(plan[l].ravel(), minlength=E) for l in range(L)]).astype(float)
    af = AffinityILP(time_budget=time_budget, top_k=1).place(w, G, 1, S, counts=C)
    gr = get_policy_class("greedy_replicated")().place(w, G, 1, S)
    return {"follow": follow, "hops_per_forward": cross_device_fraction(af, Ct) * (L - 1),
            "greedy_hops_per_forward": cross_device_fraction(gr, Ct) * (L - 1),
            "top_successor_probability": top_successor_probability(Ct),
            "published_hops_per_forward": EXFLOW_MIXTRAL["hops_per_forward"]}
