"""The SimPy cluster simulation: a router process and one process per replica.

Each replica runs iteration-level continuous batching. At each decision point its batching
policy (``simllm.policies.batching``) chooses a prefill batch or a decode of the running set;
the replica asks the cost model for the time of exactly that batch, described by aggregates
(``StepCostModel.step_time``), and sleeps for it.

Speed (DESIGN.md): per-request state lives in numpy arrays; a replica yields at most one SimPy
event per step and, with ``jump=True`` (the default), one per *segment*: between two changes of
batch membership the decode steps differ only by growing context, so the replica prices the k
steps up to the next change (first completion, or KV blocks running out) in one vectorised
``step_time`` call, sums them with a sequential ``cumsum`` (the same float additions as
stepping), and sleeps until the end. An arrival that could join the batch interrupts the sleep;
the segment is then cut at the first step boundary at or after the arrival, which is where a
step-by-step replica would have seen it. Timestamps are therefore identical to stepping one
iteration at a time (``jump=False``), which a test checks.

When the router's choice does not depend on replica state (``round_robin`` has ``plan``), each
replica knows the arrival times of its own future requests: it ends jumps at the boundary where
the next one is seen (no interrupt), and does not even yield to SimPy for a step or segment that
ends before its next arrival (nothing else can affect it). Its logical clock then runs ahead of
``env.now``; all timestamps come from that clock, never from ``env.now``.

Policies with ``general = True`` (orca, sarathi, static, priority) and any policy under prefix
caching run prefill iterations through ``Replica._mixed``: policy-chosen preemptions, prefill
chunks (a request keeps its place in the waiting queue, with its KV blocks, until its last chunk;
``prefill_attn_work`` counts cached context + chunk) and one decode token of the running set,
priced as one mixed batch. Decode-only iterations still jump. With prefix caching
(``simllm.sim.prefix_cache``) shared prompt units are counted once in the used blocks and
unreferenced ones are evicted LRU when blocks run out (within a jump, at its end: the same
units stepping would evict).

Per-step records: one row per prefill step and one row per decode *segment* (``n_steps``
iterations, ``duration_s`` their exact sum). ``compute_s``/``memory_s``/``comm_s``/``flops``/
``bytes`` of a segment are those of its middle step times ``n_steps``, taken from a memo on
the rounded shape (see ``Simulation._steps_columns``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import simpy

from ..cost.interface import BatchShape
from ..policies.batching import Batch
from .kv import KVCache
from .prefix_cache import PrefixCache

NAN = float("nan")


@dataclass(frozen=True)
class SimConfig:
    jump: bool = True  # price decode segments at once (False: one SimPy event per iteration)
    preemption: str = "recompute"  # or "swap"
    block_size: int = 16
    watermark: float = 0.01
    max_model_len: Optional[int] = None  # prompt + output longer than this is rejected
    swap_bandwidth: float = 25e9  # B/s per device between device and host memory (swap preemption)
    record_breakdown: bool = True  # call step_cost once per step/segment for compute/memory/comm
    prefix_caching: bool = False  # share full prompt units with equal prefix keys (simllm.sim.prefix_cache)
    prefix_unit_tokens: int = 512  # tokens per prefix key (Mooncake hash_ids: 512)


class _Waiting(deque):
    """FCFS waiting queue of request ids; ``prefill_len`` includes tokens to recompute.

    With chunked prefill or prefix caching (``rep.pdone`` / ``rep.pc``) it subtracts chunks done and
    cached prefix tokens (see ``simllm.policies.batching.WaitingQueue``).
    """

    __slots__ = ("_prompt", "_gen", "rep")

    def __init__(self, prompt: np.ndarray, gen: np.ndarray):
        super().__init__()
        self._prompt = prompt
        self._gen = gen
        self.rep = None

    def prefill_len(self, rid: int) -> int:
        L = int(self._prompt[rid] + self._gen[rid])
        rep = self.rep
        if rep is None or (rep.pc is None and not rep.pdone):
            return L
        d = rep.pdone.get(rid)
        if d is not None:
            return L - d
        if rep.pc is not None:
            return L - rep.pc.match(rep._hit_keys(rid, L))[0] * rep.unit_tokens
        return L

    def new_blocks(self, rid: int) -> int:
        rep = self.rep
        L = int(self._prompt[rid] + self._gen[rid])
        if rep is None:
            return -(-L // 16)
        if rid in rep.pdone:
            return 0
        b = -(-L // rep.B)
        if rep.pc is not None:
            h, u = rep.pc.match(rep._hit_keys(rid, L))
            b -= (h - u) * rep.pc.upb
        return b

    def started(self, rid: int) -> bool:
        return self.rep is not None and rid in self.rep.pdone

    def arrival_s(self, rid: int) -> float:
        return float(self.rep.sim.arrival[rid])

    def priority(self, rid: int) -> int:
        return int(self.rep.sim.priority[rid])


class _KVView:
    """What a batching policy sees of the KV cache when evictable prefix blocks count as free."""

    __slots__ = ("kv", "pc")

    def __init__(self, kv: KVCache, pc: PrefixCache):
        self.kv = kv
        self.pc = pc

    @property
    def block_size(self) -> int:
        return self.kv.block_size

    @property
    def num_blocks(self) -> int:
        return self.kv.num_blocks

    @property
    def watermark_blocks(self) -> int:
        return self.kv.watermark_blocks

    @property
    def free_blocks(self) -> int:
        return self.kv.num_blocks - self.kv.used_blocks + self.pc.evictable_blocks

    def blocks_for(self, tokens: int) -> int:
        return self.kv.blocks_for(tokens)


@dataclass
class SimResult:
    """Raw outcome of a simulation (arrays indexed by request position in arrival order)."""

    ids: np.ndarray
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    scheduled_s: np.ndarray
    first_token_s: np.ndarray
    completion_s: np.ndarray
    generated_tokens: np.ndarray
    preemptions: np.ndarray
    replica: np.ndarray
    rejected_reason: list  # "" when served
    steps: dict  # column -> list
    num_replicas: int
    kv_num_blocks: int
    block_size: int
    end_s: float
    kv_peak_blocks: list = field(default_factory=list)
    priority: Optional[np.ndarray] = None  # priority class per request (batching policy's rule)
    prefix_caching: bool = False
    prefix_query_tokens: int = 0  # prompt tokens looked up in the prefix cache at admission
    prefix_hit_tokens: int = 0  # of which found cached (prefill skipped)


class Replica:
    def __init__(self, sim: "Simulation", index: int, cost, policy, num_blocks: int):
        self.sim = sim
        self.env = sim.env
        self.index = index
        self.cost = cost
        self.policy = policy
        cfg = sim.config
        self.cfg = cfg
        self.kv = KVCache(num_blocks=num_blocks, block_size=cfg.block_size, watermark=cfg.watermark)
        self.B = cfg.block_size
        self.waiting = _Waiting(sim.prompt, sim.gen)
        self.swapped: deque = deque()  # (rid, kv_tokens, remaining)
        cap = int(policy.max_num_seqs)
        self.max_seqs = cap
        self.r_idx = np.zeros(cap, dtype=np.int64)
        self.r_t = np.zeros(cap, dtype=np.int64)  # KV tokens stored
        self.r_rem = np.zeros(cap, dtype=np.int64)  # tokens still to generate
        self.n = 0
        self.assigned = 0
        self.done = 0
        self.clock = 0.0  # exact logical time of the last step boundary
        self.idle_ev: Optional[simpy.Event] = None
        self.interruptible = False
        self.pending_swap_s = 0.0
        self.kv_peak = 0
        self.kv_bytes_tok = float(cost.kv_bytes_per_token_per_device)
        self.max_prompt = policy.max_prompt_tokens()
        self._arange = np.arange(4096, dtype=np.float64)
        self._pmemo: dict = {}
        self.future: Optional[list] = None  # arrival times of requests routed here (when the router plans)
        self.fptr = 0
        # chunked prefill, policy-driven preemption, prefix caching (the general step, _mixed)
        self.pdone: dict = {}  # rid -> tokens in KV of a prefill under way (still in the waiting queue)
        self.pblocks: dict = {}  # rid -> (private blocks held, prefix units acquired at admission)
        self.partial_blocks = 0
        self.sh_units = 0  # prefix units referenced by running sequences (counted in the cache, once)
        self.held = 0  # blocks not in sum(ceil(r_t / B)): partial prefills + cache - running's shared
        self.unit_tokens = int(cfg.prefix_unit_tokens)
        self.pc = PrefixCache(self.unit_tokens // cfg.block_size) if cfg.prefix_caching else None
        self.kv_view = _KVView(self.kv, self.pc) if self.pc is not None else self.kv
        self.seg = None  # (step ends, sequences) of the decode jump under way
        self.general = bool(getattr(policy, "general", False)) or self.pc is not None
        self.fcfs = bool(getattr(policy, "fcfs", True))
        self.waiting.rep = self
        # periodic cost changes (simllm.sim.replacement): change points end jumps like known arrivals
        self.chg = getattr(sim, "changes", None)
        self.next_chg = self.chg.boundary(1) if self.chg is not None else math.inf
        self.tok_int = 0  # tokens served since the last change point
        self.idle_from = None
        self.proc = self.env.process(self._run())

    # -- the policy's view of the running set ----------------------------------------------
    @property
    def n_prefilling(self) -> int:
        return len(self.pdone)

    def running(self) -> list:
        return list(zip(self.r_idx[:self.n].tolist(), self.r_t[:self.n].tolist()))

    def _sync(self) -> int:
        """Used KV blocks now (``env.now``), inside a decode jump too: the steps finished by now grow the
        sequences and evict cached prefixes as stepping one iteration at a time would have."""
        seg = self.seg
        if seg is None:
            return self.kv.used_blocks
        ends, n = seg
        j = int(np.searchsorted(ends, self.env.now, side="right"))
        if j == 0:
            return self.kv.used_blocks
        B = self.B
        used = int(((self.r_t[:n] + (j + B - 1)) // B).sum()) + self.held
        if self.pc is not None and used > self.kv.num_blocks:
            freed = self.pc.evict(used - self.kv.num_blocks)
            used -= freed
            self.held -= freed
        return used

    @property
    def kv_free_fraction(self) -> float:
        kv = self.kv
        used = self._sync()
        ev = self.pc.evictable_blocks if self.pc is not None else 0
        return (kv.num_blocks - used + ev) / kv.num_blocks

    def cached_prefix_units(self, rid: int) -> int:
        """Leading prefix units of ``rid`` this replica holds cached (0 without prefix caching)."""
        if self.pc is None:
            return 0
        self._sync()
        return self.pc.match(self._keys(rid))[0]

    def _keys(self, rid: int) -> tuple:
        return self.sim.pkeys[rid][:int(self.sim.prompt[rid]) // self.unit_tokens]

    def _hit_keys(self, rid: int, L: int) -> tuple:
        """Keys that may hit: at least one token of the prefill is always computed."""
        return self._keys(rid)[:(L - 1) // self.unit_tokens]

    # -- the router's view ---------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return self.assigned - self.done

    def submit(self, rid: int, t: float, foreseen: bool = False) -> None:
        sim = self.sim
        if foreseen:
            self.fptr += 1
        reason = self._reject_reason(rid)
        sim.replica_of[rid] = self.index
        if reason:
            sim.rejected[rid] = reason
            sim.finished += 1
            return
        self.assigned += 1
        self.waiting.append(rid)
        if self.idle_ev is not None:
            ev, self.idle_ev = self.idle_ev, None
            self.clock = t if t > self.clock else self.clock
            ev.succeed()
        elif (self.interruptible and not foreseen and not self.swapped
              and (not self.fcfs or (len(self.waiting) == 1 and self.n < self.max_seqs))):
            self.interruptible = False
            self.proc.interrupt(t)

    def _reject_reason(self, rid: int) -> str:
        sim = self.sim
        p = int(sim.prompt[rid])
        o = int(sim.out[rid])
        if self.max_prompt is not None and p > self.max_prompt:
            return f"prompt of {p} tokens exceeds the batching token budget of {self.max_prompt}"
        if self.max_prompt is not None and p + o - 1 > self.max_prompt and self.cfg.preemption == "recompute":
            # a preempted request is recomputed in one prefill of up to prompt + output - 1 tokens;
            # vLLM refuses max_num_batched_tokens < max_model_len without chunked prefill for this reason
            return (f"prompt + output of {p + o} tokens exceeds the batching token budget of {self.max_prompt} "
                    f"(a preempted request is recomputed in one prefill)")
        if self.cfg.max_model_len is not None and p + o > self.cfg.max_model_len:
            return f"prompt + output of {p + o} tokens exceeds max_model_len {self.cfg.max_model_len}"
        need = self.kv.blocks_for(p + o)
        if need > self.kv.num_blocks - self.kv.watermark_blocks:
            return f"needs {need} KV blocks, the replica holds {self.kv.num_blocks}"
        return ""

    # -- the replica process -------------------------------------------------------------
    def _on_boundary(self) -> None:
        """Called at every decision point (a step boundary or a wake-up), before the policy decides.

        A hook for subclasses (``simllm.sim.disagg``: a decode replica starts KV transfers and lets
        transferred requests join here); its changes are seen by the decision that follows."""

    def _run(self):
        env = self.env
        sim = self.sim
        policy = self.policy
        kv = self.kv
        jump = self.cfg.jump
        B = self.B
        while True:
            self._on_boundary()
            if self.clock >= self.next_chg:
                yield from self._change()
            self.idle_from = None
            if self.n == 0 and not self.waiting and not self.swapped:
                self.idle_ev = env.event()
                self.idle_from = self.clock
                yield self.idle_ev
                continue
            now = self.clock
            swap_drained = False
            if self.swapped:
                self._swap_in()
                batch = Batch(decode=self.n > 0)
                swap_drained = not self.swapped  # the policy decides again from the next boundary
            else:
                batch = policy.next_batch(self.waiting, self, self.kv_view)
            if batch.prefill_ids or batch.preempt:
                if self.general:
                    yield from self._mixed(batch, now)
                else:
                    yield from self._prefill(batch, now)
                continue
            if batch.wait_until is not None and not batch.decode:  # e.g. static batching waits for a batch
                self.idle_ev = ev = env.event()
                yield ev | env.timeout(max(batch.wait_until - env.now, 0.0))
                if self.idle_ev is ev:  # timed out: no arrival
                    self.idle_ev = None
                    self.clock = max(self.clock, batch.wait_until)
                continue
            if not batch.decode or self.n == 0:  # nothing schedulable (cannot happen with a sane policy)
                raise RuntimeError(f"replica {self.index}: policy {policy!r} scheduled nothing "
                                   f"with {len(self.waiting)} waiting and {self.n} running")
            # -- decode segment -----------------------------------------------------------
            # make room for one more token per sequence, preempting the newest
            preempted = False
            if self._cap() - kv.used_blocks < self.n:  # some sequence may need a new block it cannot get
                while True:
                    t = self.r_t[:self.n]
                    grow = int(np.count_nonzero(t % B == 0))
                    if kv.used_blocks + grow <= self._cap() or (self.n == 1 and not self.pdone):
                        break
                    if self.n == 1:
                        self._preempt_partial()
                    else:
                        self._preempt_newest()
                    preempted = True
            n = self.n
            t = self.r_t[:n]
            # after a preemption the victim waits at the queue's head: re-decide after one step
            mrem = int(self.r_rem[:n].min())
            kmax = mrem if jump and not preempted and not swap_drained else 1
            k = self._fit_steps(t, kmax) if kmax > 1 else 1
            T0 = int(t.sum())
            if k > len(self._arange):
                self._arange = np.arange(2 * k, dtype=np.float64)
            ctx = self._arange[:k] * n
            ctx += T0 + n
            d = self.cost.step_time(0, 0.0, 0, n, ctx)
            if k == 1:  # the same float additions as the cumsum below
                end = now + (float(d[0]) + self.pending_swap_s)
                self.pending_swap_s = 0.0
            else:
                buf = np.empty(k + 1)
                buf[0] = now
                buf[1:] = d
                if self.pending_swap_s:
                    buf[1] += self.pending_swap_s
                    self.pending_swap_s = 0.0
                ends = buf.cumsum()[1:]
                end = float(ends[-1])
            if k > 1 and self.future is not None and (
                    not self.fcfs or (not self.waiting and n < self.max_seqs and not self.swapped)):
                # end the jump at the step boundary where the next arrival routed here is seen
                if self.fptr < len(self.future):
                    a = self.future[self.fptr]
                    if a < end:
                        j = int(np.searchsorted(ends, a, side="left"))
                        k = j + 1
                        end = float(ends[j])
            if k > 1 and self.next_chg < end:  # end the jump at the first step boundary at or after the change
                j = int(np.searchsorted(ends, self.next_chg, side="left"))
                k = j + 1
                end = float(ends[j])
            if self.future is not None and not (self.fptr < len(self.future) and self.future[self.fptr] <= end):
                pass  # planned routing and no arrival here before `end`: nothing can change, no event needed
            elif k > 1:
                self.interruptible = True
                self.seg = (ends, n)  # routers looking at KV state mid-jump see the steps done by then
                try:
                    yield env.timeout(max(end - env.now, 0.0))
                except simpy.Interrupt as intr:
                    a = intr.cause
                    j = int(np.searchsorted(ends, a, side="left"))
                    if j < k - 1:
                        k = j + 1
                        end = float(ends[j])
                    yield env.timeout(max(end - env.now, 0.0))
                self.interruptible = False
                self.seg = None
            else:
                yield env.timeout(max(end - env.now, 0.0))
            self.clock = end
            # apply k steps
            self.r_t[:n] += k
            rem = self.r_rem[:n]
            rem -= k
            self._refresh_used()
            used = kv.used_blocks
            sim.record_step(self.index, now, end - now, k, n, 0, 0, n * k, used,
                            (0, 0.0, 0, n, T0 + n * (k + 1) / 2.0))
            if k == mrem:  # someone finished
                self._finish(n, end)

    def _change(self):
        """Apply the change point(s) at or before ``clock``: new cost model, and a pause (migration) that
        starts at the change point (or at the decision point, for a replica busy at it)."""
        chg = self.chg
        i = chg.interval_of(self.clock)
        b = chg.boundary(i)
        start = max(b, self.idle_from) if self.idle_from is not None else self.clock
        cost, pause = chg.apply(self.index, self.cost, i, start, self.tok_int)
        if cost is not self.cost:
            self.cost = cost
            self._pmemo.clear()
            self.sim.cost_changes.append((len(self.sim._rows), self.index, cost))
        self.tok_int = 0
        self.next_chg = chg.boundary(i + 1)
        if pause > 0 and start + pause > self.clock:
            self.clock = start + pause
            yield self.env.timeout(max(self.clock - self.env.now, 0.0))

    def _finish(self, n: int, end: float) -> None:
        """Retire the first ``n`` running sequences that have no token left to generate."""
        sim = self.sim
        rem = self.r_rem[:n]
        done = rem == 0
        ids = self.r_idx[:n][done]
        sim.completion[ids] = end
        sim.gen[ids] = sim.out[ids]
        if sim.sessions is not None:
            sim.on_complete(ids.tolist(), end)
        nd = len(ids)
        self.done += nd
        sim.finished += nd
        if self.pc is not None:
            for rid in ids.tolist():
                keys = self._keys(rid)
                self.pc.release(keys)
                self.sh_units -= len(keys)
        keep = ~done
        m = self.n - nd
        if m > n - nd:  # sequences after the first n (joined this step) keep their places
            keep = np.concatenate([keep, np.ones(self.n - n, dtype=bool)])
            rem = self.r_rem[:self.n]
        self.r_idx[:m] = self.r_idx[:self.n][keep]
        self.r_t[:m] = self.r_t[:self.n][keep]
        self.r_rem[:m] = rem[keep]
        self.n = m
        self._refresh_used()

    def _cap(self) -> int:
        """Blocks a running sequence may grow into: capacity plus evictable cached prefix blocks."""
        return self.kv.num_blocks + (self.pc.evictable_blocks if self.pc is not None else 0)

    def _refresh_used(self) -> None:
        """Recount used blocks (running + partial prefills + cached prefixes), evicting cached prefixes
        (LRU) beyond capacity."""
        kv = self.kv
        B = self.B
        held = self.partial_blocks
        pc = self.pc
        if pc is not None:
            held += pc.total_blocks - self.sh_units * pc.upb
        used = int(((self.r_t[:self.n] + (B - 1)) // B).sum()) + held
        if pc is not None and used > kv.num_blocks:
            freed = pc.evict(used - kv.num_blocks)
            used -= freed
            held -= freed
        self.held = held
        kv.used_blocks = used
        if used > self.kv_peak:
            self.kv_peak = used

    def _fit_steps(self, t: np.ndarray, kmax: int) -> int:
        """Largest k <= kmax such that k more tokens per sequence fit in the KV cache."""
        kv = self.kv
        B = self.B
        n = len(t)
        cap = self._cap()
        if kv.used_blocks + n * (-(-kmax // B)) <= cap:
            return kmax
        cap -= self.held
        lo, hi = 1, kmax  # f(lo) fits (ensured by preemption)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if int(((t + (mid + B - 1)) // B).sum()) <= cap:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _prefill(self, batch: Batch, now: float):
        sim = self.sim
        kv = self.kv
        ids = batch.prefill_ids
        lens = batch.prefill_lens
        m = len(ids)
        P = 0
        W = 0.0
        for L in lens:
            P += L
            W += L * (L / 2.0)
        key = (P, W, m)
        d = self._pmemo.get(key)
        if d is None:  # exact key: prompt lengths repeat in real traces
            d = self._pmemo[key] = float(self.cost.step_time(P, W, m, 0, 0.0))
        if self.pending_swap_s:
            d += self.pending_swap_s
            self.pending_swap_s = 0.0
        end = now + d
        waiting = self.waiting
        for _ in range(m):
            waiting.popleft()
        blocks = 0
        for rid, L in zip(ids, lens):
            blocks += kv.blocks_for(L)
            if sim.scheduled[rid] != sim.scheduled[rid]:  # NaN: first time scheduled
                sim.scheduled[rid] = now
        kv.used_blocks += blocks
        used_peak = kv.used_blocks
        if used_peak > self.kv_peak:
            self.kv_peak = used_peak
        fut = self.future
        if fut is None or (self.fptr < len(fut) and fut[self.fptr] <= end):
            yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        sim.record_step(self.index, now, d, 1, m, P, m, 0, used_peak, (P, W, m, 0, 0.0))
        B = self.B
        for rid, L in zip(ids, lens):
            if not self._prefilled(rid, L, end):
                kv.used_blocks -= -(-L // B)

    def _prefilled(self, rid: int, L: int, end: float) -> bool:
        """``rid``'s prefill of ``L`` context tokens ended at ``end`` and emitted a token: record it, then
        either complete the request (False) or append it to the running set to decode (True)."""
        sim = self.sim
        g = int(sim.gen[rid]) + 1
        sim.gen[rid] = g
        if sim.first_token[rid] != sim.first_token[rid]:
            sim.first_token[rid] = end
        rem = int(sim.out[rid]) - g
        if rem <= 0:
            sim.completion[rid] = end
            if sim.sessions is not None:
                sim.on_complete([rid], end)
            self.done += 1
            sim.finished += 1
            return False
        i = self.n
        self.r_idx[i] = rid
        self.r_t[i] = L
        self.r_rem[i] = rem
        self.n = i + 1
        return True

    def _mixed(self, batch: Batch, now: float):
        """One general iteration: policy preemptions, then prefill chunks (new or continued, over cached
        prefix tokens) together with one decode token of every running sequence (``batch.decode``)."""
        sim = self.sim
        kv = self.kv
        B = self.B
        pc = self.pc
        for rid in batch.preempt:
            self._preempt_rid(rid)
        ids = list(batch.prefill_ids)
        lens = list(batch.prefill_lens)
        if batch.decode and self.n:  # room for one more token per running sequence
            while True:
                grow = int(np.count_nonzero(self.r_t[:self.n] % B == 0))
                if kv.used_blocks + grow <= self._cap() or (self.n == 1 and not self.pdone):
                    break
                if self.n == 1:  # the last sequence must grow: give up the newest prefill under way
                    rid = self._preempt_partial()
                    if rid in ids:
                        i = ids.index(rid)
                        del ids[i], lens[i]
                else:
                    self._preempt_newest()
        n = self.n if batch.decode else 0
        m = len(ids)
        P = 0
        W = 0.0
        T = self.unit_tokens
        for rid, c in zip(ids, lens):
            d0 = self.pdone.get(rid)
            if d0 is None:  # admission: KV blocks for the whole prefill, cached prefix units shared
                L = int(sim.prompt[rid] + sim.gen[rid])
                h = 0
                if pc is not None:
                    keys = self._hit_keys(rid, L)
                    h = pc.match(keys)[0]
                    pc.acquire(keys[:h])
                    sim.prefix_query_tokens += int(sim.prompt[rid])
                    sim.prefix_hit_tokens += h * T
                    pb = -(-L // B) - h * pc.upb
                else:
                    pb = -(-L // B)
                self.pblocks[rid] = (pb, h)
                self.partial_blocks += pb
                d0 = self.pdone[rid] = h * T
                if sim.scheduled[rid] != sim.scheduled[rid]:  # NaN: first time scheduled
                    sim.scheduled[rid] = now
            P += c
            W += c * (d0 + c / 2.0)
        self._refresh_used()
        if n:
            T0 = int(self.r_t[:n].sum())
            ctx = float(T0 + n)
            d = float(self.cost.step_time(P, W, m, n, ctx))
        else:
            ctx = 0.0
            key = (P, W, m)
            d = self._pmemo.get(key)
            if d is None:
                d = self._pmemo[key] = float(self.cost.step_time(P, W, m, 0, 0.0))
        if self.pending_swap_s:
            d += self.pending_swap_s
            self.pending_swap_s = 0.0
        end = now + d
        fut = self.future
        if fut is None or (self.fptr < len(fut) and fut[self.fptr] <= end):
            yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        if n:
            self.r_t[:n] += 1
            self.r_rem[:n] -= 1
            self._refresh_used()
        used_rec = kv.used_blocks
        sim.record_step(self.index, now, d, 1, m + n, P, m, n, used_rec, (P, W, m, n, ctx))
        if n and int(self.r_rem[:n].min()) == 0:
            self._finish(n, end)
        for rid, c in zip(ids, lens):
            d1 = self.pdone[rid] + c
            L = int(sim.prompt[rid] + sim.gen[rid])
            if d1 < L:
                self.pdone[rid] = d1
                continue
            del self.pdone[rid]
            pb, h = self.pblocks.pop(rid)
            self.partial_blocks -= pb
            self.waiting.remove(rid)
            if pc is not None:
                keys = self._keys(rid)
                pc.acquire(keys[h:])
            running = self._prefilled(rid, L, end)
            if pc is not None:
                if running:
                    self.sh_units += len(keys)
                else:
                    pc.release(keys)
        self._refresh_used()

    def _preempt_rid(self, rid: int) -> None:
        """Preempt running request ``rid`` (chosen by the policy) as the newest would be."""
        n = self.n
        i = int(np.flatnonzero(self.r_idx[:n] == rid)[0])
        if i != n - 1:
            for a in (self.r_idx, self.r_t, self.r_rem):
                v = a[i]
                a[i:n - 1] = a[i + 1:n]
                a[n - 1] = v
        self._preempt_newest()

    def _preempt_partial(self) -> int:
        """Give up the newest prefill under way (its KV blocks are freed; it is recomputed later)."""
        rid = next(reversed(self.pdone))
        del self.pdone[rid]
        pb, h = self.pblocks.pop(rid)
        self.partial_blocks -= pb
        if self.pc is not None:
            self.pc.release(self._keys(rid)[:h])
        self.sim.preemptions[rid] += 1
        self.sim.n_preemptions += 1
        self._refresh_used()
        return rid

    def _preempt_newest(self) -> None:
        sim = self.sim
        i = self.n - 1
        rid = int(self.r_idx[i])
        t = int(self.r_t[i])
        rem = int(self.r_rem[i])
        self.n = i
        self.kv.used_blocks -= -(-t // self.B)
        if self.pc is not None:
            keys = self._keys(rid)
            self.pc.release(keys)
            self.sh_units -= len(keys)
            self._refresh_used()
        sim.preemptions[rid] += 1
        sim.n_preemptions += 1
        sim.gen[rid] = sim.out[rid] - rem
        if self.cfg.preemption == "swap":
            self.pending_swap_s += t * self.kv_bytes_tok / self.cfg.swap_bandwidth
            self.swapped.appendleft((rid, t, rem))
        else:
            self.waiting.appendleft(rid)

    def _swap_in(self) -> None:
        kv = self.kv
        while self.swapped and self.n < self.max_seqs:
            rid, t, rem = self.swapped[0]
            need = kv.blocks_for(t + 1)
            if kv.free_blocks - need < kv.watermark_blocks and self.n > 0:
                break
            self.swapped.popleft()
            kv.used_blocks += kv.blocks_for(t)
            self.pending_swap_s += t * self.kv_bytes_tok / self.cfg.swap_bandwidth
            i = self.n
            self.r_idx[i] = rid
            self.r_t[i] = t
            self.r_rem[i] = rem
            self.n = i + 1
            if self.pc is not None:  # recount only once the sequence is running, or its blocks look free
                keys = self._keys(rid)
                self.pc.acquire(keys)
                self.sh_units += len(keys)
                self._refresh_used()  # shared units count once: the next candidate sees the true free space
        if self.pc is not None or self.partial_blocks:
            self._refresh_used()


class Simulation:
    """Serve ``requests`` (arrival order) on ``replicas`` identical replicas behind ``router``.

    ``cost`` is a StepCostModel (or one per replica); ``num_blocks`` the KV blocks per replica;
    ``batching`` a factory returning a fresh batching policy per replica.
    """

    changes: Any = None  # periodic cost changes (``changes=``); class defaults for subclasses
    cost_changes: Any = ()

    def __init__(self, requests: Any, *, cost, num_blocks: int, batching: Callable[[], Any], router,
                 replicas: int = 1, config: SimConfig = SimConfig(), seed: int = 0, changes: Any = None):
        self.config = config
        self.changes = changes  # periodic cost changes, e.g. simllm.sim.replacement.PeriodicReplacement
        self.cost_changes: list = []  # (row index, replica, cost from that row on)
        if config.preemption not in ("recompute", "swap"):
            raise ValueError(f"preemption must be recompute or swap, got {config.preemption!r}")
        self.sessions = None
        if hasattr(requests, "sessions") and hasattr(requests, "think_time"):  # a closed-loop SessionWorkload
            self.sessions = requests
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
                          if config.prefix_caching else None)
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
        self.preemptions = np.zeros(N, dtype=np.int64)
        self.replica_of = np.full(N, -1, dtype=np.int64)
        self.rejected: dict[int, str] = {}
        self.finished = 0
        self.n_preemptions = 0
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0
        if config.prefix_caching and (config.prefix_unit_tokens % config.block_size or
                                      config.prefix_unit_tokens < config.block_size):
            raise ValueError(f"prefix caching needs block_size ({config.block_size}) to divide the prefix unit "
                             f"of {config.prefix_unit_tokens} tokens")
        self.env = simpy.Environment()
        self._rows: list = []
        self._record_breakdown = config.record_breakdown
        costs = list(cost) if isinstance(cost, (list, tuple)) else [cost] * replicas
        self.replicas = [Replica(self, i, costs[i], batching(), num_blocks) for i in range(replicas)]
        self._initial_costs = costs
        self.classify = getattr(self.replicas[0].policy, "classify", None)
        if self.classify is not None and self.sessions is None:
            self.priority = np.asarray(self.classify(self.prompt, self.priority), dtype=np.int64)
        self.router = router
        if hasattr(router, "attach"):  # routers that look at the request (session, prefix) get the simulation
            router.attach(self)
        self.num_blocks = num_blocks
        self.env.process(self._session_starts() if self.sessions is not None else self._arrivals())

    def session_key(self, rid: int):
        """The request's session (None when it has none)."""
        if self.sessions is not None:
            return int(self.session_of[rid])
        return self.sids[rid]

    def record_step(self, replica, start, duration, n_steps, batch, prefill_tokens, prefill_seqs, decode_tokens,
                    kv_used, shape: tuple):
        self._rows.append((replica, start, duration, n_steps, batch, prefill_tokens, decode_tokens, kv_used) + shape)
        if self.changes is not None:
            self.replicas[replica].tok_int += prefill_tokens + decode_tokens

    def _steps_columns(self) -> dict:
        """Step rows as columns; the compute/memory/comm breakdown is added here, memoized.

        ``step_cost`` is called once per distinct *rounded* shape (prefill tokens and the mean
        decode context per sequence to multiples of 16, same sequence counts); its compute,
        memory and comm seconds are scaled to the row's exact duration, its FLOPs and bytes taken
        as they are. Durations themselves are exact.
        """
        rows = self._rows
        names = ("replica", "start_s", "duration_s", "n_steps", "batch_size", "prefill_tokens", "decode_tokens",
                 "kv_blocks_used")
        cols = {c: [] for c in STEP_COLUMNS}
        if not rows:
            return cols
        T = list(zip(*rows))
        for i, c in enumerate(names):
            cols[c] = list(T[i])
        nrow = len(rows)
        if not self._record_breakdown:
            for c in ("compute_s", "memory_s", "comm_s", "flops", "bytes"):
                cols[c] = [NAN] * nrow
            return cols
        memo: dict = {}
        comp, mem, comm, fl, by = [], [], [], [], []
        changes = getattr(self, "cost_changes", [])
        costs = [r.cost for r in self.replicas]
        if changes:  # each row priced by the cost model in force when it ran
            costs = list(self._initial_costs)
        ci = 0
        for ri, (rep, _st, dur, k, _b, _pt, _dt, _kv, P, W, m, n, ctx) in enumerate(rows):
            while ci < len(changes) and changes[ci][0] <= ri:
                costs[changes[ci][1]] = changes[ci][2]
                ci += 1
            cost = costs[rep]
            key = (id(cost), P >> 4, m, n, int(ctx / n) >> 4 if n else 0)
            c = memo.get(key)
            if c is None:
                c = memo[key] = cost.step_cost(BatchShape(P, W, m, n, ctx))
            f = (dur / k) / c.total_s * k if c.total_s > 0 else 0.0
            comp.append(c.compute_s * f)
            mem.append(c.memory_s * f)
            comm.append(c.comm_s * f)
            fl.append(c.flops * k)
            by.append(c.bytes * k)
        cols["compute_s"], cols["memory_s"], cols["comm_s"], cols["flops"], cols["bytes"] = comp, mem, comm, fl, by
        return cols

    def _arrivals(self):
        env = self.env
        arr = self.arrival.tolist()
        reps = self.replicas
        route = self.router.route
        plan = getattr(self.router, "plan", None)
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
        turn = self.sessions.sessions[si].turns[ti]
        self.arrival[rid] = t
        self.prompt[rid] = turn.prompt_tokens
        self.out[rid] = turn.output_tokens
        self.session_of[rid] = si
        self.turn_of[rid] = ti
        if self.config.prefix_caching:
            self.pkeys[rid] = tuple(turn.prefix_blocks)
        if self.classify is not None:
            self.priority[rid] = int(self.classify(self.prompt[rid:rid + 1], self.priority[rid:rid + 1])[0])
        reps = self.replicas
        reps[self.router.route(rid, reps)].submit(rid, t)  # a rejected turn ends its session

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
        for rid in rids:
            si = int(self.session_of[rid])
            ti = int(self.turn_of[rid]) + 1
            if ti < len(self.sessions.sessions[si].turns) and rid not in self.rejected:
                a = t + self.sessions.think_time(self.think_rng)
                ev = self.env.timeout(max(a - self.env.now, 0.0))
                ev.callbacks.append(lambda _e, si=si, ti=ti, a=a: self._send_turn(si, ti, a))

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
                         "preemptions", "replica_of", "priority"):
                setattr(self, name, getattr(self, name)[:n])
            self.N = n
        pending = np.isnan(self.completion)
        if self.rejected:
            pending[np.fromiter(self.rejected, dtype=np.int64)] = False
        if pending.any():
            raise RuntimeError(f"simulation ended with {int(pending.sum())} requests neither completed nor rejected")
        reasons = [""] * self.N
        for i, r in self.rejected.items():
            reasons[i] = r
        end = float(np.nanmax(self.completion)) if np.isfinite(self.completion).any() else 0.0
        return SimResult(ids=self.ids, arrival_s=self.arrival, prompt_tokens=self.prompt, output_tokens=self.out,
                         scheduled_s=self.scheduled, first_token_s=self.first_token, completion_s=self.completion,
                         generated_tokens=self.gen, preemptions=self.preemptions, replica=self.replica_of,
                         rejected_reason=reasons, steps=self._steps_columns(), num_replicas=len(self.replicas),
                         kv_num_blocks=self.num_blocks, block_size=self.config.block_size, end_s=end,
                         kv_peak_blocks=[r.kv_peak for r in self.replicas], priority=self.priority,
                         prefix_caching=self.config.prefix_caching, prefix_query_tokens=self.prefix_query_tokens,
                         prefix_hit_tokens=self.prefix_hit_tokens)


STEP_COLUMNS = ("replica", "start_s", "duration_s", "n_steps", "batch_size", "prefill_tokens", "decode_tokens",
                "kv_blocks_used", "compute_s", "memory_s", "comm_s", "flops", "bytes")
