"""``simllm trace``: statistics of request traces and synthetic trace generation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import typer

from ..errors import InputError
from ._common import echo_json, print_table

trace_app = typer.Typer(help="Inspect request traces and generate synthetic ones.", no_args_is_help=True)


@trace_app.command("stats")
def stats(
    file: Path = typer.Argument(..., help="Trace file (BurstGPT CSV, Azure CSV, Mooncake JSONL, Vidur CSV)."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="burstgpt | azure | mooncake | vidur (default: detect)."),
    model: Optional[str] = typer.Option(None, help="BurstGPT: keep only this Model (ChatGPT, GPT-4)."),
    log_type: Optional[str] = typer.Option(None, "--log-type", help="BurstGPT: keep only this Log Type."),
    skip: bool = typer.Option(False, "--skip", help="Drop malformed rows (counted) instead of failing."),
    sort: bool = typer.Option(False, "--sort", help="Sort unsorted timestamps instead of failing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Count, duration, rate, inter-arrival CV, length percentiles and fitted generator parameters."""
    from ..workload.readers import read_trace
    from ..workload.stats import fitted_generator, trace_stats

    tr = read_trace(file, format, on_error="skip" if skip else "raise", sort=sort, model=model, log_type=log_type)
    typer.echo(f"format: {tr.format} ({tr.detected})" + (f"; dropped: {', '.join(f'{v} {k}' for k, v in tr.dropped.items())}"
                                                      if tr.dropped else ""), err=True)
    st = trace_stats(tr.df)
    warn = st["fit"]["arrivals"].get("mle", {}).get("warning")
    if warn:
        typer.echo(f"warning: Gamma fit of inter-arrival gaps: {warn}", err=True)
    st = {"file": str(file), "format": tr.format, "dropped": tr.dropped, **st, "generator": fitted_generator(st)}
    if as_json:
        echo_json(st)
        return
    f = st["fit"]
    print_table(f"{file} ({tr.format})", ["name", "value"], [
        ("requests", str(st["count"])),
        ("dropped", ", ".join(f"{k}={v}" for k, v in tr.dropped.items()) or "none"),
        ("duration_s", st["duration_s"]),
        ("rate_per_s", st["rate_per_s"]),
        ("interarrival_cv", st["interarrival_cv"]),
        ("gamma shape / scale_s", f"{f['arrivals']['shape']:.4g} / {f['arrivals']['scale_s']:.4g}"),
        ("log length correlation", st["log_length_correlation"]),
    ], justify_numbers=False)
    rows = []
    for what in ("prompt_tokens", "output_tokens"):
        d = st[what]
        ln = f["prompt_lognormal" if what == "prompt_tokens" else "output_lognormal"]
        rows.append((what, d["p50"], d["p90"], d["p99"], d["mean"], d["max"], ln["mu"], ln["sigma"]))
    print_table("lengths (tokens) and lognormal fit", ["name", "p50", "p90", "p99", "mean", "max", "mu", "sigma"], rows)


def _parse_mix(text: str) -> tuple[list[str], np.ndarray]:
    names, weights = [], []
    for part in text.split(","):
        name, _, w = part.partition(":")
        try:
            weights.append(float(w) if w else 1.0)
        except ValueError:
            raise InputError(f"expected NAME[:WEIGHT],... got {text!r}", field="--model") from None
        names.append(name.strip())
    wa = np.asarray(weights, dtype=float)
    if not np.isfinite(wa).all() or (wa < 0).any() or wa.sum() <= 0 or not all(names):
        raise InputError(f"expected NAME[:WEIGHT],... with positive weights, got {text!r}", field="--model")
    return names, wa / wa.sum()


@trace_app.command("generate")
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Output CSV (BurstGPT format)."),
    num: Optional[int] = typer.Option(None, "--num", "-n", help="Number of requests (default 1000 unless --duration)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Generate requests for this many seconds instead."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Mean requests per second (default 1, or fitted)."),
    cv: Optional[float] = typer.Option(None, "--cv", help="Inter-arrival coefficient of variation (1 = Poisson; >1 bursty)."),
    amplitude: float = typer.Option(0.0, "--amplitude", help="Relative amplitude of a sinusoidal rate cycle, in [0, 1)."),
    period: Optional[float] = typer.Option(None, "--period", help="Period of the rate cycle in seconds (with "
                                                                     "--amplitude; default 86400)."),
    lengths: str = typer.Option("lognormal", "--lengths", help="lognormal | zipf | empirical (with --fit)."),
    prompt_median: float = typer.Option(512, "--prompt-median", help="lognormal: median prompt tokens."),
    prompt_sigma: float = typer.Option(1.0, "--prompt-sigma", help="lognormal: sigma of log prompt tokens."),
    output_median: float = typer.Option(128, "--output-median", help="lognormal: median output tokens."),
    output_sigma: float = typer.Option(1.0, "--output-sigma", help="lognormal: sigma of log output tokens."),
    prompt_theta: float = typer.Option(1.1, "--prompt-theta", help="zipf: exponent for prompt tokens."),
    output_theta: float = typer.Option(1.1, "--output-theta", help="zipf: exponent for output tokens."),
    prompt_range: str = typer.Option("1:8192", "--prompt-range", help="zipf: MIN:MAX prompt tokens."),
    output_range: str = typer.Option("1:2048", "--output-range", help="zipf: MIN:MAX output tokens."),
    correlation: float = typer.Option(0.0, "--correlation", help="Correlation of log prompt and log output lengths."),
    fit: Optional[Path] = typer.Option(None, "--fit", help="Fit rate, cv and lengths to this trace (explicit options still win)."),
    fit_format: Optional[str] = typer.Option(None, "--format", help="Format of the --fit trace (default: detect)."),
    model: str = typer.Option("ChatGPT", "--model", help="Model label, or a mix like 'ChatGPT:0.8,GPT-4:0.2'."),
    log_type: str = typer.Option("Conversation log", "--log-type", help="Log Type label ('Conversation log' | 'API log')."),
    fail_fraction: float = typer.Option(0.0, "--fail-fraction", help="Fraction of rows written as failed (Response tokens 0)."),
    append: bool = typer.Option(False, "--append", help="Merge with the rows already in --out (sorted by Timestamp)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed."),
) -> None:
    """Write a synthetic trace in BurstGPT CSV format from a generator (or one fitted to a trace)."""
    from ..config import validate
    from ..workload.readers import read_trace
    from ..workload.spec import WorkloadSpec, build_table
    from ..workload.stats import fitted_generator, trace_stats, write_burstgpt

    from ..atomic import check_output_file

    check_output_file(out)
    if num is not None and num < 1:
        raise InputError(f"expected a positive number of requests, got {num}", field="--num")
    g: dict = {"arrivals": {"process": "gamma", "rate": 1.0, "cv": 1.0}}
    if fit is not None:
        st = trace_stats(read_trace(fit, fit_format).df)
        g = fitted_generator(st)
        if lengths == "empirical":
            g["lengths"] = {"kind": "empirical", "trace": str(fit.resolve()), "format": fit_format}
    elif lengths == "empirical":
        raise InputError("--lengths empirical needs --fit TRACE", field="--lengths")
    if rate is not None:
        g["arrivals"]["rate"] = rate
    if cv is not None:
        g["arrivals"]["cv"] = cv
    if period is not None and not amplitude:
        raise InputError("--period sets the period of the rate cycle: give --amplitude too", field="--period")
    if fit_format is not None and fit is None:
        raise InputError("--format is the format of the --fit trace: give --fit too", field="--format")
    if amplitude:
        g["arrivals"].update(amplitude=amplitude, period_s=86400.0 if period is None else period)

    def rng_of(text: str, name: str) -> tuple[int, int]:
        try:
            lo, hi = (int(x) for x in text.split(":"))
        except ValueError:
            raise InputError(f"expected MIN:MAX integers, got {text!r}", field=name) from None
        return lo, hi

    if lengths == "zipf":
        (pl, ph), (ol, oh) = rng_of(prompt_range, "--prompt-range"), rng_of(output_range, "--output-range")
        g["lengths"] = {"kind": "zipf", "prompt_theta": prompt_theta, "prompt_min": pl, "prompt_max": ph,
                        "output_theta": output_theta, "output_min": ol, "output_max": oh, "correlation": correlation}
    elif lengths == "lognormal" and fit is None:
        g["lengths"] = {"kind": "lognormal", "prompt_median": prompt_median, "prompt_sigma": prompt_sigma,
                        "output_median": output_median, "output_sigma": output_sigma, "correlation": correlation}
    elif lengths not in ("lognormal", "empirical"):
        raise InputError(f"unknown length distribution {lengths!r} (lognormal, zipf, empirical)", field="--lengths")
    if duration is not None:
        if num is not None:
            raise InputError("give --num or --duration, not both", field="--duration")
        g["duration_s"] = duration
    else:
        g["num_requests"] = num if num is not None else 1000
    if not 0.0 <= fail_fraction < 1.0:
        raise InputError(f"expected a fraction in [0, 1), got {fail_fraction}", field="--fail-fraction")
    spec = validate(WorkloadSpec, {"generator": g})
    df = build_table(spec, seed=seed)
    rng = np.random.default_rng([seed, 1])  # labels and failures: independent of the stream itself
    names, w = _parse_mix(model)
    df["model"] = np.asarray(names, dtype=object)[rng.choice(len(names), size=len(df), p=w)]
    df["log_type"] = log_type
    if fail_fraction:
        failed = rng.random(len(df)) < fail_fraction
        df.loc[failed, "output_tokens"] = 0
    if append and out.is_file():
        try:
            old = pd.read_csv(out)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise InputError(f"--append merges with a BurstGPT CSV; cannot read this one: {' '.join(str(e).split())}",
                             file=out, field="--append") from None
        missing = [c for c in ("Timestamp", "Request tokens", "Response tokens", "Model", "Log Type") if c not in old]
        if missing:
            raise InputError(f"--append merges with a BurstGPT CSV; this file has no column {missing[0]!r}",
                             file=out, field="--append")
        prev = pd.DataFrame({"arrival_s": old["Timestamp"], "prompt_tokens": old["Request tokens"],
                             "output_tokens": old["Response tokens"], "model": old["Model"],
                             "log_type": old["Log Type"]})
        df = pd.concat([prev, df], ignore_index=True).sort_values("arrival_s", kind="stable")
    write_burstgpt(df, out)
    typer.echo(f"wrote {len(df)} requests to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
