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
        from ..errors import InputError
        from ..sweep import capacity_items, load_sweep, run_items, scenario_runner

        if backend not in ("local", "ray"):
            raise InputError(f"unknown backend {backend!r} (local, ray)", field="--backend")
        sw = load_sweep(sweep_file)
        out_dir = out or Path("runs") / sweep_file.stem
        fn = scenario_runner(sw.base_dir)
        items = sw.expand()
        fmr = sw.find_max_rate or {}
        if find_max_rate or fmr:
            fn, items = capacity_items(items, sw.base_dir, rate_field=fmr.get("field", rate_field),
                                       lo=float(fmr.get("lo", rate_lo)), hi=float(fmr.get("hi", rate_hi)),
                                       attainment=float(fmr.get("attainment", attainment)))
        df = run_items(items, fn, out_dir, jobs=jobs, backend=backend, address=address,
                       retry_failed=retry_failed, progress=progress)
        n_ok = int((df.status == "ok").sum()) if len(df) else 0
        typer.echo(f"{n_ok}/{len(df)} points ok; results in {out_dir / 'results.csv'}")
        if report and n_ok:
            from ..report import build_report

            typer.echo(f"report: {build_report(out_dir / 'results.csv', out_dir / 'report')}")
