"""Prefix caching keyed by session: block ids derived from BurstGPT session ids (chat-history model)."""

import numpy as np
import pandas as pd
import pytest

from simllm.scenario import prepare, scenario_from_dict, simulate
from simllm.workload.transforms import session_prefix_blocks


def test_blocks_shared_within_session_and_reset_on_truncation():
    df = pd.DataFrame({"arrival_s": [0, 1, 2, 3, 4], "session_id": ["a", "b", "a", "a", None],
                       "prompt_tokens": [1100, 600, 1100 + 200 + 700, 900, 2000],
                       "output_tokens": [200, 10, 50, 10, 10]})
    out = session_prefix_blocks(df, 512)
    a0, b0, a1, a2, none = out.prefix_blocks
    assert len(a0) == 2 and len(a1) == 3 and a1[:2] == a0  # turn 2 extends turn 1's history
    assert not set(b0) & set(a0)  # sessions never share
    assert not set(a2) & set(a1)  # a prompt shorter than the history starts afresh
    assert none == ()  # no session, no derived blocks


def _burstgpt(path, sessions=40, turns=4, gap_s=4.0):
    rows, rng = [], np.random.default_rng(0)
    for s in range(sessions):
        ctx, t = 0, s * 1.5
        for _ in range(turns):
            prompt = ctx + int(rng.integers(100, 600))
            out = int(rng.integers(50, 300))
            rows.append((t, "ChatGPT", prompt, out, prompt + out, "Conversation log", f"s{s}", 0.0))
            ctx, t = prompt + out, t + gap_s + out * 0.02
    df = pd.DataFrame(rows, columns=["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens",
                                     "Log Type", "Session ID", "Elapsed time"]).sort_values("Timestamp")
    df.to_csv(path, index=False)


def test_session_prefix_caching_hits_and_saves_prefill(tmp_path):
    trace = tmp_path / "bgpt.csv"
    _burstgpt(trace)
    res = {}
    for caching in (False, True):
        cfg = {"name": "sess", "model": "llama-3-8b", "hardware": {"accelerator": "a100-sxm-80gb"},
               "deployment": {"kv": {"prefix_caching": caching}},
               "workload": {"trace": str(trace), "session_prefix": True}, "seed": 0}
        res[caching] = simulate(prepare(scenario_from_dict(cfg)))[2]
        assert res[caching]["completed"] == 160
    hit = res[True]["prefix_cache"]["token_hit_rate"]
    assert 0.3 < hit < 1.0  # the history is most of each later turn's prompt
    assert res[True]["ttft_s"]["mean"] < 0.9 * res[False]["ttft_s"]["mean"]
