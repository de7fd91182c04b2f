"""Reports: plots and one HTML page from a sweep's results table or a single run's outputs.

``build_report(path, out_dir)`` accepts a sweep output folder (``results.csv``), a results
CSV itself, or a run folder (``requests.csv``, ``steps.csv``, ``summary.json``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from . import plots


def _pick_rate_col(df: pd.DataFrame) -> str | None:
    params = [c for c in df.columns if c.startswith("param.")]
    for c in params:
        if "rate" in c.split(".")[-1]:
            return c
    return plots.col(df, "rate")


def build_report(path: str | Path, out_dir: str | Path | None = None, *, title: str | None = None) -> Path:
    path = Path(path)
    if path.is_dir() and (path / "results.csv").exists():
        return sweep_report(path / "results.csv", Path(out_dir or path / "report"), title=title)
    if path.is_file() and path.suffix == ".csv":
        return sweep_report(path, Path(out_dir or path.parent / "report"), title=title)
    if path.is_dir() and (path / "steps.csv").exists():
        return run_report(path, Path(out_dir or path / "report"), title=title)
    raise InputError("expected a sweep folder (results.csv), a results CSV, or a run folder (steps.csv, requests.csv)",
                     file=path)


def sweep_report(results_csv: Path, out_dir: Path, *, title: str | None = None) -> Path:
    df = pd.read_csv(results_csv)
    if df.empty:
        raise InputError("no rows", file=results_csv)
    rate_col = _pick_rate_col(df)
    params = [c for c in df.columns if c.startswith("param.") and c != rate_col and c != "param.seed"]
    group_cols = [c for c in params if df[c].nunique() > 1]
    imgs: list[Path] = []
    if rate_col:
        imgs += plots.latency_vs_rate(df, rate_col, group_cols, out_dir)
        imgs += plots.attainment_vs_rate(df, rate_col, group_cols, out_dir)
    imgs += plots.goodput_per_device(df, group_cols, out_dir)
    imgs += plots.cost_latency_pareto(df, group_cols, out_dir)
    n_fail = int((df.get("status", "ok") != "ok").sum()) if "status" in df else 0
    shown = [c for c in df.columns if c.startswith("param.")] + [
        c for c in (plots.col(df, m) for m in ("throughput", "ttft_p99", "tpot_p99", "attainment", "goodput", "cost"))
        if c] + [c for c in ("status", "error", "wall_s") if c in df]
    body = [f"<p>{len(df)} points, {n_fail} failed. Source: <code>{html.escape(str(results_csv))}</code></p>"]
    return _write_html(out_dir, title or "simllm sweep report", imgs, df[shown], body)


def run_report(run_dir: Path, out_dir: Path, *, title: str | None = None) -> Path:
    steps = pd.read_csv(run_dir / "steps.csv")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    caps = summary.get("kv_capacity_blocks", summary.get("kv_blocks_per_replica"))
    caps = {int(k): v for k, v in caps.items()} if isinstance(caps, dict) else (
        {r: caps for r in steps.replica.unique()} if isinstance(caps, (int, float)) else None)
    imgs = plots.utilization_over_time(steps, out_dir, kv_capacity_blocks=caps)
    imgs += plots.batch_size_histogram(steps, out_dir)
    for fname, col, what, name in (("expert_loads.csv", "expert", "expert (routing popularity)", "expert_load_heatmap"),
                                   ("device_loads.csv", "device", "device (placement)", "device_load_heatmap")):
        path = run_dir / fname
        if not path.exists():
            continue
        df = pd.read_csv(path)
        groups = list(df.groupby("pool", sort=False)) if "pool" in df.columns else [(None, df)]
        for pool, g in groups:
            mat = g.pivot_table(index="layer", columns=col, values="tokens", aggfunc="sum").fillna(0).to_numpy()
            one = len(groups) == 1
            imgs += plots.expert_load_heatmap(
                mat, out_dir, title=f"Expected tokens per {what}" + ("" if pool is None else f", pool {pool}"),
                xlabel=col, name=name if one else f"{name}_{pool}")
    flat = pd.json_normalize(summary, sep=".").T.reset_index()
    flat.columns = ["metric", "value"]
    return _write_html(out_dir, title or f"simllm run report: {run_dir.name}", imgs, flat, [])


def _write_html(out_dir: Path, title: str, imgs: list[Path], table: pd.DataFrame, body: list[str]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = [p for p in imgs if p.suffix == ".png"]
    figs = "\n".join(
        f'<figure><img src="{p.name}" alt="{p.stem}"><figcaption>{p.stem.replace("_", " ")} '
        f'(<a href="{p.with_suffix(".svg").name}">SVG</a>)</figcaption></figure>' for p in pngs)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
figure{{margin:1.5em 0}} img{{max-width:100%}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
{''.join(body)}
{figs}
<h2>Table</h2>
{table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")}
</body></html>"""
    out = out_dir / "index.html"
    out.write_text(page)
    return out
