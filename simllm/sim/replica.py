"""One replica of a pool: its waiting queue, running set and the one iteration every batching policy uses.

Each replica runs iteration-level continuous batching. At each decision point its batching
policy (``simllm.policies.batching``) chooses prefill work (new or continued chunks, over cached
prefix tokens), policy preemptions and whether the running set decodes a token; the replica asks
the cost model for the time of exactly that batch, described by aggregates
(``StepCostModel.step_time``), and sleeps for it.

Speed (DESIGN.md): per-request state lives in the simulation's numpy arrays; the running set is a
dict in join order whose entries do not move while it decodes (tokens and tokens left are kept
relative to the replica's count of decode steps ``G``), with a heap of finishing steps and its
aggregates (blocks, context sum, fewest tokens left, block residues) kept incrementally, so a
decode step touches no per-sequence state. A replica yields at most one SimPy event per step and,
with ``jump=True`` (the default), one per *segment*: between two changes of batch membership the
decode steps differ only by growing context, so the replica prices the k steps up to the next
change (first completion, or KV blocks running out) at once (a few steps in plain floats through
the cost model's ``decode_step_times`` where it has one, else one vectorised ``step_time`` call),
sums them in order (the same float additions as stepping), and sleeps until the end. Anything that could change the batch (an arrival, a KV
transfer landing) pokes the replica (:meth:`Replica._poke`): the segment is then cut at the first
step boundary at or after it, which is where a step-by-step replica would have seen it.
Timestamps are therefore identical to stepping one iteration at a time (``jump=False``), which
tests check.

When the router's choice does not depend on replica state (``round_robin`` has ``plan``), each
replica of a colocated pool knows the arrival times of its own future requests: it ends jumps at
the boundary where the next one is seen (no interrupt), and does not even yield to SimPy for a
step or segment that ends before its next arrival (nothing else can affect it). Its logical clock
then runs ahead of ``env.now``; all timestamps come from that clock, never from ``env.now``.

Prefill iterations: ``vllm`` without prefix caching (whole prompts, no decode in the same step)
takes a short path, :meth:`Replica._prefill`; every other policy (``general = True``: orca,
sarathi, static, priority) and any policy under prefix caching runs :meth:`Replica._mixed`:
policy-chosen preemptions, prefill chunks (a request keeps its place in the waiting queue, with
its KV blocks, until its last chunk; ``prefill_attn_work`` counts cached context + chunk) and one
decode token of the running set, priced as one mixed batch. (``_prefill`` is ``_mixed`` for that
special case, with the same timestamps.) Decode-only iterations jump. All KV block accounting is
the :class:`~simllm.sim.kv.KVCache`'s.

Pool roles (``simllm.sim.pools``) differ from this replica (role ``both``) only in hooks:
:meth:`Replica._continue` (what a finished prefill with tokens left does: join the running set,
or hand its KV to a decode pool), :meth:`Replica._on_boundary` (admit transferred KV) and
:meth:`Replica._blocked` (wait for blocks held by transfers). The admission check is one rule,
:meth:`Replica._reject_reason`, by role.

Data-parallel attention ranks (:mod:`simllm.sim.dp_ranks`) are replicas of a pool role with
``standalone = False``, driven in lockstep by their EP replica through the same pieces: ``_mixed``
(whose :meth:`Replica._step_wait` a rank overrides to hand its shape up), :meth:`Replica._make_room`,
:meth:`Replica._fit_steps`, :meth:`Replica._advance` and :meth:`Replica._sleep_jump`.

Per-step records: one row per prefill step and one row per decode *segment* (``n_steps``
iterations, ``duration_s`` their exact sum).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import deque
from typing import Optional

import numpy as np
import simpy

from ..policies.batching import Batch
from .kv import KVCache, PolicyKVView
from .kv_tiers import KVTiers
from .prefix_cache import PrefixCache
from .spec_decode import SpecDecode


# the reductions of ndarray.sum / .min without their Python wrappers (hot path; same results)
_sum = np.add.reduce
_min = np.minimum.reduce
_DECODE = Batch(decode=True)  # read only
_SHORT = 16  # decode segments of at most this many steps are priced in plain floats (Replica._decode_ends)

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
            if rep.tiers is not None:  # units in the tiers below HBM are loaded, not computed
                keys = rep._hit_keys(rid, L)
                h = rep.pc.match(keys)[0]
                return L - (h + rep.tiers.match(keys, h)) * rep.unit_tokens
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


class Replica:
    """A replica of role ``both``: prefills and decodes its own requests (a colocated deployment)."""

    role = "both"
    layer_wise = False  # a prefill replica that streams KV layer by layer announces its finishing prefills
    #: tests set this: every incremental block count is checked against a full recount
    check_blocks = False
    standalone = True  # runs its own iteration (False: a data-parallel rank, simllm.sim.dp_ranks)

    def __init__(self, sim, index: int, pool, cost, policy):
        self.sim = sim
        self.env = sim.env
        self.index = index
        self.pool = pool
        self.label = "" if pool.role == "both" else f"{pool.name} "  # in rejection messages
        self.cost = cost
        self.policy = policy
        cfg = pool.config if pool.config is not None else sim.config
        self.cfg = cfg
        self.unit_tokens = int(cfg.prefix_unit_tokens)
        self.pc = PrefixCache(self.unit_tokens // cfg.block_size) if cfg.prefix_caching else None
        self.kv = KVCache(num_blocks=pool.num_blocks, block_size=cfg.block_size, watermark=cfg.watermark,
                          prefix=self.pc)
        self.kv_view = PolicyKVView(self.kv, lambda rid: len(self._keys(rid))) if self.pc is not None else self.kv
        levels = getattr(cfg, "kv_tiers", ())  # KV-cache tiers below HBM (simllm.sim.kv_tiers)
        if levels and self.pc is None:
            raise ValueError("KV-cache tiers hold cached prefix units: they need prefix caching")
        self.tiers = KVTiers(levels, unit_tokens=self.unit_tokens, devices=pool.devices,
                             kv_bytes_per_token_per_device=float(cost.kv_bytes_per_token_per_device)) \
            if levels else None
        if self.tiers is not None:
            self.pc.lower = self.tiers
        self.B = cfg.block_size
        self.waiting = _Waiting(sim.prompt, sim.gen)
        self.swapped: deque = deque()  # (rid, kv_tokens, remaining)
        cap = int(policy.max_num_seqs)
        self.max_seqs = cap
        # the running set: every running sequence decodes one token per step, so with G the steps decoded so
        # far a sequence is stored as run[rid] = (t - G, G + rem, j): its KV tokens t and tokens left rem move
        # with G alone, j orders the set (joins; the newest last). A heap of (G + rem, j, rid) gives the next to
        # finish (entries of sequences gone are skipped). Aggregates kept with it (checked under check_blocks):
        # n sequences, rb = sum ceil(t / B) blocks, tsum = sum t, mrem = min rem (-1: to recompute), and
        # hist[c] = sequences with (t - G) % B == c (a sequence starts a block at the step that finds
        # t % B == 0, see _growth).
        self.run: dict = {}
        self._heap: list = []
        self._jn = 0
        self.n = 0
        self.rb = 0
        self.tsum = 0
        self.mrem = -1
        self.tmx = None  # max of t - G over the running set (None: to recompute, _tmax)
        self.G = 0
        self.hist = [0] * cfg.block_size
        self.assigned = 0
        self.done = 0
        self.clock = 0.0  # exact logical time of the last step boundary
        self.idle_ev: Optional[simpy.Event] = None
        self.interruptible = False
        self.pending_swap_s = 0.0
        self.kv_peak = 0
        self.kv_bytes_tok = float(cost.kv_bytes_per_token_per_device)
        self.ctx_max_ok = bool(getattr(cost, "takes_ctx_max", False))  # price the longest context too
        self.max_prompt = policy.max_prompt_tokens()
        self._arange = np.arange(4096, dtype=np.float64)
        self._pmemo: dict = {}
        self._dcost = None  # the cost model _dsteps belongs to
        self._dsteps = None
        self._admissible = None  # see submit
        self.future: Optional[list] = None  # arrival times of requests routed here (when the router plans)
        self.fptr = 0
        # chunked prefill, policy-driven preemption, prefix caching (the general step, _mixed)
        self.pdone: dict = {}  # rid -> tokens in KV of a prefill under way (still in the waiting queue)
        self.pblocks: dict = {}  # rid -> (private blocks held, prefix units acquired at admission)
        self.seg = None  # (step ends, sequences) of the decode jump under way
        self.general = bool(getattr(policy, "general", False)) or self.pc is not None
        self.fcfs = bool(getattr(policy, "fcfs", True))
        self.waiting.rep = self
        # periodic cost changes (simllm.sim.replacement): change points end jumps like known arrivals
        self.chg = pool.changes
        self.next_chg = self.chg.boundary(1) if self.chg is not None else math.inf
        self.tok_int = 0  # tokens served since the last change point
        self.idle_from = None
        # speculative decoding (simllm.sim.spec_decode): None without it
        # (a prefill replica never decodes: its step cost prices the MTP module's pass, no tokens to plan)
        spec = getattr(cfg, "speculative", None) if getattr(self, "role", "both") != "prefill" else None
        self.spec = SpecDecode(spec, getattr(sim, "seed", 0), cfg.block_size) if spec is not None else None
        if self.spec is not None and bool(getattr(policy, "general", False)):
            raise ValueError(f"speculative decoding needs decode-only iterations (batching vllm-v0); {policy!r} "
                             f"mixes decode tokens into prefill steps")
        self.grow_max = self.spec.grow_max if self.spec is not None else 1
        self.seg_cum = None  # tokens emitted per step of a speculative jump under way
        # client timeouts (simllm.sim.records.SimConfig.request_timeout_s): requests in arrival order, and the
        # earliest deadline among them; the replica aborts what is unfinished at it (:meth:`_abort_due`)
        to = getattr(cfg, "request_timeout_s", None)
        # the client gives up `to` after sending; the engine's tokens reach it api_overhead_s later
        self.timeout = float(to) - float(getattr(cfg, "api_overhead_s", 0.0)) if to is not None else None
        self.dl: deque = deque()
        self.next_dl = math.inf
        self.proc = self.env.process(self._run()) if self.standalone else None

    # -- the policy's view of the running set ----------------------------------------------
    @property
    def n_prefilling(self) -> int:
        return len(self.pdone)

    def running(self) -> list:
        G = self.G
        return [(rid, e[0] + G) for rid, e in self.run.items()]

    def reserved_blocks(self, ratio: float) -> int:
        """KV blocks the running sequences would still take if each generated ``ratio`` of its remaining
        output tokens (SGLang's admission reserve, :class:`~simllm.policies.batching.SGLangBatching`).
        Free blocks less this reserve never grow while the batch decodes: each step adds a token and
        removes one from the remainder, so ``tokens + ratio x remaining`` rises by ``1 - ratio`` and the
        blocks it needs in all (held + reserved) can only rise."""
        if self.n == 0 or ratio <= 0.0:
            return 0
        _rids, t, rem = self._arrays()
        bs = int(self.kv.block_size)
        fut = np.ceil((t + ratio * np.maximum(rem, 0)) / bs - 1e-9).astype(np.int64)
        return int(np.maximum(fut - (-(-t // bs)), 0).sum())

    def _arrays(self):
        """(request ids, KV tokens, tokens left) of the running sequences, oldest first, as arrays."""
        n = self.n
        run = self.run
        G = self.G
        rids = np.fromiter(run, dtype=np.int64, count=n)
        t = np.fromiter((e[0] for e in run.values()), dtype=np.int64, count=n) + G
        rem = np.fromiter((e[1] for e in run.values()), dtype=np.int64, count=n) - G
        return rids, t, rem

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
        g = j if self.seg_cum is None else self.seg_cum[j - 1]
        if self.seg_cum is None:
            return self.kv.evict_over(self.rb + self._growth(j) + self.kv.held)
        t = self._arrays()[1]
        return self.kv.evict_over(int(_sum((t + g + (B - 1)) // B)) + self.kv.held)

    @property
    def kv_free_fraction(self) -> float:
        kv = self.kv
        used = self._sync()
        return (kv.num_blocks - used + kv.evictable_blocks) / kv.num_blocks

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
        ok = self._admissible
        if ok is None and self.role == "both" and sim.sessions is None and type(self)._reject_reason is \
                Replica._reject_reason:
            ok = self._admissible = self._admissible_mask()
        reason = "" if ok is not None and ok[rid] else self._reject_reason(rid)
        sim.replica_of[rid] = self.index
        if reason:
            sim.rejected[rid] = reason
            sim.finished += 1
            return
        self.assigned += 1
        self.waiting.append(rid)
        if self.timeout is not None:
            self._track_deadline(rid)
        self._poke(t, cut=not foreseen and not self.swapped
                   and (not self.fcfs or (len(self.waiting) == 1 and self.n < self.max_seqs)))

    def _poke(self, t: float, cut: bool = True) -> None:
        """Something that may change the batch happened at ``t``: wake the idle replica, or (``cut``) end
        its decode jump at the first step boundary at or after ``t``."""
        if self.idle_ev is not None:
            ev, self.idle_ev = self.idle_ev, None
            self.clock = t if t > self.clock else self.clock
            ev.succeed()
        elif cut and self.interruptible:
            self.interruptible = False
            self.proc.interrupt(t)

    def _admissible_mask(self) -> list:
        """Per request of the simulation: True where :meth:`_reject_reason` (role ``both``) finds nothing, the same
        tests over the arrays at once (the messages come from the method, for the others)."""
        sim = self.sim
        mp = self.max_prompt
        key = (self.B, self.kv.capacity - self.kv.watermark_blocks, mp, self.cfg.preemption, self.cfg.max_model_len)
        ok = sim.admissible.get(key)  # identical replicas share one
        if ok is None:
            p = sim.prompt
            po = p + sim.out
            bad = -(-po // self.B) > key[1]
            if mp is not None:
                bad |= p > mp
                if self.cfg.preemption == "recompute":
                    bad |= po - 1 > mp
            if self.cfg.max_model_len is not None:
                bad |= po > self.cfg.max_model_len
            ok = sim.admissible[key] = (~bad).tolist()
        return ok

    def _reject_reason(self, rid: int) -> str:
        """Why ``rid`` can never be served here ("" if it can); one rule for every role: a replica that
        prefills checks the prompt, one that decodes the whole sequence, a prefill replica also asks the
        decode pool (``Simulation.decode_reject_reason``)."""
        sim = self.sim
        p = int(sim.prompt[rid])
        o = int(sim.out[rid])
        role = self.role
        mp = self.max_prompt
        pl = f"{self.label}pool's " if self.label else ""
        if mp is not None and p > mp and role != "decode":
            return f"prompt of {p} tokens exceeds the {pl}batching token budget of {mp}"
        if mp is not None and p + o - 1 > mp and self.cfg.preemption == "recompute" and role != "prefill":
            # a preempted request is recomputed in one prefill of up to prompt + output - 1 tokens;
            # vLLM refuses max_num_batched_tokens < max_model_len without chunked prefill for this reason
            return (f"prompt + output of {p + o} tokens exceeds the {pl}batching token budget of {mp} "
                    f"(a preempted request is recomputed in one prefill)")
        if self.cfg.max_model_len is not None and p + o > self.cfg.max_model_len and role != "decode":
            return f"prompt + output of {p + o} tokens exceeds max_model_len {self.cfg.max_model_len}"
        kv = self.kv
        need = kv.blocks_for(p if role == "prefill" else p + o)
        if need > kv.capacity - kv.watermark_blocks:
            return f"needs {need} KV blocks, the {self.label}replica holds {kv.capacity}"
        if role == "prefill" and o > 1:
            return sim.decode_reject_reason(rid)
        return ""

    # -- hooks of the pool roles (simllm.sim.pools) ------------------------------------------
    def _on_boundary(self) -> None:
        """Called at every decision point (a step boundary or a wake-up), before the policy decides
        (a decode replica starts KV transfers and lets transferred requests join here)."""

    def _blocked(self) -> bool:
        """The policy scheduled nothing: True if that is because blocks are held for transfers out
        (the replica then waits for a release), False if it is a policy bug."""
        return False

    def _continue(self, rid: int, L: int, rem: int, end: float) -> None:
        """``rid``'s prefill of ``L`` context tokens ended at ``end`` with ``rem`` tokens left to generate:
        it joins the running set (its blocks stay counted)."""
        self._join(rid, L, rem)

    def _join(self, rid: int, t: int, rem: int) -> None:
        """Append ``rid`` (``t`` tokens in KV, ``rem`` to generate) to the running set, its blocks to ``rb``."""
        i = self.n
        G = self.G
        j = self._jn
        self._jn = j + 1
        F = G + rem
        self.run[rid] = (t - G, F, j)
        heapq.heappush(self._heap, (F, j, rid))
        self.n = i + 1
        self.rb += -(-t // self.B)
        self.tsum += t
        self.hist[(t - G) % self.B] += 1
        x = self.tmx
        if i == 0:
            self.tmx = t - G
        elif x is not None and t - G > x:
            self.tmx = t - G
        if self.mrem > rem or i == 0:
            self.mrem = rem

    def _leave(self, rid: int) -> tuple:
        """Take ``rid`` out of the running set (not finished: preempted or aborted); its (t, rem). Its blocks
        leave ``rb``; the caller frees them in the KV cache."""
        tt, F, _j = self.run.pop(rid)
        G = self.G
        t = tt + G
        rem = F - G
        self.n -= 1
        self.rb -= -(-t // self.B)
        self.tsum -= t
        self.hist[tt % self.B] -= 1
        if rem <= self.mrem:
            self.mrem = -1
        if tt == self.tmx:
            self.tmx = None
        return t, rem
    def _run(self):
        env = self.env
        sim = self.sim
        policy = self.policy
        kv = self.kv
        jump = self.cfg.jump
        # the policies of simllm.policies.batching choose a decode-only batch when nothing waits (a test checks)
        plain = type(policy).__module__ == Batch.__module__
        while True:
            self._on_boundary()
            if self.clock >= self.next_chg:
                yield from self._change()
            if self.clock >= self.next_dl:
                self._abort_due()
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
            elif plain and not self.waiting:  # a shipped policy decodes the running set (n > 0 here), nothing else
                batch = _DECODE
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
            if not batch.decode or self.n == 0:  # nothing schedulable
                if self._blocked():  # every admissible request waits for blocks held by transfers
                    self.idle_ev = env.event()
                    self.idle_from = self.clock
                    yield self.idle_ev
                    continue
                raise RuntimeError(f"replica {self.index}: policy {policy!r} scheduled nothing "
                                   f"with {len(self.waiting)} waiting and {self.n} running")
            # -- decode segment -----------------------------------------------------------
            preempted = self._make_room() if kv.growable_blocks - kv.used_blocks < self.n * self.grow_max else False
            n = self.n
            # after a preemption the victim waits at the queue's head: re-decide after one step
            mrem = self._min_rem()
            # a swapped-out sequence waits for blocks: with prefix caching, a step's growth may evict a cached
            # unit of several blocks and make room for it mid-segment, which stepping sees at the next
            # boundary; step one at a time until it is back (a hypothesis example: static batching, swap)
            held_out = bool(self.swapped) and self.pc is not None
            kmax = mrem if jump and not preempted and not swap_drained and not held_out else 1
            T0 = self.tsum
            k = 1
            if self.spec is not None:  # speculative: tokens per step drawn per sequence (spec_decode)
                k, ctx, cum = self._spec_plan(n, kmax)
            elif kmax > 1:
                k = self._fit_steps(kmax)
            # the longest context of the first step, when the cost model prices it (every sequence grows by one
            # token per step)
            cm = self._tmax() + 1 if self.ctx_max_ok and self.spec is None else None
            ends = self._decode_ends(n, T0, k, now, cm) if self.spec is None and k <= _SHORT else None
            if ends is None:
                if self.spec is None:
                    if k > len(self._arange):
                        self._arange = np.arange(2 * k, dtype=np.float64)
                    ctx = self._arange[:k] * n
                    ctx += T0 + n
                if cm is not None:
                    d = self.cost.step_time(0, 0.0, 0, n, ctx, self._arange[:k] + float(cm))
                else:
                    d = self.cost.step_time(0, 0.0, 0, n, ctx)
                if k == 1:  # the same float additions as the cumsum below
                    ends = [now + (float(d[0]) + self.pending_swap_s)]
                else:
                    buf = np.empty(k + 1)
                    buf[0] = now
                    buf[1:] = d
                    if self.pending_swap_s:
                        buf[1] += self.pending_swap_s
                    ends = buf.cumsum()[1:]
                self.pending_swap_s = 0.0
            end = float(ends[-1])
            if k > 1:
                fut = self.future
                if fut is not None and self.fptr < len(fut) and fut[self.fptr] < end and (
                        not self.fcfs or (not self.waiting and n < self.max_seqs and not self.swapped)):
                    # end the jump at the step boundary where the next arrival routed here is seen
                    k = bisect_left(ends, fut[self.fptr]) + 1
                    end = float(ends[k - 1])
                if k > 1 and self.next_chg < end:  # end the jump at the first step boundary at or after the change
                    k = bisect_left(ends, self.next_chg) + 1
                    end = float(ends[k - 1])
                if k > 1 and self.next_dl < end and self._deadline_before(end):  # an abort at the next boundary
                    k = bisect_left(ends, self.next_dl) + 1
                    end = float(ends[k - 1])
            if self.future is not None and not (self.fptr < len(self.future) and self.future[self.fptr] <= end):
                pass  # planned routing and no arrival here before `end`: nothing can change, no event needed
            elif k > 1:
                self.seg = (ends, n)  # routers looking at KV state mid-jump see the steps done by then
                if self.spec is not None:
                    self.seg_cum = cum
                k, end = yield from self._sleep_jump(ends, k, end)
                self.seg = None
                self.seg_cum = None
            else:
                yield env.timeout(max(end - env.now, 0.0))
            self.clock = end
            # apply k steps
            if self.spec is not None:
                self._spec_apply(n, k, cum, ctx, now, end)
                continue
            used = self._advance(n, k, mrem, end)
            sim.record_step(self.index, now, end - now, k, n, 0, 0, n * k, used,
                            (0, 0.0, 0, n, T0 + n * (k + 1) / 2.0))

    def _decode_ends(self, n: int, T0: int, k: int, now: float, cm: Optional[int] = None) -> Optional[list]:
        """End times of ``k`` decode steps of the ``n`` running sequences (``T0`` tokens in KV) from ``now``, in plain
        floats when the cost model prices a few steps that way (``decode_step_times``), else None. The same
        numbers as the array form: contexts ``T0 + n (j + 1)``, the pending swap-in time added to the first step,
        the ends summed in order as ``cumsum`` does; ``cm``: the longest context of the first step (``cm + j`` at
        step ``j``) where the cost model prices it."""
        cost = self.cost
        if cost is not self._dcost:
            self._dcost = cost
            f = getattr(type(cost), "decode_step_times", None)  # the class's own: not a wrapper's delegation
            self._dsteps = f.__get__(cost) if f is not None else None
        if self._dsteps is None:
            return None
        c = T0 + n
        ctxs = [float(c + j * n) for j in range(k)]
        ds = self._dsteps(n, ctxs) if cm is None else self._dsteps(n, ctxs, [float(cm + j) for j in range(k)])
        if ds is None:
            return None
        e = now + (ds[0] + self.pending_swap_s)
        self.pending_swap_s = 0.0
        ends = [e]
        for d in ds[1:]:
            e += d
            ends.append(e)
        return ends

    def _sleep_jump(self, ends, k: int, end: float):
        """Sleep until ``end``, the last of ``k`` step ends; a poke (:meth:`_poke`) at ``t`` cuts the jump at the
        first step end at or after ``t``. Returns the steps done and their end."""
        env = self.env
        self.interruptible = True
        try:
            yield env.timeout(max(end - env.now, 0.0))
        except simpy.Interrupt as intr:
            j = bisect_left(ends, intr.cause)
            if j < k - 1:
                k = j + 1
                end = float(ends[j])
            yield env.timeout(max(end - env.now, 0.0))
        self.interruptible = False
        return k, end

    def _growth(self, k: int) -> int:
        """Blocks the running sequences add in ``k`` more decode steps (from ``hist``, without the arrays)."""
        B = self.B
        h = self.hist
        q, r = divmod(k, B)
        g = q * self.n
        G = self.G
        for j in range(1, r + 1):
            g += h[(1 - j - G) % B]
        return g

    def _decoded(self, k: int) -> None:
        """Every running sequence decoded ``k`` tokens: the aggregates follow (the arrays are the caller's)."""
        self.G += k
        self.tsum += self.n * k
        self.mrem -= k

    def _min_rem(self) -> int:
        if self.mrem < 0:
            h = self._heap
            run = self.run
            while True:  # entries of sequences no longer running (or running since a later join) are stale
                F, j, rid = h[0]
                e = run.get(rid)
                if e is not None and e[2] == j:
                    break
                heapq.heappop(h)
            self.mrem = F - self.G
        return self.mrem

    def _tmax(self) -> int:
        """KV tokens of the longest running sequence (0 when none)."""
        x = self.tmx
        if x is None:
            x = self.tmx = max((e[0] for e in self.run.values()), default=-self.G)
        return x + self.G

    def _resync(self) -> None:
        """Rebuild the heap and aggregates from ``run`` (after a change that is not one token each)."""
        run = self.run
        G = self.G
        B = self.B
        self.tmx = None
        self._heap = [(e[1], e[2], rid) for rid, e in run.items()]
        heapq.heapify(self._heap)
        self.tsum = sum(e[0] for e in run.values()) + self.n * G
        self.rb = self._blocks_full()
        self.mrem = -1
        h = [0] * B
        for e in run.values():
            h[e[0] % B] += 1
        self.hist = h

    def _blocks_full(self) -> int:
        G = self.G
        B = self.B
        return sum(-(-(e[0] + G) // B) for e in self.run.values())

    def _check_aggregates(self) -> None:
        rids, t, rem = self._arrays()
        B = self.B
        assert self.n == len(self.run)
        assert self.tsum == int(t.sum()), f"replica {self.index}: tsum {self.tsum} != {int(t.sum())}"
        assert self.mrem < 0 or self.mrem == int(rem.min()), f"replica {self.index}: mrem {self.mrem}"
        assert self.tmx is None or self.n == 0 or self.tmx + self.G == int(t.max()), f"replica {self.index}: tmx {self.tmx}"
        assert self.hist == np.bincount((t - self.G) % B, minlength=B).tolist(), f"replica {self.index}: hist"
        live = {(e[1], e[2], rid) for rid, e in self.run.items()}
        assert live <= set(self._heap), f"replica {self.index}: heap misses running sequences"

    def _make_room(self) -> bool:
        """Make room for one more token per running sequence, preempting the newest; True if it preempted."""
        kv = self.kv
        B = self.B
        preempted = False
        while True:
            if self.spec is None:
                grow = self.hist[-self.G % B]
            else:
                _rids, t, rem = self._arrays()
                grow = self.spec.grow(t, rem)
            if kv.used_blocks + grow <= kv.growable_blocks or (self.n == 1 and not self.pdone):
                return preempted
            if self.n == 1:
                self._preempt_partial()
            else:
                self._preempt_newest()
            preempted = True

    def _advance(self, n: int, k: int, mrem: int, end: float) -> int:
        """The first ``n`` running sequences decoded ``k`` tokens by ``end`` (``mrem``: the fewest tokens any
        had left): grow them, retire the finished; returns the used blocks before retiring."""
        if self.check_blocks:
            assert n == self.n
        grow = self._growth(k)
        self._decoded(k)
        self._refresh_used(self.rb + grow)
        used = self.kv.used_blocks
        if k == mrem:  # someone finished
            self._finish(n, end)
        return used

    def _spec_plan(self, n: int, kmax: int):
        """A speculative decode segment of up to ``kmax`` steps (``simllm.sim.spec_decode``)."""
        kv = self.kv
        rids, t, rem = self._arrays()
        return self.spec.plan(rids, self.sim.out[rids] - rem, t, rem, kmax, kv.growable_blocks - kv.held)

    def _spec_apply(self, n: int, k: int, cum, ctx, now: float, end: float) -> None:
        """Apply the first ``k`` steps of a speculative segment: each sequence keeps the tokens it emitted."""
        emitted, used, done = self._spec_keep(k, cum)
        self.sim.record_step(self.index, now, end - now, k, n, 0, 0, emitted, used,
                             (0, 0.0, 0, n, float(ctx[:k].mean())))
        if done:
            self._finish(n, end)

    def _spec_keep(self, k: int, cum, own_steps: bool = True) -> tuple[int, int, bool]:
        """The running sequences keep the tokens the first ``k`` steps of a speculative plan emitted (``cum``):
        (tokens emitted, used blocks, whether one finished: the caller retires them with :meth:`_finish`);
        ``own_steps``: whether these steps count as this replica's verification steps (SpecDecode.count)."""
        e = cum[k - 1]
        run = self.run
        for (rid, (tt, F, j)), x in zip(list(run.items()), e.tolist()):
            run[rid] = (tt + x, F - x, j)
        self.spec.count(k, cum, own_steps)
        self._resync()
        self._refresh_used()
        rem = self._arrays()[2]
        return int(e.sum()), self.kv.used_blocks, int(rem.min()) == 0
    # -- client timeouts: the server aborts a request whose client gave up ----------------------
    def _track_deadline(self, rid: int) -> None:
        """``rid`` arrived: its deadline is ``arrival + timeout`` (arrival order is deadline order)."""
        if not self.dl:
            self.next_dl = float(self.sim.arrival[rid]) + self.timeout
        self.dl.append(rid)

    def _deadline_before(self, end: float) -> bool:
        """Drop finished requests from the head of the deadline queue; True if an unfinished one's
        deadline falls before ``end``."""
        sim = self.sim
        dl = self.dl
        while dl and sim.completion[dl[0]] == sim.completion[dl[0]]:  # completed: no abort due
            dl.popleft()
        self.next_dl = float(sim.arrival[dl[0]]) + self.timeout if dl else math.inf
        return self.next_dl < end

    def _abort_due(self) -> None:
        """Abort every unfinished request whose deadline has passed at this step boundary, as vLLM does
        when the client disconnects: it leaves the waiting queue or the running set (or the swap queue)
        and its KV blocks are freed (a partial prefill's too; shared prefix units stay cached)."""
        sim = self.sim
        now = self.clock
        dl = self.dl
        T = self.timeout
        kv = self.kv
        while dl and float(sim.arrival[dl[0]]) + T <= now:
            rid = dl.popleft()
            if sim.completion[rid] == sim.completion[rid]:
                continue
            if rid in self.pdone:  # a prefill under way: give up its blocks
                del self.pdone[rid]
                pb, h = self.pblocks.pop(rid)
                kv.partial -= pb
                if self.pc is not None:
                    self.pc.release(self._keys(rid)[:h])
            if rid in self.run:
                t, _rem = self._leave(rid)
                kv.used_blocks -= -(-t // self.B)
                if self.pc is not None:
                    kv.unshare(self._keys(rid))
            else:
                try:
                    self.waiting.remove(rid)
                except ValueError:
                    self.swapped = deque(x for x in self.swapped if x[0] != rid)
            sim.aborted_s[rid] = now
            sim.finished += 1
            self.done += 1
            if sim.paced is not None:
                sim.on_failed(rid, now)
        self._refresh_used()
        self._deadline_before(math.inf)

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
            self.ctx_max_ok = bool(getattr(cost, "takes_ctx_max", False))
            self._pmemo.clear()
            self.sim.cost_changes.append((len(self.sim._rows), self.index, cost))
        self.tok_int = 0
        self.next_chg = chg.boundary(i + 1)
        if pause > 0 and start + pause > self.clock:
            self.clock = start + pause
            yield self.env.timeout(max(self.clock - self.env.now, 0.0))

    def _finish(self, n: int, end: float) -> None:
        """Retire the running sequences that have no token left to generate (``n``: the running set's size
        when the step started; sequences joined since have tokens left)."""
        sim = self.sim
        B = self.B
        G = self.G
        h = self.hist
        heap = self._heap
        run = self.run
        pop = heapq.heappop
        ids = []
        freed = 0
        while heap and heap[0][0] <= G:
            F, j, rid = pop(heap)
            e = run.get(rid)
            if e is None or e[2] != j:  # stale: the sequence left (or left and joined again)
                continue
            del run[rid]
            ids.append(rid)
            t = e[0] + G
            freed += -(-t // B)
            self.tsum -= t
            h[e[0] % B] -= 1
            if e[0] == self.tmx:
                self.tmx = None
        for rid in ids:
            sim.completion[rid] = end
            sim.gen[rid] = sim.out[rid]
        if sim.sessions is not None:
            sim.on_complete(ids, end)
        if self.pc is not None:
            kv = self.kv
            if sim.cache_output:  # the workload names the units its outputs fill (a chat's next round)
                u = self.unit_tokens
                for rid in ids:
                    keys = sim.pkeys[rid]
                    p = int(sim.prompt[rid]) // u
                    ex = keys[p:(int(sim.prompt[rid]) + int(sim.out[rid])) // u]
                    if ex:  # vLLM caches generated full blocks too: they stay, evictable, tail first
                        kv.share(ex)
                        kv.unshare(tuple(keys[:p]) + tuple(ex))
                    else:
                        kv.unshare(keys[:p])
            else:
                for rid in ids:
                    kv.unshare(self._keys(rid))
        nd = len(ids)
        self.done += nd
        sim.finished += nd
        self.n -= nd
        self.mrem = -1
        self._refresh_used(self.rb - freed)

    def _refresh_used(self, running_blocks: Optional[int] = None) -> None:
        """Recount used blocks: the running sequences' plus what the KV cache holds besides (partial
        prefills, outgoing transfers, cached prefixes; LRU eviction beyond capacity).

        ``running_blocks``: the running sequences' blocks when the caller knows them (kept up to date
        incrementally: ``rb`` after a full recount, plus what joined or grew since); None recounts them
        from the token counts."""
        if running_blocks is None:
            running_blocks = self.rb
        if self.check_blocks:
            full = self._blocks_full()
            assert running_blocks == full, f"replica {self.index}: incremental {running_blocks} != {full} blocks"
            self._check_aggregates()
        self.rb = running_blocks
        used = self.kv.recount(running_blocks)
        if used > self.kv_peak:
            self.kv_peak = used

    def _fit_steps(self, kmax: int) -> int:
        """Largest k <= kmax such that k more tokens per running sequence fit in the KV cache."""
        kv = self.kv
        B = self.B
        n = self.n
        cap = kv.growable_blocks
        if kv.used_blocks + n * (-(-kmax // B)) <= cap:
            return kmax
        cap -= kv.held
        lo, hi = 1, kmax  # f(lo) fits (ensured by preemption)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.rb + self._growth(mid) <= cap:
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
        d = self._priced(P, W, m, 0, 0.0)
        end = now + d
        if self.layer_wise:
            self._finishing = list(zip(ids, lens))
            self._announce(end)
        waiting = self.waiting
        for _ in range(m):
            waiting.popleft()
        blocks = 0
        B = self.B
        sched = sim.scheduled
        for rid, L in zip(ids, lens):
            blocks += -(-L // B)
            if sched[rid] != sched[rid]:  # NaN: first time scheduled
                sched[rid] = now
        kv.used_blocks += blocks
        used_peak = kv.used_blocks
        if used_peak > self.kv_peak:
            self.kv_peak = used_peak
        fut = self.future
        if fut is None or (self.fptr < len(fut) and fut[self.fptr] <= end):
            yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        sim.record_step(self.index, now, d, 1, m, P, m, 0, used_peak, (P, W, m, 0, 0.0))
        for rid, L in zip(ids, lens):
            if not self._prefilled(rid, L, end, d):
                kv.used_blocks -= -(-L // B)

    def _prefilled(self, rid: int, L: int, end: float, d: float) -> bool:
        """``rid``'s prefill of ``L`` context tokens ended at ``end`` (an iteration of ``d`` s) and emitted a
        token: record it, then either complete the request (False) or append it to the running set to decode (True)."""
        sim = self.sim
        g = int(sim.gen[rid]) + 1
        sim.gen[rid] = g
        if sim.first_token[rid] != sim.first_token[rid]:
            sim.first_token[rid] = end
            if sim.async_lag is not None:  # async scheduling: the client gets every token one iteration later
                sim.async_lag[rid] = d
        rem = int(sim.out[rid]) - g
        if rem <= 0:
            sim.completion[rid] = end
            if sim.sessions is not None:
                sim.on_complete([rid], end)
            self.done += 1
            sim.finished += 1
            return False
        self._continue(rid, L, rem, end)
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
        grow = 0  # running sequences that start a new block with this step's token
        if batch.decode and self.n:  # room for one more token per running sequence
            while True:
                grow = self.hist[-self.G % B]
                if kv.used_blocks + grow <= kv.growable_blocks or (self.n == 1 and not self.pdone):
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
                    if self.tiers is not None:  # hits below HBM: loaded before the prefill, over the tier's link
                        h2 = self.tiers.match(keys, h)
                        if h2:
                            self.pending_swap_s += self.tiers.promote(keys[h:h + h2])
                            h += h2
                    pc.acquire(keys[:h])
                    sim.prefix_query_tokens += int(sim.prompt[rid])
                    sim.prefix_hit_tokens += h * T
                    pb = -(-L // B) - h * pc.upb
                else:
                    pb = -(-L // B)
                self.pblocks[rid] = (pb, h)
                kv.partial += pb
                d0 = self.pdone[rid] = h * T
                if sim.scheduled[rid] != sim.scheduled[rid]:  # NaN: first time scheduled
                    sim.scheduled[rid] = now
            P += c
            W += c * (d0 + c / 2.0)
        self._refresh_used(self.rb)  # every change to the running set since the last recount kept rb
        ctx = float(self.tsum + n) if n else 0.0
        if self.layer_wise:
            self._finishing = [(rid, int(sim.prompt[rid] + sim.gen[rid])) for rid, c in zip(ids, lens)
                               if self.pdone[rid] + c >= int(sim.prompt[rid] + sim.gen[rid])]
        d, end = yield from self._step_wait(P, W, m, n, ctx, now)
        if n:
            self._decoded(1)
            self._refresh_used(self.rb + grow)  # rb: recounted before the step, same running set
        used_rec = kv.used_blocks
        self._record(now, d, 1, m + n, P, m, n, used_rec, (P, W, m, n, ctx))
        if n and self._min_rem() == 0:
            self._finish(n, end)
        for rid, c in zip(ids, lens):
            d1 = self.pdone[rid] + c
            L = int(sim.prompt[rid] + sim.gen[rid])
            if d1 < L:
                self.pdone[rid] = d1
                continue
            del self.pdone[rid]
            pb, h = self.pblocks.pop(rid)
            kv.partial -= pb
            self.waiting.remove(rid)
            if pc is not None:
                keys = self._keys(rid)
                pc.acquire(keys[h:])
            kept = self._prefilled(rid, L, end, d)
            if pc is not None:
                if kept:
                    kv.shared_units += len(keys)
                else:
                    pc.release(keys)
        self._refresh_used(self.rb)  # _finish recounted, _continue added the sequences that joined

    def _step_wait(self, P: int, W: float, m: int, n: int, ctx: float, now: float):
        """Price one iteration of that shape and sleep until it ends: (duration, end). (A data-parallel rank
        hands the shape to its replica instead, which prices all ranks' shapes together.)"""
        d = self._priced(P, W, m, n, ctx)
        end = now + d
        if self.layer_wise:
            self._announce(end)
        fut = self.future
        if fut is None or (self.fptr < len(fut) and fut[self.fptr] <= end):
            yield self.env.timeout(max(end - self.env.now, 0.0))
        self.clock = end
        return d, end

    def _announce(self, end: float) -> None:
        """The prefills in ``_finishing`` end with the step that ends at ``end`` (layer-wise KV, pools)."""

    def _priced(self, P: int, W: float, m: int, n: int, ctx: float) -> float:
        """Seconds of one iteration of that shape, plus any swap-in time pending (then cleared); prefill-only
        shapes memoized on their exact key (prompt lengths repeat in real traces)."""
        if n:
            if self.ctx_max_ok:  # the running set before this step's token, as ctx counts it
                d = float(self.cost.step_time(P, W, m, n, ctx, float(self._tmax() + 1)))
            else:
                d = float(self.cost.step_time(P, W, m, n, ctx))
        else:
            key = (P, W, m)
            d = self._pmemo.get(key)
            if d is None:
                d = self._pmemo[key] = float(self.cost.step_time(P, W, m, 0, 0.0))
        if self.pending_swap_s:
            d += self.pending_swap_s
            self.pending_swap_s = 0.0
        return d

    def _record(self, *row) -> None:
        self.sim.record_step(self.index, *row)

    def _preempt_rid(self, rid: int) -> None:
        """Preempt running request ``rid`` (chosen by the policy) as the newest would be."""
        self._preempt(rid)

    def _preempt_partial(self) -> int:
        """Give up the newest prefill under way (its KV blocks are freed; it is recomputed later)."""
        rid = next(reversed(self.pdone))
        del self.pdone[rid]
        pb, h = self.pblocks.pop(rid)
        self.kv.partial -= pb
        if self.pc is not None:
            self.pc.release(self._keys(rid)[:h])
        self.sim.preemptions[rid] += 1
        self.sim.n_preemptions += 1
        self._refresh_used()
        return rid

    def _preempt_newest(self) -> None:
        self._preempt(next(reversed(self.run)))

    def _preempt(self, rid: int) -> None:
        sim = self.sim
        t, rem = self._leave(rid)
        self.kv.used_blocks -= -(-t // self.B)
        if self.pc is not None:
            self.kv.unshare(self._keys(rid))
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
            self._join(rid, t, rem)
            if self.pc is not None:  # recount only once the sequence is running, or its blocks look free
                kv.share(self._keys(rid))
                self._refresh_used()  # shared units count once: the next candidate sees the true free space
        if self.pc is not None or kv.partial:
            self._refresh_used()


