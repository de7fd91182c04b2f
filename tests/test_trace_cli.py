"""``simllm trace stats | generate`` end to end (in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simllm.cli import main

REPO = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


def test_stats_json(capsys):
    code, out, _ = run(capsys, "trace", "stats", str(REPO / "traces/azure2023_conv_sample.csv"), "--json")
    assert code == 0
    d = json.loads(out)
    assert d["count"] == 3000 and d["format"] == "azure"
    for k in ("p50", "p90", "p99", "mean"):
        assert d["prompt_tokens"][k] > 0 and d["output_tokens"][k] > 0
    a = d["fit"]["arrivals"]
    assert a["shape"] == pytest.approx(1 / d["interarrival_cv"] ** 2)
    assert a["shape"] * a["scale_s"] == pytest.approx(d["interarrival_mean_s"])
    assert {"mu", "sigma"} <= set(d["fit"]["prompt_lognormal"])


def test_stats_table_and_errors(capsys, tmp_path):
    code, out, _ = run(capsys, "trace", "stats", str(REPO / "traces/mooncake_conversation_sample.jsonl"))
    assert code == 0 and "interarrival_cv" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1,x,2\n")
    code, _, err = run(capsys, "trace", "stats", str(bad))
    assert code == 2 and err.count("\n") == 1 and "num_prefill_tokens: line 2" in err
    code, _, err = run(capsys, "trace", "stats", str(tmp_path / "none.csv"))
    assert code == 2 and "not found" in err


@pytest.mark.parametrize("verb", [[], ["stats"], ["generate"]])
def test_help(capsys, verb):
    code, out, _ = run(capsys, "trace", *verb, "--help")
    assert code == 0 and "Usage" in out


def test_generate_roundtrip(capsys, tmp_path):
    out = tmp_path / "syn.csv"
    code, _, err = run(capsys, "trace", "generate", "--out", str(out), "--rate", "4", "--cv", "2", "--num", "3000",
                       "--seed", "5", "--prompt-median", "300", "--fail-fraction", "0.02")
    assert code == 0, err
    assert out.read_text().splitlines()[0] == "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
    code, js, _ = run(capsys, "trace", "stats", str(out), "--json")
    d = json.loads(js)
    assert d["format"] == "burstgpt" and d["count"] + d["dropped"]["failed"] == 3000
    assert d["interarrival_cv"] == pytest.approx(2, rel=0.1) and d["rate_per_s"] == pytest.approx(4, rel=0.1)
    assert d["prompt_tokens"]["p50"] == pytest.approx(300, rel=0.1)
    # same seed, same bytes
    out2 = tmp_path / "syn2.csv"
    run(capsys, "trace", "generate", "--out", str(out2), "--rate", "4", "--cv", "2", "--num", "3000",
        "--seed", "5", "--prompt-median", "300", "--fail-fraction", "0.02")
    assert out.read_bytes() == out2.read_bytes()


def test_generate_fit_and_append(capsys, tmp_path):
    out = tmp_path / "fit.csv"
    code, _, err = run(capsys, "trace", "generate", "--out", str(out), "--fit",
                       str(REPO / "traces/azure2023_code_sample.csv"), "--num", "500", "--log-type", "API log")
    assert code == 0, err
    code, _, _ = run(capsys, "trace", "generate", "--out", str(out), "--append", "--num", "200", "--rate", "1",
                     "--lengths", "zipf", "--prompt-range", "16:4096", "--model", "ChatGPT:1,GPT-4:1")
    assert code == 0
    _, js, _ = run(capsys, "trace", "stats", str(out), "--json", "--log-type", "Conversation log")
    assert json.loads(js)["count"] == 200
    code, _, err = run(capsys, "trace", "generate", "--out", str(out), "--lengths", "empirical")
    assert code == 2 and "--fit" in err
