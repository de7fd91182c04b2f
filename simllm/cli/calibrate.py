"""``simllm calibrate``: fit the cost model's efficiencies to measured tables, or check them.

``simllm calibrate fit FILES... --hw DEVICE [--out FILE]`` reads Vidur-format tables (GEMM
``*_mlp.csv`` and/or collective ``all_reduce``/``send_recv`` tables), fits the dimensionless
parameters (numpy Nelder-Mead, no scipy) and writes a calibration YAML.
``simllm calibrate check FILE --hw DEVICE [--json]`` fits nothing and reports the current
model's median and p90 absolute relative error on one table, per op.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

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


@calibrate_app.command("fit")
def fit_cmd(files: List[Path] = typer.Argument(..., help="measured tables (Vidur CSV format)"),
            hw: str = typer.Option(..., "--hw", help="device the tables were measured on"),
            node: Optional[str] = typer.Option(None, "--node", help="node descriptor for collective tables "
                                               "(default: the first node of that device)"),
            out: Optional[Path] = typer.Option(None, "--out", help="calibration YAML to write "
                                               "(default: hardware/calibration/<device>.yaml)"),
            iters: int = typer.Option(3000, "--iters", help="simplex iterations for the GEMM fit"),
            json_out: bool = typer.Option(False, "--json", help="print the result as JSON")) -> None:
    """Fit efficiency parameters from measured tables and write a calibration file."""
    from ..config import data_root
    from ..cost.calibration import CALIB_DIR, calibration_for
    from ..cost.fit import fit_files

    acc = _device(hw)
    if iters < 1:
        raise InputError("must be >= 1", field="--iters")
    start = calibration_for(acc)
    cal = fit_files(files, acc, node=_node(node), start=start, iters=iters)
    dest = out or (data_root() / CALIB_DIR / (acc.calibration or f"{acc.name}.yaml"))
    cal.dump(dest)
    if json_out:
        echo_json({"out": str(dest), **cal.to_dict()})
    else:
        for k, v in cal.fit.items():
            typer.echo(f"{k}: {v.get('rows')} rows, median {v['median_abs_rel_error']:.2%}, "
                       f"p90 {v['p90_abs_rel_error']:.2%}")
        typer.echo(f"wrote {dest}")


@calibrate_app.command("check")
def check_cmd(file: Path = typer.Argument(..., help="measured table (Vidur CSV format)"),
              hw: str = typer.Option(..., "--hw", help="device to price the table's kernels on"),
              node: Optional[str] = typer.Option(None, "--node", help="node descriptor (collective tables)"),
              calibration: Optional[Path] = typer.Option(None, "--calibration", help="calibration file "
                                                         "(default: the device's own, else the A100 reference)"),
              json_out: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Compare the current model with a measured table; fits nothing."""
    from ..cost.calibration import calibration_for
    from ..cost.fit import check_table

    acc = _device(hw)
    cal = calibration_for(acc, calibration)
    res = check_table(file, acc, cal, node=_node(node))
    if json_out:
        echo_json(res)
        return
    rows = [(op, v["n"], v["median"], v["p90"]) for op, v in res.get("per_op", {}).items()]
    rows.append(("all", res["n"], res["median_abs_rel_error"], res["p90_abs_rel_error"]))
    print_table(f"{file.name} on {acc.name}: |predicted/measured - 1|", ["op", "n", "median", "p90"], rows)


def register(app: typer.Typer) -> None:
    app.add_typer(calibrate_app, name="calibrate")
