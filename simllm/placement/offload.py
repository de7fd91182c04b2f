"""Expert offloading: experts in host memory, an HBM expert cache per MoE layer (ExpertFlow).

Routes ``[steps, L, B, K]`` of a decode batch of ``B`` sequences (:func:`locality_routes`: each
of a sequence's ``K`` choices at a layer repeats its choice at the previous step with
probability ``locality``, else is drawn by popularity; a generator, not a model's routing).
:func:`simulate_cache` runs a cache of ``cache_experts`` experts per layer over the steps:

* ``lru`` / ``lfu``: a step's layer needs the union of its batch's experts; a miss copies the
  expert over the host link (``expert_bytes / link_bw``) and stalls the layer; the evicted
  expert is the least recently (least frequently) used one not needed now;
* ``prefetch``: a routing-path predictor (ExpertFlow) with ``accuracy``: each needed expert is
  predicted with that probability; predicted misses are copied during the previous layer's
  compute (the stall is what the copy exceeds it by), unpredicted ones stall in full; LRU
  eviction.

A step's batch may run each layer as ``micro_batches`` micro-batches one after another (each needs
the union of its sequences' experts, with the cache evolving between them; a layer's compute is
split evenly over them). ``regroup`` is ExpertFlow's token scheduler: before splitting, the
sequences are ordered by their routes at that layer (their sorted expert ids), so sequences that
choose the same experts share a micro-batch and each micro-batch activates fewer experts; without
it the batch is split in its own order. (Routes here are the realised ones; ExpertFlow groups by
its predictor's routes, an assumption: a perfect predictor for the grouping.)

A miss may instead be computed on the host CPU (``cpu_bw`` > 0: the expert's weights are read
from host memory at ``cpu_bw``, memory-bound as a decode batch is; an assumption): each
unpredicted miss takes the cheaper of the copy and the CPU pass; a miss done on the CPU is not
copied (no bytes, the cache is unchanged).

Summary: hit rate, stall seconds per step, bytes moved per step, HBM saved (experts not
resident), and TPOT = resident step time (from the cost model, passed in) + stall.

Routing locality as Liang et al. (arXiv 2505.16056) measure it (:func:`segment_locality`):
*segment routing best performance* (SRP): over segments of ``segment`` consecutive tokens of a
sequence, the fraction of the segment's expert activations that the best fixed set of ``K``
experts (the segment's ``K`` most used) covers; *segment cache best hit rate* (SCH): the same
with a set of ``cache`` experts, the best hit rate a cache fixed over the segment can reach.
Both are averaged over segments, sequences and layers (our reading of their definitions); for a
batch, SCH pools the batch's activations (one cache serves the batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError

POLICIES = ("lru", "lfu", "prefetch")


def locality_routes(popularity: Any, top_k: int, num_seqs: int, steps: int, locality: float, seed: int = 0
                    ) -> np.ndarray:
    """Routes ``[steps, L, B, K]`` with temporal locality ``locality`` in [0, 1] (see module doc)."""
    p = np.asarray(popularity, dtype=float)
    if p.ndim != 2 or not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InputError("popularity must be finite, non-negative, of shape [L, E]", field="popularity")
    if not 0.0 <= locality <= 1.0:
        raise InputError(f"must be in [0, 1], got {locality}", field="locality")
    L, E = p.shape
    K, B = int(top_k), int(num_seqs)
    rng = np.random.default_rng([int(seed), 0x0FF])
    with np.errstate(divide="ignore"):
        logp = np.log(p / p.sum(axis=1, keepdims=True))
    logp = np.where(np.isfinite(logp), logp, -1e300)
    out = np.empty((int(steps), L, B, K), dtype=np.int64)
    prev = None
    rows = np.repeat(np.arange(L * B), K)
    for t in range(int(steps)):
        sc = (logp[:, None, :] + rng.gumbel(size=(L, B, E))).reshape(L * B, E)
        if prev is not None and locality > 0:
            keep = rng.random(L * B * K) < locality
            sc[rows[keep], prev.reshape(-1)[keep]] = 1e300
        cur = np.argpartition(-sc, K - 1, axis=1)[:, :K] if K < E else np.tile(np.arange(E), (L * B, 1))
        prev = cur
        out[t] = cur.reshape(L, B, K)
    return out


@dataclass
class OffloadResult:
    policy: str
    cache_experts: int  # per layer
    hit_rate: float
    stall_s_per_step: float
    bytes_per_step: float
    hbm_saved_bytes: float
    active_experts: float  # mean distinct experts a layer needs per step (per micro-batch when split)
    tpot_s: float
    micro_batches: int = 1
    regroup: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def segment_locality(routes: np.ndarray, num_experts: int, segment: int, size: int, *,
                     pool_batch: bool = False) -> float:
    """Mean fraction of a segment's activations covered by its ``size`` most used experts
    (routes ``[steps, L, B, K]``; SRP with ``size = K``, SCH with ``size`` = the cache). Per
    sequence, or with ``pool_batch`` over the batch's activations together (what one cache
    serving the batch sees)."""
    r = np.asarray(routes)
    if pool_batch:
        r = r.reshape(r.shape[0], r.shape[1], 1, -1)
    T, L, B, K = r.shape
    E = int(num_experts)
    if not 1 <= segment <= T or not 1 <= size <= E:
        raise InputError(f"segment must be in [1, {T}] steps and size in [1, {E}]", field="segment")
    n = T // segment
    seg = r[: n * segment].reshape(n, segment, L, B, K).transpose(0, 2, 3, 1, 4).reshape(n * L * B, segment * K)
    cnt = np.zeros((seg.shape[0], E))
    np.add.at(cnt, (np.repeat(np.arange(seg.shape[0]), seg.shape[1]), seg.ravel()), 1.0)
    top = -np.sort(-cnt, axis=1)[:, :size].sum(axis=1)
    return float((top / (segment * K)).mean())


def _micro_batches(r: np.ndarray, n: int, regroup: bool) -> list:
    """A layer's routes ``[B, K]`` as ``n`` micro-batches (``regroup``: sequences ordered by their routes)."""
    if n <= 1:
        return [r]
    if regroup:
        key = np.sort(r, axis=1)
        r = r[np.lexsort(key.T[::-1])]
    return [m for m in np.array_split(r, n) if len(m)]


def simulate_cache(routes: np.ndarray, num_experts: int, cache_experts: int, *, policy: str = "lru",
                   accuracy: float = 0.0, expert_bytes: float, link_bw: float, layer_compute_s: float,
                   resident_step_s: float, seed: int = 0, cpu_bw: float = 0.0, micro_batches: int = 1,
                   regroup: bool = False) -> OffloadResult:
    """Run an expert cache of ``cache_experts`` per layer over ``routes`` ``[steps, L, B, K]``."""
    if policy not in POLICIES:
        raise InputError(f"unknown cache policy {policy!r}; known: {', '.join(POLICIES)}", field="policy")
    if not 0.0 <= accuracy <= 1.0:
        raise InputError(f"must be in [0, 1], got {accuracy}", field="accuracy")
    E = int(num_experts)
    if not 1 <= cache_experts <= E:
        raise InputError(f"must be in [1, {E}] experts per layer, got {cache_experts}", field="cache_experts")
    if link_bw <= 0 or expert_bytes <= 0:
        raise InputError("link bandwidth and expert bytes must be positive", field="link")
    if not (np.isfinite(cpu_bw) and cpu_bw >= 0):
        raise InputError(f"must be >= 0 bytes/s, got {cpu_bw}", field="cpu_bw")
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, (int, np.integer)) or not \
            1 <= micro_batches <= routes.shape[2]:
        raise InputError(f"must be an integer in [1, {routes.shape[2]}] (the batch), got {micro_batches!r}",
                         field="micro_batches")
    t_cpu = expert_bytes / cpu_bw if cpu_bw > 0 else np.inf
    cpu_done = 0
    T, L = routes.shape[:2]
    rng = np.random.default_rng([int(seed), 0xCAC])
    t_x = expert_bytes / link_bw
    # warm cache: the most popular experts of the first step's layer
    last = np.full((L, E), -1.0)
    freq = np.zeros((L, E))
    cached = np.zeros((L, E), dtype=bool)
    for l in range(L):
        cached[l, np.arange(cache_experts)] = True
    hits = misses = 0
    stall = 0.0
    active = 0
    t_mb = layer_compute_s / micro_batches  # the compute a prefetch hides behind, per micro-batch
    clock = 0
    for t, l, mb in ((t, l, mb) for t in range(T) for l in range(L)
                     for mb in _micro_batches(routes[t, l], int(micro_batches), regroup)):
        need = np.unique(mb)
        active += need.size
        miss = need[~cached[l, need]]
        hits += need.size - miss.size
        misses += miss.size
        if miss.size:
            pred = rng.random(miss.size) < accuracy if policy == "prefetch" else np.zeros(miss.size, bool)
            stall += max(0.0, pred.sum() * t_x - t_mb) if pred.any() else 0.0
            on_cpu = ~pred & (t_cpu < t_x)  # an unpredicted miss: copy it, or run it on the CPU
            stall += (~pred & ~on_cpu).sum() * t_x
            if on_cpu.any():
                stall += on_cpu.sum() * t_cpu
                cpu_done += int(on_cpu.sum())
                miss = miss[~on_cpu]
            # evict for the misses: not needed now, least recently / frequently used
            score = freq[l] if policy == "lfu" else last[l]
            cand = np.nonzero(cached[l])[0]
            cand = cand[~np.isin(cand, need)]
            n_ev = max(0, int(cached[l].sum()) + miss.size - cache_experts)
            if n_ev:
                ev = cand[np.argsort(score[cand], kind="stable")[:n_ev]]
                cached[l, ev] = False
            cached[l, miss] = True
            over = int(cached[l].sum()) - cache_experts
            if over > 0:  # more experts needed at once than the cache holds: stream the rest
                cached[l, miss[:over]] = False
        clock += 1  # recency in micro-batches (ties within a step broken by order)
        last[l, need] = clock
        freq[l, need] += 1
    n = hits + misses
    return OffloadResult(policy=policy, cache_experts=int(cache_experts), hit_rate=hits / n if n else 1.0,
                         stall_s_per_step=stall / T, bytes_per_step=(misses - cpu_done) * expert_bytes / T,
                         hbm_saved_bytes=(E - cache_experts) * L * expert_bytes,
                         active_experts=active / (T * L * micro_batches), tpot_s=resident_step_s + stall / T,
                         micro_batches=int(micro_batches), regroup=bool(regroup))


def check_cache_fits(cache_experts: int, layers: int, expert_bytes: float, hbm_bytes: float, *,
                     other_bytes: float = 0.0) -> None:
    """Reject a cache (plus ``other_bytes`` resident) that does not fit the device's HBM."""
    need = cache_experts * layers * expert_bytes + other_bytes
    if need > hbm_bytes:
        raise InputError(f"an expert cache of {cache_experts} experts x {layers} layers ({need / 2**30:.1f} GiB"
                         f"{' with the resident weights' if other_bytes else ''}) exceeds the device's {hbm_bytes / 2**30:.1f} GiB of HBM",
                         field="--cache-experts")


def offload_sweep(model, accelerator, link_bw: float, *, cache_sizes, policies=("lru", "lfu", "prefetch"),
                  accuracy: float = 0.9, batch: int = 1, context: int = 1024, steps: int = 64, locality: float = 0.5,
                  alpha: float = 1.0, weight_dtype: str = "bf16", seed: int = 0, cpu_bw: float = 0.0,
                  segment: int = 16, micro_batches: int = 1, regroup: bool = False) -> list[dict]:
    """TPOT, hit rate, stall and HBM saved for each cache size (experts per layer) and policy.

    The resident step time is the cost model's decode step of ``batch`` sequences at ``context``
    tokens with every expert in HBM (:func:`simllm.cost.step.make_step_cost`); a layer's compute,
    which a prefetch can hide behind, is that step over the layers. ``cpu_bw`` > 0 lets a miss run
    on the host CPU (see the module doc); ``micro_batches`` / ``regroup``: a step's batch split into
    micro-batches, its sequences grouped by route first (ExpertFlow's token scheduler). Rows also carry SRP and SCH (:func:`segment_locality`,
    segments of ``segment`` decode steps) of the routes."""
    from ..cost.step import make_step_cost
    from .loads import zipf_popularity

    m = model.moe
    if m is None:
        raise InputError(f"model {model.name} has no MoE layers; nothing to offload", field="--model")
    wb = {"bf16": 2, "fp16": 2, "fp8": 1, "fp4": 0.5}.get(weight_dtype)
    if wb is None:
        raise InputError(f"unknown weight dtype {weight_dtype!r}", field="--weight-dtype")
    expert_bytes = (3 if model.ffn.gated else 2) * model.hidden_size * m.expert_intermediate_size * wb
    L, E = int(model.num_moe_layers), int(m.num_experts)
    cost = make_step_cost(model, accelerator, weight_dtype=weight_dtype)
    resident = float(cost.step_time(0, 0.0, 0, batch, float(batch * context)))
    routes = locality_routes(zipf_popularity(L, E, alpha, seed=seed), m.top_k, batch, steps, locality, seed=seed)
    rows = []
    seg = max(1, min(int(segment), int(steps)))
    srp = segment_locality(routes, E, seg, m.top_k)
    for c in cache_sizes:
        sch = segment_locality(routes, E, seg, int(c), pool_batch=True)
        for pol in policies:
            r = simulate_cache(routes, E, int(c), policy=pol, accuracy=accuracy if pol == "prefetch" else 0.0,
                               expert_bytes=expert_bytes, link_bw=link_bw, layer_compute_s=resident / model.num_layers,
                               resident_step_s=resident, seed=seed, cpu_bw=cpu_bw, micro_batches=micro_batches,
                               regroup=regroup)
            rows.append({"model": model.name, "experts": E, "top_k": m.top_k, "layers": L, "batch": batch,
                         "locality": locality, "accuracy": accuracy if pol == "prefetch" else None,
                         "expert_bytes": expert_bytes, "resident_tpot_s": resident, "link_bw": link_bw,
                         "cpu_bw": cpu_bw, "srp": srp, "sch": sch, "segment_steps": seg, **r.as_dict()})
    return rows
