"""``simllm run SCENARIO.yaml``: simulate one scenario, write requests.csv, steps.csv, summary.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..atomic import atomic_path, check_output_dir, check_output_file, write_text
from ..errors import InputError
from ..metrics.summary import request_columns, requests_table, step_columns, steps_table
from ..metrics import writers
from ..metrics.writers import CSV_MAX_REQUESTS, FORMATS, TableWriter, choose_format
from ._common import _clean, console, echo_json, print_table


def write_expert_loads(out: Path, pools, req) -> None:
    """For an expert-parallel run: expected tokens per expert and per device, per MoE layer, per EP pool.

    ``pools``: ``[(name, role, cost model)]``. A pool's tokens are those it serves, x top-k: a prefill pool's
    the prompts', a decode pool's the generated ones', a colocated deployment's both; split by the expert
    popularity the pool used and, per device, by its placement's replica shares (``expert_loads.csv``,
    ``device_loads.csv``, columns ``pool``, ``layer``, ``expert`` / ``device``, ``tokens``). Pools without
    expert parallelism write nothing.
    """
    import numpy as np
    import pandas as pd

    prompt = float(req["prompt_tokens"].sum())
    gen = float(req.get("generated_tokens", req["output_tokens"]).sum())
    el, dl = [], []
    for name, role, cost in pools:
        placement, pop = getattr(cost, "placement", None), getattr(cost, "popularity", None)
        if placement is None or pop is None:
            continue
        tokens = prompt if role == "prefill" else gen if role == "decode" else prompt + gen
        pop = np.asarray(pop, dtype=float)
        loads = pop / pop.sum(axis=1, keepdims=True) * tokens * cost.model.moe.top_k
        L, E = loads.shape
        el.append(pd.DataFrame({"pool": name, "layer": np.repeat(np.arange(L), E), "expert": np.tile(np.arange(E), L),
                                "tokens": loads.ravel()}))
        dev = placement.device_loads(loads)
        G = dev.shape[1]
        dl.append(pd.DataFrame({"pool": name, "layer": np.repeat(np.arange(L), G), "device": np.tile(np.arange(G), L),
                                "tokens": dev.ravel()}))
    if not el:
        return
    with atomic_path(out / "expert_loads.csv") as tmp:
        pd.concat(el, ignore_index=True).to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "device_loads.csv") as tmp:
        pd.concat(dl, ignore_index=True).to_csv(tmp, index=False, float_format="%.6g")


WRITE_CHUNK_ROWS = 1 << 16
"""Rows per chunk when writing a table from the result's arrays."""


def write_requests(out: Path, res, format: str, progress=None, chunk_rows: Optional[int] = None) -> str:
    """``requests.{format}`` from the result's arrays, ``chunk_rows`` rows at a time (``progress(rows)``
    after each chunk); written under a temporary name and renamed. Returns the file name."""
    fname = f"requests.{format}"
    chunk_rows = chunk_rows or WRITE_CHUNK_ROWS
    N = len(res.ids)
    with TableWriter(out / fname, format) as w:
        for lo in range(0, N, chunk_rows):
            w.write(request_columns(res, lo, min(lo + chunk_rows, N)))
            if progress is not None:
                progress(min(lo + chunk_rows, N))
        if N == 0:
            w.close(list(request_columns(res)))
    return fname


def write_steps(out: Path, res, format: str, chunk_rows: Optional[int] = None) -> str:
    """``steps.{format}`` from the step rows the result kept (a run that streamed them wrote them already)."""
    fname = f"steps.{format}"
    chunk_rows = chunk_rows or WRITE_CHUNK_ROWS
    steps = res.steps
    n = len(steps["replica"])
    with TableWriter(out / fname, format) as w:
        for lo in range(0, n, chunk_rows):
            w.write(step_columns({c: v[lo:lo + chunk_rows] for c, v in steps.items()}, res.pools))
        if n == 0:
            w.close(list(step_columns(steps, res.pools)))
    return fname


def write_outputs(out: Path, res, summary, *, format: str = "csv", steps_written: bool = False,
                  progress=None) -> list[str]:
    """Deterministic files: same inputs give byte-identical outputs. Each file is written under a
    temporary name and renamed, so a killed run leaves whole files or none. Returns the names written."""
    out.mkdir(parents=True, exist_ok=True)
    names = [write_requests(out, res, format, progress)]
    names.append(f"steps.{format}" if steps_written else write_steps(out, res, format))
    write_text(out / "summary.json", json.dumps(_clean(summary), indent=2, sort_keys=False) + "\n")
    return names + ["summary.json"]


def scenario_path(arg: Path) -> Path:
    """A scenario file, or the name of a shipped one (``llama3-8b-h100-azure-conv``)."""
    from ..config import resolve

    if arg.is_file() or arg.suffix in (".yaml", ".yml") or len(arg.parts) > 1:
        return arg
    return resolve("workloads/scenarios", str(arg), what="scenario")


def _fmt(x, scale=1.0, unit=""):
    return "-" if x is None else f"{x * scale:.4g}{unit}"


def print_summary(s: dict) -> None:
    rows = [
        ("requests", f"{s['completed']} completed, {s['rejected']} rejected, {s['preemptions']} preemptions"),
        ("simulated duration", _fmt(s["duration_s"], unit=" s")),
        ("throughput", f"{_fmt(s['request_throughput_per_s'])} req/s, {_fmt(s['output_tokens_per_s'])} output tok/s, "
                       f"{_fmt(s['input_tokens_per_s'])} input tok/s"),
    ]
    if s["saturated"]:
        sat = s["saturation"]
        rows.append(("SATURATED", f"arrivals {_fmt(sat['arrival_rate_per_s'])}/s > completions "
                                  f"{_fmt(sat['completion_rate_per_s'])}/s over the second half; queue grew by "
                                  f"{sat['backlog_growth']}: latencies are not meaningful (they grow with the run's "
                                  f"length); lower the load or add replicas"))
    else:
        for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")):
            st = s[key]
            rows.append((f"{label} mean / p50 / p90 / p99 (ms)",
                         " / ".join(_fmt(st[q], 1e3) for q in ("mean", "p50", "p90", "p99"))))
        slo = s["slo"]
        if slo["ttft_s"] is not None or slo["tpot_s"] is not None:
            rows.append(("goodput", f"{_fmt(s['goodput_requests_per_s'])} req/s; SLO attainment "
                                    f"{_fmt(s['slo_attainment'], 100, '%')}"))
    rows += [
        ("MFU / MBU / busy", f"{_fmt(s['mfu'], 100, '%')} / {_fmt(s['mbu'], 100, '%')} / "
                             f"{_fmt(s['busy_fraction'], 100, '%')}"),
        ("KV utilisation (mean)", _fmt(s["kv_utilization_mean"], 100, "%")),
    ]
    sp = s.get("speculative")
    if sp:
        rows.append(("speculative tokens / step", f"{_fmt(sp['tokens_per_step'])} (expected "
                                                  f"{_fmt(sp['expected_tokens_per_step'])}); acceptance rate "
                                                  f"{_fmt(sp['acceptance_rate'], 100, '%')}"))
    kt = s.get("kv_tiers")
    if kt:
        rows.append(("prefix hits by tier", ", ".join(f"{k} {_fmt(v['hit_rate'], 100, '%')}" for k, v in kt.items()
                                                      if isinstance(v, dict))))
    rows += [
        ("cost per Mtok out", _fmt(s["cost_per_million_output_tokens_usd"], unit=" USD")),
        ("energy per output token", _fmt(s["energy_per_output_token_j"], unit=" J")
         if s["energy_per_output_token_j"] is not None else f"- ({s['energy_note']})"),
    ]
    print_table(s.get("scenario") or "summary", ["metric", "value"], rows, justify_numbers=False)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        scenario: Path = typer.Argument(..., help="scenario YAML, or the name of a shipped one (workloads/scenarios/)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for requests.csv, steps.csv, summary.json"),
        seed: Optional[int] = typer.Option(None, "--seed", min=0, help="override the scenario's seed"),
        set_: List[str] = typer.Option([], "--set", help="override a field: deployment.tp=4 (value parsed as YAML)"),
        json_: bool = typer.Option(False, "--json", help="print the summary as JSON instead of a table"),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                                help="progress bar (default: on when stderr is a terminal)"),
        trace_out: Optional[Path] = typer.Option(None, "--trace-out",
                                                 help="write a Chrome/Perfetto trace (JSON; open in ui.perfetto.dev)"),
        format: str = typer.Option("auto", "--format",
                                   help=f"auto | csv | parquet: format of requests.* and steps.* in --out (auto: CSV "
                                        f"up to {CSV_MAX_REQUESTS:,} requests, Parquet above)"),
    ) -> None:
        """Simulate one scenario and summarise it (TTFT, TPOT, throughput, goodput, MFU, cost, energy)."""
        from ..scenario import load_scenario, prepare, simulate_result

        if format not in FORMATS:
            raise InputError(f"unknown format {format!r} ({', '.join(FORMATS)})", field="--format")
        if format != "auto" and out is None:
            raise InputError("--format applies to the files in --out; give --out too", field="--format")
        if format != "csv":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                if format == "parquet":
                    raise InputError("parquet output needs pyarrow (pip install pyarrow)", field="--format") from None
                format = "csv"  # auto without pyarrow
        if out is not None:
            check_output_dir(out)
        if trace_out is not None:
            check_output_file(trace_out)
        scn, path = load_scenario(scenario_path(scenario), set_)
        prep = prepare(scn, file=path, seed=seed)
        show = sys.stderr.isatty() if progress is None else progress
        n = getattr(prep.workload, "num_requests", None) or len(prep.workload)
        fmt = choose_format(format, n)
        bar = None
        cb = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=n, unit="req", file=sys.stderr, dynamic_ncols=True, leave=False)

            def cb(t: float, done: int) -> None:
                bar.set_postfix_str(f"sim {t:,.0f} s", refresh=False)
                bar.update(done - bar.n)  # redraws at most every 0.1 s

        # step rows go to disk as the run makes them (a Perfetto trace needs them all in memory)
        steps_w = TableWriter(out / f"steps.{fmt}", fmt) if out is not None and trace_out is None else None

        def sink(cols: dict, pools: list) -> None:
            steps_w.write(step_columns(cols, pools))

        try:
            res, summary = simulate_result(prep, seed=seed, progress=cb, steps_sink=sink if steps_w else None)
            if bar is not None:
                bar.close()
                bar = None
            written: list[str] = []
            if out is not None:
                wbar = None
                if show:
                    from tqdm import tqdm

                    wbar = tqdm(total=len(res.ids), unit="row", desc=f"writing {out}/requests.{fmt}", file=sys.stderr,
                                dynamic_ncols=True, leave=False)
                try:
                    if steps_w is not None:
                        steps_w.close(list(step_columns(res.steps, res.pools)))
                    written = write_outputs(out, res, summary, format=fmt, steps_written=steps_w is not None,
                                            progress=(lambda r: wbar.update(r - wbar.n)) if wbar else None)
                finally:
                    if wbar is not None:
                        wbar.close()
                write_expert_loads(out, [(p.name, p.role, p.cost) for p in (prep.pools or [])] or
                                   [("deployment", "colocated", prep.cost)],
                                   {"prompt_tokens": res.prompt_tokens, "output_tokens": res.output_tokens,
                                    "generated_tokens": res.generated_tokens})
                written += [n for n in ("expert_loads.csv", "device_loads.csv") if (out / n).exists()]
        except BaseException:
            if steps_w is not None:
                steps_w.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        if trace_out is not None:
            from ..report.perfetto import write_trace

            with atomic_path(trace_out) as tmp:
                write_trace(requests_table(res), steps_table(res), tmp)
        note = ""
        if out is not None and format == "auto" and fmt == "parquet":
            note = f" (Parquet: more than {writers.CSV_MAX_REQUESTS:,} requests; --format csv writes CSV)"
        if json_:
            echo_json(summary)
            if written:
                typer.echo(f"wrote {out}/{', '.join(written)}{note}", err=True)
        else:
            print_summary(summary)
            if out is not None:
                console.print(f"wrote {out}/{', '.join(written)}{note}")
