"""``simllm comm``: predicted time and bandwidth of one collective on a node or cluster.

    simllm comm all_reduce --cluster dgx-a100 --devices 8 --bytes 64MiB
    simllm comm dispatch --cluster h800-ep --devices 32 --tokens 4096 --hidden 7168 --topk 8 --dtype fp8

Bandwidths follow nccl-tests (doc/PERFORMANCE.md): ``algbw = size / time`` and
``busbw = algbw x factor`` (all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all
(n-1)/n; send_recv 1). ``size`` is nccl-tests' size: the all-reduce buffer, the all-gather
output, the reduce-scatter input, each rank's all-to-all send buffer. For dispatch/combine
it also prints DeepEP's own figure (RDMA or NVLink bytes per second, as its tests count them), for the
normal kernels (prefill) and the low-latency kernels (decode; JSON key ``low_latency``).
"""

from __future__ import annotations

import math
from typing import Optional

import typer

from ..errors import InputError
from ..units import parse_quantity
from ._common import echo_json, print_table

MAX_ROUTE_ENTRIES = 1 << 28
"""Most tokens x experts a dispatch/combine estimate routes (its routing table is one float32 each: 1 GiB)."""

OPS = ("all_reduce", "all_gather", "reduce_scatter", "send_recv", "all_to_all", "dispatch", "combine")


def predict(op: str, cluster: str, devices: int, *, nbytes: float | None = None, tokens: int | None = None,
            hidden: int | None = None, topk: int | None = None, dtype: str | None = None, experts: int = 256,
            topk_groups: int | None = None, algorithm: str = "auto", src: int | None = None,
            dst: int | None = None):
    """The :class:`~simllm.topology.CommEstimate` the command prints."""
    from ..topology import build_topology, collective, ep_dispatch, send_recv

    if op not in OPS:
        raise InputError(f"unknown op {op!r}; expected one of {', '.join(OPS)}", field="op")
    topo = build_topology(cluster)
    if devices < 1 or devices > topo.num_devices:
        raise InputError(f"--devices {devices}: {cluster} has 1..{topo.num_devices} devices", field="devices")
    if nbytes is not None and not (math.isfinite(nbytes) and nbytes >= 0):
        raise InputError(f"expected a finite size >= 0, got {nbytes}", field="--bytes")
    if op != "send_recv" and (src is not None or dst is not None):
        raise InputError(f"--src/--dst pick the ranks of send_recv, not of {op}", field="--src")
    if op in ("dispatch", "combine", "send_recv") and algorithm != "auto":
        raise InputError(f"{op} has one algorithm; --algorithm applies to the collectives", field="--algorithm")
    if op not in ("dispatch", "combine") and topk_groups is not None:
        raise InputError(f"--topk-groups applies to dispatch/combine, not {op}", field="--topk-groups")
    if op not in ("dispatch", "combine") and dtype is not None and nbytes is not None:
        raise InputError("--dtype sizes --tokens x --hidden; with --bytes it has nothing to do", field="--dtype")
    if op in ("dispatch", "combine"):
        if topk is not None and topk > experts:
            raise InputError(f"--topk {topk} exceeds --experts {experts}", field="--topk")
        if tokens is not None and tokens * experts > MAX_ROUTE_ENTRIES:
            raise InputError(f"{tokens} tokens x {experts} experts exceed the {MAX_ROUTE_ENTRIES:,} routing entries "
                             f"one estimate holds", field="--tokens")
        missing = [n for n, v in (("--tokens", tokens), ("--hidden", hidden), ("--topk", topk)) if v is None]
        if missing:
            raise InputError(f"{op} needs {', '.join(missing)}", field="tokens")
        if nbytes is not None:
            raise InputError(f"{op} takes --tokens/--hidden/--topk, not --bytes", field="bytes")
        return ep_dispatch(topo, tokens, hidden, topk, devices, experts=experts, topk_groups=topk_groups,
                           dtype=dtype or ("fp8" if op == "dispatch" else "bf16"), op=op)
    if nbytes is None:
        if tokens is not None and hidden is not None:
            from ..topology import token_bytes

            nbytes = tokens * token_bytes(hidden, dtype or "bf16")
        else:
            raise InputError(f"{op} needs --bytes (or --tokens and --hidden)", field="bytes")
    if op == "send_recv":
        s = 0 if src is None else src
        d = (devices - 1 if devices > 1 else 0) if dst is None else dst
        if s == d:
            raise InputError("send_recv needs two different devices (--devices >= 2 or --src/--dst)", field="devices")
        topo.device(s), topo.device(d)
        return send_recv(topo, nbytes, s, d)
    return collective(topo, op, nbytes, devices, algorithm=algorithm)


def comm(
    op: str = typer.Argument(..., help=f"one of {', '.join(OPS)}"),
    cluster: str = typer.Option(..., "--cluster", "-c", help="node or cluster descriptor (name or path)"),
    devices: int = typer.Option(..., "--devices", "-n", help="devices taking part (first N, nodes filled in order)"),
    nbytes: Optional[str] = typer.Option(None, "--bytes", "-b", help="message size, e.g. 64MiB or 1e9"),
    tokens: Optional[int] = typer.Option(None, "--tokens", min=1, help="tokens per rank (dispatch/combine)"),
    hidden: Optional[int] = typer.Option(None, "--hidden", min=1, help="hidden size"),
    topk: Optional[int] = typer.Option(None, "--topk", min=1, help="experts per token"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp8 | bf16 | ... (dispatch default fp8, combine bf16)"),
    experts: int = typer.Option(256, "--experts", min=1, help="routed experts (dispatch/combine)"),
    topk_groups: Optional[int] = typer.Option(None, "--topk-groups", min=1, help="nodes a token may reach (default min(nodes, 4))"),
    algorithm: str = typer.Option("auto", "--algorithm", help="auto | ring | tree | direct | hierarchical"),
    src: Optional[int] = typer.Option(None, "--src", min=0, help="send_recv source rank (default 0)"),
    dst: Optional[int] = typer.Option(None, "--dst", min=0, help="send_recv destination rank (default the last device)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Predicted time and achieved bandwidth of one collective over the cluster's topology."""
    b = None
    if nbytes is not None:
        try:
            b = float(nbytes)
        except ValueError:
            b = parse_quantity(nbytes, "bytes", field="--bytes")
    e = predict(op, cluster, devices, nbytes=b, tokens=tokens, hidden=hidden, topk=topk, dtype=dtype,
                experts=experts, topk_groups=topk_groups, algorithm=algorithm, src=src, dst=dst)
    d = e.as_dict()
    d["cluster"] = cluster
    ll = None
    if op in ("dispatch", "combine"):  # DeepEP's low-latency kernels (decode) beside the normal ones (prefill)
        from ..topology import build_topology, ep_dispatch_ll

        ll = ep_dispatch_ll(build_topology(cluster), tokens, hidden, topk, devices, op=op, experts=experts)
        d["low_latency"] = {"time_s": ll.time_s, "deepep_bw": ll.extra["deepep_bw"], "bottleneck": ll.bottleneck}
    if as_json:
        echo_json(d)
        return
    rows = [("op", e.op), ("algorithm", e.algorithm), ("devices", f"{e.devices} on {e.nodes} node(s)"),
            ("size", f"{e.nbytes / 1e6:.4g} MB"), ("time", f"{e.time_s * 1e6:.4g} us"),
            ("algbw", f"{e.algbw / 1e9:.4g} GB/s"), ("busbw", f"{e.busbw / 1e9:.4g} GB/s"),
            ("bottleneck", e.bottleneck)]
    if e.extra and "deepep_bw" in e.extra:
        rows.append((f"DeepEP {e.extra['deepep_domain']} bw", f"{e.extra['deepep_bw'] / 1e9:.4g} GB/s"))
        rows.append(("recv tokens/rank", f"{e.extra['recv_tokens_per_rank']:.0f}"))
    if len(e.candidates or {}) > 1:
        rows.append(("candidates", ", ".join(f"{k} {v * 1e6:.4g} us" for k, v in e.candidates.items())))
    if ll is not None:
        rows += [("low-latency kernel time", f"{ll.time_s * 1e6:.4g} us"),
                 ("low-latency DeepEP bw", f"{ll.extra['deepep_bw'] / 1e9:.4g} GB/s")]
    print_table(f"{op} on {cluster}", ["name", "value"], rows, justify_numbers=False)


def register(app: typer.Typer) -> None:
    app.command("comm")(comm)
