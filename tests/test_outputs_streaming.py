"""Outputs streamed in chunks: the same bytes as one table written at once, whatever the chunk size;
Parquet above the documented size; a killed run leaves no half table."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simllm.cli.run as run_mod
import simllm.metrics.writers as writers
import simllm.sim.records as records
from simllm.cli import run_cli
from simllm.metrics.writers import TableWriter, choose_format
from simllm.scenario import load_scenario, prepare, simulate

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=False, width=64), st.just(float("nan")))
texts = st.text(alphabet=st.sampled_from(list("ab ,\"x\n")), max_size=6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-10**12, 10**12), floats, texts, st.floats(-1e300, 1e300)), min_size=1,
                max_size=30), st.integers(1, 7))
def test_csv_chunks_are_one_to_csv(tmp_path_factory, rows, chunk):
    df = pd.DataFrame(rows, columns=["i", "x_s", "why", "y, \"q\""])
    d = tmp_path_factory.mktemp("w")
    with TableWriter(d / "t.csv", "csv") as w:
        for lo in range(0, len(df), chunk):
            part = df.iloc[lo:lo + chunk]
            w.write({c: part[c].to_numpy() for c in df.columns})
    ref = df.to_csv(index=False, lineterminator="\n", float_format="%.12g")
    assert (d / "t.csv").read_text() == ref
    assert [p.name for p in d.iterdir()] == ["t.csv"]  # no temporary left


def test_writer_failure_leaves_old_file(tmp_path):
    dest = tmp_path / "steps.parquet"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with TableWriter(dest, "parquet") as w:
            w.write({"a": np.arange(3)})
            raise RuntimeError("killed")
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["steps.parquet"]


def test_choose_format():
    assert choose_format("csv", 10**9) == "csv" and choose_format("parquet", 1) == "parquet"
    assert choose_format("auto", writers.CSV_MAX_REQUESTS) == "csv"
    assert choose_format("auto", writers.CSV_MAX_REQUESTS + 1) == "parquet"


def _run(out: Path, *extra: str) -> int:
    return run_cli(["run", str(BASE), "--set", "workload.limit=300", "--out", str(out), "--no-progress", "--json",
                    *extra])


def test_streamed_tables_do_not_depend_on_chunk_sizes_and_equal_the_in_memory_ones(tmp_path, monkeypatch):
    assert _run(tmp_path / "a") == 0
    monkeypatch.setattr(records, "CHUNK_ROWS", 7)  # step rows priced, summed and written 7 at a time
    monkeypatch.setattr(run_mod, "WRITE_CHUNK_ROWS", 5)
    assert _run(tmp_path / "b") == 0
    for f in ("requests.csv", "steps.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    scn, path = load_scenario(BASE, ["workload.limit=300"])
    req, steps, _summary = simulate(prepare(scn, file=path))
    for name, df in (("requests.csv", req), ("steps.csv", steps)):
        text = df.to_csv(index=False, lineterminator="\n", float_format="%.12g")
        assert (tmp_path / "a" / name).read_text() == text, name


def test_auto_format_writes_parquet_above_the_documented_size(tmp_path, monkeypatch, capsys):
    assert _run(tmp_path / "csv") == 0
    monkeypatch.setattr(writers, "CSV_MAX_REQUESTS", 100)
    assert _run(tmp_path / "pq") == 0
    err = capsys.readouterr().err
    assert "requests.parquet, steps.parquet, summary.json" in err and "Parquet: more than 100 requests" in err
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == ["requests.parquet", "steps.parquet",
                                                                    "summary.json"]
    for name in ("requests", "steps"):
        a = pd.read_csv(tmp_path / "csv" / f"{name}.csv", keep_default_na=False, na_values=[""])
        b = pd.read_parquet(tmp_path / "pq" / f"{name}.parquet")
        assert list(a.columns) == list(b.columns) and len(a) == len(b)
        for c in a.columns:
            if pd.api.types.is_numeric_dtype(b[c]):  # CSV has 12 significant digits
                np.testing.assert_allclose(a[c].astype(float), b[c].astype(float), rtol=1e-11, equal_nan=True,
                                           err_msg=c)
            else:  # text: an all-empty column reads back from CSV as NaN
                assert (a[c].astype(object).where(a[c].notna(), "").astype(str) == b[c]).all(), c
    assert _run(tmp_path / "pq2") == 0  # byte-identical rerun
    for f in ("requests.parquet", "steps.parquet", "summary.json"):
        assert (tmp_path / "pq" / f).read_bytes() == (tmp_path / "pq2" / f).read_bytes(), f
    assert _run(tmp_path / "forced", "--format", "csv") == 0  # asked for: CSV whatever the size
    assert (tmp_path / "forced" / "steps.csv").read_bytes() == (tmp_path / "csv" / "steps.csv").read_bytes()


def test_sigkilled_run_leaves_no_half_table(tmp_path):
    """Killed while the steps are being streamed: only the hidden temporary file, never steps.csv."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = ("import simllm.sim.records as r; r.CHUNK_ROWS = 16; import sys; from simllm.cli import main; "
            "main(sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(BASE), "--out", str(out), "--no-progress",
                             "--json"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    tmp = None
    while time.time() - t0 < 120 and proc.poll() is None:
        tmp = next(iter(out.glob(".steps.csv.tmp-*")), None) if out.is_dir() else None
        if tmp is not None and tmp.stat().st_size > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    names = sorted(p.name for p in out.iterdir())
    assert "steps.csv" not in names and "requests.csv" not in names and "summary.json" not in names, names
    assert all(n.startswith(".") for n in names), names
    assert _run(out) == 0  # a rerun into the same folder writes whole files
    assert pd.read_csv(out / "requests.csv").shape[0] == 300
