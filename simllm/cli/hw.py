"""``simllm hw``: list and inspect hardware descriptors (accelerators, links, nodes, clusters).

``simllm hw list`` prints a table of key figures per kind; ``simllm hw show NAME`` finds NAME
(a name, an alias or a path to a YAML file) among all kinds and prints every field, in SI
units with its source when ``--json`` is given.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..config import Sourced, load_yaml, resolve
from ..errors import InputError, NotFoundError
from ..hardware import (
    ACCEL_DIR,
    CLUSTER_DIR,
    LINK_DIR,
    NODE_DIR,
    Accelerator,
    Cluster,
    Link,
    Node,
    list_hardware,
    load_accelerator,
    load_cluster,
    load_link,
    load_node,
)
from rich.table import Table

from ._common import console, echo_json

hw_app = typer.Typer(
    name="hw",
    help="Hardware descriptors: accelerators, links, nodes and clusters (every number with its source).",
    no_args_is_help=True,
    add_completion=False,
)


class Kind(str, Enum):
    accelerators = "accelerators"
    links = "links"
    nodes = "nodes"
    clusters = "clusters"


# kind -> (directory, loader, singular noun)
_KINDS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "accelerators": (ACCEL_DIR, load_accelerator, "accelerator"),
    "links": (LINK_DIR, load_link, "link"),
    "nodes": (NODE_DIR, load_node, "node"),
    "clusters": (CLUSTER_DIR, load_cluster, "cluster"),
}

# SI unit of each sourced field, for the JSON output
_UNITS = {
    "peak_flops": "FLOP/s", "memory_capacity": "B", "memory_bandwidth": "B/s", "sram": "B",
    "compute_units": "count", "tdp": "W", "idle_power": "W", "price_per_hour": "USD/h",
    "bandwidth_per_direction": "B/s", "latency": "s", "efficiency": "fraction",
}


# ---------------------------------------------------------------- serialisation

def _sourced(field: str, s: Sourced) -> dict:
    return {"value": s.value, "unit": _UNITS.get(field, ""), "source": s.source, "as_written": s.text}


def _model_dict(obj) -> dict:
    """Every field of a frozen descriptor; sourced numbers as {value (SI), unit, source, as_written}."""
    out: dict[str, Any] = {}
    for field in type(obj).model_fields:
        v = getattr(obj, field)
        if isinstance(v, Sourced):
            out[field] = _sourced(field, v)
        elif isinstance(v, dict) and v and all(isinstance(x, Sourced) for x in v.values()):
            out[field] = {k: _sourced(field, x) for k, x in v.items()}
        elif hasattr(v, "model_dump"):
            out[field] = v.model_dump()
        else:
            out[field] = v
    return out


def accelerator_json(a: Accelerator) -> dict:
    return {"descriptor": "accelerator", **_model_dict(a)}


def link_json(link: Link) -> dict:
    return {"descriptor": "link", **_model_dict(link)}


def node_json(n: Node) -> dict:
    d = {"descriptor": "node", **_model_dict(n.spec)}
    d["scale_up_bw_per_device"] = {"value": n.scale_up_bw, "unit": "B/s",
                                   "source": "derived: scale_up link bandwidth x links_per_device"}
    d["scale_out_bw_per_device"] = {"value": n.scale_out_bw, "unit": "B/s",
                                    "source": "derived: scale_out link bandwidth x nics_per_device"}
    d["resolved"] = {
        "accelerator": accelerator_json(n.accelerator),
        "scale_up_link": link_json(n.scale_up_link),
        "scale_out_link": link_json(n.scale_out_link) if n.scale_out_link else None,
    }
    return d


def cluster_json(c: Cluster) -> dict:
    d = {"descriptor": "cluster", **_model_dict(c.spec)}
    d["num_devices"] = c.num_devices
    d["resolved"] = {"node": node_json(c.node)}
    return d


_TO_JSON = {"accelerators": accelerator_json, "links": link_json, "nodes": node_json, "clusters": cluster_json}


# ---------------------------------------------------------------- lookup

def _kind_of_file(path: Path) -> str:
    """Which kind a YAML file describes: its folder name, else its keys."""
    parent = path.resolve().parent.name
    if parent in _KINDS:
        return parent
    data = load_yaml(path)
    for key, kind in (("peak_flops", "accelerators"), ("bandwidth_per_direction", "links"),
                      ("scale_up", "nodes"), ("num_nodes", "clusters"), ("node", "clusters"),
                      ("accelerator", "nodes"), ("latency", "links"), ("memory_bandwidth", "accelerators")):
        if key in data:
            return kind
    raise InputError("cannot tell whether this is an accelerator, link, node or cluster "
                     "(expected a field such as peak_flops, bandwidth_per_direction, scale_up or num_nodes)",
                     file=path)


def find(name: str, kind: Optional[str] = None) -> tuple[str, Any]:
    """Resolve NAME (name, alias or YAML path) to ``(kind, loaded object)``."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise InputError("file not found", file=p)
        k = kind or _kind_of_file(p)
        return k, _KINDS[k][1](str(p))
    kinds = [kind] if kind else list(_KINDS)
    for k in kinds:
        directory, loader, noun = _KINDS[k]
        try:
            resolve(directory, name, what=noun)
        except NotFoundError:
            continue
        return k, loader(name)
    known = ", ".join(n for k in kinds for n in list_hardware()[k])
    what = _KINDS[kind][2] if kind else "accelerator, link, node or cluster"
    raise NotFoundError(f"unknown {what} {name!r}; known: {known}")


# ---------------------------------------------------------------- tables

def _fmt(x: Optional[float], scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x / scale:.4g}"


def _peak(a: Accelerator, dtype: str) -> Optional[float]:
    return a.peak_flops[dtype].value if dtype in a.peak_flops else None


def _rows(kind: str) -> list[dict]:
    rows = []
    for name in list_hardware()[kind]:
        obj = _KINDS[kind][1](name)
        if kind == "accelerators":
            rows.append({"name": obj.name, "vendor": obj.vendor, "kind": obj.kind,
                         "bf16_flops": _peak(obj, "bf16") or obj.peak("bf16"), "fp8_flops": _peak(obj, "fp8"),
                         "fp4_flops": _peak(obj, "fp4"), "hbm_bytes": obj.hbm_bytes, "hbm_bytes_per_s": obj.hbm_bw,
                         "sram_bytes": obj.sram.value, "compute_units": int(obj.compute_units.value),
                         "tdp_w": obj.tdp.value if obj.tdp else None})
        elif kind == "links":
            rows.append({"name": obj.name, "kind": obj.kind, "bytes_per_s_per_direction": obj.bw,
                         "latency_s": obj.alpha, "efficiency": obj.efficiency.value if obj.efficiency else None})
        elif kind == "nodes":
            su = obj.spec.scale_up
            rows.append({"name": obj.name, "accelerator": obj.accelerator.name, "devices": obj.devices,
                         "topology": su.topology + (f" {'x'.join(map(str, su.torus_dims))}" if su.torus_dims else ""),
                         "scale_up_link": obj.scale_up_link.name, "scale_up_bytes_per_s": obj.scale_up_bw,
                         "scale_out_link": obj.scale_out_link.name if obj.scale_out_link else None,
                         "scale_out_bytes_per_s": obj.scale_out_bw})
        else:
            rows.append({"name": obj.name, "node": obj.node.name, "num_nodes": obj.num_nodes,
                         "num_devices": obj.num_devices, "accelerator": obj.accelerator.name,
                         "fabric": obj.spec.fabric.topology, "oversubscription": obj.spec.fabric.oversubscription})
    return rows


def _table(kind: str, rows: list[dict]) -> None:
    if kind == "accelerators":
        cols = ["name", "bf16 TF", "fp8 TF", "fp4 TF", "HBM GiB", "HBM TB/s", "SRAM MiB", "units", "TDP W"]
        body = [[r["name"], _fmt(r["bf16_flops"], 1e12), _fmt(r["fp8_flops"], 1e12),
                 _fmt(r["fp4_flops"], 1e12), _fmt(r["hbm_bytes"], 2**30), _fmt(r["hbm_bytes_per_s"], 1e12),
                 _fmt(r["sram_bytes"], 2**20), str(r["compute_units"]), _fmt(r["tdp_w"])] for r in rows]
    elif kind == "links":
        cols = ["name", "kind", "GB/s per dir", "latency us", "efficiency"]
        body = [[r["name"], r["kind"], _fmt(r["bytes_per_s_per_direction"], 1e9), _fmt(r["latency_s"], 1e-6),
                 _fmt(r["efficiency"])] for r in rows]
    elif kind == "nodes":
        cols = ["name", "accelerator", "devices", "topology", "scale-up GB/s/dev", "scale-out GB/s/dev"]
        body = [[r["name"], r["accelerator"], str(r["devices"]), r["topology"],
                 f"{r['scale_up_link']} {_fmt(r['scale_up_bytes_per_s'], 1e9)}",
                 f"{r['scale_out_link']} {_fmt(r['scale_out_bytes_per_s'], 1e9)}" if r["scale_out_link"] else "-"]
                for r in rows]
    else:
        cols = ["name", "node", "nodes", "devices", "accelerator", "fabric", "oversub"]
        body = [[r["name"], r["node"], str(r["num_nodes"]), str(r["num_devices"]), r["accelerator"], r["fabric"],
                 _fmt(r["oversubscription"])] for r in rows]
    _print(kind, cols, body)


# ---------------------------------------------------------------- verbs

@hw_app.command("list")
def list_cmd(
    kind: Optional[Kind] = typer.Option(None, "--kind", "-k", help="Only this kind (default: all four)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (SI units) instead of tables."),
) -> None:
    """List shipped hardware descriptors with their key figures."""
    kinds = [kind.value] if kind else list(_KINDS)
    data = {k: _rows(k) for k in kinds}
    if as_json:
        echo_json(data)
        return
    for k in kinds:
        _table(k, data[k])


@hw_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Name, alias (h100, 910b) or path to a YAML descriptor."),
    kind: Optional[Kind] = typer.Option(None, "--kind", "-k", help="Look only among this kind."),
    as_json: bool = typer.Option(False, "--json", help="Print every field as JSON: SI value, unit and source."),
) -> None:
    """Show one descriptor: every number with its source; nodes and clusters with what they resolve to."""
    k, obj = find(name, kind.value if kind else None)
    d = _TO_JSON[k](obj)
    if as_json:
        echo_json(d)
        return
    _print_human(k, d)


def _print(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table whose first column (the name) never wraps; numbers right-aligned."""
    t = Table(title=title)
    for i, c in enumerate(columns):
        numeric = any(u in c for u in ("TF", "GiB", "TB/s", "MiB", "GB/s per", "us", "W", "units", "devices", "nodes",
                                       "efficiency", "oversub"))
        t.add_column(c, justify="right" if numeric else "left", no_wrap=(i == 0), overflow="fold")
    for r in rows:
        t.add_row(*r)
    console.print(t)


def _print_human(kind: str, d: dict) -> None:
    rows = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict) and "value" in v and "source" in v:
            rows.append([prefix, _human_value(v), v["source"]])
        elif isinstance(v, dict):
            for kk, vv in v.items():
                if kk == "resolved":
                    continue
                walk(f"{prefix}.{kk}" if prefix else kk, vv)
        elif v not in (None, "", [], {}):
            rows.append([prefix, ", ".join(map(str, v)) if isinstance(v, list) else str(v), ""])

    walk("", d)
    _print(f"{d['descriptor']} {d['name']}", ["field", "value", "source"], rows)
    if kind == "nodes":
        r = d["resolved"]
        typer.echo(f"accelerator: {r['accelerator']['name']}; scale-up link: {r['scale_up_link']['name']}; "
                   f"scale-out link: {r['scale_out_link']['name'] if r['scale_out_link'] else '-'} "
                   f"(details: simllm hw show NAME)")
    if kind == "clusters":
        typer.echo(f"node: {d['resolved']['node']['name']} (details: simllm hw show {d['node']})")


def _human_value(v: dict) -> str:
    written = v.get("as_written") or ""
    unit = v.get("unit", "")
    si = f"{v['value']:.6g} {unit}".strip() if unit not in ("count", "fraction") else f"{v['value']:.6g}"
    return f"{written} ({si})" if written and written != f"{v['value']:g}" else si


def register(app: typer.Typer) -> None:
    app.add_typer(hw_app, name="hw")
