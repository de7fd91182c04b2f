"""New policies through the scenario API: fields validated, fairness and prefix-cache summaries."""

import pytest

from simllm.errors import InputError
from simllm.scenario import prepare, scenario_from_dict, simulate


def _scn(batching, *, trace="traces/azure2023_conv_sample.csv", limit=300, prefix_caching=False,
         model="llama-3-8b", hardware=None, tp=1, router="round_robin"):
    return scenario_from_dict({
        "model": model, "hardware": hardware or {"accelerator": "h100-sxm"},
        "deployment": {"tp": tp, "batching": batching, "router": router, "kv": {"prefix_caching": prefix_caching}},
        "workload": {"trace": trace, "limit": limit, "rate_scale": 3.0}, "sim": {"record_breakdown": False},
    })


def test_priority_fairness_per_class():
    req, _steps, s = simulate(prepare(_scn({"policy": "priority", "rule": "prompt_length",
                                           "short_prompt_tokens": 1000})))
    assert set(req["priority_class"]) == {0, 1}
    by = s["by_priority_class"]
    assert set(by) == {"0", "1"} and by["0"]["completed"] + by["1"]["completed"] == s["completed"]
    assert by["0"]["ttft_s"]["p50"] < by["1"]["ttft_s"]["p50"]
    assert "prefix_cache" not in s


def test_prefix_cache_hit_rate_in_summary():
    kw = dict(trace="traces/mooncake_conversation_sample.jsonl", limit=300, model="mixtral-8x7b",
              hardware={"node": "dgx-h100"}, tp=8)
    pol = {"policy": "sarathi", "token_budget": 2048}
    _r, _s, off = simulate(prepare(_scn(pol, **kw)))
    _r, _s, on = simulate(prepare(_scn(pol, prefix_caching=True, **kw)))
    pc = on["prefix_cache"]
    assert 0.05 < pc["token_hit_rate"] < 1 and pc["hit_tokens"] > 0
    assert on["ttft_s"]["mean"] < off["ttft_s"]["mean"]


@pytest.mark.parametrize("block", [{"policy": "sarathi", "chunk": 3}, {"policy": "static", "batch_size": 0},
                                   {"policy": "prefix_aware"}])
def test_bad_policy_blocks_are_input_errors(block):
    with pytest.raises(InputError):
        _scn(block)


def test_static_and_orca_run_from_a_scenario():
    for pol in ({"policy": "static", "batch_size": 16, "timeout_s": 0.5}, {"policy": "orca"}):
        _r, _s, s = simulate(prepare(_scn(pol, router={"policy": "least_kv_load"})))
        assert s["completed"] == 300
