"""Kernel-class physics priced over the table contract (GEMM, attention, MLA, MLA BMMs).

Every class is a *soft roofline with a floor*, with every parameter a fraction of the device's own
datasheet figure (peak FLOP/s of the dtype the kernel computes in, HBM bandwidth, SM count) or a
time in seconds, so a calibration fitted on one GPU transfers to another through that GPU's peaks::

    t = launch + body,   body = (t_c^p + t_m^p)^(1/p)

``launch`` (the per-kernel floor) is exposed separately from ``body`` (:func:`launch_and_body`), so
a caller that replays a step as one CUDA graph can drop per-kernel launches.

GEMM (section ``gemm/<dtype>``). The tile/wave model of :mod:`simllm.cost.kernels` (tiles of an
output split into waves over the SMs, tile-shape efficiency, partial-wave cost, soft minimum over
tile shapes), fitted per dtype because each dtype is a different kernel path. Evidence in the
tables (H100, vLLM 0.24): the smallest bf16 GEMMs take 2-4 us, i.e. the floor is a fitted,
per-device ``kernel_overhead_s`` (A100's Vidur-fitted 3.85 us is too high on H100), of which a GEMM
with a short K pays only part: the pipeline-fill share grows with K up to ``floor_k`` elements
(:func:`simllm.cost.kernels.gemm_floor`; the K -> 0 fraction fits 0.46-0.48 on all three GPUs). fp8 per-tensor
(``fp8``, ``fp8_static``) and block-scaled (``fp8_block``) run at the device's *fp8* peak times a
fitted fraction, read 1-byte operands, write a bf16 output (2 bytes) and, for dynamic scaling,
pay an activation-quantization pass: one extra kernel (``quant_overhead_s``) that reads M x K bf16
and writes M x K fp8 (3 bytes per element) at a fitted fraction ``quant_efficiency`` of HBM
bandwidth. Evidence: vLLM's CUTLASS fp8 GEMMs on H100 at fixed M x K cost ~36% more than a
quantization-free roofline at N = 32 and the excess shrinks as N grows: a cost in M x K alone; plus
one latency-bound thread block per token row (``quant_row_s``, :func:`quant_rows`).
On-chip cache: a GEMM whose operands fit in half the device's L2 (``sram``) streams at a fitted
``l2_speedup`` x HBM. Evidence: L40S (96 MB L2, 864 GB/s GDDR6) small-M bf16 GEMMs reach up to
2.5 TB/s of weight traffic, impossible from DRAM; the benchmark repeats one GEMM, so it stays resident. Weight-only ``int8_wo`` /
``int4_wo`` compute at the bf16 peak (the weights are dequantized in registers) and read 1 / 0.5
byte weights; ``sq`` (SmoothQuant W8A8) runs at the int8 peak. ``nvfp4`` / ``fp4`` use the device's
fp4 datasheet peak with the fp8 section's fractions, ``mxfp8`` the fp8 peak with the fp8_block section's,
``awq`` / ``gptq`` (W4A16) the bf16 peak with the int4_wo section's: UNCALIBRATED (no such measurements
exist in ../shared/data). A device without a datasheet peak for the dtype is an InputError, never a silent
bf16 price.

Attention prefill (``context_attention/<attn_dtype>``): FLOPs = 4 hd heads x causal pairs (pairs
per query capped by a sliding ``window_size``, plus the cached prefix ``step``); bytes = Q, O and
the K/V of every key position (KV dtype from ``kv_cache_dtype``); the work is split into
b x heads x ceil(isl / 128) query tiles spread in waves over the SMs (short prompts leave SMs idle,
the measured 8-16 us floors at small shapes); achieved fraction of peak fitted per attn dtype
(fp8 attention at the fp8 peak). Decode (``generation_attention/<attn_dtype>``): one query per
sequence; bytes = the KV cache (isl + step tokens x kv heads x hd x 2 x kv bytes); the kernel runs
b x kv_heads x splits CTAs where ``splits = ceil(kv_len / split_tokens)`` (split-KV): with fewer
CTAs than SMs the achieved bandwidth falls proportionally (short contexts at small batch are
latency-bound, the floors); FLOPs scale with the query/KV head ratio (GQA), which is what makes
high ratios at large batch compute-bound. Above a framework's largest query-head group per KV head
(TensorRT-LLM XQA: 32, :data:`DECODE_GROUP_MAX`) every query head runs as its own KV head, re-reading the shared
K/V from the L2 (:func:`reread_time`). FlashAttention 2 (vLLM on A100 / L40S) splits by its own heuristic and pays
its combine kernel and its grouped-query transposes (:func:`fa2_num_splits`, :func:`fa2_swap_copies`); a decode's
query and output load in bulk where a section says so (``qo_flat``).

Decode kernel families (:func:`decode_family`): TensorRT-LLM's XQA (query-head groups 2-32) and
masked MHA, vLLM's GQA-packed and MHA paths, each with its own section; FlashAttention 2 with a
sliding window runs unpacked (:data:`FA2_SOURCES`). The tables time one kernel back to back, so a
working set within the L2 streams from it (:func:`bench_l2_resident`, fitted ``l2_bpf``), which the
table pricer models and the serving step, whose per-layer KV never stays in L2, does not.

MLA (``context_mla``/``generation_mla``): DeepSeek-style MLA with local heads ``num_heads``.
Prefill runs un-absorbed: per head qk 192 (128 nope + 64 rope), v 128; decode runs absorbed over
the compressed cache (kv_lora 512 + rope 64 per token, one latent shared by all heads):
FLOPs 2 x (576 + 512) per token and head, bytes 576 x kv bytes per token. Same roofline + waves.
MLA BMMs (``mla_bmm``): per-head batched GEMMs of the absorbed projections, ``mla_gen_pre``
[T, 128] x [128, 512] and ``mla_gen_post`` [T, 512] x [512, 128] per head, priced with the GEMM
model (groups = heads).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import replace
from functools import lru_cache
from typing import Optional

import numpy as np
import pandas as pd

from ..errors import InputError
from .calibration import GemmParams
from .kernels import DISPATCH_TILES, gemm_floor, gemm_time, l2_time_factor
from .pricing import older_label_record, register, section

# DeepSeek-V3 MLA dimensions (the only MLA shape in the tables; config.json of deepseek-ai/DeepSeek-V3)
MLA_QK_NOPE, MLA_ROPE, MLA_V, MLA_KV_LORA = 128, 64, 128, 512

# table dtype string -> (peak dtype, activation bytes, weight bytes, output bytes, dynamic activation quant)
GEMM_DTYPES = {
    "bfloat16": ("bf16", 2, 2, 2, False), "float16": ("fp16", 2, 2, 2, False), "fp16": ("fp16", 2, 2, 2, False),
    "half": ("fp16", 2, 2, 2, False), "bf16": ("bf16", 2, 2, 2, False),
    "fp8": ("fp8", 1, 1, 2, True), "fp8_block": ("fp8", 1, 1, 2, True), "fp8_static": ("fp8", 1, 1, 2, False),
    "int8_wo": ("bf16", 2, 1, 2, False), "int4_wo": ("bf16", 2, 0.5, 2, False), "sq": ("int8", 1, 1, 2, True),
    "int8": ("int8", 1, 1, 2, True), "nvfp4": ("fp4", 0.5, 0.5, 2, True), "fp4": ("fp4", 0.5, 0.5, 2, True),
    # MXFP8 (Blackwell block-scaled fp8: one e8m0 scale byte per 32 elements of both operands); AWQ / GPTQ
    # (4-bit weights with one fp16 scale per 128-element group, bf16 activations, the older collectors' W4A16 names)
    "mxfp8": ("fp8", 1 + 1 / 32, 1 + 1 / 32, 2, True),
    "awq": ("bf16", 2, 0.5 + 2 / 128, 2, False), "gptq": ("bf16", 2, 0.5 + 2 / 128, 2, False),
}
ATTN_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16", "bf16": "bf16",
               "fp8": "fp8", "fp8_e4m3": "fp8"}
KV_BYTES = {"bfloat16": 2.0, "float16": 2.0, "fp16": 2.0, "half": 2.0, "bf16": 2.0, "fp8": 1.0, "fp8_e4m3": 1.0,
            "int8": 1.0, "nvfp4": 0.5625, "fp4": 0.5}
UNCALIBRATED = {"nvfp4": "fp8", "fp4": "fp8", "mxfp8": "fp8_block", "awq": "int4_wo", "gptq": "int4_wo"}
"""GEMM dtypes without a table in ../shared/data -> the measured dtype whose fitted section prices them (their own
peak and bytes, that dtype's fractions of peak and floors); never fitted."""


def strict_peak(acc, dtype: str) -> float:
    """The device's own datasheet peak for ``dtype`` (bf16 <-> fp16 accepted as equals); no silent
    fallback to a wider type: a device without it cannot price that kernel."""
    pf = acc.peak_flops
    if dtype in pf:
        return pf[dtype].value
    if dtype in ("bf16", "fp16"):
        other = "fp16" if dtype == "bf16" else "bf16"
        if other in pf:
            return pf[other].value
    raise InputError(f"device {acc.name} has no datasheet peak for {dtype} (its descriptor lists "
                     f"{', '.join(pf)}); add a sourced peak_flops.{dtype} to price {dtype} kernels",
                     file=getattr(acc, "_path", None) or f"hardware/accelerators/{acc.name}.yaml",
                     field=f"peak_flops.{dtype}")


def _col(df: pd.DataFrame, name: str, default: float = 0.0) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), default, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").fillna(default).to_numpy(float)


MIN_GROUP = 100  # rows a (dtype, kernel_source) group needs to get its own fitted section


def _dtype_key(df) -> np.ndarray:
    """The section dtype of each row: the table dtype, plus ``+kv_<kv_cache_dtype>`` for attention
    and MLA rows whose KV cache dtype differs (an fp8 cache is another kernel path: K/V are
    quantized on write and dequantized in the kernel; prefill with an fp8 cache measures ~8%
    slower than the bf16-cache roofline, decode faster)."""
    dt = df["dtype"].astype(str).to_numpy()
    if "kv_cache_dtype" in df.columns and df["kind"].astype(str).str.contains("attention|mla").any():
        kv = df["kv_cache_dtype"].astype(str).to_numpy()
        same = (kv == dt) | (kv == "nan") | (kv == "None")
        dt = np.where(same, dt, np.char.add(np.char.add(dt.astype(str), "+kv_"), kv.astype(str)))
    return dt


def _base_dtype(d: str) -> str:
    return d.split("+", 1)[0]


def _groups(df):
    """(dtype, kernel_source, boolean mask) of every group of rows."""
    dt = _dtype_key(df)
    ks = df["kernel_source"].astype(str).to_numpy() if "kernel_source" in df.columns else np.full(len(df), "")
    key = np.char.add(np.char.add(dt.astype(str), "\x1f"), ks.astype(str))
    for k in pd.unique(key):
        d, src = str(k).split("\x1f", 1)
        yield d, src, key == k


#: (framework, GEMM dtype) -> the largest M its library runs on a GEMV kernel of its own (family ``<source>_gemv``):
#: TensorRT-LLM's SmoothQuant (W8A8) GEMM dispatches M <= 4 to a batched int8 GEMV. Evidence (A100 TRT-LLM ``sq``):
#: M 1-4 rows priced 30-40% slow (median) by the section the tiled GEMM rows fit, p90 100-166%, M 5-16 within 10%.
GEMV_PATHS = {("trtllm", "sq"): 4}


def _gemm_groups(df):
    """:func:`_groups` with the small-M GEMV paths of :data:`GEMV_PATHS` split off (``<source>_gemv``)."""
    fw = _bench_fw(df)
    if not any(f == fw for f, _ in GEMV_PATHS):
        yield from _groups(df)
        return
    M = _col(df, "m")
    for d, src, m in _groups(df):
        mx = GEMV_PATHS.get((fw, d))
        if mx is None:
            yield d, src, m
            continue
        g = m & (M <= mx)
        if g.any():
            yield d, f"{src}_gemv", g
        if (m & ~g).any():
            yield d, src, m & ~g


def _sec(cal, kind: str, dtype: str, source: str = "") -> tuple[dict, str]:
    """Parameters of (kind, dtype, kernel family): that kernel family's section, else the dtype's,
    else the bf16 one, else the defaults (kernel families are distinct code paths: DeepGEMM vs
    CUTLASS block-scaled fp8, FlashAttention 2/3 vs FlashInfer vs Triton)."""
    # a head-dim build or a query-tile configuration of a family (``<family>_hd<dim>``, ``<family>_q<rows>``) without a
    # section of its own falls back to the family's
    srcs = [source] if source else []
    for suffix in (r"_hd\d+$", r"_q\d+$", r"_gemv$", r"_g1$"):
        if srcs and re.search(suffix, srcs[-1]):
            srcs.append(re.sub(suffix, "", srcs[-1]))
    keys = [f"{kind}/{dtype}/{s_}" for s_ in srcs] + [f"{kind}/{dtype}"]
    if "+" in dtype:
        b = _base_dtype(dtype)
        keys += [f"{kind}/{b}/{s_}" for s_ in srcs] + [f"{kind}/{b}"]
    keys.append(f"{kind}/bfloat16")
    for key in keys:
        s = section(cal, key)
        if s:
            return s, key
    return {}, ""


# --------------------------------------------------------------------------- GEMM
GEMM_DEFAULT = GemmParams(kernel_overhead_s=2.5e-6)


def _gemm_params(s: dict) -> GemmParams:
    if not s:
        return GEMM_DEFAULT
    keep = {k: v for k, v in s.items() if k in GemmParams.__dataclass_fields__}
    if "tiles" in keep:
        keep["tiles"] = tuple(tuple(t) for t in keep["tiles"])
    if "tile_efficiency" in keep:
        keep["tile_efficiency"] = tuple(keep["tile_efficiency"])
    return GemmParams(**keep)


def gemm_launch_and_body(M, K, N, dtype: str, acc, cal, groups=1.0, source: str = "", bench: str = "",
                         kind: str = "gemm", copies=None, l2_smooth: bool = False):
    """(launch seconds, body seconds) of GEMMs [M, K] x [K, N] in the table dtype ``dtype``
    (``source``: the kernel family, when known; ``bench``: the framework whose AIConfigurator
    collector measured the row, whose weight-buffer rotation decides what stays in L2, see
    :func:`bench_weight_copies`, or ``copies`` where the caller knows them; empty: the serving
    semantics, one GEMM's operands against half the L2). ``kind``: the calibration section family
    (``mla_bmm``: MLA's per-head batched GEMMs), the ``gemm`` one where it has none. ``l2_smooth``: the
    L2-resident share falls off smoothly with the working set (:func:`~simllm.cost.kernels.l2_resident_fraction`),
    for the body and for the activation-quantization pass (its bf16 input and fp8 output), instead of the
    all-or-nothing rule of the GEMM tables, against the section's ``l2_fraction`` of the L2 (the share a kernel's
    access pattern keeps: fitted per section)."""
    if dtype not in GEMM_DTYPES:
        raise InputError(f"unknown GEMM dtype {dtype!r} (expected one of {', '.join(GEMM_DTYPES)})",
                         field="gemm_dtype")
    pk, ab, wb, ob, quant = GEMM_DTYPES[dtype]
    key = UNCALIBRATED.get(dtype, dtype)
    s, found = _sec(cal, kind, key, source)
    if not s and kind != "gemm":
        s, found = _sec(cal, "gemm", key, source)
    gp = _gemm_params(s)
    if dtype in ("fp16", "float16") and found in ("", "gemm/bfloat16") and "gemm" in (cal.fit or {}):
        gp = cal.gemm  # Vidur's fp16 tables: the tile model fitted on them (simllm.cost.fit)
    peak = strict_peak(acc, pk)
    if copies is not None:
        l2b = _l2_bench(acc)
    elif bench:
        l2b, copies = _l2_bench(acc), bench_weight_copies(bench, dtype, np.asarray(K, float) * np.asarray(N, float) * wb,
                                                          acc)
    else:
        l2b, copies = _l2(acc), 1.0
    if l2_smooth:
        l2b = l2b * float(s.get("l2_fraction", 1.0))
    # a long GEMM at the power-limited clock (kernels.sustained_compute), in the tables and in the serving step
    sus = _sustain(s)
    t = gemm_time(M, K, N, peak=peak, bw=acc.hbm_bw, cus=int(acc.compute_units.value), gp=gp, groups=groups,
                  a_bytes=ab, w_bytes=wb, o_bytes=ob, l2_bytes=l2b, l2_speedup=float(s.get("l2_speedup", 1.0)),
                  l2_copies=copies, l2_smooth=l2_smooth, sustain=sus)
    launch = np.broadcast_to(gemm_floor(K, gp), np.shape(t)).astype(float)
    body = t - launch
    if quant:
        q = float(s.get("quant_overhead_s", 0.0))
        qe = float(s.get("quant_efficiency", gp.memory_efficiency))
        Mq = np.asarray(M, float) * np.asarray(groups, float)
        qbytes = Mq * np.asarray(K, float) * 3.0
        qf = l2_time_factor(qbytes, l2b, float(s.get("l2_speedup", 1.0))) if l2_smooth else 1.0
        body = body + qbytes * qf / (acc.hbm_bw * qe) + \
            quant_rows(Mq, K, dtype, acc) * float(s.get("quant_row_s", 0.0))
        launch = launch + q
    return launch, body


def _sustain(s: dict):
    """A section's ``(sustained_fraction, throttle_s)`` (:func:`~simllm.cost.kernels.sustained_compute`), or None."""
    f = float(s.get("sustained_fraction", 1.0))
    return (f, float(s.get("throttle_s", 0.0))) if f < 1.0 else None


def quant_rows(Mq, K, dtype: str, acc):
    """Thread blocks per SM of the dynamic per-token activation-quantization pass (``fp8``, ``sq``,
    ``int8``, ``nvfp4``): one block per token row (a max-abs reduction over the row, then the scaled
    cast). Each block is latency-bound (a reduction, then a dependent cast), so the pass costs
    ``rows / SMs x quant_row_s`` at the least, on top of its byte term. Evidence: H100 vLLM CUTLASS
    fp8 GEMMs with N = 32 take 31.7 / 122 us at M = 4097 / 16384 for K = 128 and 32.8 / 124 us for
    K = 512: linear in M, independent of K, 8x the byte roofline; the term takes that group from
    10.8% / 35% to 7.2% / 22% (median / p90). Not applied to ``fp8_block``: its tables are dominated
    by 55-300 us per-call floors (DeepGEMM, CUTLASS block-scaled) that leave a per-row term
    unidentifiable (fitted, it moved that group 7.5% / 26.8% -> 7.8% / 28.2%)."""
    if dtype == "fp8_block":
        return np.zeros(np.shape(Mq)) if np.ndim(Mq) else 0.0
    return np.asarray(Mq, float) / float(acc.compute_units.value)


def _l2(acc) -> float:
    """Half the device's last-level cache: the working set a repeated GEMM keeps resident
    (assumption: the other half holds other data and the write-back of the output)."""
    sram = getattr(acc, "sram", None)
    return 0.5 * float(sram.value) if sram is not None else 0.0


L2_USABLE = 1.05
"""Working set a benchmark's rotated weight copies can cycle through and still find in the L2, as a share of
the L2 the CUDA attribute reports (ASSUMPTION, read off the L40S data, 96 MiB L2: small-M GEMMs stay L2-fast up to
6 x 16 MiB of SGLang's six copies and 5 x 20 MiB = 100 MiB of TensorRT-LLM's five, 1.04 x the L2, and run at
DRAM speed from about 1.1 x: the cache is not LRU, so a working set a few percent over its size still mostly hits;
vLLM's six copies fall off gradually from 6 x 12.5 MiB). At 1.0, the 900 L40S TRT-LLM GEMM rows at 0.95-1.05 x the
L2 were priced at DRAM speed, 85% of them 1.4-2.9x slow (bf16 group 7.2 / 26.3% -> 7.1 / 24.7% at 1.05, fp8 5.9 /
29.3 -> 5.9 / 26.3%, fp8_block 6.5 / 28.0 -> 6.3 / 25.2%, no refit); A100 / H100 groups move by <= 0.5 points. With
0.9 the L40S groups moved by <= 0.3 points from 1.0."""

SMALL_M_TILES = ((16, 64), (16, 128), (32, 128))
"""Tile shapes with 16-32 output rows, added to a GEMM section's candidate tiles at its next fit.
GEMM libraries ship small-M configurations for decode-sized batches (vLLM's SM89 CUTLASS fp8
dispatch has M16 / M32 / M64 buckets, cuBLAS GEMV-like kernels); priced with 64-row tiles at the
least, an M <= 16 GEMM pays for 4x the rows it has. Evidence (L40S, vLLM fp8): M <= 16 rows
+15-22% slow, M = 17-256 5-8% fast; refitted with these tiles 11.5% / 41.4% -> 10.2% / 35.2%
(median / p90), bf16 8.4% / 24.1% -> 8.4% / 23.8%."""


def _l2_bench(acc) -> float:
    sram = getattr(acc, "sram", None)
    return L2_USABLE * float(sram.value) if sram is not None else 0.0


def bench_weight_copies(framework: str, dtype: str, w_bytes, acc):
    """Distinct weight copies an AIConfigurator GEMM collector cycles through per timed call (the
    working set the L2 must hold for a repeated GEMM to stay on chip is copies x weights).

    From the collectors (ai-dynamo/aiconfigurator ``collector/<framework>/collect_gemm.py``): vLLM
    builds ``outside_loop_count = 6`` layers, 1 for ``fp8_block`` / ``nvfp4``; SGLang 6; TensorRT-LLM
    (>= 1.3.0rc20) ``max(1, min(5, ceil(L2 / weight_bytes)))``, i.e. enough copies to overflow the
    L2 whenever fewer than five would. Evidence (L40S, 96 MiB L2, 864 GB/s): M <= 4 bf16 GEMMs read
    their weights at 1.0-1.4 TB/s up to 12-14 MiB of weights (vLLM, SGLang) and 16-18 MiB
    (TensorRT-LLM), then drop to 0.60-0.70 TB/s, the DRAM figure; half the L2 against one copy's
    bytes (the earlier test) put the step at 48 MiB and priced 4-12 MiB GEMMs 40-77% slow and
    16-40 MiB ones 26% fast. Any other framework: 1 copy."""
    fw = (framework or "").lower()
    w = np.maximum(np.asarray(w_bytes, float), 1.0)
    if fw == "vllm":
        c = 1.0 if dtype in ("fp8_block", "nvfp4") else 6.0
    elif fw == "sglang":
        c = 6.0
    elif fw == "trtllm":
        sram = getattr(acc, "sram", None)
        l2 = float(sram.value) if sram is not None else 0.0
        return np.clip(np.ceil(l2 / w), 1.0, 5.0)
    else:
        c = 1.0
    return np.full(np.shape(w), c) if np.ndim(w) else c


def bench_eager(framework: str, dtype: str) -> bool:
    """Whether the collector times the GEMM eagerly (no CUDA graph), so the host's per-call work
    (Python dispatch, Triton / DeepGEMM launchers, the activation-quant launch) of one call overlaps
    the device's work of the previous one and a call costs ``max(host floor, device body)``, not their
    sum. vLLM's collector benchmarks ``fp8_block`` with ``use_cuda_graph=gemm_type != "fp8_block"``
    (ai-dynamo/aiconfigurator collector/vllm/collect_gemm.py). Evidence (L40S, vLLM 0.24, Triton
    block-fp8): a flat 285-350 us per call up to ~300 us of GEMM work (M = 1, any N x K <= 16384 x
    16384), then the GEMM's own time: the additive form priced the M = 4096 rows near that corner
    30-70% slow and the largest ones 20-35% fast (the fit trading one against the other)."""
    return framework == "vllm" and dtype == "fp8_block"


def _bench_fw(df) -> str:
    """The AIConfigurator framework whose collector measured ``df`` (one framework per call), else ''."""
    fw = str(df["framework"].iloc[0]).lower() if "framework" in df.columns and len(df) else ""
    return fw if fw in ("vllm", "sglang", "trtllm") else ""


def price_gemm(df, acc, cal) -> np.ndarray:
    out = np.full(len(df), np.nan)
    M, N, K = _col(df, "m"), _col(df, "n"), _col(df, "k")
    fw = _bench_fw(df)
    for d, src, sel in _gemm_groups(df):
        if d not in GEMM_DTYPES:
            continue
        lo, bo = gemm_launch_and_body(M[sel], K[sel], N[sel], d, acc, cal, source=src, bench=fw)
        out[sel] = np.maximum(lo, bo) if bench_eager(fw, d) else lo + bo
    return out


def _loss(pred, t):
    r = np.abs(np.log(np.maximum(pred, 1e-12) / t))
    v = float(np.mean(r))
    return v if np.isfinite(v) else np.inf


def _subsample(n: int, k: int, seed: int = 0) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def fit_gemm_kind(df, acc, cal, iters: int = 1500, max_rows: int = 5000, restarts: int = 2, kind: str = "gemm",
                  shapes=None, copies=None, l2_smooth: bool = False, dispatch: str | None = None) -> dict:
    """The GEMM tile model fitted per (dtype, kernel family) of ``df``. ``kind``: the section family written
    (``gemm``, or ``mla_bmm`` whose start is its own section, else the GEMM one); ``shapes``: ``sub -> (M, K, N,
    groups)`` for tables whose rows are not ``m, n, k`` GEMMs (batched GEMMs: ``groups`` of them per call);
    ``copies``: weight copies the collector cycles through, where :func:`bench_weight_copies` does not say;
    ``l2_smooth``: as :func:`gemm_launch_and_body`'s; ``dispatch``: a library tile rule of
    :data:`~simllm.cost.kernels.GEMM_DISPATCH` the sections follow (None: the start section's)."""
    from .fit import nelder_mead

    out = {}
    dt = df["dtype"].astype(str).to_numpy()
    jobs = [(d, "", dt == d) for d in sorted(pd.unique(dt))]
    jobs += [(d, src, m) for d, src, m in _gemm_groups(df) if src and m.sum() >= MIN_GROUP and
             (dt == d).sum() > m.sum()]  # a family apart only where a dtype has several
    for d, src, m in jobs:
        if d not in GEMM_DTYPES or d in UNCALIBRATED:
            continue
        sub = df[m]
        idx = _subsample(len(sub), max_rows)
        sub = sub.iloc[idx]
        if shapes is None:
            M, N, K, G = _col(sub, "m"), _col(sub, "n"), _col(sub, "k"), 1.0
        else:
            M, K, N, G = shapes(sub)
        t = sub["latency_s"].to_numpy(float)
        pk, ab, wb, ob, quant = GEMM_DTYPES[d]
        peak = strict_peak(acc, pk)
        bw, cus = acc.hbm_bw, int(acc.compute_units.value)
        fw = _bench_fw(sub)
        cps = copies if copies is not None else (bench_weight_copies(fw, d, K * N * wb, acc) if fw else 1.0)
        eager = bench_eager(fw, d)
        start_s, key = _sec(cal, kind, d, src)
        if not start_s and kind != "gemm":
            start_s, key = _sec(cal, "gemm", d, src)
        start = _gemm_params(start_s)
        disp = start.dispatch if dispatch is None else dispatch
        need = SMALL_M_TILES + (DISPATCH_TILES[disp] if disp else ())
        add = list(dict.fromkeys(tuple(t_) for t_ in need if tuple(t_) not in start.tiles))
        if add:  # the small-M tiles join the candidates, from a middling efficiency
            start = replace(start, tiles=start.tiles + tuple(add),
                            tile_efficiency=tuple(start.tile_efficiency) + (0.3,) * len(add))
        if key != (f"{kind}/{d}/{src}" if src else f"{kind}/{d}"):  # no own start: floor from the data
            from dataclasses import replace as _r
            start = _r(start, kernel_overhead_s=float(np.percentile(t, 1)) * 0.7)
        q0 = float(start_s.get("quant_overhead_s", 1e-6)) * 1e6
        qb = M * G * K * 3.0 / bw if quant else 0.0

        rows = quant_rows(M * G, K, d, acc) if quant else 0.0

        ng = len(start.vector())

        def params(x):
            gp = GemmParams.from_vector(x[:ng], start.tiles)
            return replace(gp, floor_k0=float(x[ng + 4]), floor_k=float(x[ng + 5]) * 100.0, dispatch=disp)

        # collector rows (a framework's tables, or a batched-GEMM table's copies) also fit the sustained clock: the
        # last two entries, sustained fraction and throttle time (ms); other rows leave them out of the simplex
        bench_rows = bool(fw) or copies is not None

        def sus(x):
            return (float(x[-2]), float(x[-1]) * 1e-3) if bench_rows and x[-2] < 1.0 else None

        def f(x):
            row_, l2s, qe, q0_, f0, kf = x[ng:ng + 6]
            lf = x[ng + 6] if l2_smooth else 1.0
            if not _gemm_valid_wide(x[:ng], len(start.tiles)) or not (0 <= q0_ < 50 and 0.01 < qe <= 1.2
                                                                     and 1.0 <= l2s <= 6.0 and 0 <= row_ < 100
                                                                     and 0.0 <= f0 <= 1.0 and 0.01 <= kf <= 200
                                                                     and 0.05 <= lf <= 1.0
                                                                     and (not bench_rows or (0.2 <= x[-2] <= 1.0
                                                                                             and 0.01 <= x[-1] <= 1000))):
                return np.inf
            p = gemm_time(M, K, N, peak=peak, bw=bw, cus=cus, gp=params(x), groups=G, a_bytes=ab, w_bytes=wb,
                          o_bytes=ob, l2_bytes=l2 * lf, l2_speedup=l2s, l2_copies=cps, l2_smooth=l2_smooth,
                          sustain=sus(x))
            if quant:
                qf = l2_time_factor(qb * bw, l2 * lf, l2s) if l2_smooth else 1.0
                p = p + q0_ * 1e-6 + qb * qf / qe + rows * row_ * 1e-6
            if eager:
                h = gemm_floor(K, params(x)) + (q0_ * 1e-6 if quant else 0.0)
                p = np.maximum(h, p - h)
            return _loss(p, t)

        qe0 = float(start_s.get("quant_efficiency", 0.5))
        l2 = _l2_bench(acc) if (fw or copies is not None) else _l2(acc)
        r0 = float(start_s.get("quant_row_s", 0.0)) * 1e6 or (0.5 if quant else 0.0)
        base = list(start.vector()) + [r0, float(start_s.get("l2_speedup", 1.5)), qe0, q0 if quant else 0.0]
        if start_s.get("floor_k", 0):
            starts = [base + [float(start_s["floor_k0"]), float(start_s["floor_k"]) / 100.0]]
        else:  # from a section without the K-dependent floor: from it as it is, and from half a floor at K -> 0
            starts = [base + [1.0, 5.0], base + [0.5, 5.0]]
        if add:  # and from the new tiles all but off (0.06): the section's own optimum, only the L2 rule changed
            n0 = len(start.tiles) - len(add)
            starts += [x0[:5 + n0] + [0.06] * len(add) + x0[5 + n0 + len(add):] for x0 in starts]
        # and from the reference tile model (the A100 Vidur fit's tile efficiencies, q = 10): the simplex
        # on this min-of-tiles model stays in the basin it starts in (L40S vLLM bf16 from its own section
        # 8.3% / 23.7%, from this start 7.3% / 20.9%)
        ref = GemmParams()
        ref_eff = dict(zip(ref.tiles, ref.tile_efficiency))
        nt = len(start.tiles)
        starts += [x0[:2] + [ref.tile_k_overhead / 100.0, x0[3], ref.partial_wave_cost] +
                   [ref_eff.get(tuple(t_), 0.3) for t_ in start.tiles] + [10.0] + x0[5 + nt + 1:] for x0 in starts[:1]]
        if l2_smooth:  # the effective L2 share, from the section's own or all of it
            starts = [list(x0) + [float(start_s.get("l2_fraction", 1.0))] for x0 in starts] + \
                [list(x0) + [lf] for x0 in starts[:1] for lf in (0.25, 0.5)]
        if bench_rows:  # the sustained clock last: from the section's own, else from a mild throttle (may go to 1)
            sf0 = float(start_s.get("sustained_fraction", 0.8))
            th0 = float(start_s.get("throttle_s", 0.01)) * 1e3 or 10.0
            starts = [list(x0) + [sf0, th0] for x0 in starts]
        best = None
        for x0 in starts:
            x, fx = nelder_mead(f, x0, iters=iters, step=0.05)
            for _ in range(restarts):  # the simplex collapses early on this min-of-tiles model: restart it
                x2, f2 = nelder_mead(f, x, iters=iters, step=0.1)
                if f2 > fx - 1e-5:
                    break
                x, fx = x2, f2
            if best is None or fx < best[1]:
                best = (x, fx)
        x = best[0]
        gp = params(x)
        sec = {k: v for k, v in gp.__dict__.items()}
        sec["tiles"] = [list(t_) for t_ in gp.tiles]
        sec["tile_efficiency"] = [float(v) for v in gp.tile_efficiency]
        if not sec.get("dispatch"):
            sec.pop("dispatch", None)
        sec["l2_speedup"] = float(x[ng + 1])
        if l2_smooth:
            sec["l2_fraction"] = float(x[ng + 6])
        if bench_rows and x[-2] < 1.0:
            sec["sustained_fraction"] = float(x[-2])
            sec["throttle_s"] = float(x[-1]) * 1e-3
        if quant:
            sec["quant_overhead_s"] = float(x[ng + 3]) * 1e-6
            sec["quant_efficiency"] = float(x[ng + 2])
            if np.any(rows):
                sec["quant_row_s"] = float(x[ng]) * 1e-6
        out[f"{kind}/{d}/{src}" if src else f"{kind}/{d}"] = sec
    return out


def _gemm_valid_wide(x, ntiles):
    """fit.py's bounds, with launch floors up to 1 ms (block-scaled fp8 kernels measure 55-300 us)."""
    from .fit import _gemm_valid

    y = list(x)
    if not 0 <= y[1] < 1000:
        return False
    y[1] = min(y[1], 1.0)
    return _gemm_valid(y, ntiles)


# --------------------------------------------------------------------------- roofline kernels
# parameters: ce (fraction of peak), me (fraction of HBM bw), launch_s, p (overlap exponent),
# a (partial-wave cost), split (decode: KV tokens per split), occ (CTAs per SM for full bandwidth)
# hd0: non-matmul work per (query, key, head) pair (softmax exponentials, masking), in head-dim
# equivalents: FLOPs are priced as 4 (hd + hd0) per pair. Evidence: H100 FA3 prefill at head_dim 64
# runs ~12% slower per matmul FLOP than at 128 (the exp unit, not the tensor cores, limits small hd).
ROOF_DEFAULT = {"ce": 0.5, "me": 0.7, "launch_s": 8e-6, "p": 3.0, "a": 0.5, "split": 512.0, "occ": 2.0, "hd0": 8.0,
                "cta_s": 1e-6, "hd_floor": 0.0, "l2_bpf": 0.0, "split_waves": 0.0, "window_tile": 0.0, "kv_cost": 1.0}
# cta_s: the least time one CTA (one sequence x KV head x split in decode, one query tile in prefill)
# takes (page-table walk, Q load, softmax merge); with many short sequences the kernel is bound
# by CTAs / (SMs x occ) x cta_s. Evidence: H100 FA3 decode at batch 512-2048 with 1-token contexts
# measures 2-3x the bandwidth roofline.
# hd_floor (decode attention only): the share of the launch and per-CTA floors that grows with the head
# dim at head dim 128 (floors x (1 - hd_floor + hd_floor x hd / 128), see decode_floor_scale).
# l2_bpf (the table pricer only): a kernel whose whole working set (Q, O and the K/V it reads) fits in
# the device's L2 streams it at l2_bpf bytes per FLOP of the device's bf16 tensor peak (at least the
# HBM figure), see bench_l2_resident.
# split_waves (decode only): the occupancy cap on the KV splits, see decode_splits (0: no cap)
# window_tile (decode and prefill attention): key positions beyond a sliding window that a kernel still loads
# (decode) or computes (prefill, per query) once the context has outgrown the window (the KV tiles the band's
# edges cut through, and their masking), at most the excess; 0 prices exactly ``window`` positions. Fitted only
# on tables with such rows (:func:`window_keys`).
# kv_cost (prefill attention only): the K/V bytes' cost relative to the query / output bytes (1: the same
# bandwidth). Every query tile gathers its KV head's keys and values from the paged cache, a head's rows
# ``kv_heads x head_dim`` elements apart, the query and output rows contiguous. Evidence (L40S vLLM FA2, 64
# query heads, head dim 128, batch 16, 128-token prompts: one query tile per head, no K/V re-read): 74 / 104 /
# 387 us at 1 / 8 / 64 KV heads, the K/V bytes streaming at ~240 GB/s against ~720 GB/s for the queries and
# outputs of the one-KV-head call (GDDR6, 864 GB/s); one bandwidth priced the 64-KV-head rows 36-49% fast and
# the grouped ones 20-40% slow.
# Evidence: vLLM FA3 on H100, window 128, batch 1: 11.4-11.7 us at 2-128-token contexts, 15.4-15.6 us at
# every context from 256 to 131,072 (flat: the window's work, not the context's), batch 128: 19.8 -> 22.4 us
# (the unwindowed 256-token row: 24.4 us); priced as 128 positions those rows were 20% fast (12,584 rows).
_ROOF_KEYS = ("ce", "me", "launch_s", "p", "a", "split", "occ", "hd0", "cta_s", "hd_floor", "l2_bpf", "split_waves")


def roof_keys(kind: str) -> list:
    """The roofline keys a section of ``kind`` fits (before :func:`window_keys`): no KV split in prefill, the
    head-dim floor share and the split cap in decode attention only, the K/V bytes' cost in prefill attention."""
    ctx = kind in ("context_attention", "context_mla")
    return [k for k in _ROOF_KEYS if not (k in ("split", "split_waves") and ctx)
            and not (k in ("hd_floor", "split_waves") and kind != "generation_attention")] + \
        (["kv_cost"] if kind == "context_attention" else [])


def fa2_keys(df, kind: str) -> tuple:
    """("combine_s",) where decode rows run FlashAttention 2 (:data:`FA2_SOURCES`: its split heuristic and combine
    kernel, :func:`fa2_num_splits`), with ("swap_copy_s",) where enough of them (or of FA2's one-token prefill rows)
    make the transposes' copies (:func:`fa2_swap_copies`), else ()."""
    if "kernel_source" not in df.columns or not len(df):
        return ()
    if kind == "context_attention":
        one = _in(df["kernel_source"].astype(str).to_numpy(), PREFILL_SWAP_SOURCES) & (_col(df, "isl") <= 1)
        cp = fa2_swap_copies(_col(df, "batch_size"), _col(df, "num_heads"), _col(df, "num_key_value_heads"),
                             _col(df, "window_size"), one)
        return ("swap_copy_s",) if int(cp.sum()) >= MIN_GROUP else ()
    if kind != "generation_attention":
        return ()
    if not bool(np.all(_in(df["kernel_source"].astype(str).to_numpy(), FA2_SOURCES))):
        return ()
    cp = fa2_swap_copies(_col(df, "batch_size"), _col(df, "num_heads"), _col(df, "num_key_value_heads"),
                         _col(df, "window_size"), True)
    return ("combine_s", "swap_copy_s") if int(cp.sum()) >= MIN_GROUP else ("combine_s",)


def reread_keys(df, kind: str, framework: str = "") -> tuple:
    """("reread_gbps",) where decode rows run unpacked over shared KV heads (:func:`reread_time`), else ()."""
    if kind != "generation_attention" or not len(df):
        return ()
    h, kvh = _col(df, "num_heads"), _col(df, "num_key_value_heads")
    eff = decode_kv_heads(h, kvh, framework, _col(df, "window_size"),
                          df["kernel_source"].astype(str).to_numpy() if "kernel_source" in df.columns else "")
    return ("reread_gbps",) if int(np.sum(eff > kvh)) >= MIN_GROUP else ()


def window_keys(df, kind: str) -> tuple:
    """("window_tile",) where attention rows outgrow their sliding window (the parameter is fitted), else ()."""
    if kind not in ("generation_attention", "context_attention") or "window_size" not in df.columns:
        return ()
    w = _col(df, "window_size")
    return ("window_tile",) if bool(np.any((w > 0) & (_col(df, "isl") + _col(df, "step") > w))) else ()


HD_REF = 128.0


def decode_floor_scale(hd, hd_floor: float):
    """Factor on decode attention's launch and per-CTA floors at head dim ``hd``: ``1 - hd_floor +
    hd_floor x hd / 128`` (1 at head dim 128, and everywhere with ``hd_floor`` 0).

    A decode CTA loads its query heads' ``hd``-wide Q rows, runs ``hd``-wide dot products and
    rescales and writes ``hd``-wide outputs whatever the context, so the part of the floor spent on
    them grows with ``hd``, the rest (launch, page-table walk, split merge) does not. Evidence: vLLM
    FA3 decode on H100 at batch 1 and 2-token contexts measures 10 us at head dim 64, 11.5 us at 128
    and 13-16 us at 256 (one head-dim-independent floor priced them 12 / 12 / 12-13 us: head dim 64
    +14-20%, 256 -6..-16% at short contexts, -21..-28% at batch >= 256)."""
    return 1.0 - hd_floor + hd_floor * np.asarray(hd, dtype=float) / HD_REF


def _hd_scaled(s: dict, hd, kind: str) -> dict:
    f = s.get("hd_floor", 0.0)
    if kind != "generation_attention" or not f:
        return s
    g = decode_floor_scale(hd, f)
    return {**s, "launch_s": s["launch_s"] * g, "cta_s": s.get("cta_s", 0.0) * g}


def _waves(tiles, cus, a):
    w = np.maximum(tiles, 1.0) / cus
    full = np.floor(w)
    rem = w - full
    return np.maximum(full + np.where(rem > 0, a + (1 - a) * rem, 0.0), 1e-9) / w


def bench_l2_resident(nbytes, acc):
    """Whether a benchmarked attention kernel's working set of ``nbytes`` (Q, O and every K/V byte
    it reads) stays in the device's L2 between the timed calls (the whole L2, ``L2_USABLE``).

    The AIConfigurator collectors build one KV cache per shape and time the same call back to back
    (vLLM: 3 warm-up and 6 timed runs over one paged cache, ``collector/vllm/collect_attn.py``), so a
    cache that fits in L2 is read from it, not from DRAM; the kernel then streams at the L2 bandwidth,
    ``l2_bpf`` bytes per FLOP of the device's bf16 tensor peak (the section's ``l2_bpf``, 0 where unfitted:
    no effect), or the HBM figure where that is faster. ASSUMPTION (no L2 bandwidth in the descriptors,
    none on the datasheets): an SM's L2 bytes per clock keep the ratio to its tensor FLOPs per clock
    across NVIDIA generations, so the L2 bandwidth scales with SMs x clock as the bf16 peak does, and a
    fraction of HBM bandwidth would not transfer (GDDR6 L40S: L2 2-5x its DRAM; HBM3 H100: 1.3-1.5x;
    HBM2e A100: none measurable). Not applied in the serving step:
    between two decode steps every other layer's weights and KV pass through the L2, so one layer's
    KV is never resident there (:class:`~simllm.cost.layer_kernels.LayerKernels` prices DRAM).
    Evidence (L40S, 96 MiB L2, 864 GB/s GDDR6; decode, 32 / 8 heads, head dim 128, bf16 cache, 4 KiB
    of K/V per token): vLLM FA2 at batch 1 reads 16,384 tokens (67 MB) in 38 us (1.8 TB/s, twice the
    DRAM peak) and 32,768 (134 MB) in 222 us (0.60 TB/s); the same step at every batch (b x context
    = 16,384 -> 32,768 tokens: 36 -> 219 us at batch 16) and in TRT-LLM (28 -> 232 us) and FlashInfer
    with an fp8 cache (32,768 -> 65,536 tokens, 67 -> 134 MB: 35 -> 212 us). One DRAM roofline priced
    the L2-resident rows up to 2.5-3.7x slow (L40S vLLM FA2 decode p90 87%). H100 (50 MiB L2 against
    3.35 TB/s HBM3) and A100 show no step in the raw times; fitted, ``l2_bpf`` comes out 0.003-0.0046
    B/FLOP on H100 decode (L2 1.0-1.5x its HBM figure), 0.006-0.011 on L40S (2.5-5.5x), and below the
    HBM figure on A100 (no effect). With it (and the decode families), L40S decode went 15.4/75.7% ->
    8.6/28.0% (vLLM), 16.2/85.0% -> 8.5/32.0% (TRT-LLM), 14.8/107.6% -> 6.8/32.6% (SGLang), L40S
    TRT-LLM prefill 12.5/44.8% -> 7.6/27.1% (median / p90); leave-one-GPU-out on L40S vLLM decode 52%
    -> 38% median once it was a bytes-per-FLOP figure (an HBM multiple did not transfer: 47%)."""
    sram = getattr(acc, "sram", None)
    l2 = L2_USABLE * float(sram.value) if sram is not None else 0.0
    return np.asarray(nbytes, float) <= l2


def _bf16_peak(acc) -> float:
    try:
        return strict_peak(acc, "bf16")
    except InputError:
        return 0.0  # no tensor peak to scale the L2 bandwidth from: DRAM only


def reread_time(reread, acc, s):
    """Seconds an unpacked decode path spends re-reading K/V its query heads share (``reread`` bytes).

    Above TensorRT-LLM's largest XQA group (and for FlashAttention 2 with a window) every query head runs as
    its own CTA over its KV head's cache (:func:`decode_kv_heads`); the CTAs of one KV head's query heads
    read the same K/V, which DRAM serves once and the L2 serves to the others. The re-reads stream at a
    per-SM rate (``reread_gbps``, GB/s per SM: fitted on the sections with such rows), not at the DRAM
    bandwidth, so DRAM carries the KV heads' own bytes only. Evidence (TensorRT-LLM 1.3.0rc20 masked MHA,
    64 query heads over 1 KV head, head dim 128, bf16 cache, batch 128, 1,024 tokens): 0.662 ms on H100
    (3.35 TB/s HBM3, 132 SMs) and 0.662 ms on L40S (864 GB/s GDDR6, 142 SMs), 6.5 TB/s of K/V reads on
    either, while the DRAM price of every query head's read (what the model did before) was 2.1x / 6.8x
    the measured time (L40S TRT-LLM decode: heads-per-KV-head 48-128 rows p90 500%).
    ASSUMPTION: the rate transfers per SM (no L2 bandwidth figure in the descriptors)."""
    return np.asarray(reread, float) / (float(acc.compute_units.value) * s["reread_gbps"] * 1e9)


def _roof(flops, nbytes, tiles, ctas, acc, peak, s, bench: bool = False, reread=None, flat=None):
    """(launch, body) of a roofline kernel: compute stretched by wave quantization of ``tiles``,
    memory by the fraction of SMs that ``ctas`` keep busy; ``bench``: a benchmark's back-to-back
    calls, whose working set stays in L2 when it fits (:func:`bench_l2_resident`); ``reread``: bytes
    an unpacked decode path re-reads from the L2 (:func:`reread_time`), outside ``nbytes``."""
    cus = float(acc.compute_units.value)
    tc = flops / (peak * s["ce"]) * _waves(tiles, cus, s["a"])
    par = np.minimum(1.0, np.maximum(ctas, 1.0) / (cus * max(s["occ"], 1e-3)))
    tm = nbytes / (acc.hbm_bw * s["me"]) / par
    if bench and s.get("l2_bpf", 0.0) > 0.0:
        # an L2-resident working set streams device-wide at the L2 bandwidth; the per-CTA rate
        # of too few CTAs (par < 1) does not change (L40S vLLM FA2 MHA decode 8 / 8 heads, 16,384
        # tokens: 306 us at batch 1, 67 MB in L2, and 313 us at batch 2, 134 MB from DRAM)
        # (tm = max(device-wide stream, per-CTA stream), the second one nbytes / (bw me) x SMs occ / CTAs)
        per_cta = nbytes / (acc.hbm_bw * s["me"]) * (cus * max(s["occ"], 1e-3)) / np.maximum(ctas, 1.0)
        tm = np.where(bench_l2_resident(nbytes, acc),
                      np.maximum(nbytes / max(acc.hbm_bw * s["me"], s["l2_bpf"] * _bf16_peak(acc)), per_cta), tm)
    if flat is not None:  # bytes every CTA loads in bulk (a decode's query and output): at the device-wide rate
        tm = tm + flat / (acc.hbm_bw * s["me"])
    tq = np.maximum(ctas, 1.0) / (cus * max(s["occ"], 1e-3)) * s.get("cta_s", 0.0)
    p = s["p"]
    if reread is not None:
        body = (tc ** p + tm ** p + tq ** p + reread_time(reread, acc, s) ** p) ** (1.0 / p)
    else:
        body = (tc ** p + tm ** p + tq ** p) ** (1.0 / p)
    return np.zeros(np.shape(body)) + s["launch_s"], body


#: the largest query-head group per KV head a framework's decode kernel shares one KV read over
#: (TensorRT-LLM's XQA kernel); above it the framework's generic masked multi-head attention runs,
#: one CTA per (sequence, query head), each reading its KV head. Evidence: H100 TRT-LLM decode rows
#: with 32 / 1, 64 / 2 and 128 / 4 heads (groups <= 32) lie on one curve (b = 2048, 2-token
#: context: 122 us at 32 / 1); 64 / 1, 96 / 2, 128 / 1-2 (groups 48-128) measure 3-10x slower
#: (1,251 us at 64 / 1), as if each query head were its own KV head.
DECODE_GROUP_MAX = {"trtllm": 32}


#: kernel sources of FlashAttention 2 decode (vLLM on sm80 / sm89), whose GQA packing
#: (``seqlenq_ngroups_swapped``) requires no sliding window: with one, every query head runs as its own
#: KV head. Evidence (L40S, vLLM 0.24 FA2, batch 1024, 2-token contexts, head dim 128): window 128
#: takes 224 us at 8 / 1 .. 8 / 8 heads and 1.70 ms at 64 / 1 .. 64 / 8 (proportional to the query
#: heads, the KV heads do not matter) against 37 / 220 us and 45 / 255 us without a window; FA3
#: (H100) and FlashInfer (L40S, fp8 cache) time windowed rows as unwindowed ones (211 / 211 us at 8 / 8).
FA2_SOURCES = ("vllm_flash_attn_fa2", "vllm_flash_attn")


def _fa2_windowed(window, source):
    return np.asarray(_in(source, FA2_SOURCES)) & (np.asarray(window, float) > 0)


def decode_kv_heads(h, kvh, framework: str, window=0.0, source=""):
    """KV heads the decode kernel runs as (``kvh``, or ``h`` above the framework's largest group, and
    for FlashAttention 2 with a sliding ``window``; ``source``: the table's kernel source; the serving
    step passes neither, :data:`FA2_SOURCES`)."""
    g = DECODE_GROUP_MAX.get(framework or "")
    out = kvh if g is None else np.where(np.asarray(h, float) > g * np.asarray(kvh, float), h, kvh)
    fa2 = _fa2_windowed(window, source)
    return np.where(fa2, h, out) if np.any(fa2) else out


def decode_family(h, kvh, framework: str, window=0.0, source=""):
    """The decode kernel family (a section source) a framework runs for ``h`` query heads over ``kvh``
    KV heads, or ``None`` where one family serves every head ratio.

    TensorRT-LLM dispatches decode to its XQA kernel when the query heads share KV heads in groups of
    2-32 (GQA/MQA), and to the generic masked multi-head attention kernel (``mmha``) otherwise (MHA,
    and groups above :data:`DECODE_GROUP_MAX`, run as one KV head per query head). The two are
    different code paths with different per-CTA costs, so each gets its own fitted section
    (``generation_attention/<dtype>/xqa``, ``.../mmha``). Evidence (AIConfigurator, TRT-LLM 1.3.0rc20,
    batch 1024, 2-token contexts, head dim 128, bf16 cache): H100 MHA 8 / 8 heads 81 us, 32 / 32
    354 us (10-11 ns per sequence x head); XQA 16 / 8 293 us, 128 / 8 336 us, 2 / 1 43 us (36 ns per
    sequence x KV head, 3.5x MHA's per head, almost independent of the query heads); L40S alike
    (1 / 1 11 us, 2 / 1 30 us). One section for both priced MHA rows 20-45% slow and XQA rows 50-70%
    fast at short contexts (H100 TRT-LLM decode 15.5% / 48% median / p90 over the table).

    vLLM's FlashAttention decode packs a KV head's query-head group into the query tile when the
    group exceeds 1 (``seqlenq_ngroups_swapped``), and only that path splits the KV (split-KV); MHA
    (group 1) runs the varlen kernel, one CTA per (sequence, head) streaming its whole context, so the
    two get their own sections too (``.../gqa``, ``.../mha``; the fitted ``split`` tells them apart).
    Evidence (L40S, vLLM 0.24 FA2, head dim 128, bf16 cache): MHA at batch 1-2 and 1-64 heads takes
    305 us at 16,384 tokens and 2.4 ms at 131,072 whatever the heads (one CTA per head at 27 GB/s,
    no split), GQA 2 / 1 47 us at 131,072; one section priced MHA at batch 1 and long contexts 70-82%
    fast and MHA at batch 16-128, short contexts 60-130% slow."""
    fw = framework or ""
    if fw not in ("trtllm", "vllm"):
        return None
    h = np.asarray(h, float)
    kvh = np.maximum(np.asarray(kvh, float), 1.0)
    g = h / kvh
    if fw == "vllm":
        return np.where((g > 1.0) & ~_fa2_windowed(window, source), "gqa", "mha")
    return np.where((g > 1.0) & (g <= DECODE_GROUP_MAX["trtllm"]), "xqa", "mmha")


#: decode kernel sources whose head-dim instantiations time as distinct kernels: (framework, source) ->
#: head dims that get a family of their own, ``<source>_hd<dim>``. Evidence (H100 SGLang FA3 decode, bf16
#: cache, 2-token contexts): batch 1 takes 9.3 / 9.3 / 15.9 / 11.2 us at head dim 64 / 128 / 192 / 256 (not
#: monotone in the head dim, so not the head-dim share of the floor, ``hd_floor``) and batch 2,048 takes
#: 65 / 193 / 92 / 281 us: head dim 192 scales with the batch as no other; one section priced its 4,456 rows
#: 29% fast. vLLM's FA3 times head dim 192 between 128 and 256 (12.1 us), so the split is SGLang's build.
#: (Which template parameters differ is not established from the source here: an observed kernel path.)
DECODE_HD_PATHS = {("sglang", "fa3"): (192,)}
#: head dims whose decode kernels are builds of their own within each of a framework's decode families
#: (``<family>_hd<dim>``): TensorRT-LLM's XQA and masked-MHA kernels are precompiled per head size, as its context
#: FMHA (:data:`PREFILL_HD_PATHS`).
DECODE_FAMILY_HD = {"trtllm": (128, 192, 256)}


#: decode kernel sources a framework dispatches to a tensor-core kernel by the query-head group: (framework,
#: source) -> the least group size that takes it with a 16-bit cache; those rows get the family
#: ``<source>_tc`` (an fp8 cache always takes it, so its rows stay the one family they are). Source: SGLang's
#: FlashInfer backend, ``should_use_tensor_core``
#: (python/sglang/srt/layers/attention/flashinfer_backend.py): fp8 KV -> tensor cores; fp16 / bf16 KV -> tensor
#: cores when ``num_attention_heads // num_kv_heads >= 4`` (FlashInfer's prefill kernel then fuses the head
#: group into the MMA's token rows); otherwise FlashInfer's CUDA-core decode kernel. The tensor-core rows are
#: split again by the kernel's query tile (FlashInfer's ``FA2DetermineCtaTileQ``: ``<family>_q64`` /
#: ``_q128``). Evidence (L40S SGLang, fp8 cache, head dim 128): groups 24-64 (tile 64) priced 31-35% fast and
#: 96-128 (tile 128) 4-8% by one section fitted mostly on groups <= 16; bf16 head dim 256 groups >= 24 21-27%
#: slow.
DECODE_TC_PATHS = {("sglang", "flashinfer"): 4}


#: decode kernel sources of FlashInfer's tensor-core kernel whatever the group: (framework, source). vLLM's
#: FlashInfer decode (its fp8-cache rows on L40S): groups above 16 (the 64-row query tile) measure 35-45% slower
#: than one section of all groups priced them (head dim 128), the tile break of :func:`_tile_split`.
DECODE_TC_SOURCES = {("vllm", "vllm_flashinfer_fidecode")}


def _tile_split(df, fam, tc, rows=None):
    """``fam`` (family names, an array) with the ``tc`` rows (FlashInfer tensor-core decode) split by the kernel's
    query tile over the packed query rows (one query x the head group in decode), FlashInfer's
    ``FA2DetermineCtaTileQ``: 16 rows up to 16, 64 above, 128 above 64 below head dim 256; each tile size is
    its own kernel configuration (``<family>_q64`` / ``_q128``; the 16-row one keeps the family's name)."""
    if not np.any(tc):
        return fam
    grp = np.floor(_col(df, "num_heads") / np.maximum(_col(df, "num_key_value_heads"), 1.0))
    hd = _col(df, "head_dim", HD_REF)
    tile = flashinfer_query_tile(grp if rows is None else rows, hd)
    out = np.asarray(fam).astype(object)
    for q in (64, 128):
        out = _suffix(out, tc & (tile == q), f"_q{q}")
    return out


def flashinfer_query_tile(rows, hd):
    """FlashInfer's query tile over ``rows`` packed query rows (``FA2DetermineCtaTileQ``): 16 up to 16 rows, 64
    above, 128 above 64 below head dim 256 (decode: one query x the head group; prefill: the tokens x the group)."""
    rows, hd = np.asarray(rows, float), np.asarray(hd, float)
    return np.where((rows > 64) & (hd < 256), 128.0, np.where(rows > 16, 64.0, 16.0))


#: prefill kernels that apply a sliding window as a mask over every KV tile up to the query (the loop is not
#: shortened, so the work is the full causal one) and run the windowed calls as a specialisation of their own
#: (family ``<source>_swa``): SGLang's Triton extend-attention backend. Evidence (L40S SGLang Triton, fp8, 64 / 8
#: heads, head dim 64, batch 1): window 128 takes 11.9 ms at 16,384 tokens against 15.0 ms without a window
#: (the band's work would be 1 / 64 of it), 3.2 / 3.8 ms at 8,192; and 14 us against 6 us at 1-64 tokens.
PREFILL_MASKED_WINDOW = {"sglang": ("triton",)}


def masked_window(src, framework: str):
    """Rows (``src``: their kernel sources) whose prefill kernel masks the sliding window
    (:data:`PREFILL_MASKED_WINDOW`)."""
    return np.isin(src, PREFILL_MASKED_WINDOW.get(framework or "", ()))


#: the same for prefill (``context_attention``). Evidence (H100 SGLang FA3 prefill, no window): head dim 192
#: rows priced 15% fast (median signed, 1,632 rows) by the section that prices head dims 128 / 256 within 2%.
#: TensorRT-LLM's context FMHA is a precompiled kernel per head size and dtype (fmha_v2): on L40S its fp8 rows
#: at head dim 128 ran 82% faster than the one section fitted mostly on head dim 64 priced them (signed median,
#: 6,696 rows), head dim 192 39% faster, 256 24% slower; each head dim of 128, 192, 256 is a section of its own.
PREFILL_HD_PATHS = {("sglang", "fa3"): (192,), ("trtllm", "torch_flow"): (128, 192, 256)}


def _kernel_families(df, kind, framework: str, names, src):
    """``names`` (each row's family: its kernel source, or :func:`decode_family`'s) with the kernel paths the
    tables show split off: decode's tensor-core dispatch (:data:`DECODE_TC_PATHS`: ``<source>_tc``), the
    tensor-core rows' query tile (:func:`_tile_split`, with :data:`DECODE_TC_SOURCES`) and head-dim
    instantiations (:data:`DECODE_HD_PATHS`, prefill :data:`PREFILL_HD_PATHS`); ``names`` itself where none
    applies."""
    if not isinstance(src, np.ndarray):  # rows without a kernel source: the framework's head-dim builds only
        return decode_family_hd(names, _col(df, "head_dim", HD_REF), framework) \
            if kind == "generation_attention" and names is not None else names
    if kind == "context_attention":
        out = _split_hd(df, framework, names, PREFILL_HD_PATHS, src)
        # FlashInfer prefill: each query tile over the packed rows (the prompt x the head group) its own kernel
        fi = _in(src, FLASHINFER_PREFILL_SOURCES)
        if np.any(fi):
            grp = np.floor(_col(df, "num_heads") / np.maximum(_col(df, "num_key_value_heads"), 1.0))
            out = _tile_split(df, out, fi, rows=_col(df, "isl") * grp)
        # a masked-window path of its own (PREFILL_MASKED_WINDOW: another kernel specialisation, its own floor)
        return _suffix(out, masked_window(src, framework) & (_col(df, "window_size") > 0), "_swa")
    if kind == "generation_mla":
        return mla_decode_family(names, _col(df, "num_heads"), src)
    if kind != "generation_attention":
        return names
    out = names
    tc = np.isin(src, [s_ for fw, s_ in DECODE_TC_SOURCES if fw == framework])
    for (fw, source), g in DECODE_TC_PATHS.items():
        if fw != framework or not np.any(src == source):
            continue
        kvd = (df["kv_cache_dtype"].astype(str).to_numpy() if "kv_cache_dtype" in df.columns
               else np.full(len(df), ""))
        grp = np.floor(_col(df, "num_heads") / np.maximum(_col(df, "num_key_value_heads"), 1.0))
        # an fp8 cache takes the tensor-core kernel at every group size: its rows keep their family's name
        fp8 = np.char.find(kvd.astype(str), "fp8") >= 0
        m = (src == source) & ~fp8 & (grp >= g)
        out = _suffix(out, m, "_tc")
        tc = tc | ((src == source) & (fp8 | (grp >= g)))
    out = _split_hd(df, framework, _tile_split(df, out, tc), DECODE_HD_PATHS, src)
    return decode_family_hd(out, _col(df, "head_dim", HD_REF), framework)


#: MLA decode kernels that run a rank holding one query head on a path of its own (family ``<source>_g1``): vLLM's
#: Triton MLA decode calls its grouped kernel (query heads in blocks of 16 per KV head, tensor-core dots over the
#: 576-wide latent) for a group of two or more heads and its non-grouped one for a group of one (vLLM
#: ``triton_decode_attention.decode_attention_fwd``: ``kv_group_num == 1``). Evidence (A100 vLLM 0.14 MLA decode):
#: at 65,535 tokens one head takes 7.8 ms at batch 1 and 18.9 ms at batch 64 where 2-16 heads (one head block) take
#: 1.65 and 5.5 ms alike; L40S 5.2 / 7.1 ms against 1.2 / 6.5 ms. One section priced both (the one-head rows 0.04-0.5x
#: of measured at long contexts: the group's p90 61-62%). SGLang's Triton decode (source ``triton``) makes the same
#: dispatch (its ``decode_attention_fwd``, the kernel both took from LightLLM): on L40S one head costs 21 us at
#: batch 1 and short contexts where 2-16 heads cost 14 us.
MLA_G1_SOURCES = ("vllm_triton_mla", "triton")


def mla_decode_family(names, num_heads, src):
    """MLA decode family names (an array, per table row) with a one-query-head row of :data:`MLA_G1_SOURCES` as
    ``<source>_g1``; ``names`` itself where no row is one (the serving step picks its rank's family in
    :class:`~simllm.cost.layer_kernels.LayerKernels`)."""
    return _suffix(names, np.isin(np.asarray(src).astype(str), MLA_G1_SOURCES) & (np.asarray(num_heads, float) == 1.0),
                   "_g1")


def decode_family_hd(family, head_dim, framework: str):
    """``family`` (decode family names, an array, or one name) with ``_hd<dim>`` where the framework builds that head
    dim's decode kernels of their own (:data:`DECODE_FAMILY_HD`): the section the tables' rows and the serving step
    read."""
    dims = DECODE_FAMILY_HD.get(framework or "", ())
    if not dims:
        return family
    if np.ndim(family) == 0 and np.ndim(head_dim) == 0:
        return f"{family}_hd{int(head_dim)}" if int(head_dim) in dims else family
    out = np.asarray(family).astype(object)
    hd = np.asarray(head_dim, float)
    for d in dims:
        out = _suffix(out, hd == d, f"_hd{d}")
    return out


def _suffix(names, mask, suffix: str):
    """``names`` (an array of family names) with ``suffix`` appended where ``mask``; ``names`` itself where none."""
    if not np.any(mask):
        return names
    return np.where(mask, np.char.add(np.asarray(names).astype(str), suffix), names)


def _split_hd(df, framework: str, out, paths: dict, src):
    """``out`` with the rows of ``paths``' (framework, source) at its head dims renamed ``<source>_hd<dim>``
    (``src``: the rows' kernel sources)."""
    for (fw, source), dims in paths.items():
        if fw != framework:
            continue
        hd = _col(df, "head_dim", HD_REF)
        for d in dims:
            m = (src == source) & (hd == d)
            if m.any():
                out = np.where(m, f"{source}_hd{d}", out)
    return out


def _attn_groups(df, kind, framework: str = ""):
    """:func:`_groups` with the decode kernel family (:func:`decode_family`) as the source where the
    framework has several, and the kernel paths of :func:`_kernel_families` split off: (dtype, source, mask)."""
    src = df["kernel_source"].astype(str).to_numpy() if "kernel_source" in df.columns else ""
    fam = decode_family(_col(df, "num_heads"), _col(df, "num_key_value_heads"), framework, _col(df, "window_size"),
                        src) if kind == "generation_attention" else None
    names = _kernel_families(df, kind, framework, src if fam is None else fam, src)
    if names is src:
        yield from _groups(df)
        return
    dt = _dtype_key(df)
    key = np.char.add(np.char.add(dt.astype(str), "\x1f"), np.asarray(names).astype(str))
    for k in pd.unique(key):
        d, f = str(k).split("\x1f", 1)
        yield d, f, key == k


def decode_tail_share(tiles, cus: float):
    """Share of a decode batch's length spread that paces its attention kernel (0..1).

    The tables time batches of equal contexts; a serving batch mixes contexts. The decode kernel runs
    ``tiles`` (sequence x KV-head) work items over ``cus`` SMs without splitting the KV when there are
    enough of them (FA3: at least 0.8 x SMs), about ``w = tiles / cus`` items per SM; the GPU's block
    scheduler hands the next item to whichever SM frees first (list scheduling), so the kernel ends at the
    mean SM load plus what the last SMs still run when the queue empties: each SM is then part-way through
    an item whose remaining time follows the length-biased residual distribution. Assumption (the engine
    gives the batch's mean and longest context, not its distribution): lengths spread uniformly up to the
    longest. The residuals of ``m`` SMs then have mean 1/3 of the longest and maximum about
    ``1 - 1/sqrt(m)`` of it, so the kernel runs ``(2/3 - 1/sqrt(m))`` of the longest item over the mean load:
    ``min(1, (4/3 - 2/sqrt(m)) / w)`` of the excess ``w (max - mean)`` (1.16 / w on 132 SMs). All of it with
    about one item per SM (few KV heads per rank), a small part with many (multi-head attention at large
    batch). With fewer items than SMs the KV is split evenly per sequence and the longest sequence's splits
    still set the pace (1). No fitted parameter; a test checks the form against a Monte Carlo of list
    scheduling. Evidence: vLLM v0.15.1 on H100 (../shared/data/e2e), Llama-2-70B TP4 (2 KV heads per rank)
    decodes 128 sequences of 1,083-2,531 tokens in 29.6 ms per step (inter-token p75) where equal-length
    pricing gives 26.0 ms, while Llama-2-7B (32 KV heads, many items per SM) matches equal-length pricing
    within 5%. (A static split of the items over the SMs, ``min(1, z / sqrt(3 w))``, the first form tried,
    over-priced Llama-2-7B's steps by 6-17%.)"""
    w = np.maximum(np.asarray(tiles, dtype=float), 1e-9) / max(float(cus), 1.0)
    m = max(float(cus), 2.0)
    return np.minimum(1.0, (4.0 / 3.0 - 2.0 / math.sqrt(m)) / w)


#: prefill kernel sources that pack the query heads sharing a KV head into the rows of one query tile, always:
#: FlashAttention 3 (Hopper) called through the varlen interface (vLLM, SGLang; FA3's ``get_pack_gqa`` is on for
#: every varlen call with fewer KV heads than query heads) and FlashInfer's prefill (its rows are the query
#: tokens x the head group). FlashAttention 2 (:data:`PREFILL_SWAP_SOURCES`) does it only for one-token queries.
PACK_GQA_SOURCES = ("vllm_flash_attn_fa3", "fa3")
FLASHINFER_PREFILL_SOURCES = ("flashinfer", "vllm_flashinfer", "vllm_flashinfer_fiprefill")
#: FlashAttention 2 prefill sources (vLLM on sm80 / sm89, SGLang's ``flash_attention``): with one query token per
#: sequence, no sliding window and grouped heads the kernel swaps the head group into the query rows
#: (``seqlenq_ngroups_swapped``), one tile per (sequence, KV head); otherwise one per query head.
PREFILL_SWAP_SOURCES = ("vllm_flash_attn", "vllm_flash_attn_fa2", "flash_attention")


def _in(source, names):
    """Whether each kernel source (an array, or one name) is one of ``names``."""
    src = np.asarray(source, dtype=object) if np.ndim(source) else source
    return np.isin(src, names) if np.ndim(src) else np.bool_(src in names)


def prefill_tiles(b, s, h, kvh, hd, source, window=0.0):
    """Query tiles (CTAs) of a prefill attention call of ``b`` sequences of ``s`` query tokens: ``b h ceil(s /
    128)``; where the kernel packs the head group (``g = h / kvh``) into the rows of a tile, ``b kvh ceil(s g /
    m)`` with the kernel's tile rows ``m``: FlashAttention 3 (:data:`PACK_GQA_SOURCES`) 192 at head dim <= 96,
    else 128 (FA3's ``tile_size_fwd_sm90``); FlashInfer (:data:`FLASHINFER_PREFILL_SOURCES`) 16 rows for up to 16
    packed rows, 64 above, 128 above 64 below head dim 256 (``FA2DetermineCtaTileQ``); FlashAttention 2
    (:data:`PREFILL_SWAP_SOURCES`) 128, for one-token queries without a window only. Evidence (one-token prompts,
    batch 256, head dim 128, 1 / 2 / 4 / 8 KV heads, the same at 8 to 96 query heads): H100 vLLM FA3 20 / 27 / 40 /
    67 us; A100 vLLM FA2 20-24 / 34-49 / 52-67 / 84-98; L40S SGLang FlashInfer 7 / 11 / 18 / 31; against
    TensorRT-LLM's kernel on H100, which grows with the query heads (54 us at 8 heads, 342 at 64, any KV heads).
    One tile per query head priced the H100 FA3 rows 17 / 32 / 51 us by their 8 / 32 / 64 query heads."""
    b, s, h, kvh, hd = (np.asarray(x, float) for x in (b, s, h, kvh, hd))
    g = h / np.maximum(kvh, 1.0)
    plain = b * h * np.ceil(s / 128.0)
    fa3, fi, fa2 = _in(source, PACK_GQA_SOURCES), _in(source, FLASHINFER_PREFILL_SOURCES), \
        _in(source, PREFILL_SWAP_SOURCES)
    if not (np.any(fa3) or np.any(fi) or np.any(fa2)):
        return plain
    rows = s * g
    m = np.where(fa3, np.where(hd <= 96, 192.0, 128.0),
                 np.where(fi, flashinfer_query_tile(rows, hd), 128.0))
    pack = (kvh < h) & (fa3 | fi | (fa2 & (s <= 1) & (np.asarray(window, float) <= 0)))
    own = np.where(fa3, b * h * np.ceil(s / m), plain)  # FA3's own tile rows without a group to pack
    return np.where(pack, b * kvh * np.ceil(rows / m), own)


def _attn_shapes(df, kind, framework: str = ""):
    b, isl, step = _col(df, "batch_size"), _col(df, "isl"), _col(df, "step")
    h, kvh, hd = _col(df, "num_heads"), _col(df, "num_key_value_heads"), _col(df, "head_dim", 128)
    w = _col(df, "window_size")
    kvh_own = kvh
    if kind == "generation_attention":
        kvh = decode_kv_heads(h, kvh, framework, w,
                              df["kernel_source"].astype(str).to_numpy() if "kernel_source" in df.columns else "")
    kvb = np.array([KV_BYTES.get(str(v), 2.0) for v in df["kv_cache_dtype"].astype(str)]) \
        if "kv_cache_dtype" in df.columns else np.full(len(df), 2.0)
    ab = np.array([2.0 if ATTN_DTYPES.get(str(v), "bf16") != "fp8" else 1.0 for v in df["dtype"].astype(str)])
    if kind == "context_attention":
        s = isl
        if np.any(w > 0) and "kernel_source" in df.columns:  # a masked window does the whole causal work
            w = np.where(masked_window(df["kernel_source"].astype(str).to_numpy(), framework), 0.0, w)
        # causal pairs per sequence, queries at positions step..step+s-1, capped by the window
        pairs = s * step + s * (s + 1) / 2.0
        capped = np.where(w > 0, np.minimum(pairs, s * np.minimum(w, s + step)), pairs)
        kv_len = np.where(w > 0, np.minimum(s + step, w + s), s + step)
        flops = b * h * 4.0 * hd * capped
        pairs_h = b * h * 4.0 * capped
        nbytes = b * (2 * s * h * hd * ab + 2 * kv_len * kvh * hd * kvb)
        tiles = prefill_tiles(b, s, h, kvh, hd, df["kernel_source"].astype(str).to_numpy()
                              if "kernel_source" in df.columns else "", w)
        kv_bytes = b * 2 * kv_len * kvh * hd * kvb  # of nbytes: the K/V part (the section's kv_cost)
        ctas = tiles
        # a band the prompt has outgrown: each query computes up to window_tile more key positions
        # (_roof_predict), the tiles the band's edges cut through
        over = np.where(w > 0, np.maximum(s + step - w, 0.0), 0.0)
        # one-token queries on FA2 run its swapped grouped-query path, with its transposes (fa2_swap_copies)
        src = df["kernel_source"].astype(str).to_numpy() if "kernel_source" in df.columns else ""
        copies = fa2_swap_copies(b, h, kvh, w, _in(src, PREFILL_SWAP_SOURCES) & (s <= 1)) * (b * h * hd)
        return (flops, nbytes, tiles, ctas, None, b, kvh, pairs_h, (over, (b * h * 4.0 * hd * s, b * h * 4.0 * s, 0.0)),
                kv_bytes, None, copies, None)
    else:
        kv = isl + step
        kv_eff = np.where(w > 0, np.minimum(kv, w), kv)
        flops = b * h * 4.0 * hd * kv_eff
        pairs_h = b * h * 4.0 * kv_eff
        nbytes = b * (2 * h * hd * ab + 2 * kv_eff * kvh * hd * kvb)
        tiles = b * kvh
        ctas = None  # depends on split, a parameter
        # a window the context has outgrown: up to window_tile more key positions are loaded
        # (_roof_predict), at these per-token FLOPs, pair and byte rates
        over = np.where(w > 0, np.maximum(kv - w, 0.0), 0.0)
        per_tok = (b * h * 4.0 * hd, b * h * 4.0, b * 2 * kvh * hd * kvb)
        # of nbytes: the K/V a query head re-reads from its shared KV head on an unpacked path (kvh > the table's own)
        reread = b * 2 * kv_eff * np.maximum(kvh - kvh_own, 0.0) * hd * kvb
        src = df["kernel_source"].astype(str).to_numpy() if "kernel_source" in df.columns else ""
        copies = fa2_swap_copies(b, h, kvh_own, w, _in(src, FA2_SOURCES)) * (b * h * hd)
        return flops, nbytes, tiles, ctas, kv_eff, b, kvh, pairs_h, (over, per_tok), None, reread, copies, \
            b * 2 * h * hd * ab


def _mla_shapes(df, kind):
    b, isl, step, h = _col(df, "batch_size"), _col(df, "isl"), _col(df, "step"), _col(df, "num_heads")
    kvb = np.array([KV_BYTES.get(str(v), 2.0) for v in df["kv_cache_dtype"].astype(str)])
    lat = MLA_KV_LORA + MLA_ROPE
    if kind == "context_mla":
        s = isl
        pairs = s * step + s * (s + 1) / 2.0
        flops = b * h * 2.0 * (MLA_QK_NOPE + MLA_ROPE + MLA_V) * pairs
        nbytes = b * (s * h * (MLA_QK_NOPE + MLA_ROPE + MLA_V) * 2 * 2 + (s + step) * h *
                      (MLA_QK_NOPE + MLA_ROPE + MLA_V) * 2 + (s + step) * lat * kvb)
        tiles = b * h * np.ceil(s / 128.0)
        return flops, nbytes, tiles, tiles, None, b, np.ones(len(df)), b * h * 4.0 * pairs, None, None, None, None, None
    kv = isl + step
    flops = b * h * 2.0 * (lat + MLA_KV_LORA) * kv
    nbytes = b * (kv * lat * kvb + h * (lat + MLA_KV_LORA) * 2)
    tiles = b * np.ceil(h / 64.0)
    return flops, nbytes, tiles, None, kv, b, np.ones(len(df)), b * h * 4.0 * kv, None, None, None, None, \
        b * h * (lat + MLA_KV_LORA) * 2


def _shapes(df, kind, framework: str = ""):
    return _mla_shapes(df, kind) if "mla" in kind else _attn_shapes(df, kind, framework)


def fa2_block_n(hd):
    """Keys per KV block of FlashAttention 2's split-KV decode kernel: 256 up to head dim 64, 128 up to 128, 64 above
    (``run_mha_fwd_splitkv_dispatch``'s ``kBlockN``)."""
    hd = np.asarray(hd, float)
    return np.where(hd <= 64, 256.0, np.where(hd <= 128, 128.0, 64.0))


@lru_cache(maxsize=65536)
def _fa2_splits_one(rows: int, n_blocks: int, cus: int) -> int:
    sm2 = 2 * cus  # FA2 counts two 128-thread blocks per SM
    if rows >= 0.8 * sm2:
        return 1
    top = min(128, sm2, n_blocks)
    effs = []
    for n in range(1, top + 1):
        ok = n == 1 or -(-n_blocks // n) != -(-n_blocks // (n - 1))
        w = rows * n / sm2
        effs.append((w / math.ceil(w)) if ok else 0.0)
    best = max(effs) if effs else 0.0
    for n, e in enumerate(effs, 1):
        if e > 0.0 and e >= 0.85 * best:
            return n
    return 1


def fa2_num_splits(rows, n_blocks, cus: float):
    """KV splits FlashAttention 2 picks for a decode call (``num_splits_heuristic``, flash_api.cpp): one when the
    ``rows`` (sequences x KV heads x 64-row query blocks) nearly fill twice the SMs, else the fewest splits (at most
    128, at most the ``n_blocks`` KV blocks, one whose blocks per split differ from the next smaller count's) whose
    wave efficiency is within 85% of the best. With paged KV (vLLM) the split kernel always runs, and a combine
    kernel follows when it splits (:func:`fa2_combine_time`)."""
    if np.ndim(rows) == 0 and np.ndim(n_blocks) == 0:
        return float(_fa2_splits_one(int(max(rows, 1)), int(max(n_blocks, 1)), int(cus)))
    r, nb = np.broadcast_arrays(np.maximum(np.asarray(rows, float), 1.0), np.maximum(np.asarray(n_blocks, float), 1.0))
    pairs, inv = np.unique(np.stack([r.ravel(), nb.ravel()], axis=1).astype(np.int64), axis=0, return_inverse=True)
    sp = np.array([_fa2_splits_one(int(a), int(b_), int(cus)) for a, b_ in pairs], dtype=float)
    return sp[inv.ravel()].reshape(r.shape)


def fa2_combine_time(splits, bh, hd, acc, s):
    """Seconds of FlashAttention 2's split-KV combine kernel, which runs when the decode call splits: its launch and
    fixed work ``combine_s`` (fitted) plus reading every split's fp32 partial output and writing the bf16 result,
    ``(4 splits + 2) x sequences x query heads x head dim`` bytes. Evidence (A100 vLLM FA2 decode, 8 / 1 heads, head
    dim 128): 12-13 us at 2-128 context tokens for batch 1-64 (one 128-key block: one split, no combine) and 17-18 us
    from 256 (two blocks: two splits and the combine), against 18 us priced throughout by a fitted tokens-per-split
    that never split."""
    if np.ndim(splits) == 0 and np.ndim(bh) == 0 and np.ndim(hd) == 0:  # the serving step's scalar decode
        return s.get("combine_s", 0.0) + (4.0 * splits + 2.0) * bh * hd / (acc.hbm_bw * s["me"]) if splits > 1 else 0.0
    sp = np.asarray(splits, float)
    t = s.get("combine_s", 0.0) + (4.0 * sp + 2.0) * np.asarray(bh, float) * np.asarray(hd, float) / (
        acc.hbm_bw * s["me"])
    return np.where(sp > 1.0, t, 0.0)


def fa2_swap_copies(b, h, kvh, window, fa2):
    """Whether a FlashAttention 2 decode call copies its query in and its output out around the kernel (1.0) or not
    (0.0). FA2 runs grouped-query decode with the query heads of a KV head as rows of one tile
    (``seqlenq_ngroups_swapped``: no window, ``h > kvh``), reshaping the query ``[b, 1, kvh g, d]`` to ``[b, g, kvh,
    d]`` and the output back: a transpose that is a view only when ``b`` or ``kvh`` is 1, and otherwise two copy
    kernels. Evidence (vLLM FA2 decode at 2-token contexts): A100 12.2-12.7 us at batch 1 for every head layout and at
    any batch for one KV head, 17.2-19.9 us from batch 2 for 2-8 KV heads, MHA 10.7-11.2 us; L40S 8.7-9.3 us against
    12.3-12.9 us alike."""
    if all(np.ndim(x) == 0 for x in (b, h, kvh, window, fa2)):  # the serving step's scalar decode
        return 1.0 if (fa2 and window <= 0 and h > kvh and b >= 2 and kvh >= 2) else 0.0
    b, h, kvh = (np.asarray(x, float) for x in (b, h, kvh))
    nowin = np.asarray(window, float) <= 0
    return np.where(np.asarray(fa2, bool) & nowin & (h > kvh) & (b >= 2) & (kvh >= 2), 1.0, 0.0)


def fa2_swap_copy_time(copies, acc, s):
    """Seconds of the two copies of :func:`fa2_swap_copies` for ``copies`` = (sequences x query heads x head dim) of
    the calls that make them (0 elsewhere): ``swap_copy_s`` (fitted: two launches) plus the bf16 query and output
    read and written once each (8 bytes per element)."""
    if np.ndim(copies) == 0:
        return s["swap_copy_s"] + 8.0 * copies / (acc.hbm_bw * s["me"]) if copies > 0 else 0.0
    c = np.asarray(copies, float)
    return np.where(c > 0, s["swap_copy_s"] + 8.0 * c / (acc.hbm_bw * s["me"]), 0.0)


def decode_splits(kv, rows, cus: float, s: dict):
    """KV splits per (sequence, KV head) of a decode kernel: ``ceil(kv / split)`` (a split per ``split``
    tokens), and for a section with ``split_waves`` > 0 at most ``ceil(split_waves x SMs / rows)``, rows =
    sequences x KV heads (an occupancy-driven split count: the kernel splits a sequence's KV only as far
    as it takes to fill the SMs, as TensorRT-LLM's XQA multi-block mode and FlashAttention's
    ``num_splits`` heuristic do). Evidence (H100 TRT-LLM XQA, batch 64, 4,096-token contexts, bf16 cache):
    the achieved KV bandwidth grows with the KV heads, 1.27 / 2.00 / 2.57 / 2.80 TB/s at 1 / 2 / 4 / 8 KV
    heads (head dim 64), 1.9 / 2.5 / 2.8 / 2.95 TB/s (head dim 128), as 64 x KV heads work items split
    to about one wave run on too few CTAs per SM; a split per ``split`` tokens (6 per sequence here)
    fills the SMs at every KV-head count and priced 1 KV head 14-30% fast, 8 KV heads 15-32% slow."""
    w = s.get("split_waves", 0.0)
    if np.ndim(kv) == 0 and np.ndim(rows) == 0:  # the serving step's scalar decode: plain floats
        n = float(math.ceil(max(float(kv), 1.0) / max(s["split"], 1.0)))
        return min(n, max(1.0, float(math.ceil(w * cus / max(float(rows), 1.0))))) if w > 0 else n
    n = np.ceil(np.maximum(kv, 1.0) / max(s["split"], 1.0))
    if w > 0:
        n = np.minimum(n, np.maximum(1.0, np.ceil(w * cus / np.maximum(rows, 1.0))))
    return n


def _roof_predict(shapes, acc, peak, s, bench: bool = True, hd=None):
    flops, nbytes, tiles, ctas, kv, b, kvh, pairs_h, win, kv_bytes, reread, copies, qo = shapes
    flat = None
    if qo is not None and "qo_flat" in s:  # the query / output bytes stream device-wide (_roof's flat)
        nbytes, flat = nbytes - qo, qo
    if kv_bytes is not None and s.get("kv_cost", 1.0) != 1.0:  # prefill: the K/V bytes at their own cost
        nbytes = nbytes + (s["kv_cost"] - 1.0) * kv_bytes
    wt = s.get("window_tile", 0.0)
    if win is not None and wt > 0.0:  # decode past a sliding window: the extra key positions it loads
        over, (f_tok, p_tok, b_tok) = win
        extra = np.minimum(over, wt)
        flops, pairs_h, nbytes = flops + extra * f_tok, pairs_h + extra * p_tok, nbytes + extra * b_tok
        kv = None if kv is None else kv + extra
    bh = pairs_h / (4.0 * np.maximum(kv, 1.0)) if kv is not None else None  # sequences x query heads
    flops = flops + pairs_h * s.get("hd0", 0.0)
    comb = None
    if ctas is None:
        if "combine_s" in s and hd is not None:  # FlashAttention 2's own split heuristic and combine kernel
            mb = np.ceil(bh / np.maximum(b * kvh, 1.0) / 64.0)  # 64-row query blocks of the swapped head group
            sp = fa2_num_splits(b * kvh * mb, np.ceil(np.maximum(kv, 1.0) / fa2_block_n(hd)),
                                float(acc.compute_units.value))
            ctas = b * kvh * sp
            comb = fa2_combine_time(sp, bh, hd, acc, s)
        else:
            ctas = b * kvh * decode_splits(kv, b * kvh, float(acc.compute_units.value), s)
    if reread is not None and s.get("reread_gbps", 0.0) > 0.0 and np.any(reread > 0):
        if win is not None and wt > 0.0:  # the window's extra key positions are re-read too
            reread = reread * (kv / np.maximum(kv - extra, 1.0))
        lo, bo = _roof(flops, nbytes - reread, tiles, ctas, acc, peak, s, bench=bench, reread=reread, flat=flat)
    else:
        lo, bo = _roof(flops, nbytes, tiles, ctas, acc, peak, s, bench=bench, flat=flat)
    if comb is not None:
        bo = bo + comb
    if copies is not None and "swap_copy_s" in s:
        bo = bo + fa2_swap_copy_time(copies, acc, s)
    return lo, bo


def attention_launch_and_body(df, kind, acc, cal, bench: bool = True):
    """(launch, body) seconds of attention / MLA rows (contract columns) on ``acc``; ``bench``: as
    the tables measured them, back-to-back calls whose working set may stay in L2
    (:func:`bench_l2_resident`); False: the serving step's semantics (what
    :class:`~simllm.cost.layer_kernels.LayerKernels` prices)."""
    launch = np.full(len(df), np.nan)
    body = np.full(len(df), np.nan)
    older = older_label_sections(cal, kind)
    raw = df["kernel_source"].astype(str).to_numpy() if older and "kernel_source" in df.columns else None
    for d, src, sel in _attn_groups(df, kind, getattr(cal, "framework", "")):
        if _base_dtype(d) not in ATTN_DTYPES:
            continue
        parts = [(src, sel)]
        if raw is not None:  # rows of a label only older versions carry: that label's own section (not the family's)
            labs = [lab for lab in pd.unique(raw[sel]) if (d, lab) in older]
            own = [(lab, sel & (raw == lab)) for lab in labs]
            rest = sel & ~np.isin(raw, labs) if labs else sel
            parts = own + ([(src, rest)] if rest.any() else [])
        peak = strict_peak(acc, ATTN_DTYPES[_base_dtype(d)])
        for name, m in parts:
            s = {**ROOF_DEFAULT, **_sec(cal, kind, d, name)[0]}
            hd = _col(df[m], "head_dim", HD_REF)
            s = _hd_scaled(s, hd, kind)
            lo, bo = _roof_predict(_shapes(df[m], kind, getattr(cal, "framework", "")), acc, peak, s, bench=bench,
                                   hd=hd)
            launch[m], body[m] = lo, bo
    return launch, body


def older_label_sections(cal, kind: str) -> set:
    """(section dtype, label) of the ``kind`` sections ``calibrate fit`` wrote for kernel labels that only older
    framework versions carry (the framework's ``fit.older_labels`` record, :func:`simllm.cost.older_labels.fit_older_labels`).
    Rows so labelled are priced by that section, before any kernel family the row's shape would name: the label's
    rows were timed by that version's own kernel (vLLM 0.19's decode rows, ``vllm_flash_attn``, by one section for
    GQA and MHA alike, fitted on them)."""
    out = set()
    for name in older_label_record(cal, getattr(cal, "framework", None) or ""):
        k, _, rest = name.partition("/")
        if k == kind and "/" in rest:
            d, lab = rest.split("/", 1)
            out.add((d, lab))
    return out


def _price_attn(kind):
    def f(df, acc, cal):
        lo, bo = attention_launch_and_body(df, kind, acc, cal)
        return lo + bo
    return f


_BOUNDS = {"ce": (0.02, 1.0), "me": (0.05, 1.2), "launch_s": (0.0, 5e-3), "p": (1.0, 20.0), "a": (0.0, 1.0),
           "split": (16.0, 1048576.0), "occ": (0.05, 64.0), "hd0": (0.0, 512.0),
           "cta_s": (0.0, 1e-3), "hd_floor": (0.0, 1.0), "l2_bpf": (0.0, 0.1), "split_waves": (0.0, 64.0),
           "window_tile": (0.0, 1024.0), "kv_cost": (0.3, 8.0), "reread_gbps": (1.0, 2000.0), "combine_s": (0.0, 1e-4),
           "swap_copy_s": (0.0, 1e-4)}
#: section keys that choose a kernel path rather than a fitted value (carried from the start section into a refit)
STRUCTURAL_KEYS = ("qo_flat",)
_SCALE = {"launch_s": 1e-6, "cta_s": 1e-6, "combine_s": 1e-6, "swap_copy_s": 1e-6}


def _fit_roof(kind):
    def fitter(df, acc, cal, iters: int = 800, max_rows: int = 6000) -> dict:
        from .fit import nelder_mead

        out = {}
        dt = _dtype_key(df)
        keys = roof_keys(kind)
        jobs = [(d, "", dt == d) for d in sorted(pd.unique(dt))]
        jobs += [(d, src, m) for d, src, m in _attn_groups(df, kind, getattr(cal, "framework", ""))
                 if src and m.sum() >= MIN_GROUP and (dt == d).sum() > m.sum()]
        for d, src, m in jobs:
            if _base_dtype(d) not in ATTN_DTYPES:
                continue
            sub = df[m]
            sub = sub.iloc[_subsample(len(sub), max_rows)]
            keys = [k for k in keys if k not in ("window_tile", "reread_gbps", "combine_s", "swap_copy_s")] + \
                list(window_keys(sub, kind)) + list(reread_keys(sub, kind, getattr(cal, "framework", ""))) + \
                list(fa2_keys(sub, kind))
            t = sub["latency_s"].to_numpy(float)
            shp = _shapes(sub, kind, getattr(cal, "framework", ""))
            hd = _col(sub, "head_dim", HD_REF)
            peak = strict_peak(acc, ATTN_DTYPES[_base_dtype(d)])
            s0 = {**ROOF_DEFAULT, **_sec(cal, kind, d, src)[0]}
            s0["launch_s"] = max(s0["launch_s"], float(np.percentile(t, 2)) * 0.5)
            if "hd_floor" in keys and not s0["hd_floor"] and len(np.unique(_col(sub, "head_dim", HD_REF))) > 1:
                s0["hd_floor"] = 0.2  # a start off the bound (the simplex steps relative to it)
            if "split_waves" in keys and not s0.get("split_waves", 0.0):
                s0["split_waves"] = 8.0  # a start off the bound (8 waves: the uncapped split in most rows)
            if not s0.get("l2_bpf", 0.0):
                s0["l2_bpf"] = 0.005  # off the bound too (H100: 1.4 x 3.35 TB/s over 989 TFLOP/s)
            if "combine_s" in keys and not s0.get("combine_s", 0.0):
                s0["combine_s"] = 4e-6  # a start: one more kernel launch
            if "swap_copy_s" in keys and not s0.get("swap_copy_s", 0.0):
                s0["swap_copy_s"] = 5e-6  # a start: two copy kernels
            if "reread_gbps" in keys and not s0.get("reread_gbps", 0.0):
                s0["reread_gbps"] = 40.0  # a start: 5.3 TB/s over H100's 132 SMs
            if "window_tile" in keys and not s0.get("window_tile", 0.0):
                s0["window_tile"] = 64.0  # off the bound (half a 128-token KV tile)
            x0 = [s0[k] / _SCALE.get(k, 1.0) for k in keys]

            def f(x):
                s = dict(s0)
                for k, v in zip(keys, x):
                    lo, hi = _BOUNDS[k]
                    v = v * _SCALE.get(k, 1.0)
                    if not lo <= v <= hi:
                        return np.inf
                    s[k] = v
                lo_, bo = _roof_predict(shp, acc, peak, _hd_scaled(s, hd, kind), hd=hd)
                return _loss(lo_ + bo, t)

            best, bx = np.inf, x0
            for start in (x0, [v * 1.5 for v in x0]):
                x, fx = nelder_mead(f, start, iters=iters, step=0.3)
                if fx < best:
                    best, bx = fx, x
            name = f"{kind}/{d}/{src}" if src else f"{kind}/{d}"
            out[name] = {k: float(v) * _SCALE.get(k, 1.0) for k, v in zip(keys, bx)}
            for k in STRUCTURAL_KEYS:  # a path the start section declares, fitted with it: kept with the fit
                if k in s0:
                    out[name][k] = s0[k]
            if "split" not in keys:
                out[name]["split"] = ROOF_DEFAULT["split"]
        return out
    return fitter


# --------------------------------------------------------------------------- MLA BMM
_BMM = {"mla_gen_pre": (MLA_QK_NOPE, MLA_KV_LORA), "mla_gen_post": (MLA_KV_LORA, MLA_V),
        "mla_ctx_pre": (MLA_QK_NOPE, MLA_KV_LORA), "mla_ctx_post": (MLA_KV_LORA, MLA_V)}


MLA_BMM_COPIES = 1.0
"""Operand copies AIConfigurator's MLA BMM collectors cycle through: one (collector/trtllm/collect_mla_bmm.py
captures one ``bmm_out`` on fixed tensors in a CUDA graph and replays it), so a call whose operands fit
in the L2 reads them from there. ASSUMPTION: the SGLang and vLLM collectors do the same."""


def _mla_bmm_shapes(df):
    """(M, K, N, groups) of MLA's per-head BMMs: tokens x [K, N] for each head (``_BMM``)."""
    op = df["op_name"].astype(str).to_numpy()
    K = np.array([_BMM.get(o, (np.nan, np.nan))[0] for o in op], float)
    N = np.array([_BMM.get(o, (np.nan, np.nan))[1] for o in op], float)
    return _col(df, "num_tokens"), K, N, _col(df, "num_heads")


def price_mla_bmm(df, acc, cal) -> np.ndarray:
    """MLA's absorbed per-head BMMs (q_nope x W_UK, latent x W_UV) as ``num_heads`` GEMMs of one call in the
    GEMM tile model (its own ``mla_bmm/<dtype>`` section, else the GEMM one), with the benchmark's single
    operand copy in L2 (:data:`MLA_BMM_COPIES`) and, for fp8, the activation-quantization pass the collector
    runs before the block-scaled BMM (``fp8_batched_quantize_1x128_permute102``). Evidence (L40S, 96 MiB L2):
    bf16 post-BMMs of 16K tokens x 128 heads stream 2.7 GB at 68% of DRAM bandwidth while calls of < 50 MB run
    faster than DRAM allows; without the L2 term one memory efficiency served both (fitted at its 1.2
    bound: 29-31% median error, small calls too slow and large ones 40% fast); fp8 rows without the quant
    pass were 3x too fast at large sizes."""
    out = np.full(len(df), np.nan)
    op = df["op_name"].astype(str).to_numpy()
    dt = df["dtype"].astype(str).to_numpy()
    ok = np.isin(op, list(_BMM))
    M, K, N, G = _mla_bmm_shapes(df)
    for d in pd.unique(dt):
        sel = ok & (dt == d)
        if d not in GEMM_DTYPES or not sel.any():
            continue
        lo, bo = gemm_launch_and_body(M[sel], K[sel], N[sel], d, acc, cal, groups=G[sel],
                                      kind="mla_bmm", copies=MLA_BMM_COPIES, l2_smooth=True)
        out[sel] = lo + bo
    return out


def fit_mla_bmm(df, acc, cal, iters: int = 1500, restarts: int = 8) -> dict:
    """The GEMM tile model refitted on the per-head BMMs (``mla_bmm/<dtype>`` sections), from their own
    sections where the calibration has them; ``restarts``: simplex restarts (the tables are small, a few
    hundred rows, and the simplex stalls early on the min-of-tiles model)."""
    ok = df["op_name"].astype(str).isin(list(_BMM)).to_numpy()
    return fit_gemm_kind(df[ok], acc, cal, iters=iters, restarts=restarts, kind="mla_bmm", shapes=_mla_bmm_shapes,
                         copies=MLA_BMM_COPIES, l2_smooth=True)


register("gemm", price_gemm, fit_gemm_kind)
for _k in ("context_attention", "generation_attention", "context_mla", "generation_mla"):
    register(_k, _price_attn(_k), _fit_roof(_k))
register("mla_bmm", price_mla_bmm, fit_mla_bmm)

__all__ = ["strict_peak", "gemm_launch_and_body", "attention_launch_and_body", "price_gemm", "price_mla_bmm",
           "GEMM_DTYPES", "ATTN_DTYPES", "KV_BYTES", "decode_tail_share",
           "decode_floor_scale", "decode_family", "decode_splits"]
