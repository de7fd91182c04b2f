"""Kernel times: one GEMM, one elementwise pass, one attention call -> seconds on a device.

The GEMM model (fitted on Vidur's A100 tables, 36k kernels, see ``simllm calibrate``)::

    t = overhead + (t_c^p + t_m^p)^(1/p)
    t_m = bytes / (HBM_bw * e_m)
    t_c = softmin over tile shapes (tm, tn) of
          waves(tiles) * 2 * tm * tn * (K + k0) / (peak / CUs * e_tile)
    tiles = groups * ceil(M / tm) * ceil(N / tn)
    waves = floor(tiles / CUs) + [a + (1 - a) * fill of the last wave]

Why this shape and nothing more: a GEMM library splits the output into tiles, one per CU at
a time; a CU computing a tile runs at a tile-shape-dependent fraction of its peak (larger
tiles reuse operands more), every tile pays a fixed prologue/epilogue (``k0``), and the work
comes in *waves* of ``CUs`` tiles, so a GEMM whose tile count just exceeds a multiple of the
CU count pays for an almost empty wave (tile and wave quantization: the steps in measured
time vs tokens). The library picks the tile shape that is fastest; real heuristics are not
perfect, hence a soft minimum. Small-M GEMMs are weight-streaming and memory-bound; near the
ridge point compute and memory traffic overlap imperfectly, hence the soft maximum with
exponent ``p`` instead of a hard ``max`` (``p`` is fitted; p -> inf recovers the hard
roofline). Every parameter is a fraction of the device's own peak/bandwidth, a tile shape, a
count of elements or seconds, so it transfers to devices with other peaks and CU counts.
A single constant efficiency ("max(FLOPs/peak e_c, bytes/bw e_m) + o") fits the same data
with median/p90 errors of about 5.8%/16.8%; this model gets about 4.2%/11.8%.
"""

from __future__ import annotations

import numpy as np

from .calibration import AttentionParams, ElementwiseParams, GemmParams
from ..errors import InputError


def gemm_floor(K, gp: GemmParams):
    """Seconds of a GEMM's floor at inner dimension ``K`` (a float for a scalar K, else an array).

    The floor is the launch plus the software pipeline's fill: before its first MMA every CTA
    loads its first stages of K-blocks of both operands (DRAM latency per stage), and a GEMM with
    fewer K-blocks than stages has fewer loads to wait for. So a GEMM with K -> 0 pays
    ``floor_k0`` of ``kernel_overhead_s`` and the floor grows linearly to the whole of it at
    ``floor_k`` elements. Evidence (AIConfigurator GEMM tables, vLLM, bf16): with a K-independent
    floor the A100 rows under 5 us are priced 28% too slow while K = 256-4096 is 5% too fast; fitted
    alone on each GPU the K -> 0 fraction comes out 0.46 (A100), 0.47 (H100), 0.48 (L40S), and
    the groups' median / p90 go 8.3% / 27.4% -> 6.8% / 19.2% (A100), 5.8% / 20.5% -> 4.8% / 13.9%
    (H100)."""
    f0, kf, ko = gp.floor_k0, gp.floor_k, gp.kernel_overhead_s
    if kf <= 0 or f0 >= 1.0:
        return ko if np.ndim(K) == 0 else np.full(np.shape(K), ko)
    if np.ndim(K) == 0:
        return ko * (f0 + (1.0 - f0) * min(1.0, float(K) / kf))
    return ko * (f0 + (1.0 - f0) * np.minimum(1.0, np.asarray(K, dtype=float) / kf))


def gemm_time(M, K, N, *, peak: float, bw: float, cus: int, gp: GemmParams, groups=1.0,
              a_bytes: float = 2.0, w_bytes: float = 2.0, o_bytes: float = 2.0, with_parts: bool = False,
              l2_bytes: float = 0.0, l2_speedup: float = 1.0, l2_copies=1.0, l2_smooth: bool = False,
              sustain: tuple | None = None):
    """Seconds for ``groups`` GEMMs of [M, K] x [K, N] (vectorised over M, K, N, groups).

    ``a_bytes``/``w_bytes``/``o_bytes``: bytes per element of activations, weights, output.
    ``l2_bytes``/``l2_speedup``: a working set that fits in ``l2_bytes`` of on-chip cache streams at
    ``l2_speedup`` x the HBM figure (back-to-back calls of one GEMM keep its operands resident; the
    default 0 / 1 leaves the model unchanged). ``l2_copies``: distinct copies of the weights the caller
    cycles through (a benchmark that rotates weight buffers to defeat the cache): the working set that
    must fit is ``l2_copies`` x weight bytes + activations + output; ``l2_smooth``: the resident share
    falls off as :func:`l2_resident_fraction` of that working set instead of all-or-nothing at
    ``l2_bytes``. ``sustain``: ``(fraction, seconds)`` of :func:`sustained_compute` (a long GEMM runs at
    the power-limited clock; None: the boost clock throughout).
    With ``with_parts`` returns (time, compute_time, memory_time)."""
    M = np.asarray(M, dtype=float)
    K = np.asarray(K, dtype=float)
    N = np.asarray(N, dtype=float)
    g = np.asarray(groups, dtype=float)
    zero = (M <= 0) | (g <= 0)
    Mp = np.maximum(M, 1.0)
    per_cu = peak / cus
    a = gp.partial_wave_cost
    q = gp.tile_softmin_q
    pick = None
    if gp.dispatch:
        if gp.dispatch not in GEMM_DISPATCH or not set(DISPATCH_TILES[gp.dispatch]) <= set(map(tuple, gp.tiles)):
            raise InputError(f"GEMM dispatch {gp.dispatch!r}: expected one of {', '.join(GEMM_DISPATCH)} with "
                             f"its tiles {DISPATCH_TILES.get(gp.dispatch)} among the section's", field="dispatch")
        pick = GEMM_DISPATCH[gp.dispatch](Mp, N)
    acc = 0.0
    for (tm, tn), e in zip(gp.tiles, gp.tile_efficiency):
        tiles = g * np.ceil(Mp / tm) * np.ceil(N / tn)
        w = tiles / cus
        full = np.floor(w)
        rem = w - full
        waves = full + np.where(rem > 0, a + (1 - a) * rem, 0.0)
        tc_us = waves * (2e6 * tm * tn * (K + gp.tile_k_overhead) / (per_cu * e))  # microseconds: no overflow
        if pick is None:
            acc = acc + tc_us ** (-q)
        else:  # the library's own tile for the shape
            acc = acc + np.where((pick[0] == tm) & (pick[1] == tn), tc_us, 0.0)
    tc = (acc ** (-1.0 / q) if pick is None else acc) * 1e-6
    if sustain is not None:
        tc = sustained_compute(tc, *sustain)
    nbytes = g * (Mp * K * a_bytes + K * N * w_bytes + Mp * N * o_bytes)
    tm_ = nbytes / (bw * gp.memory_efficiency)
    if l2_bytes > 0 and l2_speedup != 1.0:
        ws = nbytes if np.all(np.asarray(l2_copies) == 1.0) else \
            g * (Mp * K * a_bytes + np.asarray(l2_copies, dtype=float) * K * N * w_bytes + Mp * N * o_bytes)
        if l2_smooth:
            tm_ = tm_ * l2_time_factor(ws, l2_bytes, l2_speedup)
        else:
            tm_ = np.where(ws <= l2_bytes, tm_ / l2_speedup, tm_)
    p = gp.overlap_exponent
    t = (tc ** p + tm_ ** p) ** (1.0 / p) + gemm_floor(K, gp)
    t = np.where(zero, 0.0, t)
    if with_parts:
        return t, np.where(zero, 0.0, tc), np.where(zero, 0.0, tm_)
    return t


def sustained_compute(tc, fraction: float, throttle_s: float):
    """Compute seconds ``tc`` (priced at the datasheet clock) of a kernel that a benchmark repeats back to
    back, once the device's power limit lowers its clock: ``tc (1 + (1 / fraction - 1) tc / (tc + throttle_s))``.
    A kernel much shorter than ``throttle_s`` runs at the boost clock, a much longer one at ``fraction`` of it
    (the clock the power limit sustains under that load); the collectors time a shape over a fixed number of
    calls, so the longer the call, the longer the load and the deeper into the power-limited clock.

    Evidence (AIConfigurator GEMM tables, rows with M >= 1,024, signed median log(pred / measured) by measured
    duration, before this term): H100 SGLang fp8 +0.04 under 0.3 ms, -0.28 at 3-10 ms, -0.52 at 10-30 ms, -0.69
    at 30-100 ms (the same shape family reaches 957 TFLOP/s at 2.4 ms and 590 at 50 ms); H100 vLLM fp8 -0.17 /
    -0.34 / -0.59; L40S (350 W) SGLang fp8 -0.19 / -0.29 / -0.43, TensorRT-LLM fp8_block -0.12 / -0.33 / -0.44,
    bf16 -0.04 / -0.10 / -0.09; A100 (bf16, 400 W) none (within +-0.07 at every duration). Fp8 (the highest
    power per SM) drops most. Fitted per section (``sustained_fraction``, ``throttle_s``): the collectors differ
    in how long they keep one shape running (H100 TensorRT-LLM fp8 drops only -0.14 at 30-100 ms). Where the
    simplex takes ``throttle_s`` under a millisecond the term is a constant slowdown of every compute-bound GEMM
    (H100 bf16 sections): the datasheet-clock efficiency it leaves is then not a figure to read alone.
    ASSUMPTION: the serving step prices each GEMM with its section's term by the GEMM's own duration, as the
    collector measured it (a busy server's long prefill GEMMs run no faster than the collector's loop; its
    short decode GEMMs, interleaved with memory-bound kernels, keep the boost clock either way)."""
    if fraction >= 1.0 or throttle_s <= 0.0:
        return tc
    return tc * (1.0 + (1.0 / fraction - 1.0) * tc / (tc + throttle_s))


def _tile_rows(M, n, rows):
    """(tile rows, tile columns) of the first of ``rows`` = (largest M, largest n, tm, tn) each (M, n) fits."""
    M, n = np.broadcast_arrays(np.asarray(M, float), np.asarray(n, float))
    conds = [(M <= m_hi) & (n <= n_hi) for m_hi, n_hi, _, _ in rows]
    return (np.select(conds, [float(r[2]) for r in rows], np.nan),
            np.select(conds, [float(r[3]) for r in rows], np.nan))


_INF = float("inf")
#: vLLM csrc/quantization/cutlass_w8a8/c2x/scaled_mm_c2x_sm89_fp8_dispatch.cuh: (M up to, next_pow2(N) up to,
#: tile rows, tile columns), configs M16 / M32 / M64 / M128 / M256 / default in order (M64's "np2 <= 8196" is
#: np2 <= 8192, np2 being a power of two)
_CUTLASS_SM89_FP8 = ((16, 8192, 16, 64), (16, 24576, 16, 128), (16, _INF, 32, 64),
                     (32, 8192, 32, 64), (32, 16384, 32, 128), (32, _INF, 32, 64),
                     (64, 8192, 64, 64), (64, 16384, 64, 128), (64, _INF, 64, 64),
                     (128, 8192, 64, 128), (128, 16384, 128, 128), (128, _INF, 128, 64),
                     (256, 4096, 64, 128), (256, _INF, 128, 128),
                     (_INF, 4096, 128, 128), (_INF, 8192, 256, 128), (_INF, _INF, 128, 128))
#: sgl-kernel csrc/gemm/fp8_gemm_kernel.cu ``sm89_fp8_dispatch_shape``: (M up to, N up to, tile rows, columns)
_SGL_SM89_FP8 = ((1, 8192, 16, 64), (1, _INF, 32, 64),
                 (16, 8192, 16, 64), (16, 16384, 32, 64), (16, _INF, 16, 64),
                 (64, 16384, 32, 64), (64, _INF, 16, 64),
                 (128, 16384, 64, 64), (128, _INF, 32, 64),
                 (256, 8192, 128, 64), (256, 16384, 64, 128), (256, _INF, 128, 64),
                 (_INF, _INF, 128, 128))


def cutlass_sm89_fp8_tiles(M, N):
    """(tile rows, tile columns) vLLM's CUTLASS fp8 ``scaled_mm`` picks on SM89 (Ada: L40S, L4, RTX 6000
    Ada), by the row count's bucket and the next power of two of N (:data:`_CUTLASS_SM89_FP8`). Evidence
    (L40S, vLLM 0.24 fp8, N = 128, K = 4,096): 8.6 us up to M = 15, 12.2 us at 17-32, 15-17 us at 33-64,
    20.7 us at 65-128, 21.7 us at 129-256, then 37.4 us at M = 257 (the 128 x 128 default tile: 3 CTAs each
    running K / 64 steps): the steps of the dispatch, which the best-of-tiles model priced 30-35% fast at
    M = 17-1024 with small N and 10% slow below."""
    return _tile_rows(M, 2.0 ** np.ceil(np.log2(np.maximum(np.asarray(N, float), 1.0))), _CUTLASS_SM89_FP8)


def sgl_sm89_fp8_tiles(M, N):
    """(tile rows, tile columns) SGLang's ``fp8_scaled_mm`` picks on SM89, by M bucket and N (not rounded;
    :data:`_SGL_SM89_FP8`). The same mechanism as :func:`cutlass_sm89_fp8_tiles`, another table."""
    return _tile_rows(M, N, _SGL_SM89_FP8)


#: a library's tile choice by GEMM shape (a section's ``dispatch``): name -> (M, N) -> (tile rows, tile columns)
GEMM_DISPATCH = {"cutlass_sm89_fp8": cutlass_sm89_fp8_tiles, "sgl_sm89_fp8": sgl_sm89_fp8_tiles}
#: the tiles each rule picks from (a section following it must price them all)
DISPATCH_TILES = {k: tuple(dict.fromkeys((r[2], r[3]) for r in rows))
                  for k, rows in (("cutlass_sm89_fp8", _CUTLASS_SM89_FP8), ("sgl_sm89_fp8", _SGL_SM89_FP8))}


def l2_resident_fraction(nbytes, sram):
    """Fraction of a repeated kernel's working set ``nbytes`` that a benchmark loop finds in an L2 of
    ``sram`` bytes (the AIConfigurator collectors replay the same call on the same tensors, so data
    that fits stays resident); ASSUMPTION: a smooth step ``1 / (1 + (nbytes / sram)^4)`` (LRU streaming
    larger than the cache keeps almost nothing). Evidence: L40S (96 MiB L2) one- and two-token MoE
    rows whose touched experts' weights total 20-80 MB run at 1.5-2.3x the 864 GB/s of GDDR6 (median
    over TRT-LLM, vLLM and SGLang), those of 80-160 MB at 0.75-0.86x. Vectorised; 0 where either is 0."""
    if np.ndim(nbytes) == 0 and np.ndim(sram) == 0:
        if sram <= 0 or nbytes <= 0:
            return 0.0
        return 1.0 / (1.0 + (nbytes / sram) ** 4)
    x = np.asarray(nbytes, float)
    s_ = np.asarray(sram, float)
    ok = (x > 0) & (s_ > 0)
    return np.where(ok, 1.0 / (1.0 + (np.where(ok, x, 1.0) / np.where(ok, s_, 1.0)) ** 4), 0.0)


def l2_time_factor(nbytes, sram, speedup: float):
    """Factor on the DRAM time of a repeated kernel's ``nbytes`` working set whose L2-resident share
    (:func:`l2_resident_fraction` of an ``sram``-byte L2) streams ``speedup`` times faster."""
    return 1.0 - l2_resident_fraction(nbytes, sram) * (1.0 - 1.0 / speedup)


def gemm_flops_bytes(M, K, N, groups=1.0, a_bytes=2.0, w_bytes=2.0, o_bytes=2.0):
    M, K, N, g = (np.asarray(v, dtype=float) for v in (M, K, N, groups))
    return 2.0 * g * M * K * N, g * (M * K * a_bytes + K * N * w_bytes + M * N * o_bytes)


def elementwise_time(nbytes, *, bw: float, ep: ElementwiseParams):
    if not isinstance(nbytes, np.ndarray):  # a scalar in plain floats (the step cost's hot path), same arithmetic
        x = float(nbytes)
        return x / (bw * ep.memory_efficiency) + ep.kernel_overhead_s if x > 0 else 0.0
    nbytes = np.asarray(nbytes, dtype=float)
    return np.where(nbytes > 0, nbytes / (bw * ep.memory_efficiency) + ep.kernel_overhead_s, 0.0)


def roofline_time(flops, nbytes, *, peak: float, bw: float, ce: float, me: float, overhead: float):
    """Hard roofline: max(compute, memory) + overhead (attention kernels)."""
    flops = np.asarray(flops, dtype=float)
    nbytes = np.asarray(nbytes, dtype=float)
    t = np.maximum(flops / (peak * ce), nbytes / (bw * me))
    return np.where((flops > 0) | (nbytes > 0), t + overhead, 0.0)


def attention_time(flops, nbytes, *, peak: float, bw: float, ap: AttentionParams):
    return roofline_time(flops, nbytes, peak=peak, bw=bw, ce=ap.compute_efficiency, me=ap.memory_efficiency,
                         overhead=ap.kernel_overhead_s)
