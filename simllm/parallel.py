"""Parallel plans: tensor, pipeline, data, expert and context parallelism, and their validation.

A :class:`ParallelPlan` says how one model is laid out on devices:

- ``tp``: tensor parallel inside a replica; every layer does an all-reduce (or a reduce-scatter
  plus all-gather with sequence parallelism, ``tp_comm: rs_ag``) after attention and after the FFN.
- ``pp``: pipeline stages (``num_layers / pp`` layers each); activations go stage to stage by
  send/recv; ``microbatches`` in flight; bubble fraction ``(p - 1) / (m + p - 1)`` for GPipe and
  1F1B with uniform stages (:func:`bubble_fraction`, :func:`pipeline_makespan`).
- ``dp``: independent replicas (for attention; with ``ep`` they share the experts).
- ``ep``: routed experts of a stage sharded over ``ep`` devices of that stage (whole experts, which
  expert goes where is ``simllm.placement``'s business); tokens reach them by dispatch/combine.
  ``ep`` must divide the stage's devices ``tp * cp * dp``.
- ``cp``: context (sequence) parallel for long prompts: a sequence's tokens and KV split over
  ``cp`` devices, ring attention passing KV blocks between them.

Devices used: ``tp * pp * cp * dp``. The validator (:func:`check_plan`) checks divisibility
(attention heads by ``tp``, layers by ``pp``, experts by ``ep``), that the cluster has the
devices, and that weights + KV + activations + communication buffers fit each device; each
failure is one clear sentence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

from .errors import InputError

GiB = float(1 << 30)


# ---- pipeline schedule -------------------------------------------------------------------

def bubble_fraction(stages: int, microbatches: int) -> float:
    """Idle fraction of a pipeline with uniform stages (GPipe and 1F1B alike): (p-1)/(m+p-1)."""
    if stages < 1 or microbatches < 1:
        raise InputError("stages and micro-batches must be >= 1", field="pp")
    return (stages - 1) / (microbatches + stages - 1)


def pipeline_makespan(stage_times: Sequence[float], microbatches: int, p2p_s: float = 0.0) -> float:
    """Time for ``microbatches`` to pass ``len(stage_times)`` stages in order (forward pass, as
    in inference; for training 1F1B has the same bubble). Stage ``s`` starts micro-batch ``i``
    once it finished ``i - 1`` and stage ``s - 1`` finished ``i`` and sent it (``p2p_s``)."""
    if microbatches < 1 or not stage_times:
        raise InputError("need >= 1 micro-batch and >= 1 stage", field="pp")
    p = len(stage_times)
    finish = [0.0] * p
    for _ in range(microbatches):
        prev = 0.0
        for s in range(p):
            ready = prev + (p2p_s if s > 0 else 0.0)
            finish[s] = max(finish[s], ready) + stage_times[s]
            prev = finish[s]
    return finish[-1]


# ---- plans ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParallelPlan:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    cp: int = 1
    microbatches: int = 1
    tp_comm: Literal["all_reduce", "rs_ag"] = "all_reduce"
    schedule: Literal["1f1b", "gpipe"] = "1f1b"

    def __post_init__(self):
        for k in ("tp", "pp", "dp", "ep", "cp", "microbatches"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"{k} must be an integer >= 1, got {v!r}", field=k)
        if self.tp_comm not in ("all_reduce", "rs_ag"):
            raise InputError(f"tp_comm must be all_reduce or rs_ag, got {self.tp_comm!r}", field="tp_comm")
        if self.schedule not in ("1f1b", "gpipe"):
            raise InputError(f"schedule must be 1f1b or gpipe, got {self.schedule!r}", field="schedule")

    @property
    def replica_devices(self) -> int:
        return self.tp * self.pp * self.cp

    @property
    def devices(self) -> int:
        return self.replica_devices * self.dp

    @property
    def stage_devices(self) -> int:
        """Devices of one pipeline stage over all replicas: the pool experts are sharded over."""
        return self.tp * self.cp * self.dp

    @property
    def bubble(self) -> float:
        return bubble_fraction(self.pp, self.microbatches)

    def label(self) -> str:
        parts = [f"tp{self.tp}", f"pp{self.pp}", f"dp{self.dp}"]
        if self.ep > 1:
            parts.append(f"ep{self.ep}")
        if self.cp > 1:
            parts.append(f"cp{self.cp}")
        return "-".join(parts)


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes per device (the most loaded device: the first or last stage)."""

    weights: float
    kv_cache: float
    activations: float
    comm_buffers: float
    capacity: float

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.activations + self.comm_buffers

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def as_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        return d


@dataclass(frozen=True)
class PlanCheck:
    plan: ParallelPlan
    errors: tuple[str, ...]
    memory: MemoryBudget | None
    kv_bytes_per_token_per_device: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


def weight_bytes_per_device(model, plan: ParallelPlan, dtype_bytes: float | None = None) -> float:
    """Weights on the most loaded device: its stage's layers, non-expert weights split by ``tp``,
    routed experts split by ``ep`` (``tp`` when ``ep == 1``), embedding or LM head on the end stages."""
    from .model import param_breakdown

    b = model.dtype_bytes if dtype_bytes is None else dtype_bytes
    pb = param_breakdown(model)
    L, p = model.num_layers, plan.pp
    per_layer_common = pb["attention_per_layer"] + pb["norms_per_layer"] * plan.tp  # norms replicated
    dense_total = pb["dense_ffn"]
    moe_common_total = pb["shared_experts"] + pb["router"]
    routed_total = pb["routed_experts"]
    # layers spread evenly; the dense and MoE layer mix is taken pro rata (worst stage: ceil)
    lay = math.ceil(L / p)
    frac = lay / L
    common = (per_layer_common * lay + (dense_total + moe_common_total) * frac) / plan.tp
    routed = routed_total * frac / (plan.ep if plan.ep > 1 else plan.tp)
    final_norm = pb["norms"] - pb["norms_per_layer"] * L  # replicated, on the last stage
    ends = max(pb["embedding"] / plan.tp, pb["lm_head"] / plan.tp + final_norm)
    if p == 1:
        ends = (pb["embedding"] + pb["lm_head"]) / plan.tp + final_norm
    return (common + routed + ends) * b


def kv_bytes_per_token_per_device(model, plan: ParallelPlan, dtype_bytes: float | None = None) -> float:
    """KV-cache bytes a token takes on one device: its stage's layers, heads split by ``tp`` down
    to one KV head per device (GQA replicates beyond that; MLA's latent is not split), tokens
    split by ``cp``."""
    a = model.attention
    per_tok = model.kv_cache_bytes_per_token(dtype_bytes)
    shard = 1 if a.kind == "mla" else min(plan.tp, a.num_kv_heads)
    return per_tok / plan.pp / shard / plan.cp


def tp_errors(model, tp: int) -> list[str]:
    """Why ``model``'s attention cannot be sharded ``tp`` ways (empty when it can)."""
    a = model.attention
    if a.num_heads % tp:
        return [f"{model.name}'s {a.num_heads} attention heads do not divide by tp={tp}"]
    if a.kind != "mla" and a.num_kv_heads % tp and tp % a.num_kv_heads:
        return [f"{model.name}'s {a.num_kv_heads} KV heads and tp={tp}: neither divides the other"]
    return []


def check_plan(model, cluster, plan: ParallelPlan, *, batch_tokens: int = 8192, kv_tokens: int = 0,
               mem_fraction: float = 0.9, dtype_bytes: float | None = None,
               kv_dtype_bytes: float | None = None) -> PlanCheck:
    """All reasons ``plan`` cannot serve ``model`` on ``cluster`` (empty when it can).

    ``batch_tokens``: tokens in one step (sizes activations and comm buffers); ``kv_tokens``:
    KV-cache tokens that must fit at once on a replica (0: only require room for one step's)."""
    errs: list[str] = tp_errors(model, plan.tp)
    if model.num_layers % plan.pp:
        errs.append(f"{model.num_layers} layers do not divide into pp={plan.pp} stages")
    if plan.ep > 1:
        if model.moe is None:
            errs.append(f"ep={plan.ep} but {model.name} has no experts")
        elif model.moe.num_experts % plan.ep:
            errs.append(f"{model.moe.num_experts} experts do not divide over ep={plan.ep}")
        if plan.stage_devices % plan.ep:
            errs.append(f"ep={plan.ep} must divide a stage's tp*cp*dp = {plan.stage_devices} devices")
    if plan.cp > 1 and batch_tokens < plan.cp:
        errs.append(f"cp={plan.cp} needs at least {plan.cp} tokens per sequence")
    ndev = cluster.num_devices
    if plan.devices > ndev:
        errs.append(f"plan needs {plan.devices} devices (tp*pp*cp*dp), {cluster.name} has {ndev}")
    acc = cluster.accelerator
    w = weight_bytes_per_device(model, plan, dtype_bytes)
    kvt = kv_bytes_per_token_per_device(model, plan, kv_dtype_bytes)
    h = model.hidden_size
    act_b = 2.0
    tok_dev = batch_tokens / plan.cp
    inter = model.ffn.intermediate_size if model.moe is None else max(
        model.ffn.intermediate_size, model.moe.expert_intermediate_size * model.moe.top_k)
    # live activations of one layer: residual, normed input, qkv, attention out (x ~4 hidden),
    # the FFN's gate/up/act (3 x intermediate / tp), logits of the last stage are not kept
    activations = tok_dev * (4 * h + 3 * inter / plan.tp) * act_b
    comm = 0.0
    if plan.tp > 1:
        comm += 2 * tok_dev * h * act_b
    if plan.pp > 1:
        comm += 2 * tok_dev * h * act_b
    if plan.ep > 1 and model.moe is not None:
        # dispatch receive + combine send buffers, worst case every routed copy lands here
        comm += 2 * tok_dev * model.moe.top_k * h * act_b
    kv = kv_tokens * kvt if kv_tokens else 0.0
    cap = acc.hbm_bytes * mem_fraction
    mem = MemoryBudget(w, kv, activations, comm, cap)
    if not mem.fits:
        errs.append(f"needs {mem.total / GiB:.1f} GiB per device (weights {w / GiB:.1f}, KV {kv / GiB:.1f}, "
                    f"activations {activations / GiB:.1f}, buffers {comm / GiB:.1f}), "
                    f"{acc.name} offers {cap / GiB:.1f} GiB ({mem_fraction:.0%} of {acc.hbm_bytes / GiB:.0f})")
    return PlanCheck(plan, tuple(errs), mem, kvt)


def validate_plan(model, cluster, plan: ParallelPlan, **kw) -> PlanCheck:
    """:func:`check_plan`, raising :class:`InputError` with every reason when it fails."""
    c = check_plan(model, cluster, plan, **kw)
    if c.errors:
        raise InputError(f"plan {plan.label()} for {model.name} on {cluster.name}: " + "; ".join(c.errors),
                         field="parallel")
    return c


# ---- communication of one step under a plan ---------------------------------------------

def comm_per_step(model, topo, plan: ParallelPlan, tokens: int, *, act_bytes: float = 2.0) -> dict[str, float]:
    """Seconds of communication in one forward step of ``tokens`` tokens on one replica.

    TP: two all-reduces a layer (or reduce-scatter + all-gather) of ``tokens x hidden`` over the
    first ``tp`` devices; PP: one send/recv of the micro-batch's activations per stage boundary
    (not overlapped); EP: dispatch + combine a MoE layer with the replica's tokens per rank;
    CP: ring attention passes the stage's KV blocks around ``cp`` devices (overlappable with
    compute; reported, not added). Times come from :mod:`simllm.topology`."""
    from .topology import collective, ep_dispatch, send_recv

    h = model.hidden_size
    out = {"tp_s": 0.0, "pp_s": 0.0, "ep_s": 0.0, "cp_s": 0.0}
    lay = model.num_layers // plan.pp
    msg = tokens / plan.cp * h * act_bytes
    if plan.tp > 1 and tokens > 0:
        if plan.tp_comm == "all_reduce":
            one = collective(topo, "all_reduce", msg, plan.tp).time_s
        else:
            one = (collective(topo, "reduce_scatter", msg, plan.tp).time_s
                   + collective(topo, "all_gather", msg, plan.tp).time_s)
        out["tp_s"] = 2 * lay * one * plan.pp
    if plan.pp > 1 and tokens > 0:
        # stage s on ranks [s * tp*cp, ...): the boundary crosses from one stage's device to the next
        step = plan.tp * plan.cp
        ranks = min(topo.num_devices - 1, step)
        out["pp_s"] = (plan.pp - 1) * send_recv(topo, msg / plan.tp if plan.tp_comm == "rs_ag" else msg,
                                                  0, ranks).time_s
    if plan.ep > 1 and model.moe is not None and tokens > 0:
        per_rank = max(1, round(tokens * plan.dp / plan.ep))
        m = model.moe
        n_moe_stage = math.ceil(model.num_moe_layers / plan.pp)
        groups = m.topk_groups if (m.topk_groups and m.num_groups > 1) else None
        d = ep_dispatch(topo, per_rank, h, m.top_k, plan.ep, experts=m.num_experts, dtype="bf16",
                        op="dispatch", topk_groups=groups).time_s
        out["ep_s"] = 2 * d * n_moe_stage * plan.pp
    if plan.cp > 1 and tokens > 0:
        kv = kv_bytes_per_token_per_device(model, plan) * tokens
        out["cp_s"] = (plan.cp - 1) * send_recv(topo, kv, 0, 1).time_s
    return out


def enumerate_plans(model, cluster, *, max_devices: int | None = None, **kw) -> list[PlanCheck]:
    """Every plan with power-of-two degrees that uses at most ``max_devices`` (default: the
    cluster), TP inside a node, checked; valid ones first."""
    ndev = max_devices or cluster.num_devices
    per_node = cluster.node.devices
    pw = [1 << i for i in range(12) if (1 << i) <= ndev]
    out = []
    for tp in pw:
        if tp > per_node:
            continue
        for pp in pw:
            for dp in pw:
                if tp * pp * dp > ndev:
                    continue
                eps = [1]
                if model.moe is not None:
                    eps = [e for e in pw if (tp * dp) % e == 0 and model.moe.num_experts % e == 0]
                for ep in eps:
                    plan = ParallelPlan(tp=tp, pp=pp, dp=dp, ep=ep, microbatches=max(1, pp))
                    out.append(check_plan(model, cluster, plan, **kw))
    out.sort(key=lambda c: (not c.ok, c.plan.devices))
    return out
