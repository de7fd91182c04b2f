"""Expert-parallel step cost of one MoE replica (DeepSeek-style: DP attention, EP experts).

A replica spans ``ep`` devices. Attention (and the dense layers, embedding and LM head) runs
data-parallel over ``dp = ep / tp`` groups of ``tp`` devices (tensor-parallel inside a group);
the routed experts are sharded over all ``ep`` devices as a :class:`simllm.placement.Placement`
says (with redundant replicas); the shared experts are replicated on every device. A step of
``T`` tokens (``T = prefill_tokens + decode_seqs``) is assumed spread evenly over the groups
(``ceil(T / dp)`` tokens each) by :meth:`EPStepCost.step_time`; :meth:`EPStepCost.step_time_ranks`
prices the ranks' own batches instead (``simllm.sim.dp_ranks``: the slowest rank's attention). After
sequence splitting inside a group, ``ceil(T / ep)`` tokens leave each device for dispatch. One MoE layer then costs::

    attention(T / dp)  +  norm, router, shared expert on T / ep tokens
    + E[max over devices of routed-expert time]            (grouped GEMMs, see below)
    + dispatch (fp8) + combine (bf16) of T / ep tokens per rank over the topology

**Routed experts.** Device ``d`` holds ``n_d`` token-slots in ``u_d`` touched expert replicas;
it runs up-projection, activation and down-projection as grouped GEMMs with ``u_d`` groups of
``n_d / u_d`` rows (:func:`simllm.cost.kernels.gemm_time`: tile/wave roofline, so decode pays
the weight bytes of every touched replica and large batches pay FLOPs). A replica with share
``s`` of an expert that ``c`` tokens chose is touched with probability ``1 - (1 - s)^c``; its
tokens are ``s c``. The layer waits for the slowest device.

**Expected max load, memoized.** The counts ``c`` are random each step; the simulator needs a
deterministic step time (it jumps over many steps at once), so the routed part is priced by its
*expectation* for ``T`` tokens: on a geometric grid of token counts (1 .. ``grid_max``), routes
are drawn with :class:`simllm.placement.loads.RoutingSampler` under the model's routing rule
(DeepSeek-V3 group-limited ``grouped`` top-k), ``samples`` draws for each of ``sample_layers``
layers (evenly spaced layers of the placement; the layers are statistically alike, so their
mean stands for every MoE layer), and the mean over draws of the max-device time is tabulated.
A grid point's draws are the first ``T`` tokens of one draw of ``grid_max`` tokens (cheap
prefix counts; common random numbers across grid points and, through a module cache, across
placements of the same loads: comparisons between placements see the same routes). Between grid
points the table is interpolated linearly; beyond ``grid_max`` the busiest device's token-slots
are taken in proportion to ``T`` (the last point's max over mean, an upper bound) and priced at the
GEMM rows they make, joined continuously to the table (weights are read once however large T is). The whole token-dependent part
is memoized per integer ``T``, so a scalar ``step_time`` is a dict lookup and a few float ops.

**Dispatch and combine.** Two DeepEP kernel families. *Normal* kernels (prefill):
:func:`simllm.topology.ep_dispatch` (NVLink inside a node, one RDMA copy per destination node)
with the per-device loads the placement gives the layer's expected popularity (a hot device
receives, and sends back, more); linear in tokens per rank, evaluated at two token counts per
sampled layer and the fitted ``a + b * tokens`` (averaged over layers) is used, plus the
calibrated launch overhead per call. *Low-latency* kernels (decode):
:func:`simllm.cost.collectives.deepep_ll_time` (every (token, expert) copy straight to its rank;
calibration section ``deepep_ll``), its traffic part scaled by :meth:`EPStepCost.ll_skew`: the
realized busiest receiver of the call's own sampled routes over the mean (placement skew and
routing fluctuation; a call ends when its busiest receiver holds all its copies). ``dispatch_kernel: auto`` (default) runs a call of at most ``ll_max_tokens`` tokens per
rank (128, SGLang's low-latency buffer) on the low-latency kernels, larger ones on the normal
kernels; ``normal`` / ``low_latency`` force one family.

**Micro-batch overlap** (``overlap: true``; DeepSeek's dual micro-batch, SGLang's two-batch
overlap): the step is split into two halves; while one half computes, the other communicates.
Per MoE layer a half computes ``x = c + a`` (``c``: attention block, local MoE and routed experts
of half the tokens, re-reading the weights; ``a``: its context attention) while the other half's
dispatch + combine take ``m``. The communication is not free: the normal kernels keep
``comm_sms`` SMs (20 of an H800's 132, DeepSeek-V3 report) copying, so the compute beside them
runs at ``r = (SMs - comm_sms) / SMs`` and a half costs ``max(m, x + m (1 - r))``; ``comm_sms``
defaults to those 20 plus :data:`NORMAL_OVERLAP_CONTENTION` of the device (compute slowed by the
copies beside it, pinned on SGLang's TBO ablation). The low-latency kernels in hook mode hold no SM
while data flies (DeepSeek's profile README) but do while sending and receiving: ``r = 1 -``
:data:`LL_SM_BUSY` (SGLang's decode breakdown; 0 held on Ascend, whose dispatch runs on the vector
cores). Each layer adds four stream hand-offs (each micro-batch waits on its dispatch and its
combine), one kernel launch each; once per step the first dispatch (or last compute) has nothing
to hide behind (``+ min(x, m)``). Dense layers run unsplit. Two half batches re-read the weights,
so at small batches the split costs more than it hides: per step the cheaper of the two
schedules is taken, and below ``overlap_min_tokens`` (a framework's threshold) it is off.

**SP-TP-SP attention** (``attention_sp_tp: n``; CloudMatrix-Infer's prefill): groups of ``n`` ranks run
attention sequence-parallel for the token-wise projections and tensor-parallel by head for the attention
itself; the FLOPs are those of DP attention, the two exchanges per layer (an all-gather of the MLA
latents, an all-to-all of the heads' outputs) are added to the attention block
(:meth:`EPStepCost.sp_tp_comm_time`).

**Speculative decoding (MTP).** :class:`simllm.cost.spec_step.SpeculativeStepCost` prices a
verification step through :meth:`step_time` (``n (k + 1)`` tokens, one KV pass);
:meth:`EPStepCost.verify_attention_extra` adds the queries' attention FLOPs beyond the one-query
linear form (MLA decode with two queries per sequence is compute-bound).

**Memory.** ``weight_bytes_per_device``: attention and dense weights (sharded over ``tp``),
embedding and LM head, and per MoE layer the router, the shared experts and the *occupied
expert slots of the fullest device* (redundant replicas cost memory, so the KV cache shrinks).
``kv_bytes_per_token_per_device`` is a token's KV bytes (MLA latent, replicated on the ``tp``
ranks of its group) divided by ``dp``: the replica's ``ep`` devices hold ``dp`` times as many
tokens as one group (the KV pool is treated as shared; a sequence lives in one group).

**Re-placement.** A placement planned on other loads than those served (``plan_loads``) is a
stale one; :meth:`EPStepCost.replan` re-places from observed loads and prices the migration
(bytes of replicas that move, seconds over each device's NIC). Periodic re-placement *during*
a simulation (``placement.replan_every_s``, with drifting loads ``expert_loads.drift``) is
:mod:`simllm.sim.replacement`: each interval boundary swaps in a new cost model (a step's time
stays a fixed function of its batch between boundaries, which end jumps).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ..placement import build_policy, migration_seconds, replan
from ..placement.loads import RoutingSampler, read_loads_csv, uniform_popularity, zipf_popularity
from ..topology import build_topology, ep_dispatch, token_bytes, traffic_time
from . import collectives as C
from .calibration import Calibration, calibration_for
from .fit import default_node_for
from .deepep import ll_params
from .interface import BatchShape, StepCost
from .kernels import elementwise_time, gemm_time
from .ops import LayerOps, total

_ROUTE_CACHE: dict = {}
_ROUTE_CACHE_MAX = 256

DISPATCH_KERNELS = ("auto", "normal", "low_latency")
#: DeepEP low-latency buffers hold this many tokens per rank per call: SGLang's default
#: ``num_max_dispatch_tokens_per_rank`` (128; DeepSeek's decode profile runs 128 requests per GPU).
#: ``dispatch_kernel: auto`` uses the low-latency kernels for a micro-batch of at most this many
#: tokens per rank (decode) and the normal kernels above it (prefill).
LL_MAX_TOKENS = 128
#: SMs DeepEP's normal kernels keep busy while they run: DeepSeek-V3 technical report
#: (arXiv 2412.19437, sec. 3.2.2): 20 of the H800's 132 SMs suffice to saturate IB and NVLink;
#: DeepEP's ``Buffer.num_sms`` default is 20. The low-latency kernels in hook mode (what decode's
#: micro-batch overlap uses) issue RDMA writes and free every SM while the data flies (DeepSeek
#: profile-data README: decode all-to-all "does not occupy GPU SMs"): 0 while overlapped.
NORMAL_COMM_SMS = 20.0
#: Share of a low-latency dispatch/combine during which its kernels hold the SMs (packing and sending,
#: receiving and unpacking); only the rest (data in flight, SMs free in hook mode) hides compute.
#: SGLang large-scale EP blog (LMSYS, 2025-05-05), decode kernel breakdown on 9 x 8 H100, EP72: dispatch
#: takes ~0.17 ms a layer, of which DeepEP's unit tests put ~0.06 ms on the SMs ("decode communication
#: kernels either fully utilize SMs (during send/receive) or none (during inflight waiting)"):
#: 0.06 / 0.17. Combine is taken to split alike (an assumption: the blog gives dispatch's only).
LL_SM_BUSY = 0.06 / 0.17
#: stream hand-offs per MoE layer of the two-micro-batch schedule: each micro-batch waits on its
#: dispatch and on its combine (an event wait and a kernel launch each), four per layer; each costs
#: one kernel launch of the calibration's GEMM path (the launch a dependent kernel pays after a wait).
OVERLAP_HANDOFFS = 4


#: Compute lost beside the normal dispatch/combine kernels beyond the SMs they hold, as a share of the
#: device's compute units: the computation slows down next to running communication (SGLang large-scale
#: EP blog, TBO breakdown: "the no-TBO 8k case outperforms the TBO 16k case in per-kernel speed ...
#: reduced SMs with TBO, potential noisy neighbor effects"; memory, L2 and power shared with the copy
#: kernels). Pinned by the same blog's prefill ablation: TBO +27-35% over the vanilla schedule at the
#: same tokens per device, +40.5% at 16K against vanilla's largest 8K; with 20 SMs held alone this model
#: gives +50%; 31 of 132 more is the least that brings the same-token gain into the published range
#: (+35% at 8,192 tokens per H100, 4K prompts; 16K against 8K +38%; ``python benchmarks/published_moe.py``
#: prints both).
NORMAL_OVERLAP_CONTENTION = 31.0 / 132.0


def default_comm_sms(acc) -> float:
    """Compute units the normal dispatch/combine kernels take from the GEMMs while overlapped: the
    SMs they hold (GPUs: :data:`NORMAL_COMM_SMS`; Ascend NPUs run their dispatch on the AI vector cores
    and the SDMA/UB engines, apart from the AI (cube) cores the GEMMs use (CloudMatrix384 paper, arXiv
    2506.12708: AIV-driven dispatch/combine): 0, an assumption written down) plus the contention share
    :data:`NORMAL_OVERLAP_CONTENTION` of the device's compute units (on either kind)."""
    held = 0.0 if str(getattr(acc, "kind", "gpu")) == "npu" else NORMAL_COMM_SMS
    return held + NORMAL_OVERLAP_CONTENTION * float(acc.compute_units.value)


def _vec(ops) -> np.ndarray:
    t = total(ops)
    return np.array([t.time_s, t.compute_s, t.memory_s, t.comm_s, t.overhead_s, t.flops, t.bytes])


def _routes(popularity_row: np.ndarray, top_k: int, routing: str, num_groups: int, topk_groups: Optional[int],
            tokens: int, seed: int) -> np.ndarray:
    """One draw of ``tokens`` tokens' top-k expert ids ``[tokens, k]`` for one layer (cached)."""
    key = (hashlib.sha1(np.ascontiguousarray(popularity_row, dtype=np.float64).tobytes()).hexdigest(), top_k,
           routing, num_groups, topk_groups, tokens, seed)
    r = _ROUTE_CACHE.get(key)
    if r is None:
        s = RoutingSampler(popularity_row[None, :], top_k, routing=routing, num_groups=num_groups,
                           topk_groups=topk_groups, seed=seed)
        r = np.ascontiguousarray(s.routes(tokens)[0])
        if len(_ROUTE_CACHE) >= _ROUTE_CACHE_MAX:
            _ROUTE_CACHE.pop(next(iter(_ROUTE_CACHE)))
        _ROUTE_CACHE[key] = r
    return r


def model_routing(model) -> tuple[str, int, Optional[int]]:
    """The sampler's routing rule for a model: (routing, num_groups, topk_groups)."""
    e = model.moe
    groups = int(getattr(e, "num_groups", 0) or 1)
    tg = getattr(e, "topk_groups", None)
    rule = str(getattr(e, "routing", "") or "")
    if "moge" in rule.lower() and groups > 1:
        return "moge", groups, None
    if groups > 1 and tg and tg < groups:
        return "grouped", groups, int(tg)
    return "topk", 1, None


class EPStepCost:
    """:class:`~simllm.cost.interface.StepCostModel` of an expert-parallel MoE replica."""

    def __init__(self, model, accelerator, *, ep: int, placement, popularity, topology, tp: int = 1, node=None,
                 weight_dtype: str = "bf16", kv_dtype: str = "bf16", act_dtype: str = "bf16", calibration=None,
                 overlap: bool = False, dispatch_dtype: str = "fp8", combine_dtype: str = "bf16",
                 samples: int = 4, sample_layers: int = 4, grid_max: int = 8192, grid_points: int = 48,
                 seed: int = 0, remote_fraction: Optional[float] = None, policy_spec: Optional[dict] = None,
                 dispatch_kernel: str = "auto", overlap_min_tokens: int = 0, comm_sms: Optional[float] = None,
                 ll_max_tokens: int = LL_MAX_TOKENS, traffic: Optional[np.ndarray] = None,
                 framework: str = "vllm", prompt_draws: Optional[int] = None,
                 attention_sp_tp: Optional[int] = None):
        if model.moe is None or model.num_moe_layers == 0:
            raise InputError(f"{model.name} has no MoE layers; expert parallelism needs an MoE model", field="ep")
        self.model, self.acc, self.ep, self.tp = model, accelerator, int(ep), int(tp)
        if self.ep < 1 or self.tp < 1 or self.ep % self.tp:
            raise InputError(f"ep ({ep}) must be a positive multiple of the attention tp ({tp})", field="ep")
        if placement.devices != self.ep:
            raise InputError(f"the placement spans {placement.devices} devices, ep is {ep}", field="placement")
        if samples < 1 or sample_layers < 1 or grid_max < 1 or grid_points < 2:
            raise InputError("samples, sample_layers, grid_max must be >= 1 and grid_points >= 2", field="moe")
        self.dp = self.ep // self.tp
        self._kw = dict(tp=tp, node=node, weight_dtype=weight_dtype, kv_dtype=kv_dtype, act_dtype=act_dtype,
                        calibration=calibration, overlap=overlap, dispatch_dtype=dispatch_dtype,
                        combine_dtype=combine_dtype, samples=samples, sample_layers=sample_layers, grid_max=grid_max,
                        grid_points=grid_points, seed=seed, remote_fraction=remote_fraction,
                        policy_spec=policy_spec, dispatch_kernel=dispatch_kernel,
                        overlap_min_tokens=overlap_min_tokens, comm_sms=comm_sms, ll_max_tokens=ll_max_tokens,
                        traffic=traffic, framework=framework, prompt_draws=prompt_draws,
                        attention_sp_tp=attention_sp_tp)
        self.policy_spec = policy_spec  # the placement policy block periodic re-placement re-plans with
        if dispatch_kernel not in DISPATCH_KERNELS:
            raise InputError(f"must be one of {', '.join(DISPATCH_KERNELS)}, got {dispatch_kernel!r}",
                             field="moe.dispatch_kernel")
        for v, f in ((overlap_min_tokens, "moe.overlap_min_tokens"), (ll_max_tokens, "moe.ll_max_tokens")):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"must be an integer >= 0, got {v!r}", field=f)
        self.dispatch_kernel = dispatch_kernel
        if prompt_draws is not None and (isinstance(prompt_draws, bool) or not isinstance(prompt_draws, (int, float))
                                         or not 0 < prompt_draws < math.inf):
            raise InputError(f"must be a positive number (independent routing draws per prompt), got {prompt_draws!r}",
                             field="moe.prompt_draws")
        # a prefill chunk of c tokens routes as min(c, prompt_draws) independent draws, each repeated
        # c / min(c, prompt_draws) times (None: every token an independent draw); see effective_draws
        self.prompt_draws = None if prompt_draws is None else float(prompt_draws)
        self._corr: dict = {}
        self.overlap_min_tokens, self.ll_max_tokens = int(overlap_min_tokens), int(ll_max_tokens)
        # context-coherent EP (ExFlow; simllm.placement.affinity): one all-to-all a layer, carrying
        # only the token copies whose next expert is on another device (this fraction)
        if remote_fraction is not None and not 0.0 <= remote_fraction <= 1.0:
            raise InputError(f"must be in [0, 1], got {remote_fraction}", field="remote_fraction")
        self.remote_fraction = remote_fraction
        # the same scheme priced from the placement's own device-to-device copies (coherent_comm)
        self.traffic = None if traffic is None else _check_traffic(traffic, int(ep))
        self.placement, self.topo = placement, topology
        self.overlap = bool(overlap)
        self.cal: Calibration = calibration_for(accelerator, calibration)
        cus = float(accelerator.compute_units.value)
        sms = default_comm_sms(accelerator) if comm_sms is None else comm_sms
        if isinstance(sms, bool) or not isinstance(sms, (int, float)) or not 0 <= sms < cus:
            raise InputError(f"must be a number of compute units in [0, {cus:g}), got {sms!r}", field="moe.comm_sms")
        self.comm_sms = float(sms)
        # compute rate left while the normal kernels run beside it (their copy loops occupy SMs)
        self._ov_rate = (cus - self.comm_sms) / cus
        # low-latency calls: the share of their time they hold the compute units (GPUs: LL_SM_BUSY; Ascend's
        # AIV-direct dispatch runs on the vector cores beside the cube cores: 0, as for the normal kernels)
        self._ll_busy = 0.0 if str(getattr(accelerator, "kind", "gpu")) == "npu" else LL_SM_BUSY
        if node is None and self.tp > 1:
            node = default_node_for(accelerator)
        self.node = node
        links = C.CommLinks.from_node(node, self.cal.comm) if node is not None else None
        # the framework whose measured kernels price GEMMs and attention (the calibration's per-framework fits)
        kw = dict(cal=self.cal, weight_dtype=weight_dtype, kv_dtype=kv_dtype, act_dtype=act_dtype, framework=framework)
        self.ops = LayerOps(model, accelerator, tp=self.tp, links=links, **kw)  # attention, dense, head
        self.eops = LayerOps(model, accelerator, tp=1, links=None, **kw)  # experts: whole, one device each
        self._sp = self._sp_tp_setup(attention_sp_tp, model)
        self.n_moe = int(model.num_moe_layers)
        self.n_dense = int(model.num_layers - self.n_moe)
        self.L = int(model.num_layers)
        e = model.moe
        self.E, self.k = int(e.num_experts), int(e.top_k)
        self.H, self.I = int(model.hidden_size), int(e.expert_intermediate_size)
        self.gated = bool(model.ffn.gated)
        self.routing, self.num_groups, self.topk_groups = model_routing(model)
        self.dispatch_dtype, self.combine_dtype = dispatch_dtype, combine_dtype
        pop = np.asarray(popularity, dtype=float)
        if pop.ndim == 1:
            pop = np.broadcast_to(pop, (placement.num_layers, pop.shape[0]))
        if pop.shape != (placement.num_layers, self.E):
            raise InputError(f"expert loads of shape {pop.shape} do not match the placement "
                             f"({placement.num_layers} layers x {self.E} experts)", field="expert_loads")
        self.popularity = pop / np.maximum(pop.sum(axis=1, keepdims=True), 1e-300)
        nl = min(int(sample_layers), placement.num_layers)
        self.sample_layer_ids = np.unique(np.linspace(0, placement.num_layers - 1, nl).round().astype(int))
        self.samples, self.seed = int(samples), int(seed)
        self.grid = np.unique(np.round(np.geomspace(1, max(2, int(grid_max)), int(grid_points))).astype(int))
        self._build_expert_table()
        self._build_comm_model()
        self._slope = self.L * self.ops.decode_attention_slope() / self.dp
        self._dec_lin = self.ops.k.decode_linear()  # (launch, per sequence, per context token) of decode attention
        self._tok: dict[int, float] = {}
        self._head: dict[int, float] = {}
        self._rank_head: dict[int, float] = {}
        self._vmemo: dict = {}  # breakdown vectors of attention / local MoE / embedding / dense parts by tokens  # LM head of the busiest attention rank (step_time_ranks)
        self._ov: dict[int, tuple] = {}
        self._mq: dict[int, float] = {}  # queries per sequence -> verification attention seconds per context token

    # ------------------------------------------------------------------ SP-TP-SP attention
    def _sp_tp_setup(self, n, model) -> Optional[tuple]:
        """``moe.attention_sp_tp``: groups of ``n`` EP ranks run each attention layer SP-TP-SP instead
        of pure DP (CloudMatrix-Infer's prefill, Zuo et al. 2025, arXiv 2506.12708, sec. 4: its MLA
        split in three stages; the token-position-independent down-projections and ``o_proj`` in
        sequence parallelism over the group's packed tokens, FlashAttention with its up-projections
        tensor-parallel by head). The FLOPs stay those of DP attention spread evenly (every rank does
        ``1 / n`` of the heads for ``n`` times the tokens); what SP-TP-SP adds is its two exchanges per
        layer over the group: an all-gather of every token's compressed query and KV latents (MLA's
        ``q_lora_rank + kv_lora_rank + qk_rope_head_dim`` values, the hidden state in place of the query
        latent for a model without a query down-projection, at the activation width) and an
        all-to-all returning each rank's heads' outputs (``num_heads / n x v_head_dim`` values a
        token) to the token's own rank. ASSUMPTION: both sit between dependent stages of a micro-batch
        and are not hidden behind other work (the paper does not say how they are scheduled); bytes at
        the activation dtype. Only MLA models (the exchanges carry MLA's latents): others are rejected.
        Returns ``(n, links, devices of the group per node, gather bytes a token, all-to-all bytes a
        token)`` or None. The attention FLOPs keep DP attention's per-rank split (a DP-rank imbalance,
        :meth:`step_time_ranks`, is not evened out by the sequence packing here)."""
        if n is None:
            return None
        f = "moe.attention_sp_tp"
        if isinstance(n, bool) or not isinstance(n, int) or n < 2 or self.ep % n:
            raise InputError(f"must be an integer >= 2 that divides ep ({self.ep}), got {n!r}", field=f)
        a = model.attention
        if a.kind != "mla":
            raise InputError(f"SP-TP-SP attention is modelled for MLA models (its exchanges carry MLA's latents); "
                             f"{model.name} has {a.kind} attention", field=f)
        if self.tp != 1:
            raise InputError(f"SP-TP-SP attention replaces DP attention; the attention tp must be 1, got {self.tp}",
                             field=f)
        if a.num_heads % n:
            raise InputError(f"the group of {n} ranks must divide the {a.num_heads} attention heads", field=f)
        node = self.topo.node
        links = C.CommLinks.from_node(node, self.cal.comm)
        ab = float(self.ops.ab)
        gather = ((a.q_lora_rank or model.hidden_size) + a.kv_lora_rank + a.qk_rope_head_dim) * ab
        back = a.num_heads / n * a.v_head_dim * ab
        return n, links, min(n, node.devices), gather, back

    def sp_tp_comm_time(self, tokens_per_rank: float) -> float:
        """Seconds per layer of the SP-TP-SP exchanges when each rank holds ``tokens_per_rank`` tokens
        (0 without ``moe.attention_sp_tp``)."""
        if self._sp is None or tokens_per_rank <= 0:
            return 0.0
        n, links, g, gather, back = self._sp
        group = tokens_per_rank * n
        return C.all_gather(group * gather, n, links, g) + C.all_to_all(group * back, n, links, g)

    def _attention_vec(self, t: float) -> np.ndarray:
        """Breakdown vector of one attention block of ``t`` tokens on one rank, with the SP-TP-SP
        exchanges where they are on."""
        v = _vec(self.ops.attention_block(t))
        if self._sp is not None and t > 0:
            c = self.sp_tp_comm_time(t)
            n, _, _, gather, back = self._sp
            v = v + np.array([c, 0.0, 0.0, c, 0.0, 0.0, t * n * gather + t * back])
        return v

    # ------------------------------------------------------------------ routed experts: E[max device]
    def _device_expert_time(self, n: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Seconds of one device's routed experts for ``n`` token-slots in ``u`` touched replicas."""
        o, g = self.eops, self.cal.gemm
        up_n = (2 if self.gated else 1) * self.I
        u = np.where(n > 0, np.maximum(u, 1e-9), 0.0)
        M = np.where(u > 0, n / np.where(u > 0, u, 1.0), 0.0)
        kw = dict(peak=o.peak, bw=o.bw, cus=o.cus, gp=g, a_bytes=o.ab, w_bytes=o.wb, o_bytes=o.ab)
        with np.errstate(divide="ignore", invalid="ignore"):  # idle devices: zero work, masked below
            t = gemm_time(M, self.H, up_n, groups=u, **kw) + gemm_time(M, self.I, self.H, groups=u, **kw)
        t = t + elementwise_time(n * (up_n + self.I) * o.ab, bw=o.bw, ep=self.cal.elementwise)
        return np.where(n > 0, t, 0.0)

    def _build_expert_table(self) -> None:
        P = self.placement
        G, S = P.devices, P.slots_per_device
        grid = self.grid
        Tmax = int(grid[-1])
        t_max = np.zeros(len(grid))
        n_max = np.zeros(len(grid))
        u_max = np.zeros(len(grid))
        draws = 0
        for l in self.sample_layer_ids:
            slot_e = P.expert[l].reshape(G * S)
            slot_s = P.share[l].reshape(G * S).astype(float)
            occ = slot_e >= 0
            se = np.where(occ, slot_e, 0)
            ss = np.where(occ, slot_s, 0.0)
            for r in range(self.samples):
                routes = _routes(self.popularity[l], self.k, self.routing, self.num_groups, self.topk_groups,
                                 Tmax, self.seed * 1_000_003 + int(l) * 101 + r)
                # prefix counts: counts[i, e] = tokens among the first grid[i] choosing expert e
                cnt = np.zeros((len(grid), self.E))
                acc = np.zeros(self.E)
                prev = 0
                for i, T in enumerate(grid):
                    acc = acc + np.bincount(routes[prev:T].ravel(), minlength=self.E)
                    cnt[i] = acc
                    prev = T
                c = cnt[:, se]  # [grid, G*S]
                n = (c * ss).reshape(len(grid), G, S).sum(axis=2)
                u = np.where(occ, 1.0 - (1.0 - np.minimum(ss, 1.0)) ** c, 0.0).reshape(len(grid), G, S).sum(axis=2)
                t = self._device_expert_time(n, u)
                j = np.argmax(t, axis=1)
                rows = np.arange(len(grid))
                t_max += t[rows, j]
                n_max += n.max(axis=1)
                u_max += u[rows, j]
                draws += 1
        self._t_exp = t_max / draws
        self._n_max = n_max / draws
        self._u_max = u_max / draws
        # realized busiest device's token-slots over the mean, per grid point (the low-latency kernels' skew)
        self._n_skew = np.maximum(self._n_max / (grid * self.k / G), 1.0)
        # the last point's E[max device time] over the time of its mean max-device slots: joins the tabulated
        # expectation to the extrapolation above it continuously
        last = float(self._device_expert_time(np.array([self._n_max[-1]]), np.array([self._u_max[-1]]))[0])
        self._big_scale = float(self._t_exp[-1] / last) if last > 0 else 1.0
        self._big: dict = {}

    def routed_time(self, T: float) -> float:
        """Expected seconds of one MoE layer's routed experts (slowest device) for ``T`` tokens."""
        if T <= 0:
            return 0.0
        g = self.grid
        if T <= g[0]:
            return float(self._t_exp[0] * T / g[0]) if T < g[0] else float(self._t_exp[0])
        if T > g[-1]:
            # beyond the table: the busiest device's token-slots grow in proportion to T (its share of the
            # last grid point's draws, an upper bound: fluctuation shrinks with T), priced at the GEMM shapes
            # they make (larger rows per replica are more efficient than the table's last point)
            hit = self._big.get(T)
            if hit is None:
                n = np.array([self._n_max[-1] * T / g[-1]])
                u = np.array([self._u_max[-1]])
                hit = float(self._device_expert_time(n, u)[0]) * self._big_scale
                if len(self._big) < 200_000:
                    self._big[T] = hit
            return hit
        return float(np.interp(T, g, self._t_exp))

    # ------------------------------------------------------------------ prompt-correlated routing
    def effective_draws(self, prefill_tokens: int, prefill_seqs: int, decode_seqs: int) -> Optional[int]:
        """Independent routing draws a step's ``T`` tokens amount to when a prompt's tokens share routes
        (``prompt_draws``), or None where every token is an independent draw (the tabulated case).

        A prefill chunk of ``c`` tokens is taken as ``u = min(c, prompt_draws)`` independent draws, each
        repeated ``c / u`` times (a benchmark prompt built by repeating a short prompt to length, as
        SGLang's ``random`` dataset does; real prompts whose tokens share routing preferences alike);
        decode tokens (one per sequence) are independent. A per-expert count of ``T`` tokens then has the
        variance of ``T_eff = T^2 / (D + P c / u)`` independent draws scaled by ``T / T_eff`` (``D``
        decode tokens, ``P`` prefill tokens in chunks of mean length ``c``). Rounded to three significant
        digits (a memo key)."""
        u = self.prompt_draws
        if u is None or prefill_tokens <= 0 or prefill_seqs <= 0:
            return None
        c = prefill_tokens / prefill_seqs
        if c <= u:
            return None
        T = prefill_tokens + decode_seqs
        t_eff = T * T / (decode_seqs + prefill_tokens * c / u)
        e = max(0, int(math.floor(math.log10(t_eff))) - 2)
        return max(1, int(round(t_eff / 10 ** e)) * 10 ** e)

    def _nmax_at(self, T: float) -> float:
        """Expected busiest device's token-slots for ``T`` independent draws (the table; beyond it in
        proportion to ``T``, as :meth:`routed_time`)."""
        g = self.grid
        if T > g[-1]:
            return float(self._n_max[-1] * T / g[-1])
        if T < g[0]:
            return float(self._n_max[0] * T / g[0])
        return float(np.interp(T, g, self._n_max))

    def _u_at(self, T: float) -> float:
        return float(np.interp(min(float(T), float(self.grid[-1])), self.grid, self._u_max))

    def correlated_factors(self, T: float, t_eff: Optional[float]) -> tuple[float, float]:
        """``(routed, traffic)``: factors on the routed-expert seconds and on the normal kernels'
        token-proportional dispatch/combine seconds of a layer of ``T`` tokens that route as ``t_eff``
        independent draws (:meth:`effective_draws`), against ``T`` independent draws: the busiest
        device holds ``nmax(t_eff) T / t_eff`` token-slots instead of ``nmax(T)`` (same mean, the
        fluctuation of ``t_eff`` draws); it computes them (priced at the GEMM shapes they make) and
        receives them (and sends them back). 1 where ``t_eff`` is None or >= T."""
        if t_eff is None or t_eff >= T or T <= 0:
            return 1.0, 1.0
        key = (float(T), float(t_eff))
        hit = self._corr.get(key)
        if hit is None:
            n0 = self._nmax_at(T)
            n1 = self._nmax_at(t_eff) * T / t_eff
            u = np.array([self._u_at(T)])
            t0 = float(self._device_expert_time(np.array([n0]), u)[0])
            t1 = float(self._device_expert_time(np.array([n1]), u)[0])
            hit = (t1 / t0 if t0 > 0 else 1.0, max(1.0, n1 / n0) if n0 > 0 else 1.0)
            if len(self._corr) < 200_000:
                self._corr[key] = hit
        return hit

    def expert_table(self) -> dict[str, Any]:
        """The tabulated expectation: tokens, seconds, max-device token-slots, mean token-slots."""
        return {"tokens": self.grid.tolist(), "routed_s": self._t_exp.tolist(),
                "max_device_slots": self._n_max.tolist(),
                "mean_device_slots": (self.grid * self.k / self.ep).tolist()}

    # ------------------------------------------------------------------ dispatch / combine
    def _build_comm_model(self) -> None:
        self._ll_p = ll_params(self.cal)
        self._ll_experts = self.ep * self.slots_used  # expert slots over the EP group: DeepEP LL's warp groups
        if self.ep <= 1:
            self._comm = (0.0, 0.0)
            self._skew = 1.0
            return
        if self.traffic is not None:
            self._comm = coherent_comm(self.topo, self.traffic, self.H, self.k, dtype=self.dispatch_dtype)
            self._skew = 1.0  # the low-latency kernels' load skew (only where forced: dispatch_kernel low_latency)
            return
        loads = self.placement.device_loads(self.popularity)  # [L, G] expected token share per device
        a_sum = b_sum = skew = 0.0
        refs = (32, 256)
        tg = self.topk_groups if self.routing == "grouped" else None
        experts = self.E if self.E % self.ep == 0 else self.ep * max(1, self.E // self.ep)
        for l in self.sample_layer_ids:
            w = loads[l]
            if w.sum() <= 0:
                w = np.ones(self.ep)
            skew += float(w.max() / w.mean())
            tot = []
            for ref in refs:
                t = 0.0
                ops = (("dispatch", self.dispatch_dtype), ("combine", self.combine_dtype))
                if self.remote_fraction is not None:  # one all-to-all of the copies that leave
                    ops = ops[:1]
                for op, dt in ops:
                    t += ep_dispatch(self.topo, ref, self.H, self.k, self.ep, experts=experts, topk_groups=tg,
                                     dtype=dt, op=op, seed=self.seed, device_loads=w).time_s
                tot.append(t)
            b = (tot[1] - tot[0]) / (refs[1] - refs[0])
            if self.remote_fraction is not None:
                b *= self.remote_fraction
            a_sum += max(0.0, tot[0] - b * refs[0])
            b_sum += b
        n = len(self.sample_layer_ids)
        calls = 1 if self.remote_fraction is not None else 2
        self._comm = (a_sum / n + calls * self.topo.launch_overhead, b_sum / n)
        self._skew = skew / n  # the busiest device's share over the mean (it receives, and returns, most)

    def uses_low_latency(self, tokens_per_rank: float) -> bool:
        """Whether a call of ``tokens_per_rank`` tokens runs DeepEP's low-latency kernels."""
        if self.dispatch_kernel == "auto":
            # context-coherent EP (remote_fraction or a traffic matrix) runs its one all-to-all on the normal path
            return tokens_per_rank <= self.ll_max_tokens and self.remote_fraction is None and self.traffic is None
        return self.dispatch_kernel == "low_latency"

    def ll_skew(self, tokens_per_rank: float) -> float:
        """The busiest device's (token, expert) copies over the mean in one low-latency call of
        ``tokens_per_rank`` tokens per rank: the mean over the sampled routes of the realized
        maximum (the placement's skew and the call's own routing fluctuation: a call ends when its
        busiest receiver holds all its copies, and combine sends as many back). Between grid points
        interpolated, beyond ``grid_max`` tokens the last point's. Context-coherent traffic keeps the
        expected skew."""
        if self.traffic is not None or self.remote_fraction is not None:
            return self._skew
        return float(np.interp(float(tokens_per_rank) * self.ep, self.grid, self._n_skew))

    def ll_comm_time(self, tokens_per_rank: float) -> float:
        """Seconds of one MoE layer's low-latency dispatch + combine (every (token, expert) copy
        straight to its rank; :func:`simllm.cost.collectives.deepep_ll_time`, calibration section
        ``deepep_ll``); the traffic part scaled by :meth:`ll_skew`, the busiest receiver's share."""
        if tokens_per_rank <= 0 or self.ep <= 1:
            return 0.0
        node, p = self.topo.node, self._ll_p
        g = min(self.topo.devices_per_node, self.ep)
        skew = self.ll_skew(tokens_per_rank)
        t = 0.0
        for op in ("dispatch", "combine"):
            launch = p.dispatch_launch_s if op == "dispatch" else p.combine_launch_s
            ll = float(C.deepep_ll_time(op, tokens_per_rank, self.H, self.k, self.ep, g, node.scale_up_bw,
                                        node.scale_out_bw, p, num_experts=self._ll_experts,
                                        sms=float(self.acc.compute_units.value)))
            t += launch + (ll - launch) * skew
        return t

    def normal_comm_time(self, tokens_per_rank: float) -> float:
        """Seconds of one MoE layer's normal-kernel dispatch + combine (the topology graph's
        :func:`simllm.topology.ep_dispatch`, fitted linear in tokens per rank)."""
        if tokens_per_rank <= 0 or self.ep <= 1:
            return 0.0
        return self._comm[0] + self._comm[1] * tokens_per_rank

    def comm_time(self, tokens_per_rank: float) -> float:
        """Seconds of one MoE layer's dispatch + combine with ``tokens_per_rank`` tokens per device
        (low-latency kernels at decode sizes, normal kernels above: :meth:`uses_low_latency`)."""
        if self.uses_low_latency(tokens_per_rank):
            return self.ll_comm_time(tokens_per_rank)
        return self.normal_comm_time(tokens_per_rank)

    # ------------------------------------------------------------------ memoized token part
    def _local_moe(self, t_r: float) -> np.ndarray:
        """Per-device MoE work other than the routed experts, on ``t_r`` tokens (norm, router,
        top-k, permute, shared experts, residual)."""
        o, e, H, ab = self.eops, self.model.moe, self.H, self.eops.ab
        if t_r <= 0:
            return np.zeros(7)
        ops = [o.ew("post_attn_norm", 2 * t_r * H * ab + H * o.wb), o.gemm("router", t_r, H, self.E, w_bytes=ab),
               o.ew("topk_softmax", t_r * self.E * 8.0), o.ew("permute_unpermute", 4 * t_r * self.k * H * ab),
               o.ew("residual_add", 3 * t_r * H * ab)]
        if e.num_shared_experts:
            inter = (e.shared_intermediate_size or e.expert_intermediate_size) * e.num_shared_experts
            ops += o.mlp("shared_", t_r, inter, self.gated)
        return _vec(ops)

    def _moe_parts(self, T: float, t_g: Optional[float] = None,
                   t_eff: Optional[float] = None) -> tuple[np.ndarray, float, float]:
        """(compute breakdown of attention block + local MoE, routed seconds, comm seconds) for T tokens
        (``t_g``: tokens of the busiest attention group; default T spread evenly; ``t_eff``: independent
        routing draws they amount to, :meth:`effective_draws`; default T)."""
        t_g = math.ceil(T / self.dp) if t_g is None else t_g
        t_r = math.ceil(T / self.ep)
        comp = self._memo_vec("attn", t_g, self._attention_vec) + self._memo_vec("local", t_r, self._local_moe)
        routed, comm = self.routed_time(T), self.comm_time(t_r)
        if t_eff is not None and t_eff < T:
            fr, fc = self.correlated_factors(T, t_eff)
            routed *= fr
            if not self.uses_low_latency(t_r) and comm > 0:
                comm += (fc - 1.0) * self._comm[1] * t_r
        return comp, routed, comm

    def _memo_vec(self, kind: str, x: float, f) -> np.ndarray:
        """``f(x)`` as a breakdown vector, memoized (token counts of a part repeat across step shapes)."""
        key = (kind, x)
        v = self._vmemo.get(key)
        if v is None:
            v = f(x)
            v = _vec(v) if isinstance(v, list) else v
            if len(self._vmemo) < 200_000:
                self._vmemo[key] = v
        return v

    def _token_vec(self, T: int, t_g: Optional[int] = None, t_eff: Optional[int] = None) -> np.ndarray:
        """Breakdown (7) of everything that depends on T alone (and ``t_g``, the busiest attention group's
        tokens; default ``ceil(T / dp)``), summed over layers (one batch, no micro-batch overlap: :meth:`step_time` takes the
        overlapped schedule where it pays)."""
        g = math.ceil(T / self.dp) if t_g is None else t_g
        v = self._memo_vec("embed", g, self.ops.embedding)
        if self.n_dense:
            v = v + self.n_dense * (self._memo_vec("attn", g, self._attention_vec)
                                    + self._memo_vec("dense", g, self.ops.dense_ffn_block))
        comp, routed, comm = self._moe_parts(T, g, t_eff)
        flops_r = 2.0 * T * self.k * (3 if self.gated else 2) * self.H * self.I / self.ep
        moe = comp + np.array([routed, 0.0, routed, 0.0, 0.0, flops_r, 0.0]) + np.array([comm, 0, 0, comm, 0, 0, 0])
        return v + self.n_moe * moe

    def overlap_parts(self, T: int, t_g: Optional[int] = None,
                      t_eff: Optional[int] = None) -> Optional[tuple[float, float, float, float, float]]:
        """The two-micro-batch schedule's token-dependent terms for a step of ``T`` tokens, or
        None where it is off (``overlap`` false, ``T`` below ``overlap_min_tokens`` or 2):
        ``(rest, c, m, r, bubble)``: seconds outside the MoE layers (embedding, dense layers at
        full T), one half-batch's compute per MoE layer (attention block + local MoE + routed
        experts, context attention excluded), one half-batch's dispatch + combine, the compute
        rate left while that communication runs (normal kernels take ``comm_sms``; the
        low-latency kernels none), and the per-layer hand-off bubbles. ``t_g``: tokens of the busiest
        attention rank (default ``ceil(T / dp)``, an even spread); ``t_eff``: the independent routing
        draws of the step (:meth:`effective_draws`; a half holds half of them)."""
        if not self.overlap or T < 2 or T < self.overlap_min_tokens:
            return None
        key = T if t_g is None and t_eff is None else (T, t_g, t_eff)
        hit = self._ov.get(key)
        if hit is None:
            g = math.ceil(T / self.dp) if t_g is None else t_g
            v = self._memo_vec("embed", g, self.ops.embedding)
            if self.n_dense:
                v = v + self.n_dense * (self._memo_vec("attn", g, self._attention_vec)
                                        + self._memo_vec("dense", g, self.ops.dense_ffn_block))
            ch, rh, mh = self._moe_parts(T / 2.0, None if t_g is None else t_g / 2.0,
                                         None if t_eff is None else t_eff / 2.0)
            r = 1.0 - self._ll_busy if self.uses_low_latency(math.ceil(T / 2.0 / self.ep)) else self._ov_rate
            launch = float(self.ops.k.gemm(1.0, float(self.H), float(self.H))[0])
            hit = (float(v[0]), float(ch[0] + rh), float(mh), r, OVERLAP_HANDOFFS * launch)
            if len(self._ov) < 200_000:
                self._ov[key] = hit
        return hit

    def _token_time(self, T: int) -> float:
        v = self._tok.get(T)
        if v is None:
            v = float(self._token_vec(T)[0])
            if len(self._tok) < 200_000:
                self._tok[T] = v
        return v

    def _token_time_corr(self, T: int, t_eff: int) -> float:
        key = (T, None, t_eff)
        v = self._tok.get(key)
        if v is None:
            v = float(self._token_vec(T, None, t_eff)[0])
            if len(self._tok) < 200_000:
                self._tok[key] = v
        return v

    def _head_time(self, S: int) -> float:
        v = self._head.get(S)
        if v is None:
            v = float(_vec(self.ops.lm_head(math.ceil(S / self.dp)))[0]) if S > 0 else 0.0
            if len(self._head) < 200_000:
                self._head[S] = v
        return v

    # ------------------------------------------------------------------ StepCostModel
    def step_time(self, prefill_tokens: int, prefill_attn_work: float, prefill_seqs: int, decode_seqs: int,
                  decode_ctx_tokens):
        T = int(prefill_tokens) + int(decode_seqs)
        S = int(prefill_seqs) + int(decode_seqs)
        is_arr = isinstance(decode_ctx_tokens, np.ndarray)
        if T <= 0 and prefill_attn_work <= 0:
            return np.zeros(decode_ctx_tokens.shape) if is_arr else 0.0
        if self.ops.win_share and decode_seqs > 0:  # sliding-window layers read capped contexts (LayerOps)
            decode_ctx_tokens = self.ops.window_ctx(decode_seqs, decode_ctx_tokens)
        t_eff = self.effective_draws(prefill_tokens, prefill_seqs, decode_seqs) if self.prompt_draws else None
        if t_eff is None:
            tok = self._tok.get(T)
            if tok is None:
                tok = self._token_time(T)
        else:
            tok = self._token_time_corr(T, t_eff)
        head = self._head.get(S)
        if head is None:
            head = self._head_time(S)
        o, dp = self.ops, self.dp
        a = o.prefill_attention_time(prefill_tokens / dp, prefill_attn_work / dp) + \
            o.decode_attention_base(-(-int(decode_seqs) // dp))
        base = tok + head + self.L * a
        if decode_seqs > 0:
            single = base + self._slope * decode_ctx_tokens
        else:
            single = np.full(decode_ctx_tokens.shape, base) if is_arr else base
        ov = self.overlap_parts(T, None, t_eff) if self.overlap else None
        if ov is not None:
            two = self._overlapped(ov, head, prefill_tokens, prefill_attn_work, decode_seqs, decode_ctx_tokens)
            single = np.minimum(single, two) if is_arr else min(single, two)  # split only where it pays
        return single if is_arr else float(single)

    def _overlapped(self, ov, head, prefill_tokens, prefill_attn_work, decode_seqs, decode_ctx_tokens):
        """Step seconds of the two-micro-batch schedule. Per MoE layer each half computes
        ``x = c + a_half`` (``a_half``: its context attention) while the other half's dispatch and
        combine take ``m``; the copy kernels slow the compute beside them to rate ``r``, so a half
        costs ``max(m, x + m (1 - r))`` (the work done at rate r while m runs, the rest at full
        rate); the layer ``2 * that + bubble``. Once per step the first dispatch (or the last
        compute) has nothing to hide behind: ``+ min(x, m)``. Dense layers run unsplit."""
        dp = self.dp
        lo, per_seq, _ = self._dec_lin
        if prefill_tokens > 0 or prefill_attn_work > 0:
            pa = self.ops.prefill_attention_time
            a_half = pa(prefill_tokens / dp / 2.0, prefill_attn_work / dp / 2.0)
            a_full = pa(prefill_tokens / dp, prefill_attn_work / dp)
        else:
            a_half = a_full = 0.0
        if decode_seqs > 0:
            ds = int(decode_seqs)
            sl = self._slope / self.L
            a_half = a_half + lo + (-(-ds // (2 * dp))) * per_seq + 0.5 * sl * decode_ctx_tokens
            a_full = a_full + lo + (-(-ds // dp)) * per_seq + sl * decode_ctx_tokens
        return self._overlap_schedule(ov, head, a_half, a_full)

    def _overlap_schedule(self, ov, head, a_half, a_full):
        """:meth:`_overlapped`'s schedule for per-layer attention seconds of a half batch (``a_half``) and a
        whole one (``a_full``), floats or arrays (also the slowest rank's, :meth:`step_time_ranks`)."""
        rest, c, m, r, bubble = ov
        x = c + a_half
        if isinstance(x, np.ndarray):
            half = np.maximum(m, x + m * (1.0 - r))
            fill = np.minimum(x, m)
        else:
            half = max(m, x + m * (1.0 - r))
            fill = min(x, m)
        return rest + head + self.n_dense * a_full + self.n_moe * (2.0 * half + bubble) + fill

    def verify_attention_extra(self, decode_seqs: int, decode_ctx_tokens, queries: int):
        """Seconds a verification step's attention costs beyond the one-query linear form, when
        each of ``decode_seqs`` sequences (context total ``decode_ctx_tokens``) runs ``queries``
        query tokens over its KV in one pass (speculative decoding: the last token and the drafts).
        The KV is read once; the FLOPs are the queries': per context token per layer
        ``max(q f / (peak ce), kv bytes / (bw me))`` against the one-query ``max(f / (peak ce),
        kv bytes / (bw me))`` (MLA's 128 absorbed heads make two queries compute-bound on an H800).
        :class:`simllm.cost.spec_step.SpeculativeStepCost` adds it to the verification step."""
        if decode_seqs <= 0 or queries <= 1:
            return 0.0 * decode_ctx_tokens
        decode_ctx_tokens = self.ops.window_ctx(decode_seqs, decode_ctx_tokens)
        hit = self._mq.get(queries)
        if hit is None:
            k = self.ops.k
            sec = k.dec
            f_tok, by_tok, _, _, _ = k._decode_terms(1.0, sec)
            mem = by_tok / (k.bw * sec["me"])
            comp = f_tok / (k.attn_peak * sec["ce"])
            hit = self._mq[queries] = max(0.0, queries * comp - max(comp, mem)) * self.L / self.dp
        return hit * decode_ctx_tokens

    def step_time_ranks(self, prefill_tokens: np.ndarray, prefill_attn_work: np.ndarray, prefill_seqs: np.ndarray,
                        decode_seqs: np.ndarray, decode_ctx_tokens: np.ndarray):
        """One step of a replica whose ``dp`` attention ranks run their own batches (``simllm.sim.dp_ranks``):
        per-rank arrays (length ``R <= dp``: ranks left out are idle); ``decode_ctx_tokens`` ``[R]`` or
        ``[k, R]`` (k consecutive decode steps, then seconds ``[k]``). The MoE layers synchronise the ranks:
        the step costs the slowest rank's attention (its score/context part; the token-proportional
        projections, embedding and LM head at the busiest rank's tokens and sequences) plus the shared
        expert part of all ranks' tokens (routed experts, dispatch and combine), as :meth:`step_time`
        prices for an even spread. Attention parts are maxed separately: an upper bound of the slowest
        rank, exact when one rank is busiest in both."""
        P = np.asarray(prefill_tokens)
        n = np.asarray(decode_seqs)
        t = P + n
        T = int(t.sum())
        if T <= 0:
            return np.zeros(np.shape(decode_ctx_tokens)[:-1]) if np.ndim(decode_ctx_tokens) == 2 else 0.0
        tg = int(t.max())
        t_eff = self.effective_draws(int(P.sum()), int(np.asarray(prefill_seqs).sum()), int(n.sum())) \
            if self.prompt_draws else None
        key = (T, tg) if t_eff is None else (T, tg, t_eff)
        tok = self._tok.get(key)
        if tok is None:
            tok = float(self._token_vec(T, tg, t_eff)[0])
            if len(self._tok) < 200_000:
                self._tok[key] = tok
        S = int((np.asarray(prefill_seqs) + n).max())
        head = self._rank_head.get(S)
        if head is None:
            head = self._rank_head[S] = float(_vec(self.ops.lm_head(S))[0]) if S > 0 else 0.0
        o, L = self.ops, self.L
        if o.win_share:  # sliding-window layers read capped contexts, per rank (LayerOps.window_ctx)
            decode_ctx_tokens = o.window_ctx(n, np.asarray(decode_ctx_tokens, dtype=float))
        lo = o.decode_attention_base(1)
        per_seq = o.decode_attention_base(2) - lo
        base = np.where(n > 0, L * ((lo - per_seq) + per_seq * n), 0.0)
        for i in np.flatnonzero(P > 0).tolist():
            base[i] += L * o.prefill_attention_time(float(P[i]), float(prefill_attn_work[i]))
        a = (base + (L * o.decode_attention_slope()) * np.asarray(decode_ctx_tokens, dtype=float)).max(axis=-1)
        single = tok + head + a
        ov = self.overlap_parts(T, tg, t_eff) if self.overlap else None
        if ov is None:
            return single
        # two micro-batches: each half of the slowest rank's batch attends half of its attention (an assumption:
        # the rank's sequences split evenly between the halves)
        two = self._overlap_schedule(ov, head, a / (2.0 * L), a / L)
        return np.minimum(single, two) if isinstance(single, np.ndarray) else min(single, two)

    def step_cost(self, shape: BatchShape) -> StepCost:
        total_s = float(self.step_time(shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs,
                                       shape.decode_seqs, float(shape.decode_ctx_tokens)))
        T = shape.prefill_tokens + shape.decode_seqs
        S = shape.prefill_seqs + shape.decode_seqs
        t_eff = self.effective_draws(shape.prefill_tokens, shape.prefill_seqs, shape.decode_seqs) \
            if self.prompt_draws else None
        v = self._token_vec(T, None, t_eff) if T > 0 else np.zeros(7)
        if S > 0:
            v = v + _vec(self.ops.lm_head(math.ceil(S / self.dp)))
        dp = self.dp
        for op in (self.ops.prefill_attention(shape.prefill_tokens / dp, shape.prefill_attn_work / dp),
                   self.ops.decode_attention(-(-shape.decode_seqs // dp), shape.decode_ctx_tokens / dp)):
            v = v + self.L * np.array([op.time_s, op.compute_s, op.memory_s, op.comm_s, op.overhead_s, op.flops,
                                       op.bytes])
        return StepCost(total_s=total_s, compute_s=float(v[1]), memory_s=float(v[2]), comm_s=float(v[3]),
                        overhead_s=float(v[4]), flops=float(v[5]), bytes=float(v[6]))

    def moe_layer_breakdown(self, T: int) -> dict[str, float]:
        """Seconds of one MoE layer for T tokens: attention+local, routed experts, dispatch+combine."""
        comp, routed, comm = self._moe_parts(T)
        return {"attention_and_local_s": float(comp[0]), "routed_experts_s": routed, "dispatch_combine_s": comm}

    # ------------------------------------------------------------------ re-placement
    def with_placement(self, placement) -> "EPStepCost":
        """The same replica and expert loads with another placement."""
        return EPStepCost(self.model, self.acc, ep=self.ep, placement=placement, popularity=self.popularity,
                          topology=self.topo, **self._kw)

    def migration(self, new) -> dict[str, float]:
        """Cost of moving from this placement to ``new`` (a Placement): replicas that land on a device
        that did not hold that expert, their bytes (scaled from the placed layers to every MoE layer)
        and the seconds to copy them, each device pulling its new experts over its own NIC (the
        busiest device sets the time; scale-up copies inside a node would be faster)."""
        prev = self.placement
        fresh = new.presence() & ~prev.presence()  # [L, E, G]
        scale = self.n_moe / prev.num_layers
        per_dev = fresh.sum(axis=(0, 1)) * scale * self.expert_bytes
        bw = float(self.topo.node.scale_out_bw)
        return {"moved_replicas": float(fresh.sum() * scale), "moved_bytes": float(per_dev.sum()),
                "max_device_bytes": float(per_dev.max()),
                "migration_s": migration_seconds(float(per_dev.max()), bw) if per_dev.max() > 0 else 0.0}

    def replan(self, observed_loads, policy) -> tuple["EPStepCost", dict[str, float]]:
        """Re-place from ``observed_loads`` (``[L, E]`` over the placed layers) with ``policy``
        (a name or ``{policy: ..., **params}``); returns the new cost model (serving the same loads)
        and :meth:`migration`'s figures."""
        new, _ = replan(self.placement, observed_loads, policy, expert_bytes=self.expert_bytes)
        return self.with_placement(new), self.migration(new)

    def routed_fraction(self, tokens: int = 1024) -> float:
        """Routed experts' share of a step of ``tokens`` tokens (what a better balance can save)."""
        t = self._token_time(int(tokens))
        return float(min(1.0, self.n_moe * self.routed_time(tokens) / t)) if t > 0 else 0.0

    # ------------------------------------------------------------------ memory
    @property
    def slots_used(self) -> int:
        """Occupied expert slots on the fullest device (max over layers)."""
        return int((self.placement.expert >= 0).sum(axis=2).max())

    @property
    def expert_bytes(self) -> float:
        """Weight bytes of one routed expert."""
        return (3 if self.gated else 2) * self.H * self.I * self.eops.wb

    @property
    def weight_bytes_per_device(self) -> float:
        o, e, m = self.ops, self.model.moe, self.model
        g = 3 if self.gated else 2
        dense_ffn = g * self.H * math.ceil(m.ffn.intermediate_size / self.tp) * o.wb
        attn = o.layer_weight_bytes(False) - dense_ffn
        shared = g * self.H * (e.shared_intermediate_size or e.expert_intermediate_size) * e.num_shared_experts * o.wb
        moe_layer = attn + self.slots_used * self.expert_bytes + shared + self.H * self.E * o.ab
        w = self.n_dense * o.layer_weight_bytes(False) + self.n_moe * moe_layer
        w += o.embedding_weight_bytes() + o.lm_head_weight_bytes() + self.H * o.wb
        return float(w)

    @property
    def kv_bytes_per_token_per_device(self) -> float:
        return float(self.ops.kv_per_tok * self.L / self.dp)


def _check_traffic(traffic, ep: int) -> np.ndarray:
    F = np.asarray(traffic, dtype=float)
    if F.shape != (ep, ep) or not np.all(np.isfinite(F)) or np.any(F < 0) or F.sum() <= 0:
        raise InputError(f"traffic must be a {ep}x{ep} matrix of non-negative fractions, not all zero",
                         field="traffic")
    return F / F.sum()


def coherent_comm(topo, traffic: np.ndarray, hidden: int, top_k: int, *, dtype: str = "fp8",
                  refs: tuple[int, int] = (32, 256)) -> tuple[float, float]:
    """``(a, b)``: one MoE layer's single all-to-all under context-coherent EP (ExFlow) takes
    ``a + b * tokens_per_rank`` seconds. ``traffic[g, h]``: fraction of the layer's routed token
    copies (``tokens_per_rank * ranks * top_k`` of them) that device ``g`` sends to ``h``; the
    diagonal stays on the device and is free. Each pair's bytes go over their own path
    (NVLink inside a node, the NICs across nodes: :func:`simllm.topology.traffic_time`), so a
    placement that keeps copies on-device or on-node pays less. Fitted through ``refs``."""

    F = np.asarray(traffic, dtype=float)
    R = F.shape[0]
    off = F * (1.0 - np.eye(R))
    if R <= 1 or off.sum() <= 0:
        return 0.0, 0.0
    tb = token_bytes(hidden, dtype)
    rs = topo.group(R)
    t = [traffic_time(topo, off * (ref * R * top_k * tb), rs)[0] for ref in refs]
    b = max(0.0, (t[1] - t[0]) / (refs[1] - refs[0]))
    return max(0.0, t[0] - b * refs[0]) + topo.launch_overhead, b


# ---------------------------------------------------------------------- building from a scenario


def expert_popularity(model, spec: Optional[dict], layers: int, *, base_dir=None) -> np.ndarray:
    """``[layers, E]`` expert loads from ``{alpha, seed}`` (Zipf) or ``{csv: PATH}`` (evenly spaced rows)."""
    from pathlib import Path

    E = model.moe.num_experts
    spec = dict(spec or {})
    unknown = set(spec) - {"alpha", "seed", "csv"}
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(sorted(unknown))}; expected alpha, seed or csv",
                         field="expert_loads")
    if "csv" in spec:
        if set(spec) - {"csv"}:
            raise InputError("give csv or alpha/seed, not both", field="expert_loads")
        p = Path(spec["csv"])
        if not p.is_absolute() and base_dir is not None and (Path(base_dir) / p).exists():
            p = Path(base_dir) / p
        rec = read_loads_csv(p, num_experts=E)
        idx = np.unique(np.linspace(0, rec.shape[0] - 1, min(layers, rec.shape[0])).round().astype(int))
        return rec[idx]
    alpha = spec.get("alpha", 0.0)
    try:
        alpha = float(alpha)
        seed = int(spec.get("seed", 0))
    except (TypeError, ValueError):
        raise InputError("alpha must be a number and seed an integer", field="expert_loads") from None
    if alpha == 0:
        return uniform_popularity(layers, E)
    return zipf_popularity(layers, E, alpha, seed=seed)


def _located_loads(model, spec, layers, base_dir) -> np.ndarray:
    try:
        return expert_popularity(model, spec, layers, base_dir=base_dir)
    except InputError as e:
        raise InputError(e.message, file=e.file, field="placement.plan_loads") from None


_COST_KEYS = ("overlap", "samples", "sample_layers", "grid_max", "grid_points", "dispatch_dtype", "combine_dtype",
              "seed", "dispatch_kernel", "overlap_min_tokens", "comm_sms", "ll_max_tokens", "prompt_draws",
              "attention_sp_tp")
_MOE_KEYS = {*_COST_KEYS, "layers"}


def make_ep_step_cost(model, accelerator, *, ep: int, tp: int = 1, node=None, cluster=None,
                      placement: Any = None, expert_loads: Optional[dict] = None, moe: Optional[dict] = None,
                      weight_dtype: str = "bf16", kv_dtype: str = "bf16", act_dtype: str = "bf16",
                      calibration=None, base_dir=None, framework: str = "vllm") -> EPStepCost:
    """Build the placement (``simllm.placement``) and the expert-parallel step cost of one replica.

    ``placement``: ``{policy: ilp|greedy_replicated|contiguous|..., redundant: N, **params}``
    (``redundant`` extra expert slots over the ``ep`` devices; default 0; ``plan_loads``: plan
    on other loads, ``{alpha, seed}`` or ``{csv}``, than the ``expert_loads`` served: a stale
    placement; :meth:`EPStepCost.replan` re-plans and prices the migration). ``expert_loads``:
    ``{alpha, seed}`` or ``{csv}``. ``moe``: cost options ``overlap``, ``samples``,
    ``sample_layers``, ``layers`` (MoE layers placed, evenly representative; default 8),
    ``grid_max``, ``grid_points``, ``dispatch_dtype``, ``combine_dtype``, ``seed``."""
    if model.moe is None:
        raise InputError(f"{model.name} has no MoE layers; ep > 1 needs an MoE model", field="ep")
    moe = dict(moe or {})
    bad = set(moe) - _MOE_KEYS
    if bad:
        raise InputError(f"unknown field(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(_MOE_KEYS))}",
                         field="moe")
    spec = placement if placement is not None else {"policy": "contiguous"}
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, dict):
        raise InputError(f"expected a mapping like {{policy: ilp, redundant: 32}}, got {spec!r}", field="placement")
    spec = {"policy": "contiguous", **spec}
    plan_loads = spec.pop("plan_loads", None)  # plan on other loads than served (a stale placement)
    replacement_spec(spec, expert_loads)  # checked here, applied by simllm.scenario.simulate
    spec.pop("replan_every_s", None)  # periodic re-placement: simllm.sim.replacement (see replacement_spec)
    spec.pop("migrate", None)  # likewise
    expert_loads = {k: v for k, v in (expert_loads or {}).items() if k not in ("drift", "drift_every_s")} or None
    redundant = spec.pop("redundant", 0)
    if not isinstance(redundant, int) or redundant < 0:
        raise InputError(f"redundant must be an integer >= 0, got {redundant!r}", field="placement.redundant")
    if spec["policy"] == "ilp":
        spec["redundant"] = redundant
        spec.setdefault("time_limit", 2.0)
    E = model.moe.num_experts
    slots = -(-(E + redundant) // ep)
    layers = int(moe.pop("layers", 8))
    layers = max(1, min(layers, model.num_moe_layers))
    pop = expert_popularity(model, expert_loads, layers, base_dir=base_dir)
    topo_src = cluster if cluster is not None else node
    if topo_src is None:
        topo_src = default_node_for(accelerator)
    topo = build_topology(topo_src)
    if ep > topo.num_devices:
        raise InputError(f"ep {ep} exceeds the {topo.num_devices} devices of {topo.cluster.name}", field="ep")
    nodes = max(1, ep // topo.devices_per_node) if ep % topo.devices_per_node == 0 else 1
    pol = build_policy(spec)
    plan = pop if plan_loads is None else _located_loads(model, plan_loads, layers, base_dir)
    if plan.shape != pop.shape:
        raise InputError(f"plan_loads have shape {plan.shape}, served loads {pop.shape}", field="placement.plan_loads")
    pl = pol.place(plan / np.maximum(plan.sum(axis=1, keepdims=True), 1e-300) * 1e4, ep, nodes, slots)
    kw = {k: moe[k] for k in _COST_KEYS if k in moe}
    cost = EPStepCost(model, accelerator, ep=ep, placement=pl, popularity=pop, topology=topo, tp=tp, node=node,
                      weight_dtype=weight_dtype, kv_dtype=kv_dtype, act_dtype=act_dtype, calibration=calibration,
                      policy_spec=dict(spec), framework=framework, **kw)
    return cost


def replacement_spec(placement: Any, expert_loads: Optional[dict]) -> Optional[dict]:
    """Periodic re-placement / popularity drift of a scenario (``placement.replan_every_s``,
    ``expert_loads.drift`` and ``expert_loads.drift_every_s``), or None when both are off."""
    every = placement.get("replan_every_s") if isinstance(placement, dict) else None
    el = expert_loads or {}
    drift, d_every = el.get("drift", 0.0), el.get("drift_every_s")
    for v, f in ((every, "placement.replan_every_s"), (d_every, "expert_loads.drift_every_s")):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf):
            raise InputError(f"must be a positive number of seconds, got {v!r}", field=f)
    if isinstance(drift, bool) or not isinstance(drift, (int, float)) or not 0 <= drift < math.inf:
        raise InputError(f"must be a number >= 0, got {drift!r}", field="expert_loads.drift")
    if every is not None and d_every is not None and float(every) != float(d_every):
        raise InputError(f"drift_every_s ({d_every}) differs from placement.replan_every_s ({every})",
                         field="expert_loads.drift_every_s")
    interval = every if every is not None else d_every
    if drift > 0 and interval is None:
        raise InputError("drift needs an interval: expert_loads.drift_every_s or placement.replan_every_s",
                         field="expert_loads.drift")
    if interval is None:
        return None
    migrate = placement.get("migrate", "pays") if isinstance(placement, dict) else "pays"
    if migrate not in ("pays", "all"):
        raise InputError(f"must be 'pays' (move only replicas whose gain beats their pause) or 'all', "
                         f"got {migrate!r}", field="placement.migrate")
    return {"every_s": float(interval), "drift": float(drift), "replan": every is not None,
            "seed": int(el.get("seed", 0)), "migrate": migrate}
