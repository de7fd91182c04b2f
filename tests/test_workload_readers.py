"""Trace readers: real shipped samples, hand-made files, every malformed case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simllm.errors import InputError
from simllm.workload import build_workload, detect_format, read_trace

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "traces"

BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- real data


def test_azure_samples():
    for name in ("azure2023_conv_sample.csv", "azure2023_code_sample.csv"):
        tr = read_trace(TRACES / name)
        assert tr.format == "azure" and len(tr) == 3000 and tr.dropped == {}
        df = tr.df
        assert df["arrival_s"].iloc[0] == 0.0 and df["arrival_s"].is_monotonic_increasing
        assert (df["prompt_tokens"] >= 1).all() and (df["output_tokens"] >= 1).all()
    # first two rows of the conversation trace: 18:15:46.6805900 -> 18:15:50.9951690
    df = read_trace(TRACES / "azure2023_conv_sample.csv").df
    assert df["arrival_s"].iloc[1] == pytest.approx(4.314579, abs=1e-6)
    assert (df["prompt_tokens"].iloc[0], df["output_tokens"].iloc[0]) == (374, 44)


def test_mooncake_sample_prefix_blocks():
    tr = read_trace(TRACES / "mooncake_conversation_sample.jsonl")
    assert tr.format == "mooncake" and len(tr) == 1100
    first = tr.df.iloc[0]
    assert first["prompt_tokens"] == 6758 and first["output_tokens"] == 500
    assert first["prefix_blocks"] == tuple(range(14))
    # one block per 512 tokens (rounded up)
    n_blocks = tr.df["prefix_blocks"].map(len).to_numpy()
    assert (n_blocks == np.ceil(tr.df["prompt_tokens"].to_numpy() / 512)).mean() > 0.99
    reqs = build_workload({"trace": "traces/mooncake_conversation_sample.jsonl"}, seed=0)
    assert reqs[0].prefix_blocks == tuple(range(14)) and reqs[-1].id == 1099


def test_burstgpt_synthetic_sample_filters_and_failures():
    tr = read_trace(TRACES / "burstgpt_synthetic.csv")
    assert tr.format == "burstgpt" and tr.dropped["failed"] > 0
    api = read_trace(TRACES / "burstgpt_synthetic.csv", log_type="API log")
    conv = read_trace(TRACES / "burstgpt_synthetic.csv", log_type="conversation log")
    assert len(api) + len(conv) == len(tr)
    gpt4 = read_trace(TRACES / "burstgpt_synthetic.csv", model="GPT-4")
    assert set(gpt4.df["model"]) == {"GPT-4"}


def test_full_shared_traces(shared_data):
    for name in ("azure2023_conv.csv", "mooncake_conversation.jsonl"):
        assert len(read_trace(shared_data / "traces" / name)) > 10_000


# --------------------------------------------------------------------------- hand-made files


def test_burstgpt_handmade(tmp_path):
    p = write(tmp_path, "b.csv", BURST_HEADER +
              "5,ChatGPT,472,18,490,Conversation log\n"
              "45,ChatGPT,1087,230,1317,Conversation log\n"
              "100,GPT-4,10,0,10,API log\n"
              "118,GPT-4,417,276,693,API log\n")
    tr = read_trace(p)
    assert tr.format == "burstgpt" and len(tr) == 3 and tr.dropped == {"failed": 1}
    assert tr.df["arrival_s"].tolist() == [0.0, 40.0, 113.0]
    assert tr.df["model"].tolist() == ["ChatGPT", "ChatGPT", "GPT-4"]
    assert len(read_trace(p, model="gpt-4")) == 1
    assert len(read_trace(p, log_type="Conversation log")) == 2
    with pytest.raises(InputError, match="no rows with Model = 'Claude'"):
        read_trace(p, model="Claude")


def test_burstgpt_session_columns(tmp_path):
    p = write(tmp_path, "b.csv", BURST_HEADER.strip() + ",Session ID,Elapsed time\n"
              "0,ChatGPT,10,5,15,Conversation log,abc,1.5\n1,ChatGPT,20,6,26,Conversation log,abc,2.0\n"
              "2,GPT-4,30,7,37,API log,,\n")
    reqs = build_workload({"trace": str(p)}, seed=0)
    assert [r.session_id for r in reqs] == ["abc", "abc", None] and reqs[1].prompt_tokens == 20
    assert reqs[2].model == "GPT-4"


def test_vidur_handmade(tmp_path):
    p = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"
              "1.5,100,20\n2.0,200,30\n2.25,300,40\n")
    assert detect_format(p) == "vidur"
    tr = read_trace(p)
    assert tr.df["arrival_s"].tolist() == [0.0, 0.5, 0.75]
    assert tr.df["prompt_tokens"].tolist() == [100, 200, 300]


def test_azure_handmade(tmp_path):
    p = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:05.0000000,3180,8\n"
              "2023-11-16 18:18:05,100,0\n")
    tr = read_trace(p)
    assert tr.df["arrival_s"].tolist() == pytest.approx([0.0, 1.02004, 61.02004])
    assert tr.df["output_tokens"].iloc[2] == 1 and tr.dropped == {"zero_tokens_clipped": 1}


def test_mooncake_handmade(tmp_path):
    lines = [{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]},
             {"timestamp": 1500, "input_length": 100, "output_length": 7, "hash_ids": [0]}]
    p = write(tmp_path, "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    tr = read_trace(p)
    assert tr.df["arrival_s"].tolist() == [0.0, 1.5] and tr.df["prefix_blocks"].tolist() == [(0, 1), (0,)]


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("text, fmt, match", [
    ("", None, "empty trace"),
    (BURST_HEADER, None, "empty trace"),
    ("Timestamp,Model,Request tokens\n1,ChatGPT,5\n", "burstgpt", "missing column 'Response tokens'"),
    ("foo,bar\n1,2\n", None, "cannot tell the trace format"),
    (BURST_HEADER + "1,ChatGPT,12,3,15,API log\n2,ChatGPT,abc,3,15,API log\n", None,
     r"Request tokens: line 3: expected an integer token count >= 0, got 'abc'"),
    (BURST_HEADER + "1,ChatGPT,12,-3,9,API log\n", None, r"Response tokens: line 2: expected .* got '-3'"),
    (BURST_HEADER + "1,ChatGPT,12.5,3,15,API log\n", None, "line 2: expected an integer"),
    (BURST_HEADER + "5,ChatGPT,12,3,15,API log\n2,ChatGPT,12,3,15,API log\n", None,
     "line 3: timestamps are not sorted"),
    (BURST_HEADER + "x,ChatGPT,12,3,15,API log\n", None, "Timestamp: line 2: expected a time"),
    (BURST_HEADER + "1,ChatGPT,12,0,12,API log\n", None, r"no requests left \(1 failed"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", None, "TIMESTAMP: line 2: expected a timestamp"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,\n", None, "num_decode_tokens: line 2"),
])
def test_malformed_csv_one_line_error(tmp_path, text, fmt, match):
    p = write(tmp_path, "t.csv", text)
    with pytest.raises(InputError, match=match) as ei:
        read_trace(p, fmt)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg


@pytest.mark.parametrize("text, match", [
    ("", "empty trace"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 1, "input_length": 5\n',
     r"line 2: malformed JSON"),
    ('{"timestamp": 0, "input_length": -5, "output_length": 1}\n', "input_length: line 1"),
    ('{"timestamp": 0, "input_len": 5, "output_length": 1}\n', "missing column 'input_length'"),
    ('{"timestamp": 10, "input_length": 5, "output_length": 1}\n{"timestamp": 1, "input_length": 5, '
     '"output_length": 1}\n', "line 2: timestamps are not sorted"),
    ('[1, 2]\n', "line 1: expected a JSON object"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": 7}\n', "hash_ids: line 1"),
])
def test_malformed_jsonl_one_line_error(tmp_path, text, match):
    p = write(tmp_path, "t.jsonl", text)
    with pytest.raises(InputError, match=match) as ei:
        read_trace(p)
    assert "\n" not in str(ei.value)


def test_skip_counts_malformed_rows(tmp_path):
    p = write(tmp_path, "b.csv", BURST_HEADER + "1,ChatGPT,12,3,15,API log\n2,ChatGPT,abc,3,15,API log\n"
              "3,ChatGPT,-1,3,15,API log\n4,ChatGPT,7,0,7,API log\n5,ChatGPT,8,2,10,API log\n")
    tr = read_trace(p, on_error="skip")
    assert len(tr) == 2 and tr.dropped == {"failed": 1, "malformed": 2}
    q = write(tmp_path, "m.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 1}\nnot json\n'
              '{"timestamp": 2, "input_length": -5, "output_length": 1}\n'
              '{"timestamp": 3, "input_length": 5, "output_length": 1}\n')
    tr = read_trace(q, on_error="skip")
    assert len(tr) == 2 and tr.dropped == {"malformed": 2}
    assert tr.df["arrival_s"].tolist() == [0.0, 0.003]


def test_sort_option(tmp_path):
    p = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n3,30,3\n1,10,1\n2,20,2\n")
    tr = read_trace(p, sort=True)
    assert tr.df["prompt_tokens"].tolist() == [10, 20, 30] and tr.df["arrival_s"].tolist() == [0, 1, 2]
    reqs = build_workload({"trace": str(p), "sort": True}, seed=0)
    assert [r.prompt_tokens for r in reqs] == [10, 20, 30]


def test_missing_file_and_bad_format(tmp_path):
    with pytest.raises(InputError, match="trace file not found"):
        build_workload({"trace": "nope/missing.csv"}, seed=0, base_dir=tmp_path)
    p = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n1,1,1\n")
    with pytest.raises(InputError, match="missing columns"):
        read_trace(p, "azure")
    with pytest.raises(InputError, match="format"):
        build_workload({"trace": str(p), "format": "csv"}, seed=0)


def test_relative_paths(tmp_path):
    write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n1,1,1\n2,2,2\n")
    assert len(build_workload({"trace": "v.csv"}, seed=0, base_dir=tmp_path)) == 2
    # repo-root fallback (data_root)
    assert len(build_workload({"trace": "traces/azure2023_code_sample.csv"}, seed=0, base_dir=tmp_path)) == 3000


def test_gamma_mle_recovers_known_shapes_and_flags_meaningless_fits():
    """Maximum likelihood on draws of known Gamma laws; the Azure code trace (CV ~ 14) is flagged."""
    from simllm.workload.readers import read_trace as _read
    from simllm.workload.stats import gamma_mle, trace_stats

    rng = np.random.default_rng(0)
    for k, theta in ((0.5, 2.0), (3.0, 0.1), (1.0, 1.0)):
        fit = gamma_mle(rng.gamma(k, theta, 20000))
        assert abs(fit["shape"] / k - 1) < 0.05 and abs(fit["scale_s"] / theta - 1) < 0.05 and not fit["warning"]
    st = trace_stats(_read(Path(__file__).resolve().parent.parent / "traces" / "azure2023_code_sample.csv").df)
    assert "not Gamma-distributed" in st["fit"]["arrivals"]["mle"]["warning"]
    assert 0 <= st["fit"]["prompt_lognormal"]["ks"] <= 1


AZURE_ROWS = "TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:46.6805900,374,44\r\n" \
             "2023-11-16 18:15:50.9951690,396,109\r\n"


def test_compressed_traces_read_as_plain(tmp_path):
    import gzip

    import zstandard

    plain = tmp_path / "a.csv"
    plain.write_bytes(b"\xef\xbb\xbf" + AZURE_ROWS.encode())  # BOM + CRLF, as Azure's files come
    ref = read_trace(plain).df
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    zst = tmp_path / "trace.bin"  # told by the magic bytes, not the name
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    for p in (gz, zst):
        tr = read_trace(p)
        assert tr.format == "azure"
        pd.testing.assert_frame_equal(tr.df, ref)
    assert list(ref["prompt_tokens"]) == [374, 396] and ref["arrival_s"].iloc[1] == pytest.approx(4.3145790)
    bad = tmp_path / "bad.zst"
    bad.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes())[:-6])
    with pytest.raises(InputError, match="zstd"):
        read_trace(bad)


def test_zstd_without_zstandard_says_how_to_install(tmp_path, monkeypatch):
    import sys

    import zstandard

    p = tmp_path / "a.csv.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(AZURE_ROWS.encode()))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now raises ImportError
    with pytest.raises(InputError) as e:
        read_trace(p)
    msg = str(e.value)
    assert "\n" not in msg and "pip install zstandard" in msg and str(p) in msg


def test_workload_is_columns_and_still_a_sequence_of_requests():
    from simllm.workload import Request, RequestTable

    reqs = build_workload({"trace": "traces/azure2023_conv_sample.csv", "limit": 50}, seed=0)
    assert isinstance(reqs, RequestTable) and len(reqs) == 50
    assert reqs.arrival_s.dtype == np.float64 and reqs.prompt_tokens.dtype == np.int64
    r = reqs[3]
    assert isinstance(r, Request) and r.id == 3 and r.prompt_tokens == int(reqs.prompt_tokens[3])
    assert list(reqs)[-1] == reqs[-1] and reqs[:2] == [reqs[0], reqs[1]]
    assert reqs == list(reqs)  # equal to the same requests as objects
    moon = build_workload({"trace": "traces/mooncake_conversation_sample.jsonl", "limit": 5}, seed=0)
    assert moon.prefix_blocks is not None and moon[0].prefix_blocks == tuple(moon.prefix_blocks[0])


def test_fast_csv_path_reads_what_the_careful_path_reads(tmp_path, monkeypatch):
    import simllm.workload.readers as R

    v = tmp_path / "v.csv"
    v.write_text("arrived_at,num_prefill_tokens,num_decode_tokens,extra\n0.5,10,3,x\n0.25,7,0,y\n2,1,1,z\n")
    files = [REPO / "traces" / "azure2023_conv_sample.csv", REPO / "traces" / "azure2023_code_sample.csv", v]
    fast = [read_trace(f, sort=True) for f in files]
    monkeypatch.setattr(R, "_fast_columns", lambda *a, **k: None)
    for f, tr in zip(files, fast):
        ref = read_trace(f, sort=True)
        pd.testing.assert_frame_equal(tr.df, ref.df)
        assert tr.dropped == ref.dropped
    assert fast[2].dropped == {"zero_tokens_clipped": 1} and list(fast[2].df["prompt_tokens"]) == [7, 10, 1]
