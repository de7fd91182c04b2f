"""Kernel labels that only older framework versions carry get sections of their own (``calibrate fit``).

vLLM 0.19's collector labels its H100 GEMMs ``vllm_default`` where 0.24 names the kernel class; its fp8
block-scaled rows time about half of 0.24's on the same shapes. Priced by the dtype's section (fitted on the
newest kernels) they read about twice the measured time; a GPU whose newest collected vLLM is 0.19 is priced so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simllm.cost import older_labels, pricing, tables as T
from simllm.cost.calibration import calibration_for
from simllm.hardware import load_accelerator
from tests.helpers.cli import run_cli


def _src(shared_data, version) -> Path:
    p = shared_data / "calibration" / "aiconfigurator" / "h100_sxm" / "gemm" / "vllm" / version / "gemm_perf.parquet"
    if not p.is_file():
        pytest.skip("no H100 vLLM GEMM tables under ../shared/data")
    return p


def _layout(shared_data, tmp_path) -> Path:
    """h100_sxm/gemm/vllm/{0.24.0,0.19.0}: a seeded sample of the fp8_block rows of each."""
    g = tmp_path / "h100_sxm"
    for v, n in (("0.24.0", 300), ("0.19.0", 600)):
        df = pd.read_parquet(_src(shared_data, v))
        df = df[df["gemm_dtype"] == "fp8_block"].sample(n, random_state=0)
        d = g / "gemm" / "vllm" / v
        d.mkdir(parents=True)
        df.to_parquet(d / "gemm_perf.parquet")
    return g


def test_older_tables_are_the_ones_resolve_skips(shared_data, tmp_path):
    g = _layout(shared_data, tmp_path)
    newest = [r.version for r in T.resolve(g, "vllm").tables]
    older = [r.version for r in T.older_tables(g, "vllm")]
    assert newest == ["0.24.0"] and older == ["0.19.0"]


def _med(df, acc, cal):
    p = pricing.price(df, acc, cal.for_framework("vllm"))
    return float(np.median(np.abs(p / df["latency_s"].to_numpy() - 1)))


def test_older_label_gets_its_own_section_and_nothing_else_moves(shared_data, tmp_path):
    g = _layout(shared_data, tmp_path)
    acc = load_accelerator("h100-sxm")
    start = older_labels.without_older_labels(calibration_for(acc))
    old = T.read_tables(g / "gemm" / "vllm" / "0.19.0", "vllm")
    new = T.read_tables(g, "vllm")
    assert set(old["kernel_source"]) == {"vllm_default"}
    before_old, before_new = _med(old, acc, start), _med(new, acc, start)
    cal = older_labels.with_older_labels(start, acc, [g], {"vllm": new})
    fw = cal.frameworks["vllm"]
    assert "gemm/fp8_block/vllm_default" in fw["kernels"]
    rec = fw["fit"]["older_labels"]["gemm/fp8_block/vllm_default"]
    assert rec["version"] == "0.19.0" and rec["rows"] == len(old)
    # the newest kernels' sections price these rows about twice the measured time; the label's own section does not
    assert before_old > 0.5
    assert _med(old, acc, cal) < 0.25 and _med(old, acc, cal) == pytest.approx(rec["median"], abs=1e-3)
    # every other section is the start's: the newest table's rows are priced exactly as before
    start_k = start.frameworks["vllm"]["kernels"]
    assert {k: v for k, v in fw["kernels"].items() if k != "gemm/fp8_block/vllm_default"} == start_k
    assert _med(new, acc, cal) == pytest.approx(before_new, rel=1e-9)


def test_labels_only_cli_keeps_a_calibration_that_has_them(shared_data, tmp_path, capsys):
    g = _layout(shared_data, tmp_path)
    out = tmp_path / "cal.yaml"
    code, text, err = run_cli(["calibrate", "fit", str(g), "--hw", "h100-sxm", "--framework", "vllm", "--labels-only",
                            "--out", str(out)], capsys)
    assert code in (0, None), err
    assert "nothing written" in text and not out.exists()


def test_shipped_h100_prices_vllm_0_19_tables(shared_data):
    """The shipped H100 file on the whole vLLM 0.19 tables (the labels only that version carries)."""
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc)
    gemm = T.read_tables(_src(shared_data, "0.19.0"), "vllm")
    for dt, limit in (("fp8_block", 0.15), ("fp8", 0.09)):
        sub = gemm[gemm["dtype"] == dt]
        assert _med(sub, acc, cal) < limit, dt
        assert _med(sub, acc, older_labels.without_older_labels(cal)) > 2 * limit, dt


def test_labels_only_needs_a_folder(shared_data, tmp_path, capsys):
    code, _, err = run_cli(["calibrate", "fit", str(_src(shared_data, "0.19.0")), "--hw", "h100-sxm", "--framework",
                         "vllm", "--labels-only", "--out", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and "--labels-only" in err


def test_a_refit_of_some_kinds_drops_only_their_label_sections():
    acc = load_accelerator("h100-sxm")
    cal = calibration_for(acc)
    rec = cal.frameworks["vllm"]["fit"]["older_labels"]
    assert any(k.startswith("gemm/") for k in rec) and any(k.startswith("moe/") for k in rec)
    out = older_labels.without_older_labels(cal, {"gemm"}, {"vllm"})
    left = out.frameworks["vllm"]["fit"]["older_labels"]
    assert left and all(not k.startswith("gemm/") for k in left) and set(left) == {k for k in rec if not k.startswith("gemm/")}
    assert not any(k in out.frameworks["vllm"]["kernels"] for k in rec if k.startswith("gemm/"))
    assert all(k in out.frameworks["vllm"]["kernels"] for k in left)
    # another framework's labels are kept
    assert out.frameworks["sglang"]["fit"]["older_labels"] == cal.frameworks["sglang"]["fit"]["older_labels"]


def test_a_family_refit_keeps_the_other_kinds_label_records(shared_data, tmp_path, capsys):
    """``calibrate fit <gpu>/gemm`` refits GEMM sections (and GEMM labels); the MoE and attention label sections
    keep their record, which says which devices they serve and which rows read them."""
    g = _layout(shared_data, tmp_path)
    out = tmp_path / "cal.yaml"
    code, text, err = run_cli(["calibrate", "fit", str(g / "gemm"), "--hw", "h100-sxm", "--framework", "vllm",
                            "--out", str(out)], capsys)
    assert code in (0, None), err
    from simllm.cost.calibration import load_calibration

    shipped = calibration_for(load_accelerator("h100-sxm")).frameworks["vllm"]["fit"]["older_labels"]
    rec = load_calibration(out).frameworks["vllm"]["fit"]["older_labels"]
    assert {k for k in shipped if not k.startswith("gemm/")} <= set(rec)
    assert "gemm/fp8_block/vllm_default" in rec  # refitted from the mini layout's 0.19 rows
    assert rec["gemm/fp8_block/vllm_default"]["rows"] == 600
