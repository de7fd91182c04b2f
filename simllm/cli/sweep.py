"""`simllm sweep`: run a grid of scenarios in parallel processes or on Ray, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        sweep_file: Path = typer.Argument(..., help="Sweep YAML: base scenario + grid/zip/points/sample."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/<sweep name>)."),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Parallel worker processes."),
        backend: str = typer.Option("local", help="local (processes) or ray."),
        address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local instance)."),
        retry_failed: bool = typer.Option(False, help="Run again the points recorded as failed."),
        find_max_rate: bool = typer.Option(False, "--find-max-rate",
                                           help="Per configuration, bisect the highest rate meeting the SLO target."),
        rate_field: str = typer.Option("workload.retime.rate", help="Dotted field holding the request rate."),
        rate_lo: float = typer.Option(0.5, help="Lowest rate tried by --find-max-rate (requests/s)."),
        rate_hi: float = typer.Option(64.0, help="Highest rate tried by --find-max-rate (requests/s)."),
        attainment: float = typer.Option(0.9, help="SLO attainment target for --find-max-rate."),
        report: bool = typer.Option(True, help="Write plots and an HTML report when done."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
    ) -> None:
        """Run every point of SWEEP_FILE; finished points are skipped on restart (keyed by config hash)."""
        from ..atomic import check_output_dir
        from ..errors import InputError
        from ..sweep import capacity_items, check_search, load_sweep, run_items, scenario_runner, validate_items

        if backend not in ("local", "ray"):
            raise InputError(f"unknown backend {backend!r} (local, ray)", field="--backend")
        if address is not None and backend != "ray":
            raise InputError("--address applies only to --backend ray", field="--address")
        ignored = [f for f, v, d in (("--rate-field", rate_field, "workload.retime.rate"), ("--rate-lo", rate_lo, 0.5),
                                     ("--rate-hi", rate_hi, 64.0), ("--attainment", attainment, 0.9)) if v != d]
        sw = load_sweep(sweep_file)
        if ignored and not (find_max_rate or sw.find_max_rate):
            raise InputError(f"{ignored[0]} applies to the rate search: add --find-max-rate", field=ignored[0])
        out_dir = out or Path("runs") / sweep_file.stem
        fn = scenario_runner(sw.base_dir)
        items = sw.expand()
        fmr = sw.find_max_rate or {}
        search = None
        if find_max_rate or fmr:
            search = dict(rate_field=fmr.get("field", rate_field), lo=fmr.get("lo", rate_lo),
                          hi=fmr.get("hi", rate_hi), attainment=fmr.get("attainment", attainment))
            check_search(**search, file=str(sweep_file) if fmr else None)
            search = {k: (float(v) if k != "rate_field" else v) for k, v in search.items()}
        validate_items(items, sw.base_dir, file=str(sweep_file),
                       extra_overrides={search["rate_field"]: search["lo"]} if search else None)
        check_output_dir(out_dir)
        if search:
            fn, items = capacity_items(items, sw.base_dir, **search)
        df = run_items(items, fn, out_dir, jobs=jobs, backend=backend, address=address,
                       retry_failed=retry_failed, progress=progress)
        n_ok = int((df.status == "ok").sum()) if len(df) else 0
        typer.echo(f"{n_ok}/{len(df)} points ok; results in {out_dir / 'results.csv'}")
        if search and n_ok and "max_rate_rps" in df:
            params = [c for c in df.columns if c.startswith("param.")]
            for _, r in df[df.status == "ok"].iterrows():
                where = ", ".join(f"{c[6:]}={r[c]}" for c in params if r[c] == r[c]) or "base"
                typer.echo(f"max rate {r['max_rate_rps']:.4g} req/s at SLO attainment >= {search['attainment']:g} "
                           f"({where})")
        if report and n_ok:
            from ..report import build_report

            typer.echo(f"report: {build_report(out_dir / 'results.csv', out_dir / 'report')}")
        n_failed = len(df) - n_ok
        if n_failed:
            typer.echo(f"error: {n_failed} of {len(df)} points failed (see the error column of "
                       f"{out_dir / 'results.csv'}); rerun with --retry-failed after fixing them", err=True)
            raise typer.Exit(1)
