"""Plots people read: every axis labelled with its unit, legends outside the data, PNG + SVG.

Sweep-level plots take the tidy results table of ``simllm sweep`` (one row per point);
run-level plots take one run's ``steps.csv`` / ``requests.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Summary metric names: the first column present wins (flattened summary.json keys).
METRICS = {
    "ttft_p50": ("ttft_s.p50", "ttft_p50_s"),
    "ttft_p99": ("ttft_s.p99", "ttft_p99_s"),
    "tpot_p50": ("tpot_s.p50", "tpot_p50_s"),
    "tpot_p99": ("tpot_s.p99", "tpot_p99_s"),
    "e2e_p99": ("e2e_s.p99", "e2e_p99_s"),
    "attainment": ("slo_attainment", "slo.attainment"),
    "goodput": ("goodput_requests_per_s", "goodput_rps"),
    "throughput": ("request_throughput_per_s", "requests_per_s"),
    "cost": ("cost_per_million_output_tokens_usd",),
    "devices": ("devices", "num_devices"),
    "rate": ("saturation.arrival_rate_per_s", "offered_rate_rps"),
}


def col(df: pd.DataFrame, metric: str) -> str | None:
    for c in METRICS[metric]:
        if c in df.columns:
            return c
    return None


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=130 if ext == "png" else None, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def _labels(df: pd.DataFrame, group_cols: Sequence[str]) -> pd.Series:
    if not group_cols:
        return pd.Series(["all"] * len(df), index=df.index)
    return df[list(group_cols)].astype(str).apply(
        lambda r: ", ".join(f"{c.split('.')[-1]}={v}" for c, v in zip(group_cols, r)), axis=1)


def _saturated(df: pd.DataFrame) -> pd.Series:
    """True where the run was overloaded (its latencies grow with the run length, not the load)."""
    if "saturated" not in df:
        return pd.Series(False, index=df.index)
    return df["saturated"].astype(str).str.lower().isin(("true", "1"))


def _legend(ax, n: int) -> None:
    if n > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)


def latency_vs_rate(df: pd.DataFrame, rate_col: str, group_cols: Sequence[str], out_dir: Path) -> list[Path]:
    """TTFT and TPOT (p50 solid, p99 dashed) against request rate, one colour per configuration."""
    ok = df[df.get("status", "ok") == "ok"].copy()
    labels = _labels(ok, group_cols)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (m50, m99, title) in zip(axes, (("ttft_p50", "ttft_p99", "TTFT"), ("tpot_p50", "tpot_p99", "TPOT"))):
        c50, c99 = col(ok, m50), col(ok, m99)
        for i, (lab, g) in enumerate(ok.groupby(labels, sort=True)):
            g = g.sort_values(rate_col)
            color = f"C{i % 10}"
            if c50:
                ax.plot(g[rate_col], g[c50] * 1e3, "-o", color=color, ms=3, label=f"{lab} p50")
            if c99:
                ax.plot(g[rate_col], g[c99] * 1e3, "--s", color=color, ms=3, label=f"{lab} p99")
            sat = _saturated(g)
            for c in (c50, c99):
                if c and sat.any():
                    ax.plot(g[rate_col][sat], g[c][sat] * 1e3, "x", color="k", ms=7,
                            label="saturated (queue grows)" if i == 0 and c == c50 else None)
        ax.set_xlabel("request rate (requests/s)")
        ax.set_ylabel(f"{title} (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{title} vs request rate (solid p50, dashed p99)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    _legend(axes[1], labels.nunique() * 2)
    fig.tight_layout()
    return _save(fig, out_dir, "latency_vs_rate")


def attainment_vs_rate(df: pd.DataFrame, rate_col: str, group_cols: Sequence[str], out_dir: Path,
                       target: float | None = 0.9) -> list[Path]:
    ok = df[df.get("status", "ok") == "ok"]
    c = col(ok, "attainment")
    if c is None:
        return []
    labels = _labels(ok, group_cols)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (lab, g) in enumerate(ok.groupby(labels, sort=True)):
        g = g.sort_values(rate_col)
        ax.plot(g[rate_col], g[c] * 100, "-o", ms=3, color=f"C{i % 10}", label=lab)
    if target:
        ax.axhline(target * 100, color="grey", ls=":", lw=1)
        ax.annotate(f"target {target:.0%}", xy=(0.01, target * 100), xycoords=("axes fraction", "data"),
                    va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("request rate (requests/s)")
    ax.set_ylabel("SLO attainment (% of requests)")
    ax.set_ylim(0, 105)
    ax.set_title("SLO attainment vs request rate", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, labels.nunique())
    fig.tight_layout()
    return _save(fig, out_dir, "slo_attainment_vs_rate")


def goodput_per_device(df: pd.DataFrame, group_cols: Sequence[str], out_dir: Path) -> list[Path]:
    ok = df[df.get("status", "ok") == "ok"]
    cg, cd = col(ok, "goodput"), col(ok, "devices")
    if cg is None:
        return []
    labels = _labels(ok, group_cols)
    per_dev = ok[cg] / (ok[cd] if cd else 1.0)
    best = per_dev.groupby(labels).max().sort_values()
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(best) + 1)))
    ax.barh(best.index, best.values, color="C0")
    for y, v in enumerate(best.values):
        ax.annotate(f"{v:.3g}", (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("best goodput per device (requests/s meeting the SLO, per device)")
    ax.set_title("Goodput per device (best over the swept rates)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return _save(fig, out_dir, "goodput_per_device")


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated in (lower x, lower y), sorted by x."""
    order = np.lexsort((y, x))
    front, best = [], np.inf
    for i in order:
        if y[i] < best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def cost_latency_pareto(df: pd.DataFrame, group_cols: Sequence[str], out_dir: Path,
                        latency: str = "e2e_p99") -> list[Path]:
    ok = df[df.get("status", "ok") == "ok"]
    cc, cl = col(ok, "cost"), col(ok, latency)
    if cc is None or cl is None:
        return []
    ok = ok[np.isfinite(ok[cc].astype(float)) & np.isfinite(ok[cl].astype(float))]
    if ok.empty:
        return []
    labels = _labels(ok, group_cols)
    sat = _saturated(ok)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (lab, g) in enumerate(ok.groupby(labels, sort=True)):
        s = sat.loc[g.index]
        ax.scatter(g[cl][~s], g[cc][~s], s=18, color=f"C{i % 10}", label=lab, alpha=0.8)
        if s.any():
            ax.scatter(g[cl][s], g[cc][s], s=30, color=f"C{i % 10}", marker="x", alpha=0.8)
    stable = ok[~sat]
    if len(stable):
        x, y = stable[cl].to_numpy(float), stable[cc].to_numpy(float)
        f = pareto_front(x, y)
        ax.plot(x[f], y[f], "k-", lw=1.2, label="Pareto front (unsaturated runs)")
    if sat.any():
        ax.scatter([], [], marker="x", color="grey", label="saturated (excluded)")
    ax.set_xscale("log")
    ax.set_xlabel(f"{latency.replace('_', ' ')} latency (s, log scale)")
    ax.set_ylabel("cost (USD per million output tokens)")
    ax.set_title("Cost vs tail latency", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, labels.nunique() + 1)
    fig.tight_layout()
    return _save(fig, out_dir, "cost_latency_pareto")


def utilization_over_time(steps: pd.DataFrame, out_dir: Path, kv_capacity_blocks: dict | None = None,
                          bins: int = 120) -> list[Path]:
    """Busy fraction and KV blocks in use per replica over simulated time."""
    if steps.empty:
        return []
    t_end = float((steps.start_s + steps.duration_s).max())
    edges = np.linspace(0, t_end, bins + 1)
    width = edges[1] - edges[0]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for i, (r, g) in enumerate(steps.groupby("replica")):
        s, e = g.start_s.to_numpy(), (g.start_s + g.duration_s).to_numpy()
        busy = np.zeros(bins)
        for k in range(bins):  # overlap of [s,e) with each bin, vectorised over steps
            lo, hi = edges[k], edges[k + 1]
            busy[k] = np.clip(np.minimum(e, hi) - np.maximum(s, lo), 0, None).sum() / width
        mid = (edges[:-1] + edges[1:]) / 2
        pool = f" ({g['pool'].iloc[0]})" if "pool" in g.columns and g["pool"].nunique() == 1 and \
            steps["pool"].nunique() > 1 else ""
        ax1.plot(mid, busy * 100, lw=1, color=f"C{i % 10}", label=f"replica {r}{pool}")
        if "kv_blocks_used" in g:
            cap = (kv_capacity_blocks or {}).get(r)
            y = g.kv_blocks_used / cap * 100 if cap else g.kv_blocks_used
            ax2.step(g.start_s, y, where="post", lw=0.8, color=f"C{i % 10}")
            ax2.set_ylabel("KV cache used (% of blocks)" if cap else "KV blocks in use (blocks)")
    ax1.set_ylabel("busy (% of time)")
    ax1.set_ylim(0, 105)
    ax1.set_title("Replica utilization and KV-cache use over time", fontsize=10)
    ax2.set_xlabel("simulated time (s)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    _legend(ax1, steps.replica.nunique())
    fig.tight_layout()
    return _save(fig, out_dir, "utilization_over_time")


def batch_size_histogram(steps: pd.DataFrame, out_dir: Path) -> list[Path]:
    if steps.empty or "batch_size" not in steps:
        return []
    fig, ax = plt.subplots(figsize=(7, 3.8))
    top = int(steps.batch_size.max())
    bins = np.arange(0.5, top + 1.5, max(1, top // 60))
    # one series per pool where a run has several (prefill and decode batches are different populations)
    groups = list(steps.groupby("pool", sort=False)) if "pool" in steps and steps["pool"].nunique() > 1 else \
        [(None, steps)]
    for i, (pool, g) in enumerate(groups):
        ax.hist(g.batch_size, bins=bins, weights=g["n_steps"] if "n_steps" in g else None, color=f"C{i}",
                alpha=0.8 if pool is not None else 1.0, label=None if pool is None else f"pool {pool}")
    if len(groups) > 1:
        ax.legend(fontsize=8)
    ax.set_xlabel("batch size (sequences per step)")
    ax.set_ylabel("steps")
    ax.set_title("Batch-size distribution", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_dir, "batch_size_hist")


def expert_load_heatmap(loads: np.ndarray, out_dir: Path, title: str = "Expert load",
                        xlabel: str = "expert", name: str = "expert_load_heatmap") -> list[Path]:
    """``loads[layer, expert or device]`` as a heatmap of load relative to the layer mean."""
    loads = np.asarray(loads, dtype=float)
    rel = loads / np.maximum(loads.mean(axis=1, keepdims=True), 1e-12)
    fig, ax = plt.subplots(figsize=(10, max(3, 0.08 * loads.shape[0] + 1.5)))
    # the scale starts at 0 and spans at least 0-2x the mean, so a balanced layer reads as uniform
    im = ax.imshow(rel, aspect="auto", cmap="magma", interpolation="nearest", vmin=0.0,
                   vmax=max(2.0, float(np.nanmax(rel))))
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("load / layer mean (dimensionless)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MoE layer")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, name)
