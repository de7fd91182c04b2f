"""``simllm plan``: enumerate parallel plans of a model on a cluster, valid ones best first.

    simllm plan llama-3-70b --cluster dgx-a100
    simllm plan deepseek-v3 --cluster h800-ep --json

For every plan (power-of-two TP inside a node, PP, DP, EP), the validator of
:mod:`simllm.parallel` checks divisibility and memory per device; valid plans get prefill and
decode step times for a reference batch: ``--prefill-tokens`` new tokens (in sequences of
``--prompt`` tokens) and ``--decode-seqs`` sequences decoding at ``--ctx`` tokens of context,
the batch spread over the DP replicas. Times come from the cost model
(``simllm.cost.make_step_cost``: compute, TP all-reduces, PP sends of one replica) plus the
expert-parallel dispatch/combine over the topology (:mod:`simllm.parallel`):

- ``prefill_s``: the replica's prefill batch through all pipeline stages (TTFT-like);
- ``decode_s``: time between two tokens of a sequence: one micro-batch (the replica's decode
  sequences split into ``pp`` micro-batches, all in flight) through all stages (TPOT-like);
- ``decode_tokens_per_s_per_device``: decode sequences / decode_s / devices.

Expert compute is priced as the cost model does for the replica (experts split over its
``tp`` devices); with ``ep`` the per-device expert work is the same on average, and the
dispatch/combine is added. Sorted by decode throughput per device, then prefill time.
"""

from __future__ import annotations

import math

import typer

from ..cost import make_step_cost
from ..cost.interface import BatchShape
from ..errors import InputError
from ..hardware import load_cluster
from ..model import load_model
from ..parallel import check_plan, comm_per_step, enumerate_plans
from ..topology import build_topology
from ._common import echo_json, print_table

GiB = float(1 << 30)


def _step_cost(model, cluster, plan):
    return make_step_cost(model, cluster.accelerator, tp=plan.tp, pp=plan.pp, node=cluster.node,
                          weight_dtype=model.dtype)


def _latency(sc, shape) -> float:
    """One batch through every pipeline stage (the replica's own step time when pp == 1)."""
    if hasattr(sc, "pipeline_latency"):
        return float(sc.pipeline_latency(shape))
    return float(sc.step_time(shape.prefill_tokens, shape.prefill_attn_work, shape.prefill_seqs,
                              shape.decode_seqs, shape.decode_ctx_tokens))


def evaluate(model_name: str, cluster_name: str, *, prefill_tokens: int = 8192, prompt: int = 2048,
             decode_seqs: int = 64, ctx: int = 4096, include_invalid: bool = False) -> list[dict]:
    """Rows of the plan table (dicts), best first."""
    if min(prefill_tokens, prompt, decode_seqs, ctx) < 1:
        raise InputError("reference batch sizes must be >= 1", field="prefill-tokens")
    model = load_model(model_name)
    cluster = load_cluster(cluster_name)
    topo = build_topology(cluster_name)
    rows = []
    for chk in enumerate_plans(model, cluster, batch_tokens=prefill_tokens):
        plan = chk.plan
        # KV the reference decode batch needs on one replica
        kv_tokens = math.ceil(decode_seqs / plan.dp) * ctx
        chk = check_plan(model, cluster, plan, batch_tokens=max(1, math.ceil(prefill_tokens / plan.dp)),
                         kv_tokens=kv_tokens)
        row = {"plan": plan.label(), "tp": plan.tp, "pp": plan.pp, "dp": plan.dp, "ep": plan.ep,
               "devices": plan.devices, "valid": chk.ok, "errors": list(chk.errors),
               "mem_per_device_gib": chk.memory.total / GiB if chk.memory else None,
               "weights_gib": chk.memory.weights / GiB if chk.memory else None,
               "kv_gib": chk.memory.kv_cache / GiB if chk.memory else None}
        if chk.ok:
            sc = _step_cost(model, cluster, plan)
            p_tok = max(1, math.ceil(prefill_tokens / plan.dp))
            p_seqs = max(1, math.ceil(p_tok / prompt))
            chunk = p_tok / p_seqs
            d_seqs = max(1, math.ceil(decode_seqs / plan.dp))
            m = max(1, min(plan.microbatches, d_seqs))
            d_mb = max(1, math.ceil(d_seqs / m))  # decode sequences of one micro-batch
            pre = _latency(sc, BatchShape(prefill_tokens=p_tok, prefill_attn_work=p_seqs * chunk * chunk / 2,
                                          prefill_seqs=p_seqs))
            dec = _latency(sc, BatchShape(decode_seqs=d_mb, decode_ctx_tokens=float(d_mb * ctx)))
            comm_p = comm_per_step(model, topo, plan, p_tok)
            comm_d = comm_per_step(model, topo, plan, d_mb)
            pre += comm_p["ep_s"]
            dec += comm_d["ep_s"]
            row.update({"prefill_s": pre, "decode_s": dec,
                        "decode_tokens_per_s_per_device": d_mb * m * plan.dp / dec / plan.devices,
                        "ep_comm_decode_s": comm_d["ep_s"], "bubble": plan.bubble})
        if chk.ok or include_invalid:
            rows.append(row)
    rows.sort(key=lambda r: (not r["valid"], -(r.get("decode_tokens_per_s_per_device") or 0.0),
                             r.get("prefill_s") or math.inf))
    return rows


def plan(
    model: str = typer.Argument(..., help="model descriptor (name or path)"),
    cluster: str = typer.Option(..., "--cluster", "-c", help="node or cluster descriptor"),
    prefill_tokens: int = typer.Option(8192, "--prefill-tokens", help="reference prefill batch (tokens)"),
    prompt: int = typer.Option(2048, "--prompt", help="prompt length of the reference prefill sequences"),
    decode_seqs: int = typer.Option(64, "--decode-seqs", help="reference decode batch (sequences)"),
    ctx: int = typer.Option(4096, "--ctx", help="context tokens of each decoding sequence"),
    top: int = typer.Option(20, "--top", min=1, help="rows to print (table only)"),
    show_invalid: bool = typer.Option(False, "--all", help="also list invalid plans with their reasons"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Enumerate valid parallel plans with memory per device and step times, best first."""
    rows = evaluate(model, cluster, prefill_tokens=prefill_tokens, prompt=prompt, decode_seqs=decode_seqs,
                    ctx=ctx, include_invalid=show_invalid)
    if as_json:
        echo_json({"model": model, "cluster": cluster, "reference": {"prefill_tokens": prefill_tokens,
                   "prompt": prompt, "decode_seqs": decode_seqs, "ctx": ctx}, "plans": rows})
        return
    if not rows:
        raise InputError(f"no valid plan for {model} on {cluster} (try --all to see why)", field="cluster")
    cols = ["name", "dev", "GiB/dev", "prefill ms", "decode ms", "tok/s/dev"] + (["note"] if show_invalid else [])
    out = []
    for r in rows[:top]:
        row = [r["plan"], r["devices"], r["mem_per_device_gib"] or float("nan"),
               (r.get("prefill_s") or float("nan")) * 1e3, (r.get("decode_s") or float("nan")) * 1e3,
               r.get("decode_tokens_per_s_per_device") or float("nan")]
        if show_invalid:
            row.append("; ".join(r["errors"])[:60] if not r["valid"] else "")
        out.append(row)
    print_table(f"{model} on {cluster}", cols, out)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
