"""Expert-parallel step cost of one MoE replica (DeepSeek-style: DP attention, EP experts).

A replica spans ``ep`` devices. Attention (and the dense layers, embedding and LM head) runs
data-parallel over ``dp = ep / tp`` groups of ``tp`` devices (tensor-parallel inside a group);
the routed experts are sharded over all ``ep`` devices as a :class:`simllm.placement.Placement`
says (with redundant replicas); the shared experts are replicated on every device. A step of
``T`` tokens (``T = prefill_tokens + decode_seqs``) is assumed spread evenly over the groups
(``ceil(T / dp)`` tokens each) and, after sequence splitting inside a group, ``ceil(T / ep)``
tokens leave each device for dispatch. One MoE layer then costs::

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
points the table is interpolated linearly; beyond ``grid_max`` it is extrapolated in proportion
to ``T`` (at large ``T`` the max load is proportional to ``T``). The whole token-dependent part
is memoized per integer ``T``, so a scalar ``step_time`` is a dict lookup and a few float ops.

**Dispatch and combine.** :func:`simllm.topology.ep_dispatch` (DeepEP normal kernels: NVLink
inside a node, one RDMA copy per destination node) with the per-device loads the placement gives
the layer's expected popularity (a hot device receives, and sends back, more). Its time is
linear in tokens per rank: it is evaluated at two token counts per sampled layer and the fitted
``a + b * tokens`` (averaged over layers) is used, plus the calibrated launch overhead per call.

**Micro-batch overlap** (``overlap: true``; DeepSeek-V3's dual micro-batch decode): the step is
split into two halves; while one half computes, the other communicates. Per MoE layer the time
is ``2 * max(C(T/2), M(T/2))`` instead of ``C(T) + M(T)`` (``C``: attention + local MoE
compute, ``M``: dispatch + combine of a half), plus a fill term ``min(C(T/2), M(T/2))`` once per
step (the first half's first transfer, or the last half's last compute, has nothing to hide
behind). Two half batches re-read the weights, so at small batches (weight-bound layers,
little traffic) the split costs more than it hides: per token count the cheaper of the two
schedules is taken (SGLang's two-batch overlap likewise applies only above a token threshold).
Attention's context-dependent KV reads are added outside the overlap (conservative, and it
keeps the step time linear in the decode context).

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
from . import collectives as C
from .calibration import Calibration, calibration_for
from .interface import BatchShape, StepCost
from .kernels import elementwise_time, gemm_time
from .ops import LayerOps, total

_ROUTE_CACHE: dict = {}
_ROUTE_CACHE_MAX = 256


def _vec(ops) -> np.ndarray:
    t = total(ops)
    return np.array([t.time_s, t.compute_s, t.memory_s, t.comm_s, t.overhead_s, t.flops, t.bytes])


def _routes(popularity_row: np.ndarray, top_k: int, routing: str, num_groups: int, topk_groups: Optional[int],
            tokens: int, seed: int) -> np.ndarray:
    """One draw of ``tokens`` tokens' top-k expert ids ``[tokens, k]`` for one layer (cached)."""
    from ..placement.loads import RoutingSampler

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
                 seed: int = 0, remote_fraction: Optional[float] = None, traffic: Optional[np.ndarray] = None):
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
                        grid_points=grid_points, seed=seed, remote_fraction=remote_fraction, traffic=traffic)
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
        if node is None and self.tp > 1:
            from .fit import default_node_for

            node = default_node_for(accelerator)
        self.node = node
        links = C.CommLinks.from_node(node, self.cal.comm) if node is not None else None
        kw = dict(cal=self.cal, weight_dtype=weight_dtype, kv_dtype=kv_dtype, act_dtype=act_dtype)
        self.ops = LayerOps(model, accelerator, tp=self.tp, links=links, **kw)  # attention, dense, head
        self.eops = LayerOps(model, accelerator, tp=1, links=None, **kw)  # experts: whole, one device each
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
        self._tok: dict[int, float] = {}
        self._head: dict[int, float] = {}

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

    def routed_time(self, T: float) -> float:
        """Expected seconds of one MoE layer's routed experts (slowest device) for ``T`` tokens."""
        if T <= 0:
            return 0.0
        g = self.grid
        if T <= g[0]:
            return float(self._t_exp[0] * T / g[0]) if T < g[0] else float(self._t_exp[0])
        if T >= g[-1]:
            return float(self._t_exp[-1] * T / g[-1])
        return float(np.interp(T, g, self._t_exp))

    def expert_table(self) -> dict[str, Any]:
        """The tabulated expectation: tokens, seconds, max-device token-slots, mean token-slots."""
        return {"tokens": self.grid.tolist(), "routed_s": self._t_exp.tolist(),
                "max_device_slots": self._n_max.tolist(),
                "mean_device_slots": (self.grid * self.k / self.ep).tolist()}

    # ------------------------------------------------------------------ dispatch / combine
    def _build_comm_model(self) -> None:
        from ..topology import ep_dispatch

        if self.ep <= 1:
            self._comm = (0.0, 0.0)
            return
        if self.traffic is not None:
            self._comm = coherent_comm(self.topo, self.traffic, self.H, self.k, dtype=self.dispatch_dtype)
            return
        loads = self.placement.device_loads(self.popularity)  # [L, G] expected token share per device
        a_sum = b_sum = 0.0
        refs = (32, 256)
        tg = self.topk_groups if self.routing == "grouped" else None
        experts = self.E if self.E % self.ep == 0 else self.ep * max(1, self.E // self.ep)
        for l in self.sample_layer_ids:
            w = loads[l]
            if w.sum() <= 0:
                w = np.ones(self.ep)
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

    def comm_time(self, tokens_per_rank: float) -> float:
        """Seconds of one MoE layer's dispatch + combine with ``tokens_per_rank`` tokens per device."""
        if tokens_per_rank <= 0 or self.ep <= 1:
            return 0.0
        return self._comm[0] + self._comm[1] * tokens_per_rank

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

    def _moe_parts(self, T: float) -> tuple[np.ndarray, float, float]:
        """(compute breakdown of attention block + local MoE, routed seconds, comm seconds) for T tokens."""
        t_g = math.ceil(T / self.dp)
        t_r = math.ceil(T / self.ep)
        comp = _vec(self.ops.attention_block(t_g)) + self._local_moe(t_r)
        return comp, self.routed_time(T), self.comm_time(t_r)

    def _token_vec(self, T: int) -> np.ndarray:
        """Breakdown (7) of everything that depends on T alone, summed over layers."""
        t_g = math.ceil(T / self.dp)
        v = _vec(self.ops.embedding(t_g))
        if self.n_dense:
            v = v + self.n_dense * _vec(self.ops.attention_block(t_g) + self.ops.dense_ffn_block(t_g))
        comp, routed, comm = self._moe_parts(T)
        flops_r = 2.0 * T * self.k * (3 if self.gated else 2) * self.H * self.I / self.ep
        moe = comp + np.array([routed, 0.0, routed, 0.0, 0.0, flops_r, 0.0]) + np.array([comm, 0, 0, comm, 0, 0, 0])
        if self.overlap and T >= 2:
            ch, rh, mh = self._moe_parts(T / 2.0)
            c_half = ch[0] + rh
            layer = 2.0 * max(c_half, mh)
            fill = min(c_half, mh)
            if self.n_moe * layer + fill < self.n_moe * moe[0]:  # split only when it pays
                moe = moe.copy()
                moe[0] = layer
                v = v + self.n_moe * moe
                v[0] += fill
                return v
        return v + self.n_moe * moe

    def _token_time(self, T: int) -> float:
        v = self._tok.get(T)
        if v is None:
            v = float(self._token_vec(T)[0])
            if len(self._tok) < 200_000:
                self._tok[T] = v
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
        tok = self._tok.get(T)
        if tok is None:
            tok = self._token_time(T)
        head = self._head.get(S)
        if head is None:
            head = self._head_time(S)
        o, dp = self.ops, self.dp
        a = o.prefill_attention_time(prefill_tokens / dp, prefill_attn_work / dp) + \
            o.decode_attention_base(-(-int(decode_seqs) // dp))
        base = tok + head + self.L * a
        if decode_seqs > 0:
            if is_arr:
                return base + self._slope * decode_ctx_tokens
            return float(base + self._slope * decode_ctx_tokens)
        return np.full(decode_ctx_tokens.shape, base) if is_arr else float(base)

    def step_cost(self, shape: BatchShape) -> StepCost:
        total_s = float(self.step_time(shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs,
                                       shape.decode_seqs, float(shape.decode_ctx_tokens)))
        T = shape.prefill_tokens + shape.decode_seqs
        S = shape.prefill_seqs + shape.decode_seqs
        v = self._token_vec(T) if T > 0 else np.zeros(7)
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
        from ..placement import migration_seconds

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
        from ..placement import replan

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
    from ..topology import token_bytes, traffic_time  # lazily, as _build_comm_model: networkx off the CLI's start

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

    from ..placement.loads import read_loads_csv, uniform_popularity, zipf_popularity

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


_MOE_KEYS = {"overlap", "samples", "sample_layers", "grid_max", "grid_points", "layers", "dispatch_dtype",
             "combine_dtype", "seed"}


def make_ep_step_cost(model, accelerator, *, ep: int, tp: int = 1, node=None, cluster=None,
                      placement: Any = None, expert_loads: Optional[dict] = None, moe: Optional[dict] = None,
                      weight_dtype: str = "bf16", kv_dtype: str = "bf16", act_dtype: str = "bf16",
                      calibration=None, base_dir=None) -> EPStepCost:
    """Build the placement (``simllm.placement``) and the expert-parallel step cost of one replica.

    ``placement``: ``{policy: ilp|greedy_replicated|contiguous|..., redundant: N, **params}``
    (``redundant`` extra expert slots over the ``ep`` devices; default 0; ``plan_loads``: plan
    on other loads, ``{alpha, seed}`` or ``{csv}``, than the ``expert_loads`` served: a stale
    placement; :meth:`EPStepCost.replan` re-plans and prices the migration). ``expert_loads``:
    ``{alpha, seed}`` or ``{csv}``. ``moe``: cost options ``overlap``, ``samples``,
    ``sample_layers``, ``layers`` (MoE layers placed, evenly representative; default 8),
    ``grid_max``, ``grid_points``, ``dispatch_dtype``, ``combine_dtype``, ``seed``."""
    from ..placement import build_policy
    from ..topology import build_topology

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
        from .fit import default_node_for

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
    kw = {k: moe[k] for k in ("overlap", "samples", "sample_layers", "grid_max", "grid_points", "dispatch_dtype",
                              "combine_dtype", "seed") if k in moe}
    cost = EPStepCost(model, accelerator, ep=ep, placement=pl, popularity=pop, topology=topo, tp=tp, node=node,
                      weight_dtype=weight_dtype, kv_dtype=kv_dtype, act_dtype=act_dtype, calibration=calibration,
                      **kw)
    cost.policy_spec = dict(spec)  # what periodic re-placement re-plans with
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
