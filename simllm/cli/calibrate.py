"""``simllm calibrate``: fit the cost model's efficiencies to measured tables, or check them.

``simllm calibrate fit PATH... --hw DEVICE [--framework F] [--out FILE]`` reads AIConfigurator
tables (GPU, family, framework or version folders, single parquet tables; see
:mod:`simllm.cost.tables`) and/or Vidur CSVs, fits every kernel class found (registry of
:mod:`simllm.cost.pricing`; Vidur tables through :mod:`simllm.cost.fit`) and writes a calibration.
``simllm calibrate check PATH --hw DEVICE [--framework F] [--json]`` fits nothing and prints, per
framework, ``{"n", "median_abs_rel_error", "p90_abs_rel_error", "unpriced", "per_op"}``
(``per_op`` keyed ``<kind>/<dtype>``); without ``--framework`` ``{"frameworks": {F: ...}}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..atomic import check_output_file
from ..cost.kernel_models import MIN_GROUP as MIN_LABEL_ROWS
from ..cost.older_labels import with_older_labels, without_older_labels
from ..cost.tables import folder_level
from ..errors import InputError
from ._common import echo_json, print_table

calibrate_app = typer.Typer(name="calibrate", no_args_is_help=True, add_completion=False,
                            help="Fit the cost model's efficiency parameters to measured kernel tables, or check them.")


def _device(hw: str):
    from ..hardware import load_accelerator

    return load_accelerator(hw)


def _node(node: Optional[str]):
    if node is None:
        return None
    from ..hardware import load_node

    return load_node(node)


def _frame(paths: List[Path], framework: Optional[str]):
    """(framework -> DataFrame) of every AIConfigurator table PATHs stand for; Vidur CSVs apart."""
    import pandas as pd

    from ..cost import tables as T

    if framework is not None and framework.lower() not in T.FRAMEWORKS:
        raise InputError(f"unknown framework {framework!r} (expected one of {', '.join(T.FRAMEWORKS)})",
                         field="--framework")
    fw_req = framework.lower() if framework else None
    per: dict = {}
    for p in paths:
        res = T.resolve(p, fw_req)
        for ref in res.tables:
            if ref.framework == "vidur" and fw_req:
                raise InputError("a Vidur table has no framework; --framework cannot be honoured", file=ref.path,
                                 field="--framework")
            if fw_req and ref.framework not in (fw_req, "nccl", ""):
                raise InputError(f"table is from framework {ref.framework!r}, not --framework {fw_req}",
                                 file=ref.path, field="--framework")
        if not res.tables:
            raise InputError("no measured tables found here" + (f" for framework {fw_req}" if fw_req else ""),
                             file=p)
        df = T.read_refs(res.tables)
        if df.empty:
            raise InputError("the tables hold no valid rows", file=p)
        fws = [fw_req] if fw_req else sorted({f for f in df["framework"].unique() if f != "nccl"}) or ["nccl"]
        for fw in fws:
            sub = df[(df["framework"] == fw) | (df["framework"] == "nccl")]
            per[fw] = pd.concat([per[fw], sub], ignore_index=True) if fw in per else sub
    return per


@calibrate_app.command("fit")
def fit_cmd(files: List[Path] = typer.Argument(..., help="measured tables: AIConfigurator GPU/family folders, "
                                               "parquet tables, or Vidur CSVs"),
            hw: str = typer.Option(..., "--hw", help="device the tables were measured on"),
            framework: Optional[str] = typer.Option(None, "--framework", help="vllm | trtllm | sglang "
                                                    "(default: every framework found, each fitted apart)"),
            node: Optional[str] = typer.Option(None, "--node", help="node descriptor for Vidur collective tables "
                                               "(default: the first node of that device)"),
            out: Optional[Path] = typer.Option(None, "--out", help="calibration YAML to write "
                                               "(default: hardware/calibration/<device>.yaml)"),
            iters: int = typer.Option(3000, "--iters", help="simplex iterations for the Vidur GEMM fit"),
            json_out: bool = typer.Option(False, "--json", help="print the result as JSON"),
            labels_only: bool = typer.Option(False, "--labels-only",
                                             help="fit only the sections of kernel labels that older version "
                                             "folders alone carry; keep the rest of the calibration")) -> None:
    """Fit every kernel class found in measured tables and write a calibration file.

    For a GPU or family folder, the newest version folder of each table is fitted, then every kernel label
    that only older version folders carry (older framework versions label and time their kernels otherwise)
    gets a section of its own, fitted on the newest version that holds it (recorded under the framework's
    ``fit.older_labels``)."""
    from ..config import data_root
    from ..cost.calibration import CALIB_DIR, calibration_for
    from ..cost.fit import fit_files
    from ..cost.pricing import fit_frameworks

    acc = _device(hw)
    if iters < 1:
        raise InputError("must be >= 1", field="--iters")
    dest = out or (data_root() / CALIB_DIR / (acc.calibration or f"{acc.name}.yaml"))
    check_output_file(dest)  # before the fit, which can take a while
    nd = _node(node)
    if nd is not None and nd.accelerator.name != acc.name:
        raise InputError(f"the {nd.name} node holds {nd.accelerator.name}, not {acc.name}", field="--node")
    start = calibration_for(acc)
    csvs = [p for p in files if Path(p).suffix == ".csv"]
    rest = [p for p in files if Path(p).suffix != ".csv"]
    cal = start
    if csvs:
        if framework:
            raise InputError("a Vidur table has no framework; --framework cannot be honoured", file=csvs[0],
                             field="--framework")
        cal = fit_files(csvs, acc, node=nd, start=start, iters=iters)
    if labels_only:
        for p in csvs + [p for p in rest if folder_level(p) not in ("gpu", "family")]:
            raise InputError("--labels-only reads AIConfigurator GPU or family folders only (their older version "
                             "folders)", file=p, field="--labels-only")
    if rest:
        per = _frame(rest, framework)
        if not labels_only:
            kinds = {str(k) for df in per.values() for k in df["kind"].unique()}
            cal = fit_frameworks(per, acc, without_older_labels(cal, kinds, set(per)), sources=[str(p) for p in rest])
        before = cal
        cal = with_older_labels(cal, acc, rest, per)
        if labels_only and cal.frameworks == before.frameworks:
            typer.echo(f"no kernel label that only older version folders carry has {MIN_LABEL_ROWS}+ rows a section "
                       f"of its own would price better: nothing written to {dest}")
            return
    cal.dump(dest)
    if json_out:
        echo_json({"out": str(dest), **cal.to_dict()})
    else:
        for k, v in cal.fit.items():
            if isinstance(v, dict) and "median_abs_rel_error" in v:
                typer.echo(f"{k}: {v.get('rows')} rows, median {v['median_abs_rel_error']:.2%}, "
                           f"p90 {v['p90_abs_rel_error']:.2%}")
        for fw, d in (cal.frameworks or {}).items():
            for k, v in (d.get("fit") or {}).get("per_op", {}).items():
                typer.echo(f"{fw} {k}: {v['n']} rows, median {v['median']:.2%}, p90 {v['p90']:.2%}")
            for k, v in ((d.get("fit") or {}).get("older_labels") or {}).items():
                typer.echo(f"{fw} {k} (label of {v['version']} only): {v['rows']} rows, median "
                           f"{v['median_before']:.2%} -> {v['median']:.2%}, p90 {v['p90_before']:.2%} -> {v['p90']:.2%}")
            for k, n in ((d.get("fit") or {}).get("unpriced") or {}).items():
                if n:
                    typer.echo(f"{fw} {k}: {n} rows the model cannot price (unpriced, not fitted)", err=True)
        typer.echo(f"wrote {dest}")


@calibrate_app.command("check")
def check_cmd(file: Path = typer.Argument(..., help="AIConfigurator GPU/family folder, a parquet table, "
                                          "or a Vidur CSV"),
              hw: str = typer.Option(..., "--hw", help="device to price the table's kernels on"),
              framework: Optional[str] = typer.Option(None, "--framework", help="vllm | trtllm | sglang "
                                                      "(default: every framework, one object each)"),
              calibration: Optional[Path] = typer.Option(None, "--calibration", help="calibration file "
                                                         "(default: the device's own, else the reference)"),
              json_out: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Compare the current model with measured tables; fits nothing."""
    from ..cost import pricing, tables as T
    from ..cost.calibration import calibration_for

    acc = _device(hw)
    cal = calibration_for(acc, calibration)
    per = _frame([file], framework)
    res = {}
    for fw, df in per.items():
        T.check_gpu(df, acc)
        res[fw] = pricing.check(df, acc, cal.for_framework(fw))
    obj = res[framework.lower()] if framework else {"frameworks": res}
    if json_out:
        echo_json(obj)
        return
    for fw, r in res.items():
        rows = [(op, v["n"], v["median"], v["p90"], v["median_signed"]) for op, v in r["per_op"].items()]
        rows += [(f"{k} (unpriced)", n, float("nan"), float("nan"), float("nan")) for k, n in r["unpriced"].items()]
        rows.append(("all", r["n"], r["median_abs_rel_error"], r["p90_abs_rel_error"], float("nan")))
        print_table(f"{file.name} [{fw}] on {acc.name}: |predicted/measured - 1|",
                    ["op", "n", "median", "p90", "signed"], rows)


def register(app: typer.Typer) -> None:
    app.add_typer(calibrate_app, name="calibrate")
