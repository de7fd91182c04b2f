"""``simllm place``: place MoE experts on devices and compare placement policies.

    simllm place --model deepseek-v3 --devices 32 --nodes 4 --redundant 32 --alpha 1.0 --compare --jobs 2

Loads come from ``--loads FILE.csv`` (columns layer,expert,tokens) or a Zipf power law
``--alpha`` (0 = uniform) over a seeded per-layer permutation of the experts, scaled to
``--tokens`` tokens a step each picking top-k experts. Prints, per policy, max/mean device
load (average over layers and worst layer), min/mean, solve time and, for the ILP, the
LP-relaxation bound and gap; ``--out DIR`` writes each placement as JSON and CSV.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from ..atomic import check_output_dir
from ..errors import InputError
from ._common import echo_json, print_table

MAX_DEVICE_LAYERS = 1 << 16
"""Most layers x devices one ``simllm place`` solves: its greedy policies take ~0.1 ms per (layer, device) on
this project's 2-core machine (mixtral-8x7b, 32 layers x 16,384 devices ran past 60 s), so this bounds a run
near 10 s. An assumption about time, not a limit of the method; DeepSeek-V3 on 1,024 devices fits."""

MAX_ROUTE_CHOICES = 1 << 20
"""Most expert choices (steps x batch x MoE layers x top-k) one ``simllm offload`` run draws and replays: the
routes are held as int64 arrays and replayed choice by choice (4,096 steps x 16 x 32 layers x top-2 took 29 s
on this 2-core machine), so this bounds memory (8 MB) and time near 10 s. An
assumption, not a limit of the method."""

COMPARE_ORDER = ("contiguous", "round_robin", "greedy_hierarchical", "greedy_replicated", "ilp")


def _shape(model: Optional[str], experts: Optional[int], layers: Optional[int], top_k: Optional[int]
           ) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "experts": experts, "layers": layers, "top_k": top_k,
                           "num_groups": 0, "expert_bytes": None}
    if model:
        from ..model import load_model

        spec = load_model(model)
        if spec.moe is None:
            raise InputError(f"model {spec.name} has no MoE layers; nothing to place", field="--model")
        m = spec.moe
        out["model"] = spec.name
        out["experts"] = m.num_experts if experts is None else experts
        out["layers"] = spec.num_moe_layers if layers is None else layers
        out["top_k"] = m.top_k if top_k is None else top_k
        out["num_groups"] = m.num_groups
        out["expert_bytes"] = (3 if spec.ffn.gated else 2) * spec.hidden_size * m.expert_intermediate_size \
            * spec.dtype_bytes
    if out["layers"] is None and out["experts"] is not None:
        out["layers"] = 1
    for k, flag in (("experts", "--experts"), ("layers", "--layers")):
        if out[k] is None:
            raise InputError(f"give --model or {flag}", field=flag)
        if out[k] < 1:
            raise InputError(f"must be >= 1, got {out[k]}", field=flag)
    out["top_k"] = 8 if out["top_k"] is None else out["top_k"]
    if not 1 <= out["top_k"] <= out["experts"]:
        raise InputError(f"must be in [1, {out['experts']}], got {out['top_k']}", field="--top-k")
    return out


def _devices(cluster: Optional[str], devices: Optional[int], nodes: Optional[int]) -> tuple[int, int, Optional[str]]:
    name = None
    if cluster:
        from ..hardware import load_cluster

        c = load_cluster(cluster)
        name = c.name
        nodes = c.num_nodes if nodes is None else nodes
        devices = c.num_nodes * c.node.devices if devices is None else devices
    if devices is None:
        raise InputError("give --cluster or --devices", field="--devices")
    nodes = 1 if nodes is None else nodes
    if devices < 1 or nodes < 1 or devices % nodes:
        raise InputError(f"{devices} devices do not split into {nodes} equal nodes", field="--nodes")
    return devices, nodes, name


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise InputError(f"expected KEY=VALUE, got {it!r}", field="--set")
        k, v = it.split("=", 1)
        val: Any = v
        for conv in (int, float):
            try:
                val = conv(v)
                break
            except ValueError:
                pass
        if v.lower() in ("true", "false"):
            val = v.lower() == "true"
        out[k.strip()] = val
    return out


def _progress(name: str):
    """Progress of the per-layer solver on stderr (one line, rewritten), quiet when not a terminal."""
    import sys

    tty = sys.stderr.isatty()

    def cb(done: int, total: int, info) -> None:
        if tty:
            sys.stderr.write(f"\r{name}: layer {done}/{total} ({info.status})" + ("\n" if done == total else ""))
            sys.stderr.flush()
    return cb


def place_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="Model descriptor (name, alias or YAML path)."),
    experts: Optional[int] = typer.Option(None, "--experts", help="Routed experts per layer (overrides the model)."),
    layers: Optional[int] = typer.Option(None, "--layers", help="MoE layers (overrides the model)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Experts per token (overrides the model; default 8)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Cluster descriptor: devices and nodes (and, for "
                                                                  "ilp_affinity, the inter-node cost from its links)."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Expert-parallel devices (overrides the cluster)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="Nodes the devices are in (default 1)."),
    redundant: int = typer.Option(0, "--redundant", help="Redundant expert slots in all (rounded up to fill every device)."),
    loads: Optional[Path] = typer.Option(None, "--loads", help="CSV of recorded loads: layer,expert,tokens."),
    alpha: float = typer.Option(1.0, "--alpha", help="Zipf exponent of expert popularity (0: uniform)."),
    tokens: int = typer.Option(4096, "--tokens", help="Tokens a step for synthetic loads."),
    policy: str = typer.Option("ilp", "--policy", help="Placement policy (see --compare for all)."),
    compare: bool = typer.Option(False, "--compare", help="Run every policy side by side."),
    sets: list[str] = typer.Option([], "--set", help="Policy parameter KEY=VALUE (repeatable)."),
    jobs: int = typer.Option(1, "--jobs", help="ILP: layers solved in parallel processes."),
    time_limit: float = typer.Option(10.0, "--time-limit", help="ILP: solver seconds per layer (at most)."),
    time_budget: float = typer.Option(30.0, "--time-budget", help="ILP: solver seconds for all layers together."),
    solver: str = typer.Option("auto", "--solver", help="ILP: auto, cbc or highs."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic loads."),
    routing_trace: Optional[Path] = typer.Option(None, "--routing-trace",
                                                 help="Routing trace (token,layer,rank,expert CSV/Parquet): loads and "
                                                      "inter-layer affinity from it."),
    affinity: Optional[float] = typer.Option(None, "--affinity",
                                             help="Generate routes with this inter-layer affinity (0-1: probability a "
                                                  "choice follows its predecessor's successor)."),
    route_tokens: int = typer.Option(4096, "--route-tokens", help="Tokens of generated routes (with --affinity)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for placement JSON and CSV files."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Place MoE experts (with redundant replicas) on devices; compare policies."""
    from ..placement import build_policy, policy_names
    from ..placement.loads import expected_loads, read_loads_csv, zipf_popularity

    t_start = time.perf_counter()
    if out is not None:
        check_output_dir(out)  # before the solve, which can take its whole time budget
    if not (math.isfinite(time_budget) and time_budget >= 0):
        raise InputError(f"must be a number of seconds >= 0, got {time_budget}", field="--time-budget")
    if not (math.isfinite(time_limit) and time_limit >= 0):
        raise InputError(f"must be a number of seconds >= 0, got {time_limit}", field="--time-limit")
    shape = _shape(model, experts, layers, top_k)
    G, N, cname = _devices(cluster, devices, nodes)
    E, L, K = shape["experts"], shape["layers"], shape["top_k"]
    if redundant < 0:
        raise InputError(f"must be >= 0, got {redundant}", field="--redundant")
    if redundant > E * (G - 1):
        raise InputError(f"{redundant} redundant slots exceed {E} experts x ({G} - 1) devices: no device holds an "
                         f"expert twice", field="--redundant")
    if L * G > MAX_DEVICE_LAYERS:
        raise InputError(f"{L} layers x {G} devices exceed the {MAX_DEVICE_LAYERS:,} device-layers one placement "
                         f"solves", field="--devices" if G > L else "--layers")
    S = max(1, math.ceil((E + redundant) / G))
    counts = None
    if routing_trace is not None and affinity is not None:
        raise InputError("give --routing-trace or --affinity, not both", field="--affinity")
    if affinity is not None and not (math.isfinite(affinity) and 0 <= affinity <= 1):
        raise InputError(f"must be in [0, 1], got {affinity}", field="--affinity")
    if (routing_trace is not None or affinity is not None) and loads is not None:
        raise InputError("--loads conflicts with routes (--routing-trace / --affinity): loads come from the routes",
                         field="--loads")
    if routing_trace is not None or affinity is not None:
        from ..placement.affinity import affinity_routes, transition_counts

        if routing_trace is not None:
            from ..placement.routing_trace import read_routing_trace

            routes = read_routing_trace(routing_trace, num_experts=E)
            source = f"routing trace {routing_trace}"
        else:
            if route_tokens < 1:
                raise InputError(f"must be >= 1, got {route_tokens}", field="--route-tokens")
            routes = affinity_routes(zipf_popularity(L, E, alpha, seed=seed), K, route_tokens, affinity, seed=seed)
            source = f"generated routes: zipf alpha={alpha} affinity={affinity} tokens={route_tokens} seed={seed}"
        L, K = routes.shape[0], routes.shape[2]
        counts = transition_counts(routes, E)
        w = np.stack([np.bincount(routes[l].ravel(), minlength=E) for l in range(L)]).astype(float)
    elif loads is not None:
        w = read_loads_csv(loads, num_layers=None, num_experts=E)
        L = w.shape[0]
        source = str(loads)
    else:
        if tokens < 1:
            raise InputError(f"must be >= 1, got {tokens}", field="--tokens")
        w = expected_loads(zipf_popularity(L, E, alpha, seed=seed), tokens, K)
        source = f"zipf alpha={alpha} seed={seed} tokens={tokens}"
    names = [n for n in COMPARE_ORDER if n in policy_names()] + \
        [n for n in policy_names() if n not in COMPARE_ORDER] if compare else [policy]
    extra = _parse_set(sets)
    results = []
    placements = {}
    for name in names:
        spec: dict[str, Any] = {"policy": name}
        if name == "ilp":
            spec.update(jobs=jobs, time_limit=time_limit, solver=solver, time_budget=time_budget)
        if name == "ilp_affinity":  # the budget covers the whole command: what reading/generating left
            spec.update(time_budget=max(0.0, 0.75 * (time_budget - (time.perf_counter() - t_start)) - 3.0), top_k=K)
            if cname:  # cross-node copies weighed by the cluster's links (--set inter_node_cost=R overrides)
                spec["cluster"] = cname
        if name == "greedy_hierarchical" and shape["num_groups"] > 1:
            spec["num_groups"] = shape["num_groups"]
        if not compare or name == policy:
            spec.update(extra)
        pol = build_policy(spec)
        t0 = time.perf_counter()
        if name == "ilp_affinity":
            p = pol.place(w, G, N, S, counts=counts, progress=_progress(name))
        elif name == "ilp":
            p = pol.place(w, G, N, S, progress=_progress(name))
        else:
            p = pol.place(w, G, N, S)
        wall = time.perf_counter() - t0
        bad = p.problems()
        if bad:  # a policy bug, not bad input
            raise RuntimeError(f"policy {name} produced an invalid placement: {bad[0]}")
        s = p.summary()
        s["wall_s"] = wall
        if counts is not None and L > 1:
            from ..placement.affinity import cross_device_fraction, cross_node_fraction

            s["cross_device_fraction"] = cross_device_fraction(p, counts)
            s["cross_node_fraction"] = cross_node_fraction(p, counts)
        if name == "ilp_affinity":
            s["affinity_gap"] = getattr(p, "affinity_gap", None)
            s["affinity_cost_gap"] = getattr(p, "affinity_cost_gap", None)
            s["inter_node_cost"] = getattr(p, "inter_node_cost", None)
        results.append(s)
        placements[name] = p
        if out is not None:
            p.write(out, stem=f"placement_{name}")
    report: dict[str, Any] = {
        "config": {"model": shape["model"], "cluster": cname, "experts": E, "layers": L, "top_k": K,
                   "devices": G, "nodes": N, "slots_per_device": S, "redundant": G * S - E, "loads": source,
                   "expert_bytes": shape["expert_bytes"]},
        "policies": results,
    }
    if counts is not None:
        from ..placement.affinity import top_successor_probability

        report["config"]["top_successor_probability"] = top_successor_probability(counts)
    if "ilp" in placements and "greedy_replicated" in placements:
        gi = placements["greedy_replicated"].imbalance()
        ii = placements["ilp"].imbalance()
        report["ilp_vs_greedy"] = {
            "ilp_le_greedy_every_layer": bool(np.all(ii <= gi + 1e-9)),
            "layers_ilp_better": int(np.sum(ii < gi - 1e-9)),
            "greedy_max_mean_avg": float(np.mean(gi)), "ilp_max_mean_avg": float(np.mean(ii)),
        }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        import json

        from ._common import _clean

        (out / "summary.json").write_text(json.dumps(_clean(report), indent=1))
    if json_out:
        echo_json(report)
        return
    c = report["config"]
    typer.echo(f"{c['model'] or 'model'}: {L} layers x {E} experts (top-{K}) on {G} devices in {N} nodes, "
               f"{S} slots each ({c['redundant']} redundant); loads: {source}")
    print_table("placement: device load / mean (avg over layers, worst layer)",
                ["name", "max/mean", "worst", "solve_s", "gap", "gap_max"]
                + (["cross-dev", "cross-node"] if counts is not None else []),
                [[r["policy"], _f(r["max_mean_avg"], ".4f"), _f(r["max_mean_worst"], ".4f"),
                  _f(r["solve_s"], ".2f"),
                  _f(r.get("affinity_gap", r.get("gap_avg")), ".1e"), _f(r.get("gap_worst"), ".1e")]
                 + ([_f(r.get("cross_device_fraction"), ".3f"), _f(r.get("cross_node_fraction"), ".3f")]
                    if counts is not None else [])
                 for r in results])
    if counts is not None:
        typer.echo(f"inter-layer affinity: mean P(top successor | expert) = "
                   f"{report['config']['top_successor_probability']:.3f}; cross-device / cross-node: fraction of "
                   "next-layer token copies leaving their device / node (context-coherent EP)")
    if any(r["policy"] == "ilp_affinity" for r in results):
        typer.echo("ilp_affinity gap: (bound - kept flow) / bound, summed over layer pairs (each layer solved "
                   "given the one before); kept flow = on-device + (inter-node cost - 1) x in-node")
        for r in results:
            if r["policy"] == "ilp_affinity" and r.get("inter_node_cost") is not None:
                typer.echo(f"ilp_affinity: inter-node cost {r['inter_node_cost']:.2f}, gap on the traffic cost "
                           f"(cost - bound) / cost {_f(r.get('affinity_cost_gap'), '.3f')}")
    if any("bound_avg" in r for r in results):
        typer.echo("gap: (max - LP-relaxation bound) / max; the bound is the mean device load (max/mean 1).")
    for r in results:
        for m in r.get("messages", []):
            typer.echo(f"{r['policy']}: {m}")
    if "ilp_vs_greedy" in report:
        v = report["ilp_vs_greedy"]
        typer.echo(f"ilp <= greedy_replicated on every layer: {v['ilp_le_greedy_every_layer']} "
                   f"(better on {v['layers_ilp_better']} of {L})")
    if out is not None:
        typer.echo(f"wrote {out}/placement_<policy>.json, .csv and summary.json")


def offload_cmd(
    model: str = typer.Option(..., "--model", help="MoE model descriptor."),
    accelerator: str = typer.Option("h200-sxm", "--accelerator", help="Device holding the expert cache."),
    link: str = typer.Option("pcie5", "--link", help="Host link experts are copied over (link descriptor)."),
    cache_experts: list[int] = typer.Option(..., "--cache-experts", help="Cache size, experts per layer (repeatable)."),
    policy: list[str] = typer.Option(["lru"], "--policy", help="lru, lfu or prefetch (repeatable)."),
    accuracy: float = typer.Option(0.9, "--accuracy", help="prefetch: routing-path predictor accuracy (0-1)."),
    batch: int = typer.Option(1, "--batch", help="Decode sequences a step."),
    locality: float = typer.Option(0.5, "--locality", help="P(a choice repeats the previous token's), 0-1."),
    steps: int = typer.Option(64, "--steps", help="Decode steps simulated."),
    weight_dtype: str = typer.Option("bf16", "--weight-dtype", help="Expert weight dtype."),
    cpu_mem_bw: float = typer.Option(0.0, "--cpu-mem-bw", help="GB/s of host memory a CPU reads an expert at: a "
                                                               "miss runs on the CPU when that beats the copy (0: off)."),
    micro_batches: int = typer.Option(1, "--micro-batches", help="Run each layer of a step as this many "
                                                                 "micro-batches, one after another (<= --batch)."),
    regroup: bool = typer.Option(False, "--regroup", help="Group a step's sequences by their routes before "
                                                          "splitting them into micro-batches (ExpertFlow's token "
                                                          "scheduler)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON rows instead of a table."),
) -> None:
    """Expert offloading: TPOT and hit rate of an HBM expert cache (experts in host memory)."""
    from ..hardware import load_accelerator, load_link
    from ..model import load_model
    from ..placement.offload import POLICIES, check_cache_fits, offload_sweep

    for v, f in ((accuracy, "--accuracy"), (locality, "--locality")):
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise InputError(f"must be in [0, 1], got {v}", field=f)
    for pname in policy:
        if pname not in POLICIES:
            raise InputError(f"unknown cache policy {pname!r}; known: {', '.join(POLICIES)}", field="--policy")
    if batch < 1 or steps < 1:
        raise InputError("must be >= 1", field="--batch/--steps")
    if not 1 <= micro_batches <= batch:
        raise InputError(f"must be in [1, --batch {batch}], got {micro_batches}", field="--micro-batches")
    if regroup and micro_batches < 2:
        raise InputError("--regroup groups sequences into micro-batches: it needs --micro-batches >= 2",
                         field="--regroup")
    if not (math.isfinite(cpu_mem_bw) and cpu_mem_bw >= 0):
        raise InputError(f"must be a bandwidth >= 0 GB/s, got {cpu_mem_bw}", field="--cpu-mem-bw")
    spec = load_model(model)
    if spec.moe is None:
        raise InputError(f"model {spec.name} has no MoE layers; nothing to offload", field="--model")
    choices = steps * batch * spec.num_moe_layers * spec.moe.top_k
    if choices > MAX_ROUTE_CHOICES:
        raise InputError(f"--steps {steps} x --batch {batch} x {spec.num_moe_layers} layers x top-{spec.moe.top_k} = "
                         f"{choices:,} expert choices exceed the {MAX_ROUTE_CHOICES:,} one run routes",
                         field="--steps" if steps >= batch else "--batch")
    acc = load_accelerator(accelerator)
    wb = {"bf16": 2, "fp16": 2, "fp8": 1, "fp4": 0.5}.get(weight_dtype)
    if wb is None:
        raise InputError(f"unknown weight dtype {weight_dtype!r}; known: bf16, fp16, fp8, fp4", field="--weight-dtype")
    eb = (3 if spec.ffn.gated else 2) * spec.hidden_size * spec.moe.expert_intermediate_size * wb
    for c in cache_experts:
        if not 1 <= c <= spec.moe.num_experts:
            raise InputError(f"must be in [1, {spec.moe.num_experts}] experts per layer, got {c}", field="--cache-experts")
        check_cache_fits(c, spec.num_moe_layers, eb, acc.hbm_bytes)
    rows = offload_sweep(spec, acc, load_link(link).bw, cache_sizes=cache_experts, policies=tuple(policy),
                         accuracy=accuracy, batch=batch, steps=steps, locality=locality, weight_dtype=weight_dtype,
                         cpu_bw=cpu_mem_bw * 1e9, micro_batches=micro_batches, regroup=regroup)
    if json_out:
        echo_json(rows)
        return
    print_table(f"{spec.name}: expert cache on {acc.name}, experts over {link}",
                ["cache", "policy", "hit rate", "SCH", "stall ms/step", "GiB moved/step", "TPOT ms", "HBM saved GiB"],
                [[r["cache_experts"], r["policy"], f"{r['hit_rate']:.3f}", f"{r['sch']:.3f}",
                  f"{1e3 * r['stall_s_per_step']:.2f}", f"{r['bytes_per_step'] / 2**30:.2f}",
                  f"{1e3 * r['tpot_s']:.2f}", f"{r['hbm_saved_bytes'] / 2**30:.1f}"] for r in rows])
    typer.echo(f"routing locality: SRP {rows[0]['srp']:.3f} (segments of {rows[0]['segment_steps']} steps; SCH per "
               f"cache size above)")


def register(app: typer.Typer) -> None:
    app.command("place")(place_cmd)
    app.command("offload")(offload_cmd)
