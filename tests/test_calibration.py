"""Calibration: GEMM error on Vidur's A100 tables, `simllm calibrate fit|check`, file handling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simllm.cost.calibration import Calibration, calibration_for, load_calibration
from simllm.cost.fit import constant_efficiency_baseline, error_stats, gemm_rows, predict_gemm
from simllm.errors import InputError
from simllm.hardware import load_accelerator


def _mlp_files(shared_data):
    files = sorted((shared_data / "calibration" / "vidur-a100").glob("*_mlp.csv"))
    if not files:
        pytest.skip("no *_mlp.csv under ../shared/data/calibration/vidur-a100")
    return files


def test_shipped_a100_calibration_gemm_error(shared_data):
    acc = load_accelerator("a100-sxm-80gb")
    cal = calibration_for(acc)
    assert cal.device == "a100-sxm-80gb"
    rows = gemm_rows(_mlp_files(shared_data))
    model = error_stats(predict_gemm(rows, acc, cal), rows["t"], rows["op"])
    base = error_stats(constant_efficiency_baseline(rows, acc, iters=300), rows["t"])
    print(f"\nGEMM rows {model['n']}: calibrated median {model['median_abs_rel_error']:.4f} "
          f"p90 {model['p90_abs_rel_error']:.4f}; constant-efficiency baseline median "
          f"{base['median_abs_rel_error']:.4f} p90 {base['p90_abs_rel_error']:.4f}")
    assert model["median_abs_rel_error"] <= 0.05
    assert model["p90_abs_rel_error"] <= 0.12
    assert model["p90_abs_rel_error"] < base["p90_abs_rel_error"] - 0.03  # beats it clearly
    assert model["median_abs_rel_error"] < base["median_abs_rel_error"]
    for op, v in model["per_op"].items():
        assert v["median"] <= 0.07, (op, v)


def test_calibration_transfers_to_other_devices():
    h100 = load_accelerator("mi300x")
    cal = calibration_for(h100)  # no own file: the A100 reference
    assert cal.device == "a100-sxm-80gb"
    from simllm.cost.kernels import gemm_time

    a100 = load_accelerator("a100-sxm-80gb")
    big = dict(M=8192, K=8192, N=8192, gp=cal.gemm)
    t_a = gemm_time(peak=a100.peak("bf16"), bw=a100.hbm_bw, cus=108, **big)
    t_h = gemm_time(peak=h100.peak("bf16"), bw=h100.hbm_bw, cus=int(h100.compute_units.value), **big)
    # same fraction of each device's own peak for a large GEMM: time ratio ~ peak ratio
    assert float(t_a / t_h) == pytest.approx(h100.peak("bf16") / a100.peak("bf16"), rel=0.15)


def test_check_cli_json(shared_data, capsys):
    from simllm.cli import main

    f = _mlp_files(shared_data)[0]
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "check", str(f), "--hw", "a100-sxm-80gb", "--json"])
    assert e.value.code == 0
    d = json.loads(capsys.readouterr().out)["frameworks"]["vidur"]
    assert set(d) >= {"n", "median_abs_rel_error", "p90_abs_rel_error", "per_op", "unpriced"}
    assert set(d["per_op"]) == {"gemm/fp16"} and not d["unpriced"]
    assert d["median_abs_rel_error"] < 0.08
    c = shared_data / "calibration" / "vidur-a100" / "a100_dgx_all_reduce.csv"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "check", str(c), "--hw", "a100", "--json"])
    assert e.value.code == 0
    d = json.loads(capsys.readouterr().out)["frameworks"]["vidur"]
    assert d["n"] > 1000 and "nccl_all_reduce/fp16" in d["per_op"] and d["per_op"]["nccl_all_reduce/fp16"]["median"] < 0.15


def test_fit_cli_writes_yaml(shared_data, tmp_path):
    import pandas as pd

    from simllm.cli import main

    src = _mlp_files(shared_data)[0]
    small = tmp_path / "small_mlp.csv"
    pd.read_csv(src).iloc[::8].to_csv(small, index=False)
    out = tmp_path / "cal.yaml"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "fit", str(small), "--hw", "a100-sxm-80gb", "--out", str(out), "--iters", "60"])
    assert e.value.code == 0
    cal = load_calibration(out)
    assert cal.device == "a100-sxm-80gb" and "gemm" in cal.fit
    assert 0 < cal.gemm.memory_efficiency <= 1.2 and len(cal.gemm.tile_efficiency) == len(cal.gemm.tiles)


def test_bad_inputs(tmp_path, capsys):
    from simllm.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    for argv in (["calibrate", "check", str(bad), "--hw", "a100"],
                 ["calibrate", "check", str(tmp_path / "missing.csv"), "--hw", "a100"],
                 ["calibrate", "check", str(bad), "--hw", "no-such-device"],
                 ["calibrate", "fit", str(bad), "--hw", "a100", "--out", str(tmp_path / "x.yaml")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    y = tmp_path / "c.yaml"
    y.write_text("gemm: {memory_efficiency: fast}\n")
    with pytest.raises(InputError):
        load_calibration(y)
    y.write_text("gemm: {warp_speed: 3}\n")
    with pytest.raises(InputError):
        load_calibration(y)


def test_roundtrip(tmp_path):
    cal = Calibration(device="x")
    cal.dump(tmp_path / "x.yaml")
    back = load_calibration(tmp_path / "x.yaml")
    assert back.gemm.tiles == cal.gemm.tiles
    assert back.comm == cal.comm


@settings(max_examples=60, deadline=None)
@given(f0=st.floats(0.0, 1.0), kf=st.floats(1.0, 20000.0), ko=st.floats(1e-7, 1e-4),
       k1=st.floats(0.0, 70000.0), k2=st.floats(0.0, 70000.0))
def test_gemm_floor_grows_with_k_to_the_whole_floor(f0, kf, ko, k1, k2):
    """The GEMM floor's pipeline-fill part: f0 of the floor at K -> 0, linear in K, the whole floor
    from floor_k on; scalar and vector calls agree; the default (floor_k 0) is the old constant."""
    from simllm.cost.calibration import GemmParams
    from simllm.cost.kernels import gemm_floor

    gp = GemmParams(kernel_overhead_s=ko, floor_k0=f0, floor_k=kf)
    lo, hi = sorted((k1, k2))
    assert gemm_floor(lo, gp) <= gemm_floor(hi, gp) + 1e-18
    assert gemm_floor(0.0, gp) == pytest.approx(f0 * ko)
    assert gemm_floor(kf * 1.5, gp) == pytest.approx(ko)
    assert np.allclose(gemm_floor(np.array([k1, k2]), gp), [gemm_floor(k1, gp), gemm_floor(k2, gp)])
    assert gemm_floor(k1, GemmParams(kernel_overhead_s=ko)) == ko


def test_uncalibrated_gemm_dtypes_priced_from_their_nearest_measured_section():
    """Blackwell's MXFP8 and the older collectors' AWQ / GPTQ (W4A16) GEMM tables have no measured counterpart in
    ../shared/data: they are priced (never left unpriced) at their own peak and bytes with the nearest measured
    dtype's fitted fractions: MXFP8 like fp8_block plus its scale bytes, AWQ / GPTQ like int4_wo plus theirs."""
    import pandas as pd

    from simllm.cost import pricing

    b200 = load_accelerator("b200")
    rows = [(m, 4096, 4096) for m in (1, 16, 256, 4096, 16384)]

    def table(dtype):
        return pd.DataFrame({"kind": "gemm", "dtype": dtype, "framework": "trtllm", "gpu": "b200_sxm",
                             "source": "x.parquet", "latency_s": 1e-4, "m": [r[0] for r in rows],
                             "n": [r[1] for r in rows], "k": [r[2] for r in rows]})

    cal = calibration_for(b200).for_framework("trtllm")
    p = {d: pricing.price(table(d), b200, cal) for d in ("mxfp8", "fp8_block", "awq", "gptq", "int4_wo", "bfloat16")}
    for d, v in p.items():
        assert np.all(np.isfinite(v)) and np.all(v > 0), d
    np.testing.assert_allclose(p["mxfp8"], p["fp8_block"], rtol=0.08)  # 1/32 more bytes, same section
    assert p["mxfp8"][-1] < p["bfloat16"][-1]  # the large GEMM at the fp8 peak (H100 fp8_block fractions: ~half)
    np.testing.assert_allclose(p["awq"], p["gptq"])
    np.testing.assert_allclose(p["awq"], p["int4_wo"], rtol=0.08)
    assert p["awq"][0] < p["bfloat16"][0]  # a one-row GEMM reads a quarter of the weight bytes
