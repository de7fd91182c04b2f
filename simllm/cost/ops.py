"""Per-operator FLOPs, bytes and seconds of one transformer layer on one device.

Shapes are per tensor-parallel rank (Megatron sharding): QKV/up column-parallel (output
features / tp), output/down row-parallel (input features / tp), KV heads replicated when
there are fewer of them than ranks, MLA's down-projections (q_a, kv_a) and the MoE router
replicated, each routed expert sharded like a dense MLP (expert parallelism is
``simllm.placement``'s business and enters as per-expert token counts). Two all-reduces of
the hidden state per layer (after attention and after the MLP) when tp > 1.

GEMMs and attention kernels are priced by :mod:`simllm.cost.layer_kernels` with the kernel
physics of :mod:`simllm.cost.kernel_models` and the device's calibration for the framework
(launch in ``Op.overhead_s``, body as compute or memory time). Attention FLOPs/bytes of the
breakdown: prefill from the causal token-pair count ``prefill_attn_work``; decode reads every
sequence's KV cache once per layer. MLA caches the compressed latent plus the RoPE key
(``kv_lora_rank + qk_rope_head_dim`` values per token per layer, replicated on every TP rank) and,
with the absorbed projections, attends over it. Its ``kv_b`` projection is priced as one GEMM
over the step's tokens (the same FLOPs and weight bytes as the absorbed form).

MoE: routed experts are one fused-MoE kernel, priced by :mod:`simllm.cost.moe_layer` with the framework's fitted
``moe/<dtype>`` section (the model ``calibrate check`` scores against the measured tables; without the benchmark's
hot L2); a kernel path without a fitted section falls back to grouped GEMMs plus the section's fixed cost. With
``T`` tokens routed top-``k`` of ``E`` experts uniformly, the expected number of experts touched is
``E (1 - (1 - k/E)^T)`` and each touched expert sees ``T k / touched`` tokens; explicit per-expert counts may be
given instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError
from ..hardware import DTYPE_BYTES
from . import collectives as C
from .calibration import Calibration
from .kernels import attention_time, elementwise_time, gemm_flops_bytes, gemm_time
from .kernel_models import GEMM_DTYPES
from .layer_kernels import LayerKernels, check_framework
from .moe_layer import moe_time_counts, serving_fixed_s as moe_fixed_s, serving_params as moe_serving_params
from .table_mode import make_layer_kernels

WIDE = {"bf16", "fp16", "fp32", "tf32"}


@dataclass(frozen=True)
class Op:
    name: str
    kind: str  # gemm | elementwise | attention | comm
    flops: float
    bytes: float
    time_s: float
    compute_s: float = 0.0  # time attributed to a compute-bound operator
    memory_s: float = 0.0
    comm_s: float = 0.0
    overhead_s: float = 0.0
    shape: str = ""

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes > 0 else float("inf")

    @property
    def bound(self) -> str:
        if self.kind == "comm":
            return "comm"
        if self.time_s <= 0:
            return "-"
        return "compute" if self.compute_s > self.memory_s else "memory"


def _dtype(name: str, what: str) -> float:
    if name not in DTYPE_BYTES:
        raise InputError(f"unknown dtype {name!r} (expected one of {', '.join(DTYPE_BYTES)})", field=what)
    return DTYPE_BYTES[name]


class LayerOps:
    """Operator builder for one (model, device, tp, dtypes, calibration)."""

    def __init__(self, model, acc, *, tp: int = 1, cal: Calibration, links: Optional[C.CommLinks] = None,
                 weight_dtype: str = "bf16", kv_dtype: str = "bf16", act_dtype: str = "bf16",
                 framework: str = "vllm"):
        if tp < 1:
            raise InputError(f"tp must be >= 1, got {tp}", field="tp")
        self.m, self.acc, self.tp, self.cal, self.links = model, acc, tp, cal, links
        self.act_dtype = act_dtype
        self.wb = _dtype(weight_dtype, "weight_dtype")
        self.kvb = _dtype(kv_dtype, "kv_dtype")
        self.ab = _dtype(act_dtype, "act_dtype")
        # GEMMs run in the activation dtype when weights share it (fp8 x fp8, int8 x int8);
        # weight-only quantization dequantizes into the wider activation type.
        cdt = act_dtype if (weight_dtype == act_dtype or act_dtype in WIDE) else "bf16"
        if act_dtype not in WIDE and weight_dtype != act_dtype:
            cdt = "bf16"
        self.peak = acc.peak(cdt)
        self.attn_peak = acc.peak(act_dtype if kv_dtype == act_dtype else "bf16")
        self.bw = acc.hbm_bw
        self.cus = int(acc.compute_units.value)
        if tp > 1 and links is None:
            raise InputError("tp > 1 needs a node (its scale-up link prices the all-reduces)", field="node")
        a = model.attention
        self.H = model.hidden_size
        self.heads = math.ceil(a.num_heads / tp)
        if a.kind == "mla":
            self.kv_per_tok = (a.kv_lora_rank + a.qk_rope_head_dim) * self.kvb
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            self.f_pair_prefill = self.heads * 2.0 * (qk + a.v_head_dim)
            self.f_tok_decode = self.heads * 2.0 * (2 * a.kv_lora_rank + a.qk_rope_head_dim)
            self.q_width = self.heads * qk
            self.o_width = self.heads * a.v_head_dim
        else:
            self.kv_heads = math.ceil(a.num_kv_heads / tp)
            self.kv_per_tok = 2.0 * self.kv_heads * a.head_dim * self.kvb
            self.f_pair_prefill = self.heads * 4.0 * a.head_dim
            self.f_tok_decode = self.f_pair_prefill
            self.q_width = self.heads * a.head_dim
            self.o_width = self.q_width
        # GEMM and attention kernels: simllm.cost.kernel_models physics, the framework's calibration
        self.framework = check_framework(framework)
        self._ar_tab = None  # TP all-reduce seconds per step token count (None: not built, False: no table)
        self._fcal = cal.for_framework(self.framework)
        self.k = make_layer_kernels(model, acc, self._fcal, tp=tp, weight_dtype=weight_dtype,
                                    act_dtype=act_dtype, kv_dtype=kv_dtype, kv_bytes=self.kvb)
        # sliding-window attention (model.attention.sliding_window) in a share of the layers; a decode past
        # the window loads the calibration's window_tile more key positions (kernel_models)
        self.win_share = float(model.windowed_layer_share)
        self.win = float(a.sliding_window or 0)
        self.win_dec = self.win + float(self.k.dec.get("window_tile", 0.0)) if self.win_share else 0.0
        self.win_pre = self.win + float(self.k.pre.get("window_tile", 0.0)) if self.win_share else 0.0
        # the routed experts' fused MoE kernel model (None: no fitted moe section, grouped GEMMs instead)
        self._moe_params = moe_serving_params(self._fcal, self.k.gemm_dtype) if model.moe is not None else None

    # ------------------------------------------------------------------ primitives
    def gemm(self, name, M, K, N, groups=1.0, w_bytes=None) -> Op:
        """One (grouped) GEMM in the deployment's kernel path (``w_bytes`` given: a GEMM kept in
        bf16, e.g. the MoE router); launch in ``overhead_s``, body as compute or memory time."""
        k = self.k
        dt = k.gemm_dtype if w_bytes is None else "bfloat16"
        _, ab, wb, ob, _ = GEMM_DTYPES[dt]
        lo, bo = k.gemm(M, K, N, groups, dtype=dt)
        if isinstance(M, np.ndarray) or isinstance(groups, np.ndarray):
            fl, by = gemm_flops_bytes(M, K, N, groups, ab, wb, ob)
            fl, by = float(np.sum(fl)), float(np.sum(by))
        else:
            fl, by = 2.0 * groups * M * K * N, groups * (M * K * ab + K * N * wb + M * N * ob)
        t = lo + bo
        comp = fl / k.gemm_peak >= by / self.bw
        shape = f"{_fmt(M)}x{int(K)}x{int(N)}" + (f" x{_fmt(groups)}" if groups != 1 else "")
        return Op(name, "gemm", fl, by, t, compute_s=bo if comp else 0.0,
                  memory_s=0.0 if comp else bo, overhead_s=lo, shape=shape)

    def ew(self, name, nbytes, flops=0.0) -> Op:
        ep = self.cal.elementwise
        t = float(elementwise_time(nbytes, bw=self.bw, ep=ep))
        ov = ep.kernel_overhead_s if t > 0 else 0.0
        return Op(name, "elementwise", float(flops), float(nbytes), t, memory_s=t - ov, overhead_s=ov)

    def attn(self, name, flops, nbytes) -> Op:
        ap = self.cal.attention
        t = float(attention_time(flops, nbytes, peak=self.attn_peak, bw=self.bw, ap=ap))
        ov = ap.kernel_overhead_s if t > 0 else 0.0
        tc = flops / (self.attn_peak * ap.compute_efficiency)
        tm = nbytes / (self.bw * ap.memory_efficiency)
        return Op(name, "attention", float(flops), float(nbytes), t, compute_s=(t - ov) if tc >= tm else 0.0,
                  memory_s=(t - ov) if tc < tm else 0.0, overhead_s=ov)

    def allreduce(self, name, nbytes) -> Op:
        if self.tp <= 1 or nbytes <= 0:
            return Op(name, "comm", 0.0, 0.0, 0.0)
        g = min(self.tp, self.links.devices_per_node)
        T = nbytes / (self.H * self.ab)
        tab = self._ar_tab
        if tab is not False and T == int(T) and T * self.H * self.ab == nbytes:
            # the all-reduce of a step's activations: a table over the step's token count
            if tab is None or T >= len(tab):
                tab = C.tp_all_reduce_tokens(max(2 * len(tab) if tab else 0, int(T) + 1, 1024), self.H, self.ab,
                                             self.tp, self.links, g if self.tp % g == 0 else None, self.cal)
                self._ar_tab = tab = tab.tolist() if tab is not None else False
            if tab is not False:
                t = tab[int(T)]
                return Op(name, "comm", 0.0, float(nbytes), t, comm_s=t)
        t = C.tp_all_reduce(nbytes, self.tp, self.links, g if self.tp % g == 0 else None, self.cal, tokens=T)
        return Op(name, "comm", 0.0, float(nbytes), t, comm_s=t)

    # ------------------------------------------------------------------ attention (simllm.cost.layer_kernels)
    # Sliding windows (``win_share`` of the layers): the per-layer figures below are the layer average,
    # (1 - share) x full + share x windowed. A windowed prefill's token pairs are each query's
    # ``min(position, window + window_tile)`` over ``seqs`` equal chunks of the step's tokens and work (each
    # chunk ``s = T / seqs`` tokens after ``c = W / T - s / 2`` cached ones, the chunk that gives the work); a
    # windowed decode's context is capped at ``seqs x (window + window_tile)``, per sequence ``min(ctx, window
    # + window_tile)``: exact when every sequence is past its window or none is (the batch's longest context
    # within it), otherwise an upper bound (the engine passes totals, not every length).
    def _win_work(self, T: float, W: float, b: float) -> Optional[float]:
        """The windowed layers' prefill work, or None where the window cuts nothing (no window, or every
        query within it)."""
        if not self.win_share:
            return None
        w = self.win_pre  # the window and the prefill kernel's window_tile (kernel_models)
        s = T / max(b, 1.0)
        c = max(W / max(T, 1.0) - s / 2.0, 0.0)  # cached positions before each chunk
        if c + s <= w:
            return None
        if c >= w:
            Ww = T * w
        else:
            Ww = ((w * (w + 1.0) - c * (c + 1.0)) / 2.0 + (c + s - w) * w) * max(b, 1.0)  # keys 1..w, then w
        return Ww if Ww < W else None

    def prefill_attention_time(self, prefill_tokens: float, attn_work: float, seqs: Optional[float] = None) -> float:
        """Seconds of one layer's prefill attention (plain floats: the simulator's hot path).
        ``seqs``: sequences of the chunks (None: estimated as T^2 / 2W, one causal prompt's ratio)."""
        if prefill_tokens <= 0 and attn_work <= 0:
            return 0.0
        b = _seqs(prefill_tokens, attn_work, seqs)
        lo, bo = self.k.prefill(prefill_tokens, attn_work, b)
        Ww = self._win_work(prefill_tokens, attn_work, b) if self.win_share else None
        if Ww is not None:
            lw, bw = self.k.prefill(prefill_tokens, Ww, b)
            f = self.win_share
            return (1.0 - f) * (lo + bo) + f * (lw + bw)
        return lo + bo

    def prefill_attention(self, prefill_tokens: float, attn_work: float, seqs: Optional[float] = None) -> Op:
        if prefill_tokens <= 0 and attn_work <= 0:
            return Op("attn_prefill", "attention", 0.0, 0.0, 0.0)
        b = _seqs(prefill_tokens, attn_work, seqs)
        lo, bo = self.k.prefill(prefill_tokens, attn_work, b)
        fl, by = self.k.prefill_flops_bytes(prefill_tokens, attn_work, b)
        Ww = self._win_work(prefill_tokens, attn_work, b)
        if Ww is not None:
            f = self.win_share
            lw, bw = self.k.prefill(prefill_tokens, Ww, b)
            flw, byw = self.k.prefill_flops_bytes(prefill_tokens, Ww, b)
            bo, fl, by = (1 - f) * bo + f * (bw + lw - lo), (1 - f) * fl + f * flw, (1 - f) * by + f * byw
        comp = fl / self.k.attn_peak >= by / self.bw
        return Op("attn_prefill", "attention", fl, by, lo + bo, compute_s=bo if comp else 0.0,
                  memory_s=0.0 if comp else bo, overhead_s=lo)

    def decode_attention_time(self, decode_seqs: float, ctx, ctx_max=None):
        """Seconds of one layer's decode attention; ``ctx`` (total context tokens) may be an array;
        ``ctx_max``: the batch's longest context (of ``ctx``'s shape), which paces a mixed-length batch
        (``LayerKernels.decode_ctx_eff``); None prices equal lengths."""
        if decode_seqs <= 0:
            return np.zeros(np.shape(ctx)) if isinstance(ctx, np.ndarray) else 0.0
        k = self.k
        t = k.decode_time(decode_seqs, ctx if ctx_max is None else k.decode_ctx_eff(decode_seqs, ctx, ctx_max))
        if self.win_share:  # the windowed layers' capped contexts (np.minimum: floats or arrays alike)
            cw = np.minimum(ctx, decode_seqs * self.win_dec)
            if ctx_max is not None:
                cw = k.decode_ctx_eff(decode_seqs, cw, np.minimum(ctx_max, self.win_dec))
            f = self.win_share
            t = (1.0 - f) * t + f * k.decode_time(decode_seqs, cw if isinstance(ctx, np.ndarray) else float(cw))
        return t

    def window_ctx(self, decode_seqs, ctx):
        """The context total the linear decode form (:meth:`decode_attention_slope`) multiplies, layers
        averaged: ``ctx`` without a window, else ``(1 - share) ctx + share min(ctx, seqs (window + window_tile))``
        (floats or arrays of one shape)."""
        if not self.win_share:
            return ctx
        cap = np.asarray(decode_seqs, dtype=float) * self.win_dec
        f = self.win_share
        w = np.minimum(ctx, cap)
        return (1.0 - f) * ctx + f * (w if isinstance(ctx, np.ndarray) or np.ndim(w) else float(w))

    def decode_attention_slope(self) -> float:
        """Seconds per cached context token per layer at full occupancy (the linear form)."""
        return self.k.decode_linear()[2]

    def decode_attention_base(self, decode_seqs: float) -> float:
        """Context-independent part of the linear form: the launch and the Q/O traffic."""
        if decode_seqs <= 0:
            return 0.0
        lo, per_seq, _ = self.k.decode_linear()
        return lo + decode_seqs * per_seq

    def decode_attention(self, decode_seqs: float, ctx: float) -> Op:
        if decode_seqs <= 0:
            return Op("attn_decode", "attention", 0.0, 0.0, 0.0)
        ctx = float(ctx)
        lo = self.k.dec["launch_s"]
        bo = float(self.decode_attention_time(decode_seqs, ctx)) - lo
        ctx = float(self.window_ctx(decode_seqs, ctx))  # the layers' mean context read (windows capped)
        fl = ctx * self.f_tok_decode
        by = ctx * self.kv_per_tok + decode_seqs * (self.q_width + self.o_width) * self.ab
        comp = fl / self.k.attn_peak > by / self.bw
        return Op("attn_decode", "attention", fl, by, lo + bo, compute_s=bo if comp else 0.0,
                  memory_s=0.0 if comp else bo, overhead_s=lo)

    # ------------------------------------------------------------------ token-dependent operators
    def attention_block(self, T: float) -> list[Op]:
        m, a, H, ab, tp = self.m, self.m.attention, self.H, self.ab, self.tp
        ops = [self.ew("input_norm", 2 * T * H * ab + H * self.wb)]
        if a.kind == "mla":
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            if a.q_lora_rank:
                ops.append(self.gemm("q_a_proj", T, H, a.q_lora_rank))
                ops.append(self.ew("q_a_norm", 2 * T * a.q_lora_rank * ab))
                ops.append(self.gemm("q_b_proj", T, a.q_lora_rank, self.heads * qk))
            else:
                ops.append(self.gemm("q_proj", T, H, self.heads * qk))
            ops.append(self.gemm("kv_a_proj", T, H, a.kv_lora_rank + a.qk_rope_head_dim))
            ops.append(self.ew("kv_a_norm", 2 * T * a.kv_lora_rank * ab))
            ops.append(self.gemm("kv_b_proj", T, a.kv_lora_rank, self.heads * (a.qk_nope_head_dim + a.v_head_dim)))
            ops.append(self.ew("rope", 2 * T * (self.heads + 1) * a.qk_rope_head_dim * ab))
        else:
            n_qkv = (self.heads + 2 * self.kv_heads) * a.head_dim
            ops.append(self.gemm("qkv_proj", T, H, n_qkv))
            ops.append(self.ew("rope", 2 * T * (self.heads + self.kv_heads) * a.head_dim * ab))
        ops.append(self.gemm("o_proj", T, self.o_width, H))
        ops.append(self.allreduce("attn_allreduce", T * H * ab))
        ops.append(self.ew("residual_add", 3 * T * H * ab))
        return ops

    def mlp(self, prefix: str, T: float, inter: int, gated: bool, groups=1.0, M=None) -> list[Op]:
        """A (grouped) MLP; ``inter`` is the full intermediate size, sharded over tp here."""
        i_d = math.ceil(inter / self.tp)
        Mg = T if M is None else M
        up_n = (2 if gated else 1) * i_d
        rows = float(np.sum(Mg * groups)) if M is not None else T
        return [self.gemm(f"{prefix}up_proj" if not gated else f"{prefix}gate_up_proj", Mg, self.H, up_n, groups),
                self.ew(f"{prefix}act", rows * (up_n + i_d) * self.ab),
                self.gemm(f"{prefix}down_proj", Mg, i_d, self.H, groups)]

    def dense_ffn_block(self, T: float) -> list[Op]:
        f = self.m.ffn
        ops = [self.ew("post_attn_norm", 2 * T * self.H * self.ab + self.H * self.wb)]
        ops += self.mlp("mlp_", T, f.intermediate_size, f.gated)
        ops.append(self.allreduce("mlp_allreduce", T * self.H * self.ab))
        ops.append(self.ew("residual_add", 3 * T * self.H * self.ab))
        return ops

    def moe_ffn_block(self, T: float, expert_tokens: Optional[Sequence[float]] = None) -> list[Op]:
        e, H, ab = self.m.moe, self.H, self.ab
        E, k = e.num_experts, e.top_k
        ops = [self.ew("post_attn_norm", 2 * T * H * ab + H * self.wb),
               self.gemm("router", T, H, E, w_bytes=self.ab)]
        mp = self._moe_params
        if T > 0 and mp is not None:
            # the fused MoE as the measured tables time it (simllm.cost.moe_layer, the framework's fitted
            # section): routing bookkeeping, gather / scatter passes, grouped GEMM tiles per expert, weights
            if expert_tokens is None:  # uniform routing: the expected experts touched, the slots spread evenly
                touched = expected_experts_touched(E, k, T)
                n = max(1, int(round(touched)))
                cnt = np.full(n, T * k / n)
            else:
                cnt = np.asarray(expert_tokens, dtype=float)
                touched = None
            mdt, p = mp
            t, fl, by, tc, tm = moe_time_counts(cnt, T, H, e.expert_intermediate_size, k, self.tp, mdt, acc=self.acc,
                                                gp=self._fcal.gemm, p=p, gated=self.m.ffn.gated, warm_l2=False,
                                                experts=touched)
            # the fused kernel's routing bookkeeping (fixed_s) includes the top-k
            ops.append(Op("experts", "gemm", fl, by, t, compute_s=tc, memory_s=tm, overhead_s=p.fixed_s,
                          shape=f"{len(cnt[cnt > 0])} experts, {_fmt(float(np.sum(cnt)))} token-slots"))
        elif T > 0:
            ops.append(self.ew("topk_softmax", T * E * 4.0 * 2))
            if expert_tokens is None:
                touched = expected_experts_touched(E, k, T)
                ops += self.mlp("experts_", T, e.expert_intermediate_size, self.m.ffn.gated, groups=touched,
                                M=T * k / touched)
            else:
                cnt = np.asarray(expert_tokens, dtype=float)
                cnt = cnt[cnt > 0]
                ops += self.mlp_varlen("experts_", cnt, e.expert_intermediate_size, self.m.ffn.gated)
            ops.append(self.ew("permute_unpermute", 2 * 2 * T * k * H * ab))
            fx = moe_fixed_s(self._fcal, self.act_dtype)
            if fx > 0:  # per-rank routing bookkeeping and launches of the fused MoE (simllm.cost.moe_layer)
                ops.append(Op("moe_fixed", "elementwise", 0.0, 0.0, fx, overhead_s=fx))
        if e.num_shared_experts:
            inter = (e.shared_intermediate_size or e.expert_intermediate_size) * e.num_shared_experts
            ops += self.mlp("shared_", T, inter, self.m.ffn.gated)
        ops.append(self.allreduce("mlp_allreduce", T * H * ab))
        ops.append(self.ew("residual_add", 3 * T * H * ab))
        return ops

    def mlp_varlen(self, prefix: str, counts: np.ndarray, inter: int, gated: bool) -> list[Op]:
        """Grouped MLP with explicit per-expert token counts (one op each for up and down)."""
        i_d = math.ceil(inter / self.tp)
        up_n = (2 if gated else 1) * i_d
        out = []
        for name, K, N in ((f"{prefix}gate_up_proj" if gated else f"{prefix}up_proj", self.H, up_n),
                           (f"{prefix}down_proj", i_d, self.H)):
            parts = [self.gemm(name, c, K, N) for c in counts]
            # one grouped kernel: one launch overhead, the sum of the bodies
            ov = self.cal.gemm.kernel_overhead_s
            t = sum(p.time_s - p.overhead_s for p in parts) + ov
            out.append(Op(name, "gemm", sum(p.flops for p in parts), sum(p.bytes for p in parts), t,
                          compute_s=sum(p.compute_s for p in parts), memory_s=sum(p.memory_s for p in parts),
                          overhead_s=ov, shape=f"{len(counts)} experts, {int(counts.sum())} token-slots"))
            if out[-1].name.endswith("up_proj"):
                out.append(self.ew(f"{prefix}act", counts.sum() * (up_n + i_d) * self.ab))
        return out

    def embedding(self, T: float) -> list[Op]:
        ops = [self.ew("embedding", 2 * T * self.H * self.ab)]
        if self.tp > 1:
            ops.append(self.allreduce("embedding_allreduce", T * self.H * self.ab))
        return ops

    def lm_head(self, S: float) -> list[Op]:
        V = math.ceil(self.m.vocab_size / self.tp)
        ops = [self.ew("final_norm", 2 * S * self.H * self.ab), self.gemm("lm_head", S, self.H, V)]
        if self.tp > 1 and S > 0:
            g = min(self.tp, self.links.devices_per_node)
            t = C.all_gather(S * V * self.tp * self.ab, self.tp, self.links, g if self.tp % g == 0 else None)
            ops.append(Op("logits_allgather", "comm", 0.0, S * V * self.tp * self.ab, t, comm_s=t))
        return ops

    # ------------------------------------------------------------------ weights
    def layer_weight_bytes(self, moe: bool) -> float:
        m, a, H, tp, wb = self.m, self.m.attention, self.H, self.tp, self.wb
        if a.kind == "mla":
            qk = a.qk_nope_head_dim + a.qk_rope_head_dim
            w = H * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * self.heads * (a.qk_nope_head_dim +
                                                                                         a.v_head_dim)
            w += (H * a.q_lora_rank + a.q_lora_rank * self.heads * qk) if a.q_lora_rank else H * self.heads * qk
        else:
            w = H * (self.heads + 2 * self.kv_heads) * a.head_dim
        w += self.o_width * H
        g = 3 if m.ffn.gated else 2
        if moe:
            e = m.moe
            w += e.num_experts * g * H * math.ceil(e.expert_intermediate_size / tp)
            if e.num_shared_experts:
                w += g * H * math.ceil((e.shared_intermediate_size or e.expert_intermediate_size)
                                       * e.num_shared_experts / tp)
            w_router = H * e.num_experts * self.ab
        else:
            w += g * H * math.ceil(m.ffn.intermediate_size / tp)
            w_router = 0.0
        return w * wb + w_router + 2 * H * self.wb  # norms

    def embedding_weight_bytes(self) -> float:
        return math.ceil(self.m.vocab_size / self.tp) * self.H * self.wb

    def lm_head_weight_bytes(self) -> float:
        return 0.0 if self.m.tie_embeddings else math.ceil(self.m.vocab_size / self.tp) * self.H * self.wb


def _seqs(T: float, W: float, seqs: Optional[float]) -> float:
    if seqs is not None and seqs > 0:
        return float(seqs)
    return min(max(T * T / (2.0 * W), 1.0), max(T, 1.0)) if W > 0 else 1.0


def expected_experts_touched(E: int, k: int, T: float) -> float:
    """Expected distinct experts hit by ``T`` tokens each choosing ``k`` of ``E`` uniformly."""
    if T <= 0:
        return 0.0
    return E * (1.0 - (1.0 - k / E) ** T)


def _fmt(x) -> str:
    x = float(np.asarray(x))
    return str(int(x)) if x == int(x) else f"{x:.1f}"


def total(ops: Sequence[Op]) -> Op:
    return Op("total", "total", sum(o.flops for o in ops), sum(o.bytes for o in ops), sum(o.time_s for o in ops),
              compute_s=sum(o.compute_s for o in ops), memory_s=sum(o.memory_s for o in ops),
              comm_s=sum(o.comm_s for o in ops), overhead_s=sum(o.overhead_s for o in ops))
