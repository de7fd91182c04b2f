"""The ``ilp`` placement policy: a PuLP mixed-integer model per MoE layer.

Model for one layer (loads scaled so the mean device load is 1; ``w_e`` expert loads):

* ``x[e,g]`` binary: expert ``e`` has a replica on device ``g``;
* ``s[e,g]`` in [0, 1]: share of ``e``'s tokens served on ``g``, ``s[e,g] <= x[e,g]``, ``sum_g s[e,g] = 1``;
* slots: ``sum_e x[e,g] <= S``; redundant budget: ``sum x <= E + R``;
* makespan ``T >= sum_e w_e s[e,g]`` for every device; objective ``min T``
  (+ optional cross-node term ``lambda * sum_{group,node} W_group/W y[group,node]`` with
  ``y >= x`` over the group's experts and the node's devices, i.e. the expected number of
  nodes a token's dispatch to one group reaches; + optional migration term
  ``mu / (E+R) * sum x[e,g]`` over pairs that the previous placement did not hold).

Speed: the warm start is the better of (a) the greedy EPLB placement and (b) the EPLB replica
counts packed so that the replica graph stays a forest (:func:`_pack_forest`), each with its
token split re-optimised by a small LP on its own replica graph; the ILP is thus never worse
than the greedy. When the warm start is already within ``gap`` of the LP-relaxation bound,
it is optimal to that tolerance and the solver is not called (``always_solve`` calls it anyway). With ``scope="hot"``
(the default when ``E * G`` is large) only the *hot* experts (all replicated ones plus the
heaviest up to ``hot``) are free over all devices; the cold single-replica experts stay
where the greedy put them, so the model has ``hot * G`` binaries instead of ``E * G``. In
``scope="full"`` devices of one node are interchangeable, so their loads are ordered
(symmetry breaking). The solver stops at the relative ``gap`` or the ``time_limit``.

Bound: the LP relaxation of the *full* model (any scope) equals the mean device load,
i.e. exactly 1 in these units, whenever ``E <= G * S``: spreading every expert evenly
(``x = s = 1/G``) is LP-feasible and reaches it, and no device can be below the mean at
the maximum. The reported ``gap`` is ``(T - 1) / T`` on the makespan; it is a true
optimality gap for the makespan objective (the extra terms are reported apart).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pulp

from .placement import LayerInfo, Placement
from .policies import check_shape, eplb_layer
from .registry import register

SOLVERS = ("auto", "cbc", "highs")
SCOPES = ("auto", "full", "hot")


def highs_available() -> bool:
    try:
        return bool(pulp.HiGHS(msg=False).available())
    except Exception:  # pragma: no cover - depends on the installation
        return False


_BANNER_DONE = False


def _quiet_highs_banner() -> None:
    """HiGHS prints a banner on stdout the first time a ``Highs`` object is made in a process."""
    global _BANNER_DONE
    if _BANNER_DONE:
        return
    _BANNER_DONE = True
    import highspy

    sys.stdout.flush()
    fd = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        sys.stdout.flush()
        os.dup2(fd, 1)
        os.close(fd)


class _WarmHiGHS(pulp.HiGHS if hasattr(pulp, "HiGHS") else object):  # type: ignore[misc]
    """pulp's in-process HiGHS interface plus a MIP start from the variables' initial values."""

    def callSolver(self, lp):  # noqa: N802 (pulp's name)
        import highspy

        h = lp.solverModel
        n = h.getNumCol()
        vals = [0.0] * n
        have = False
        for v in lp.variables():
            if v.varValue is not None:
                vals[v.index] = float(v.varValue)
                have = True
        if have:
            sol = highspy.HighsSolution()
            sol.col_value = vals
            sol.value_valid = True
            h.setSolution(sol)
        h.run()
        info = h.getInfo()
        self.last_bound = float(info.mip_dual_bound)
        self.last_status = h.getModelStatus().name


def _rebalance(wn: np.ndarray, X: np.ndarray) -> tuple[float, np.ndarray]:
    """Best token split on a fixed replica graph ``X`` [E, G]: (makespan, shares [E, G])."""
    E, G = X.shape
    shares = np.zeros((E, G))
    multi = X.sum(axis=1) > 1
    single = ~multi
    shares[single] = X[single]
    base = (wn[:, None] * shares).sum(axis=0)
    if not multi.any():
        return float(base.max()), shares
    prob = pulp.LpProblem("rebalance", pulp.LpMinimize)
    T = pulp.LpVariable("T", lowBound=0)
    prob += T
    pairs = [(int(e), int(g)) for e, g in zip(*np.nonzero(X & multi[:, None]))]
    s = {p: pulp.LpVariable(f"s_{p[0]}_{p[1]}", 0, 1) for p in pairs}
    by_e: dict[int, list] = {}
    by_g: dict[int, list] = {g: [] for g in range(G)}
    for (e, g), v in s.items():
        by_e.setdefault(e, []).append((v, 1.0))
        by_g[g].append((v, float(wn[e])))
    for e, terms in by_e.items():
        prob += pulp.LpAffineExpression(terms) == 1
    for g in range(G):
        prob += pulp.LpAffineExpression(by_g[g] + [(T, -1.0)]) <= -float(base[g])
    prob.solve(pulp.PULP_CBC_CMD(msg=False, threads=1))
    if pulp.LpStatus[prob.status] != "Optimal":
        cnt = X.sum(axis=1, keepdims=True)
        sh = np.where(X, 1.0 / np.maximum(cnt, 1), 0.0)
        return float((wn[:, None] * sh).sum(axis=0).max()), sh
    for (e, g), v in s.items():
        shares[e, g] = max(0.0, float(v.varValue or 0.0))
    shares[multi] /= shares[multi].sum(axis=1, keepdims=True)
    return float((wn[:, None] * shares).sum(axis=0).max()), shares


def _pack_forest(wn: np.ndarray, G: int, S: int, budget: int) -> np.ndarray:
    """EPLB replica counts, packed heaviest first so the replica graph stays a forest.

    Like the greedy's balanced packing, but a replica of an expert goes to the least-loaded
    device with room that is not yet connected (through shared experts) to the expert's other
    replicas. The redundant replicas then join the devices into as few components as
    possible (one when there are at least G - 1 of them), and the best token split (an LP on
    that graph) can level the loads across a whole component.
    """
    from .policies import replicate_experts

    E = wn.shape[0]
    cnt = replicate_experts(wn, min(budget, G * S))
    phy = np.repeat(np.arange(E), cnt)
    per = wn[phy] / cnt[phy]
    parent = list(range(G))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    load = np.zeros(G)
    fill = np.zeros(G, dtype=np.int64)
    X = np.zeros((E, G), dtype=bool)
    for i in np.argsort(-per, kind="stable"):
        e = int(phy[i])
        key = np.where(fill < S, load, np.inf)
        held = np.nonzero(X[e])[0]
        if held.size:
            comps = {find(int(h)) for h in held}
            roots = np.array([find(g) for g in range(G)])
            k2 = np.where(np.isin(roots, list(comps)), np.inf, key)
            if np.isfinite(k2).any():
                key = k2
            else:
                k3 = key.copy()
                k3[held] = np.inf
                if np.isfinite(k3).any():
                    key = k3
        g = int(np.argmin(key))
        for h in held:
            parent[find(int(h))] = find(g)
        X[e, g] = True
        load[g] += per[i]
        fill[g] += 1
    return X


def _to_slots(X: np.ndarray, shares: np.ndarray, S: int, order: Optional[np.ndarray] = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Presence [E, G] + shares -> (expert [G, S], share [G, S])."""
    E, G = X.shape
    expert = np.full((G, S), -1, dtype=np.int32)
    share = np.zeros((G, S))
    for g in range(G):
        es = np.nonzero(X[:, g])[0]
        if len(es) > S:
            raise ValueError(f"device {g} holds {len(es)} experts > {S} slots")
        expert[g, :len(es)] = es
        share[g, :len(es)] = shares[es, g]
    return expert, share


@dataclass
class _LayerJob:
    w: np.ndarray
    devices: int
    nodes: int
    slots: int
    budget: int  # total replicas allowed (E + R)
    prev: Optional[np.ndarray]  # [E, G] bool presence in the previous placement
    params: "ILP"
    time_limit: Optional[float] = None  # this layer's solver seconds (None: params.time_limit)


def _solve_layer(job: _LayerJob) -> tuple[np.ndarray, np.ndarray, LayerInfo]:
    t0 = time.perf_counter()
    p = job.params
    w, G, S, nodes = job.w, job.devices, job.slots, job.nodes
    E = w.shape[0]
    info = LayerInfo()
    # warm start: the greedy, then the best split on its replica graph
    ex0, _ = eplb_layer(w, G, nodes, S, distinct=True)
    X0 = np.zeros((E, G), dtype=bool)
    gg, ss = np.nonzero(ex0 >= 0)
    X0[ex0[gg, ss], gg] = True
    total = float(w.sum())
    if total <= 0:
        ex, sh = _to_slots(X0, X0 / X0.sum(axis=1, keepdims=True), S)
        info.status, info.objective, info.bound, info.gap = "idle", 0.0, 0.0, 0.0
        info.solve_s = time.perf_counter() - t0
        return ex, sh, info
    wn = w / total * G
    T0, sh0 = _rebalance(wn, X0)
    if job.budget < G * S:  # the greedy fills every slot: over the replica budget, not a start
        X0 = _pack_forest(wn, G, S, job.budget)
        T0, sh0 = _rebalance(wn, X0)
    elif p.forest_start:
        Xf = _pack_forest(wn, G, S, job.budget)
        Tf, shf = _rebalance(wn, Xf)
        if Tf < T0:
            X0, T0, sh0 = Xf, Tf, shf
    if job.prev is not None and p.migration_weight > 0 and job.prev.sum(axis=0).max() <= S:
        Tp, shp = _rebalance(wn, job.prev)
        mig0 = (X0 & ~job.prev).sum() / job.budget
        if Tp <= T0 + p.migration_weight * mig0:
            X0, T0, sh0 = job.prev.copy(), Tp, shp
    info.bound = 1.0
    best = (X0, sh0, T0)
    status = "warm_start"
    msg = ""
    limit = p.time_limit if job.time_limit is None else job.time_limit
    trivial = S == 1 and job.budget == G * S and p.cross_node_weight == 0 and p.migration_weight == 0
    if trivial:
        # one slot per device: a placement is replica counts c_e (sum G) with even shares, the
        # makespan max_e w_e / c_e, and the greedy counts (one more replica to the expert of
        # highest load per replica, repeated) minimise it exactly; the bound is that value
        from .policies import replicate_experts

        cnt = replicate_experts(wn, G)
        info.bound = float((wn / cnt).max())
        if T0 <= info.bound * (1 + 1e-9) and not p.always_solve:
            status = "optimal_trivial"
    if status == "optimal_trivial":
        pass
    elif limit <= 0:
        status, msg = "no_solution", "ILP time limit 0 s: no solution; kept the greedy placement"
    elif (T0 - 1.0) <= p.gap * T0 and p.cross_node_weight == 0 and p.migration_weight == 0 and not p.always_solve:
        # the warm start is within the gap of the LP-relaxation bound: the MIP is solved
        status = "optimal_at_warm_start"
    else:
        try:
            res = _mip(wn, X0, sh0, T0, G, S, nodes, job.budget, job.prev, p, limit)
        except Exception as e:  # solver missing or crashed: never fail the placement
            res = None
            msg = f"ILP solver error ({type(e).__name__}: {e}); kept the greedy placement"
            status = "solver_error"
        if res is not None:
            X, sh, st = res
            if X is None:
                status = st
                msg = f"ILP {st} without a solution; kept the greedy placement"
            else:
                T = float((wn[:, None] * sh).sum(axis=0).max())
                if T <= T0 + 1e-9 or p.cross_node_weight > 0 or p.migration_weight > 0:
                    best = (X, sh, T)
                status = st
    X, sh, T = best
    info.objective = T
    info.gap = max(0.0, (T - info.bound) / T) if T > 0 else 0.0
    info.status = status
    info.message = msg
    ex, share = _to_slots(X, sh, S)
    info.solve_s = time.perf_counter() - t0
    return ex, share, info


def _mip(wn, X0, sh0, T0, G, S, nodes, budget, prev, p: "ILP", time_limit: float):
    """Build and solve the layer's MIP; return (X, shares, status) or (None, None, status)."""
    E = wn.shape[0]
    scope = p.scope
    if scope == "auto":
        scope = "full" if E * G <= p.full_max_binaries else "hot"
    multi = X0.sum(axis=1) > 1
    if scope == "full":
        hot = np.ones(E, dtype=bool)
    else:
        n_hot = p.hot or min(E, max(2 * int(multi.sum()), G + 8))
        hot = multi.copy()
        order = np.argsort(-wn, kind="stable")
        for e in order:
            if hot.sum() >= n_hot:
                break
            hot[e] = True
    cold = ~hot
    base = (wn[:, None] * (X0 & cold[:, None])).sum(axis=0)
    free = S - (X0 & cold[:, None]).sum(axis=0)
    H = np.nonzero(hot)[0]
    dpn = G // nodes

    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    T = pulp.LpVariable("T", lowBound=0)
    x = {(e, g): pulp.LpVariable(f"x_{e}_{g}", cat="Binary") for e in H for g in range(G)}
    s = {(e, g): pulp.LpVariable(f"s_{e}_{g}", 0, 1) for e in H for g in range(G)}
    obj = [(T, 1.0)]
    dev_terms: dict[int, list] = {g: [] for g in range(G)}
    slot_terms: dict[int, list] = {g: [] for g in range(G)}
    all_x = []
    for e in H:
        prob += pulp.LpAffineExpression([(s[e, g], 1.0) for g in range(G)]) == 1
        for g in range(G):
            prob += pulp.LpAffineExpression([(s[e, g], 1.0), (x[e, g], -1.0)]) <= 0
            dev_terms[g].append((s[e, g], float(wn[e])))
            slot_terms[g].append((x[e, g], 1.0))
            all_x.append((x[e, g], 1.0))
    for g in range(G):
        prob += pulp.LpAffineExpression(dev_terms[g] + [(T, -1.0)]) <= -float(base[g])
        prob += pulp.LpAffineExpression(slot_terms[g]) <= int(free[g])
    prob += pulp.LpAffineExpression(all_x) <= int(budget - cold.sum())
    if scope == "full" and p.symmetry_breaking and p.cross_node_weight == 0 and prev is None:
        # devices within a node are interchangeable: order their loads
        for n in range(nodes):
            for g in range(n * dpn, (n + 1) * dpn - 1):
                prob += pulp.LpAffineExpression(
                    [(s[e, g], float(wn[e])) for e in H] + [(s[e, g + 1], -float(wn[e])) for e in H]) >= 0
        # the warm start must respect the order: permute devices within each node by load
        load0 = (wn[:, None] * sh0).sum(axis=0)
        perm = np.concatenate([n * dpn + np.argsort(-load0[n * dpn:(n + 1) * dpn], kind="stable")
                               for n in range(nodes)])
        X0, sh0 = X0[:, perm], sh0[:, perm]
    if p.cross_node_weight > 0:
        groups = p.num_groups or nodes
        if E % groups == 0:
            gsize = E // groups
            W = wn.sum()
            for k in range(groups):
                members = np.arange(k * gsize, (k + 1) * gsize)
                wk = float(wn[members].sum() / W)
                for n in range(nodes):
                    devs = range(n * dpn, (n + 1) * dpn)
                    fixed = bool((X0[members][:, list(devs)] & cold[members][:, None]).any())
                    if fixed:
                        continue  # constant term
                    y = pulp.LpVariable(f"y_{k}_{n}", 0, 1)
                    obj.append((y, p.cross_node_weight * wk))
                    for e in members[hot[members]]:
                        for g in devs:
                            prob += pulp.LpAffineExpression([(x[e, g], 1.0), (y, -1.0)]) <= 0
                    y.setInitialValue(float(X0[members][:, list(devs)].any()))
    if prev is not None and p.migration_weight > 0:
        for e in H:
            for g in range(G):
                if not prev[e, g]:
                    obj.append((x[e, g], p.migration_weight / budget))
    prob += pulp.LpAffineExpression(obj)
    # warm start
    for e in H:
        for g in range(G):
            x[e, g].setInitialValue(int(X0[e, g]))
            s[e, g].setInitialValue(float(sh0[e, g]))
    T.setInitialValue(float(max(T0, (wn[:, None] * sh0).sum(axis=0).max())))

    solver_name = p.solver
    if solver_name == "auto":
        solver_name = "highs" if highs_available() else "cbc"
    if solver_name == "highs":
        _quiet_highs_banner()
        solver = _WarmHiGHS(msg=False, gapRel=p.gap, timeLimit=time_limit, threads=1)
    else:
        solver = pulp.PULP_CBC_CMD(msg=False, warmStart=True, gapRel=p.gap, timeLimit=time_limit, threads=1)
    prob.solve(solver)
    st = pulp.LpStatus[prob.status]
    sol_ok = prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible) or (
        st == "Optimal" and T.varValue is not None)
    if solver_name == "highs":
        hs = getattr(solver, "last_status", "")
        status = {"kOptimal": "optimal", "kTimeLimit": "time_limit", "kInfeasible": "infeasible"}.get(hs, hs or st)
    else:  # pulp reports a CBC stopped on time with a solution as Optimal + integer-feasible
        status = {pulp.LpSolutionOptimal: "optimal", pulp.LpSolutionIntegerFeasible: "time_limit"}.get(
            prob.sol_status, st.lower())
    if not sol_ok or T.varValue is None:
        return None, None, "infeasible" if st == "Infeasible" else (status or "no_solution")
    X = X0 & cold[:, None]
    sh = np.where(X, 1.0, 0.0)
    Xh = np.zeros((E, G), dtype=bool)
    for (e, g), v in x.items():
        Xh[e, g] = (v.varValue or 0.0) > 0.5
    for (e, g), v in s.items():
        if Xh[e, g]:
            sh[e, g] = max(0.0, float(v.varValue or 0.0))
    # clean up: drop replicas with no share beyond the first, renormalise
    for e in H:
        gs = np.nonzero(Xh[e])[0]
        if len(gs) == 0:
            return None, None, "bad_solution"
        tot = sh[e, gs].sum()
        sh[e, gs] = sh[e, gs] / tot if tot > 0 else 1.0 / len(gs)
    X = X | Xh
    if (X.sum(axis=0) > S).any():
        return None, None, "bad_solution"
    return X, sh, status


@register("ilp")
@dataclass(frozen=True)
class ILP:
    """Per-layer MIP (PuLP) minimising the max device load; warm-started from the greedy (EPLB).

    ``time_limit`` seconds and relative ``gap`` per layer; ``solver``: ``auto`` (HiGHS when
    pulp can use highspy, else CBC), ``cbc`` or ``highs``; ``jobs`` layers in parallel
    processes; ``redundant``: replica budget beyond one per expert (default: every spare slot);
    ``scope``: ``full`` (all experts free), ``hot`` (hot experts free, cold ones fixed by the
    greedy), ``auto`` (full up to ``full_max_binaries`` binaries).
    """

    time_limit: float = 10.0
    gap: float = 1e-4
    solver: str = "auto"
    jobs: int = 1
    scope: str = "auto"
    hot: int = 0
    full_max_binaries: int = 1024
    redundant: Optional[int] = None
    symmetry_breaking: bool = True
    forest_start: bool = True  # also try the forest-packed warm start (see _pack_forest)
    always_solve: bool = False  # call the solver even when the warm start already meets the gap
    cross_node_weight: float = 0.0
    num_groups: int = 0
    migration_weight: float = 0.0
    time_budget: Optional[float] = None  # total seconds for all layers (split over what is left)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.gap < 0 or self.time_limit < 0:
            raise ValueError("gap and time_limit must be >= 0")
        if self.time_budget is not None and not self.time_budget >= 0:
            raise ValueError(f"time_budget must be >= 0 seconds, got {self.time_budget}")

    def place(self, loads, devices, nodes, slots_per_device, *, previous: Optional[Placement] = None,
              progress=None) -> Placement:
        """``progress(done, total, info)`` is called after each layer (optional)."""
        t0 = time.perf_counter()
        requested_slots = slots_per_device
        w, S, msgs = check_shape(loads, devices, nodes, slots_per_device)
        L, E = w.shape
        budget = devices * S if self.redundant is None else E + int(self.redundant)
        why = None
        if devices * requested_slots < E:
            why = f"{E} experts do not fit {devices} devices x {requested_slots} slots"
        elif budget < E:
            why = f"redundant budget {self.redundant} < 0"
        if why:
            from .policies import GreedyReplicated

            g = GreedyReplicated().place(w, devices, nodes, requested_slots)
            g.policy = "ilp"
            g.messages = [f"ILP infeasible ({why}); fell back to greedy_replicated"] + g.messages
            for i in g.layer_info:
                i.status = "infeasible"
            g.solve_s = time.perf_counter() - t0
            return g
        budget = min(budget, devices * S)
        prev = None
        if previous is not None and previous.expert.shape[:2] == (L, devices) and previous.num_experts == E:
            prev = previous.presence()
        jobs = [_LayerJob(w[l], devices, nodes, S, budget, None if prev is None else prev[l], self) for l in range(L)]
        results = []
        if self.jobs > 1 and L > 1:
            if self.time_budget is not None:  # every worker runs L / jobs layers
                per = self.time_budget * min(self.jobs, L) / L
                for j in jobs:
                    j.time_limit = min(self.time_limit, 0.8 * per)
            with ProcessPoolExecutor(max_workers=min(self.jobs, L)) as ex:
                for r in ex.map(_solve_layer, jobs, chunksize=1):
                    results.append(r)
                    if progress is not None:
                        progress(len(results), L, r[2])
        else:
            for l, j in enumerate(jobs):
                if self.time_budget is not None:  # what is left, shared by the layers left
                    left = self.time_budget - (time.perf_counter() - t0)
                    j.time_limit = max(0.0, min(self.time_limit, 0.8 * left / (L - l)))
                results.append(_solve_layer(j))
                if progress is not None:
                    progress(l + 1, L, results[-1][2])
        expert = np.stack([r[0] for r in results])
        share = np.stack([r[1] for r in results])
        infos = [r[2] for r in results]
        fell = [l for l, i in enumerate(infos) if i.message]
        if fell:
            msgs.append(f"ILP: {len(fell)} of {L} layers kept the greedy placement "
                        f"(first: layer {fell[0]}: {infos[fell[0]].message})")
        return Placement(expert, share, w, nodes=nodes, policy="ilp", layer_info=infos, messages=msgs,
                         solve_s=time.perf_counter() - t0)
