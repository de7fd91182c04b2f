"""Data-parallel attention ranks inside one expert-parallel replica (DeepSeek's and SGLang's DP attention).

An EP replica of ``ep`` devices runs attention data-parallel over ``dp = ep / tp`` ranks of ``tp``
devices; the routed experts are sharded over all ``ep`` devices. Each rank is a scheduler of its
own, as in SGLang (one ``Scheduler`` per DP rank): its waiting queue, running set, KV cache (its
share of the replica's blocks, ``num_blocks // dp``, with its own prefix cache) and batching policy.
The pool's batching limits are the replica's and are divided over the ranks: SGLang divides
``--chunked-prefill-size`` by ``dp_size`` under DP attention; ``max_num_seqs`` (SGLang's
``--max-running-requests``) is divided likewise (an assumption). A request lives on one rank for
its whole stay, chosen when it reaches the replica (an arrival, or a KV hand-over to a decode
pool) by the *rank router*, a routing policy (``simllm.policies.routing``) over the ranks:
``least_outstanding`` by default. (SGLang's ``DataParallelController`` defaults to
``round_robin`` and offers ``shortest_queue`` / ``minimum_tokens``; under PD disaggregation its
decode side follows the prefill side's bootstrap room. DeepSeek does not publish its rank
balancing beyond "balance the core-attention computation and the number of requests per rank".)

The MoE layers' dispatch and combine synchronise the ranks: all ranks run each step together
(a rank with nothing to do joins with an empty batch), and the step costs the slowest rank's
attention plus the shared expert part of all ranks' tokens (``step_time_ranks`` of the cost
model, :meth:`simllm.cost.moe_ep.EPStepCost.step_time_ranks`). One rank's prefill therefore
delays the others only through that synchronisation: a step in which rank A prefills and rank B
decodes lasts what A's attention needs, and B's sequences each still gain one token.

:class:`DPReplica` is the replica the pool's router and the simulation see. Its ranks are replicas
of the pool's role (:mod:`simllm.sim.pools`) with ``standalone = False``: they have no process of
their own, hand the shape of their iteration up instead of sleeping (``_step_wait``) and forward
pokes to the replica. The replica drives them in lockstep with the pieces of the one iteration
(:mod:`simllm.sim.replica`): each rank's batching policy decides; if any rank prefills or
preempts, every busy rank runs ``Replica._mixed`` and the step is priced once over the ranks'
shapes; otherwise the decoding ranks jump together: ``k`` = the fewest steps to any rank's next
change (a completion, KV blocks running out, a change point, a waiting rank's deadline), the
``k`` step times of all ranks priced in one vectorised call (``decode_ctx_tokens`` ``[k, R]``),
a poke cuts the jump at the next step boundary. Jumping and stepping give identical timestamps.
Per-step records: one row per replica step, summed over the ranks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..policies.batching import Batch
from .pools import REPLICA_CLASS, PositionView
from .replica import Replica

# per-rank shares of a batching policy's replica-wide limits
# (SGLang divides its max_running_requests and chunked_prefill_size by the DP size under DP attention)
_DIVIDED = ("max_num_seqs", "max_num_batched_tokens", "token_budget", "batch_size", "max_running_requests",
            "chunked_prefill_size")


def rank_policy(policy: Any, dp: int) -> Any:
    """``policy`` with its replica-wide limits divided over ``dp`` ranks (at least 1 each)."""
    names = {f.name for f in dataclasses.fields(policy) if f.init}
    changes = {f: max(1, getattr(policy, f) // dp) for f in _DIVIDED if f in names}
    return dataclasses.replace(policy, **changes) if changes else policy


class _Rank:
    """What makes a replica of a pool role one rank of a :class:`DPReplica`."""

    standalone = False
    parent: "DPReplica"
    dp_rank: int

    def _poke(self, t: float, cut: bool = True) -> None:
        self.parent._poke(t, cut)

    def _step_wait(self, P, W, m, n, ctx, now):
        d, end = yield (P, W, m, n, ctx)
        self.clock = end
        return d, end

    def _record(self, *row) -> None:  # the replica records one row per step for all its ranks
        pass


RANK_CLASS = {role: type(f"Rank{cls.__name__}", (_Rank, cls), {}) for role, cls in REPLICA_CLASS.items()}


class _KVSum:
    """The replica's KV cache as the sum of its ranks' (``capacity``, ``used_blocks``, ... summed)."""

    def __init__(self, ranks):
        self._ranks = ranks

    def __getattr__(self, name):
        return sum(getattr(r.kv, name) for r in self._ranks)


_DECODE = Batch(decode=True)


class DPReplica:
    """One replica of a pool whose attention runs on ``dp`` data-parallel ranks (see the module)."""

    _poke = Replica._poke
    _change = Replica._change
    spec = None  # the ranks decode speculatively, each with its own counters (specs)
    tiers = None  # each rank keeps its own KV tiers (its share of the replica's: simllm.sim.kv_tiers)

    def __init__(self, sim, index: int, pool, cost, batching, dp: int, router):
        if not hasattr(cost, "step_time_ranks"):
            raise ValueError(f"pool {pool.name!r}: data-parallel attention ranks need the expert-parallel cost model's "
                             f"per-rank step (step_time_ranks); CUDA-graph padding, host overhead and a draft model's "
                             f"speculation wrap the step cost without it (simllm.scenario.check_dp_ranks_options)")
        cfg = pool.config if pool.config is not None else sim.config
        for opt, on in (("workload.request_timeout_s", getattr(cfg, "request_timeout_s", None) is not None),
                        ("deployment.kv_layer_wise", bool(getattr(cfg, "kv_layer_wise", False)) and pool.role == "prefill")):
            if on:
                raise ValueError(f"pool {pool.name!r}: {opt} is not supported with data-parallel attention ranks yet")
        if pool.num_blocks < dp:
            raise ValueError(f"pool {pool.name!r}: {pool.num_blocks} KV blocks cannot be shared by {dp} ranks")
        self.sim = sim
        self.env = sim.env
        self.index = index
        self.pool = pool
        self.role = pool.role
        self.cost = cost
        self.cfg = pool.config if pool.config is not None else sim.config
        self.dp = dp
        rpool = dataclasses.replace(pool, num_blocks=pool.num_blocks // dp, changes=None)
        cls = RANK_CLASS[pool.role]
        self.ranks = []
        for i in range(dp):
            rk = cls(sim, index, rpool, cost, rank_policy(batching(), dp))
            rk.parent = self
            rk.dp_rank = i
            rk.general = True  # ranks always run the general iteration (the short path is its special case)
            self.ranks.append(rk)
        self.policy = self.ranks[0].policy
        # speculative decoding: every rank plans its own sequences' verification steps (simllm.sim.spec_decode)
        self.specs = [rk.spec for rk in self.ranks if rk.spec is not None]
        self.router = router
        if hasattr(router, "attach"):
            router.attach(sim)
        self.views = [PositionView(r, i) for i, r in enumerate(self.ranks)]
        self.kv = _KVSum(self.ranks)
        self.kv_bytes_tok = self.ranks[0].kv_bytes_tok
        self.clock = 0.0
        self.idle_ev = None
        self.idle_from = None
        self.interruptible = False
        self.future = None  # planned routing does not see the ranks: arrivals always wake the replica
        self.fptr = 0
        self.kv_peak = 0
        self.peak_total = 0
        self.chg = pool.changes
        self.next_chg = self.chg.boundary(1) if self.chg is not None else float("inf")
        self.tok_int = 0
        self._pmemo: dict = {}
        self._arange = np.arange(4096, dtype=np.float64)
        self.proc = self.env.process(self._run())

    # -- what routers and the simulation see -----------------------------------------------------
    @property
    def outstanding(self) -> int:
        return sum(r.assigned - r.done for r in self.ranks)

    @property
    def n(self) -> int:
        return sum(r.n for r in self.ranks)

    @property
    def kv_free_fraction(self) -> float:
        free = total = 0
        for r in self.ranks:
            kv = r.kv
            free += kv.num_blocks - r._sync() + kv.evictable_blocks
            total += kv.num_blocks
        return free / total

    def cached_prefix_units(self, rid: int) -> int:
        return max(r.cached_prefix_units(rid) for r in self.ranks)

    def _reject_reason(self, rid: int) -> str:
        return self.ranks[0]._reject_reason(rid)

    def _rank(self, rid: int):
        return self.ranks[self.router.route(rid, self.views)]

    def submit(self, rid: int, t: float, foreseen: bool = False) -> None:
        if foreseen:
            self.fptr += 1
        self._rank(rid).submit(rid, t)

    def receive(self, rid: int, L: int, src, t: float) -> None:
        self._rank(rid).receive(rid, L, src, t)

    # -- the lockstep iteration ------------------------------------------------------------------
    def _run(self):
        env = self.env
        sim = self.sim
        ranks = self.ranks
        jump = self.cfg.jump
        boundary = self.role == "decode"
        while True:
            clock = self.clock
            for rk in ranks:
                rk.clock = clock
                if boundary:
                    rk._on_boundary()
            if self.clock >= self.next_chg:
                yield from self._change()
                for rk in ranks:
                    rk.cost = self.cost
            self.idle_from = None
            now = self.clock
            work = []
            swap_drained = False
            for rk in ranks:
                if rk.n == 0 and not rk.waiting and not rk.swapped:
                    continue
                if rk.swapped:
                    rk._swap_in()
                    b = Batch(decode=rk.n > 0)
                    swap_drained |= not rk.swapped
                elif rk.waiting:
                    b = rk.policy.next_batch(rk.waiting, rk, rk.kv_view)
                else:
                    b = _DECODE
                work.append((rk, b))
            if not work:
                self.idle_ev = env.event()
                self.idle_from = self.clock
                yield self.idle_ev
                continue
            if any(b.prefill_ids or b.preempt for _rk, b in work):
                yield from self._mixed_step(work, now)
                continue
            dec = [rk for rk, b in work if b.decode and rk.n]
            waits = [b.wait_until for _rk, b in work if b.wait_until is not None and not b.decode]
            for rk, b in work:
                if not (b.decode and rk.n) and b.wait_until is None and not rk._blocked():
                    raise RuntimeError(f"replica {self.index} rank {rk.dp_rank}: policy {rk.policy!r} scheduled "
                                       f"nothing with {len(rk.waiting)} waiting and {rk.n} running")
            wake = min(waits) if waits else float("inf")
            if not dec:
                self.idle_ev = ev = env.event()
                if waits:  # e.g. static batching waits for a batch
                    yield ev | env.timeout(max(wake - env.now, 0.0))
                    if self.idle_ev is ev:
                        self.idle_ev = None
                        self.clock = max(self.clock, wake)
                else:  # every admissible request waits for blocks held by transfers
                    self.idle_from = self.clock
                    yield ev
                continue
            if self.specs:
                yield from self._spec_step(dec, now)
            else:
                yield from self._decode_segment(dec, now, jump, swap_drained, wake)

    def _pending_swap(self) -> float:
        p = 0.0
        for rk in self.ranks:
            if rk.pending_swap_s:
                p = max(p, rk.pending_swap_s)
                rk.pending_swap_s = 0.0
        return p

    def _mixed_step(self, work, now: float):
        """One general iteration on every busy rank (prefill chunks, preemptions, one decode token)."""
        gens = []
        shapes = []
        for rk, b in work:
            if b.prefill_ids or b.preempt or (b.decode and rk.n):
                g = rk._mixed(b, now)
                shapes.append(next(g))
                gens.append(g)
        P, W, m, n, ctx = (np.array(c) for c in zip(*shapes))
        d = float(self.cost.step_time_ranks(P, W, m, n, ctx))
        pend = self._pending_swap()
        if pend:
            d += pend
        end = now + d
        yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        for g in gens:
            try:
                g.send((d, end))
            except StopIteration:
                pass
        used = self._used()
        Pt, mt, nt = int(P.sum()), int(m.sum()), int(n.sum())
        self.sim.record_step(self.index, now, d, 1, mt + nt, Pt, mt, nt, used,
                             (Pt, float(W.sum()), mt, nt, float(ctx.sum())))

    def _used(self, before=(), dec=()) -> int:
        """Used blocks of all ranks now (``dec``: ranks whose count ``before`` their retirements is used
        instead); tracks the replica's peaks."""
        used = sum(before)
        skip = {id(rk) for rk in dec}
        for rk in self.ranks:
            if id(rk) not in skip:
                used += rk.kv.used_blocks
        if used > self.kv_peak:
            self.kv_peak = used
        if self.role == "decode":
            tot = used + sum(rk.kv.reserved for rk in self.ranks)
            if tot > self.peak_total:
                self.peak_total = tot
        return used

    def _spec_step(self, dec, now: float):
        """One speculative verification step of every decoding rank: each rank plans it for its own sequences
        (tokens kept per sequence drawn as without ranks), the step is priced per rank by the speculative cost's
        ``step_time_ranks``, and each rank keeps what its sequences emitted. One step per event (no jumps:
        steps emit different tokens on every rank)."""
        for rk in dec:
            if rk.kv.growable_blocks - rk.kv.used_blocks < rk.n * rk.grow_max:
                rk._make_room()
        dec = [rk for rk in dec if rk.n]
        if not dec:
            return
        plans = [rk._spec_plan(rk.n, 1) for rk in dec]
        R = len(dec)
        ns = np.fromiter((rk.n for rk in dec), dtype=np.float64, count=R)
        ctx = np.fromiter((float(p[1][0]) for p in plans), dtype=np.float64, count=R)
        zero = np.zeros(R)
        d = float(self.cost.step_time_ranks(zero, zero, zero, ns, ctx)) + self._pending_swap()
        end = now + d
        yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        emitted, before, done = 0, [], []
        for i, (rk, (k, _c, cum)) in enumerate(zip(dec, plans)):
            e, u, fin = rk._spec_keep(k, cum, own_steps=i == 0)  # one replica step: counted once
            emitted += e
            before.append(u)
            done.append(fin)
        used = self._used(before=before, dec=dec)
        for rk, fin, n in zip(dec, done, ns.tolist()):
            if fin:
                rk._finish(int(n), end)
        N = int(ns.sum())
        self.sim.record_step(self.index, now, end - now, 1, N, 0, 0, emitted, used, (0, 0.0, 0, N, float(ctx.sum())))

    def _decode_segment(self, dec, now: float, jump: bool, swap_drained: bool, wake: float):
        """Every decoding rank decodes ``k`` tokens together (one vectorised price for all ranks' steps)."""
        preempted = False
        for rk in dec:
            if rk.kv.growable_blocks - rk.kv.used_blocks < rk.n:
                preempted |= rk._make_room()
        R = len(dec)
        ns = np.fromiter((rk.n for rk in dec), dtype=np.int64, count=R)
        mrems = [rk._min_rem() for rk in dec]
        T0 = np.fromiter((rk.tsum for rk in dec), dtype=np.int64, count=R)
        k = min(mrems) if jump and not preempted and not swap_drained else 1
        if k > 1:
            for rk in dec:
                k = rk._fit_steps(k)
                if k == 1:
                    break
        if k > len(self._arange):
            self._arange = np.arange(2 * k, dtype=np.float64)
        ctx = self._arange[:k, None] * ns
        ctx += T0 + ns
        zero = np.zeros(R)
        d = self.cost.step_time_ranks(zero, zero, zero, ns, ctx)
        pend = self._pending_swap()
        if k == 1:
            ends = None
            end = now + (float(d[0]) + pend)
        else:
            buf = np.empty(k + 1)
            buf[0] = now
            buf[1:] = d
            buf[1] += pend
            ends = buf.cumsum()[1:]
            end = float(ends[-1])
            cut = min(self.next_chg, wake)
            if cut < end:  # end the jump at the first step boundary at or after a change point or a deadline
                j = int(np.searchsorted(ends, cut, side="left"))
                k = j + 1
                end = float(ends[j])
        if k > 1:
            for rk, n in zip(dec, ns.tolist()):
                rk.seg = (ends, n)
            k, end = yield from Replica._sleep_jump(self, ends, k, end)
            for rk in dec:
                rk.seg = None
        else:
            yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        used = self._used(before=[rk._advance(n, k, mr, end) for rk, n, mr in zip(dec, ns.tolist(), mrems)],
                          dec=dec)
        N = int(ns.sum())
        self.sim.record_step(self.index, now, end - now, k, N, 0, 0, N * k, used,
                             (0, 0.0, 0, N, int(T0.sum()) + N * (k + 1) / 2.0))
