"""The MoE layer kernel (``moe``): one rank's fused MoE (routing bookkeeping, gate/up grouped
GEMM, activation, down grouped GEMM, weighted sum), as AIConfigurator's ``moe_perf`` tables
measure it (``moe_dtype``, ``num_tokens``, ``hidden_size``, ``inter_size``, ``topk``,
``num_experts``, ``moe_tp_size``, ``moe_ep_size``, ``distribution``).

**What one rank runs.** ``E_loc = E / ep`` local experts, intermediate ``I / tp`` each. The
per-expert token counts ``c_e`` of rank 0 follow the table's distribution, generated the way the
published collectors do (:func:`rank_counts`, ai-dynamo/aiconfigurator ``collector/helper.py``):
``balanced`` routes all ``T`` tokens with the global fixed stride ``ceil(E / k)``
(``balanced_logits``) and rank 0 keeps the slots that land on its experts (about ``T k / ep``;
one token at EP 64 touches one local expert, not ``min(k, E_loc)``: the old local-stride model
priced such L40S rows at 4 experts' weights, 5-11x the measured 30-60 us); ``power_law_<a>``
draws per-expert loads from a power law of exponent ``a`` over all ``E`` experts (``x_min = 1``,
``x_max = 0.8 T``), scales them to ``T k`` token-slots, clamps each expert at ``T`` and corrects
the sum round-robin over the ranks as the collectors do (:func:`_clamp_round_robin`), and puts
the busiest group of ``E_loc`` experts on rank 0 (so skew raises rank 0's load as EP grows).
Expected over a few seeded draws; memoized.

**Time.** ::

    t = t_fixed + 2 t_expert * (touched local experts) + t_slot * sum(c_e) + soft_roofline(t_compute, t_weights)

* ``t_fixed`` (s): the layer's kernel launches and its routing bookkeeping (top-k alignment,
  sorting): paid by every rank whatever ``ep``; the measured EP 64-256 floors (40-50 us on H100
  for a single local expert whose weights stream in ~14 us) are this term, and it is why the
  layer does not shrink with ``1 / ep`` (the old model's 52-75% error at EP 128-256).
* ``t_expert`` (s, ``expert_s``): each touched local expert costs each of the two grouped GEMMs a fixed
  amount beside its tiles (the kernel's per-group work: a problem visit of the tile scheduler, its
  pointer / TMA-descriptor setup, its own prologue and epilogue). Evidence: H100 vLLM 0.24 fp8 (FlashInfer
  CUTLASS), hidden 2048, expert 768, 128 experts top-8 at TP 32 (weights of 0.15 MB an expert): 44 / 141 /
  246 / 249 us at 1 / 8 / 48 / 96 tokens, i.e. with the 8 / 64 / 128 / 128 experts touched (1.6-1.7 us
  per added expert), not with the tokens or the bytes; without the term the fit had bent the bandwidth to
  18% of HBM and left that table at 10.0% / 40% (median / p90).
* ``t_slot`` as bytes: each of rank 0's token-slots is gathered, written and reduced back
  (``slot_passes`` passes of the hidden vector through HBM); and ``full_passes`` passes over
  *all* ``T k`` routed copies' intermediate caches, which every rank pays whatever ``ep``: the
  Triton fused MoE of vLLM/SGLang launches blocks for every expert's slots and writes zeros for
  the remote ones (gate/up output ``2 I / tp`` written and read by the activation, its output
  ``I / tp`` written, the down output ``H`` written and read by the final sum: ``2 H + 2 up + I``
  elements per slot). Evidence: H100 vLLM bf16 balanced rows at EP >= 64 and >= 2,048 tokens
  (210 rows, one local expert doing little) regress on ``T k H`` and ``T k I / tp`` bytes with
  2.8 and 6.8 passes at 3.35 TB/s (2 and 5 expected at ~73% of the bandwidth), 6.8% median
  residual; ``T k H`` alone (the previous form) leaves 15.7%; L40S vLLM the same (3.9 / 8.2,
  6.4% vs 19.1%). TensorRT-LLM permutes only its local slots: its fitted ``full_passes`` ~0.
* compute: grouped-GEMM tiles counted per expert, ``sum_e ceil(c_e / tm) ceil(N / tn)`` over the
  calibrated GEMM tile shapes and waves of :mod:`simllm.cost.kernels` (its tile efficiencies
  scaled by ``compute_scale``), at the dtype's peak: skewed counts pay their partial tiles.
* weights: every touched expert's gate/up and down weights stream once, at ``memory_efficiency``
  of HBM bandwidth (decode is weight-bound: one token on 128 experts of Qwen3-235B moves 302 MB,
  113 us at 80% of 3.35 TB/s; measured 124 us). The benchmark replays one layer, so a weight set
  that fits in the device's L2 (``sram``) stays resident and streams ``l2_speedup`` times faster
  (:func:`l2_resident_fraction`; ``warm_l2=False`` prices the layer without it, and the serving step,
  which prices its MoE layers from grouped GEMMs in :mod:`simllm.cost.ops`, never sees it: each layer's
  weights are evicted by the next layers'). Evidence: L40S TRT-LLM bf16 (96 MiB L2) refitted with and
  without it (same code otherwise, a 4,000-row sample): p90 1.01 -> 0.35, median 9.0% -> 7.8%, the
  p90 rows being 1-128-token layers of 20-90 MB priced at HBM speed 3-5x too slow (`calibrate
  check` after the refit: 10.1% / 111% on main -> 8.1% / 33%).

**Gated or not.** The expert MLP is gated (SwiGLU: one gate+up GEMM of width ``2 I / tp``, three
weight matrices) unless the table's ``kernel_source`` names a non-gated kernel (TensorRT-LLM's
``moe_torch_flow_nongated``: Nemotron-H's relu^2 experts, up of width ``I / tp``, two matrices).
Evidence: priced as gated, those rows were +23% median signed on H100 bf16 (8,100 rows, 30%
median) while the gated rows of the same table sat at -2%; priced as two matrices, 12% before
any refit. The serving path reads the same fact from the model's ``ffn.gated``.

vLLM's and SGLang's tables do not label non-gated rows: the four Nemotron-H shapes TensorRT-LLM
labels non-gated (:data:`NONGATED_SHAPES`) are priced non-gated in every table (H100 vLLM bf16
topk-6 rows +25% signed gated, -6% non-gated).

Weight-only types (``int4_wo``, ``w4a16_mxfp4``) compute at the bf16 peak and stream 0.5-byte
weights; ``fp8`` / ``fp8_block`` compute at the fp8 peak (the device's own datasheet peak,
:func:`simllm.cost.kernel_models.strict_peak`: no silent bf16 price); ``nvfp4``, ``w4afp8`` and
``w4a8_mxfp4_mxfp8`` are UNCALIBRATED (see :data:`MOE_DTYPES`). Parameters are per (framework,
dtype, kernel family) section ``moe/<dtype>/<kernel_source>`` falling back to ``moe/<dtype>``
(dimensionless scales and seconds), so they transfer to devices through those devices' own peaks,
HBM bandwidth, L2 size and SM counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from .kernel_models import strict_peak
from .kernels import l2_time_factor

#: table dtype -> (compute dtype for the peak, weight bytes, activation bytes) per element.
#: UNCALIBRATED (no table of them in ../shared/data; each priced with the nearest measured dtype's fitted
#: section, see :data:`NEAREST`): ``nvfp4`` (Blackwell: fp4 weights and activations, one fp8 scale per 16
#: elements, at the device's fp4 peak; parameters of fp8_block, else fp8), ``w4afp8`` (int4 weights with a
#: bf16 scale per 128-element group, fp8 activations, at the fp8 peak; parameters of fp8), and
#: ``w4a8_mxfp4_mxfp8`` (mxfp4 weights and mxfp8 activations, one e8m0 scale byte per 32 elements, at the
#: fp8 peak; parameters of fp8_block), ``mxfp8`` (Blackwell block-scaled fp8: fp8 weights and activations, one e8m0
#: scale byte per 32 elements, at the fp8 peak; parameters of fp8_block). A device without the peak raises InputError
#: (strict_peak).
MOE_DTYPES = {"bfloat16": ("bf16", 2.0, 2.0), "float16": ("fp16", 2.0, 2.0), "fp8": ("fp8", 1.0, 1.0),
              "fp8_block": ("fp8", 1.0 + 4.0 / 128 ** 2, 1.0), "int4_wo": ("bf16", 0.5, 2.0),
              "w4a16_mxfp4": ("bf16", 0.5 + 1.0 / 32, 2.0), "int8_wo": ("bf16", 1.0, 2.0),
              "nvfp4": ("fp4", 0.5 + 1.0 / 16, 0.5 + 1.0 / 16), "w4afp8": ("fp8", 0.5 + 2.0 / 128, 1.0),
              "w4a8_mxfp4_mxfp8": ("fp8", 0.5 + 1.0 / 32, 1.0 + 1.0 / 32),
              "mxfp8": ("fp8", 1.0 + 1.0 / 32, 1.0 + 1.0 / 32)}
UNCALIBRATED = frozenset({"nvfp4", "w4afp8", "w4a8_mxfp4_mxfp8", "mxfp8"})
_PL = re.compile(r"^power_law_(\d+(?:\.\d+)?)$")
DRAWS = 4


@dataclass(frozen=True)
class MoEParams:
    fixed_s: float = 3.0e-5
    slot_passes: float = 4.0
    compute_scale: float = 0.8
    memory_efficiency: float = 0.8
    full_passes: float = 1.0
    l2_speedup: float = 1.0
    #: 1 = the table was written by the earlier collectors (see :func:`rank_counts` and NONGATED_SHAPES);
    #: chosen by the fit (the better of the two conventions), never continuous
    legacy_collector: float = 0.0
    #: seconds per touched local expert in each of the two grouped GEMMs (the kernel's per-group work; see
    #: moe_time_counts)
    expert_s: float = 0.0

    def vector(self):
        return [self.fixed_s * 1e6, self.slot_passes, self.compute_scale, self.memory_efficiency, self.full_passes,
                self.l2_speedup, self.legacy_collector, self.expert_s * 1e6]

    @classmethod
    def from_vector(cls, x):
        return cls(float(x[0]) * 1e-6, float(x[1]), float(x[2]), float(x[3]), float(x[4]),
                   float(x[5]) if len(x) > 5 else 1.0, float(x[6]) if len(x) > 6 else 0.0,
                   float(x[7]) * 1e-6 if len(x) > 7 else 0.0)


def _alpha(dist: str) -> float | None:
    if dist in ("balanced", "uniform"):
        return None
    m = _PL.match(dist)
    if not m:
        raise InputError(f"unknown distribution {dist!r} (expected balanced or power_law_<alpha>)",
                         field="distribution")
    return float(m.group(1))


def _fix_sum(n: np.ndarray, target: int) -> None:
    """The collectors' correction of the rounded per-expert counts to exactly ``target`` slots:
    a shortfall goes one slot at a time to the largest experts (in order, cycling), an excess is
    taken from the smallest (an empty one passes it to the largest). At small batches
    (``T k <= E``) almost every rounded count is 0, so this is what routes the tokens at all: the
    ``T k`` slots land one each on the largest draws (without it rank 0 got no token and the layer
    was priced as its fixed cost alone: L40S power-law rows at 1-8 tokens 30-200x too fast)."""
    delta = int(target - n.sum())
    if delta == 0:
        return
    order = np.argsort(-n, kind="stable")
    if delta > 0:
        n += delta // n.size
        n[order[: delta % n.size]] += 1
        return
    for i in range(-delta):
        j = order[-(i % n.size) - 1]
        if n[j] > 0:
            n[j] -= 1
        else:
            n[int(np.argmax(n))] -= 1


def _clamp_round_robin(n: np.ndarray, T: int, ep: int, e_loc: int, target: int) -> np.ndarray:
    """Rank 0's counts as the published collectors' ``_generate_power_law_distribution`` makes them
    (ai-dynamo/aiconfigurator ``collector/helper.py``): each expert is picked by at most ``T``
    tokens (a token picks an expert once), the clamped overflow and the rounding shortfall go one
    slot per rank in turn (rank 0 first) to each rank's least-loaded local expert that is below
    ``T``, an excess is taken one slot per rank from each rank's most-loaded expert; the busiest
    rank is then measured. At ``T k <= E`` almost every rounded count is 0, so the shortfall
    spreads round-robin over the ranks: rank 0 gets about ``T k / ep`` slots on as many experts
    (the previous largest-first correction piled up to ``k`` slots on rank 0 and priced one
    L40S token at EP 8 as 8 experts' weights, up to 11x the measured 47 us)."""
    n = np.minimum(n, T)
    g = n.reshape(ep, e_loc).copy()
    delta = int(target - g.sum())
    step = 1 if delta > 0 else -1
    left = abs(delta)
    while left > 0:
        moved = False
        for r in range(ep):
            row = g[r]
            ok = np.flatnonzero(row < T) if step > 0 else np.flatnonzero(row > 0)
            if ok.size == 0:
                continue
            j = ok[int(np.argmin(row[ok]))] if step > 0 else ok[int(np.argmax(row[ok]))]
            row[j] += step
            left -= 1
            moved = True
            if left == 0:
                break
        if not moved:
            break
    return g[int(np.argmax(g.sum(axis=1)))].copy()


@lru_cache(maxsize=65536)
def rank_counts(T: int, E: int, k: int, ep: int, dist: str, legacy: bool = False) -> tuple:
    """Rank 0's sorted per-local-expert token counts (expected over seeded draws), as a tuple.
    ``legacy``: the earlier collectors' power-law correction (no per-expert clamp, the shortfall on
    the largest experts, :func:`_fix_sum`), which the tables of the older collector runs follow
    (A100 vLLM 0.14.0: 15.4% median with it after a refit, 22.6% with the current one)."""
    if ep < 1 or E % ep:
        raise InputError(f"{E} experts do not divide over ep {ep}", field="moe_ep_size")
    e_loc = E // ep
    k_loc = min(k, e_loc)
    a = _alpha(dist)
    if a is None:  # the collectors' global fixed-stride balanced routing; rank 0 keeps its experts' slots
        stride = math.ceil(E / k)
        tok = np.arange(T)[:, None]
        i = np.arange(k)[None, :]
        ids = ((tok + i * stride) % E) if T >= stride else ((tok * stride / T + i * stride) % E)
        ids = np.floor(ids).astype(int).ravel()
        counts = np.bincount(ids[ids < e_loc], minlength=e_loc).astype(float)
        return tuple(sorted(counts[counts > 0].tolist(), reverse=True))
    rng = np.random.default_rng(1009 * T + 7 * E + ep)
    acc = np.zeros(e_loc)
    target = T * k
    for _ in range(DRAWS):
        lo, hi = (1.0, T * 0.8) if T * k > E else (0.01, 2.0)
        hi = max(hi, lo * 1.0001)
        u = rng.random(E)
        x = ((hi ** (1 - a) - lo ** (1 - a)) * u + lo ** (1 - a)) ** (1 / (1 - a))
        n = np.round(x / x.sum() * target)
        if not legacy:
            g = _clamp_round_robin(n, T, ep, e_loc, target)
        else:
            _fix_sum(n, target)
            groups = n.reshape(ep, e_loc)
            g = groups[int(np.argmax(groups.sum(axis=1)))].copy()
            # rank 0's token count made a multiple of k_loc (extra slots on its first experts)
            extra = int((k_loc - g.sum() % k_loc) % k_loc)
            g[np.arange(extra) % e_loc] += 1
        acc += np.sort(g)[::-1]
    acc /= DRAWS
    return tuple(v for v in acc.tolist() if v > 0)


def moe_time(T, H, I, k, E, tp, ep, dist, dtype, *, acc, gp, p: MoEParams, gated: bool = True,
             warm_l2: bool = True) -> float:
    """Seconds of one rank's MoE layer (see the module docstring); ``gated``: a gated (SwiGLU)
    expert MLP (gate+up GEMM of width ``2 I``, three weight matrices), else a plain up/down MLP
    (width ``I``, two matrices: Nemotron-H's relu^2 experts, TensorRT-LLM's ``nongated`` kernel)."""
    if T <= 0:
        return 0.0
    c = np.asarray(rank_counts(int(T), int(E), int(k), int(ep), str(dist), bool(p.legacy_collector >= 0.5)),
                   dtype=float)
    return moe_time_counts(c, T, H, I, k, tp, dtype, acc=acc, gp=gp, p=p, gated=gated, warm_l2=warm_l2)[0]


def moe_time_counts(c, T, H, I, k, tp, dtype, *, acc, gp, p: MoEParams, gated: bool = True,
                    warm_l2: bool = True, experts: float | None = None) -> tuple[float, float, float, float, float]:
    """:func:`moe_time` for rank 0's per-local-expert token counts ``c`` (of the step's ``T`` tokens routed
    top-``k``): (seconds, FLOPs, bytes, compute seconds, memory seconds of the grouped GEMMs' body). The
    serving step (:meth:`simllm.cost.ops.LayerOps.moe_ffn_block`) prices its fused MoE with it from its own
    routing (expected uniform counts, or a placement's), without the benchmark's hot L2 (``warm_l2``);
    ``experts``: the (expected, possibly fractional) number of experts whose weights stream, where ``c``
    spreads the slots over a whole number of them."""
    if dtype not in MOE_DTYPES:
        raise InputError(f"unknown moe_dtype {dtype!r} (expected one of {', '.join(MOE_DTYPES)})",
                         field="moe_dtype")
    c = np.asarray(c, dtype=float)
    c = c[c > 0]
    if T <= 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    if c.size == 0:
        return p.fixed_s, 0.0, 0.0, 0.0, 0.0
    cdt, wb, ab = MOE_DTYPES[dtype]
    peak, bw, cus = strict_peak(acc, cdt), acc.hbm_bw, int(acc.compute_units.value)
    i_loc = math.ceil(I / tp)
    slots = float(c.sum())
    u = c.size
    per_cu = peak / cus
    t_c = 0.0
    up_n = (2 if gated else 1) * i_loc
    for K, N in ((H, up_n), (i_loc, H)):
        acc_q = 0.0
        for (tm, tn), e in zip(gp.tiles, gp.tile_efficiency):
            tiles = float(np.sum(np.ceil(np.maximum(c, 1.0) / tm))) * math.ceil(N / tn)
            w = tiles / cus
            full = math.floor(w)
            rem = w - full
            waves = full + (gp.partial_wave_cost + (1 - gp.partial_wave_cost) * rem if rem > 0 else 0.0)
            tc_us = waves * 2e6 * tm * tn * (K + gp.tile_k_overhead) / (per_cu * min(e * p.compute_scale, 1.0))
            acc_q += tc_us ** (-gp.tile_softmin_q)
        t_c += acc_q ** (-1.0 / gp.tile_softmin_q) * 1e-6
    w_bytes = (u if experts is None else float(experts)) * (up_n + i_loc) * H * wb
    a_bytes = slots * (H + up_n + i_loc + H) * ab
    if warm_l2 and p.l2_speedup > 1.0:  # the benchmark's hot-L2 weights (see l2_resident_fraction)
        sram = float(getattr(getattr(acc, "sram", None), "value", 0.0) or 0.0)
        w_bytes *= l2_time_factor(w_bytes, sram, p.l2_speedup)
    t_m = (w_bytes + a_bytes) / (bw * p.memory_efficiency)
    q = gp.overlap_exponent
    body = (t_c ** q + t_m ** q) ** (1.0 / q)
    # every token's k routed copies pass through the intermediate caches whatever ep (see docstring)
    full = T * k * (2 * H + 2 * up_n + i_loc) * ab
    traffic = (p.slot_passes * slots * H * ab + p.full_passes * full) / bw
    flops = 2.0 * slots * H * (up_n + i_loc)
    compute_bound = t_c >= t_m
    return (p.fixed_s + 2.0 * p.expert_s * c.size + traffic + body, flops, w_bytes + a_bytes,
            body if compute_bound else 0.0, traffic + (0.0 if compute_bound else body))


# --------------------------------------------------------------------------- registry
#: dtypes with no measured table in ../shared/data, priced with the nearest measured dtype's fitted
#: section (UNCALIBRATED: see MOE_DTYPES)
NEAREST = {"nvfp4": ("fp8_block", "fp8"), "w4afp8": ("fp8", "fp8_block"), "w4a8_mxfp4_mxfp8": ("fp8_block", "fp8"),
           "mxfp8": ("fp8_block", "fp8")}
MIN_SOURCE_ROWS = 300  # rows a (dtype, kernel_source) group needs to get its own fitted section


def source_key(kernel_source: str) -> str:
    """The kernel family of a table's ``kernel_source`` (``_situ_as_silu``: the collectors' relabel of
    a kernel benchmarked with the silu epilogue in place of SiTU, the same kernel)."""
    v = str(kernel_source or "")
    return "" if v in ("nan", "None") else v.replace("_situ_as_silu", "")


def moe_params(cal, dtype: str, source: str = "") -> MoEParams:
    """Parameters of (dtype, kernel family): ``moe/<dtype>/<source>``, else ``moe/<dtype>``, else the
    nearest measured dtype's (:data:`NEAREST`), else ``moe``, else the defaults."""
    from .pricing import section

    keys = ([f"moe/{dtype}/{source}"] if source else []) + [f"moe/{dtype}"]
    keys += [f"moe/{d}" for d in NEAREST.get(dtype, ())] + ["moe"]
    d = {}
    for key in keys:
        d = section(cal, key)
        if d:
            break
    try:
        return MoEParams(**{a: float(v) for a, v in d.items()}) if d else MoEParams()
    except TypeError as e:
        raise InputError(f"bad moe section: {e}", field=f"kernels.moe/{dtype}") from None


#: (hidden, inter, topk, experts) of the Nemotron-H / Nemotron-3 relu^2 (non-gated) expert MLPs. TensorRT-LLM's
#: tables label these rows ``moe_torch_flow_nongated`` and no gated row of any TensorRT-LLM table has one of these
#: shapes; vLLM's and SGLang's collectors run the same models non-gated too (the collectors pick the activation
#: from the model name: ``_NON_GATED_MOE_MODEL_PATTERNS`` in ai-dynamo/aiconfigurator collector/sglang/collect_moe.py)
#: but their tables carry no label. Priced gated, H100 vLLM bf16's topk 6 and 22 rows sat at +25% / +35% median
#: signed (the other topk groups within 6%). (1024, 2688, 22, 512) is the same 512 x 2688 relu^2 expert set behind
#: a 1,024-wide latent projection (Nemotron-3 Super's latent MoE; only H100 vLLM's fp8 table holds it, unlabelled):
#: priced gated its 1,134 rows sat at +36% median signed (the table's other shapes within 2%), non-gated at -1%,
#: and the table went 7.9% / 26% -> 7.3% / 21% median / p90.
NONGATED_SHAPES = frozenset({(2688, 1856, 6, 128), (4096, 2688, 22, 512), (1024, 2688, 22, 512), (2048, 5120, 22, 512),
                             (8192, 5120, 22, 512)})

_COLS = ("num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size")


def _rows(df):
    src = str(df["source"].iloc[0]) if len(df) and "source" in df.columns else None
    for c in _COLS:
        if c not in df.columns:
            raise InputError(f"missing column {c!r}", file=src, field=c)
    dist = df["distribution"].astype(str).to_numpy() if "distribution" in df.columns else \
        np.full(len(df), "balanced", dtype=object)
    # the table's kernel_source names a non-gated expert MLP (TensorRT-LLM ``moe_torch_flow_nongated``:
    # Nemotron-H's relu^2 experts); every other kernel runs the gated (SwiGLU) MLP
    ks = df["kernel_source"].astype(str).to_numpy() if "kernel_source" in df.columns else np.full(len(df), "")
    rows = [tuple(int(v) for v in r) for r in df[list(_COLS)].to_numpy()]
    # 1 = gated, 0 = labelled non-gated, 2 = a Nemotron-H shape without a label (non-gated unless legacy)
    gated = np.array([0 if "nongated" in v else (2 if (r[1], r[2], r[3], r[4]) in NONGATED_SHAPES else 1)
                      for v, r in zip(ks, rows)], dtype=int)
    return rows, dist, df["dtype"].astype(str).to_numpy(), gated, np.array([source_key(v) for v in ks], dtype=object)


def price_frame(df, acc, cal, params: dict | None = None) -> np.ndarray:
    rows, dist, dts, gated, srcs = _rows(df)
    out = np.empty(len(rows))
    cache = {}
    for i, ((T, H, I, k, E, tp, ep), d, dt, g, src) in enumerate(zip(rows, dist, dts, gated, srcs)):
        if dt not in MOE_DTYPES:
            out[i] = np.nan
            continue
        p = (params or {}).get(dt)
        if p is None:
            p = cache.get((dt, src)) or cache.setdefault((dt, src), moe_params(cal, dt, src))
        gt = g == 1 or (g == 2 and p.legacy_collector >= 0.5)
        out[i] = moe_time(T, H, I, k, E, tp, ep, d, dt, acc=acc, gp=cal.gemm, p=p, gated=gt)
    return out


def fit_frame(df, acc, cal, max_rows: int = 500, iters: int = 200) -> dict:
    """Fit :class:`MoEParams` (all but ``legacy_collector``, which is tried both ways) per (dtype, kernel
    family) on a seeded subsample of ``max_rows`` rows:
    ``moe/<dtype>/<source>`` for every family of at least :data:`MIN_SOURCE_ROWS` rows, and
    ``moe/<dtype>`` = the fit of the dtype's largest family (the section the serving path and
    unknown kernel families read). Families differ in their kernels (SGLang's H100 bf16 table holds
    Triton ``fused_moe`` and FlashInfer CUTLASS rows: one shared section left the CUTLASS rows at
    -48% median signed, the Triton ones at +7%)."""
    from .fit import nelder_mead

    out = {}
    srcs = np.array([source_key(v) for v in (df["kernel_source"].astype(str) if "kernel_source" in df.columns
                                              else [""] * len(df))], dtype=object)
    dts = df["dtype"].astype(str).to_numpy()
    for dt in sorted(set(dts.tolist())):
        if dt not in MOE_DTYPES:
            continue
        fams = sorted(set(srcs[dts == dt].tolist()), key=lambda s_: -int(((dts == dt) & (srcs == s_)).sum()))
        for j, src in enumerate(fams):
            m = (dts == dt) & (srcs == src)
            if j > 0 and m.sum() < MIN_SOURCE_ROWS:
                continue
            sub = df[m]
            if len(sub) > max_rows:
                sub = sub.sample(max_rows, random_state=0)
            t = sub["latency_s"].to_numpy(float)

            def f(x, sub=sub, t=t):
                if not (0 <= x[0] < 500 and 0 <= x[1] < 50 and 0.05 < x[2] <= 2.0 and 0.05 < x[3] <= 1.2
                        and 0 <= x[4] < 50 and 1.0 <= x[5] <= 20.0 and 0 <= x[7] < 20):
                    return np.inf
                pr = price_frame(sub, acc, cal, {dt: MoEParams.from_vector(x)})
                v = np.mean(np.abs(np.log(pr / t)))
                return v if np.isfinite(v) else np.inf

            def with_legacy(v, leg):  # the optimised vector: x[0:6] and expert_s (x[7]); legacy fixed
                return list(v[:6]) + [leg, v[6]]

            x0 = moe_params(cal, dt, src).vector()
            x0[5] = max(x0[5], 1.5)  # start inside the L2 term's range (1 = off)
            x0[7] = max(x0[7], 0.5)  # and off the per-expert term's bound (0 us)
            legacy = 1.0 if x0[6] >= 0.5 else 0.0
            x, fx = nelder_mead(lambda v: f(with_legacy(v, legacy)), x0[:6] + [x0[7]], iters=iters, step=0.2)
            best = (with_legacy(x, legacy), fx)
            other = 1.0 - legacy  # the other collector convention: refit only where it is close or better there
            if f(with_legacy(x, other)) < 1.1 * fx:
                x2, fx2 = nelder_mead(lambda v: f(with_legacy(v, other)), list(x), iters=iters, step=0.2)
                if fx2 < fx:
                    best = (with_legacy(x2, other), fx2)
            fitted = asdict(MoEParams.from_vector(best[0]))
            if j == 0:
                out[f"moe/{dt}"] = fitted
            if src and len(fams) > 1:
                out[f"moe/{dt}/{src}"] = fitted
    return out


def _register() -> None:
    from .pricing import register

    register("moe", price_frame, fit_frame)


_register()


#: the serving step's GEMM kernel path (:func:`simllm.cost.layer_kernels.gemm_table_dtype`) -> the MoE table dtype
SERVING_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "fp8": "fp8", "int4_wo": "int4_wo",
                  "int8_wo": "int8_wo", "nvfp4": "nvfp4"}


def serving_params(cal, gemm_dtype: str):
    """(MoE table dtype, :class:`MoEParams`) the serving step prices its fused MoE with, or None where the
    calibration has no fitted ``moe`` section for that kernel path (the step then prices grouped GEMMs)."""
    dt = SERVING_DTYPES.get(gemm_dtype)
    k = getattr(cal, "kernels", None) or {}
    if dt is None or not any(k.get(f"moe/{d}") for d in (dt,) + NEAREST.get(dt, ())):
        return None
    return dt, moe_params(cal, dt)


def serving_fixed_s(cal, act_dtype: str) -> float:
    """Per-rank seconds of one MoE layer that do not shrink with EP or batch (``fixed_s`` of the
    calibration's ``moe/<dtype>`` section; 0 without one), for the serving step cost.

    The measured tables time the fused MoE of vLLM / SGLang / TensorRT-LLM eagerly; the serving
    step's fused-MoE path (:meth:`simllm.cost.ops.LayerOps.moe_ffn_block`) adds this term beside
    its grouped GEMMs. The DeepEP expert-parallel path (:mod:`simllm.cost.moe_ep`) runs other
    kernels (DeepEP + masked grouped GEMMs) that these tables do not measure: it does not use it."""
    k = getattr(cal, "kernels", None) or {}
    name = {"bf16": "bfloat16", "fp16": "float16", "fp8": "fp8"}.get(act_dtype, act_dtype)
    d = k.get(f"moe/{name}") or {}
    return float(d.get("fixed_s", 0.0))
