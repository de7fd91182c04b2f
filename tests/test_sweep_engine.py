import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from simllm.errors import InputError
from simllm.sweep import ResultsLog, config_hash, find_max_rate, load_sweep, run_items
from tests.helpers import sweep_fakes

REPO = Path(__file__).resolve().parent.parent


def _sweep(tmp_path, text):
    p = tmp_path / "sweep.yaml"
    p.write_text(textwrap.dedent(text))
    return load_sweep(p)


def test_grid_zip_points_replications(tmp_path):
    sw = _sweep(tmp_path, """
        base: {x: 0, seed: 10, deep: {a: 1}}
        grid: {x: [1, 2, 3], deep.a: [5, 6]}
        zip: {p: [1, 2], q: [3, 4]}
        points: [{x: 9}]
        replications: 2
    """)
    items = sw.expand()
    assert len(items) == (3 * 2 * 2 + 1) * 2
    assert len({it["hash"] for it in items}) == len(items)  # all distinct
    first = items[0]["config"]
    assert first["deep"]["a"] == 5 and first["seed"] == 10 and {items[0]["config"]["seed"], items[1]["config"]["seed"]} == {10, 11}


def test_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})


def test_lhs_stratified(tmp_path):
    sw = _sweep(tmp_path, """
        base: {x: 0}
        sample: {method: lhs, n: 10, fields: {r: [0.0, 10.0]}}
    """)
    vals = sorted(p["r"] for p in sw.points)
    # one value in each of the 10 strata
    assert [int(v) for v in vals] == list(range(10))


@pytest.mark.parametrize("text,field", [
    ("base: {x: 0}\ngrid: {x: 3}\n", "grid.x"),
    ("base: {x: 0}\nzip: {a: [1], b: [1, 2]}\n", "zip"),
    ("base: 7\n", "base"),
    ("base: {x: 0}\nbogus: 1\n", "bogus"),
    ("base: {x: 0}\nsample: {n: 3, fields: {r: [5, 1]}}\n", "sample.fields.r"),
])
def test_bad_sweep_files(tmp_path, text, field):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as ei:
        load_sweep(p)
    assert field in str(ei.value) and str(p) in str(ei.value)


def test_failed_point_recorded_others_go_on(tmp_path):
    sw = _sweep(tmp_path, "base: {x: 0}\ngrid: {x: [1, 2, 3, 4]}\n")
    df = run_items(sw.expand(), sweep_fakes.quadratic, tmp_path / "out", jobs=2, progress=False)
    assert len(df) == 4
    bad = df[df.status == "failed"]
    assert list(bad["param.x"]) == [3] and "forbidden" in bad.error.iloc[0]
    assert sorted(df[df.status == "ok"].y) == [1, 4, 16]
    assert (tmp_path / "out" / "results.csv").exists() and (tmp_path / "out" / "results.parquet").exists()
    # a rerun finds everything done and runs nothing new
    df2 = run_items(sw.expand(), sweep_fakes.quadratic, tmp_path / "out", jobs=1, progress=False)
    assert len(ResultsLog(tmp_path / "out").read()) == 4 and len(df2) == 4


def test_torn_last_line_tolerated(tmp_path):
    log = ResultsLog(tmp_path)
    log.append({"config_hash": "a", "status": "ok"})
    with log.path.open("a") as f:
        f.write('{"config_hash": "b", "sta')  # killed mid-write
    assert log.finished() == {"a"}
    log.append({"config_hash": "c", "status": "ok"})
    assert {r["config_hash"] for r in log.read()} == {"a", "c"}


def test_sigkill_and_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from simllm.sweep import load_sweep, run_items
        from tests.helpers import sweep_fakes
        sw = load_sweep({str(tmp_path / 'sweep.yaml')!r})
        run_items(sw.expand(), sweep_fakes.slow, {str(out)!r}, jobs=2, progress=False)
    """)
    (tmp_path / "sweep.yaml").write_text("base: {x: 0, sleep: 0.15}\ngrid: {x: [" + ", ".join(map(str, range(24))) + "]}\n")
    (tmp_path / "run.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], start_new_session=True)
    log = ResultsLog(out)
    deadline = time.time() + 60
    while time.time() < deadline and len(log.read()) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: parent and workers
    proc.wait()
    n_before = len(log.read())
    assert 5 <= n_before < 24, n_before
    subprocess.run([sys.executable, str(tmp_path / "run.py")], check=True, timeout=120)
    rows = log.read()
    hashes = [r["config_hash"] for r in rows]
    assert len(hashes) == len(set(hashes)) == 24  # none lost, none duplicated
    df = pd.read_csv(out / "results.csv")
    assert sorted(df["param.x"]) == list(range(24)) and (df.y == df["param.x"] * 2).all()


def test_find_max_rate_bisects():
    res = find_max_rate({"workload": {"rate": 1.0}}, sweep_fakes.capacity, rate_field="workload.rate",
                        lo=1.0, hi=32.0, attainment=0.9, rel_tol=0.01)
    assert 7.3 * 0.99 <= res["max_rate"] <= 7.3
