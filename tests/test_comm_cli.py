"""``simllm comm`` end to end (in process)."""

from __future__ import annotations

import json

import pytest

from simllm.cli import main


def run(capsys, *argv):
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


@pytest.mark.parametrize("ep,op,ref", [(8, "dispatch", 153), (8, "combine", 158), (32, "dispatch", 58),
                                       (64, "combine", 50)])
def test_deepep_through_cli(capsys, ep, op, ref):
    code, out, _ = run(capsys, "comm", op, "--cluster", "h800-ep", "--devices", str(ep), "--tokens", "4096",
                       "--hidden", "7168", "--topk", "8", "--dtype", "fp8" if op == "dispatch" else "bf16", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["deepep_bw"] / 1e9 == pytest.approx(ref, rel=0.20)
    assert d["deepep_domain"] == ("NVLink" if ep == 8 else "RDMA")


def test_all_reduce_json_and_table(capsys):
    code, out, _ = run(capsys, "comm", "all_reduce", "-c", "dgx-a100", "-n", "8", "-b", "64MiB", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["nbytes"] == 64 * 2**20
    assert d["busbw"] == pytest.approx(d["algbw"] * 2 * 7 / 8)
    assert d["time_s"] > 0 and d["algorithm"] in d["candidates_s"]
    code, out, _ = run(capsys, "comm", "send_recv", "-c", "a100-2node", "-n", "16", "-b", "1e8")
    assert code == 0 and "busbw" in out


@pytest.mark.parametrize("argv", [
    ("comm", "all_reduce", "-c", "dgx-a100", "-n", "9", "-b", "1MB"),
    ("comm", "all_reduce", "-c", "no-such-node", "-n", "2", "-b", "1MB"),
    ("comm", "broadcast", "-c", "dgx-a100", "-n", "2", "-b", "1MB"),
    ("comm", "all_reduce", "-c", "dgx-a100", "-n", "2"),
    ("comm", "all_reduce", "-c", "dgx-a100", "-n", "2", "-b", "lots"),
    ("comm", "dispatch", "-c", "h800-ep", "-n", "8", "--tokens", "10"),
    ("comm", "dispatch", "-c", "h800-ep", "-n", "12", "--tokens", "10", "--hidden", "16", "--topk", "2"),
])
def test_bad_input_exit_2_one_line(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error")
