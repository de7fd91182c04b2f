"""The serving step's kernels priced with the kernel-class physics of :mod:`simllm.cost.kernel_models`.

:class:`LayerKernels` binds one (model, device, tp, dtypes, calibration for a framework) and prices
the kernels a step of the serving simulation runs, each as ``(launch seconds, body seconds)`` so a
caller that replays a step as one CUDA graph can drop per-kernel launches:

* GEMMs through :func:`~simllm.cost.kernel_models.gemm_launch_and_body` in the table dtype the
  deployment's (weight, activation) dtypes run (:func:`gemm_table_dtype`); a device without the
  datasheet peak of that dtype is an InputError (``strict_peak``), raised when the model is built.
* Attention from the step's aggregates, with the same roofline + waves + CTA terms as the table
  pricer (``kernel_models._roof``), in pure Python for scalars (the simulator's hot path) and numpy
  for an array of decode contexts (the engine's jumps), the two agreeing to rounding.

Aggregates -> kernel shapes (assumptions, written down): the prefill chunks of a step run as one
varlen kernel over ``seqs`` sequences of the mean chunk length ``T / seqs`` (query tiles per head
``seqs * ceil(T / seqs / 128)``); the K/V positions it reads are estimated from the attention work
``W = sum chunk * (cached + chunk / 2)`` as ``seqs * W / T + T / 2`` (exact for one sequence); decode
runs ``seqs x kv_heads x splits`` CTAs (split-KV at the mean context, ``kernel_models.decode_splits``).

A calibration without kernel sections (a file fitted on Vidur's tables only, or the built-in
defaults) is priced with its legacy ``gemm`` and ``attention`` parameters, mapped onto the same
physics (the tile model's ``GemmParams``; attention ``compute_efficiency``, ``memory_efficiency``,
``kernel_overhead_s`` as ``ce``, ``me``, ``launch_s``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np

from ..errors import InputError
from .kernel_models import (ATTN_DTYPES, GEMM_DTYPES, ROOF_DEFAULT, UNCALIBRATED, _gemm_params, _l2, _sec, _sustain,
                            decode_family, decode_family_hd, decode_floor_scale, decode_kv_heads, decode_splits, decode_tail_share,
                            fa2_block_n, fa2_combine_time, fa2_num_splits, fa2_swap_copies, fa2_swap_copy_time,
                            MLA_G1_SOURCES, quant_rows, strict_peak)
from .kernels import gemm_floor, gemm_time

FRAMEWORKS = ("vllm", "trtllm", "sglang")
DECODE_GRID = 4.0  # tokens of mean context per sequence between memoized decode-attention points
WIDE = {"bf16", "fp16", "fp32", "tf32"}
# simllm dtype name -> the tables' dtype string
TABLE_NAME = {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8", "int8": "int8", "fp4": "nvfp4", "int4": "int4",
              "fp32": "float32", "tf32": "float32"}


def gemm_table_dtype(weight_dtype: str, act_dtype: str) -> str:
    """The kernel path (table dtype string) of a GEMM with these weight and activation dtypes.

    Same dtype: bf16/fp16 GEMM, fp8 per-tensor (dynamic activation scales, vLLM's default for fp8
    checkpoints), int8 W8A8 (SmoothQuant, ``sq``), nvfp4. Wide activations with narrow weights:
    weight-only quantization (``int8_wo``, ``int4_wo``); fp8 / fp4 weights with wide activations are
    priced as the weight-only int8 / int4 path of the same weight bytes (assumption: a
    dequantize-in-registers kernel like Marlin; no measured table of fp8-weight-only GEMMs)."""
    if act_dtype in ("fp32", "tf32") or weight_dtype in ("fp32", "tf32"):
        raise InputError(f"no GEMM kernel model for {weight_dtype} weights x {act_dtype} activations "
                         "(the measured kernel paths are bf16/fp16, fp8, int8, int4, fp4)", field="act_dtype")
    if act_dtype in WIDE:
        if weight_dtype in WIDE:
            return "float16" if act_dtype == "fp16" else "bfloat16"
        return {"int8": "int8_wo", "fp8": "int8_wo", "int4": "int4_wo", "fp4": "int4_wo"}[weight_dtype]
    if weight_dtype == act_dtype:
        return {"fp8": "fp8", "int8": "sq", "fp4": "nvfp4", "int4": None}.get(act_dtype) or _bad(weight_dtype, act_dtype)
    return _bad(weight_dtype, act_dtype)


def _bad(w, a):
    raise InputError(f"no GEMM kernel model for {w} weights x {a} activations (narrow activations need "
                     f"weights of the same dtype)", field="act_dtype")


def _legacy_cal(cal):
    """``cal`` with its legacy gemm/attention parameters as kernel sections where it has none."""
    k = dict(cal.kernels or {})
    if not any(s.startswith("gemm/") for s in k):
        g = asdict(cal.gemm)
        g["tiles"] = [list(t) for t in cal.gemm.tiles]
        g["tile_efficiency"] = list(cal.gemm.tile_efficiency)
        k["gemm/bfloat16"] = g
    a = cal.attention
    leg = {"ce": a.compute_efficiency, "me": a.memory_efficiency, "launch_s": a.kernel_overhead_s}
    for kind in ("context_attention", "generation_attention", "context_mla", "generation_mla"):
        if not any(s.startswith(kind + "/") for s in k):
            k[f"{kind}/bfloat16"] = dict(leg)
    return replace(cal, kernels=k)


def _ceil(x: float) -> float:
    return float(math.ceil(x))


class LayerKernels:
    def __init__(self, model, acc, cal, *, tp: int, weight_dtype: str, act_dtype: str, kv_dtype: str,
                 kv_bytes: float):
        self.acc = acc
        self.cal = _legacy_cal(cal)
        self.gemm_dtype = gemm_table_dtype(weight_dtype, act_dtype)
        pk, _, _, _, _ = GEMM_DTYPES[self.gemm_dtype]
        self.gemm_peak = strict_peak(acc, pk)  # fail at build time, not at the first step
        self.bw = acc.hbm_bw
        self.cus = float(acc.compute_units.value)
        a = model.attention
        self.mla = a.kind == "mla"
        base = "float16" if act_dtype == "fp16" else "bfloat16"
        kvname = TABLE_NAME.get(kv_dtype, kv_dtype)
        pre_kind, dec_kind = ("context_mla", "generation_mla") if self.mla else \
            ("context_attention", "generation_attention")
        if act_dtype == "fp8" and kv_dtype == "fp8" and _sec(self.cal, pre_kind, "fp8")[1].startswith(pre_kind + "/fp8"):
            base, key = "fp8", "fp8"  # fp8 attention where the framework's calibration has that kernel path
        else:
            key = base if kvname in (base, "bfloat16", "float16") and kv_bytes >= 2 else f"{base}+kv_{kvname}"
        self.attn_key = key
        self.attn_peak = strict_peak(acc, ATTN_DTYPES[base])
        self.qo_bytes = 1.0 if base == "fp8" else 2.0
        self.kvb = float(kv_bytes)
        self._tabs: dict[int, np.ndarray] = {}
        self._tab_lists: dict[int, list] = {}  # the same tables as lists (decode_times)
        self._gemm_cache: dict = {}
        self._gemm_tabs: dict = {}  # (dtype, K, N) -> seconds per integer row count (see gemm)
        self._pre_memo: dict = {}  # batch size -> decode seconds on the context grid
        self._tail: dict[int, float] = {}  # batch size -> decode_tail_share of its decode kernel
        self.pre = {**ROOF_DEFAULT, **_sec(self.cal, pre_kind, key)[0]}
        fw = getattr(self.cal, "framework", "")
        fam = None if self.mla else decode_family(math.ceil(a.num_heads / tp), math.ceil(a.num_kv_heads / tp), fw)
        if fam is not None:  # the head dim's own kernel build where the framework has one (kernel_models)
            fam = decode_family_hd(str(fam), int(a.head_dim), fw)
        if self.mla and math.ceil(a.num_heads / tp) == 1:  # one query head per rank: the MLA decode kernels' own
            # non-grouped path where the calibration has it (kernel_models.MLA_G1_SOURCES)
            fam = next((f"{src}_g1" for src in MLA_G1_SOURCES
                        if _sec(self.cal, dec_kind, key, f"{src}_g1")[1].endswith("_g1")), None)
        self.dec = {**ROOF_DEFAULT, **_sec(self.cal, dec_kind, key, str(fam) if fam is not None else "")[0]}
        if getattr(acc, "kind", "") == "tpu":
            # assumption: a TPU TensorCore runs one program over the whole batch, no thread blocks
            # scheduled over SMs, so the per-CTA floor of GPU kernels does not transfer (with one
            # "compute unit" it would serialize every CTA: decode attention 10x the HBM roofline)
            self.pre["cta_s"] = self.dec["cta_s"] = 0.0
        self.heads = float(math.ceil(a.num_heads / tp))
        if self.mla:
            self.lat = float(a.kv_lora_rank + a.qk_rope_head_dim)
            self.qkv_w = float(a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim)
            self.kv_lora = float(a.kv_lora_rank)
        else:
            self.kvh = float(math.ceil(a.num_kv_heads / tp))
            self.hd = float(a.head_dim)
            # decode runs as more KV heads above the framework's largest GQA group (kernel_models)
            self.kvh_dec = float(decode_kv_heads(self.heads, self.kvh, getattr(self.cal, "framework", "")))
            # the head-dim share of decode attention's launch and per-CTA floors (kernel_models)
            g = float(decode_floor_scale(self.hd, self.dec.get("hd_floor", 0.0)))
            self.dec["launch_s"] *= g
            self.dec["cta_s"] = self.dec.get("cta_s", 0.0) * g
        # FlashAttention 2 decode (a section fitted with its combine kernel): FA2's own split heuristic, and the
        # combine kernel after a split call (kernel_models.fa2_num_splits / fa2_combine_time)
        self.fa2 = (not self.mla) and "combine_s" in self.dec
        self.fa2_bn = float(fa2_block_n(self.hd)) if self.fa2 else 0.0
        # an unpacked decode path re-reads the K/V its query heads share from the L2 (kernel_models.reread_time):
        # DRAM carries the model's own KV heads, the re-reads a per-SM rate; per context token, seconds
        gbps = float(self.dec.get("reread_gbps", 0.0) or 0.0)
        self.rr_dram = self.rr_tok_s = 0.0
        if not self.mla and gbps > 0.0 and self.kvh_dec > self.kvh:
            self.rr_dram = 2.0 * (self.kvh_dec - self.kvh) * self.hd * self.kvb
            self.rr_tok_s = self.rr_dram / (self.cus * gbps * 1e9)

    # ------------------------------------------------------------------ GEMM
    def gemm(self, M, K, N, groups=1.0, dtype=None):
        """(launch, body) seconds of ``groups`` GEMMs [M, K] x [K, N] (floats) in the deployment's
        kernel path (``dtype``: another table dtype); the same numbers as
        :func:`~simllm.cost.kernel_models.gemm_launch_and_body`, its parameters resolved once."""
        scalar = not (isinstance(M, np.ndarray) or isinstance(groups, np.ndarray))
        if (M <= 0 or groups <= 0) if scalar else (float(np.max(M)) <= 0 or float(np.max(groups)) <= 0):
            return 0.0, 0.0
        dt = dtype or self.gemm_dtype
        c = self._gemm_cache.get(dt)
        if c is None:
            c = self._gemm_cache[dt] = self._gemm_setup(dt)
        gp, peak, ab, wb, ob, l2, l2s, quant, q, qe, row, sus = c
        lo = gp.kernel_overhead_s if gp.floor_k <= 0 else gemm_floor(K, gp)
        if scalar and groups == 1.0 and M == int(M):
            # one GEMM of an integer row count (the serving step's tokens): a table over M per (dtype, K, N),
            # filled by the vectorised gemm_time (the same numbers as a scalar call, bit for bit)
            tab = self._gemm_tabs.get((dt, K, N))
            m = int(M)
            if tab is None or m >= len(tab):
                tab = self._gemm_grow(dt, K, N, m)
            body = tab[m] - lo
            if quant:
                body += M * groups * K * 3.0 / (self.bw * qe) + M * groups * row
                lo += q
            return lo, body
        t = gemm_time(M, K, N, peak=peak, bw=self.bw, cus=int(self.cus), gp=gp, groups=groups, a_bytes=ab,
                      w_bytes=wb, o_bytes=ob, l2_bytes=l2, l2_speedup=l2s, sustain=sus)
        if scalar:
            body = float(t) - lo
            if quant:
                body += M * groups * K * 3.0 / (self.bw * qe) + M * groups * row
                lo += q
            return lo, body
        body = float(np.sum(t)) - lo * np.size(t)
        if quant:
            body += float(np.sum(np.asarray(M, float) * groups)) * (K * 3.0 / (self.bw * qe) + row)
            lo += q
        return lo * np.size(t), body

    def _gemm_grow(self, dt, K, N, m: int) -> list:
        """The table of :meth:`gemm` seconds (launch + body, before activation quantization) for row
        counts 0 .. at least ``m`` (doubling), as plain floats."""
        old = self._gemm_tabs.get((dt, K, N))
        n = max(1024, 2 * (len(old) if old is not None else 0), m + 1)
        gp, peak, ab, wb, ob, l2, l2s, _, _, _, _, sus = self._gemm_cache[dt]
        t = gemm_time(np.arange(n, dtype=float), K, N, peak=peak, bw=self.bw, cus=int(self.cus), gp=gp, groups=1.0,
                      a_bytes=ab, w_bytes=wb, o_bytes=ob, l2_bytes=l2, l2_speedup=l2s, sustain=sus)
        tab = self._gemm_tabs[(dt, K, N)] = t.tolist()
        return tab

    def _gemm_setup(self, dt):
        pk, ab, wb, ob, quant = GEMM_DTYPES[dt]
        key = UNCALIBRATED.get(dt, dt)
        s, found = _sec(self.cal, "gemm", key)
        gp = _gemm_params(s)
        if dt in ("fp16", "float16") and found in ("", "gemm/bfloat16") and "gemm" in (self.cal.fit or {}):
            gp = self.cal.gemm
        return (gp, strict_peak(self.acc, pk), ab, wb, ob, _l2(self.acc), float(s.get("l2_speedup", 1.0)), quant,
                float(s.get("quant_overhead_s", 0.0)), float(s.get("quant_efficiency", gp.memory_efficiency)),
                float(quant_rows(1.0, 0.0, dt, self.acc)) * float(s.get("quant_row_s", 0.0)),  # per token row
                _sustain(s))

    # ------------------------------------------------------------------ attention (per layer, per rank)
    def _body(self, flops, nbytes, tiles, ctas, s, t_rr=0.0, flat=0.0):
        cus = self.cus
        w = max(tiles, 1.0) / cus
        full = math.floor(w)
        rem = w - full
        wf = max(full + ((s["a"] + (1 - s["a"]) * rem) if rem > 0 else 0.0), 1e-9) / w
        tc = flops / (self.attn_peak * s["ce"]) * wf
        occ = cus * max(s["occ"], 1e-3)
        c = max(ctas, 1.0) / occ
        tm = nbytes / (self.bw * s["me"]) / min(1.0, c) + flat / (self.bw * s["me"])
        tq = c * s.get("cta_s", 0.0)
        p = s["p"]
        if t_rr:
            return (tc ** p + tm ** p + tq ** p + t_rr ** p) ** (1.0 / p)
        return (tc ** p + tm ** p + tq ** p) ** (1.0 / p)

    def prefill(self, T: float, W: float, seqs: float):
        """(launch, body) of one layer's prefill attention over ``T`` tokens of ``seqs`` sequences
        with attention work ``W`` (token pairs)."""
        if T <= 0 and W <= 0:
            return 0.0, 0.0
        key = (T, W, seqs)
        v = self._pre_memo.get(key)
        if v is None:
            v = self._prefill(T, W, seqs)
            if len(self._pre_memo) < 200_000:
                self._pre_memo[key] = v
        return v

    def _prefill(self, T, W, seqs):
        s = self.pre
        b = max(float(seqs), 1.0)
        T = max(float(T), 1.0)
        kv = max(T, b * W / T + T / 2.0)
        h = self.heads
        tiles = h * b * _ceil(T / b / 128.0)
        if self.mla:
            flops = h * 2.0 * self.qkv_w * W + h * 4.0 * W * s["hd0"]
            nbytes = T * h * self.qkv_w * 4.0 + kv * h * self.qkv_w * 2.0 + kv * self.lat * self.kvb
        else:
            flops = h * 4.0 * (self.hd + s["hd0"]) * W
            # the K/V bytes at the section's kv_cost (kernel_models: the paged cache's gathered rows)
            nbytes = 2.0 * T * h * self.hd * self.qo_bytes + s["kv_cost"] * 2.0 * kv * self.kvh * self.hd * self.kvb
        return s["launch_s"], self._body(flops, nbytes, tiles, tiles, s)

    def _decode_terms(self, b: float, s):
        h = self.heads
        if self.mla:
            f_tok = h * 2.0 * (self.lat + self.kv_lora) + h * 4.0 * s["hd0"]
            return f_tok, self.lat * self.kvb, b * h * (self.lat + self.kv_lora) * 2.0, b * _ceil(h / 64.0), b
        f_tok = h * 4.0 * (self.hd + s["hd0"])
        kvh = self.kvh_dec
        return f_tok, 2.0 * kvh * self.hd * self.kvb, b * 2.0 * h * self.hd * self.qo_bytes, b * kvh, b * kvh

    def decode(self, seqs: float, ctx):
        """(launch, body) of one layer's decode attention of ``seqs`` sequences holding ``ctx``
        context tokens in all (a float, or a numpy array of totals: body is then an array)."""
        s = self.dec
        b = float(seqs)
        if b <= 0:
            return 0.0, (np.zeros(np.shape(ctx)) if isinstance(ctx, np.ndarray) else 0.0)
        f_tok, by_tok, by_seq, tiles, cta_rows = self._decode_terms(b, s)
        flat = 0.0
        if "qo_flat" in s:  # the query / output bytes at the device-wide rate (kernel_models._roof)
            flat, by_seq = by_seq, 0.0
        by_dram = by_tok - self.rr_dram  # K/V bytes per context token from DRAM (the rest re-read from the L2)
        if not isinstance(ctx, np.ndarray):
            C = float(ctx)
            sp, after = self._splits(b, C, cta_rows, s)
            return s["launch_s"], self._body(f_tok * C, by_dram * C + by_seq, tiles, cta_rows * sp, s,
                                             self.rr_tok_s * C, flat) + after
        C = np.asarray(ctx, dtype=float)
        sp, after = self._splits(b, C, cta_rows, s)
        cus = self.cus
        w = max(tiles, 1.0) / cus
        full = math.floor(w)
        rem = w - full
        wf = max(full + ((s["a"] + (1 - s["a"]) * rem) if rem > 0 else 0.0), 1e-9) / w
        c = np.maximum(cta_rows * sp, 1.0) / (cus * max(s["occ"], 1e-3))
        tc = (f_tok * C) / (self.attn_peak * s["ce"]) * wf
        tm = (by_dram * C + by_seq) / (self.bw * s["me"]) / np.minimum(1.0, c) + flat / (self.bw * s["me"])
        tq = c * s.get("cta_s", 0.0)
        p = s["p"]
        if self.rr_tok_s:
            return s["launch_s"], (tc ** p + tm ** p + tq ** p + (self.rr_tok_s * C) ** p) ** (1.0 / p) + after
        return s["launch_s"], (tc ** p + tm ** p + tq ** p) ** (1.0 / p) + after

    def _splits(self, b: float, C, cta_rows: float, s):
        """(KV splits per decode work item, seconds of the kernels that follow the decode kernel) for ``b`` sequences
        holding ``C`` context tokens: the section's split rule (:func:`~simllm.cost.kernel_models.decode_splits`), or
        on FlashAttention 2 its own heuristic with the combine kernel after a split call and the query / output
        transposes' copies (the table pricer's :func:`~simllm.cost.kernel_models._roof_predict`)."""
        if not self.fa2:
            return decode_splits(C / b, cta_rows, self.cus, s), 0.0
        mb = math.ceil(self.heads / max(self.kvh_dec, 1.0) / 64.0)  # 64-row query blocks of the swapped head group
        sp = fa2_num_splits(cta_rows * mb, np.ceil(np.maximum(np.asarray(C, float) / b, 1.0) / self.fa2_bn), self.cus)
        bh = b * self.heads
        after = fa2_combine_time(sp, bh, self.hd, self.acc, s)
        if "swap_copy_s" in s:
            after = after + fa2_swap_copy_time(fa2_swap_copies(b, self.heads, self.kvh, 0.0, True) * bh * self.hd,
                                               self.acc, s)
        return sp, after

    def decode_ctx_eff(self, seqs: float, ctx, ctx_max):
        """The equal-length context total that decode attention over a batch of ``seqs`` sequences with
        ``ctx`` context tokens in all, the longest ``ctx_max`` (at least ``ctx / seqs``), costs as
        (``kernel_models.decode_tail_share``): ``ctx + share x (seqs x ctx_max - ctx)``. ``ctx`` and
        ``ctx_max`` floats or arrays of one shape (the simulator's hot path: a dict lookup and three
        operations). MLA decode is not paced so: FlashMLA's scheduler metadata splits the batch's whole
        KV evenly over the SMs, whatever the lengths (share 0)."""
        f = self._tail.get(seqs)
        if f is None:
            if int(seqs) <= 0:
                return ctx
            f = self.decode_tail(seqs)
        return ctx + f * (seqs * ctx_max - ctx)

    def decode_tail(self, seqs) -> float:
        """The share of the longest context's excess that paces decode attention over ``seqs`` sequences
        (``decode_ctx_eff``), memoized per batch size."""
        f = self._tail.get(seqs)
        if f is None:
            b = int(seqs)
            f = self._tail[seqs] = 0.0 if self.mla else float(decode_tail_share(b * self.kvh_dec, self.cus))
        return f

    def decode_time(self, seqs: float, ctx):
        """Seconds (launch + body) of one layer's decode attention, memoized: per batch size, a
        table of :meth:`decode` over the mean context per sequence on a grid of ``DECODE_GRID``
        tokens, linearly interpolated (exact on the grid; the scalar and array forms agree to
        rounding). ``ctx`` a float or an array of context totals."""
        b = int(seqs)
        if b <= 0:
            return np.zeros(np.shape(ctx)) if isinstance(ctx, np.ndarray) else 0.0
        tab = self._tabs.get(b)
        if isinstance(ctx, np.ndarray):
            x = ctx * (1.0 / (b * DECODE_GRID))
            if tab is None or (x.size and float(np.maximum.reduce(x)) + 2 >= len(tab)):
                tab = self._grow(b, float(np.maximum.reduce(x)))
            i = x.astype(np.intp)
            lo = tab[i]
            return lo + (x - i) * (tab[i + 1] - lo)
        x = max(float(ctx), 0.0) / (b * DECODE_GRID)
        if tab is None or x + 2 >= len(tab):
            tab = self._grow(b, x)
        i = int(x)
        lo = float(tab[i])
        return lo + (x - i) * (float(tab[i + 1]) - lo)  # the array form's arithmetic, bit for bit

    def decode_times(self, seqs: int, ctxs: list) -> list:
        """:meth:`decode_time` of an array of context totals, as a list of plain floats (for a few contexts: no
        numpy call per step), bit for bit: the same table, grown at the same point, and the same arithmetic."""
        b = int(seqs)
        s = 1.0 / (b * DECODE_GRID)
        xs = [c * s for c in ctxs]
        hi = max(xs)
        tab = self._tabs.get(b)
        if tab is None or hi + 2 >= len(tab):
            tab = self._grow(b, hi)
        tl = self._tab_lists.get(b)
        if tl is None or len(tl) != len(tab):
            tl = self._tab_lists[b] = tab.tolist()
        out = []
        for x in xs:
            i = int(x)
            lo = tl[i]
            out.append(lo + (x - i) * (tl[i + 1] - lo))
        return out

    def _grow(self, b: int, hi: float) -> np.ndarray:
        old = self._tabs.get(b)
        n = max(64, 2 * (len(old) if old is not None else 0), int(hi) + 3)
        m = np.arange(n, dtype=float) * (DECODE_GRID * b)
        lo, body = self.decode(b, m)
        tab = lo + body
        self._tabs[b] = tab
        return tab

    def decode_linear(self):
        """(launch, per-sequence seconds, per-context-token seconds): decode attention at full SM
        occupancy, linear in the context (for callers that need that form, e.g. the EP step)."""
        s = self.dec
        f_tok, by_tok, by_seq, _, _ = self._decode_terms(1.0, s)
        return s["launch_s"], by_seq / (self.bw * s["me"]), max(f_tok / (self.attn_peak * s["ce"]),
                                                               by_tok / (self.bw * s["me"]))

    def prefill_flops_bytes(self, T: float, W: float, seqs: float):
        """FLOPs and bytes of the prefill kernel (for the step's breakdown)."""
        b = max(float(seqs), 1.0)
        Tq = max(float(T), 1.0)
        kv = max(Tq, b * W / Tq + Tq / 2.0)
        h = self.heads
        if self.mla:
            return h * 2.0 * self.qkv_w * W, T * h * self.qkv_w * 4.0 + kv * h * self.qkv_w * 2.0 + kv * self.lat * self.kvb
        return h * 4.0 * self.hd * W, 2.0 * T * h * self.hd * self.qo_bytes + 2.0 * kv * self.kvh * self.hd * self.kvb


def check_framework(fw: str) -> str:
    if fw not in FRAMEWORKS:
        raise InputError(f"unknown framework {fw!r} (expected one of {', '.join(FRAMEWORKS)})", field="framework")
    return fw


__all__ = ["LayerKernels", "gemm_table_dtype", "check_framework", "FRAMEWORKS"]
