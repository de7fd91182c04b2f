"""``simllm model``: list, show and import model descriptors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from ..config import validate
from ..errors import InputError
from ..model import ModelSpec, list_models, load_model, model_path, param_breakdown
from ._common import echo_json, print_table


def _summary(spec: ModelSpec) -> dict:
    m = spec.moe
    return {
        "name": spec.name,
        "family": spec.family,
        "layers": spec.num_layers,
        "hidden": spec.hidden_size,
        "attention": spec.attention.kind,
        "experts": f"{m.num_experts}x{m.top_k}" + (f"+{m.num_shared_experts}" if m.num_shared_experts else "") if m else "-",
        "total_params": spec.total_params,
        "active_params": spec.active_params,
        "dtype": spec.dtype,
    }


def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the shipped model descriptors (workloads/models/)."""
    rows = [_summary(load_model(n)) for n in list_models()]
    if json_out:
        echo_json(rows)
        return
    # experts: routed x top_k + shared
    print_table("models", ["name", "layers", "attn", "experts", "total B", "active B", "dtype"],
                [[r["name"], r["layers"], r["attention"], r["experts"],
                  f"{r['total_params'] / 1e9:.1f}", f"{r['active_params'] / 1e9:.1f}", r["dtype"]] for r in rows])


def _show_dict(spec: ModelSpec, path: Path) -> dict:
    d = spec.model_dump(exclude_none=True)
    pub = d.pop("published_params", None)
    d["file"] = str(path)
    d["total_params"] = spec.total_params
    d["active_params"] = spec.active_params
    d["kv_bytes_per_token"] = spec.kv_cache_bytes_per_token()
    d["weight_bytes"] = spec.weight_bytes()
    d["published_params"] = pub
    d["param_breakdown"] = param_breakdown(spec)
    return d


def show_cmd(name: str = typer.Argument(..., help="Model name, alias, or path to a descriptor YAML."),
             json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text.")) -> None:
    """Show one descriptor with its parameter counts, KV-cache and weight sizes."""
    spec = load_model(name)
    d = _show_dict(spec, model_path(name))
    if json_out:
        echo_json(d)
        return
    desc = {k: v for k, v in d.items() if k not in ("param_breakdown", "published_params", "total_params",
                                                   "active_params", "kv_bytes_per_token", "weight_bytes")}
    typer.echo(yaml.safe_dump(desc, sort_keys=False, width=100).rstrip())
    pub = spec.published_params
    rows = [["total params", f"{spec.total_params / 1e9:.3f} B", f"{pub.total / 1e9:.3f} B" if pub else "-"],
            ["active params", f"{spec.active_params / 1e9:.3f} B",
             f"{pub.active / 1e9:.3f} B" if pub and pub.active else "-"],
            [f"KV cache / token ({spec.dtype})", f"{spec.kv_cache_bytes_per_token():,.0f} B", "-"],
            [f"weights ({spec.dtype})", f"{spec.weight_bytes() / 1e9:.2f} GB", "-"]]
    print_table(spec.name, ["name", "simllm", "published"], rows, justify_numbers=False)
    if pub:
        typer.echo(f"published: {pub.source} (active counts embeddings: {pub.active_embeddings})")
    b = param_breakdown(spec)
    print_table("parameters by component", ["name", "params", "share"],
                [[k, f"{v / 1e9:.4f} B", f"{100 * v / b['total']:.2f} %"] for k, v in b.items()
                 if not k.endswith("_per_layer") and k != "expert" and v])


def import_cmd(config: Path = typer.Argument(..., help="Hugging Face config.json (or the folder holding it)."),
               name: Optional[str] = typer.Option(None, "--name", help="Descriptor name (default: from the file)."),
               out: Optional[Path] = typer.Option(None, "--out", help="Write the YAML here (default: print it).")) -> None:
    """Turn a Hugging Face config.json into a descriptor YAML (validated before writing)."""
    from ..hf_import import import_hf_config

    data = import_hf_config(config, name=name)
    spec = validate(ModelSpec, data, file=config)  # same checks as a shipped descriptor
    text = yaml.safe_dump(data, sort_keys=False, width=100)
    if out is None:
        typer.echo(text.rstrip())
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    except OSError as e:
        raise InputError(f"cannot write: {e.strerror}", file=out) from None
    typer.echo(f"wrote {out} ({spec.name}: {spec.total_params / 1e9:.2f} B params, "
               f"{spec.active_params / 1e9:.2f} B active)", err=True)


def register(app: typer.Typer) -> None:
    model_app = typer.Typer(name="model", no_args_is_help=True,
                            help="Model descriptors: list, show, import a Hugging Face config.json.")
    model_app.command("list")(list_cmd)
    model_app.command("show")(show_cmd)
    model_app.command("import")(import_cmd)
    try:
        from .model_explain import register_explain
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.model_explain":
            raise
    else:
        register_explain(model_app)
    app.add_typer(model_app, name="model")
