"""The SimPy cluster simulation: arrivals, a list of pools of replicas, KV transfers between pools.

``Simulation(requests, pools=[Pool(...), ...], network=...)`` serves the requests (arrival order,
or a closed-loop session workload) on the pools (``simllm.sim.pools``): the one pool of role
``both`` or ``prefill`` receives the arrivals through its router; a prefill replica hands finished
prefills to the decode pools (:meth:`Simulation.handoff`), whose replicas start KV transfers over
``network`` (``simllm.sim.transfer``) when they have room. The short form
``Simulation(requests, cost=..., num_blocks=..., batching=..., router=..., replicas=N)`` is one
colocated pool.

Per-step records: one row per prefill step and one row per decode segment, kept in column chunks
(``simllm.sim.records.StepLog``); ``compute_s`` / ``memory_s`` / ``comm_s`` / ``flops`` / ``bytes``
of a segment are those of its middle step times ``n_steps``, taken from a memo on the rounded
shape (see :meth:`Simulation._price_chunk`).

Sessions: a closed-loop ``SessionWorkload`` sends a session's next turn a think time after a turn
completes (a refused or aborted turn ends the session). A *paced* one (it has ``turn(si, ti)`` and
``turn_done(si, ti, t, ok)``, e.g. inference-perf's multi-turn users,
``simllm.workload.inference_perf.ChatSessions``) makes each turn when it is sent and says when the
next is sent, after a completed, aborted or refused turn alike (``t``: when the client sees the end).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import numpy as np
import simpy

from ..cost.interface import BatchShape
from ..policies.routing import make_router
from .dp_ranks import DPReplica
from .pools import REPLICA_CLASS, Pool, PositionView
from .records import NAN, STEP_COLUMNS, SimConfig, SimResult, StepLog
from .kv_tiers import tiers_summary
from .spec_decode import speculative_summary


class _NoneList:
    """``[None] * n`` without the list: no request has a session."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [None] * len(range(*i.indices(self.n)))
        return None


class Simulation:
    """Serve ``requests`` on ``pools`` (a list of :class:`~simllm.sim.pools.Pool`), or on one colocated
    pool of ``replicas`` identical replicas behind ``router``: ``cost`` a StepCostModel (or one per
    replica), ``num_blocks`` the KV blocks per replica, ``batching`` a factory returning a fresh
    batching policy per replica, ``changes`` periodic cost changes
    (``simllm.sim.replacement.PeriodicReplacement``). ``network`` carries KV between pools
    (``simllm.sim.transfer``). ``config`` gives ``jump`` and ``record_breakdown``, and the KV options
    of pools without their own. ``steps_sink`` receives the step rows in priced chunks as the run
    goes, as ``steps_sink(chunk, replica_pools)`` (``simllm.sim.records.StepLog``; ``replica_pools``
    the pool name of each replica when there are several pools, else empty); the result then keeps
    none of them, only their totals.
    """

    def __init__(self, requests: Any, *, cost=None, num_blocks: Optional[int] = None,
                 batching: Optional[Callable[[], Any]] = None, router=None, replicas: int = 1,
                 config: SimConfig = SimConfig(), seed: int = 0, changes: Any = None,
                 pools: Optional[list] = None, network: Optional[Callable] = None,
                 steps_sink: Optional[Callable[[dict, list], None]] = None):
        if pools is None:
            pools = [Pool("colocated", "both", replicas, cost, num_blocks, batching, router, changes=changes)]
        entry = [p for p in pools if p.role != "decode"]
        decode = [p for p in pools if p.role == "decode"]
        if len(entry) != 1:
            raise ValueError("exactly one pool of role both or prefill receives the arrivals")
        if (entry[0].role == "prefill") != bool(decode):
            raise ValueError("a prefill pool needs decode pools, and decode pools a prefill pool")
        if decode and network is None:
            raise ValueError("pools that move KV caches need a network (simllm.sim.transfer)")
        if any((p.config or config).request_timeout_s is not None for p in pools) and decode:
            raise ValueError("request_timeout_s (aborts at the client's timeout) is supported for colocated pools only")
        asy = any((p.config or config).async_scheduling for p in pools)
        if asy and (len(pools) > 1 or any(p.dp > 1 for p in pools)):
            raise ValueError("async_scheduling (tokens one engine step later) is supported for one colocated pool "
                             "without data-parallel attention ranks only")
        pools = entry + decode  # ranks and replica indices: the arrivals' pool first
        self.pools = pools
        self.config = config
        self.seed = seed
        cfgs = [p.config or config for p in pools]
        self.changes = next((p.changes for p in pools if p.changes is not None), None)  # any: count tokens
        self.cost_changes: list = []  # (row index, replica, cost from that row on)
        for c in cfgs:
            if c.preemption not in ("recompute", "swap"):
                raise ValueError(f"preemption must be recompute or swap, got {c.preemption!r}")
            if c.prefix_caching and (c.prefix_unit_tokens % c.block_size or c.prefix_unit_tokens < c.block_size):
                raise ValueError(f"prefix caching needs block_size ({c.block_size}) to divide the prefix unit "
                                 f"of {c.prefix_unit_tokens} tokens")
        caching = any(c.prefix_caching for c in cfgs)
        if caching and len({c.prefix_unit_tokens for c in cfgs if c.prefix_caching}) > 1:
            raise ValueError("pools with prefix caching need the same prefix_unit_tokens (the workload's unit)")
        self.sessions = None
        self.paced = None  # sessions whose next turn's time and content depend on how each turn ended
        # prefix keys beyond a prompt's units name the units its output fills: cache them when it completes
        self.cache_output = bool(getattr(requests, "cache_output_units", False))
        if hasattr(requests, "sessions") and hasattr(requests, "think_time"):  # a closed-loop SessionWorkload
            self.sessions = requests
            if hasattr(requests, "turn_done") and hasattr(requests, "turn"):
                self.paced = requests
            self.think_rng = np.random.default_rng(seed)
            N = requests.num_requests
            self.N = N
            self.ids = np.arange(N, dtype=np.int64)
            self.arrival = np.full(N, NAN)
            self.prompt = np.zeros(N, dtype=np.int64)
            self.out = np.zeros(N, dtype=np.int64)
            self.session_of = np.full(N, -1, dtype=np.int64)
            self.turn_of = np.full(N, -1, dtype=np.int64)
            self.next_rid = 0
            self.priority = np.zeros(N, dtype=np.int64)
            self.pkeys = [()] * N
        elif isinstance(getattr(requests, "arrival_s", None), np.ndarray):  # columns (workload.RequestTable)
            N = len(requests.arrival_s)
            self.N = N
            self.ids = np.asarray(requests.ids, dtype=np.int64)
            self.arrival = np.array(requests.arrival_s, dtype=np.float64)
            self.prompt = np.array(requests.prompt_tokens, dtype=np.int64)
            self.out = np.array(requests.output_tokens, dtype=np.int64)
            self.priority = np.array(requests.priority, dtype=np.int64)
            self.sids = requests.session_id if requests.session_id is not None else _NoneList(N)
            blocks = requests.prefix_blocks
            self.pkeys = ((list(blocks) if blocks is not None else [()] * N) if caching else None)
        else:
            N = len(requests)
            self.N = N
            self.ids = np.fromiter((r.id for r in requests), dtype=np.int64, count=N)
            self.arrival = np.fromiter((r.arrival_s for r in requests), dtype=np.float64, count=N)
            self.prompt = np.fromiter((r.prompt_tokens for r in requests), dtype=np.int64, count=N)
            self.out = np.fromiter((r.output_tokens for r in requests), dtype=np.int64, count=N)
            self.priority = np.fromiter((getattr(r, "priority", 0) for r in requests), dtype=np.int64, count=N)
            self.sids = [getattr(r, "session_id", None) for r in requests]
            self.pkeys = ([tuple(getattr(r, "prefix_blocks", ()) or ()) for r in requests]
                          if caching else None)
        if self.sessions is None:
            if N and np.any(np.diff(self.arrival) < 0):
                order = np.argsort(self.arrival, kind="stable")
                self.priority = self.priority[order]
                self.sids = [self.sids[i] for i in order.tolist()]
                if self.pkeys is not None:
                    self.pkeys = [self.pkeys[i] for i in order.tolist()]
                self.ids, self.arrival, self.prompt, self.out = (a[order] for a in (self.ids, self.arrival,
                                                                                   self.prompt, self.out))
            if N and (self.prompt.min() < 1 or self.out.min() < 1):
                raise ValueError("every request needs prompt_tokens >= 1 and output_tokens >= 1")
        self.gen = np.zeros(N, dtype=np.int64)
        self.scheduled = np.full(N, NAN)
        self.first_token = np.full(N, NAN)
        self.completion = np.full(N, NAN)
        self.aborted_s = np.full(N, NAN)  # set by a replica that aborts a request at its client's timeout
        # async scheduling: the length of the iteration that emitted each request's first token (Replica._prefilled)
        self.async_lag = np.full(N, NAN) if asy else None
        self.preemptions = np.zeros(N, dtype=np.int64)
        self.replica_of = np.full(N, -1, dtype=np.int64)
        self.rejected: dict[int, str] = {}
        self.admissible: dict = {}  # replica admission limits -> per request: never rejected (Replica.submit)
        self.finished = 0
        self.n_preemptions = 0
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        self.env = simpy.Environment()
        # pool name of each replica (several pools only): the steps table's pool column
        self.replica_pools = [p.name for p in pools for _ in range(p.replicas)] if len(pools) > 1 else []
        sink = (lambda cols: steps_sink(cols, self.replica_pools)) if steps_sink is not None else None
        self._rows = StepLog(sum(p.replicas for p in pools), self._price_chunk, sink)
        self._record_breakdown = config.record_breakdown
        self._memo: dict = {}
        self._slot_of: dict = {}
        self._slot_cost: list = []
        self._ci = 0  # cost changes applied to the rows priced so far
        self.caching = caching
        self.replicas = []
        self.ranks = []  # device ranks of each replica
        self.pool_of = []  # pool index of each replica
        rank = 0
        for pi, p in enumerate(pools):
            costs = list(p.cost) if isinstance(p.cost, (list, tuple)) else [p.cost] * p.replicas
            cls = REPLICA_CLASS[p.role]
            for j in range(p.replicas):
                if p.dp > 1:  # data-parallel attention ranks (simllm.sim.dp_ranks)
                    rtr = p.dp_router if p.dp_router is not None else make_router("least_outstanding")
                    self.replicas.append(DPReplica(self, len(self.replicas), p, costs[j], p.batching, p.dp,
                                                   copy.deepcopy(rtr)))
                else:
                    self.replicas.append(cls(self, len(self.replicas), p, costs[j], p.batching()))
                self.ranks.append(list(range(rank, rank + p.devices)))
                self.pool_of.append(pi)
                rank += p.devices
        self._initial_costs = [r.cost for r in self.replicas]
        self._costs = list(self._initial_costs)  # per replica, as of the next row to price
        self.entry = [r for r in self.replicas if r.role != "decode"]  # indices 0.. (the first pool)
        self.decode = [r for r in self.replicas if r.role == "decode"]
        self.classify = getattr(self.replicas[0].policy, "classify", None)
        if self.classify is not None and self.sessions is None:
            self.priority = np.asarray(self.classify(self.prompt, self.priority), dtype=np.int64)
        self.router = entry[0].router
        for p in pools:
            if hasattr(p.router, "attach"):  # routers that look at the request (session, prefix) get the simulation
                p.router.attach(self)
        self.num_blocks = entry[0].num_blocks
        if decode:
            self.decode_router = decode[0].router
            self.decode_views = [PositionView(r, i) for i, r in enumerate(self.decode)]  # routers see positions
            self.net, self.send = network(self.env, self.ranks)
            self.kv_transfer = np.full(N, NAN)
            self.decode_of = np.full(N, -1, dtype=np.int64)
        self.prefill_end = None  # layer-wise KV: when each announced prefill ends (NaN: not announced)
        if any(getattr(r, "layer_wise", False) for r in self.replicas) or (
                getattr(self.config, "kv_layer_wise", False) and not decode):
            if not decode:
                raise ValueError("kv_layer_wise streams KV from a prefill pool to a decode pool: it needs both")
            self.prefill_end = np.full(N, NAN)
            self.kv_layers = {}
            for r in self.replicas:
                if r.role == "prefill":
                    nl = int(getattr(r.cost, "num_layers", 0) or getattr(getattr(r.cost, "model", None), "num_layers", 0)
                             or 0)
                    if nl < 1:
                        raise ValueError(f"kv_layer_wise needs the prefill pool's cost model to know the model's "
                                         f"layers ({type(r.cost).__name__} does not)")
                    self.kv_layers[r.index] = nl
        self.env.process(self._session_starts() if self.sessions is not None else self._arrivals())

    def session_key(self, rid: int):
        """The request's session (None when it has none)."""
        if self.sessions is not None:
            return int(self.session_of[rid])
        return self.sids[rid]

    def record_step(self, replica, start, duration, n_steps, batch, prefill_tokens, prefill_seqs, decode_tokens,
                    kv_used, shape: tuple):
        log = self._rows
        log.append((replica, start, duration, n_steps, batch, prefill_tokens, decode_tokens, kv_used) + shape)
        if log.full():
            log.seal()
        if self.changes is not None:
            self.replicas[replica].tok_int += prefill_tokens + decode_tokens

    def _price_chunk(self, cols: dict, shape: dict, first: int) -> None:
        """Add the compute/memory/comm breakdown to a chunk of step rows (rows ``first``.. of the run).

        ``step_cost`` is called once per distinct *rounded* shape (prefill tokens and the mean
        decode context per sequence to multiples of 16, same sequence counts), memoized over the
        whole run; its compute, memory and comm seconds are scaled to the row's exact duration, its
        FLOPs and bytes taken as they are (x ``n_steps``). Durations themselves are exact. Each row
        is priced by the cost model its replica had when the row ran (``cost_changes``).
        """
        nrow = len(cols["replica"])
        if not self._record_breakdown:
            for c in ("compute_s", "memory_s", "comm_s", "flops", "bytes"):
                cols[c] = np.full(nrow, NAN)
            return
        rep = cols["replica"]
        P, W, m, n, ctx = (shape[c] for c in ("P", "W", "m", "n", "ctx"))
        # cost model of each row: segments between the cost changes that fall in this chunk
        slot = np.empty(nrow, dtype=np.int64)
        changes = self.cost_changes
        s = 0
        while True:
            pend = self._ci < len(changes) and changes[self._ci][0] < first + nrow
            e = max(changes[self._ci][0] - first, s) if pend else nrow
            if e > s:
                of_rep = np.fromiter((self._slot(c) for c in self._costs), dtype=np.int64, count=len(self._costs))
                slot[s:e] = of_rep[rep[s:e]]
                s = e
            if not pend:
                break
            _row, ri, cost = changes[self._ci]
            self._costs[ri] = cost
            self._ci += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            ck = np.where(n > 0, (ctx / np.maximum(n, 1)).astype(np.int64) >> 4, 0)
        keys = np.ascontiguousarray(np.stack([slot, P >> 4, m, n, ck], axis=1))
        _u, first_i, inv = np.unique(keys.view(np.dtype((np.void, keys.dtype.itemsize * 5))).ravel(),
                                     return_index=True, return_inverse=True)
        memo = self._memo
        vals = np.empty((len(first_i), 6))
        for j in np.argsort(first_i, kind="stable").tolist():  # in row order, as stepping through the rows would
            i = int(first_i[j])
            key = tuple(keys[i].tolist())
            c = memo.get(key)
            if c is None:
                c = memo[key] = self._slot_cost[key[0]].step_cost(
                    BatchShape(int(P[i]), float(W[i]), int(m[i]), int(n[i]), float(ctx[i])))
            vals[j] = (c.total_s, c.compute_s, c.memory_s, c.comm_s, c.flops, c.bytes)
        v = vals[inv.ravel()]
        dur = cols["duration_s"]
        k = cols["n_steps"]
        tot = v[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(tot > 0, (dur / k) / tot * k, 0.0)
        cols["compute_s"] = v[:, 1] * f
        cols["memory_s"] = v[:, 2] * f
        cols["comm_s"] = v[:, 3] * f
        cols["flops"] = v[:, 4] * k
        cols["bytes"] = v[:, 5] * k

    def _slot(self, cost) -> int:
        """A small integer per distinct cost model (the memo's key)."""
        i = self._slot_of.get(id(cost))
        if i is None:
            i = self._slot_of[id(cost)] = len(self._slot_cost)
            self._slot_cost.append(cost)  # kept: its id stays unique
        return i

    def _arrivals(self):
        env = self.env
        arr = self.arrival.tolist()
        reps = self.entry
        route = self.router.route
        plan = getattr(self.router, "plan", None) if reps[0].role == "both" else None
        if plan is not None:
            dest_a = np.asarray(plan(len(arr), len(reps)), dtype=np.int64)
            dest = dest_a.tolist()
            for r in reps:
                r.future = self.arrival[dest_a == r.index].tolist()
            for rid, a in enumerate(arr):
                if a > env.now:
                    yield env.timeout(a - env.now)
                reps[dest[rid]].submit(rid, a, True)
            return
        for rid, a in enumerate(arr):
            if a > env.now:
                yield env.timeout(a - env.now)
            reps[route(rid, reps)].submit(rid, a)

    # -- closed-loop sessions ---------------------------------------------------------------
    def _send_turn(self, si: int, ti: int, t: float) -> None:
        rid = self.next_rid
        self.next_rid += 1
        paced = self.paced
        turn = paced.turn(si, ti) if paced is not None else self.sessions.sessions[si].turns[ti]
        self.arrival[rid] = t
        self.prompt[rid] = turn.prompt_tokens
        self.out[rid] = turn.output_tokens
        self.session_of[rid] = si
        self.turn_of[rid] = ti
        if self.caching:
            self.pkeys[rid] = tuple(turn.prefix_blocks)
        if self.classify is not None:
            self.priority[rid] = int(self.classify(self.prompt[rid:rid + 1], self.priority[rid:rid + 1])[0])
        reps = self.entry
        reps[self.router.route(rid, reps)].submit(rid, t)  # a rejected turn ends its session (paced: not)
        if paced is not None and rid in self.rejected:
            self._paced_next(rid, t, False)

    def _session_starts(self):
        env = self.env
        ss = self.sessions.sessions
        order = sorted(range(len(ss)), key=lambda i: (ss[i].start_s, i))
        for si in order:
            a = ss[si].start_s
            if a > env.now:
                yield env.timeout(a - env.now)
            self._send_turn(si, 0, a)

    def on_complete(self, rids, t: float) -> None:
        """Completed turns send their session's next turn a think time later."""
        if self.sessions is None:
            return
        if self.paced is not None:
            for rid in rids:
                self._paced_next(rid, t, True)
            return
        for rid in rids:
            si = int(self.session_of[rid])
            ti = int(self.turn_of[rid]) + 1
            if ti < len(self.sessions.sessions[si].turns) and rid not in self.rejected:
                a = t + self.sessions.think_time(self.think_rng)
                ev = self.env.timeout(max(a - self.env.now, 0.0))
                ev.callbacks.append(lambda _e, si=si, ti=ti, a=a: self._send_turn(si, ti, a))

    def on_failed(self, rid: int, t: float) -> None:
        """A turn aborted at its client's timeout at ``t``: a paced session goes on (a closed-loop one ends)."""
        if self.paced is not None:
            self._paced_next(rid, t, False)

    def _paced_next(self, rid: int, t: float, ok: bool) -> None:
        """Paced sessions (``turn_done``): the turn of ``rid`` ended at ``t`` (``ok``: completed). When the client
        sees the end (the front end's overhead and async scheduling's iteration later) the session is told, in
        that order across sessions, and says when its next turn is sent (None: it has no more)."""
        si = int(self.session_of[rid])
        ti = int(self.turn_of[rid])
        t += self.config.api_overhead_s
        if ok and self.async_lag is not None and self.async_lag[rid] == self.async_lag[rid]:
            t += float(self.async_lag[rid])
        ev = self.env.timeout(max(t - self.env.now, 0.0))
        ev.callbacks.append(lambda _e, si=si, ti=ti, t=t, ok=ok: self._paced_seen(si, ti, t, ok))

    def _paced_seen(self, si: int, ti: int, t: float, ok: bool) -> None:
        a = self.paced.turn_done(si, ti, t, ok)
        if a is None:
            return
        a = max(float(a), t)
        if a <= self.env.now:
            self._send_turn(si, ti + 1, a)
            return
        ev = self.env.timeout(a - self.env.now)
        ev.callbacks.append(lambda _e, si=si, ti=ti + 1, a=a: self._send_turn(si, ti, a))

    def run(self, progress: Optional[Callable[[float, int], None]] = None, chunk_s: Optional[float] = None) -> SimResult:
        env = self.env
        if progress is None:
            env.run()
        else:
            last = float(np.nanmax(self.arrival)) if self.N and self.sessions is None else 0.0
            step = chunk_s or max(1.0, last / 200)
            while True:
                stop = env.timeout(step)
                env.run(until=stop)
                progress(env.now, self.finished)
                # SimPy keeps the 'until' event queued; anything else means work is left
                if all(item[3] is stop for item in env._queue):
                    break
            progress(env.now, self.finished)
        if self.sessions is not None:  # sessions cut short (rejected turn) send fewer requests
            n = self.next_rid
            for name in ("ids", "arrival", "prompt", "out", "gen", "scheduled", "first_token", "completion",
                         "aborted_s",
                         "preemptions", "replica_of", "priority") + (("kv_transfer", "decode_of") if self.decode
                                                                     else ()):
                setattr(self, name, getattr(self, name)[:n])
            if self.async_lag is not None:
                self.async_lag = self.async_lag[:n]
            self.N = n
        pending = np.isnan(self.completion) & np.isnan(self.aborted_s)
        if self.rejected:
            pending[np.fromiter(self.rejected, dtype=np.int64)] = False
        if pending.any():
            raise RuntimeError(f"simulation ended with {int(pending.sum())} requests neither completed nor rejected")
        reasons = [""] * self.N
        for i, r in self.rejected.items():
            reasons[i] = r
        end = float(np.nanmax(self.completion)) if np.isfinite(self.completion).any() else 0.0
        multi = {}
        if len(self.pools) > 1:
            names = [p.name for p in self.pools]
            done = np.isfinite(self.completion)
            where = np.where(self.decode_of >= 0, np.asarray(self.pool_of)[np.maximum(self.decode_of, 0)],
                             self.pool_of[0])
            multi = dict(pools=list(self.replica_pools), replica_devices=[len(x) for x in self.ranks],
                         replica_kv_blocks=[r.kv.capacity for r in self.replicas],
                         request_columns={"decode_replica": self.decode_of,
                                          "pool": np.where(done, np.asarray(names, dtype=object)[where], ""),
                                          "kv_transfer_s": self.kv_transfer},
                         kv_peak_total_blocks=[r.peak_total for r in self.decode])
        return SimResult(ids=self.ids, arrival_s=self.arrival, prompt_tokens=self.prompt, output_tokens=self.out,
                         scheduled_s=self.scheduled, first_token_s=self.first_token, completion_s=self.completion,
                         generated_tokens=self.gen, preemptions=self.preemptions, replica=self.replica_of,
                         rejected_reason=reasons, steps=self._rows.columns(), num_replicas=len(self.replicas),
                         kv_num_blocks=self.num_blocks, block_size=self.replicas[0].cfg.block_size, end_s=end,
                         kv_peak_blocks=[r.kv_peak for r in self.replicas], priority=self.priority,
                         prefix_caching=self.caching, prefix_query_tokens=self.prefix_query_tokens,
                         prefix_hit_tokens=self.prefix_hit_tokens, speculative=self._speculative(), kv_tiers=self._kv_tiers(),
                         aborted_s=self.aborted_s if self.config.request_timeout_s is not None else None,
                         api_overhead_s=self.config.api_overhead_s, async_lag_s=self.async_lag,
                         step_totals=self._rows.totals, **multi)

    def _kv_tiers(self) -> Optional[dict]:
        # a replica's tiers: its own, or its data-parallel ranks' (each holds its share of the replica's capacity)
        groups = [[rk.tiers for rk in r.ranks if rk.tiers is not None] if hasattr(r, "ranks")
                  else ([r.tiers] if r.tiers is not None else []) for r in self.replicas]
        groups = [g for g in groups if g]
        tiers = [t for g in groups for t in g]
        if not tiers:
            return None
        cap = [sum(t.cap[i] for t in groups[0]) for i in range(len(tiers[0].levels))]
        return tiers_summary(tiers, self.prefix_query_tokens, self.prefix_hit_tokens, cap_per_replica=cap)

    def _speculative(self) -> Optional[dict]:
        decs = [d for r in self.replicas for d in (getattr(r, "specs", None) or [r.spec]) if d is not None]
        return speculative_summary(decs, decs[0].spec) if decs else None

    def _send_at(self, src, dst, nbytes: float, t: float):
        if t > self.env.now:
            yield self.env.timeout(t - self.env.now)
        yield self.send(src, dst, nbytes)

    # -- between pools -----------------------------------------------------------------------
    def decode_reject_reason(self, rid: int) -> str:
        """Why the decode pools can never serve ``rid`` (asked of the first decode replica)."""
        return self.decode[0]._reject_reason(rid)

    def handoff(self, rid: int, L: int, src, t: float) -> None:
        """``rid`` was prefilled on ``src`` (``L`` tokens of KV): the decode router picks its decode replica
        (already done when the prefill was announced: layer-wise KV)."""
        if self.prefill_end is not None and self.prefill_end[rid] == self.prefill_end[rid]:
            return
        dst = self.decode[self.decode_router.route(rid, self.decode_views)]
        self.decode_of[rid] = dst.index
        dst.receive(rid, L, src, t)

    def announce(self, rid: int, L: int, src, t: float, end: float) -> None:
        """Layer-wise KV: ``rid``'s prefill on ``src`` ends at ``end`` (its step started at ``t``); the decode
        router picks its decode replica now and the replica may start the transfer before ``end``."""
        self.prefill_end[rid] = end
        dst = self.decode[self.decode_router.route(rid, self.decode_views)]
        self.decode_of[rid] = dst.index
        dst.receive(rid, L, src, t)

    def _group(self, rep, rid: int) -> list:
        """Devices holding ``rid``'s KV on ``rep``: its attention group (see ``simllm.sim.transfer``)."""
        ranks = self.ranks[rep.index]
        k = getattr(rep, "dp_rank", None)
        if k is None:
            return ranks
        g = rep.pool.attn_group
        return ranks[k * g:(k + 1) * g]

    def start_transfer(self, rid: int, L: int, src, dst, need: int, t: float) -> None:
        nbytes = src.kv_bytes_tok * len(self.ranks[src.index]) * L
        start = self.env.now
        pe = self.prefill_end[rid] if self.prefill_end is not None else NAN
        if pe == pe:  # layer-wise: all layers but the last stream now, the last once the prefill step has ended
            a, b = self._group(src, rid), self._group(dst, rid)
            last = nbytes / self.kv_layers[src.index]
            ev = self.env.all_of([self.send(a, b, nbytes - last), self.env.process(self._send_at(a, b, last, pe))])
        else:
            ev = self.send(self._group(src, rid), self._group(dst, rid), nbytes)

        def done(_e):
            now = self.env.now
            self.kv_transfer[rid] = now - start
            src.release(rid, L, now)
            dst.landed_at(rid, L, need, now)

        ev.callbacks.append(done)


