"""``simllm model explain``: the roofline, operator by operator, for one layer and one step.

For a batch of ``--batch`` decoding sequences with ``--context`` tokens of context each, plus
an optional fresh prefill of ``--prefill-tokens`` tokens (one sequence), prints a table per
layer kind (dense; MoE separately when the model has both): op, FLOPs, bytes, arithmetic
intensity, bound (compute / memory / comm) and time, on one device of a ``--tp`` x ``--pp``
replica; then layer totals and the step total (the slowest pipeline stage).

With ``--ep N`` (an MoE model) the replica is expert-parallel (``simllm.cost.moe_ep``): attention
data-parallel over ``dp = ep / tp`` ranks (the step's tokens spread evenly over them), routed
experts placed over the ``ep`` devices (``--placement``, ``--redundant`` extra slots); it prints
the weights per device, and per MoE layer the attention + local compute, the slowest device's
routed experts and the dispatch + combine over the topology (``--cluster`` or ``--node``).
A warning says when the weights per device exceed the device's memory.
"""

from __future__ import annotations

from typing import Optional

import typer

from ..cost import make_step_cost
from ..cost.moe_ep import make_ep_step_cost
from ..cost.interface import BatchShape
from ..cost.ops import total
from ..errors import InputError
from ..hardware import load_accelerator, load_cluster, load_node
from ..model import load_model
from ..scenario_checks import MAX_ENGINE_SLOTS
from ..workload.generators import MAX_TOKENS
from ._common import console, echo_json, print_table


def _op_row(o) -> dict:
    return {"op": o.name, "kind": o.kind, "shape": o.shape, "flops": o.flops, "bytes": o.bytes,
            "intensity_flop_per_byte": o.intensity if o.bytes > 0 else None, "bound": o.bound, "time_s": o.time_s}


def explain(model_name: str, hw: str, *, batch: int, context: int, prefill_tokens: int = 0, tp: int = 1,
            pp: int = 1, node: Optional[str] = None, weight_dtype: str = "bf16", kv_dtype: str = "bf16",
            act_dtype: str = "bf16", ep: int = 1, cluster: Optional[str] = None, placement: str = "contiguous",
            redundant: int = 0) -> dict:
    if batch < 0 or context < 0 or prefill_tokens < 0:
        raise InputError("--batch, --context and --prefill-tokens must be >= 0", field="--batch")
    if batch == 0 and prefill_tokens == 0:
        raise InputError("nothing to explain: give --batch > 0 or --prefill-tokens > 0", field="--batch")
    if max(context, prefill_tokens) > MAX_TOKENS or batch > MAX_ENGINE_SLOTS:
        raise InputError(f"at most {MAX_TOKENS:,} tokens of --context / --prefill-tokens and {MAX_ENGINE_SLOTS:,} "
                         f"sequences of --batch", field="--batch" if batch > MAX_ENGINE_SLOTS else "--context")
    if ep < 1 or redundant < 0:
        raise InputError(f"expected --ep >= 1 and --redundant >= 0, got {ep} and {redundant}",
                         field="--ep" if ep < 1 else "--redundant")
    if ep == 1 and (cluster or redundant or placement != "contiguous"):
        raise InputError("--cluster, --placement and --redundant apply to an expert-parallel replica (--ep > 1)",
                         field="--cluster" if cluster else "--placement" if placement != "contiguous" else "--redundant")
    model = load_model(model_name)
    if tp < 1 or pp < 1:
        raise InputError(f"expected positive parallel degrees, got tp={tp}, pp={pp}", field="--tp" if tp < 1 else "--pp")
    from ..parallel import tp_errors

    for err in tp_errors(model, tp):  # the same check `simllm run` applies
        raise InputError(err, field="--tp")
    acc = load_accelerator(hw)
    nd = load_node(node) if node else None
    if nd is not None and nd.accelerator.name != acc.name:
        raise InputError(f"the {nd.name} node holds {nd.accelerator.name}, not {acc.name}", field="--node")
    if nd is not None and ep == 1 and tp * pp > nd.devices:
        raise InputError(f"tp x pp = {tp * pp} devices, the {nd.name} node has {nd.devices}", field="--tp")
    if ep > 1:
        return _explain_ep(model, acc, batch=batch, context=context, prefill_tokens=prefill_tokens, tp=tp, ep=ep,
                           node=nd, cluster=load_cluster(cluster) if cluster else None, placement=placement,
                           redundant=redundant, dtypes=(weight_dtype, kv_dtype, act_dtype))
    cost = make_step_cost(model, acc, tp=tp, pp=pp, node=nd, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                          act_dtype=act_dtype)
    shape = BatchShape(prefill_tokens=prefill_tokens, prefill_attn_work=prefill_tokens * prefill_tokens / 2.0,
                       prefill_seqs=1 if prefill_tokens else 0, decode_seqs=batch,
                       decode_ctx_tokens=float(batch * context))
    kinds = []
    if model.num_dense_layers:
        kinds.append(("dense", False, model.num_dense_layers))
    if model.moe is not None and model.num_moe_layers:
        kinds.append(("moe", True, model.num_moe_layers))
    layers = {}
    for name, moe, count in kinds:
        ops = cost.layer_ops(moe, shape)
        t = total(ops)
        layers[name] = {"count": count, "ops": [_op_row(o) for o in ops],
                        "total": {"flops": t.flops, "bytes": t.bytes, "time_s": t.time_s, "compute_s": t.compute_s,
                                  "memory_s": t.memory_s, "comm_s": t.comm_s, "overhead_s": t.overhead_s,
                                  "bound": "compute" if t.compute_s > t.memory_s else "memory"}}
    sc = cost.step_cost(shape)
    step = {"time_s": sc.total_s, "compute_s": sc.compute_s, "memory_s": sc.memory_s, "comm_s": sc.comm_s,
            "overhead_s": sc.overhead_s, "flops": sc.flops, "bytes": sc.bytes,
            "bound": "compute" if sc.compute_s > sc.memory_s else "memory",
            "stage_times_s": [float(x) for x in cost.stage_times(shape)],
            "pipeline_latency_s": cost.pipeline_latency(shape),
            "achieved_flops_per_s": sc.flops / sc.total_s if sc.total_s else 0.0,
            "mfu": sc.flops / sc.total_s / cost.ops.peak if sc.total_s else 0.0,
            "mbu": sc.bytes / sc.total_s / acc.hbm_bw if sc.total_s else 0.0}
    return {"model": model.name, "hw": acc.name, "tp": tp, "pp": pp, "calibration": cost.cal.device,
            "dtypes": {"weight": weight_dtype, "kv": kv_dtype, "act": act_dtype},
            "batch": {"decode_seqs": batch, "context": context, "prefill_tokens": prefill_tokens},
            "weight_bytes_per_device": cost.weight_bytes_per_device,
            "kv_bytes_per_token_per_device": cost.kv_bytes_per_token_per_device,
            "layers": layers, "step": step, "warnings": _fit_warnings(cost, acc)}


def _fit_warnings(cost, acc) -> list[str]:
    w = float(cost.weight_bytes_per_device)
    if w > acc.hbm_bytes:
        return [f"the weights need {w / 2**30:.1f} GiB per device, {acc.name} has {acc.hbm_bytes / 2**30:.1f} GiB: "
                f"they do not fit (more tp / pp / ep, or a smaller weight dtype)"]
    return []


def _step_dict(sc, peak: float, bw: float) -> dict:
    return {"time_s": sc.total_s, "compute_s": sc.compute_s, "memory_s": sc.memory_s, "comm_s": sc.comm_s,
            "overhead_s": sc.overhead_s, "flops": sc.flops, "bytes": sc.bytes,
            "bound": "compute" if sc.compute_s > sc.memory_s else "memory",
            "achieved_flops_per_s": sc.flops / sc.total_s if sc.total_s else 0.0,
            "mfu": sc.flops / sc.total_s / peak if sc.total_s else 0.0,
            "mbu": sc.bytes / sc.total_s / bw if sc.total_s else 0.0}


def _explain_ep(model, acc, *, batch, context, prefill_tokens, tp, ep, node, cluster, placement, redundant,
                dtypes) -> dict:
    wd, kd, ad = dtypes
    cost = make_ep_step_cost(model, acc, ep=ep, tp=tp, node=node, cluster=cluster,
                             placement={"policy": placement, "redundant": redundant}, weight_dtype=wd, kv_dtype=kd,
                             act_dtype=ad)
    shape = BatchShape(prefill_tokens=prefill_tokens, prefill_attn_work=prefill_tokens * prefill_tokens / 2.0,
                       prefill_seqs=1 if prefill_tokens else 0, decode_seqs=batch,
                       decode_ctx_tokens=float(batch * context))
    T = batch + prefill_tokens
    moe = cost.moe_layer_breakdown(T)
    sc = cost.step_cost(shape)
    return {"model": model.name, "hw": acc.name, "tp": tp, "pp": 1, "ep": ep, "dp": cost.dp,
            "calibration": cost.cal.device, "dtypes": {"weight": wd, "kv": kd, "act": ad},
            "batch": {"decode_seqs": batch, "context": context, "prefill_tokens": prefill_tokens,
                      "tokens_per_dp_rank": -(-T // cost.dp), "tokens_per_device_dispatched": -(-T // ep)},
            "placement": {"policy": placement, "redundant": redundant, "slots_per_device": cost.slots_used},
            "weight_bytes_per_device": cost.weight_bytes_per_device,
            "kv_bytes_per_token_per_device": cost.kv_bytes_per_token_per_device,
            "moe_layer": {**moe, "count": int(model.num_moe_layers)}, "layers": {},
            "step": _step_dict(sc, cost.ops.peak, acc.hbm_bw), "warnings": _fit_warnings(cost, acc)}


def explain_cmd(model: str = typer.Argument(..., help="model name or YAML path"),
                hw: str = typer.Option(..., "--hw", help="accelerator name"),
                batch: int = typer.Option(..., "--batch", help="decoding sequences in the step"),
                context: int = typer.Option(..., "--context", help="context tokens of each decoding sequence"),
                prefill_tokens: int = typer.Option(0, "--prefill-tokens", help="tokens of one fresh prefill"),
                tp: int = typer.Option(1, "--tp"), pp: int = typer.Option(1, "--pp"),
                node: Optional[str] = typer.Option(None, "--node", help="node descriptor (links for tp/pp)"),
                weight_dtype: str = typer.Option("bf16", "--weight-dtype"),
                kv_dtype: str = typer.Option("bf16", "--kv-dtype"),
                act_dtype: str = typer.Option("bf16", "--act-dtype"),
                ep: int = typer.Option(1, "--ep", help="expert parallelism (MoE): devices per replica; dp = ep / tp"),
                cluster: Optional[str] = typer.Option(None, "--cluster", help="cluster descriptor (EP topology)"),
                placement: str = typer.Option("contiguous", "--placement", help="expert placement policy (EP)"),
                redundant: int = typer.Option(0, "--redundant", help="redundant expert slots (EP)"),
                json_out: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Per-operator FLOPs, bytes, intensity, bound and time of one layer and of the whole step."""
    res = explain(model, hw, batch=batch, context=context, prefill_tokens=prefill_tokens, tp=tp, pp=pp, node=node,
                  weight_dtype=weight_dtype, kv_dtype=kv_dtype, act_dtype=act_dtype, ep=ep, cluster=cluster,
                  placement=placement, redundant=redundant)
    if json_out:
        echo_json(res)
        return
    for w in res["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if ep > 1:
        m = res["moe_layer"]
        b = res["batch"]
        console.print(f"{res['model']} on {res['hw']}: ep={ep} (attention dp={res['dp']} x tp={res['tp']}), "
                      f"{b['tokens_per_dp_rank']} tokens per dp rank, {b['tokens_per_device_dispatched']} dispatched "
                      f"per device; {res['placement']['slots_per_device']} expert slots per device")
        print_table(f"one MoE layer (x{m['count']})", ["part", "time_us"],
                    [("attention + local compute", m["attention_and_local_s"] * 1e6),
                     ("routed experts (slowest device)", m["routed_experts_s"] * 1e6),
                     ("dispatch + combine", m["dispatch_combine_s"] * 1e6)])
    for name, L in res["layers"].items():
        rows = [(o["op"], o["shape"], o["flops"] / 1e9, o["bytes"] / 1e6,
                 o["intensity_flop_per_byte"] if o["intensity_flop_per_byte"] is not None else float("nan"),
                 o["bound"], o["time_s"] * 1e6) for o in L["ops"]]
        t = L["total"]
        rows.append(("layer total", "", t["flops"] / 1e9, t["bytes"] / 1e6,
                     t["flops"] / t["bytes"] if t["bytes"] else float("nan"), t["bound"], t["time_s"] * 1e6))
        print_table(f"{res['model']} on {res['hw']} (tp={res['tp']}), one {name} layer (x{L['count']})",
                    ["op", "shape", "GFLOP", "MB", "FLOP/B", "bound", "time_us"], rows)
    s = res["step"]
    console.print(f"step: {s['time_s'] * 1e3:.4g} ms ({s['bound']}-bound; compute {s['compute_s'] * 1e3:.4g} ms, "
                  f"memory {s['memory_s'] * 1e3:.4g} ms, comm {s['comm_s'] * 1e3:.4g} ms, overhead "
                  f"{s['overhead_s'] * 1e3:.4g} ms), {s['flops'] / 1e12:.4g} TFLOP, {s['bytes'] / 1e9:.4g} GB per "
                  f"device; MFU {s['mfu']:.1%}, MBU {s['mbu']:.1%}; weights {res['weight_bytes_per_device'] / 1e9:.4g}"
                  f" GB/device, KV {res['kv_bytes_per_token_per_device'] / 1e3:.4g} kB/token/device")


def register_explain(model_app: typer.Typer) -> None:
    model_app.command("explain")(explain_cmd)
