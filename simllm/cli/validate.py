"""``simllm validate RUN...``: replay measured serving runs and print measured vs simulated latencies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..atomic import check_output_dir, write_text
from ._common import _clean, echo_json, print_table


def _ms(x):
    return "-" if x is None else f"{x * 1e3:.4g}"


def _pct(x):
    return "-" if x is None else f"{x * 100:.1f}%"


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        runs: List[Path] = typer.Argument(..., help="inference-perf run folders or vllm bench --save-result JSON files"),
        json_: bool = typer.Option(False, "--json", help="one JSON object: runs, median (sustained), median_all"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for validation.json"),
        hw: str = typer.Option("h100-sxm", "--hw", help="accelerator the runs used (the run folders do not name it)"),
        model: Optional[str] = typer.Option(None, "--model", help="model descriptor name or a config.json"),
        seed: int = typer.Option(0, "--seed", min=0, help="seed of the generated load"),
        stage_drain: bool = typer.Option(False, "--stage-drain",
                                         help="start each inference-perf stage once the previous one's requests "
                                              "have all ended (+ interval + 1 s), as its load generator does"),
        tp: Optional[int] = typer.Option(None, "--tp", min=1,
                                         help="the server's tensor parallelism where the run does not record it "
                                              "(vllm bench results; default 1)"),
        max_num_seqs: Optional[int] = typer.Option(None, "--max-num-seqs", min=1,
                                                   help="the server's max_num_seqs where the run does not record it"),
        max_num_batched_tokens: Optional[int] = typer.Option(
            None, "--max-num-batched-tokens", min=1, help="the server's max_num_batched_tokens where the run does "
                                                          "not record it"),
        max_model_len: Optional[int] = typer.Option(None, "--max-model-len", min=1,
                                                    help="the server's max_model_len where the run does not record it"),
    ) -> None:
        """Simulate measured runs from their own files and print the error per stage and overall."""
        from ..validate import summarize_runs, validate_run

        if out is not None:
            check_output_dir(out)  # before the replays, which take a while
        server = {"tp": tp, "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                  "max_model_len": max_model_len}
        recs = [validate_run(r, hw=hw, model=model, seed=seed, stage_drain=stage_drain, server=server) for r in runs]
        for r in recs:
            for a in r.get("assumptions", ()):
                typer.echo(f"{r['run']}: assumption: {a}", err=True)
        res = summarize_runs(recs)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_text(out / "validation.json", json.dumps(_clean(res), indent=2) + "\n")
        if json_:
            echo_json(res)
            return
        for r in recs:
            rows = []
            for st in r["stages"]:
                for met in ("ttft", "tpot", "itl", "e2e"):
                    m, s = st["measured"][met] or {}, st["simulated"][met] or {}
                    rows.append((str(st["stage"]), met, " / ".join(_ms(m.get(q)) for q in ("mean", "p50", "p90", "p99")),
                                 " / ".join(_ms(s.get(q)) for q in ("mean", "p50", "p90", "p99")), _pct(st[f"{met}_ape"])))
                rows.append((str(st["stage"]), "req/s", f"{st['measured']['requests_per_s'] or 0:.3g}",
                             f"{st['simulated']['requests_per_s'] or 0:.3g}", ""))
            print_table(f"{r['run']} (sustained {r['sustained']}, simulated saturated {r['saturated']}, failed "
                        f"{_pct(r['failed_measured'])} measured / {_pct(r['failed_simulated'])} simulated)",
                        ["stage", "metric", "measured mean/p50/p90/p99 (ms)", "simulated (ms)", "APE"], rows,
                        justify_numbers=False)
        rows = [(r["run"], str(r["sustained"]), str(r["saturated"]), _pct(r["ttft_ape"]), _pct(r["tpot_ape"]),
                 _pct(r["itl_ape"]), _pct(r["e2e_ape"]), _pct(r["failed_measured"]), _pct(r["failed_simulated"]))
                for r in recs]
        for key in ("median", "median_all"):
            md = res[key]
            rows.append((key, "", "", _pct(md["ttft_ape"]), _pct(md["tpot_ape"]), _pct(md["itl_ape"]),
                         _pct(md["e2e_ape"]), "", ""))
        print_table("runs", ["run", "sustained", "saturated", "TTFT", "TPOT", "ITL", "E2E", "failed meas", "failed sim"],
                    rows, justify_numbers=False)
