"""Nothing half-written: atomic outputs, one sweep per output folder, tables rebuilt from the log."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from simllm.atomic import FolderLock, atomic_path
from simllm.cli import run_cli
from simllm.errors import InputError

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "workloads" / "scenarios" / "llama3-8b-h100-azure-conv.yaml"


def _sweep(tmp_path: Path, n: int = 3) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(textwrap.dedent(f"""
        base: {BASE}
        grid:
          workload.limit: [{", ".join(str(40 + 10 * i) for i in range(n))}]
    """))
    return p


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    dest = tmp_path / "x.csv"
    dest.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert dest.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]
    with atomic_path(dest) as tmp:
        tmp.write_text("new\n")
    assert dest.read_text() == "new\n"


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with FolderLock(tmp_path / "out"):
        with pytest.raises(InputError, match=f"pid {os.getpid()}"):
            FolderLock(tmp_path / "out").__enter__()
    with FolderLock(tmp_path / "out"):  # released
        pass


def test_sweep_into_a_locked_folder_exits_2(tmp_path, capsys):
    sw = _sweep(tmp_path, 1)
    out = tmp_path / "out"
    with FolderLock(out):
        assert run_cli(["sweep", str(sw), "--out", str(out), "--no-progress", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "in use by pid" in err and str(out) in err
    assert not (out / "results.jsonl").exists()


def test_two_concurrent_sweeps_never_duplicate_a_row(tmp_path):
    sw = _sweep(tmp_path, 3)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "simllm", "sweep", str(sw), "--out", str(out), "--no-progress", "--no-report"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    res = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in res)
    assert codes[0] == 0, res
    assert codes[1] in (0, 2), res  # refused while the other held the folder, or ran after it (nothing to do)
    if codes[1] == 2:
        assert any("in use by pid" in e for _, e in res)
    log = (out / "results.jsonl").read_text().splitlines()
    assert len(log) == 3
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 3 and df.config_hash.is_unique


def test_tables_are_rebuilt_from_the_log_on_resume(tmp_path):
    sw = _sweep(tmp_path, 2)
    out = tmp_path / "out"
    assert run_cli(["sweep", str(sw), "--out", str(out), "--no-progress", "--no-report"]) == 0
    (out / "results.csv").unlink()  # as after a kill between the log append and the table rewrite
    (out / "results.csv").write_text("config_hash,status\n")
    assert run_cli(["sweep", str(sw), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert len(pd.read_csv(out / "results.csv")) == 2
