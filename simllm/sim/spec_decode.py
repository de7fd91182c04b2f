"""Speculative decode steps of one replica: how many tokens each sequence emits, and the KV they need.

The replica (``simllm.sim.replica``) asks :meth:`SpecDecode.plan` for a decode segment: up to
``kmax`` consecutive verification steps of its running set, stopping after the first step in which
a sequence finishes, or before a step whose KV writes would not fit. Each step every sequence
writes the KV of its ``k`` draft tokens and the target's token (``min(k + 1, tokens left)``: a
request never writes KV past its last token), keeps ``1 + accepted`` of them (capped at the tokens
it has left; :class:`~simllm.speculative.AcceptanceSampler` draws ``accepted`` from the run's
seed, the request id and its output position) and frees the rejected rest. The step's cost is the
cost model's (``simllm.cost.spec_step``) for the context ``ctx`` of each step, so the replica
prices a segment with one vectorised call, as without speculation.

Counters for the summary: verification steps (``steps``), sequence-steps, draft tokens proposed and
accepted, tokens emitted; only the steps the replica applies are counted (:meth:`count`).
"""

from __future__ import annotations

import numpy as np

from ..speculative import AcceptanceSampler, SpeculativeSpec, expected_tokens_per_step

MAX_SEGMENT_STEPS = 256
"""Verification steps planned at most per segment (each is a few numpy operations; a segment cut
short by an arrival discards the rest of its plan, so a plan is also kept within twice the steps
the previous segment applied, plus 8: the waste stays within the work that was used)."""


class SpecDecode:
    def __init__(self, spec: SpeculativeSpec, seed: int, block_size: int):
        self.spec = spec
        self.k = int(spec.num_tokens)
        self.w = self.k + 1
        self.B = int(block_size)
        self.grow_max = -(-self.w // self.B)  # new blocks one sequence may need in one step
        self.sampler = AcceptanceSampler(spec.acceptance_vector(), seed)
        self.steps = 0
        self.seq_steps = 0
        self.proposed = 0
        self.accepted = 0
        self.tokens = 0
        self._plan = None
        self._hint = 8  # steps to plan next: twice the last segment's applied steps, plus 8

    def grow(self, t: np.ndarray, rem: np.ndarray) -> int:
        """New KV blocks the running sequences (``t`` tokens stored, ``rem`` left) need for one step."""
        B = self.B
        return int(((t + np.minimum(self.w, rem) + (B - 1)) // B - (t + (B - 1)) // B).sum())

    def plan(self, rids: np.ndarray, pos: np.ndarray, t: np.ndarray, rem: np.ndarray, kmax: int, cap: int):
        """Up to ``kmax`` steps for sequences ``rids`` at output positions ``pos`` with ``t`` KV tokens and
        ``rem`` tokens left, within ``cap`` blocks for the running sequences: (steps, context per step,
        cumulative tokens emitted per step and sequence)."""
        kmax = max(1, min(int(kmax), MAX_SEGMENT_STEPS, self._hint))
        n = len(t)
        t = t.copy()
        rem = rem.copy()
        pos = pos.copy()
        B, w = self.B, self.w
        ctx = np.empty(kmax, dtype=np.float64)
        cum = np.empty((kmax, n), dtype=np.int64)
        acc = np.empty(kmax, dtype=np.int64)
        tot = np.zeros(n, dtype=np.int64)
        s = 0
        while s < kmax:
            if s and int(((t + np.minimum(w, rem) + (B - 1)) // B).sum()) > cap:
                break
            ctx[s] = float(t.sum() + n)
            a = self.sampler.accepted(rids, pos)
            e = np.minimum(a + 1, rem)
            acc[s] = int(a.sum())
            t += e
            rem -= e
            pos += e
            tot += e
            cum[s] = tot
            s += 1
            if int(rem.min()) == 0:
                break
        self._plan = (acc, n)
        return s, ctx[:s], cum[:s]

    def count(self, steps: int, cum: np.ndarray, own_steps: bool = True) -> None:
        """The replica applied the first ``steps`` steps of the last plan (``own_steps`` False: a data-parallel
        rank whose replica step another rank already counted)."""
        acc, n = self._plan
        self._hint = 2 * steps + 8
        if own_steps:
            self.steps += steps
        self.seq_steps += steps * n
        self.proposed += steps * n * self.k
        self.accepted += int(acc[:steps].sum())
        self.tokens += int(cum[steps - 1].sum())


def speculative_summary(decoders: list, spec: SpeculativeSpec) -> dict:
    """The summary block of a run's speculative decoding (every replica's counters together)."""
    steps = sum(d.steps for d in decoders)
    ss = sum(d.seq_steps for d in decoders)
    prop = sum(d.proposed for d in decoders)
    acc = sum(d.accepted for d in decoders)
    tok = sum(d.tokens for d in decoders)
    return {"method": spec.method, "num_tokens": spec.num_tokens,
            "acceptance": spec.acceptance, "verification_steps": steps, "sequence_steps": ss,
            "draft_tokens_proposed": prop, "draft_tokens_accepted": acc,
            "acceptance_rate": acc / prop if prop else None,
            "tokens_per_step": tok / ss if ss else None,
            "expected_tokens_per_step": expected_tokens_per_step(spec.acceptance_vector())}
