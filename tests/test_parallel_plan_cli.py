"""``simllm plan`` end to end."""

from __future__ import annotations

import json

import pytest

from simllm.cli import main


def run(capsys, *argv):
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out = capsys.readouterr()
    return ei.value.code, out.out, out.err


def test_plan_json_valid_best_first(capsys):
    code, out, _ = run(capsys, "plan", "llama-3-70b", "--cluster", "dgx-a100", "--json")
    assert code == 0
    plans = json.loads(out)["plans"]
    assert plans and all(p["valid"] for p in plans)
    assert all(p["tp"] * p["pp"] * p["dp"] <= 8 for p in plans)
    assert all(p["mem_per_device_gib"] <= 80 for p in plans)
    tput = [p["decode_tokens_per_s_per_device"] for p in plans]
    assert tput == sorted(tput, reverse=True)
    assert all(p["prefill_s"] > 0 and p["decode_s"] > 0 for p in plans)
    assert not any(p["tp"] == 1 and p["pp"] == 1 for p in plans)  # 141 GB of weights on one GPU


def test_plan_bad_input(capsys):
    code, _, err = run(capsys, "plan", "no-such-model", "--cluster", "dgx-a100")
    assert code == 2 and err.count("\n") == 1


class _FakeStepCost:
    """Compute-only stand-in: time proportional to tokens / tp (what the real one refines)."""

    def __init__(self, tp, pp):
        self.tp, self.pp = tp, pp

    def step_time(self, prefill_tokens, prefill_attn_work, prefill_seqs, decode_seqs, decode_ctx_tokens):
        return 1e-3 + (prefill_tokens * 1e-5 + decode_seqs * 1e-4 + decode_ctx_tokens * 1e-9) / self.tp


def test_plan_with_stand_in_cost(capsys, monkeypatch):
    import simllm.cli.plan as plan_cli

    monkeypatch.setattr(plan_cli, "_step_cost", lambda model, cluster, plan: _FakeStepCost(plan.tp, plan.pp))
    code, out, _ = run(capsys, "plan", "deepseek-v3", "--cluster", "h800-ep", "--json")
    assert code == 0
    plans = json.loads(out)["plans"]
    assert plans and all(p["valid"] for p in plans)
    assert any(p["ep"] > 1 for p in plans)
    assert all(p["mem_per_device_gib"] * 2**30 <= 0.9 * 81559 * 2**20 for p in plans)  # H800: NVML MiB
    tput = [p["decode_tokens_per_s_per_device"] for p in plans]
    assert tput == sorted(tput, reverse=True)
    ep = [p for p in plans if p["ep"] > 1]
    assert all(p["ep_comm_decode_s"] > 0 for p in ep)
    code, out, _ = run(capsys, "plan", "llama-3-8b", "--cluster", "dgx-a100", "--top", "3")
    assert code == 0 and "tp" in out
